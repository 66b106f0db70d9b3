"""The tiny speech tokenizer recipe: it spells out the tiny preset and trains (CTC on FSQ codes) a few steps."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml
from minmo_lightning.components.speech_tokenizer.s3tokenizer import S3TokenizerV2

RECIPE = Path(__file__).parents[1] / "recipes" / "components" / "speech_tokenizer.yaml"


def _asr_dataset(folder: Path) -> Path:
    """Built-in ASR layout (id, audio, text, speaker, duration) with a few tone clips."""
    from datasets import Audio, Dataset, DatasetDict

    rng = np.random.default_rng(0)
    texts = ["call peter now.", "what time is it?", "turn on the lights", "play some jazz"]
    rows = {"id": [], "audio": [], "text": [], "speaker": [], "duration": []}
    for i, text in enumerate(texts):
        seconds = 0.3 + 0.25 * len(text.split())
        t = np.arange(int(16000 * seconds)) / 16000
        wave = 0.3 * np.sin(2 * math.pi * (200 + 50 * i) * t) + 0.02 * rng.standard_normal(t.shape)
        buffer = io.BytesIO()
        sf.write(buffer, wave.astype(np.float32), 16000, format="WAV")
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
    assert recipe["data"]["class_path"] == "ASRDataModule"


def test_recipe_trains_a_few_steps(tmp_path) -> None:
    from minmo_lightning.cli import lightning_main

    data = _asr_dataset(tmp_path / "asr")
    args = [
        "fit", "--config", str(RECIPE), "--data.init_args.path", str(data),
        "--model.init_args.dim", "32", "--model.init_args.n_heads", "1",
        "--model.init_args.n_layers", "1", "--model.init_args.asr_layers", "1",
        "--data.init_args.max_seconds_per_batch", "2.0", "--data.init_args.max_duration", "2.0",
        "--trainer.max_steps", "2", "--trainer.max_epochs", "1", "--trainer.logger", "false",
        "--trainer.enable_checkpointing", "false", "--trainer.callbacks", "[]",
        "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
        "--trainer.default_root_dir", str(tmp_path),
    ]  # fmt: skip
    cli = lightning_main(args)
    assert isinstance(cli.model, S3TokenizerV2) and cli.trainer.global_step == 2
    metrics = cli.trainer.callback_metrics
    assert np.isfinite(float(metrics["train/ctc_loss"]))
    assert float(metrics["val/cer"]) >= 0.0 and float(metrics["val/codebook_perplexity"]) >= 1.0
