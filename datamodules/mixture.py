"""``MixtureDataModule``: several task datamodules trained as one (MinMo's multi-task SFT, stage 1c).

Each training step takes one batch from one source; an epoch runs every batch of every source once, in
an order shuffled from ``(seed, epoch)`` so the tasks interleave in proportion to their sizes. The
model sees which task a batch supervises from its keys (``emotion`` -> SER, ``text`` -> ASR...).
Validation and test run each source's loader in turn (``dataloader_idx`` tells them apart).

    data:
      class_path: MixtureDataModule
      init_args:
        datamodules:
          - {class_path: ASRDataModule, init_args: {path: data/builtin/asr}}
          - {class_path: EmotionDataModule, init_args: {path: data/builtin/emotion}}
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import lightning as L
import torch
from minmo_lightning.datamodules.base import SpeechDataModule


class InterleavedLoader:
    """Every batch of every loader once per pass, sources interleaved in a seeded random order."""

    def __init__(self, loaders: list[Any], seed: int) -> None:
        self.loaders, self.seed, self.epoch = loaders, seed, 0

    def __len__(self) -> int:
        return sum(len(loader) for loader in self.loaders)

    def __iter__(self) -> Iterator[Any]:
        for loader in self.loaders:  # Lightning only sets the epoch on loaders it sees directly
            sampler = getattr(loader, "sampler", None)
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(self.epoch)
        sources = torch.cat([torch.full((len(loader),), i) for i, loader in enumerate(self.loaders)])
        order = sources[
            torch.randperm(len(sources), generator=torch.Generator().manual_seed(self.seed + self.epoch))
        ]
        self.epoch += 1
        iterators = [iter(loader) for loader in self.loaders]
        for source in order.tolist():
            yield next(iterators[source])


class MixtureDataModule(L.LightningDataModule):
    def __init__(self, datamodules: list[SpeechDataModule], seed: int = 0) -> None:
        super().__init__()
        if not datamodules:
            raise ValueError("MixtureDataModule needs at least one datamodule under `datamodules`")
        self.datamodules, self.seed = list(datamodules), seed
        self._train: InterleavedLoader | None = None

    def setup(self, stage: str) -> None:
        for datamodule in self.datamodules:
            datamodule.trainer = self.trainer
            datamodule.setup(stage)

    def train_dataloader(self) -> InterleavedLoader:
        if self._train is None:  # one object, so its epoch counter survives reloads
            self._train = InterleavedLoader([dm.train_dataloader() for dm in self.datamodules], self.seed)
        return self._train

    def val_dataloader(self) -> list[Any]:
        return [loader for dm in self.datamodules if len(loader := dm.val_dataloader())]

    def test_dataloader(self) -> list[Any]:
        return [loader for dm in self.datamodules if len(loader := dm.test_dataloader())]
