"""Duration-bucketed dynamic batching that is reproducible and DDP-aware.

Every rank computes the same global plan from ``(seed, epoch)``: shuffle, sort by duration inside
pools, cut batches whose *padded* length (items x longest item) fits ``max_seconds``, shuffle the
batches, then split batches until their count divides by the number of ranks (so every rank runs
the same number of steps and no item is dropped or repeated), and deal them out round-robin.

It subclasses ``DistributedSampler`` so Lightning treats it as already rank-aware (it calls
``set_epoch`` on it instead of wrapping it in a sampler of its own). Use it as the DataLoader's
``sampler`` with ``batch_size=None``: each element it yields is a whole batch of indices.

``ResumableLoader`` is that DataLoader made resumable mid-epoch: Lightning saves a loader's
``state_dict`` in the checkpoint's loop state and, on ``--ckpt_path``, hands it back before the epoch
continues. The state is the epoch, the seed and how many batches the loader has handed to the training
loop (counted in the main process, not what workers prefetched); the resumed pass skips exactly those
batches of the same plan, so the run sees the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

log = logging.getLogger(__name__)


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def plan_batches(
    durations: np.ndarray, max_seconds: float, max_batch_size: int | None, order: np.ndarray, pool_size: int
) -> list[np.ndarray]:
    """Greedy batches over ``order``, sorted by duration inside consecutive pools of ``pool_size`` items."""
    batches: list[np.ndarray] = []
    for begin in range(0, len(order), pool_size):
        pool = order[begin : begin + pool_size]
        pool = pool[np.argsort(durations[pool], kind="stable")]
        # Sorted ascending, so the item just added is always the longest of its batch.
        current: list[int] = []
        for index in pool.tolist():
            full = max_batch_size is not None and len(current) >= max_batch_size
            if current and (full or (len(current) + 1) * durations[index] > max_seconds):
                batches.append(np.asarray(current))
                current = []
            current.append(index)
        if current:
            batches.append(np.asarray(current))
    return batches


def split_to_multiple(batches: list[np.ndarray], multiple: int) -> list[np.ndarray]:
    """Halve the largest batches until ``len(batches) % multiple == 0``; repeats batches only if every
    batch is a single item (fewer items than ranks), so ranks stay in step."""
    batches = list(batches)
    while len(batches) % multiple:
        largest = max(range(len(batches)), key=lambda i: len(batches[i]))
        if len(batches[largest]) < 2:
            batches += batches[: multiple - len(batches) % multiple]
            break
        batch = batches.pop(largest)
        half = len(batch) // 2
        batches[largest:largest] = [batch[:half], batch[half:]]
    return batches


class PassPosition:
    """How far the current pass over a seeded plan got, as Lightning checkpoints it (``state_dict``) and
    hands it back (``load_state_dict``). Its users have ``epoch``, ``seed``, ``set_epoch``, ``len()`` and
    count ``batches_done``; a pass starts at ``resume_position()``."""

    epoch: int
    seed: int
    batches_done: int = 0
    #: (epoch, batches to skip) from ``load_state_dict``, for the next pass over that epoch
    _resume_at: tuple[int, int] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume_position(self) -> int:
        """Batches of this pass to skip: those a checkpoint of the same epoch had seen (once)."""
        resume, self._resume_at = self._resume_at, None
        return resume[1] if resume is not None and resume[0] == self.epoch else 0

    def state_dict(self) -> dict[str, int]:
        return {
            "epoch": self.epoch,
            "seed": self.seed,
            "batches_done": self.batches_done,
            "batches_in_epoch": len(self),
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Make the next pass over ``state["epoch"]`` start after its first ``batches_done`` batches; a
        pass over another epoch (Lightning moves on when that one was complete) starts at its beginning."""
        self.set_epoch(state["epoch"])
        if state["seed"] != self.seed or state["batches_in_epoch"] != len(self):
            log.warning(
                "the checkpoint's batch plan (seed %d, %d batches in epoch %d) differs from this run's "
                "(seed %d, %d batches): epoch %d resumes from its first batch, so batches before the "
                "checkpoint are seen twice",
                state["seed"],
                state["batches_in_epoch"],
                state["epoch"],
                self.seed,
                len(self),
                self.epoch,
            )
            return
        self._resume_at = (state["epoch"], state["batches_done"])


class DurationBatchSampler(PassPosition, DistributedSampler):
    """Yields lists of indices into ``durations`` whose padded seconds stay within ``max_seconds``."""

    def __init__(
        self,
        durations: Sequence[float],
        max_seconds: float,
        max_batch_size: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        pool_size: int = 2000,
        num_replicas: int | None = None,
        rank: int | None = None,
        on_epoch_end: Callable[[int], None] | None = None,
    ) -> None:
        world, own_rank = _world()
        super().__init__(
            durations,
            num_replicas=world if num_replicas is None else num_replicas,
            rank=own_rank if rank is None else rank,
            shuffle=shuffle,
            seed=seed,
        )
        self.durations = np.asarray(durations, dtype=np.float64)
        too_long = self.durations > max_seconds
        if too_long.any():
            raise ValueError(
                f"{int(too_long.sum())} item(s) are longer than max_seconds_per_batch={max_seconds:g} s "
                f"(longest {self.durations.max():.1f} s); raise max_seconds_per_batch or lower max_duration"
            )
        self.max_seconds = max_seconds
        self.max_batch_size = max_batch_size
        self.pool_size = pool_size
        self.on_epoch_end = on_epoch_end
        self._cache: tuple[int, list[np.ndarray]] | None = None

    def _plan(self) -> list[np.ndarray]:
        if self._cache is not None and self._cache[0] == self.epoch:
            return self._cache[1]
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self.epoch])
            order = rng.permutation(len(self.durations))
            batches = plan_batches(
                self.durations, self.max_seconds, self.max_batch_size, order, self.pool_size
            )
            batches = [batches[i] for i in rng.permutation(len(batches))]
        else:
            order = np.arange(len(self.durations))
            batches = plan_batches(
                self.durations, self.max_seconds, self.max_batch_size, order, len(order) or 1
            )
        batches = split_to_multiple(batches, self.num_replicas)[self.rank :: self.num_replicas]
        self._cache = (self.epoch, batches)
        return batches

    def __len__(self) -> int:
        return len(self._plan())

    def __iter__(self) -> Iterator[list[int]]:
        self.batches_done = self.resume_position()
        for batch in self._plan()[self.batches_done :]:
            yield batch.tolist()
        if self.on_epoch_end is not None:
            self.on_epoch_end(self.epoch)


class ResumableLoader(DataLoader):
    """A DataLoader over a ``DurationBatchSampler`` (``batch_size=None``) whose position Lightning
    checkpoints (it is ``_Stateful``): see the module docstring."""

    sampler: DurationBatchSampler

    def __init__(self, *args: Any, finish_batch: Callable[[Any], Any] | None = None, **kwargs: Any) -> None:
        """``finish_batch`` runs on each batch in the main process (the datamodule records the rows a worker
        skipped); a batch it returns as None (every row unreadable) is not handed out."""
        super().__init__(*args, **kwargs)
        self.finish_batch = finish_batch

    def __iter__(self) -> Iterator[Any]:
        # A generator: workers start drawing at the first batch asked for, after Lightning set the epoch.
        for batch in super().__iter__():
            self.sampler.batches_done += 1  # handed out now, in the main process
            if self.finish_batch is not None:
                batch = self.finish_batch(batch)
            if batch is not None:
                yield batch

    def state_dict(self) -> dict[str, int]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.load_state_dict(state)
