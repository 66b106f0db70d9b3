"""A stage that trains the voice encoder's body leaves its CTC/tag head marked stale; a stale head is refused,
the mark travels through checkpoints, later stages and exports, and the encoder's own recipe clears it."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from builders import stage2b_minmo
from minmo_lightning.components.input_projector.projectors import TransformerConvProjector
from minmo_lightning.components.llm.hf_causal_lm import HFCausalLM
from minmo_lightning.components.voice_encoder.sensevoice import SenseVoiceEncoder, StaleHeadError
from minmo_lightning.components.voice_encoder.whisper import WhisperEncoder

from minmo_lightning.contracts import AudioBatch, TokenBatch
from minmo_lightning.export import StaleHeadWarning, export_blocks
from minmo_lightning.model import MinMo
from minmo_lightning.registry import resolve_class

AUDIO = AudioBatch.from_list([0.1 * torch.randn(8000)], 16000)


def stage(encoder: str, **overrides) -> MinMo:
    """A tiny stage-1 MinMo with a SenseVoice encoder (its CTC head included); ``encoder`` is its mode."""
    model = MinMo(
        llm=HFCausalLM.from_preset("tiny"),
        voice_encoder=SenseVoiceEncoder.from_preset("tiny"),
        input_projector=TransformerConvProjector.from_preset("tiny", input_dim=192),
        trainable={"voice_encoder": encoder, "input_projector": "full", "llm": "frozen"},
        **overrides,
    )
    model.configure_model()
    return model.eval()


def save(model: MinMo, path: Path) -> Path:
    trainer = L.Trainer(max_steps=0, default_root_dir=path.parent, logger=False, enable_progress_bar=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(path)
    return path


def stale_reason(model: MinMo) -> str | None:
    """The mark on the block and in the spec the composite's checkpoints save: always the same."""
    reason = model.voice_encoder.hparams.head_stale
    assert model.hparams["voice_encoder"]["init_args"]["head_stale"] == reason
    return reason


@pytest.fixture(scope="module")
def stage1b(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint of a stage that trained the encoder (stage 1b's rule)."""
    return save(stage("full"), tmp_path_factory.mktemp("stage1b") / "stage1b.ckpt")


def test_a_frozen_encoder_keeps_its_head() -> None:
    model = stage("frozen")
    assert stale_reason(model) is None
    assert len(model.voice_encoder.transcribe(AUDIO)) == 1


def test_training_the_body_marks_the_head_and_transcribe_refuses() -> None:
    model = stage("full")
    assert "objective speech_to_text, trainable.voice_encoder: full" in stale_reason(model)
    with pytest.raises(StaleHeadError, match=r"head is stale: a MinMo stage .*voice_encoder_ctc\.yaml"):
        model.voice_encoder.transcribe(AUDIO)


def test_the_rule_looks_at_the_body_not_the_slot_mode() -> None:
    head_only = stage("frozen", train_patterns=[r"^voice_encoder\.ctc\."])
    assert stale_reason(head_only) is None  # the head itself may train: nothing under it moved
    one_layer = stage("frozen", train_patterns=[r"^voice_encoder\.encoder\.encoders\.0\."])
    assert stale_reason(one_layer) is not None


def test_the_mark_travels_to_the_next_stage_and_back_from_the_checkpoint(stage1b: Path) -> None:
    later = stage("frozen", init_checkpoint=str(stage1b))  # stage 2-4: encoder frozen, 1b's weights
    assert "trainable.voice_encoder: full" in stale_reason(later)
    restored = MinMo.load_from_checkpoint(stage1b, map_location="cpu")
    assert stale_reason(restored) == stale_reason(later)
    resumed = stage("frozen")  # --ckpt_path: the stage is built from its recipe, then the weights restored
    resumed.on_load_checkpoint(torch.load(stage1b, map_location="cpu", weights_only=False))
    assert stale_reason(resumed) == stale_reason(later)
    with pytest.raises(StaleHeadError):
        restored.voice_encoder.transcribe(AUDIO)


def test_export_warns_and_records_the_stale_head(stage1b: Path, tmp_path: Path) -> None:
    model = MinMo.load_from_checkpoint(stage1b, map_location="cpu")
    with pytest.warns(StaleHeadWarning, match="voice_encoder: its own head is stale"):
        folders = export_blocks(model, tmp_path / "exported")
    config = json.loads((folders["voice_encoder"] / "config.json").read_text())
    assert "trainable.voice_encoder: full" in config["init_args"]["head_stale"]
    rebuilt = resolve_class(config["class_path"], SenseVoiceEncoder, what="voice_encoder")(
        **config["init_args"]
    )
    with pytest.raises(StaleHeadError):
        rebuilt.transcribe(AUDIO)
    # a stage that starts the encoder from the export inherits the mark
    weights = str(folders["voice_encoder"] / "model.safetensors")
    assert stale_reason(stage("frozen", init_blocks={"voice_encoder": weights})) is not None


def test_a_fresh_export_does_not_warn(tmp_path: Path, recwarn: pytest.WarningsRecorder) -> None:
    export_blocks(stage("frozen"), tmp_path / "exported")
    assert not [w for w in recwarn if issubclass(w.category, StaleHeadWarning)]


def test_the_encoders_own_recipe_clears_the_mark() -> None:
    encoder = SenseVoiceEncoder.from_preset("tiny", head_stale="a MinMo stage trained the body")
    with pytest.raises(StaleHeadError):
        encoder.check_head()
    encoder.on_fit_start()  # its recipe trains the head with the body
    assert encoder.hparams.head_stale is None
    assert len(encoder.transcribe(AUDIO)) == 1


def _without_gradient(model: MinMo) -> list[str]:
    return [
        n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())
    ]


def test_every_weight_a_stage_trains_gets_a_gradient() -> None:
    """A standalone head stays frozen in MinMo's stages: a trainable weight without a gradient stops DDP at its
    first step and leaves FSDP2's optimizer state without it."""
    model = stage("full", tasks=["asr"]).train()
    assert not any(p.requires_grad for n, p in model.named_parameters() if n.startswith("voice_encoder.ctc."))
    batch = {"ids": ["a"], "audio": AUDIO, "text": ["hello"], "supervises": ("asr",)}
    model.speech_to_text_loss(batch).backward()
    assert _without_gradient(model) == []

    stage2b = stage2b_minmo().train()
    lm = stage2b.voice_token_lm
    assert not lm.llm.model.model.embed_tokens.weight.requires_grad  # the text embedding: TTS alone only
    tts = {"ids": ["a"], "text": ["hello there"], "speech_tokens": TokenBatch.from_list([[5] * 12])}
    stage2b.voice_decoder_forward(tts).loss.backward()
    assert _without_gradient(stage2b) == []


def test_a_stage_that_trains_the_head_beside_the_body_keeps_it_true() -> None:
    """``encoder_head_weight``: the encoder's own CTC/tag loss on the batches that carry its labels; the
    head trains with the body, is not marked stale and transcribes."""
    model = stage("full", tasks=["asr"], encoder_head_weight=0.5)
    assert stale_reason(model) is None
    head = [p for n, p in model.named_parameters() if n.startswith("voice_encoder.ctc.")]
    assert head and all(p.requires_grad for p in head)
    batch = {"ids": ["a"], "audio": AUDIO, "text": ["hello"], "supervises": ("asr",)}
    loss, metrics = model.speech_to_text_objective(batch)
    own = model.voice_encoder.head_loss(model.voice_encoder(AUDIO), batch)
    assert own > 0
    torch.testing.assert_close(metrics["encoder_head"], own)
    torch.testing.assert_close(metrics["answer_loss"], model.speech_to_text_loss(batch))
    torch.testing.assert_close(loss, metrics["answer_loss"] + 0.5 * own)
    loss.backward()
    assert _without_gradient(model) == []
    assert len(model.voice_encoder.transcribe(AUDIO)) == 1


def test_a_batch_without_the_heads_labels_leaves_the_head_a_zero_gradient() -> None:
    """A language-ID batch carries no transcript the encoder's tokenizer reads: the head learns nothing from
    it, but each of its weights still gets a (zero) gradient, as DDP requires."""
    model = stage("full", tasks=["asr", "lid"], encoder_head_weight=0.5).train()
    batch = {"ids": ["a"], "audio": AUDIO, "text": ["hola"], "language": ["spanish"], "supervises": ("lid",)}
    assert model.voice_encoder.head_loss(model.voice_encoder(AUDIO), batch) is None
    loss, metrics = model.speech_to_text_objective(batch)
    assert "encoder_head" not in metrics
    loss.backward()
    head = [p for n, p in model.named_parameters() if n.startswith("voice_encoder.ctc.")]
    assert all(p.grad is not None and not p.grad.any() for p in head)


def test_encoder_head_weight_is_refused_where_it_cannot_apply() -> None:
    with pytest.raises(ValueError, match="it is a loss weight"):
        stage("full", encoder_head_weight=-1.0)
    with pytest.raises(ValueError, match="applies to speech-to-text stages"):
        stage("full", objective="duplex", encoder_head_weight=0.5)
    with pytest.raises(ValueError, match=r"voice encoder \(WhisperEncoder\) has no head of its own"):
        MinMo(
            llm=HFCausalLM.from_preset("tiny"),
            voice_encoder=WhisperEncoder.from_preset("tiny"),
            input_projector=TransformerConvProjector.from_preset("tiny", input_dim=64),
            trainable={"voice_encoder": "full", "input_projector": "full", "llm": "frozen"},
            encoder_head_weight=0.5,
        )
    model = stage("full", tasks=["lid"], encoder_head_weight=0.5)

    class LanguageIDOnly:
        supervised_tasks = ["lid"]

    with pytest.raises(ValueError, match=r"no source .* carries what the encoder's head learns from"):
        model._check_supervision(LanguageIDOnly())
