"""The flow's training targets: CosyVoice2's 80-bin log-mel of 24 kHz audio, and the speaker vector.

The mel is the reference frontend's ``mel_spectrogram`` (Matcha-TTS): reflect padding of (n_fft - hop) / 2,
Hann STFT (n_fft 1920, hop 480, not centred), magnitude, slaney mel filters over 0-8000 Hz, natural log of
max(., 1e-5). One frame per 480 samples: 50 Hz, two frames per 25 Hz speech token.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from minmo_lightning.contracts import AudioBatch

SAMPLE_RATE, N_FFT, HOP, F_MAX = 24000, 1920, 480, 8000.0


def _hz_to_mel(hz: Tensor) -> Tensor:
    """Slaney mel scale: linear below 1 kHz, logarithmic above."""
    f_sp, min_log_hz, min_log_mel, log_step = 200.0 / 3, 1000.0, 15.0, math.log(6.4) / 27.0
    log_part = min_log_mel + torch.log(hz.clamp(min=min_log_hz) / min_log_hz) / log_step
    return torch.where(hz >= min_log_hz, log_part, hz / f_sp)


def _mel_to_hz(mel: Tensor) -> Tensor:
    f_sp, min_log_hz, min_log_mel, log_step = 200.0 / 3, 1000.0, 15.0, math.log(6.4) / 27.0
    return torch.where(mel >= min_log_mel, min_log_hz * torch.exp(log_step * (mel - min_log_mel)), f_sp * mel)


def mel_filters(n_mels: int, n_fft: int, sample_rate: int, f_min: float, f_max: float) -> Tensor:
    """``[n_mels, n_fft // 2 + 1]`` area-normalised triangles (librosa ``filters.mel`` with fmin/fmax).

    Always computed on the CPU (constants; also when a model is being built on the meta device).
    """
    cpu = torch.device("cpu")
    fft_freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64, device=cpu)
    edges = torch.tensor([f_min, f_max], dtype=torch.float64, device=cpu)
    low, high = _hz_to_mel(edges)
    points = _mel_to_hz(torch.linspace(float(low), float(high), n_mels + 2, dtype=torch.float64, device=cpu))
    widths = points.diff()
    ramps = points[:, None] - fft_freqs[None, :]
    lower, upper = -ramps[:-2] / widths[:-1, None], ramps[2:] / widths[1:, None]
    filters = torch.clamp(torch.minimum(lower, upper), min=0.0) * (2.0 / (points[2:] - points[:-2]))[:, None]
    return filters.float()


def log_mel(audio: AudioBatch, n_mels: int = 80) -> tuple[Tensor, Tensor]:
    """24 kHz audio -> (log-mel [B, T, n_mels], frame lengths [B] = samples // 480)."""
    audio.require(SAMPLE_RATE, who="the CosyVoice2 flow's mel frontend")
    wave = audio.waveform * audio.mask
    pad = (N_FFT - HOP) // 2
    if wave.shape[1] <= pad:
        wave = F.pad(wave, (0, pad + 1 - wave.shape[1]))
    wave = F.pad(wave[:, None], (pad, pad), mode="reflect")[:, 0]
    window = torch.hann_window(N_FFT, device=wave.device)
    spec = torch.stft(wave, N_FFT, HOP, N_FFT, window, center=False, onesided=True, return_complex=True)
    magnitude = torch.sqrt(spec.real.pow(2) + spec.imag.pow(2) + 1e-9)
    mel = mel_filters(n_mels, N_FFT, SAMPLE_RATE, 0.0, F_MAX).to(wave.device) @ magnitude
    mel = torch.log(mel.clamp(min=1e-5)).transpose(1, 2)
    frames = torch.div(audio.lengths.to(wave.device), HOP, rounding_mode="floor")
    return mel[:, : int(frames.max())], frames


def speaker_embedding(batch: dict[str, Any], size: int, dim: int, device: torch.device) -> Tensor:
    """The batch's ``speaker_embedding`` [B, dim] (CAM++ x-vectors) if it carries one, else zeros.

    CosyVoice2 trains on each utterance's CAM++ x-vector (``campplus.CAMPPlus.embed`` of its 16 kHz audio).
    With zeros the speaker term is the affine layer's bias and the voice comes from the prompt mel alone; a
    flow trained on zeros should run without a speaker encoder (token2wav's ``speaker_encoder: null``).
    """
    embedding = batch.get("speaker_embedding")
    if embedding is None:
        return torch.zeros(size, dim, device=device)
    if tuple(embedding.shape) != (size, dim):
        raise ValueError(f"batch['speaker_embedding'] must be [{size}, {dim}], got {tuple(embedding.shape)}")
    return embedding.to(device)
