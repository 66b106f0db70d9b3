"""Data at scale: the bucketing sampler's shards per rank, mid-epoch resume on another world size, and a
corpus streamed from its files (``streaming: true``). Ranks are simulated with ``num_replicas``/``rank``;
one test runs two real gloo processes.
"""

from __future__ import annotations

import numpy as np
import pytest
from minmo_lightning.datamodules.sampler import DurationBatchSampler

DURATIONS = np.random.default_rng(1).uniform(0.5, 12.0, size=101)
BUDGET = 40.0


def ranks(world: int, durations: np.ndarray = DURATIONS, **kwargs) -> list[DurationBatchSampler]:
    return [
        DurationBatchSampler(durations, BUDGET, seed=5, pool_size=30, num_replicas=world, rank=r, **kwargs)
        for r in range(world)
    ]


def take(samplers: list[DurationBatchSampler], steps: int | None = None) -> list[list[list[int]]]:
    """Each rank's batches for ``steps`` steps (all: the rest of the epoch), the way a loader counts them."""
    taken = []
    for sampler in samplers:
        batches = []
        for batch in sampler:
            if steps is not None and len(batches) == steps:
                break
            batches.append(batch)
            sampler.batches_done += 1  # ResumableLoader counts a batch as it hands it out
        taken.append(batches)
    return taken


def items(shards: list[list[list[int]]]) -> list[int]:
    return [i for shard in shards for batch in shard for i in batch]


# ---- shards per rank --------------------------------------------------------------------------------
@pytest.mark.parametrize("world", [1, 2, 3])
def test_every_item_once_across_ranks_with_equal_steps(world):
    samplers = ranks(world)
    shards = take(samplers)
    assert len({len(s) for s in shards}) == 1 and len(shards[0]) == len(samplers[0])
    assert sorted(items(shards)) == list(range(len(DURATIONS)))  # nothing dropped, nothing repeated
    assert all(len(b) * DURATIONS[b].max() <= BUDGET for s in shards for b in s)
    # the dealt plan keeps the world-independent item order: step s of rank r is batch s * world + r
    order = [i for b in samplers[0].order_plan() for i in b]
    dealt = [i for step in zip(*shards) for batch in step for i in batch]
    assert dealt == order


def test_fewer_items_than_ranks_repeat_some_and_say_so(caplog):
    shards = take(ranks(3, np.array([1.0, 2.0])))
    assert [len(s) for s in shards] == [1, 1, 1]
    assert sorted(items(shards)) == [0, 0, 1]
    assert "1 of them are repeated" in caplog.text


# ---- mid-epoch resume ---------------------------------------------------------------------------------
def resume(state: dict, world: int) -> list[DurationBatchSampler]:
    samplers = ranks(world)
    for sampler in samplers:
        sampler.load_state_dict(state)
    return samplers


def test_a_resume_on_the_same_world_size_takes_the_uninterrupted_batches():
    uninterrupted = take(ranks(2))
    before = ranks(2)
    take(before, 3)
    state = before[0].state_dict()
    assert state == before[1].state_dict()  # ranks move in step: rank 0's state speaks for all
    after = take(resume(state, 2))
    assert [u[3:] for u in uninterrupted] == after


@pytest.mark.parametrize(("saved", "resumed"), [(2, 1), (2, 3), (1, 2), (3, 2)])
def test_a_resume_on_another_world_size_continues_with_the_unseen_items(saved, resumed):
    before = ranks(saved)
    before[0].set_epoch(4)
    for sampler in before[1:]:
        sampler.set_epoch(4)
    seen = take(before, 3)
    state = before[0].state_dict()
    order = [i for b in before[0].order_plan() for i in b]
    assert state["items_done"] == len(items(seen)) and sorted(order[: state["items_done"]]) == sorted(
        items(seen)
    )
    after = resume(state, resumed)
    lengths = {len(s) for s in after}
    rest = take(after)
    assert len({len(r) for r in rest}) == 1  # equal steps on the new world size
    assert lengths == {3 + len(rest[0])}  # len() counts the epoch as resumed: the 3 steps done + those left
    assert sorted(items(seen) + items(rest)) == list(range(len(DURATIONS)))  # nothing twice, nothing skipped
    assert all(len(b) * DURATIONS[b].max() <= BUDGET for r in rest for b in r)
    assert after[0].state_dict()["items_done"] == len(DURATIONS)


def test_resumes_chain_across_world_sizes():
    first = ranks(2)
    seen = take(first, 2)
    on_three = first[0].state_dict()
    second = resume(on_three, 3)
    seen += take(second, 2)
    state = second[0].state_dict()
    assert state["batches_done"] == 4 and state["plan_start_step"] == 2
    # the same world size again: the resumed plan goes on where it was
    assert take(resume(state, 3), 1) == [s[2:] for s in take(resume(on_three, 3), 3)]
    rest = take(resume(state, 1))
    assert sorted(items(seen) + items(rest)) == list(range(len(DURATIONS)))


def test_a_state_from_other_data_restarts_the_epoch_and_says_so(caplog):
    before = ranks(2)
    take(before, 2)
    state = before[0].state_dict()
    other = [DurationBatchSampler(DURATIONS[:-1], BUDGET, seed=5, pool_size=30, num_replicas=1, rank=0)]
    other[0].load_state_dict(state)
    assert sorted(items(take(other))) == list(range(len(DURATIONS) - 1))
    assert "differs from this run's" in caplog.text
