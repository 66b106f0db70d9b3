"""minmo-lightning: MinMo's blocks as swappable Lightning modules (see DESIGN.md)."""

__version__ = "0.1.0"
