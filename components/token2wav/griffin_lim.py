"""Griffin-Lim vocoder: a training-free mel -> waveform inverse, so demos and tests make audible audio without
pretrained weights. A ``Vocoder`` like ``HiFTVocoder`` (``vocoder: griffin_lim`` in a recipe):

    vocoder = GriffinLimVocoder()                         # CosyVoice2's mel: 24 kHz, n_fft 1920, hop 480, 80 bins
    wav = vocoder(mel)                                    # natural-log mel [B, 80, T] -> wav [B, T * 480]

    state = vocoder.init_state(batch_size)
    wav_chunk = vocoder.step(mel_chunk, state)            # [B, 80, n] -> [B, k * 480]
    state.end_input(range(batch_size))
    wav_chunk = vocoder.step(last_chunk, state)           # flushes everything left

The mel is the flow's (``flow_features.log_mel``): slaney filters over 0-8000 Hz on a Hann STFT whose frame t
covers samples [480 t - 720, 480 t + 1200). Inversion: exp, the mel basis' pseudo-inverse (least squares,
clamped at zero) gives a linear magnitude, then fast Griffin-Lim (Perraudin et al. 2013: alternate projections
onto consistent spectrograms and onto the target magnitude, with momentum) on that same frame grid, all frames
and batch rows at once. The inverse STFT is an explicit windowed overlap-add (``F.fold``): ``torch.istft`` with
``center=False`` rejects a Hann window because its envelope is zero at the first sample.

Streaming runs Griffin-Lim on a window of ``stream_left_context`` emitted frames + the new ones, warm-starting the
context frames with the phases already used, emits frames with ``stream_lookahead`` frames of future and
cross-fades ``stream_crossfade`` frames at each join. Griffin-Lim is iterative and global, so a stream is close to,
not equal to, the offline result; state is bounded by the window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from minmo_lightning.components.token2wav.flow_features import mel_filters
from minmo_lightning.components.token2wav.vocoder import Vocoder, VocoderStreamState
from torch import Tensor


@dataclass
class GriffinLimStreamState(VocoderStreamState):
    """A Griffin-Lim stream: besides the mel window, ``phase`` holds the unit phasors of frames [start, emitted)
    (the warm start of the next window's context frames)."""

    phase: Tensor

    def reset(self, items: Tensor | list[int]) -> None:
        super().reset(items)
        self.phase = self.phase[:, :, :0]


class GriffinLimVocoder(Vocoder):
    """Log-mel -> waveform by mel pseudo-inverse + fast Griffin-Lim. No trainable parameters."""

    alias = "griffin_lim"
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "cosyvoice2-0.5b": dict(
            sampling_rate=24000,
            n_fft=1920,
            hop_length=480,
            n_mels=80,
            fmin=0.0,
            fmax=8000.0,
            n_iter=32,
            momentum=0.99,
            seed=0,
            stream_left_context=4,
            stream_lookahead=3,
            stream_crossfade=1,
        )
    }

    def __init__(
        self,
        sampling_rate: int = 24000,
        n_fft: int = 1920,
        hop_length: int = 480,
        n_mels: int = 80,
        fmin: float = 0.0,
        fmax: float = 8000.0,
        n_iter: int = 32,
        momentum: float = 0.99,
        seed: int = 0,
        stream_left_context: int = 4,
        stream_lookahead: int = 3,
        stream_crossfade: int = 1,
    ) -> None:
        super().__init__()
        if (n_fft - hop_length) % 2:
            raise ValueError(
                f"n_fft - hop_length must be even (frames are padded by half of it), got {n_fft=} {hop_length=}"
            )
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.set_stream_window(stream_left_context, stream_lookahead, stream_crossfade)
        self.sampling_rate, self.n_fft, self.hop, self.mel_bins = sampling_rate, n_fft, hop_length, n_mels
        self.n_iter, self.momentum, self.seed = n_iter, momentum, seed
        basis = mel_filters(n_mels, n_fft, sampling_rate, fmin, fmax).double()
        self.register_buffer("inverse_basis", torch.linalg.pinv(basis).float(), persistent=False)
        self.register_buffer(
            "window", torch.hann_window(n_fft, dtype=torch.float64).float(), persistent=False
        )

    @property
    def samples_per_frame(self) -> int:
        """One mel frame is one STFT hop."""
        return self.hop

    # ---- transforms ---------------------------------------------------------------------------
    def linear_magnitude(self, mel: Tensor) -> Tensor:
        """Natural-log mel [B, n_mels, T] -> least-squares linear magnitude [B, n_fft // 2 + 1, T], >= 0."""
        return torch.clamp(self.inverse_basis @ torch.exp(mel), min=0.0)

    def stft(self, wav: Tensor) -> Tensor:
        """[B, T * hop] -> complex [B, bins, T] on the mel's frame grid (zero padding at the ends)."""
        pad = (self.n_fft - self.hop) // 2
        padded = F.pad(wav, (pad, pad))
        return torch.stft(padded, self.n_fft, self.hop, window=self.window, center=False, return_complex=True)

    def istft(self, spec: Tensor) -> Tensor:
        """Least-squares inverse of ``stft``: windowed overlap-add divided by the summed squared window."""
        frames = spec.shape[-1]
        chunks = torch.fft.irfft(spec, n=self.n_fft, dim=1) * self.window[:, None]
        size = (1, (frames - 1) * self.hop + self.n_fft)
        fold = dict(output_size=size, kernel_size=(1, self.n_fft), stride=(1, self.hop))
        wav = F.fold(chunks, **fold)[:, 0, 0]
        envelope = F.fold(self.window.pow(2)[None, :, None].expand(1, -1, frames), **fold)[:, 0, 0]
        pad = (self.n_fft - self.hop) // 2
        return (wav / envelope.clamp(min=1e-8))[:, pad : pad + frames * self.hop]

    def griffin_lim(self, magnitude: Tensor, phase: Tensor) -> Tensor:
        """Refine unit phasors ``phase`` [B, bins, T] so that ``magnitude * phase`` is a consistent STFT."""
        previous = None
        for _ in range(self.n_iter):
            rebuilt = self.stft(self.istft(magnitude * phase))
            accelerated = rebuilt if previous is None else rebuilt + self.momentum * (rebuilt - previous)
            phase = accelerated / accelerated.abs().clamp(min=1e-12)
            previous = rebuilt
        return phase

    def initial_phase(
        self, batch: int, bins: int, first_frame: int, frames: int, device: torch.device
    ) -> Tensor:
        """Random phasors that depend on (seed, frame index) only, so rows and runs are reproducible."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + first_frame)
        angle = 2 * math.pi * torch.rand(bins, frames, generator=generator, dtype=torch.float64)
        return torch.polar(torch.ones_like(angle), angle).to(torch.complex64).to(device).expand(batch, -1, -1)

    # ---- offline ------------------------------------------------------------------------------
    def forward(self, mel: Tensor) -> Tensor:
        """Natural-log mel [B, n_mels, T] -> waveform [B, T * hop]."""
        self.check_mel(mel, offline=True)
        magnitude = self.linear_magnitude(mel)
        phase = self.initial_phase(mel.shape[0], magnitude.shape[1], 0, mel.shape[2], mel.device)
        return self.istft(magnitude * self.griffin_lim(magnitude, phase))

    # ---- streaming ----------------------------------------------------------------------------
    def init_state(self, batch_size: int, options: None = None) -> GriffinLimStreamState:
        self._check_batch_size(batch_size)
        device = self.inverse_basis.device
        return GriffinLimStreamState(
            batch_size=batch_size,
            mel=torch.zeros(batch_size, self.mel_bins, 0, device=device),
            tail=torch.zeros(batch_size, 0, device=device),
            phase=torch.zeros(batch_size, self.n_fft // 2 + 1, 0, dtype=torch.complex64, device=device),
        )

    def synthesize_window(
        self, mel: Tensor, state: GriffinLimStreamState, end: int, new_start: int
    ) -> Tensor:
        """Griffin-Lim on the window, warm-started with the phases already used for its context frames."""
        received = state.start + mel.shape[2]
        magnitude = self.linear_magnitude(mel)
        fresh = self.initial_phase(
            state.batch_size, magnitude.shape[1], state.emitted, received - state.emitted, mel.device
        )
        phase = self.griffin_lim(magnitude, torch.cat([state.phase, fresh], dim=2))
        state.phase = phase[:, :, new_start - state.start : end - state.start]
        return self.istft(magnitude * phase)
