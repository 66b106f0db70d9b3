"""``minmo evaluate --config R.yaml --any.recipe.key VALUE``: dotted overrides as in ``minmo fit``, checked."""

from __future__ import annotations

import io
import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import soundfile
import torch
import yaml
from datasets import Audio, Dataset, DatasetDict
from minmo_lightning.evaluation.cli import main
from minmo_lightning.evaluation.overrides import OverrideError, apply_overrides, parse_overrides
from minmo_lightning.evaluation.runner import read_jsonl


class OverrideEcho(L.LightningModule):
    """Answers with the reference transcript plus ``suffix``; ``block`` is a nested class spec to merge into."""

    def __init__(self, suffix: str = "", block: dict | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(1, 1)

    def predict_step(self, batch, batch_idx):
        return [{"id": i, "hypothesis": t + self.hparams.suffix} for i, t in zip(batch["ids"], batch["text"])]


def _dataset(folder: Path, prefix: str) -> str:
    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros(8000, np.float32), 16000, format="WAV")
    rows = {"id": [f"{prefix}{k}" for k in range(3)], "text": ["one two", "three", "four five six"]}
    rows["audio"] = [{"bytes": buffer.getvalue(), "path": None}] * 3
    data = Dataset.from_dict(rows).cast_column("audio", Audio(decode=False))
    DatasetDict({"test": data}).save_to_disk(str(folder))
    return str(folder)


@pytest.fixture
def recipe(tmp_path) -> Path:
    """``asr_builtin.yaml`` with the tiny echo model, pointing at a dataset that is not there."""
    text = {
        "task": "asr",
        "dataset": {"name": "builtin-asr", "path": "data/nowhere", "split": "test", "id_column": "id"},
        "metrics": {"normalizer": "whisper_english", "unit": "word"},
        "model": {"class_path": "OverrideEcho", "init_args": {"suffix": ""}},
        "data": {
            "class_path": "ASRDataModule",
            "init_args": {
                "path": "data/nowhere",
                "train_split": None,
                "val_split": None,
                "test_split": "test",
            },
        },
    }
    path = tmp_path / "asr.yaml"
    path.write_text(yaml.safe_dump(text))
    return path


def test_a_data_path_override_runs_on_the_users_copy(recipe, tmp_path, capsys) -> None:
    copy = _dataset(tmp_path / "my_copy", "mine")
    out = tmp_path / "out"
    args = ["--config", str(recipe), "--data.init_args.path", copy, "--out", str(out), "--no-progress"]
    assert main(args + ["--metrics.normalizer", "none", "--model.init_args.suffix=' extra'"]) == 0
    rows = read_jsonl(out / "predictions.jsonl")
    assert sorted(r["id"] for r in rows) == ["mine0", "mine1", "mine2"]
    assert all(r["hypothesis"].endswith(" extra") for r in rows)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"]["path"] == copy  # the report names the data it ran on
    assert metrics["settings"]["normalizer"] == "none"
    assert metrics["summary"]["wer"] == pytest.approx(3 / 6)  # one inserted word per reference
    # the named flags keep working beside the dotted ones, and win over them
    again = tmp_path / "again"
    flags = ["--normalizer", "basic", "--limit", "1", "--dataset.name", "my-copy", "--out", str(again)]
    assert main(args[:4] + ["--metrics.normalizer", "none", *flags, "--no-progress"]) == 0
    metrics = json.loads((again / "metrics.json").read_text())
    assert metrics["settings"]["normalizer"] == "basic" and metrics["dataset"]["name"] == "my-copy"
    assert len(read_jsonl(again / "predictions.jsonl")) >= 1


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (
            ["--data.init_args.paht", "x"],
            "--data.init_args.paht: no key 'paht' in ASRDataModule (data.init_args); nearest: path",
        ),
        (["--dataset.splitt", "test"], "no key 'splitt' in dataset; nearest: split"),
        (
            ["--metrics.normaliser", "basic"],
            "no key 'normaliser' in the asr metric settings; nearest: normalizer",
        ),
        (["--datta.init_args.path", "x"], "no key 'datta' in the recipe; nearest: data"),
        (
            ["--data.class_path", "ASRDataModul"],
            "is not a known LightningDataModule (did you mean ASRDataModule?)",
        ),
        (["--data.init_args.path"], "--data.init_args.path needs a value"),
        (["--seed.x", "1"], "'seed' is a single value, it has no 'x'"),
        (["--bogus", "1"], "unrecognized argument '--bogus'"),
    ],
)
def test_a_bad_override_is_one_short_error(recipe, flags, fragment, capsys) -> None:
    assert main(["--config", str(recipe), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and err.startswith("minmo evaluate: error:") and len(err) < 500, err
    assert "\n" not in err


def test_values_are_yaml_and_nested_keys_are_created() -> None:
    pairs = parse_overrides(
        ["--metrics.tolerances", "[1,2]", "--metrics.frame_ms=120", "--metrics.window", "null"]
    )
    assert pairs == [("metrics.tolerances", [1, 2]), ("metrics.frame_ms", 120), ("metrics.window", None)]
    recipe = {"task": "duplex", "metrics": {"tolerances": [5]}}
    out = apply_overrides(recipe, pairs, "duplex")
    assert out["metrics"] == {"tolerances": [1, 2], "frame_ms": 120, "window": None}
    assert recipe["metrics"] == {"tolerances": [5]}  # the recipe itself is left alone
    with pytest.raises(OverrideError, match="metric settings depend on the task"):
        apply_overrides({}, pairs, None)
    # a nested block named by class_path is checked against its own signature
    spec = {"model": {"class_path": "MinMo", "init_args": {"llm": {"class_path": "HFCausalLM"}}}}
    deep = apply_overrides(spec, [("model.init_args.llm.init_args.dtype", "float32")], "asr")
    assert deep["model"]["init_args"]["llm"] == {
        "class_path": "HFCausalLM",
        "init_args": {"dtype": "float32"},
    }
    with pytest.raises(OverrideError, match="no key 'dtyp' in HFCausalLM .*nearest: dtype"):
        apply_overrides(spec, [("model.init_args.llm.init_args.dtyp", "float32")], "asr")
    # without a class_path (a checkpoint-mode model) the block checks its arguments when it is built
    loose = apply_overrides(
        {"model": {"class_path": "MinMo"}}, [("model.init_args.llm.init_args.x", 1)], "asr"
    )
    assert loose["model"]["init_args"] == {"llm": {"init_args": {"x": 1}}}


def test_checkpoint_mode_overrides_merge_into_the_saved_arguments(tmp_path) -> None:
    """``model: {class_path}`` + ``--ckpt``: ``--model.init_args.*`` override what the checkpoint saved, a nested
    block's arguments key by key (``--model.init_args.llm.init_args.dtype float32`` for a MinMo)."""
    saved = OverrideEcho(
        suffix=" saved", block={"class_path": "X", "init_args": {"dtype": "bfloat16", "size": 4}}
    )
    ckpt = tmp_path / "model.ckpt"
    torch.save(
        {
            "state_dict": saved.state_dict(),
            "hyper_parameters": dict(saved.hparams),
            "pytorch-lightning_version": L.__version__,
        },
        ckpt,
    )
    copy = _dataset(tmp_path / "data", "c")
    recipe = {
        "task": "asr",
        "dataset": {"path": copy, "split": "test"},
        "model": {"class_path": "OverrideEcho"},
        "data": {
            "class_path": "ASRDataModule",
            "init_args": {"path": copy, "train_split": None, "val_split": None},
        },
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    out = tmp_path / "out"
    args = ["--config", str(tmp_path / "r.yaml"), "--ckpt", str(ckpt), "--out", str(out), "--no-progress"]
    assert main(args + ["--model.init_args.block.init_args.dtype", "float32"]) == 0
    rows = read_jsonl(out / "predictions.jsonl")
    assert all(r["hypothesis"].endswith(" saved") for r in rows)  # the rest of the saved arguments stay
    from minmo_lightning.evaluation.runner import load_model

    model = load_model(
        {"class_path": "OverrideEcho", "load_args": {"block": {"init_args": {"dtype": "float32"}}}}, str(ckpt)
    )
    assert model.hparams.block == {"class_path": "X", "init_args": {"dtype": "float32", "size": 4}}
    assert model.hparams.suffix == " saved"
