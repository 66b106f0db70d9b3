"""A minimal voice encoder for composite tests: framing + linear, so tests do not depend on SenseVoice."""

from __future__ import annotations

from torch import nn

from minmo_lightning.blocks import VoiceEncoder
from minmo_lightning.contracts import AudioBatch, SequenceBatch


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
