"""An auxiliary objective of the tiny tokenizer: each code says how its 40 ms were spoken.

CosyVoice2 trains its tokenizer on ASR alone, so the codes keep what the words need. Trained that way, the
tiny tokenizer kept no pitch the flow could use: a reading asked for a high or a low voice lies about +-4
semitones from the neutral one on the recording and in its mel, and about 0 after tokens and flow, so no
voice LM could speak as asked. CosyVoice 3 trains its tokenizer on several tasks (ASR, language, emotion,
audio events, speaker) for the same reason. Here a small head reads, from each rounded code alone (no
context, so the code itself must carry them), its four 10 ms subframes' voicing, pitch (semitones re 100 Hz,
where voiced) and loudness, measured on the waveform by the duplex predictor's pitch tracker.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from minmo_lightning.components.duplex_predictor.pitch import SUBFRAME_SECONDS, PitchFeatures, masked_samples
from torch import Tensor, nn

from minmo_lightning.contracts import AudioBatch, lengths_to_mask

#: per subframe: voicing (a logit), pitch / PITCH_SCALE, (loudness dB - LOUDNESS_OFFSET) / LOUDNESS_SCALE
TARGETS = 3
PITCH_SCALE = 12.0
LOUDNESS_OFFSET, LOUDNESS_SCALE = -40.0, 20.0
SILENCE_DB = -80.0


class ProsodyTargets:
    """Voicing, pitch and loudness per 10 ms subframe of each token, ``[B, T, subframes, 3]``."""

    def __init__(self, token_seconds: float) -> None:
        self.subframes = round(token_seconds / SUBFRAME_SECONDS)
        self.tracker = PitchFeatures(token_seconds)

    @torch.no_grad()
    def __call__(self, audio: AudioBatch, tokens: int) -> Tensor:
        count = tokens * self.subframes
        voiced, pitch = self.tracker.contour(audio, count)
        sub = round(SUBFRAME_SECONDS * audio.sample_rate)
        power = masked_samples(audio, count * sub).unflatten(1, (count, sub)).square().mean(-1)
        loudness = (10 * torch.log10(power.clamp(min=1e-12))).clamp(min=SILENCE_DB)
        values = torch.stack(
            [
                voiced.float(),
                pitch.float() / PITCH_SCALE,
                (loudness - LOUDNESS_OFFSET) / LOUDNESS_SCALE,
            ],
            -1,
        )
        return values.unflatten(1, (tokens, self.subframes))


class ProsodyHead(nn.Module):
    """Rounded FSQ codes ``[B, T, code_dim]`` -> per token and subframe: voicing logit, pitch, loudness."""

    def __init__(self, code_dim: int, hidden: int, subframes: int) -> None:
        super().__init__()
        self.subframes = subframes
        self.net = nn.Sequential(
            nn.Linear(code_dim, hidden), nn.GELU(), nn.Linear(hidden, subframes * TARGETS)
        )

    def forward(self, codes: Tensor) -> Tensor:
        return self.net(codes).unflatten(-1, (self.subframes, TARGETS))

    def loss(self, codes: Tensor, lengths: Tensor, targets: Tensor) -> dict[str, Tensor]:
        """Voicing (binary cross-entropy), pitch where voiced and loudness (L1), over each row's tokens."""
        out = self(codes)
        valid = lengths_to_mask(lengths, codes.shape[1])[..., None].expand(-1, -1, self.subframes)
        voiced = targets[..., 0] > 0.5
        return {
            "voicing": F.binary_cross_entropy_with_logits(out[..., 0][valid], targets[..., 0][valid]),
            "pitch": F.l1_loss(out[..., 1][valid & voiced], targets[..., 1][valid & voiced])
            if bool((valid & voiced).any())
            else out.new_zeros(()),
            "loudness": F.l1_loss(out[..., 2][valid], targets[..., 2][valid]),
        }
