"""Block implementations, one sub-package per slot. Each module registers what it defines on import."""
