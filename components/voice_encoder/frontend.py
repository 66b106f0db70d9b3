"""Audio frontends of the voice encoders, vectorised in torch (no torchaudio).

``SenseVoiceFrontend`` is funasr's ``WavFrontend``: Kaldi-compatible log-mel fbank (the
``torchaudio.compliance.kaldi.fbank`` recipe: DC removal, pre-emphasis, Hamming window, 512-point FFT,
power spectrum, triangular mel banks on the mel scale ``1127 ln(1 + f/700)``), then low frame rate
stacking (LFR m=7 n=6: 60 ms frames of 560 dims) and the CMVN read from ``am.mvn``.

``WhisperLogMel`` is Whisper's log-mel spectrogram (``torch.stft`` + transformers' ``mel_filter_bank``),
normalised per utterance over its valid frames only, so a short clip gives the same features alone or
padded in a batch.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minmo_lightning.contracts import lengths_to_mask

_EPS = torch.finfo(torch.float32).eps


def load_cmvn(path: str | Path) -> Tensor:
    """Parse a Kaldi-nnet ``am.mvn`` into ``[2, D]``: row 0 AddShift (added), row 1 Rescale (multiplied)."""
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"CMVN file {path} does not exist; estimate one from your training data with "
            "`minmo cmvn --data DATASET --out am.mvn` (`minmo synth-data` writes data/builtin/asr/am.mvn)"
        )
    text = Path(path).read_text()
    rows = []
    for tag in ("AddShift", "Rescale"):
        match = re.search(rf"<{tag}>[^\[]*\[([^\]]*)\]", text)
        if match is None:
            raise ValueError(f"{path} is not a Kaldi CMVN file: no <{tag}> [ ... ] block found")
        rows.append([float(v) for v in match.group(1).split()])
    if len(rows[0]) != len(rows[1]):
        raise ValueError(f"{path}: AddShift has {len(rows[0])} values but Rescale has {len(rows[1])}")
    return torch.tensor(rows, dtype=torch.float32)


def _mel_scale(freq: Tensor | float) -> Tensor | float:
    if isinstance(freq, Tensor):
        return 1127.0 * torch.log1p(freq / 700.0)
    return 1127.0 * math.log1p(freq / 700.0)


def kaldi_mel_banks(num_bins: int, padded_window: int, sample_rate: int, low_freq: float = 20.0) -> Tensor:
    """Kaldi's triangular mel filters ``[num_bins, padded_window // 2 + 1]`` (Nyquist column is zero)."""
    num_fft_bins = padded_window // 2
    nyquist = 0.5 * sample_rate
    mel_low, mel_high = _mel_scale(low_freq), _mel_scale(nyquist)
    delta = (mel_high - mel_low) / (num_bins + 1)
    index = torch.arange(num_bins, dtype=torch.float32).unsqueeze(1)
    left, center, right = (mel_low + (index + k) * delta for k in (0, 1, 2))
    mel = _mel_scale(sample_rate / padded_window * torch.arange(num_fft_bins, dtype=torch.float32))[None]
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)
    return F.pad(banks, (0, 1))


class Float32Buffers(nn.Module):
    """A frontend whose constants (windows, mel banks, CMVN) stay float32 when the model is cast to another
    dtype (Lightning's ``bf16-true``): features are computed in float32 as the official frontends compute
    them, and the encoder casts them to its own dtype. Device moves still apply."""

    def _apply(self, fn: Any, recurse: bool = True) -> Float32Buffers:
        kept = {n: b for n, b in self._buffers.items() if b is not None and b.dtype == torch.float32}
        super()._apply(fn, recurse)
        for name, buffer in kept.items():
            self._buffers[name] = buffer.to(self._buffers[name].device)
        return self


class KaldiFbank(Float32Buffers):
    """Log-mel filterbank as Kaldi computes it (``snip_edges=True``), for a batch of padded waveforms.

    Frames are ``frame_ms`` long every ``shift_ms``; an utterance shorter than one frame gets one frame as
    long as itself (what funasr's ``WavFrontend`` asks Kaldi for). Input is in [-1, 1], multiplied by
    ``input_scale`` first: 32768 (the int16 range) as funasr does, 1 as CosyVoice2's CAM++ frontend does.
    ``window_type`` is funasr's ``hamming`` or torchaudio's default ``povey`` (Hann to the power 0.85).
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_mels: int = 80,
        frame_ms: float = 25.0,
        shift_ms: float = 10.0,
        dither: float = 0.0,
        preemphasis: float = 0.97,
        window_type: str = "hamming",
        input_scale: float = 32768.0,
    ) -> None:
        super().__init__()
        if window_type not in ("hamming", "povey"):
            raise ValueError(f"window_type must be 'hamming' or 'povey', got {window_type!r}")
        self.window_type, self.input_scale = window_type, input_scale
        self.sample_rate, self.n_mels, self.dither, self.preemphasis = (
            sample_rate,
            n_mels,
            dither,
            preemphasis,
        )
        self.frame_ms = frame_ms
        self.window_size = int(sample_rate * frame_ms * 0.001)
        self.shift = int(sample_rate * shift_ms * 0.001)
        self.padded = 1 << (self.window_size - 1).bit_length()
        self.register_buffer("window", self._window(self.window_size), persistent=False)
        self.register_buffer("banks", kaldi_mel_banks(n_mels, self.padded, sample_rate), persistent=False)

    def _window(self, size: int) -> Tensor:
        if self.window_type == "povey":
            return torch.hann_window(size, periodic=False, dtype=torch.float32).pow(0.85)
        return torch.hamming_window(size, periodic=False, alpha=0.54, beta=0.46, dtype=torch.float32)

    def num_frames(self, lengths: Tensor) -> Tensor:
        full = 1 + torch.div(lengths - self.window_size, self.shift, rounding_mode="floor")
        return torch.where(lengths >= self.window_size, full, (lengths > 0).long())

    def frames_to_fbank(self, frames: Tensor, window: Tensor, banks: Tensor) -> Tensor:
        """``[..., window]`` raw int16-scaled frames -> ``[..., n_mels]`` log-mel energies."""
        if self.dither and self.training:
            frames = frames + torch.randn_like(frames) * self.dither
        frames = frames - frames.mean(-1, keepdim=True)
        previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
        frames = (frames - self.preemphasis * previous) * window
        padded = 1 << (frames.shape[-1] - 1).bit_length()
        power = torch.fft.rfft(F.pad(frames, (0, padded - frames.shape[-1]))).abs().pow(2)
        return torch.clamp(power @ banks.T, min=_EPS).log()

    def forward(self, waveform: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """``[B, S]`` waveforms in [-1, 1] -> ``[B, T, n_mels]`` fbank (zero padded) and ``[B]`` frame counts."""
        waveform = waveform.float() * self.input_scale
        num_frames = self.num_frames(lengths)
        if waveform.shape[1] >= self.window_size:
            frames = waveform.unfold(1, self.window_size, self.shift)
            feats = self.frames_to_fbank(frames, self.window, self.banks)
        else:
            feats = waveform.new_zeros(waveform.shape[0], 0, self.n_mels)
        feats = F.pad(feats, (0, 0, 0, max(int(num_frames.max()) - feats.shape[1], 0)))
        for b in torch.nonzero((lengths < self.window_size) & (lengths > 0)).flatten().tolist():
            feats[b, 0] = self._short(waveform[b, : int(lengths[b])])
        return feats * lengths_to_mask(num_frames, feats.shape[1])[..., None], num_frames

    def _short(self, samples: Tensor) -> Tensor:
        """One frame spanning a whole utterance shorter than ``frame_ms`` (Kaldi's window is then the clip)."""
        size = int(self.sample_rate * (samples.shape[0] / self.sample_rate * 1000) * 0.001)
        window = self._window(size).to(samples.device)
        banks = kaldi_mel_banks(self.n_mels, 1 << (size - 1).bit_length(), self.sample_rate).to(
            samples.device
        )
        return self.frames_to_fbank(samples[:size][None], window, banks)[0]


def apply_lfr(feats: Tensor, lengths: Tensor, window: int, hop: int) -> tuple[Tensor, Tensor]:
    """Low frame rate: stack ``window`` frames every ``hop`` (funasr's ``lfr_m``, ``lfr_n``) -> ``[B, ceil(T/hop),
    window * D]``.

    Frame ``i`` stacks input frames ``i*hop - (window-1)//2 ... i*hop + window - 1 - (window-1)//2``, clamped to
    the utterance (its first frame repeats on the left, its last on the right), exactly as funasr's
    ``apply_lfr``.
    """
    batch, _, dim = feats.shape
    out_lengths = torch.div(lengths + hop - 1, hop, rounding_mode="floor")
    steps = int(out_lengths.max()) if batch else 0
    offsets = torch.arange(steps, device=feats.device)[:, None] * hop + torch.arange(
        window, device=feats.device
    )
    source = offsets[None] - (window - 1) // 2
    last = (lengths - 1).clamp(min=0)[:, None, None]
    source = torch.minimum(source.clamp(min=0), last).reshape(batch, -1)
    stacked = torch.gather(feats, 1, source[..., None].expand(-1, -1, dim)).reshape(
        batch, steps, window * dim
    )
    return stacked * lengths_to_mask(out_lengths, steps)[..., None], out_lengths


class SenseVoiceFrontend(Float32Buffers):
    """funasr ``WavFrontend``: fbank -> LFR -> CMVN ``(x + shift) * scale``; padding frames stay zero.

    The CMVN is a non-persistent buffer (it comes from ``am.mvn`` next to the checkpoint, not from the
    state dict, which must match the official key list exactly).
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_mels: int = 80,
        frame_ms: float = 25.0,
        shift_ms: float = 10.0,
        lfr_m: int = 7,
        lfr_n: int = 6,
        dither: float = 0.0,
    ) -> None:
        super().__init__()
        self.fbank = KaldiFbank(sample_rate, n_mels, frame_ms, shift_ms, dither)
        self.lfr_m, self.lfr_n = lfr_m, lfr_n
        self.output_dim = n_mels * lfr_m
        self.register_buffer("cmvn", None, persistent=False)

    def set_cmvn(self, cmvn: Tensor | None) -> None:
        if cmvn is not None and tuple(cmvn.shape) != (2, self.output_dim):
            raise ValueError(
                f"CMVN must have shape [2, {self.output_dim}] (n_mels * lfr_m), got {tuple(cmvn.shape)}; "
                "is the am.mvn from a model with another frontend?"
            )
        self.cmvn = None if cmvn is None else cmvn.float().to(self.fbank.banks.device)

    def apply_cmvn(self, feats: Tensor, lengths: Tensor) -> Tensor:
        if self.cmvn is None:
            return feats
        normed = (feats + self.cmvn[0]) * self.cmvn[1]
        return normed * lengths_to_mask(lengths, feats.shape[1])[..., None]

    def forward(self, waveform: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        feats, lengths = self.fbank(waveform, lengths)
        if self.lfr_m > 1 or self.lfr_n > 1:
            feats, lengths = apply_lfr(feats, lengths, self.lfr_m, self.lfr_n)
        return self.apply_cmvn(feats, lengths), lengths


class WhisperLogMel(Float32Buffers):
    """Whisper's log-mel: 25 ms Hann STFT every 10 ms, power, slaney mel, log10, clamp to max - 8, (x+4)/4.

    ``S`` samples give ``S // hop`` frames (Whisper drops the STFT's last frame). The dynamic-range clamp
    uses each utterance's maximum over its valid frames; padded frames are zero.
    """

    def __init__(self, sample_rate: int = 16000, n_mels: int = 128, n_fft: int = 400, hop: int = 160) -> None:
        super().__init__()
        from transformers.audio_utils import mel_filter_bank

        self.n_fft, self.hop = n_fft, hop
        filters = mel_filter_bank(
            num_frequency_bins=1 + n_fft // 2,
            num_mel_filters=n_mels,
            min_frequency=0.0,
            max_frequency=sample_rate / 2,
            sampling_rate=sample_rate,
            norm="slaney",
            mel_scale="slaney",
        )
        self.register_buffer("filters", torch.from_numpy(filters).float(), persistent=False)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def forward(self, waveform: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """``[B, S]`` -> ``[B, n_mels, T]`` (channels first, as Whisper's conv stem wants) and ``[B]`` frames."""
        steps = waveform.shape[1] // self.hop
        waveform = waveform.float() * lengths_to_mask(lengths, waveform.shape[1])
        # zeros after the clip (Whisper pads with zeros to 30 s before its STFT), so padding in a batch
        # changes nothing
        waveform = F.pad(waveform, (0, self.n_fft // 2))
        spec = torch.stft(waveform, self.n_fft, self.hop, window=self.window, return_complex=True)
        frames = torch.div(lengths, self.hop, rounding_mode="floor")
        power = spec[..., :steps].abs().pow(2)
        log_spec = torch.clamp(self.filters.T @ power, min=1e-10).log10()
        valid = lengths_to_mask(frames, log_spec.shape[-1])[:, None, :]
        peak = log_spec.masked_fill(~valid, float("-inf")).amax(dim=(1, 2), keepdim=True)
        log_spec = torch.maximum(log_spec, peak - 8.0)
        return ((log_spec + 4.0) / 4.0) * valid, frames
