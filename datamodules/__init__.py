"""HF-datasets LightningDataModules, audio I/O, features, collate and the built-in synthetic corpus.

The datamodule classes load on first access, so ``minmo synth-data`` (and its worker processes) do
not pay for importing Lightning. The espeak-ng corpus generator (``synth``; GPL-3.0 espeak-ng
underneath) is never imported from here: model code that imports this package does not load it.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "ASRDataModule",
    "DuplexDataModule",
    "EmotionDataModule",
    "MixtureDataModule",
    "S2SDataModule",
    "TTSDataModule",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        module = "mixture" if name == "MixtureDataModule" else "tasks"
        return getattr(importlib.import_module(f"minmo_lightning.datamodules.{module}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
