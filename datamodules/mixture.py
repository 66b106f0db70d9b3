"""``MixtureDataModule``: several task datamodules trained as one (MinMo's multi-task SFT, stage 1c).

Each training step takes one batch from one source; an epoch runs every batch of every source once (or
``repeats[i]`` times, to upsample a small task), in an order shuffled from ``(seed, epoch)``. Each source
says which tasks its items supervise (its ``tasks``; the batch carries them as ``supervises``).
Validation and test run each source's loader in turn (``dataloader_idx`` tells them apart). Each
source skips, counts and lists its own bad rows (``base.py``); ``skipped_rows`` gathers them.

    data:
      class_path: MixtureDataModule
      init_args:
        datamodules:
          - {class_path: ASRDataModule, init_args: {path: data/builtin/asr}}
          - {class_path: EmotionDataModule, init_args: {path: data/builtin/emotion}}
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import lightning as L
import torch
from minmo_lightning.datamodules.base import SpeechDataModule
from minmo_lightning.datamodules.sampler import PassPosition


class InterleavedLoader(PassPosition):
    """Every batch of every loader ``repeats[i]`` times per pass, sources interleaved in a seeded order.

    Resumable mid-pass like ``ResumableLoader`` (Lightning keeps ``state_dict`` in the checkpoint): the
    state is the epoch and the batches handed out; a resumed pass replays the same order from there, each
    source's sampler starting at the batch it had reached (nothing is decoded to skip ahead).
    """

    def __init__(
        self,
        loaders: list[Any],
        seed: int,
        repeats: list[int] | None = None,
        epoch_of: Callable[[], int | None] | None = None,
    ) -> None:
        """``epoch_of``: the trainer's epoch, read as each pass starts (without one, passes count up)."""
        self.loaders, self.seed, self.epoch, self.epoch_of = loaders, seed, 0, epoch_of
        self.repeats = list(repeats or [1] * len(loaders))
        if len(self.repeats) != len(loaders) or min(self.repeats) < 1:
            raise ValueError(
                f"repeats must give a count >= 1 per datamodule ({len(loaders)}), got {self.repeats}"
            )

    def __len__(self) -> int:
        return sum(len(loader) * r for loader, r in zip(self.loaders, self.repeats))

    def _order(self) -> list[int]:
        sources = torch.cat(
            [
                torch.full((len(loader) * r,), i)
                for i, (loader, r) in enumerate(zip(self.loaders, self.repeats))
            ]
        )
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return sources[torch.randperm(len(sources), generator=generator)].tolist()

    def _fresh(self, source: int, round_: int, skip: int = 0) -> Iterator[Any]:
        """A pass over one loader from its ``skip``-th batch; Lightning only sets the epoch on loaders it
        sees directly."""
        sampler = getattr(self.loaders[source], "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self.epoch * self.repeats[source] + round_)
        if skip:
            sampler.load_state_dict({**sampler.state_dict(), "batches_done": skip})
        return iter(self.loaders[source])

    def __iter__(self) -> Iterator[Any]:
        if self.epoch_of is not None and self.epoch_of() is not None:
            self.epoch = self.epoch_of()
        order = self._order()
        start = self.resume_position()
        drawn = Counter(order[:start])  # each source's batches already handed out this pass
        rounds, iterators = [], []
        for source, loader in enumerate(self.loaders):
            round_, position = divmod(drawn[source], len(loader))
            rounds.append(round_)
            iterators.append(self._fresh(source, round_, position))
        self.batches_done = start
        for source in order[start:]:
            try:
                batch = next(iterators[source])
            except StopIteration:
                rounds[source] += 1
                iterators[source] = self._fresh(source, rounds[source])
                batch = next(iterators[source])
            self.batches_done += 1
            yield batch
        self.epoch += 1


class MixtureDataModule(L.LightningDataModule):
    def __init__(
        self, datamodules: list[SpeechDataModule], repeats: list[int] | None = None, seed: int = 0
    ) -> None:
        """``repeats``: passes over each source per epoch (upsample a small task, e.g. ``[1, 3]``)."""
        super().__init__()
        if not datamodules:
            raise ValueError("MixtureDataModule needs at least one datamodule under `datamodules`")
        self.datamodules, self.repeats, self.seed = list(datamodules), repeats, seed
        self._train: InterleavedLoader | None = None

    @property
    def emotion_labels(self) -> list[str] | None:
        """The sources' emotion classes (they must agree): what a model checks its own labels against."""
        found = {tuple(dm.emotion_labels) for dm in self.datamodules if getattr(dm, "emotion_labels", None)}
        if len(found) > 1:
            raise ValueError(
                f"the mixture's datamodules disagree on emotion_labels {sorted(found)}; give each the same "
                "`emotion_labels` list"
            )
        return list(found.pop()) if found else None

    @property
    def supervised_tasks(self) -> list[str]:
        """The speech-to-text tasks some source supervises (its ``tasks``)."""
        return list(dict.fromkeys(t for dm in self.datamodules for t in getattr(dm, "tasks", ())))

    def setup(self, stage: str) -> None:
        for datamodule in self.datamodules:
            datamodule.trainer = self.trainer
            datamodule.setup(stage)

    def teardown(self, stage: str) -> None:
        for datamodule in self.datamodules:
            datamodule.teardown(stage)

    @property
    def skipped_rows(self) -> list[dict]:
        """Every source's skipped rows (``skipped.py``)."""
        return [row for datamodule in self.datamodules for row in datamodule.skipped_rows]

    def train_dataloader(self) -> InterleavedLoader:
        if self._train is None:  # one object, so its epoch counter survives reloads
            self._train = InterleavedLoader(
                [dm.train_dataloader() for dm in self.datamodules],
                self.seed,
                self.repeats,
                epoch_of=lambda: getattr(self.trainer, "current_epoch", None),
            )
        return self._train

    def val_dataloader(self) -> list[Any]:
        return [loader for dm in self.datamodules if len(loader := dm.val_dataloader())]

    def test_dataloader(self) -> list[Any]:
        return [loader for dm in self.datamodules if len(loader := dm.test_dataloader())]
