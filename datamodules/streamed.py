"""Training batches from a corpus streamed from its files (``streaming: true``), for corpora that do not
fit on a node's disk.

**Reading.** Each rank reads its own share of the training split as an ``IterableDataset``
(``datasets.distributed.split_dataset_by_node``: whole shards when their count divides by the world size,
else every W-th row), in *pools* of ``buffer_size`` rows. A pool is the shuffle buffer and all the stream
holds in memory: it is screened like a map-style split (bad rows skipped, counted and listed by id),
shuffled, sorted by duration and cut into batches within the padded-seconds budget
(``sampler.plan_batches``), and those batches are handed out in a shuffled order. Seeds come from
``(seed, pass, pool)``. The first pool of a pass holds a random number of rows, so pool boundaries move from
pass to pass, and ``datasets`` reorders the shards every pass (``set_epoch(pass)``). With ``shuffle:
false`` pools keep the file order and their batches run shortest first.

**Endless.** After a pass over its share a rank starts the next one, so every rank always has a next batch
and the ranks stay in step (finite passes end on different steps on different ranks and would hang DDP).
Train by ``trainer.max_steps``; ``limit_train_batches: N`` makes N-step epochs. The loader's ``len()`` is
the batches the trainer takes per epoch (``batches_per_epoch``): with a length Lightning does not fetch a
batch ahead of the training step, so a checkpoint's position is the step's.

**Resuming.** A rank's position (``StreamPosition``) is its pass, its pool, the stream's state where that
pool begins (``IterableDataset.state_dict()``) and how many of the pool's batches the loader handed out
(counted in the main process, not what workers prefetched). A resume re-reads that pool from its start,
re-plans the same batches and skips those handed out, so the next batch is exactly the next unseen one.
``StreamedLoader.state_dict`` holds every rank's position: with a process group running it gathers them
(a collective; Lightning calls it on every rank when it saves). A state saved on another world size, seed
or source cannot say where each new rank's share stands: every rank starts the earliest saved pass over,
with a warning.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from itertools import islice
from typing import Any

import numpy as np
import torch.distributed as dist
from datasets import IterableDataset
from datasets.distributed import split_dataset_by_node
from minmo_lightning.datamodules.sampler import plan_batches, world
from torch.utils.data import DataLoader, Dataset

log = logging.getLogger(__name__)

Rows = list[dict[str, Any]]
ScreenPool = Callable[[Rows, list[str]], Any]
"""A pool's rows and their names -> the kept rows (``base.SplitData``; skipped rows recorded)."""


@dataclass(frozen=True)
class StreamPosition:
    """Where a rank's stream stands: after ``batches_done`` batches of pool ``pool_index`` of pass
    ``pass_index``, a pool that begins at the stream state ``pool_start`` (None: the pass's start), after
    ``rows_before`` rows of the pass (they name rows without an id)."""

    pass_index: int = 0
    pool_index: int = 0
    pool_start: dict | None = None
    rows_before: int = 0
    batches_done: int = 0


class StreamPlanner:
    """One rank's endless sequence of planned batches (the columns of their rows) over ``stream``."""

    def __init__(
        self,
        stream: IterableDataset,
        screen: ScreenPool,
        max_seconds: float,
        max_batch_size: int | None,
        buffer_size: int,
        seed: int,
        where: str,
        shuffle: bool = True,
        num_replicas: int | None = None,
        rank: int | None = None,
        on_pass_end: Callable[[int], None] | None = None,
    ) -> None:
        if buffer_size < 1:
            raise ValueError(f"stream_buffer must be at least 1 row, got {buffer_size}")
        world_size, own_rank = world()
        self.stream, self.screen, self.where = stream, screen, where
        self.max_seconds, self.max_batch_size = max_seconds, max_batch_size
        self.buffer_size, self.seed, self.shuffle = buffer_size, seed, shuffle
        self.world_size = world_size if num_replicas is None else num_replicas
        self.rank = own_rank if rank is None else rank
        self.on_pass_end = on_pass_end

    def batches(self, start: StreamPosition) -> Iterator[tuple[StreamPosition, dict[str, list]]]:
        """``(position after the batch, the batch's columns)``, from ``start`` on, pass after pass."""
        position = start
        while True:
            yield from self._pass(position)
            if self.on_pass_end is not None:
                self.on_pass_end(position.pass_index)
            position = StreamPosition(position.pass_index + 1)

    def _pass(self, start: StreamPosition) -> Iterator[tuple[StreamPosition, dict[str, list]]]:
        share = split_dataset_by_node(self.stream, rank=self.rank, world_size=self.world_size)
        share.set_epoch(start.pass_index)
        if start.pool_start is not None:
            share.load_state_dict(start.pool_start)
        rows = iter(share)
        pool, rows_before, pool_start, skip = (
            start.pool_index,
            start.rows_before,
            start.pool_start,
            start.batches_done,
        )
        planned = 0
        while chunk := list(islice(rows, self._pool_size(start.pass_index, pool))):
            next_start = share.state_dict()  # the stream after this pool's last row: where the next begins
            names = [
                f"pass {start.pass_index} rank {self.rank}/{self.world_size} row {rows_before + i}"
                for i in range(len(chunk))
            ]
            data = self.screen(chunk, names)
            batches = self._plan(data.extra["_duration"], start.pass_index, pool)
            for done, batch in enumerate(batches[skip:], start=skip + 1):
                yield (
                    StreamPosition(start.pass_index, pool, pool_start, rows_before, done),
                    data[batch.tolist()],
                )
            planned += len(batches)
            pool, rows_before, pool_start, skip = pool + 1, rows_before + len(chunk), next_start, 0
        if start == StreamPosition(start.pass_index) and not planned:
            share_of = f"rank {self.rank} of {self.world_size}'s share of {self.where}"
            if rows_before:
                raise ValueError(
                    f"every one of the {rows_before} rows of {share_of} was skipped (see the skipped rows); "
                    "check the audio and the column mapping (columns:)"
                )
            raise ValueError(
                f"{share_of} has no rows: a streamed corpus needs at least as many rows (and, for each rank to "
                "read only its own, as many shards) as ranks"
            )

    def _pool_size(self, pass_index: int, pool: int) -> int:
        if pool or not self.shuffle:
            return self.buffer_size
        return int(np.random.default_rng([self.seed, pass_index]).integers(1, self.buffer_size + 1))

    def _plan(self, durations: np.ndarray, pass_index: int, pool: int) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, pass_index, pool])
        order = rng.permutation(len(durations)) if self.shuffle else np.arange(len(durations))
        batches = plan_batches(durations, self.max_seconds, self.max_batch_size, order, len(order) or 1)
        return [batches[i] for i in rng.permutation(len(batches))] if self.shuffle else batches


class _AsIs(Dataset):
    """Hands a planned batch's columns (the sampler's element) to the collate function, in a worker."""

    def __getitem__(self, columns: dict[str, list]) -> dict[str, list]:
        return columns


class StreamedLoader:
    """An endless, resumable loader over a ``StreamPlanner``: rows are read and batches planned in the main
    process, decoded by ``collate_fn`` in ``num_workers`` workers, handed out in plan order."""

    def __init__(
        self,
        planner: StreamPlanner,
        collate_fn: Callable[[dict[str, list]], Any],
        num_workers: int = 0,
        finish_batch: Callable[[Any], Any] | None = None,
        source: str = "",
        batches_per_epoch: int | None = None,
    ) -> None:
        """``finish_batch`` runs on each batch in the main process (as in ``sampler.ResumableLoader``);
        ``source`` names the corpus in the state, so a state from another one is not applied;
        ``batches_per_epoch``: what ``len()`` says (see the module docstring; None: no length)."""
        self.planner, self.collate_fn, self.num_workers = planner, collate_fn, num_workers
        self.finish_batch, self.source = finish_batch, source
        self.batches_per_epoch = batches_per_epoch
        #: after the last batch handed out
        self.position = StreamPosition()

    @property
    def world_size(self) -> int:
        return self.planner.world_size

    def __len__(self) -> int:
        if self.batches_per_epoch is None:
            raise TypeError(f"{self.source} is streamed: an endless stream of batches has no length")
        return self.batches_per_epoch

    def __iter__(self) -> Iterator[Any]:
        in_flight: deque[StreamPosition] = deque()  # planned, not yet handed out

        def planned() -> Iterator[dict[str, list]]:
            for position, columns in self.planner.batches(self.position):
                in_flight.append(position)
                yield columns

        decoded = DataLoader(
            _AsIs(),
            sampler=planned(),
            batch_size=None,
            num_workers=self.num_workers,
            collate_fn=self.collate_fn,
        )
        for batch in decoded:
            self.position = in_flight.popleft()
            if self.finish_batch is not None:
                batch = self.finish_batch(batch)
            if batch is not None:
                yield batch

    def state_dict(self) -> dict[str, Any]:
        """Every rank's position (gathered: call it on every rank at once when a process group runs)."""
        planner = self.planner
        own = (planner.rank, asdict(self.position))
        ranks = [own]
        if planner.world_size > 1 and dist.is_available() and dist.is_initialized():
            ranks = [None] * planner.world_size
            dist.all_gather_object(ranks, own)
        return {
            "source": self.source,
            "seed": planner.seed,
            "world_size": planner.world_size,
            "positions": dict(ranks),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue after the batch this rank had handed out; see the module docstring for other states."""
        planner, positions = self.planner, state["positions"]
        same = (state["source"], state["seed"], state["world_size"]) == (
            self.source,
            planner.seed,
            planner.world_size,
        )
        if same and planner.rank in positions:
            self.position = StreamPosition(**positions[planner.rank])
            return
        first = min(p["pass_index"] for p in positions.values()) if state["source"] == self.source else 0
        log.warning(
            "the checkpoint's stream positions (%s, seed %s, %s ranks, positions of ranks %s) do not apply to "
            "rank %d of this run (%s, seed %d, %d ranks): the stream starts pass %d over, so rows read in it "
            "before the checkpoint are seen again",
            state["source"],
            state["seed"],
            state["world_size"],
            sorted(positions),
            planner.rank,
            self.source,
            planner.seed,
            planner.world_size,
            first,
        )
        self.position = StreamPosition(first)
