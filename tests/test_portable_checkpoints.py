"""A checkpoint copied alone into an empty directory loads, exports and evaluates from there.

Built like a real stage: a SenseVoice encoder reading a CMVN file, an LLM read from a transformers folder,
``init_checkpoint`` naming the previous stage. Then everything but the checkpoint is deleted.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import datasets
import lightning as L
import numpy as np
import pytest
import torch
import yaml
from builders import tiny_batch
from minmo_lightning.components.input_projector.projectors import TransformerConvProjector
from minmo_lightning.components.llm.hf_causal_lm import HFCausalLM
from minmo_lightning.components.voice_encoder.cmvn import write_cmvn
from minmo_lightning.components.voice_encoder.sensevoice import SenseVoiceEncoder
from minmo_lightning.datamodules.synth import wav_bytes

from minmo_lightning.checkpoints import CheckpointReadError
from minmo_lightning.model import MinMo

TRAINABLE = {"voice_encoder": "full", "input_projector": "full", "llm": "lora"}


def _save(model: L.LightningModule, path: Path) -> Path:
    trainer = L.Trainer(max_steps=0, default_root_dir=path.parent, logger=False, enable_progress_bar=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(path)
    return path


def _stage(workdir: Path) -> MinMo:
    """A tiny stage whose building reads three files under ``workdir`` and a previous stage's checkpoint."""
    workdir.mkdir()
    features = 80 * 7
    write_cmvn(
        workdir / "am.mvn", torch.stack([-torch.linspace(1, 2, features), torch.linspace(0.5, 1, features)])
    )
    llm = HFCausalLM.from_preset("tiny")
    llm.configure_model()
    llm.base_model.save_pretrained(str(workdir / "llm"))
    llm.tokenizer.save_pretrained(str(workdir / "llm"))

    def build(**overrides) -> MinMo:
        model = MinMo(
            llm=HFCausalLM(path=str(workdir / "llm"), dtype="float32", lora_rank=4, lora_alpha=8),
            voice_encoder=SenseVoiceEncoder.from_preset("tiny", cmvn_file=str(workdir / "am.mvn")),
            input_projector=TransformerConvProjector.from_preset("tiny", input_dim=192),
            trainable=TRAINABLE,
            **overrides,
        )
        model.configure_model()
        return model

    previous = _save(build(), workdir / "previous.ckpt")
    model = build(init_checkpoint=str(previous))
    with torch.no_grad():
        model.input_projector.conv.bias.fill_(0.25)
    assert model.llm.tokenizer is not None  # read now: the folder is deleted below
    return model


def _asr_dataset(folder: Path, splits: tuple[str, ...] = ("test",)) -> None:
    rng = np.random.default_rng(0)
    waves = [wav_bytes((0.1 * rng.standard_normal(16000)).astype(np.float32), 16000) for _ in range(2)]
    rows = {
        "id": ["u0", "u1"],
        "audio": [{"bytes": wave, "path": None} for wave in waves],
        "text": ["hello there", "stop now"],
    }
    split = datasets.Dataset.from_dict(rows).cast_column("audio", datasets.Audio(decode=False))
    datasets.DatasetDict({name: split for name in splits}).save_to_disk(str(folder))


@pytest.fixture
def lone_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[MinMo, Path]:
    monkeypatch.setenv("MINMO_CACHE", str(tmp_path / "cache"))
    model = _stage(tmp_path / "train")
    saved = _save(model, tmp_path / "train" / "stage.ckpt")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(saved, elsewhere / "stage.ckpt")
    shutil.rmtree(tmp_path / "train")
    monkeypatch.chdir(elsewhere)
    return model, elsewhere / "stage.ckpt"


def test_a_checkpoint_alone_loads_from_another_directory(lone_checkpoint) -> None:
    model, path = lone_checkpoint
    restored = MinMo.load_from_checkpoint(path.name, map_location="cpu")
    model.eval(), restored.eval()
    assert torch.equal(restored.voice_encoder.frontend.cmvn, model.voice_encoder.frontend.cmvn)
    assert torch.equal(restored.input_projector.conv.bias, model.input_projector.conv.bias)
    assert (
        restored.llm.tokenizer("hello there")["input_ids"] == model.llm.tokenizer("hello there")["input_ids"]
    )
    batch = tiny_batch()
    with torch.no_grad():
        assert torch.equal(restored.speech_to_text_loss(batch), model.speech_to_text_loss(batch))
    # a caller's change to one block argument goes over the restored ones (the folder is still not needed)
    changed = MinMo.load_from_checkpoint(path.name, llm={"init_args": {"lora_dropout": 0.1}})
    assert changed.llm.hparams.lora_dropout == 0.1 and changed.llm.hparams.path is None
    # the restored model is itself portable: saved again, it loads again
    again = MinMo.load_from_checkpoint(_save(restored, path.parent / "again.ckpt"), map_location="cpu")
    assert torch.equal(again.voice_encoder.frontend.cmvn, model.voice_encoder.frontend.cmvn)


def test_a_checkpoint_alone_exports_and_evaluates(lone_checkpoint, tmp_path: Path) -> None:
    from minmo_lightning.evaluation.cli import main as evaluate

    from minmo_lightning.export import main as export

    _, path = lone_checkpoint
    assert export(["--ckpt", path.name, "--out", "exported"]) == 0
    assert (Path("exported/voice_encoder/model.safetensors")).is_file()
    assert (Path("exported/llm/config.json")).is_file()

    _asr_dataset(tmp_path / "asr")
    recipe = {
        "task": "asr",
        "dataset": {"name": "lone", "path": str(tmp_path / "asr"), "split": "test"},
        "metrics": {"normalizer": "basic"},
        "model": {"class_path": "MinMo"},
        "data": {
            "class_path": "ASRDataModule",
            "init_args": {
                "path": str(tmp_path / "asr"),
                "schema": "builtin",
                **{"train_split": None, "val_split": None, "test_split": "test"},
            },
        },
        "stage": "test",
    }
    Path("eval.yaml").write_text(yaml.safe_dump(recipe))
    assert evaluate(["--config", "eval.yaml", "--ckpt", path.name, "--out", "report", "--no-progress"]) == 0
    assert Path("report/report.md").is_file()


@pytest.mark.parametrize(
    ("damage", "cause"),
    [
        ("truncated", "a zip archive cut short"),
        ("garbage", "not a torch zip archive"),
        ("empty", "the file is empty"),
    ],
)
def test_a_damaged_checkpoint_is_named_in_one_line(lone_checkpoint, damage: str, cause: str) -> None:
    _, path = lone_checkpoint
    data = path.read_bytes()
    path.write_bytes(
        {"truncated": data[: len(data) // 2], "garbage": b"not a checkpoint" * 64, "empty": b""}[damage]
    )
    with pytest.raises(CheckpointReadError, match=rf"stage\.ckpt .* truncated or corrupt \({cause}") as error:
        MinMo.load_from_checkpoint(path)
    assert len(str(error.value)) < 300 + len(str(path)) and "\n" not in str(error.value)


def test_a_block_trained_alone_loads_from_its_checkpoint_only(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MINMO_CACHE", str(tmp_path / "cache"))
    (tmp_path / "train").mkdir()
    cmvn = torch.stack([-torch.linspace(1, 2, 560), torch.linspace(0.5, 1, 560)])
    write_cmvn(tmp_path / "train" / "am.mvn", cmvn)
    encoder = SenseVoiceEncoder.from_preset("tiny", cmvn_file=str(tmp_path / "train" / "am.mvn"))
    saved = _save(encoder, tmp_path / "encoder.ckpt")
    shutil.rmtree(tmp_path / "train")
    restored = SenseVoiceEncoder.load_from_checkpoint(saved)
    assert torch.equal(restored.frontend.cmvn, encoder.frontend.cmvn)
    assert all(
        torch.equal(a, b) for a, b in zip(restored.state_dict().values(), encoder.state_dict().values())
    )


def test_resuming_a_stage_does_not_need_its_starting_point(tmp_path: Path, monkeypatch) -> None:
    """``minmo fit --ckpt_path last`` restores every weight: the deleted init_checkpoint is not read."""
    from builders import tiny_minmo

    from minmo_lightning.cli import lightning_main

    monkeypatch.setenv("MINMO_CACHE", str(tmp_path / "cache"))
    previous = _save(tiny_minmo(tasks=["asr"]), tmp_path / "previous.ckpt")
    _asr_dataset(tmp_path / "asr", splits=("train",))
    model = {
        "llm": {"class_path": "HFCausalLM", "init_args": HFCausalLM.preset_args("tiny")},
        "voice_encoder": {"class_path": "FramingTestEncoder"},
        "input_projector": {
            "class_path": "TransformerConvProjector",
            "init_args": TransformerConvProjector.preset_args("tiny"),
        },
        "trainable": {"voice_encoder": "frozen", "input_projector": "full", "llm": "lora"},
        "init_checkpoint": str(previous),
    }
    checkpoint = {
        "dirpath": str(tmp_path / "run" / "checkpoints"),
        "save_last": True,
        "every_n_train_steps": 1,
    }
    recipe = {
        "trainer": {
            "accelerator": "cpu",
            "logger": False,
            "default_root_dir": str(tmp_path / "run"),
            "callbacks": [
                {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": checkpoint}
            ],
        },
        "model": {"class_path": "MinMo", "init_args": model},
        "data": {
            "class_path": "ASRDataModule",
            "init_args": {"path": str(tmp_path / "asr"), "val_split": None, "test_split": None},
        },
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    lightning_main(["fit", "--config", str(tmp_path / "recipe.yaml"), "--trainer.max_steps", "1"])
    previous.unlink()
    cli = lightning_main(
        ["fit", "--config", str(tmp_path / "recipe.yaml"), "--trainer.max_steps", "2", "--ckpt_path", "last"]
    )
    assert cli.trainer.global_step == 2
