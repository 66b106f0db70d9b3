"""``MixtureDataModule``: several task datamodules trained as one (MinMo's multi-task SFT, stage 1c).

Each training step takes one batch from one source; an epoch runs every batch of every source once (or
``repeats[i]`` times, to upsample a small task), in an order shuffled from ``(seed, epoch)``. Each source
says which tasks its items supervise (its ``tasks``; the batch carries them as ``supervises``).
Validation and test run each source's loader in turn (``dataloader_idx`` tells them apart: Lightning logs
``val/loss/dataloader_idx_0`` per source, the key a checkpoint's ``monitor`` names instead of ``val/loss``). Each
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
from minmo_lightning.datamodules.sampler import PassPosition, ResumableLoader


class InterleavedLoader(PassPosition):
    """Every batch of every loader ``repeats[i]`` times per pass, sources interleaved in a seeded order.

    Resumable mid-pass (Lightning keeps ``state_dict`` in the checkpoint). On the world size it was saved on,
    a resumed pass replays the same order from where it was, each source's sampler starting at the batch it
    had reached (nothing is decoded to skip ahead). On another world size the interleaved order cannot be
    replayed (each rank's share of every source changes), so the state also keeps each source's round and
    its own sampler's position: each source resumes at its next unseen items (``DurationBatchSampler``
    re-plans the rest of its pass for the new ranks) and the batches left this pass are interleaved in a
    fresh order seeded from the seed, the epoch and the position: nothing is seen twice or skipped, and every
    rank takes the same number of steps.
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
        self._rounds = [0] * len(loaders)  # each source's pass within this epoch
        self._drawn = [0] * len(loaders)  # batches it handed out in that pass
        #: a pass re-planned on resume (another world size): (epoch, steps done before, the sources left)
        self._replanned: tuple[int, int, list[int]] | None = None

    def __len__(self) -> int:
        if self._replanned is not None and self._replanned[0] == self.epoch:
            return self._replanned[1] + len(self._replanned[2])
        return sum(len(loader) * r for loader, r in zip(self.loaders, self.repeats))

    def _order(self) -> list[int]:
        counts = [len(loader) * r for loader, r in zip(self.loaders, self.repeats)]
        return self._shuffled(counts, self.seed + self.epoch)

    @staticmethod
    def _shuffled(counts: list[int], seed: int) -> list[int]:
        """Source ``i`` repeated ``counts[i]`` times, in a seeded order."""
        sources = torch.cat([torch.full((n,), i) for i, n in enumerate(counts)])
        generator = torch.Generator().manual_seed(seed)
        return sources[torch.randperm(len(sources), generator=generator)].tolist()

    def _fresh(self, source: int, round_: int, skip: int = 0) -> Iterator[Any]:
        """A pass over one loader from its ``skip``-th batch; Lightning only sets the epoch on loaders it
        sees directly."""
        sampler = getattr(self.loaders[source], "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self.epoch * self.repeats[source] + round_)
        if skip and isinstance(self.loaders[source], ResumableLoader):  # a stream restored its own position
            sampler.load_state_dict({**sampler.state_dict(), "batches_done": skip})
        self._rounds[source], self._drawn[source] = round_, skip
        return iter(self.loaders[source])

    def __iter__(self) -> Iterator[Any]:
        if self.epoch_of is not None and self.epoch_of() is not None:
            self.epoch = self.epoch_of()
        if self._replanned is not None and self._replanned[0] == self.epoch:
            _, start, order = self._replanned
            # each source's sampler holds its resume position: its iterator goes on from there
            iterators = [iter(loader) for loader in self.loaders]
        else:
            self._replanned = None
            order = self._order()
            start = self.resume_position()
            drawn = Counter(order[:start])  # each source's batches already handed out this pass
            iterators = []
            for source, loader in enumerate(self.loaders):
                iterators.append(self._fresh(source, *divmod(drawn[source], len(loader))))
            order = order[start:]
        self.batches_done = start
        for source in order:
            try:
                batch = next(iterators[source])
            except StopIteration:
                iterators[source] = self._fresh(source, self._rounds[source] + 1)
                batch = next(iterators[source])
            self._drawn[source] += 1
            self.batches_done += 1
            yield batch
        self._replanned = None
        self.epoch += 1

    # ---- resume state ------------------------------------------------------------------------
    def _position(self, source: int) -> dict | None:
        """Where one source stands: its sampler's place in this pass (None before its first batch: a sampler
        still holds the previous pass's count), or a stream's own position (it runs on across passes)."""
        loader = self.loaders[source]
        if isinstance(loader, ResumableLoader):
            return loader.state_dict() if self._drawn[source] else None
        return loader.state_dict()

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = super().state_dict()
        if not all(hasattr(loader, "world_size") for loader in self.loaders):
            return state  # plain iterables (tests): the interleaved position is all there is
        sources = [
            {"round": round_, "drawn": drawn, "position": self._position(source)}
            for source, (round_, drawn) in enumerate(zip(self._rounds, self._drawn))
        ]
        return {
            **state,
            "world_size": self.loaders[0].world_size,
            "replayable": self._replanned is None,  # this pass follows the seeded order from its first batch
            "sources": sources,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        sources = state.get("sources")
        if sources is None or state["seed"] != self.seed or len(sources) != len(self.loaders):
            # no per-source positions (plain iterables) or another plan: replay, or restart saying so
            super().load_state_dict(state)
            return
        for loader, saved in zip(self.loaders, sources):  # a stream restores (or restarts) its own position
            if not isinstance(loader, ResumableLoader):
                loader.load_state_dict(saved["position"])
        if state["world_size"] == self.loaders[0].world_size and state["replayable"]:
            super().load_state_dict(state)
            return
        self.set_epoch(state["epoch"])
        left = []
        for source, (loader, repeats, saved) in enumerate(zip(self.loaders, self.repeats, sources)):
            if isinstance(loader, ResumableLoader):
                loader.sampler.set_epoch(self.epoch * repeats + saved["round"])
                whole = len(loader)  # a pass of this source on these ranks
                done = (saved["position"] or {}).get("batches_done", 0)
                if done:
                    loader.load_state_dict(saved["position"])  # re-plans its unseen items for these ranks
                this_pass = len(loader) - done
            else:
                whole, done = len(loader), saved["drawn"]
                this_pass = whole - done
            self._rounds[source], self._drawn[source] = saved["round"], done
            left.append(this_pass + (repeats - 1 - saved["round"]) * whole)
        order = self._shuffled(left, self.seed + self.epoch + 1_000_003 * (state["batches_done"] + 1))
        self._replanned = (self.epoch, state["batches_done"], order)
        self._resume_at = None


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
