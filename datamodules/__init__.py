"""HF-datasets LightningDataModules, audio I/O, features, collate and the built-in synthetic corpus.

The espeak-ng corpus generator (``synth``, GPL-3.0 espeak-ng underneath) is not imported here: model
code that imports this package never loads it.
"""

from minmo_lightning.datamodules.tasks import (
    ASRDataModule,
    DuplexDataModule,
    EmotionDataModule,
    S2SDataModule,
    TTSDataModule,
)

__all__ = ["ASRDataModule", "DuplexDataModule", "EmotionDataModule", "S2SDataModule", "TTSDataModule"]
