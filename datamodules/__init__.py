"""HF-datasets LightningDataModules, audio I/O, features, collate and the built-in synthetic corpus.

The datamodule classes load on first access, so ``minmo synth-data`` (and its worker processes) do
not pay for importing Lightning. The espeak-ng corpus generator (``synth``; GPL-3.0 espeak-ng
underneath) is never imported from here: model code that imports this package does not load it.
"""

from __future__ import annotations

import importlib
from typing import Any

#: class name -> the module defining it
_MODULES = {
    "ASRDataModule": "tasks",
    "EmotionDataModule": "tasks",
    "TTSDataModule": "tasks",
    "S2SDataModule": "tasks",
    "DuplexDataModule": "tasks",
    "VoiceControlDataModule": "tasks",
    "S2TTDataModule": "understanding",
    "LanguageIDDataModule": "understanding",
    "SpeakerDataModule": "understanding",
    "AudioEventDataModule": "understanding",
    "SpokenQADataModule": "understanding",
    "DialogueDataModule": "dialogue",
    "TextDataModule": "text",
    "MixtureDataModule": "mixture",
}
__all__ = sorted(_MODULES)


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        return getattr(importlib.import_module(f"minmo_lightning.datamodules.{_MODULES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
