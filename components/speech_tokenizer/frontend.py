"""Whisper-style log-mel frontend of S3Tokenizer v2 (16 kHz, n_fft 400, hop 160, 128 Slaney mels).

Each utterance is framed as if it were alone (reflect padding at its own ends, a floor at its own
maximum minus 8), so a padded batch gives exactly the per-utterance features the reference computes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minmo_lightning.contracts import lengths_to_mask


def _hz_to_mel(hz: float) -> float:
    """Slaney mel scale: linear below 1 kHz, logarithmic above."""
    f_sp, min_log_hz, min_log_mel, log_step = 200.0 / 3, 1000.0, 15.0, math.log(6.4) / 27.0
    return min_log_mel + math.log(hz / min_log_hz) / log_step if hz >= min_log_hz else hz / f_sp


def _mel_to_hz(mel: Tensor) -> Tensor:
    f_sp, min_log_hz, min_log_mel, log_step = 200.0 / 3, 1000.0, 15.0, math.log(6.4) / 27.0
    return torch.where(mel >= min_log_mel, min_log_hz * torch.exp(log_step * (mel - min_log_mel)), f_sp * mel)


def slaney_mel_filters(n_mels: int, n_fft: int, sample_rate: int) -> Tensor:
    """``[n_mels, n_fft // 2 + 1]`` triangular filters, area-normalised (= librosa's default ``filters.mel``)."""
    fft_freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    top = _hz_to_mel(sample_rate / 2)
    mel_points = _mel_to_hz(torch.linspace(0.0, top, n_mels + 2, dtype=torch.float64))
    widths = mel_points.diff()
    ramps = mel_points[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    filters = torch.clamp(torch.minimum(lower, upper), min=0.0)
    filters *= (2.0 / (mel_points[2:] - mel_points[:-2]))[:, None]
    return filters.float()


class LogMelFrontend(nn.Module):
    """Waveforms ``[B, S]`` + lengths -> log-mel ``[B, n_mels, S_max // hop]`` + frame lengths ``S // hop``.

    Matches ``s3tokenizer.log_mel_spectrogram``: centred STFT (reflect pad), last frame dropped, power
    spectrum, mel, ``log10(max(., 1e-10))``, floor at the utterance max - 8, then ``(x + 4) / 4``. Padded
    frames are 0 (as ``s3tokenizer.padding``).
    """

    def __init__(self, n_mels: int = 128, n_fft: int = 400, hop_length: int = 160, sample_rate: int = 16000):
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.register_buffer("filters", slaney_mel_filters(n_mels, n_fft, sample_rate), persistent=False)

    def min_samples(self) -> int:
        """Reflect padding needs more samples than half a window."""
        return self.n_fft // 2 + 1

    def forward(self, waveform: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        half = self.n_fft // 2
        longest = int(lengths.max())
        # Reflect-pad every item at its own end, then zero-pad to a common width: one batched STFT.
        padded = torch.stack(
            [
                F.pad(F.pad(w[:n][None], (half, half), mode="reflect")[0], (0, longest - n))
                for w, n in zip(waveform.float(), lengths.tolist(), strict=True)
            ]
        )
        stft = torch.stft(
            padded, self.n_fft, self.hop_length, window=self.window, center=False, return_complex=True
        )
        power = stft[..., :-1].abs() ** 2
        log_spec = torch.clamp(self.filters @ power, min=1e-10).log10()

        frame_lengths = torch.div(lengths, self.hop_length, rounding_mode="floor")
        valid = lengths_to_mask(frame_lengths, log_spec.shape[-1])[:, None, :]
        peak = log_spec.masked_fill(~valid, float("-inf")).amax(dim=(1, 2), keepdim=True)
        log_spec = torch.maximum(log_spec, peak - 8.0)
        return ((log_spec + 4.0) / 4.0) * valid, frame_lengths
