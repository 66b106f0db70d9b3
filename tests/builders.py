"""Tiny models and batches the tests share: a framing voice encoder, a tiny MinMo and a two-item batch."""

from __future__ import annotations

import torch
from minmo_lightning.components.input_projector.projectors import TransformerConvProjector
from minmo_lightning.components.llm.hf_causal_lm import HFCausalLM
from minmo_lightning.components.output_projector.query_linear import QueryLinearProjector
from minmo_lightning.components.token2wav.token2wav import CosyVoice2Token2Wav
from minmo_lightning.components.voice_token_lm.cosyvoice2_lm import CosyVoice2LM
from torch import nn

from minmo_lightning.blocks import VoiceEncoder
from minmo_lightning.contracts import IGNORE_INDEX, AudioBatch, SequenceBatch, TokenBatch
from minmo_lightning.model import MinMo


class FramingTestEncoder(VoiceEncoder):
    """Cuts 16 kHz audio into 40 ms frames and projects them: enough to exercise the composite."""

    presets = {"tiny": {"output_dim": 32, "frame_samples": 640}}

    def __init__(self, output_dim: int = 32, frame_samples: int = 640) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.sample_rate, self.output_dim = 16000, output_dim
        self.frame_rate = self.sample_rate / frame_samples
        self.proj = nn.Linear(frame_samples, output_dim)

    def forward(self, audio: AudioBatch) -> SequenceBatch:
        audio.require(self.sample_rate, who="FramingTestEncoder")
        size = self.hparams.frame_samples
        frames = audio.waveform[:, : audio.waveform.shape[1] // size * size].unflatten(1, (-1, size))
        return SequenceBatch(self.proj(frames), audio.lengths // size)


def tiny_minmo(**overrides) -> MinMo:
    args = {
        "llm": HFCausalLM.from_preset("tiny"),
        "voice_encoder": FramingTestEncoder.from_preset("tiny"),
        "input_projector": TransformerConvProjector.from_preset("tiny"),
        "trainable": {"voice_encoder": "frozen", "input_projector": "full", "llm": "lora"},
        "tasks": ["asr", "ser"],
    }
    model = MinMo(**{**args, **overrides})
    model.configure_model()
    return model


def tiny_batch() -> dict:
    g = torch.Generator().manual_seed(0)
    audio = AudioBatch.from_list(
        [0.1 * torch.randn(16000, generator=g), 0.1 * torch.randn(7000, generator=g)], 16000
    )
    return {
        "ids": ["a", "b"],
        "audio": audio,
        "text": ["hello there", "stop now"],
        "emotion": torch.tensor([1, 3]),
        "supervises": ("ser", "asr"),
    }


def assert_teacher_forced_argmax(
    model, semantic: torch.Tensor, prefix: torch.Tensor, speech: list[int]
) -> None:
    """``speech`` (one row's streamed tokens) is the argmax of the teacher-forced voice decoder at every
    position the streaming decoder sampled (speech ids only; eos once the turn of speech was given)."""
    n, p = semantic.shape[0], prefix.shape[0]
    tokens = torch.tensor(speech)[None]
    out = model.decoder_forward(
        SequenceBatch(semantic[None], torch.tensor([n])),
        TokenBatch(tokens, torch.tensor([tokens.shape[1]])),
        prefix=SequenceBatch(prefix[None], torch.tensor([p])) if p else None,
    )
    ratio = model.ratio
    task = 1 + p + (n // ratio.text) * (ratio.text + ratio.speech) + n % ratio.text
    target = out.layout.targets[0]
    logits = out.logits[0].clone()
    speech_vocab = model.speech_vocab_size
    logits[:, speech_vocab:] = float("-inf")
    logits[task:, model.ids.eos] = out.logits[0, task:, model.ids.eos]  # eos allowed after the turn of speech
    scored = (target != IGNORE_INDEX).nonzero().flatten()
    capped = len(speech) >= int(n * model.hparams.max_token_text_ratio)
    scored = scored[:-1] if capped else scored  # capped rows never sampled their final eos
    scored = scored[
        target[scored] != model.ids.fill
    ]  # fill positions are not sampled: the next chunk follows
    assert torch.equal(logits[scored].argmax(-1), target[scored])


def speaking_minmo(token2wav: bool = False, **overrides):
    """A tiny stage-3-like MinMo with the whole speech side (random weights), every block frozen."""
    torch.manual_seed(0)
    lm = CosyVoice2LM.from_preset("tiny", max_token_text_ratio=3.0)
    model = tiny_minmo(
        objective="speech_to_speech",
        output_projector=QueryLinearProjector.from_preset("tiny", output_dim=lm.hidden_size),
        voice_token_lm=lm,
        token2wav=CosyVoice2Token2Wav.from_preset("tiny", vocoder="hift", vocoder_preset="tiny")
        if token2wav
        else None,
        trainable={
            "voice_encoder": "frozen",
            "input_projector": "frozen",
            "llm": "frozen",
            "output_projector": "frozen",
            "voice_token_lm": "frozen",
            **({"token2wav": "frozen"} if token2wav else {}),
            **({"duplex_predictor": "frozen"} if "duplex_predictor" in overrides else {}),
        },
        **overrides,
    )
    return model.eval()


def stage2b_minmo() -> MinMo:
    """A tiny stage-2b MinMo (random weights): the output projector and the voice token LM train."""
    lm = CosyVoice2LM.from_preset("tiny")
    return tiny_minmo(
        objective="text_to_speech",
        output_projector=QueryLinearProjector.from_preset("tiny", output_dim=lm.hidden_size),
        voice_token_lm=lm,
        trainable={
            "voice_encoder": "frozen",
            "input_projector": "frozen",
            "llm": "frozen",
            "output_projector": "full",
            "voice_token_lm": "full",
        },
    )
