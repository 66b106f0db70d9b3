"""HiFT vocoder (CosyVoice2's ``HiFTGenerator``): 80-bin log-mel at 50 Hz -> 24 kHz waveform.

A ``Vocoder`` (``vocoder: hift`` in a recipe) that the Token2Wav entry composes:

    vocoder = HiFTVocoder.from_preset("cosyvoice2-0.5b")
    vocoder.load_pretrained("CosyVoice2-0.5B/hift.pt")    # or the folder holding hift.pt
    wav = vocoder(mel)                                    # mel [B, 80, T] -> wav [B, T * 480]

    state = vocoder.init_state(batch_size)
    for mel_chunk in chunks:                              # [B, 80, n], any n >= 0
        wav_chunk = vocoder.step(mel_chunk, state)        # [B, k * 480], k frames became final
    state.end_input(range(batch_size))
    wav_chunk = vocoder.step(last_chunk, state)           # flushes everything left

Architecture (HiFTNet = neural source filter + iSTFTNet): an F0 predictor (5 weight-normed conv+ELU layers and
a linear layer), a harmonic source (sines at f0 and 8 overtones, voiced/unvoiced gated, plus noise, merged by a
linear layer), and a HiFi-GAN-style generator with Snake ResBlocks whose three upsamplers [8, 5, 3] each
fuse a strided projection of the source's STFT; it predicts log-magnitude and phase of an n_fft 16 / hop 4 STFT,
so 8 * 5 * 3 * 4 = 480 samples per mel frame. Key names follow the official ``hift.pt``.

Streaming is exact, not cross-faded guesswork: each step vocodes a window of ``stream_left_context`` cached mel
frames + the new ones, and returns audio only for frames that have ``stream_lookahead`` frames of future context.
The excitation of already emitted frames is cached and its harmonic phase carried, and the noise is addressed by
absolute sample index (not drawn per call), so with the default context (the generator's receptive field,
``exact_context_frames()``: 17 frames left, 22 ahead at CosyVoice2's sizes) the concatenated chunks equal
``forward`` up to float rounding (offline accumulates the harmonic phase in float32 as the reference does: ~3e-5
at 60 voiced frames; the stream wraps it). Rows of a stream advance together. A smaller lookahead
trades accuracy at chunk joins for latency; ``stream_crossfade`` frames then smooth each join. State is bounded:
left context + look-ahead + one chunk of mel, and that many frames of excitation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from minmo_lightning.components.token2wav.vocoder import Vocoder, VocoderStreamState
from minmo_lightning.components.token2wav.weight_norm import upgrade_weight_norm_keys, weight_norm
from torch import Tensor, nn
from torch.nn.utils import parametrize

from minmo_lightning.checkpoints import load_state_dict_strict, read_state_dict


class Snake(nn.Module):
    """x + sin^2(alpha x) / alpha with a learned per-channel alpha (periodic inductive bias for audio)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(channels))

    def forward(self, x: Tensor) -> Tensor:
        alpha = self.alpha[None, :, None]
        return x + (1.0 / (alpha + 1e-9)) * torch.sin(x * alpha).pow(2)


class ResBlock(nn.Module):
    """Three (Snake, dilated conv, Snake, conv) residual units with 'same' padding."""

    def __init__(self, channels: int, kernel_size: int, dilations: list[int]) -> None:
        super().__init__()

        def conv(dilation: int) -> nn.Module:
            padding = dilation * (kernel_size - 1) // 2
            return weight_norm(nn.Conv1d(channels, channels, kernel_size, dilation=dilation, padding=padding))

        self.convs1 = nn.ModuleList(conv(d) for d in dilations)
        self.convs2 = nn.ModuleList(conv(1) for _ in dilations)
        self.activations1 = nn.ModuleList(Snake(channels) for _ in dilations)
        self.activations2 = nn.ModuleList(Snake(channels) for _ in dilations)

    def forward(self, x: Tensor) -> Tensor:
        for act1, conv1, act2, conv2 in zip(self.activations1, self.convs1, self.activations2, self.convs2):
            x = conv2(act2(conv1(act1(x)))) + x
        return x


def resblock_reach(kernel_size: int, dilations: list[int]) -> int:
    """Samples of context one ResBlock reads on each side."""
    half = (kernel_size - 1) // 2
    return sum(half * d for d in dilations) + half * len(dilations)


class F0Predictor(nn.Module):
    """Mel [B, C, T] -> f0 in Hz [B, T] (reference ``ConvRNNF0Predictor``: abs of a linear read-out)."""

    layers: ClassVar[int] = 5

    def __init__(self, in_channels: int, cond_channels: int) -> None:
        super().__init__()
        convs: list[nn.Module] = []
        for i in range(self.layers):
            width = in_channels if i == 0 else cond_channels
            convs += [weight_norm(nn.Conv1d(width, cond_channels, 3, padding=1)), nn.ELU()]
        self.condnet = nn.Sequential(*convs)
        self.classifier = nn.Linear(cond_channels, 1)

    def forward(self, mel: Tensor) -> Tensor:
        return torch.abs(self.classifier(self.condnet(mel).transpose(1, 2)).squeeze(-1))


def positional_normal(start: int, length: int, channels: int, seed: int, device: torch.device) -> Tensor:
    """Standard-normal draws [1, length, channels] that depend only on (seed, absolute sample, channel).

    The reference draws fresh ``randn`` every call, which no chunked run can reproduce; addressing the noise by
    position makes streaming and offline synthesis see the same excitation (batch rows share it).
    """
    mask = 0xFFFFFFFF
    counter = torch.arange(
        2 * start * channels, 2 * (start + length) * channels, device=device, dtype=torch.int64
    )
    bits = _hash32((counter + _hash32(torch.tensor(seed, dtype=torch.int64))) & mask)
    uniform = (bits.double() + 0.5) / 2.0**32
    u1, u2 = uniform.view(length, channels, 2).unbind(-1)
    return (torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)).float()[None]


def _hash32(x: Tensor) -> Tensor:
    """'lowbias32' integer hash on int64 tensors holding 32-bit values (wrapping multiply, low bits kept)."""
    mask = 0xFFFFFFFF
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & mask
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & mask
    return x ^ (x >> 16)


class HarmonicSource(nn.Module):
    """NSF excitation from frame-level f0 (reference ``SourceModuleHnNSF`` with ``SineGen2``).

    Per harmonic h, the phase advances by h * f0 / sr per sample; it is accumulated per frame and linearly
    interpolated to samples (as the reference does). Unvoiced samples (f0 <= threshold) get only noise of std
    sine_amp / 3, voiced ones sines plus noise of std noise_std; a linear layer + tanh merges the harmonics.
    The reference also adds a random initial phase to sample 0, but its frame-rate resampling never reads sample
    0, so that draw has no effect and is not modelled.
    """

    def __init__(
        self,
        sampling_rate: int,
        upsample_scale: int,
        nb_harmonics: int,
        sine_amp: float,
        noise_std: float,
        voiced_threshold: float,
    ) -> None:
        super().__init__()
        self.sampling_rate = sampling_rate
        self.upsample_scale = upsample_scale
        self.sine_amp = sine_amp
        self.noise_std = noise_std
        self.voiced_threshold = voiced_threshold
        self.l_linear = nn.Linear(nb_harmonics + 1, 1)
        harmonics = torch.arange(1, nb_harmonics + 2, dtype=torch.float32)
        self.register_buffer("harmonics", harmonics, persistent=False)

    @property
    def channels(self) -> int:
        return self.harmonics.numel()

    def frame_phase(self, f0: Tensor, phase0: Tensor | None = None) -> Tensor:
        """Accumulated phase / upsample_scale at every frame [B, T, H]; ``phase0`` is the previous frame's."""
        rad = (f0[..., None] * self.harmonics) / self.sampling_rate % 1
        phase = torch.cumsum(rad, dim=1) * 2 * math.pi
        return phase if phase0 is None else phase0[:, None] + phase

    def forward(
        self, f0: Tensor, draws: Tensor, phase0: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """f0 [B, T] Hz, draws [B or 1, T * scale, H] standard normal -> excitation [B, 1, T * scale],
        uv [B, T * scale, 1], frame phase [B, T, H].

        ``phase0`` [B, H] continues a stream: the first frame's samples then interpolate from the previous
        frame's phase instead of being clamped as at the start of an utterance.
        """
        scale = self.upsample_scale
        phase = self.frame_phase(f0, phase0)
        knots = phase if phase0 is None else torch.cat([phase0[:, None], phase], dim=1)
        sample_phase = F.interpolate(knots.transpose(1, 2) * scale, scale_factor=float(scale), mode="linear")
        if phase0 is not None:
            sample_phase = sample_phase[..., scale:]
        sines = torch.sin(sample_phase.transpose(1, 2)) * self.sine_amp
        uv = (f0.repeat_interleave(scale, dim=1)[..., None] > self.voiced_threshold).float()
        noise_amp = uv * self.noise_std + (1 - uv) * self.sine_amp / 3
        sines = sines * uv + noise_amp * draws
        return torch.tanh(self.l_linear(sines)).transpose(1, 2), uv, phase


#: CosyVoice2-0.5B's HiFT (``hift.pt``); the other presets state what they change
COSYVOICE2_HIFT = dict(
    in_channels=80,
    base_channels=512,
    nb_harmonics=8,
    sampling_rate=24000,
    nsf_alpha=0.1,
    nsf_sigma=0.003,
    nsf_voiced_threshold=10.0,
    upsample_rates=[8, 5, 3],
    upsample_kernel_sizes=[16, 11, 7],
    istft_n_fft=16,
    istft_hop_len=4,
    resblock_kernel_sizes=[3, 7, 11],
    resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    source_resblock_kernel_sizes=[7, 7, 11],
    source_resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    lrelu_slope=0.1,
    audio_limit=0.99,
    f0_cond_channels=512,
    noise_seed=0,
    stream_left_context=None,
    stream_lookahead=None,
    stream_crossfade=0,
)


@dataclass
class HiFTStreamState(VocoderStreamState):
    """A HiFT stream: besides the mel window, ``source`` holds the excitation of frames [start, emitted) and
    ``phase`` the harmonic phase of frame emitted - 1 (carried so the sines continue across chunks)."""

    source: Tensor
    phase: Tensor

    def reset(self, items: Tensor | list[int]) -> None:
        super().reset(items)
        self.source, self.phase = self.source[:, :, :0], torch.zeros_like(self.phase)


class HiFTVocoder(Vocoder):
    """CosyVoice2 HiFT generator. Constructor arguments are the reference's (``istft_params`` flattened)."""

    alias = "hift"
    checkpoint_file = "hift.pt"
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "cosyvoice2-0.5b": COSYVOICE2_HIFT,
        "tiny": {**COSYVOICE2_HIFT, "base_channels": 32, "f0_cond_channels": 32},
    }

    def __init__(
        self,
        in_channels: int = 80,
        base_channels: int = 512,
        nb_harmonics: int = 8,
        sampling_rate: int = 24000,
        nsf_alpha: float = 0.1,
        nsf_sigma: float = 0.003,
        nsf_voiced_threshold: float = 10.0,
        upsample_rates: list[int] = (8, 5, 3),
        upsample_kernel_sizes: list[int] = (16, 11, 7),
        istft_n_fft: int = 16,
        istft_hop_len: int = 4,
        resblock_kernel_sizes: list[int] = (3, 7, 11),
        resblock_dilation_sizes: list[list[int]] = ((1, 3, 5), (1, 3, 5), (1, 3, 5)),
        source_resblock_kernel_sizes: list[int] = (7, 7, 11),
        source_resblock_dilation_sizes: list[list[int]] = ((1, 3, 5), (1, 3, 5), (1, 3, 5)),
        lrelu_slope: float = 0.1,
        audio_limit: float = 0.99,
        f0_cond_channels: int = 512,
        noise_seed: int = 0,
        stream_left_context: int | None = None,
        stream_lookahead: int | None = None,
        stream_crossfade: int = 0,
    ) -> None:
        super().__init__()
        if sampling_rate == 22050:
            raise ValueError(
                "sampling_rate 22050 selects the reference's SineGen (CosyVoice 1 HiFT), which is not implemented; "
                "CosyVoice2's HiFT runs at 24000 Hz"
            )
        if len(upsample_kernel_sizes) != len(upsample_rates) or len(source_resblock_kernel_sizes) != len(
            upsample_rates
        ):
            raise ValueError(
                "upsample_rates, upsample_kernel_sizes and source_resblock_kernel_sizes need one entry per "
                f"upsampler; got {len(upsample_rates)}, {len(upsample_kernel_sizes)}, "
                f"{len(source_resblock_kernel_sizes)}"
            )
        self.mel_bins = in_channels
        self.sampling_rate = sampling_rate
        self.n_fft, self.hop = istft_n_fft, istft_hop_len
        self.lrelu_slope, self.audio_limit = lrelu_slope, audio_limit
        self.upsample_rates = list(upsample_rates)
        self.upsample_kernel_sizes = list(upsample_kernel_sizes)
        self.resblock_config = [(k, list(d)) for k, d in zip(resblock_kernel_sizes, resblock_dilation_sizes)]
        self.source_resblock_config = [
            (k, list(d)) for k, d in zip(source_resblock_kernel_sizes, source_resblock_dilation_sizes)
        ]
        self.samples_per_frame = math.prod(upsample_rates) * istft_hop_len
        self.noise_seed = noise_seed

        self.f0_predictor = F0Predictor(in_channels, f0_cond_channels)
        self.m_source = HarmonicSource(
            sampling_rate, self.samples_per_frame, nb_harmonics, nsf_alpha, nsf_sigma, nsf_voiced_threshold
        )
        self.conv_pre = weight_norm(nn.Conv1d(in_channels, base_channels, 7, padding=3))
        self.ups = nn.ModuleList(
            weight_norm(
                nn.ConvTranspose1d(base_channels >> i, base_channels >> (i + 1), k, u, padding=(k - u) // 2)
            )
            for i, (u, k) in enumerate(zip(upsample_rates, upsample_kernel_sizes))
        )
        # The source STFT runs at the final rate; upsampler i sees it downsampled by the product of the later rates.
        spec_channels = istft_n_fft + 2
        self.source_downs = nn.ModuleList()
        for i in range(len(upsample_rates)):
            stride = math.prod(upsample_rates[i + 1 :])
            channels = base_channels >> (i + 1)
            self.source_downs.append(
                nn.Conv1d(spec_channels, channels, 1)
                if stride == 1
                else nn.Conv1d(spec_channels, channels, stride * 2, stride, padding=stride // 2)
            )
        self.source_resblocks = nn.ModuleList(
            ResBlock(base_channels >> (i + 1), k, d) for i, (k, d) in enumerate(self.source_resblock_config)
        )
        self.resblocks = nn.ModuleList(
            ResBlock(base_channels >> (i + 1), k, d)
            for i in range(len(upsample_rates))
            for k, d in self.resblock_config
        )
        self.conv_post = weight_norm(
            nn.Conv1d(base_channels >> len(upsample_rates), spec_channels, 7, padding=3)
        )
        window = torch.hann_window(istft_n_fft, periodic=True, dtype=torch.float64).float()
        self.register_buffer("stft_window", window, persistent=False)

        exact_left, exact_right = self.exact_context_frames()
        self.set_stream_window(
            exact_left if stream_left_context is None else stream_left_context,
            exact_right if stream_lookahead is None else stream_lookahead,
            stream_crossfade,
        )

    # ---- offline ------------------------------------------------------------------------------
    def excitation(self, f0: Tensor, draws: Tensor | None = None) -> Tensor:
        """f0 [B, T] -> source excitation [B, 1, T * 480]; ``draws`` overrides the positional noise."""
        if draws is None:
            draws = self._noise(0, f0.shape[1] * self.samples_per_frame, f0.device)
        return self.m_source(f0, draws)[0]

    def decode(self, mel: Tensor, source: Tensor) -> Tensor:
        """mel [B, C, T] + excitation [B, 1, T * 480] -> waveform [B, T * 480] (no randomness)."""
        spec = torch.stft(
            source.squeeze(1), self.n_fft, self.hop, self.n_fft, window=self.stft_window, return_complex=True
        )
        spec = torch.view_as_real(spec)
        source_spec = torch.cat([spec[..., 0], spec[..., 1]], dim=1)

        x = self.conv_pre(mel)
        kernels = len(self.resblock_config)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, self.lrelu_slope))
            if i == len(self.ups) - 1:
                x = F.pad(x, (1, 0), mode="reflect")
            x = x + self.source_resblocks[i](self.source_downs[i](source_spec))
            xs = self.resblocks[i * kernels](x)
            for j in range(1, kernels):
                xs += self.resblocks[i * kernels + j](x)
            x = xs / kernels
        x = self.conv_post(F.leaky_relu(x))  # the reference's last activation uses torch's default slope 0.01
        bins = self.n_fft // 2 + 1
        magnitude = torch.clip(torch.exp(x[:, :bins]), max=1e2)
        phase = torch.sin(x[:, bins:])
        spec = torch.complex(magnitude * torch.cos(phase), magnitude * torch.sin(phase))
        wav = torch.istft(spec, self.n_fft, self.hop, self.n_fft, window=self.stft_window)
        return torch.clamp(wav, -self.audio_limit, self.audio_limit)

    def forward(self, mel: Tensor, draws: Tensor | None = None) -> Tensor:
        """mel [B, in_channels, T] -> waveform [B, T * 480]."""
        self.check_mel(mel, offline=True)
        with parametrize.cached():
            f0 = self.f0_predictor(mel)
            return self.decode(mel, self.excitation(f0, draws))

    # ---- streaming ----------------------------------------------------------------------------
    def init_state(self, batch_size: int, options: None = None) -> HiFTStreamState:
        self._check_batch_size(batch_size)
        p = self.conv_pre.parametrizations.weight.original1
        return HiFTStreamState(
            batch_size=batch_size,
            mel=p.new_zeros(batch_size, self.mel_bins, 0),
            tail=p.new_zeros(batch_size, 0),
            source=p.new_zeros(batch_size, 1, 0),
            phase=p.new_zeros(batch_size, self.m_source.channels),
        )

    def synthesize_window(self, mel: Tensor, state: HiFTStreamState, end: int, new_start: int) -> Tensor:
        """Excitation of the new frames after the cached one (harmonic phase carried, noise by position)."""
        scale = self.samples_per_frame
        with parametrize.cached():
            f0 = self.f0_predictor(mel)[:, state.emitted - state.start :]
            draws = self._noise(state.emitted, f0.shape[1] * scale, mel.device)
            phase0 = state.phase if state.emitted > 0 else None
            new_source, _, phase = self.m_source(f0, draws, phase0)
            source = torch.cat([state.source, new_source], dim=2)
            wav = self.decode(mel, source)
        state.phase = phase[:, end - state.emitted - 1] % (2 * math.pi / scale)
        state.source = source[:, :, (new_start - state.start) * scale : (end - state.start) * scale]
        return wav

    def exact_context_frames(self) -> tuple[int, int]:
        """(left, right) mel frames of context after which a window's inner output equals the offline output.

        Sums, in frames, the one-sided reach of every layer on the trunk (conv_pre, upsamplers, ResBlocks,
        conv_post, iSTFT) and on the source path (STFT, source projections, and on the right also the F0
        predictor and phase interpolation: on the left, the excitation of emitted frames comes from the cache).
        """
        frames_per_sample = 1.0
        trunk = 3.0  # conv_pre, kernel 7
        upsampler_reach = []  # ResBlock reach after upsampler i, in frames
        for u, k in zip(self.upsample_rates, self.upsample_kernel_sizes):
            trunk += math.ceil(k / u) * frames_per_sample
            frames_per_sample /= u
            upsampler_reach.append(
                max(resblock_reach(k2, d) for k2, d in self.resblock_config) * frames_per_sample
            )
        # frames_per_sample is now per STFT frame; reflect pad 1 + conv_post 3 + iSTFT overlap n_fft / hop
        tail = (4 + self.n_fft // self.hop) * frames_per_sample
        trunk += sum(upsampler_reach) + tail
        source = 0.0
        for i, (k, d) in enumerate(self.source_resblock_config):
            down = self.source_downs[i]
            own = (
                self.n_fft / self.hop + down.kernel_size[0] + resblock_reach(k, d) * down.stride[0]
            ) * frames_per_sample
            later_ups = sum(
                math.ceil(k2 / u) / math.prod(self.upsample_rates[:j])
                for j, (u, k2) in enumerate(zip(self.upsample_rates, self.upsample_kernel_sizes))
                if j > i
            )
            source = max(source, own + sum(upsampler_reach[i:]) + later_ups + tail)
        f0 = F0Predictor.layers + 1  # conv stack, then the next frame's phase in the interpolation
        return math.ceil(max(trunk, source)) + 1, math.ceil(max(trunk, source + f0)) + 1

    # ---- checkpoints --------------------------------------------------------------------------
    def load_pretrained(self, path: str | Path) -> None:
        """Load the official ``hift.pt`` (a file, or the folder holding it), old or new weight-norm keys."""
        path = Path(path)
        if path.is_dir():
            if not (path / "hift.pt").is_file():
                found = ", ".join(sorted(p.name for p in path.iterdir())) or "nothing"
                raise FileNotFoundError(
                    f"{path} holds no hift.pt (the CosyVoice2 vocoder checkpoint); found: {found}"
                )
            path = path / "hift.pt"
        state_dict = read_state_dict(path)
        # Saved from the GAN wrapper, keys may carry a 'generator.' prefix; the reference loader strips it.
        state_dict = {k.replace("generator.", ""): v for k, v in state_dict.items()}
        load_state_dict_strict(self, upgrade_weight_norm_keys(state_dict), source=str(path))

    # ---- helpers ------------------------------------------------------------------------------
    def _noise(self, start_frame: int, length: int, device: torch.device) -> Tensor:
        start = start_frame * self.samples_per_frame
        return positional_normal(start, length, self.m_source.channels, self.noise_seed, device)
