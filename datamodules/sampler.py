"""Duration-bucketed dynamic batching that is reproducible, DDP-aware and resumable on any world size.

**The epoch's plan.** Every rank computes the same *order plan* from ``(seed, epoch)``, whatever the
number of ranks: shuffle, sort by duration inside pools, cut batches whose *padded* length (items x
longest item) fits ``max_seconds``, shuffle the batches. The items of those batches, in that order, are
the epoch's *item order*. For ``W`` ranks the plan is then split until its batch count divides by ``W``
(the largest batches are halved in place, so the item order is unchanged) and dealt out round-robin:
step ``s`` of rank ``r`` is batch ``s * W + r``. Every rank runs the same number of steps and no item is
dropped or repeated (unless fewer items than ranks are left to deal: then some repeat, with a warning).

It subclasses ``DistributedSampler`` so Lightning treats it as already rank-aware (it calls
``set_epoch`` on it instead of wrapping it in a sampler of its own). Use it as the DataLoader's
``sampler`` with ``batch_size=None``: each element it yields is a whole batch of indices.

**Resuming.** ``ResumableLoader`` is that DataLoader made resumable mid-epoch: Lightning saves a loader's
``state_dict`` in the checkpoint's loop state and, on ``--ckpt_path``, hands it back before the epoch
continues. The state says how much of the epoch was consumed, in two units:
``batches_done``, the steps every rank has taken this epoch (counted as the loader hands batches to the
training loop in the main process, not as workers prefetch them), and ``items_done``, how many items of
the epoch's item order the ranks have taken together (the first ``batches_done * W`` batches of the
dealt plan); ranks move in step, so rank 0's state, the one a checkpoint keeps, speaks for all. A
resume on the same world size skips ``batches_done`` steps of the same plan, so it takes
exactly the batches an uninterrupted run would have taken. A resume on another world size re-plans the
rest of the item order (the batch holding the cut keeps its remaining items) for the new ``W``: the run
continues with the next unseen items, none seen twice or skipped within the epoch, and ``len()`` counts
the epoch's steps as resumed (the steps done before plus those left). A state from another plan (another
seed, dataset or batch budget) restarts its epoch with a warning.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

log = logging.getLogger(__name__)


def world() -> tuple[int, int]:
    """``(world size, rank)`` of the initialised process group, or ``(1, 0)``."""
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
    """Halve the largest batches in place until ``len(batches) % multiple == 0`` (the item order stays);
    repeats batches, with a warning, only if every batch is a single item, so ranks stay in step."""
    batches = list(batches)
    while len(batches) % multiple:
        largest = max(range(len(batches)), key=lambda i: len(batches[i]))
        if len(batches[largest]) < 2:
            missing = multiple - len(batches) % multiple
            log.warning(
                "%d single-item batches cannot be dealt evenly to %d ranks: %d of them are repeated so every "
                "rank takes the same number of steps",
                len(batches),
                multiple,
                missing,
            )
            batches += batches[:missing]
            break
        batch = batches.pop(largest)
        half = len(batch) // 2
        batches[largest:largest] = [batch[:half], batch[half:]]
    return batches


def cut_plan(batches: list[np.ndarray], items: int) -> list[np.ndarray]:
    """The batches after the first ``items`` items of their order (the batch holding the cut keeps the rest)."""
    ends = np.cumsum([len(b) for b in batches])
    first = int(np.searchsorted(ends, items, side="right"))
    if first == len(batches):
        return []
    begin = items - (int(ends[first]) - len(batches[first]))
    return [batches[first][begin:], *batches[first + 1 :]]


class PassPosition:
    """How far the current pass over a seeded plan got, as Lightning checkpoints it (``state_dict``) and
    hands it back (``load_state_dict``), replayed on the world size it was saved on (the mixture's
    interleaved loader, which adds what another world size needs). Its users have ``epoch``, ``seed``, ``set_epoch``, ``len()`` and
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


@dataclass(frozen=True)
class PlanStart:
    """Where an epoch's dealt plan begins: after ``item`` items of the item order, at step ``step``
    (both 0 unless the epoch was resumed on another world size)."""

    epoch: int
    item: int = 0
    step: int = 0


class DurationBatchSampler(DistributedSampler):
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
        world_size, own_rank = world()
        super().__init__(
            durations,
            num_replicas=world_size if num_replicas is None else num_replicas,
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
        #: tells this plan from one over other data or another budget (checked on resume)
        budget = repr((max_seconds, max_batch_size, pool_size, shuffle)).encode()
        self.plan_id = f"{zlib.crc32(self.durations.tobytes() + budget):08x}"
        self.batches_done = 0
        self._active = PlanStart(0)
        #: (start, steps to skip) from ``load_state_dict``, for the next pass over that epoch
        self._pending: tuple[PlanStart, int] | None = None
        self._orders: tuple[int, list[np.ndarray]] | None = None
        self._dealt: tuple[PlanStart, list[np.ndarray]] | None = None
        #: a pass over ``self.epoch`` started and not at its end
        self._running = False

    def set_epoch(self, epoch: int) -> None:
        """Move to ``epoch``; a pass over the previous epoch that stopped before its end says what it left out.

        Lightning fixes an epoch's length (``len()``) at the first epoch's and ends every epoch there, while
        each epoch's plan has a length of its own: a longer one is cut short. With
        ``trainer.reload_dataloaders_every_n_epochs: 1`` the datamodule makes a sampler per epoch, already
        at that epoch, so each epoch's length is its own.
        """
        if self._running and epoch != self.epoch:
            start = self._active
            left = self.dealt_plan(start)[self.rank :: self.num_replicas][self.batches_done - start.step :]
            if left:  # a pass that handed out every batch left nothing out, whether or not it was closed
                log.warning(
                    "epoch %d stopped after %d of its %d steps: %d items of its last %d batches (rank %d) were "
                    "not seen in it; under Lightning set trainer.reload_dataloaders_every_n_epochs: 1 so every "
                    "epoch runs to its own length",
                    self.epoch,
                    self.batches_done,
                    len(self),
                    sum(len(b) for b in left),
                    len(left),
                    self.rank,
                )
        self._running = self._running and epoch == self.epoch
        super().set_epoch(epoch)

    # ---- the plan ----------------------------------------------------------------------------
    def order_plan(self) -> list[np.ndarray]:
        """This epoch's batches before they are split for the ranks (the same for any world size)."""
        if self._orders is not None and self._orders[0] == self.epoch:
            return self._orders[1]
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
        self._orders = (self.epoch, batches)
        return batches

    def dealt_plan(self, start: PlanStart) -> list[np.ndarray]:
        """Every rank's batches from ``start`` on, in step-major order (step ``s`` of rank ``r`` at
        ``s * num_replicas + r``)."""
        if self._dealt is None or self._dealt[0] != start:
            rest = cut_plan(self.order_plan(), start.item) if start.item else self.order_plan()
            self._dealt = (start, split_to_multiple(rest, self.num_replicas))
        return self._dealt[1]

    def _start(self) -> PlanStart:
        """Where this epoch's plan begins: a pending resume's start, else the running pass's."""
        if self._pending is not None and self._pending[0].epoch == self.epoch:
            return self._pending[0]
        return self._active if self._active.epoch == self.epoch else PlanStart(self.epoch)

    def __len__(self) -> int:
        start = self._start()
        return start.step + len(self.dealt_plan(start)) // self.num_replicas

    def __iter__(self) -> Iterator[list[int]]:
        pending, self._pending = self._pending, None
        if pending is None or pending[0].epoch != self.epoch:
            pending = (PlanStart(self.epoch), 0)
        start, skip = pending
        self._active = start
        self.batches_done = start.step + skip
        self._running = True
        for batch in self.dealt_plan(start)[self.rank :: self.num_replicas][skip:]:
            yield batch.tolist()
        self._running = False
        if self.on_epoch_end is not None:
            self.on_epoch_end(self.epoch)

    # ---- resume state ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """See the module docstring; ``plan_start_*`` say where this epoch's dealt plan began."""
        start = self._start()
        pending = self._pending is not None and self._pending[0] == start
        done = start.step + self._pending[1] if pending else self.batches_done
        taken = self.dealt_plan(start)[: (done - start.step) * self.num_replicas]
        items = min(start.item + sum(len(b) for b in taken), len(self.durations))
        return {
            "epoch": self.epoch,
            "seed": self.seed,
            "plan_id": self.plan_id,
            "world_size": self.num_replicas,
            "batches_done": done,
            "batches_in_epoch": len(self),
            "items_done": items,
            "items_in_epoch": len(self.durations),
            "plan_start_item": start.item,
            "plan_start_step": start.step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Make the next pass over ``state["epoch"]`` continue after what the state consumed (see the
        module docstring); a pass over another epoch (Lightning moves on when that one was complete) starts
        at its beginning."""
        self.set_epoch(state["epoch"])
        if state["seed"] != self.seed or state.get("plan_id") != self.plan_id:
            log.warning(
                "the checkpoint's batch plan (seed %s, plan %s, %s items in epoch %d) differs from this run's "
                "(seed %d, plan %s, %d items): epoch %d resumes from its first batch, so batches before the "
                "checkpoint are seen twice",
                state["seed"],
                state.get("plan_id"),
                state.get("items_in_epoch"),
                state["epoch"],
                self.seed,
                self.plan_id,
                len(self.durations),
                self.epoch,
            )
            return
        if state["world_size"] == self.num_replicas:
            start = PlanStart(self.epoch, state["plan_start_item"], state["plan_start_step"])
            self._pending = (start, state["batches_done"] - start.step)
        else:
            log.info(
                "epoch %d resumes on %d ranks after %d of its %d items (saved on %d ranks)",
                self.epoch,
                self.num_replicas,
                state["items_done"],
                state["items_in_epoch"],
                state["world_size"],
            )
            self._pending = (PlanStart(self.epoch, state["items_done"], state["batches_done"]), 0)


class ResumableLoader(DataLoader):
    """A DataLoader over a ``DurationBatchSampler`` (``batch_size=None``) whose position Lightning
    checkpoints (it is ``_Stateful``): see the module docstring."""

    sampler: DurationBatchSampler

    def __init__(self, *args: Any, finish_batch: Callable[[Any], Any] | None = None, **kwargs: Any) -> None:
        """``finish_batch`` runs on each batch in the main process (the datamodule records the rows a worker
        skipped); a batch it returns as None (every row unreadable) is not handed out. With several ranks
        every rank must still take the same number of steps: the pass ends by repeating its last batch once
        for each batch left out, with a warning."""
        super().__init__(*args, **kwargs)
        self.finish_batch = finish_batch

    def __iter__(self) -> Iterator[Any]:
        # A generator: workers start drawing at the first batch asked for, after Lightning set the epoch.
        last, owed = None, 0
        for batch in super().__iter__():
            self.sampler.batches_done += 1  # handed out now, in the main process
            if self.finish_batch is not None:
                batch = self.finish_batch(batch)
            if batch is None:
                owed += 1
                continue
            last = batch
            yield batch
        if owed and last is not None and self.sampler.num_replicas > 1:
            log.warning(
                "rank %d repeats its last batch (ids %s) %d time(s) at the end of epoch %d: %d of its batches "
                "had no readable row, and every rank must take the same number of steps",
                self.sampler.rank,
                ", ".join(map(str, last.get("ids", [])[:5])) if isinstance(last, dict) else "?",
                owed,
                self.sampler.epoch,
                owed,
            )
            for _ in range(owed):
                yield last

    @property
    def world_size(self) -> int:
        """The ranks its sampler deals to."""
        return self.sampler.num_replicas

    def state_dict(self) -> dict[str, Any]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)
