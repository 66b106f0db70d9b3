"""The standalone TTS recipe: it parses to the documented block and trains a few steps on tokenized TTS data."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml
from minmo_lightning.components.voice_token_lm.cosyvoice2_lm import CosyVoice2LM

RECIPE = Path(__file__).parents[1] / "recipes" / "components" / "voice_token_lm_tts.yaml"


def _tts_dataset(folder: Path) -> Path:
    """What `minmo prepare` writes for the built-in TTS split: audio, text, duration and speech tokens."""
    from datasets import Audio, Dataset, DatasetDict

    rng = np.random.default_rng(0)
    texts = ["hello there", "turn left at the light", "what time is it", "play some music please"]
    rows = {"id": [], "audio": [], "text": [], "duration": [], "speech_tokens": []}
    for i, text in enumerate(texts):
        seconds = 0.4 + 0.1 * len(text.split())
        buffer = io.BytesIO()
        sf.write(
            buffer, 0.1 * rng.standard_normal(int(24000 * seconds)).astype(np.float32), 24000, format="WAV"
        )
        rows["id"].append(f"u{i}")
        rows["audio"].append({"bytes": buffer.getvalue(), "path": f"u{i}.wav"})
        rows["text"].append(text)
        rows["duration"].append(seconds)
        rows["speech_tokens"].append(rng.integers(0, 6561, int(25 * seconds)).tolist())
    split = Dataset.from_dict(rows).cast_column("audio", Audio(decode=False))
    splits = {"train": split, "voice_lm_train": split.select([3]), "validation": split.select([0, 1])}
    DatasetDict({**splits, "test": split.select([2])}).save_to_disk(str(folder))
    return folder


def test_recipe_spells_out_every_argument() -> None:
    recipe = yaml.safe_load(RECIPE.read_text())
    assert recipe["model"]["class_path"] == "CosyVoice2LM"
    assert set(recipe["model"]["init_args"]) == set(CosyVoice2LM.preset_args("tiny"))
    assert recipe["data"]["class_path"] == "TTSDataModule"


def test_recipe_fits_on_tokenized_tts_data(tmp_path) -> None:
    from minmo_lightning.cli import lightning_main

    data = _tts_dataset(tmp_path / "tts_tokens")
    args = [
        "fit", "--config", str(RECIPE), "--data.init_args.path", str(data),
        "--trainer.max_steps", "3", "--trainer.max_epochs", "10", "--trainer.logger", "false",
        "--trainer.enable_checkpointing", "false", "--trainer.callbacks", "[]",
        "--trainer.limit_val_batches", "1",
        "--trainer.default_root_dir", str(tmp_path),
    ]  # fmt: skip
    cli = lightning_main(args)
    assert isinstance(cli.model, CosyVoice2LM) and cli.trainer.global_step == 3
    assert np.isfinite(float(cli.trainer.callback_metrics["train/loss"]))
