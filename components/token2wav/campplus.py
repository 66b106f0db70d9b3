"""CAM++ (3D-Speaker's ``CAMPPlus``): the speaker encoder whose 192-d x-vector conditions CosyVoice2's flow.

A part of token2wav, not a slot of its own: its one consumer is the flow's ``spk_embed_affine_layer`` (through
``SpeakerPrompt.embedding``), MinMo's other blocks never see a speaker vector, and there is no second speaker
encoder to swap in, so a slot would be a contract with one implementation and one caller. It is a ``Block`` like
the flow (plain-data presets that ``minmo list`` counts as ``token2wav (campplus)``, strict ``load_pretrained``,
a recipe may name it), and ``CosyVoice2Token2Wav`` composes it by preset name (``speaker_encoder: campplus``).

    encoder = CAMPPlus.from_preset("campplus")
    encoder.load_pretrained("CosyVoice2-0.5B")       # campplus.onnx, or a campplus_cn_common.bin state dict
    xvector = encoder.embed(prompt_16k)               # AudioBatch at 16 kHz -> [B, 192], one row at a time

Frontend (CosyVoice2's ``_extract_spk_embedding``): torchaudio's Kaldi fbank of the waveform in [-1, 1] (80 bins,
dither 0, povey window, 25 ms / 10 ms, pre-emphasis 0.97, DC removal, ``snip_edges``, low_freq 20), minus its
mean over the utterance's frames. It is the SenseVoice frontend's ``KaldiFbank`` with the window and the input
scale set to torchaudio's defaults.

Architecture: an FCM head (2-D convs over [frequency, time]: a stem and two residual stages, each halving the
frequency axis, then a stride-(2, 1) conv; 32 channels, flattened to ``32 * feat_dim / 8`` features per frame),
a stride-2 TDNN, three densely connected TDNN blocks (12, 24, 16 layers; kernel 3; dilation 1, 2, 2) each
followed by a halving transition, and mean + standard deviation pooling into a bias-free linear map with a
non-affine batch norm. Every dense layer ends in a context-aware mask: a local conv gated by a sigmoid of the
utterance mean plus the mean of its 100-frame segment. Batch norms run on their running statistics (eval).
The model has no padding mask: ``embed`` runs each utterance alone, as CosyVoice2 does.

Loading: the PyTorch checkpoint strictly under the reference's key names, or the released ``campplus.onnx``
mapped back onto those keys by ``campplus_onnx.onnx_state_dict`` (its batch norms that follow a conv are folded
into the conv: they come back as a shift by the folded bias, the same embedding in eval mode).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from minmo_lightning.components.token2wav.campplus_onnx import onnx_state_dict
from minmo_lightning.components.voice_encoder.frontend import KaldiFbank
from torch import Tensor, nn

from minmo_lightning.blocks import Block
from minmo_lightning.checkpoints import checkpoint_file, load_state_dict_strict, read_state_dict
from minmo_lightning.contracts import AudioBatch, lengths_to_mask

SAMPLE_RATE = 16000
#: the released ``speech_campplus_sv_zh-cn_16k-common`` model (CosyVoice2's ``campplus.onnx``)
CAMPPLUS = {"feat_dim": 80, "embedding_size": 192, "growth_rate": 32, "bn_size": 4, "init_channels": 128}
#: the same structure with narrow channels; 192-d so that it plugs into any CosyVoice2 flow
TINY_CAMPPLUS = {**CAMPPLUS, "growth_rate": 8, "bn_size": 2, "init_channels": 32}
#: fixed by the reference: (layers, kernel, dilation) of the three dense blocks
DENSE_BLOCKS = ((12, 3, 1), (24, 3, 2), (16, 3, 2))
HEAD_CHANNELS = 32
SEGMENT_FRAMES = 100
#: files a model folder may hold, in the order ``load_pretrained`` looks for them
CHECKPOINT_FILES = ("campplus.onnx", "campplus_cn_common.bin")
#: fbank frames the encoder needs: the stride-2 TDNN must leave two frames for a standard deviation
MIN_FRAMES = 3


class NormReLU(nn.Module):
    """Batch norm (child ``batchnorm``, as in the checkpoint), then ReLU unless ``relu`` is False."""

    def __init__(self, channels: int, affine: bool = True, relu: bool = True) -> None:
        super().__init__()
        self.batchnorm = nn.BatchNorm1d(channels, affine=affine)
        self.relu = relu

    def forward(self, x: Tensor) -> Tensor:
        x = self.batchnorm(x)
        return F.relu(x) if self.relu else x


class ResidualBlock2d(nn.Module):
    """Two 3x3 convs with batch norms and a residual; ``stride`` halves the frequency axis only."""

    def __init__(self, channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, stride=(stride, 1), padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = nn.Sequential()
        if stride != 1:
            self.shortcut = nn.Sequential(
                nn.Conv2d(channels, channels, 1, stride=(stride, 1), bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + self.shortcut(x))


class FrequencyHead(nn.Module):
    """The FCM head: fbank [B, F, T] -> [B, 32 * F / 8, T] (frequency strides 2, 2, 2; time untouched)."""

    def __init__(self, feat_dim: int, channels: int = HEAD_CHANNELS) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.layer1 = nn.Sequential(ResidualBlock2d(channels, 2), ResidualBlock2d(channels, 1))
        self.layer2 = nn.Sequential(ResidualBlock2d(channels, 2), ResidualBlock2d(channels, 1))
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=(2, 1), padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.out_channels = channels * (feat_dim // 8)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x[:, None])))
        out = self.layer2(self.layer1(out))
        out = F.relu(self.bn2(self.conv2(out)))
        return out.flatten(1, 2)


class ConvNorm(nn.Module):
    """A bias-free conv (``linear``) then batch norm + ReLU (``nonlinear``): the TDNN stem and the output layer."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        affine: bool = True,
        relu: bool = True,
    ) -> None:
        super().__init__()
        padding = (kernel_size - 1) // 2
        self.linear = nn.Conv1d(in_channels, out_channels, kernel_size, stride, padding, bias=False)
        self.nonlinear = NormReLU(out_channels, affine=affine, relu=relu)

    def forward(self, x: Tensor) -> Tensor:
        return self.nonlinear(self.linear(x))


class NormConv(nn.Module):
    """Batch norm + ReLU (``nonlinear``) then a bias-free 1x1 conv (``linear``): the transition layers."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.nonlinear = NormReLU(in_channels)
        self.linear = nn.Conv1d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.nonlinear(x))


class ContextAwareMask(nn.Module):
    """A local dilated conv, gated per channel by a sigmoid of the utterance mean plus the frame's segment mean."""

    def __init__(self, channels: int, out_channels: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        padding = (kernel_size - 1) // 2 * dilation
        self.linear_local = nn.Conv1d(
            channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False
        )
        self.linear1 = nn.Conv1d(channels, channels // 2, 1)
        self.linear2 = nn.Conv1d(channels // 2, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        local = self.linear_local(x)
        context = x.mean(-1, keepdim=True) + segment_means(x, SEGMENT_FRAMES)
        gate = torch.sigmoid(self.linear2(F.relu(self.linear1(context))))
        return local * gate


def segment_means(x: Tensor, frames: int) -> Tensor:
    """Each frame's value replaced by the mean of its ``frames``-long segment (the last may be shorter)."""
    means = F.avg_pool1d(x, frames, frames, ceil_mode=True)
    return means[..., None].expand(*means.shape, frames).flatten(-2)[..., : x.shape[-1]]


class DenseTDNNLayer(nn.Module):
    """Pre-activation bottleneck (norm, 1x1 conv to ``bn_channels``, norm) into a context-aware mask."""

    def __init__(self, in_channels: int, growth_rate: int, bn_channels: int, kernel_size: int, dilation: int):
        super().__init__()
        self.nonlinear1 = NormReLU(in_channels)
        self.linear1 = nn.Conv1d(in_channels, bn_channels, 1, bias=False)
        self.nonlinear2 = NormReLU(bn_channels)
        self.cam_layer = ContextAwareMask(bn_channels, growth_rate, kernel_size, dilation)

    def forward(self, x: Tensor) -> Tensor:
        return self.cam_layer(self.nonlinear2(self.linear1(self.nonlinear1(x))))


class DenseTDNNBlock(nn.ModuleDict):
    """``tdnnd1..N``: each layer sees every earlier output (concatenated) and adds ``growth_rate`` channels."""

    def __init__(
        self, layers: int, in_channels: int, growth_rate: int, bn_channels: int, kernel: int, dilation: int
    ):
        super().__init__(
            {
                f"tdnnd{i + 1}": DenseTDNNLayer(
                    in_channels + i * growth_rate, growth_rate, bn_channels, kernel, dilation
                )
                for i in range(layers)
            }
        )

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.values():
            x = torch.cat([x, layer(x)], dim=1)
        return x


class DenseTDNN(nn.Module):
    """Head features [B, C, T] -> embedding [B, E]: TDNN stem, dense blocks with transitions, stats pooling."""

    def __init__(
        self, in_channels: int, embedding_size: int, growth_rate: int, bn_size: int, init_channels: int
    ):
        super().__init__()
        self.tdnn = ConvNorm(in_channels, init_channels, kernel_size=5, stride=2)
        channels = init_channels
        for i, (layers, kernel, dilation) in enumerate(DENSE_BLOCKS, start=1):
            block = DenseTDNNBlock(layers, channels, growth_rate, bn_size * growth_rate, kernel, dilation)
            channels += layers * growth_rate
            self.add_module(f"block{i}", block)
            self.add_module(f"transit{i}", NormConv(channels, channels // 2))
            channels //= 2
        self.out_nonlinear = NormReLU(channels)
        self.dense = ConvNorm(2 * channels, embedding_size, affine=False, relu=False)

    def forward(self, x: Tensor) -> Tensor:
        x = self.tdnn(x)
        for i in range(1, len(DENSE_BLOCKS) + 1):
            x = getattr(self, f"transit{i}")(getattr(self, f"block{i}")(x))
        x = self.out_nonlinear(x)
        stats = torch.cat([x.mean(-1), x.std(-1)], dim=-1)
        return self.dense(stats[..., None])[..., 0]


class CAMPPlus(Block):
    """CAM++ speaker encoder: mean-normalised 80-bin fbank [B, T, feat_dim] -> x-vector [B, embedding_size]."""

    presets: ClassVar[dict[str, dict[str, Any]]] = {"campplus": CAMPPLUS, "tiny": TINY_CAMPPLUS}

    def __init__(
        self,
        feat_dim: int = 80,
        embedding_size: int = 192,
        growth_rate: int = 32,
        bn_size: int = 4,
        init_channels: int = 128,
    ) -> None:
        """The reference's constructor arguments (defaults: the released 192-d model); ``feat_dim`` fbank bins,
        a multiple of 8 (the head halves the frequency axis three times)."""
        super().__init__()
        self.save_hyperparameters()
        if feat_dim % 8:
            raise ValueError(f"feat_dim must be a multiple of 8 (the head divides it by 8), got {feat_dim}")
        self.feat_dim, self.embedding_size = feat_dim, embedding_size
        self.head = FrequencyHead(feat_dim)
        self.xvector = DenseTDNN(self.head.out_channels, embedding_size, growth_rate, bn_size, init_channels)

    def forward(self, feats: Tensor) -> Tensor:
        """Features [B, T, feat_dim] (no padding: every row is T frames of speech) -> embeddings [B, E]."""
        if feats.dim() != 3 or feats.shape[2] != self.feat_dim:
            raise ValueError(
                f"CAM++ features must be [batch, frames, {self.feat_dim}], got {tuple(feats.shape)}"
            )
        if feats.shape[1] < MIN_FRAMES:
            raise ValueError(f"CAM++ needs at least {MIN_FRAMES} frames, got {feats.shape[1]}")
        return self.xvector(self.head(feats.transpose(1, 2)))

    # ---- from audio ----------------------------------------------------------------------------
    def features(self, audio: AudioBatch) -> tuple[Tensor, Tensor]:
        """16 kHz audio -> (mean-normalised Kaldi fbank [B, T, feat_dim], zero after each row's frames; frames [B])."""
        audio.require(SAMPLE_RATE, who="CAM++")
        device = audio.waveform.device
        # built per call: its constant buffers stay out of the state dict and off the meta device
        fbank = KaldiFbank(SAMPLE_RATE, self.feat_dim, window_type="povey", input_scale=1.0).to(device)
        feats, frames = fbank(audio.waveform, audio.lengths.to(device))
        short = (frames < MIN_FRAMES).nonzero().flatten().tolist()
        if short:
            seconds = (fbank.window_size + (MIN_FRAMES - 1) * fbank.shift) / SAMPLE_RATE
            raise ValueError(
                f"CAM++: prompt audio row(s) {short} are shorter than {seconds:g} s ({MIN_FRAMES} fbank frames); "
                "give a longer speaker prompt (a few seconds of speech)"
            )
        valid = lengths_to_mask(frames, feats.shape[1])[..., None]
        mean = feats.sum(1, keepdim=True) / frames[:, None, None]
        return (feats - mean) * valid, frames

    def embed(self, audio: AudioBatch) -> Tensor:
        """16 kHz prompt audio -> x-vectors [B, embedding_size], each row on its own frames (no padding mask)."""
        feats, frames = self.features(audio)
        parameter = next(self.parameters())
        feats = feats.to(parameter.device, parameter.dtype)
        return torch.cat([self(feats[row : row + 1, :n]) for row, n in enumerate(frames.tolist())])

    # ---- checkpoints ---------------------------------------------------------------------------
    def load_pretrained(self, path: str | Path) -> None:
        """``campplus.onnx`` (CosyVoice2's), a PyTorch state dict (``.bin``/``.pt``/``.safetensors``), or a folder
        holding one of ``CHECKPOINT_FILES``."""
        path = checkpoint_file(path, CHECKPOINT_FILES, "CAM++")
        if path.suffix == ".onnx":
            parameter = next(self.parameters())
            example = parameter.new_zeros(1, 2 * MIN_FRAMES, self.feat_dim)
            state = onnx_state_dict(self, path, example)
        else:
            state = read_state_dict(path)
        load_state_dict_strict(self, state, source=str(path))
