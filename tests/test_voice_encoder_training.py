"""SenseVoiceEncoder as its own LightningModule: CTC + rich-tag training, validation metrics, recipe."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from minmo_lightning.components.voice_encoder.ctc import count_unalignable
from minmo_lightning.components.voice_encoder.sensevoice import SenseVoiceEncoder
from minmo_lightning.components.voice_encoder.tokenizer import CharTokenizer

from minmo_lightning.contracts import AudioBatch, TokenBatch

RECIPE = Path(__file__).parents[1] / "recipes" / "components" / "voice_encoder_ctc.yaml"


def _batches(count: int) -> list[dict]:
    """Tone "words": each text maps to its own pitch pattern, so the encoder can learn them."""
    generator = torch.Generator().manual_seed(0)
    texts = ["go", "stop", "no"]
    pitches = {"go": 300.0, "stop": 700.0, "no": 1300.0}
    batches = []
    for i in range(count):
        chosen = [texts[(i + j) % 3] for j in range(3)]
        t = torch.arange(12000) / 16000
        waves = [
            0.3 * torch.sin(2 * torch.pi * pitches[w] * t) + 0.01 * torch.randn(12000, generator=generator)
            for w in chosen
        ]
        batches.append(
            {
                "ids": [f"u{i}-{j}" for j in range(3)],
                "audio": AudioBatch.from_list(waves, 16000),
                "text": chosen,
                "emotion": torch.tensor([(i + j) % 4 for j in range(3)]),
            }
        )
    return batches


def _block() -> SenseVoiceEncoder:
    torch.manual_seed(0)
    return SenseVoiceEncoder.from_preset(
        "tiny", output_size=32, attention_heads=2, linear_units=64, num_layers=2, tp_layers=1,
        learning_rate=3e-3, warmup_steps=1, dropout_rate=0.0, spec_augment=False,
    )  # fmt: skip


def test_training_lowers_loss_and_validation_logs_metrics() -> None:
    block = _block()
    data = _batches(4)
    with torch.no_grad():
        before = block.eval()._step(data[0])["loss"].item()
    trainer = L.Trainer(
        max_steps=30, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=2,
    )  # fmt: skip
    loaders = torch.utils.data.DataLoader(data, batch_size=None, shuffle=False)
    trainer.fit(block, loaders, loaders)
    with torch.no_grad():
        after = block.eval()._step(data[0])["loss"].item()
    assert after < 0.7 * before
    metrics = trainer.validate(block, loaders, verbose=False)[0]
    assert {"val/wer", "val/cer", "val/emotion_acc", "val/loss"} <= set(metrics)
    assert 0.0 <= metrics["val/cer"] <= 1.5


def test_each_validation_source_is_scored_on_its_own() -> None:
    """A mixture's second source (the emotion set) logs under ``val_1/``; the first keeps ``val/``."""
    block = _block()
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    asr_only = [{k: v for k, v in b.items() if k != "emotion"} for b in _batches(2)]
    loader = torch.utils.data.DataLoader
    metrics = trainer.validate(
        block,
        [loader(asr_only, batch_size=None), loader(_batches(2), batch_size=None)],
        verbose=False,
    )
    assert {"val/wer", "val/loss"} <= set(metrics[0]) and "val/emotion_acc" not in metrics[0]
    assert {"val_1/wer", "val_1/emotion_acc"} <= set(metrics[1])


def test_rich_targets_follow_the_sensevoice_tag_order() -> None:
    block = _block()
    tokenizer = CharTokenizer()
    targets = block._rich_targets({"emotion": torch.tensor([2, 0])}, 2)
    assert [tokenizer.id_to_token(i) for i in targets[0].tolist()] == [
        "<|en|>",
        "<|SAD|>",
        "<|Speech|>",
        "<|woitn|>",
    ]
    assert targets[1, 1].item() == tokenizer.token_to_id("<|NEUTRAL|>")
    no_emotion = block._rich_targets({}, 1)
    assert no_emotion[0, 1].item() == -100


def test_emotion_weight_scales_the_emotion_tag_alone() -> None:
    """With weight 3 the loss gains twice the emotion tag's cross-entropy; batches without emotion are as
    they were."""
    batch = _batches(1)[0]
    plain = _block().eval()
    weighted = _block().eval()
    plain.hparams.emotion_weight, weighted.hparams.emotion_weight = 1.0, 3.0
    with torch.no_grad():
        one, three = plain._step(batch), weighted._step(batch)
        logits = one["rich_logits"][:, 1]
        emotion = (
            torch.nn.functional.cross_entropy(logits, plain._rich_targets(batch, 3)[:, 1], reduction="sum")
            / 3
        )
        torch.testing.assert_close(three["loss"], one["loss"] + 2 * emotion)
        no_emotion = {k: v for k, v in batch.items() if k != "emotion"}
        torch.testing.assert_close(weighted._step(no_emotion)["loss"], plain._step(no_emotion)["loss"])


def test_ctc_counts_items_too_short_for_their_labels() -> None:
    """A label pair that repeats needs a blank frame between; padding past an item's length never counts."""
    targets = TokenBatch.from_list([[5, 5, 6], [7], [8, 9]])
    assert count_unalignable(targets, torch.tensor([4, 1, 2])) == 0
    assert count_unalignable(targets, torch.tensor([3, 1, 2])) == 1
    assert count_unalignable(targets, torch.tensor([3, 0, 1])) == 3


def test_optimizer_caps_the_warmup_at_a_tenth_and_ends_at_its_floor() -> None:
    from types import SimpleNamespace

    block = SenseVoiceEncoder.from_preset(
        "tiny", output_size=32, attention_heads=2, linear_units=64, num_layers=2, tp_layers=1,
        learning_rate=1e-3, weight_decay=0.02, warmup_steps=1000,
    )  # fmt: skip
    block._trainer = SimpleNamespace(estimated_stepping_batches=100, callbacks=[])
    setup = block.configure_optimizers()
    optimizer, schedule = setup["optimizer"], setup["lr_scheduler"]["scheduler"].lr_lambdas[0]
    assert optimizer.defaults["lr"] == 1e-3 and optimizer.defaults["betas"] == (0.9, 0.98)
    assert sorted(group["weight_decay"] for group in optimizer.param_groups) == [0.0, 0.02]
    assert schedule(0) == pytest.approx(0.1) and schedule(9) == pytest.approx(1.0)
    assert schedule(100) == pytest.approx(0.05)


def test_char_tokenizer_round_trip_and_errors() -> None:
    tokenizer = CharTokenizer()
    assert tokenizer.decode(tokenizer.encode("Turn on the lights, please!")) == "turn on the lights please"
    with pytest.raises(ValueError, match="cannot encode"):
        tokenizer.encode("café")


def test_two_ctc_slots_double_the_label_rate() -> None:
    block = _block().eval()
    out = block(AudioBatch(torch.randn(1, 16000) * 0.1, torch.tensor([16000]), 16000))
    logits = block.ctc(out.values)
    assert logits.shape[1] == 2 * out.values.shape[1] and logits.shape[2] == CharTokenizer().vocab_size


def test_datamodule_label_mismatch_is_an_error() -> None:
    block = _block()

    class FakeTrainer:
        datamodule = type("DM", (), {"emotion_labels": ["angry", "neutral"]})()

    block._trainer = FakeTrainer()
    with pytest.raises(ValueError, match="emotion_labels"):
        block.setup("fit")


def test_recipe_parses_and_builds_the_tiny_encoder() -> None:
    from minmo_lightning.cli import lightning_main

    recipe = yaml.safe_load(RECIPE.read_text())
    assert recipe["model"]["class_path"] == "SenseVoiceEncoder"
    preset = SenseVoiceEncoder.preset_args("tiny")
    assert set(preset) == set(recipe["model"]["init_args"])
    # no corpus statistics in a fresh checkout (`minmo synth-data` writes them): build without CMVN
    cli = lightning_main(
        ["--config", str(RECIPE), "--trainer.logger", "false", "--model.init_args.cmvn_file", "null"],
        run=False,
    )
    assert isinstance(cli.model, SenseVoiceEncoder) and cli.model.ctc.slots == 2
    sources = [type(dm).__name__ for dm in cli.datamodule.datamodules]
    assert sources == ["ASRDataModule", "EmotionDataModule", "ASRDataModule"]  # the last: the TTS voice
    assert cli.datamodule.emotion_labels == cli.model.hparams.emotion_labels
