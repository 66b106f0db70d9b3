"""``python -m minmo_lightning`` does what the ``minmo`` command does."""

from minmo_lightning.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
