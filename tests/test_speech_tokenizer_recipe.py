"""The tiny speech tokenizer recipe: it spells out the tiny preset and trains (CTC on FSQ codes) a few steps on its
two sources (many voices, the assistant's voice), validating on each."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml
from minmo_lightning.components.speech_tokenizer.s3tokenizer import S3TokenizerV2

RECIPE = Path(__file__).parents[1] / "recipes" / "components" / "speech_tokenizer.yaml"


def _asr_dataset(folder: Path, sample_rate: int = 16000) -> Path:
    """Built-in ASR layout (id, audio, text, speaker, duration) with a few tone clips."""
    from datasets import Audio, Dataset, DatasetDict

    rng = np.random.default_rng(0)
    texts = ["call peter now.", "what time is it?", "turn on the lights", "play some jazz"]
    rows = {"id": [], "audio": [], "text": [], "speaker": [], "duration": []}
    for i, text in enumerate(texts):
        seconds = 0.3 + 0.25 * len(text.split())
        t = np.arange(int(sample_rate * seconds)) / sample_rate
        wave = 0.3 * np.sin(2 * math.pi * (200 + 50 * i) * t) + 0.02 * rng.standard_normal(t.shape)
        buffer = io.BytesIO()
        sf.write(buffer, wave.astype(np.float32), sample_rate, format="WAV")
        rows["id"].append(f"u{i}")
        rows["audio"].append({"bytes": buffer.getvalue(), "path": f"u{i}.wav"})
        rows["text"].append(text)
        rows["speaker"].append("en-us")
        rows["duration"].append(seconds)
    split = Dataset.from_dict(rows).cast_column("audio", Audio(decode=False))
    DatasetDict({"train": split, "validation": split.select([0, 1]), "test": split.select([2])}).save_to_disk(
        str(folder)
    )
    return folder


def test_recipe_spells_out_the_tiny_preset() -> None:
    recipe = yaml.safe_load(RECIPE.read_text())
    assert recipe["model"]["class_path"] == "S3TokenizerV2"
    tiny = S3TokenizerV2.preset_args("tiny")
    assert set(recipe["model"]["init_args"]) == set(tiny)
    architecture = {k: v for k, v in tiny.items() if k not in ("learning_rate", "warmup_steps")}
    assert {k: recipe["model"]["init_args"][k] for k in architecture} == architecture
    sources = recipe["data"]["init_args"]["datamodules"]
    assert [(s["class_path"], s["init_args"]["path"]) for s in sources] == [
        ("ASRDataModule", "data/builtin/asr"),
        ("ASRDataModule", "data/builtin/tts"),
    ]


def test_recipe_trains_a_few_steps(tmp_path) -> None:
    from minmo_lightning.cli import lightning_main

    recipe = yaml.safe_load(RECIPE.read_text())
    voices = {"asr": _asr_dataset(tmp_path / "asr"), "tts": _asr_dataset(tmp_path / "tts", sample_rate=22050)}
    for source, name in zip(recipe["data"]["init_args"]["datamodules"], voices):
        source["init_args"].update(path=str(voices[name]), max_seconds_per_batch=2.0, max_duration=2.0)
    config = tmp_path / "speech_tokenizer.yaml"
    config.write_text(yaml.safe_dump(recipe))
    args = [
        "fit", "--config", str(config),
        "--model.init_args.dim", "32", "--model.init_args.n_heads", "1",
        "--model.init_args.n_layers", "1", "--model.init_args.asr_layers", "1",
        "--trainer.max_steps", "2", "--trainer.max_epochs", "1", "--trainer.logger", "false",
        "--trainer.enable_checkpointing", "false", "--trainer.callbacks", "[]",
        "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
        "--trainer.default_root_dir", str(tmp_path),
    ]  # fmt: skip
    cli = lightning_main(args)
    assert isinstance(cli.model, S3TokenizerV2) and cli.trainer.global_step == 2
    metrics = cli.trainer.callback_metrics
    assert np.isfinite(float(metrics["train/ctc_loss"]))
    for source in (0, 1):  # each voice's validation set scored on its own
        assert float(metrics[f"val/cer/dataloader_idx_{source}"]) >= 0.0
        assert float(metrics[f"val/codebook_perplexity/dataloader_idx_{source}"]) >= 1.0
