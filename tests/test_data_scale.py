"""Data at scale: the bucketing sampler's shards per rank, mid-epoch resume on another world size, and a
corpus streamed from its files (``streaming: true``). Ranks are simulated with ``num_replicas``/``rank``;
one test runs two real gloo processes.
"""

from __future__ import annotations

import functools
import io
import itertools
import json
from pathlib import Path
from unittest.mock import patch

import lightning as L
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from datasets import Audio, Dataset, DatasetDict, concatenate_datasets
from lightning.pytorch.callbacks import ModelCheckpoint
from minmo_lightning.datamodules import ASRDataModule, base
from minmo_lightning.datamodules.sampler import DurationBatchSampler, ResumableLoader
from minmo_lightning.datamodules.sampler import log as sampler_log
from minmo_lightning.datamodules.streamed import StreamedLoader

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


class IndexRows(torch.utils.data.Dataset):
    def __getitem__(self, indices: list[int]) -> dict[str, list[int]]:
        return {"ids": indices}


@pytest.mark.parametrize("world", [1, 2])
def test_a_batch_without_readable_rows_keeps_ranks_in_step(world, caplog):
    loaders = [
        ResumableLoader(
            IndexRows(),
            sampler=sampler,
            batch_size=None,
            collate_fn=lambda batch: batch,
            finish_batch=lambda batch: None if 7 in batch["ids"] else batch,
        )
        for sampler in ranks(world)
    ]
    shards = [list(loader) for loader in loaders]
    steps = len(loaders[0].sampler)
    if world == 1:  # nothing to keep in step with: the batch is left out
        assert len(shards[0]) == steps - 1 and "repeats" not in caplog.text
    else:
        assert [len(s) for s in shards] == [steps, steps]
        (short,) = [s for s in shards if any(b == s[-1] for b in s[:-1])]
        assert not any(7 in b["ids"] for b in short) and "repeats its last batch" in caplog.text


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


# ---- a mixture of sources resumed on another world size ----------------------------------------------
SECOND = np.random.default_rng(2).uniform(0.5, 4.0, size=37)


def mixtures(world: int) -> list:
    """Each rank's interleaved loader over two sources (the second upsampled 2x), as stage 1c mixes them."""
    from minmo_lightning.datamodules.mixture import InterleavedLoader

    def source(durations: np.ndarray, rank: int, tag: str) -> ResumableLoader:
        sampler = DurationBatchSampler(durations, BUDGET, seed=5, pool_size=30, num_replicas=world, rank=rank)
        return ResumableLoader(
            IndexRows(), sampler=sampler, batch_size=None, collate_fn=lambda b: (tag, b["ids"])
        )

    return [
        InterleavedLoader([source(DURATIONS, r, "a"), source(SECOND, r, "b")], seed=3, repeats=[1, 2])
        for r in range(world)
    ]


def mixed_take(loaders: list, steps: int | None = None) -> list[list[tuple[str, list[int]]]]:
    return [list(itertools.islice(iter(loader), steps)) for loader in loaders]


def seen(shards: list[list[tuple[str, list[int]]]], tag: str) -> list[int]:
    return sorted(i for shard in shards for source, batch in shard if source == tag for i in batch)


@pytest.mark.parametrize(("saved", "resumed", "steps"), [(2, 1, 5), (1, 3, 9), (3, 2, 2), (2, 3, 0)])
def test_a_mixture_resumes_on_another_world_size_with_the_unseen_items(saved, resumed, steps):
    """Each source's items once per repeat across the save and the resume, equal steps on the new ranks."""
    before = mixtures(saved)
    taken = mixed_take(before, steps)
    state = before[0].state_dict()
    assert state["world_size"] == saved and state["batches_done"] == steps
    after = mixtures(resumed)
    for loader in after:
        loader.load_state_dict(state)
    lengths = {len(loader) for loader in after}
    rest = mixed_take(after)
    assert len({len(r) for r in rest}) == 1 and lengths == {steps + len(rest[0])}
    assert seen(taken + rest, "a") == list(range(len(DURATIONS)))  # nothing twice, nothing skipped
    assert seen(taken + rest, "b") == sorted(list(range(len(SECOND))) * 2)  # upsampled: twice each
    assert all(loader.epoch == 1 for loader in after)  # the next pass is a whole fresh epoch


def test_a_mixture_checkpointed_inside_a_replanned_pass_resumes_on_the_same_ranks():
    before = mixtures(2)
    taken = mixed_take(before, 4)
    middle = mixtures(1)
    middle[0].load_state_dict(before[0].state_dict())
    taken += mixed_take(middle, 3)
    state = middle[0].state_dict()
    assert not state["replayable"] and state["batches_done"] == 7
    after = mixtures(1)
    after[0].load_state_dict(
        state
    )  # one rank again: the re-planned order is not the seeded one, so per source
    rest = mixed_take(after)
    assert seen(taken + rest, "a") == list(range(len(DURATIONS)))
    assert seen(taken + rest, "b") == sorted(list(range(len(SECOND))) * 2)


def test_a_state_from_other_data_restarts_the_epoch_and_says_so(caplog):
    before = ranks(2)
    take(before, 2)
    state = before[0].state_dict()
    other = [DurationBatchSampler(DURATIONS[:-1], BUDGET, seed=5, pool_size=30, num_replicas=1, rank=0)]
    other[0].load_state_dict(state)
    assert sorted(items(take(other))) == list(range(len(DURATIONS) - 1))
    assert "differs from this run's" in caplog.text


def test_an_epoch_cut_short_says_what_it_left_out(caplog):
    (sampler,) = ranks(1)
    sampler.set_epoch(1)
    take([sampler], len(sampler) - 1)  # the trainer stops a batch early
    sampler.set_epoch(2)
    assert "epoch 1 stopped after 21 of its 22 steps" in caplog.text


def test_a_pass_that_took_every_batch_says_nothing_when_the_next_epoch_starts(caplog):
    (sampler,) = ranks(1)
    sampler.set_epoch(1)
    batches = iter(sampler)
    for _ in range(len(sampler)):  # every batch handed out, the pass never closed (a mixture stops there)
        next(batches)
        sampler.batches_done += 1
    sampler.set_epoch(2)
    assert "stopped after" not in caplog.text


def durations_corpus(folder: Path) -> Path:
    """``DURATIONS`` / 30 as clips of a parquet ASR split (so ``BUDGET / 30`` batches them as above)."""
    seconds = (DURATIONS / 30).round(4)
    rows = {
        "id": [f"u{i:03d}" for i in range(len(seconds))],
        "audio": [{"bytes": wav(s), "path": None} for s in seconds],
        "text": ["a clip"] * len(seconds),
        "duration": seconds.tolist(),
    }
    folder.mkdir()
    Dataset.from_dict(rows).cast_column("audio", Audio(decode=False)).to_parquet(folder / "train.parquet")
    return folder


@pytest.mark.parametrize("reload", [0, 1])
def test_every_epoch_runs_to_its_own_length_when_the_trainer_reloads_loaders(tmp_path, reload, monkeypatch):
    """Epoch plans differ in length (21, 22, 23 batches for epochs 0-2 in pools of 30); Lightning fixes the
    length at epoch 0's unless it reloads the loaders every epoch."""
    monkeypatch.setattr(base, "DurationBatchSampler", functools.partial(DurationBatchSampler, pool_size=30))
    module = ASRDataModule(
        str(durations_corpus(tmp_path / "clips")),
        max_seconds_per_batch=BUDGET / 30 + 1e-3,
        val_split=None,
        test_split=None,
        seed=5,
    )
    model = RecordIds()
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=3,
        reload_dataloaders_every_n_epochs=reload,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
    )
    with patch.object(sampler_log, "warning") as warning:
        trainer.fit(model, module)
    seen = [sorted(i for epoch, ids in model.epochs if epoch == e for i in ids) for e in range(3)]
    if reload:
        assert seen == [sorted(f"u{i:03d}" for i in range(len(DURATIONS)))] * 3
        warning.assert_not_called()
    else:
        assert len(seen[0]) == len(DURATIONS)
        assert all(len(s) < len(DURATIONS) for s in seen[1:])  # cut at epoch 0's 21 batches
        assert "epoch %d stopped after %d of its %d steps" in warning.call_args_list[0].args[0]


# ---- a streamed corpus ----------------------------------------------------------------------------------
RATE = 16000
STREAM_BUDGET = 0.8  # seconds of padded audio per batch
SHARDS, ROWS = 4, 9
BAD = {"s1r3": "empty_transcript", "s2r5": "bad_duration", "s3r1": "unreadable_audio"}
GOOD_IDS = {f"s{k}r{i}" for k in range(SHARDS) for i in range(ROWS)} - set(BAD)


def wav(seconds: float) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, np.full(round(seconds * RATE), 0.1, dtype=np.float32), RATE, format="WAV")
    return buffer.getvalue()


def shard_rows(shard: int, rows: int) -> dict[str, list]:
    """ASR rows ``s{shard}r{i}`` of 0.05-0.3 s; the ids in ``BAD`` are broken the way they say."""
    seconds = np.random.default_rng(shard).uniform(0.05, 0.3, rows).round(3).tolist()
    ids = [f"s{shard}r{i}" for i in range(rows)]
    audio = [b"not audio" if i == "s3r1" else wav(s) for i, s in zip(ids, seconds)]
    return {
        "id": ids,
        "audio": [{"bytes": a, "path": None} for a in audio],
        "text": ["" if i == "s1r3" else f"text of {i}" for i in ids],
        "duration": [None if i == "s2r5" else s for i, s in zip(ids, seconds)],
    }


def write_corpus(folder: Path, kind: str = "parquet") -> None:
    """``SHARDS`` training files of ``kind`` (parquet, arrow, json, saved) of ``ROWS`` rows in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    parts = [
        Dataset.from_dict(shard_rows(k, ROWS)).cast_column("audio", Audio(decode=False))
        for k in range(SHARDS)
    ]
    for k, part in enumerate(parts):
        name = folder / f"train-{k:05d}-of-{SHARDS:05d}"
        if kind == "parquet":
            part.to_parquet(f"{name}.parquet")
        elif kind == "arrow":  # the Arrow IPC stream format, as datasets writes its own files
            table = part.data.table
            with pa.OSFile(f"{name}.arrow", "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table)
        elif kind == "json":  # json holds no bytes: audio files beside the folder, paths relative to it
            clips = folder.parent / f"{folder.name}_clips"
            clips.mkdir(exist_ok=True)
            for row in part:
                (clips / f"{row['id']}.wav").write_bytes(row["audio"]["bytes"])
            lines = [{**row, "audio": f"../{clips.name}/{row['id']}.wav"} for row in part]
            Path(f"{name}.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    if kind == "saved":
        DatasetDict({"train": concatenate_datasets(parts)}).save_to_disk(str(folder))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("streamed") / "parquet"
    write_corpus(folder)
    return folder


def streamed(path: Path, rank: int = 0, world: int = 1, **kwargs) -> tuple[ASRDataModule, StreamedLoader]:
    settings = {
        "stream_buffer": 5,
        "max_seconds_per_batch": STREAM_BUDGET,
        "val_split": None,
        "test_split": None,
    }
    module = ASRDataModule(str(path), streaming=True, **{**settings, **kwargs})
    module.setup("fit")
    loader = module.train_dataloader()
    loader.planner.rank, loader.planner.world_size = rank, world  # a simulated rank
    return module, loader


def one_pass(loader: StreamedLoader) -> list[dict]:
    """The batches of the loader's current pass (it is endless: the next pass starts after)."""
    batches = []
    for batch in loader:
        if loader.position.pass_index > 0:
            break
        batches.append(batch)
    return batches


@pytest.mark.parametrize("world", [1, 2, 3])
def test_each_rank_streams_its_own_share_once_per_pass_and_skipped_rows_are_listed(corpus, world):
    shares, skipped = [], {}
    for rank in range(world):
        module, loader = streamed(corpus, rank, world)
        batches = one_pass(loader)
        shares.append([i for batch in batches for i in batch["ids"]])
        skipped.update({row["id"]: row["reason"] for row in module.skipped_rows})
        for batch in batches:  # within the padded-seconds budget (rounding: a sample per row)
            assert batch["audio"].waveform.numel() <= (STREAM_BUDGET * RATE) + len(batch["ids"])
    ids = [i for share in shares for i in share]
    assert len(ids) == len(set(ids)), "a row was read by two ranks or twice in a pass"
    assert set(ids) == GOOD_IDS
    assert skipped == BAD  # every bad row named with its reason, by whichever rank read it


def test_streamed_batches_have_the_map_style_format_and_content(corpus):
    loaded = ASRDataModule(str(corpus), max_seconds_per_batch=STREAM_BUDGET, val_split=None, test_split=None)
    loaded.setup("fit")
    mapped = list(loaded.train_dataloader())
    _, loader = streamed(corpus)
    streamed_batches = one_pass(loader)
    assert {tuple(b) for b in mapped} == {tuple(b) for b in streamed_batches}  # same keys, same order

    def rows(batches):
        return {
            i: (
                b["text"][k],
                b["audio"].waveform[k, : b["audio"].lengths[k]].tolist(),
                b["audio"].sample_rate,
            )
            for b in batches
            for k, i in enumerate(b["ids"])
        }

    assert rows(streamed_batches) == rows(mapped)


def test_a_rank_holds_one_pool_of_rows_at_a_time(corpus):
    _, loader = streamed(corpus, stream_buffer=4)
    pools = []  # the names of each pool's rows: "pass P rank R/W row N"
    screen = loader.planner.screen
    loader.planner.screen = lambda rows, names: pools.append(names) or screen(rows, names)
    one_pass(loader)
    assert max(len(pool) for pool in pools) <= 4
    assert sum(name.startswith("pass 0 ") for pool in pools for name in pool) == SHARDS * ROWS


@pytest.mark.parametrize("kind", ["arrow", "json", "saved"])
def test_other_file_kinds_stream_too(tmp_path, kind):
    write_corpus(tmp_path / kind, kind)
    _, loader = streamed(tmp_path / kind)
    assert {i for batch in one_pass(loader) for i in batch["ids"]} == GOOD_IDS


@pytest.mark.parametrize("taken", [1, 6, 11])
def test_a_resumed_stream_continues_with_the_next_unseen_batch(corpus, taken):
    _, uninterrupted = streamed(corpus)
    expected = [batch["ids"] for batch in itertools.islice(uninterrupted, taken + 6)]
    _, before = streamed(corpus, num_workers=2)  # workers decode ahead: only what was handed out counts
    seen = [batch["ids"] for batch in itertools.islice(before, taken)]
    state = before.state_dict()
    _, after = streamed(corpus)
    after.load_state_dict(state)
    assert seen + [batch["ids"] for batch in itertools.islice(after, 6)] == expected


def test_a_stream_state_from_another_world_size_restarts_its_pass_and_says_so(corpus, caplog):
    _, before = streamed(corpus, 0, 2)
    list(itertools.islice(before, 3))
    _, after = streamed(corpus)
    after.load_state_dict(before.state_dict())
    assert "starts pass 0 over" in caplog.text
    assert {i for batch in one_pass(after) for i in batch["ids"]} == GOOD_IDS


def test_streamed_sources_say_what_is_missing_and_how_to_fix_it(corpus, tmp_path):
    no_duration = tmp_path / "no_duration"
    no_duration.mkdir()
    pq.write_table(
        pq.read_table(next(corpus.glob("*.parquet"))).drop(["duration"]), no_duration / "train.parquet"
    )
    with pytest.raises(ValueError, match=r"no duration column .*'text'.*columns: \{duration: <column>\}"):
        streamed(no_duration)
    with pytest.raises(ValueError, match=r"no column for the asr field 'text' .*'transcription'.*columns"):
        streamed(corpus, schema="crema_d")
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "a.wav").write_bytes(wav(0.1))
    with pytest.raises(ValueError, match="audio folder, which cannot be streamed"):
        streamed(tmp_path / "clips")
    with pytest.raises(ValueError, match="not a local path: streaming reads local"):
        streamed(Path("someone/corpus"))
    module = ASRDataModule(str(corpus), streaming=True, val_split=None, test_split=None)
    module.setup("fit")
    module.trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False)
    with pytest.raises(ValueError, match="set trainer.max_steps"):
        module.train_dataloader()


def test_a_rank_whose_share_is_empty_or_all_bad_says_so(tmp_path):
    rows = shard_rows(3, 2)  # s3r0 and s3r1 (unreadable audio, but skipped only when decoded)
    Dataset.from_dict(rows).cast_column("audio", Audio(decode=False)).to_parquet(tmp_path / "train.parquet")
    _, loader = streamed(tmp_path, 2, 3)
    with pytest.raises(ValueError, match="rank 2 of 3's share of .* has no rows: .*at least as many rows"):
        next(iter(loader))
    _, loader = streamed(tmp_path, 0, 1, max_duration=0.01)
    with pytest.raises(ValueError, match="every one of the 2 rows of rank 0 of 1's share .* was skipped"):
        next(iter(loader))


# ---- under a Trainer, and with two real processes ------------------------------------------------------------
class RecordIds(L.LightningModule):
    """One weight; keeps the ids of every training batch: the data, not the model, is under test."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.ids: list[list[str]] = []
        self.epochs: list[tuple[int, list[str]]] = []

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self.ids.append(batch["ids"])
        self.epochs.append((self.current_epoch, batch["ids"]))
        return (self.scale * batch["audio"].waveform).pow(2).mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit_streamed(corpus: Path, root: Path, ckpt_path: Path | None = None) -> list[list[str]]:
    """7 steps in epochs of 4, a checkpoint every 3 steps; the ids of the batches trained on."""
    module = ASRDataModule(
        str(corpus),
        streaming=True,
        stream_buffer=5,
        max_seconds_per_batch=STREAM_BUDGET,
        val_split=None,
        test_split=None,
    )
    model = RecordIds()
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=7,
        limit_train_batches=4,
        default_root_dir=root,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ModelCheckpoint(dirpath=root / "checkpoints", every_n_train_steps=3, save_top_k=-1)],
    )
    trainer.fit(model, module, ckpt_path=ckpt_path)
    return model.ids


def test_a_trainer_resumes_a_streamed_run_mid_epoch_with_the_uninterrupted_batches(corpus, tmp_path):
    uninterrupted = fit_streamed(corpus, tmp_path / "run")
    assert len(uninterrupted) == 7
    (checkpoint,) = (tmp_path / "run" / "checkpoints").glob("*step=3.ckpt")
    resumed = fit_streamed(corpus, tmp_path / "resumed", checkpoint)
    assert resumed == uninterrupted[3:]  # steps 4-7, across the epoch boundary after step 4
    listed = [json.loads(line)["id"] for line in (tmp_path / "run" / "skipped_rows.jsonl").open()]
    assert listed and set(listed) <= set(BAD)


def _two_ranks(rank: int, corpus: Path, out: Path) -> None:
    dist.init_process_group("gloo", init_method=f"file://{out / 'store'}", rank=rank, world_size=2)
    try:
        sampler = DurationBatchSampler(
            DURATIONS, BUDGET, seed=5, pool_size=30
        )  # the world comes from the group
        batches = list(sampler)
        _, loader = streamed(corpus, rank, 2)
        assert loader.planner.world_size == 2 and loader.planner.rank == rank
        stream = iter(loader)
        first = [next(stream)["ids"] for _ in range(2)]
        state = loader.state_dict()  # gathers both ranks' positions
        following = next(stream)["ids"]
        _, again = streamed(corpus, rank, 2)
        again.load_state_dict(state)
        result = {
            "world": sampler.num_replicas,
            "batches": batches,
            "state_ranks": sorted(state["positions"]),
            "first": first,
            "following": following,
            "resumed": next(iter(again))["ids"],
        }
        (out / f"{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_share_the_plan_and_the_stream_state(corpus, tmp_path):
    mp.start_processes(_two_ranks, args=(corpus, tmp_path), nprocs=2, start_method="fork")
    results = [json.loads((tmp_path / f"{rank}.json").read_text()) for rank in range(2)]
    assert [r["world"] for r in results] == [2, 2]
    assert len(results[0]["batches"]) == len(results[1]["batches"])
    assert sorted(i for r in results for b in r["batches"] for i in b) == list(range(len(DURATIONS)))
    assert all(r["state_ranks"] == [0, 1] and r["resumed"] == r["following"] for r in results)
    firsts = [{i for b in r["first"] for i in b} for r in results]
    assert not firsts[0] & firsts[1]  # each rank streams its own shards


@pytest.mark.parametrize("taken", [2, 7])
def test_a_mixture_with_a_streamed_source_resumes_with_the_uninterrupted_batches(corpus, taken):
    """The stream's own position rides in the mixture's state (it runs on across passes)."""
    from minmo_lightning.datamodules.mixture import InterleavedLoader

    def mixture() -> InterleavedLoader:
        _, stream = streamed(corpus)
        stream.batches_per_epoch = 6
        sampler = DurationBatchSampler(SECOND, BUDGET, seed=5, pool_size=30, num_replicas=1, rank=0)
        indexed = ResumableLoader(IndexRows(), sampler=sampler, batch_size=None, collate_fn=lambda b: b)
        return InterleavedLoader([indexed, stream], seed=3, repeats=[2, 1])

    def ids(batches: list[dict]) -> list[list]:
        return [batch["ids"] for batch in batches]

    uninterrupted = ids(list(mixture()))
    before = mixture()
    seen = ids(itertools.islice(iter(before), taken))
    after = mixture()
    after.load_state_dict(before.state_dict())
    assert seen + ids(list(after)) == uninterrupted
