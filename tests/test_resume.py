"""``minmo fit ... --ckpt_path last`` after a crash mid-epoch trains on the batches an uninterrupted run
would have trained on (the loader's position is in the checkpoint), through the ``minmo fit`` CLI.

The crash is an exception raised after step k: the resumed run starts from the last checkpoint saved
before it (``ModelCheckpoint`` saves none on exceptions). Only batch ids are compared: Lightning does not
restore the random state, so dropout or SpecAugment masks may differ after a resume.
"""

from __future__ import annotations

import copy
import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import ClassVar

import lightning as L
import numpy as np
import pytest
import soundfile
import torch
import yaml
from datasets import Audio, Dataset, DatasetDict
from minmo_lightning.components.speech_tokenizer.s3tokenizer import S3TokenizerV2
from minmo_lightning.datamodules import ASRDataModule, prepare
from minmo_lightning.datamodules.sampler import ResumableLoader
from minmo_lightning.evaluation.runner import evaluate, read_jsonl

from minmo_lightning.checkpoint_io import AtomicCheckpointIO
from minmo_lightning.cli import lightning_main
from minmo_lightning.contracts import AudioBatch

REPO = Path(__file__).resolve().parents[1]
BUILTIN_ASR = REPO / "data" / "builtin" / "asr"
TONES, PER_EPOCH = 30, 6


class SimulatedCrash(RuntimeError):
    pass


class RecordBatchIds(L.Callback):
    """Appends every training batch's ids to a JSON-lines file; raises ``SimulatedCrash`` once
    ``crash_after_step`` optimizer steps are done."""

    def __init__(self, path: str, crash_after_step: int | None = None) -> None:
        self.path, self.crash_after_step = Path(path), crash_after_step

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx
    ) -> None:
        with self.path.open("a") as file:
            file.write(json.dumps({"step": trainer.global_step, "ids": batch["ids"]}) + "\n")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.crash_after_step is not None and trainer.global_step >= self.crash_after_step:
            raise SimulatedCrash(f"crash after step {trainer.global_step}")


class TinyASRModel(L.LightningModule):
    """One weight over ASR batches: the loader, not the model, is under test."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return (self.scale * batch["audio"].waveform).pow(2).mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(recipe: dict, run: Path, every_n_steps: int, crash_after_step: int | None = None, *args: str) -> list:
    """Run ``minmo fit`` on ``recipe`` in ``run``; returns the (step, ids) of every training batch it took."""
    recipe = copy.deepcopy(recipe)
    checkpoints = {"dirpath": str(run / "checkpoints"), "save_last": True, "save_top_k": 0}
    recipe["trainer"]["callbacks"] = [
        {
            "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
            "init_args": {**checkpoints, "every_n_train_steps": every_n_steps},
        },
        {
            "class_path": f"{__name__}.RecordBatchIds",
            "init_args": {"path": str(run / "ids.jsonl"), "crash_after_step": crash_after_step},
        },
    ]
    recipe["trainer"].update({"default_root_dir": str(run), "enable_model_summary": False})
    run.mkdir(exist_ok=True)
    config = run / "recipe.yaml"
    config.write_text(yaml.safe_dump(recipe))
    (run / "ids.jsonl").unlink(missing_ok=True)
    lightning_main(["fit", "--config", str(config), *args])
    return recorded(run)


def recorded(run: Path) -> list:
    return [(line["step"], line["ids"]) for line in map(json.loads, (run / "ids.jsonl").open())]


def crash_and_resume(recipe: dict, tmp_path: Path, every_n_steps: int, crash_after_step: int) -> dict:
    """An uninterrupted run, a run crashing after ``crash_after_step``, and its resume from ``last``."""
    uninterrupted = fit(recipe, tmp_path / "uninterrupted", every_n_steps)
    run = tmp_path / f"crash{crash_after_step}"
    with pytest.raises(SimulatedCrash):
        fit(recipe, run, every_n_steps, crash_after_step)
    crashed = recorded(run)
    saved = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    resumed = fit(recipe, run, every_n_steps, None, "--ckpt_path", "last")
    return {
        "uninterrupted": uninterrupted,
        "crashed": crashed,
        "checkpoint_step": saved["global_step"],
        "loader_state": saved["loops"]["fit_loop"]["state_dict"]["combined_loader"],
        "resumed": resumed,
    }


def assert_resumed_exactly(outcome: dict) -> None:
    step = outcome["checkpoint_step"]
    assert outcome["crashed"] == outcome["uninterrupted"][: len(outcome["crashed"])]  # same seed
    expected = outcome["uninterrupted"][step:]
    assert outcome["resumed"][0][0] == step, "the resume did not start at the checkpoint's step"
    assert [ids for _, ids in outcome["resumed"]] == [ids for _, ids in expected], (
        f"the resumed run (from step {step}) trained on other batches than the uninterrupted run"
    )


# ---- a dataset of its own (runs on a fresh checkout) --------------------------------------------------
@pytest.fixture(scope="module")
def tone_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 tones of 0.2 s: 6 batches of 5 an epoch at ``max_seconds_per_batch: 1.05``."""
    root = tmp_path_factory.mktemp("tones")
    paths = [str(root / f"{i}.wav") for i in range(TONES)]
    for i, path in enumerate(paths):
        soundfile.write(path, np.full(3200, 0.01 * (i + 1), dtype=np.float32), 16000)
    rows = {"id": [f"tone{i:02d}" for i in range(TONES)], "audio": paths, "text": ["a tone"] * TONES}
    train = Dataset.from_dict(rows).cast_column("audio", Audio(decode=False))
    DatasetDict({"train": train}).save_to_disk(str(root / "asr"))
    return root / "asr"


def tone_recipe(corpus: Path, num_workers: int) -> dict:
    data = {"path": str(corpus), "val_split": None, "test_split": None, "max_seconds_per_batch": 1.05}
    return {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "max_steps": 14, "logger": False},
        "model": {"class_path": f"{__name__}.TinyASRModel"},
        "data": {"class_path": "ASRDataModule", "init_args": {**data, "num_workers": num_workers}},
    }


@pytest.mark.parametrize(
    ("every_n_steps", "crash_after_step", "num_workers"),
    [
        (4, 5, 0),  # checkpoint in the middle of epoch 0
        (4, 9, 0),  # the middle of epoch 1: the epoch is restored as well
        (6, 8, 2),  # the end of epoch 0 (its last batch), with workers drawing ahead of the loop
    ],
)
def test_resume_after_a_crash_takes_the_uninterrupted_batches(
    tone_corpus: Path, tmp_path: Path, every_n_steps: int, crash_after_step: int, num_workers: int
) -> None:
    recipe = tone_recipe(tone_corpus, num_workers)
    outcome = crash_and_resume(recipe, tmp_path, every_n_steps, crash_after_step)
    step = outcome["checkpoint_step"]
    assert step == crash_after_step // every_n_steps * every_n_steps
    epoch, done = divmod(step - 1, PER_EPOCH)
    (state,) = outcome["loader_state"]
    assert (
        state.items()
        >= {"epoch": epoch, "seed": 0, "batches_done": done + 1, "batches_in_epoch": PER_EPOCH}.items()
    )
    assert_resumed_exactly(outcome)
    first_epoch = [i for _, ids in outcome["uninterrupted"][:PER_EPOCH] for i in ids]
    assert sorted(first_epoch) == [f"tone{i:02d}" for i in range(TONES)]


def test_fit_saves_through_the_atomic_checkpoint_io(tone_corpus: Path, tmp_path: Path) -> None:
    config = tmp_path / "recipe.yaml"
    config.write_text(yaml.safe_dump(tone_recipe(tone_corpus, 0)))
    cli = lightning_main(["--config", str(config)], run=False)
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)


# ---- the tiny recipe on the built-in corpus -----------------------------------------------------------
@pytest.mark.skipif(
    not (BUILTIN_ASR / "am.mvn").is_file(), reason="data/builtin is not built (minmo synth-data)"
)
def test_tiny_recipe_resumes_mid_epoch_with_the_uninterrupted_batches(tmp_path: Path) -> None:
    recipe = yaml.safe_load((REPO / "recipes" / "tiny" / "stage1a_prealign.yaml").read_text())
    recipe["trainer"].update({"max_steps": 8, "limit_val_batches": 0, "log_every_n_steps": 1})
    recipe["model"]["init_args"]["voice_encoder"]["init_args"]["cmvn_file"] = str(BUILTIN_ASR / "am.mvn")
    recipe["data"]["init_args"].update({"path": str(BUILTIN_ASR), "max_seconds_per_batch": 10.0})
    outcome = crash_and_resume(recipe, tmp_path, every_n_steps=3, crash_after_step=5)
    assert outcome["checkpoint_step"] == 3
    assert outcome["loader_state"][0]["batches_done"] == 3 and outcome["loader_state"][0]["epoch"] == 0
    assert_resumed_exactly(outcome)


# ---- the loader's state alone ---------------------------------------------------------------------------
def tone_loader(corpus: Path, seed: int = 0, num_workers: int = 0) -> ResumableLoader:
    module = ASRDataModule(
        str(corpus),
        val_split=None,
        test_split=None,
        max_seconds_per_batch=1.05,
        seed=seed,
        num_workers=num_workers,
    )
    module.setup("fit")
    return module.train_dataloader()


def test_the_state_counts_batches_handed_out_not_drawn_ahead_by_workers(tone_corpus: Path) -> None:
    loader = tone_loader(tone_corpus, num_workers=2)
    loader.sampler.set_epoch(3)
    batches = iter(loader)
    taken = [next(batches)["ids"] for _ in range(2)]  # the workers have drawn further ahead
    state = loader.state_dict()
    assert state.items() >= {"epoch": 3, "seed": 0, "batches_done": 2, "batches_in_epoch": PER_EPOCH}.items()
    rest = [batch["ids"] for batch in batches]
    resumed = tone_loader(tone_corpus)
    resumed.load_state_dict(state)
    assert [batch["ids"] for batch in resumed] == rest
    assert [batch["ids"] for batch in resumed] == taken + rest  # the next pass is the whole epoch again


def test_a_state_from_another_plan_restarts_the_epoch_and_says_so(
    tone_corpus: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = {"epoch": 1, "seed": 7, "batches_done": 2, "batches_in_epoch": PER_EPOCH}
    loader = tone_loader(tone_corpus)
    loader.load_state_dict(state)
    assert len([batch["ids"] for batch in loader]) == PER_EPOCH
    assert "differs from this run's (seed 0" in caplog.text


# ---- minmo evaluate and minmo prepare after a kill ----------------------------------------------------
class NamedData(L.LightningDataModule):
    """Eight 0.1 s clips in batches of 3; the reference text is the id."""

    def test_dataloader(self) -> torch.utils.data.DataLoader:
        def collate(ids: list[str]) -> dict:
            waves = [torch.full((1600,), 0.1) for _ in ids]
            return {"ids": ids, "audio": AudioBatch.from_list(waves, 16000), "text": ids}

        ids = [f"utt{k}" for k in range(8)]
        return torch.utils.data.DataLoader(ids, batch_size=3, collate_fn=collate)


class EchoModel(L.LightningModule):
    """Predicts each id as its transcript and notes which batches it computed."""

    calls: ClassVar[list[int]] = []

    def predict_step(self, batch: dict, batch_idx: int) -> list[dict]:
        EchoModel.calls.append(batch_idx)
        return [{"id": i, "hypothesis": i} for i in batch["ids"]]


def test_evaluate_killed_mid_write_resumes_with_every_row_once(tmp_path: Path) -> None:
    recipe = {
        "model": {"class_path": f"{__name__}.EchoModel"},
        "data": {"class_path": f"{__name__}.NamedData"},
    }
    out = tmp_path / "eval"
    killed_while_writing_batch_1 = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from minmo_lightning.evaluation.runner import evaluate

        real_fsync, calls = os.fsync, []

        def dies_mid_batch(fd):
            calls.append(fd)
            if len(calls) == 2:  # batch 1's lines are written: cut the last one short, then die
                os.ftruncate(fd, os.fstat(fd).st_size - 15)
                os.kill(os.getpid(), 9)
            real_fsync(fd)

        os.fsync = dies_mid_batch
        evaluate("asr", {str(out)!r}, {{"normalizer": "none"}}, recipe={recipe!r}, progress=False)
        """
    )
    child = subprocess.run(
        [sys.executable, "-c", killed_while_writing_batch_1], capture_output=True, text=True
    )
    assert child.returncode == -9, child.stderr[-2000:]
    lines = (out / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == 6 and not lines[-1].endswith("}")  # batch 0, two rows of batch 1, a cut row

    EchoModel.calls = []
    metrics = evaluate("asr", out, {"normalizer": "none"}, recipe=recipe, progress=False)
    ids = [row["id"] for row in read_jsonl(out / "predictions.jsonl")]
    assert sorted(ids) == [f"utt{k}" for k in range(8)]  # every row exactly once
    assert EchoModel.calls == [1, 2]  # batch 0 was complete; batch 1 is redone for its missing row
    assert metrics["summary"]["wer"] == 0.0 and metrics["inference"]["new_utterances"] == 3


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ten 0.3 s clips in a saved dataset, tokenized in shards of 3 (four shards)."""
    path = tmp_path_factory.mktemp("clips") / "data"
    rows = {"id": [f"clip{i}" for i in range(10)], "audio": [], "text": ["x"] * 10}
    for i in range(10):
        buffer = io.BytesIO()
        tone = 0.3 * np.sin(np.arange(4800) * (0.05 + 0.01 * i)).astype(np.float32)
        soundfile.write(buffer, tone, 16000, format="WAV")
        rows["audio"].append({"bytes": buffer.getvalue(), "path": f"clip{i}.wav"})
    Dataset.from_dict(rows).cast_column("audio", Audio(decode=False)).save_to_disk(str(path))
    return path


@pytest.fixture(scope="module")
def speech_tokenizer() -> S3TokenizerV2:
    torch.manual_seed(0)
    return S3TokenizerV2.from_preset("tiny", dim=64, n_heads=2, n_layers=1, asr_vocab="", asr_layers=0).eval()


def prepare_into(clips: Path, out: Path, tokenizer: S3TokenizerV2) -> None:
    prepare.prepare_dataset(clips, out, tokenizer, {"test": 1}, shard_size=3, show_progress=False)


def test_prepare_killed_in_each_phase_resumes_with_every_row_once(
    clips: Path, speech_tokenizer: S3TokenizerV2, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prepare_into(clips, tmp_path / "uninterrupted", speech_tokenizer)
    expected = Dataset.load_from_disk(str(tmp_path / "uninterrupted"))
    out = tmp_path / "out"
    write_json, save_to_disk = prepare._write_json, Dataset.save_to_disk
    shards_written: list[str] = []

    def killed_on_the_third_shard(path: Path, payload) -> None:
        if path.name.startswith("shard-"):
            if len(shards_written) == 2:
                path.with_suffix(".tmp").write_text(json.dumps(payload)[:50])  # cut short
                raise KeyboardInterrupt
            shards_written.append(path.name)
        write_json(path, payload)

    def killed_while_saving(self: Dataset, path: str, **kwargs) -> None:
        Path(path).mkdir(parents=True)
        (Path(path) / "data-00000-of-00001.arrow").write_bytes(b"half a table")
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare, "_write_json", killed_on_the_third_shard)
    with pytest.raises(KeyboardInterrupt):
        prepare_into(clips, out, speech_tokenizer)
    monkeypatch.setattr(prepare, "_write_json", write_json)
    monkeypatch.setattr(Dataset, "save_to_disk", killed_while_saving)
    tokenized: list[int] = []
    real_shard = prepare._tokenize_shard
    monkeypatch.setattr(
        prepare, "_tokenize_shard", lambda *a: (tokenized.append(len(a[1])), real_shard(*a))[1]
    )
    with pytest.raises(KeyboardInterrupt):
        prepare_into(clips, out, speech_tokenizer)
    assert tokenized == [3, 1]  # only the shards the first kill left undone
    monkeypatch.setattr(Dataset, "save_to_disk", save_to_disk)
    prepare_into(clips, out, speech_tokenizer)
    assert tokenized == [3, 1]  # the output is written again from the finished shards

    result = Dataset.load_from_disk(str(out))
    assert result["id"] == expected["id"] == [f"clip{i}" for i in range(10)]  # every row once, in order
    assert result["speech_tokens"] == expected["speech_tokens"]
    assert not Path(f"{out}.work").exists()
    with pytest.raises(FileExistsError, match="already exists"):  # a finished output is never replaced
        prepare_into(clips, out, speech_tokenizer)


# ---- a mixture of sources (stage 1c) ------------------------------------------------------------------
def test_a_mixture_resumes_mid_epoch_with_the_uninterrupted_batches(
    tone_corpus: Path, tmp_path: Path
) -> None:
    """Two sources, one upsampled: the interleaved order and each source's position come back."""
    recipe = tone_recipe(tone_corpus, 0)
    source = recipe["data"]
    small = copy.deepcopy(source)
    small["init_args"]["max_seconds_per_batch"] = 2.05  # 3 batches of 10: another plan than the first source
    recipe["data"] = {
        "class_path": "MixtureDataModule",
        "init_args": {"datamodules": [source, small], "repeats": [1, 2]},
    }
    recipe["trainer"]["max_steps"] = 20
    outcome = crash_and_resume(recipe, tmp_path, every_n_steps=4, crash_after_step=14)
    assert outcome["checkpoint_step"] == 12  # after the last of epoch 0's 12 batches: epoch 1 starts afresh
    (state,) = outcome["loader_state"]
    assert {k: state[k] for k in ("epoch", "seed", "batches_done", "batches_in_epoch", "world_size")} == {
        "epoch": 0,
        "seed": 0,
        "batches_done": 12,
        "batches_in_epoch": 12,
        "world_size": 1,
    }
    assert state["replayable"] and [source["round"] for source in state["sources"]] == [0, 1]
    assert_resumed_exactly(outcome)
    (tmp_path / "mid").mkdir()
    outcome = crash_and_resume(recipe, tmp_path / "mid", every_n_steps=5, crash_after_step=7)
    assert outcome["loader_state"][0]["batches_done"] == 5
    assert_resumed_exactly(outcome)
