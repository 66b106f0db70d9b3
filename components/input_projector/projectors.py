"""Input projectors: encoder frames -> LLM-width embeddings with ``downsample``x fewer frames.

``TransformerConvProjector`` is MinMo's ("2 Transformer layers and 1 CNN layer ... 2x downsampling",
~170M). The paper gives no internal width; we chose 2048 (16 heads, FFN 8192) and a kernel-9 stride-2
Conv1d into the LLM width, which lands at ~169M for Whisper-large-v3 (1280) -> Qwen2.5-7B (3584).
``LinearProjector`` (frame stacking + MLP, SLAM-LLM style) and ``ConvProjector`` are ablations.
"""

from __future__ import annotations

from torch import Tensor, nn

from minmo_lightning.blocks import InputProjector
from minmo_lightning.contracts import SequenceBatch


def _zero_padding(x: Tensor, mask: Tensor) -> Tensor:
    return x * mask[..., None].to(x.dtype)


def _centred_strided_conv(input_dim: int, output_dim: int, kernel_size: int, stride: int) -> nn.Conv1d:
    """Conv1d whose output frame k is centred on input frame k * stride: ceil(T / stride) frames out."""
    if kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd so frames stay centred, got {kernel_size}")
    return nn.Conv1d(input_dim, output_dim, kernel_size, stride=stride, padding=(kernel_size - 1) // 2)


class TransformerConvProjector(InputProjector):
    """Linear in -> N pre-norm Transformer layers -> strided Conv1d to the LLM width."""

    presets = {
        "whisper-large-v3-to-qwen2.5-7b": {
            "input_dim": 1280,
            "output_dim": 3584,
            "hidden_dim": 2048,
            "num_layers": 2,
            "num_heads": 16,
            "ffn_dim": 8192,
            "kernel_size": 9,
            "downsample": 2,
            "dropout": 0.1,
        },
        "sensevoice-small-to-qwen2.5-7b": {
            "input_dim": 512,
            "output_dim": 3584,
            "hidden_dim": 2048,
            "num_layers": 2,
            "num_heads": 16,
            "ffn_dim": 8192,
            "kernel_size": 9,
            "downsample": 2,
            "dropout": 0.1,
        },
        "tiny": {
            "input_dim": 32,
            "output_dim": 64,
            "hidden_dim": 32,
            "num_layers": 2,
            "num_heads": 2,
            "ffn_dim": 64,
            "kernel_size": 3,
            "downsample": 2,
            "dropout": 0.0,
        },
    }

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        hidden_dim: int = 2048,
        num_layers: int = 2,
        num_heads: int = 16,
        ffn_dim: int = 8192,
        kernel_size: int = 9,
        downsample: int = 2,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.input_dim, self.output_dim, self.downsample = input_dim, output_dim, downsample
        self.input_proj = nn.Linear(input_dim, hidden_dim) if input_dim != hidden_dim else nn.Identity()
        layer = nn.TransformerEncoderLayer(
            hidden_dim, num_heads, ffn_dim, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.layers = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden_dim)
        self.conv = _centred_strided_conv(hidden_dim, output_dim, kernel_size, downsample)

    def shard_units(self) -> list[nn.Module]:
        """Each Transformer layer is an FSDP2 unit (``sharding.py``)."""
        return list(self.layers.layers)

    def forward(self, features: SequenceBatch) -> SequenceBatch:
        mask = features.mask
        x = self.layers(self.input_proj(features.values), src_key_padding_mask=~mask)
        x = _zero_padding(self.norm(x), mask)
        y = self.conv(x.transpose(1, 2)).transpose(1, 2)
        return SequenceBatch(y, self.output_lengths(features.lengths))


class LinearProjector(InputProjector):
    """Stack ``downsample`` adjacent frames, then a 2-layer MLP (ablation: no context mixing)."""

    presets = {
        "whisper-large-v3-to-qwen2.5-7b": {
            "input_dim": 1280,
            "output_dim": 3584,
            "hidden_dim": 3584,
            "downsample": 2,
        },
        "tiny": {"input_dim": 32, "output_dim": 64, "hidden_dim": 64, "downsample": 2},
    }

    def __init__(self, input_dim: int, output_dim: int, hidden_dim: int = 3584, downsample: int = 2) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.input_dim, self.output_dim, self.downsample = input_dim, output_dim, downsample
        self.mlp = nn.Sequential(
            nn.Linear(input_dim * downsample, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, output_dim)
        )

    def forward(self, features: SequenceBatch) -> SequenceBatch:
        x = _zero_padding(features.values, features.mask)
        batch, frames, dim = x.shape
        pad = (-frames) % self.downsample
        x = nn.functional.pad(x, (0, 0, 0, pad)).reshape(
            batch, (frames + pad) // self.downsample, dim * self.downsample
        )
        return SequenceBatch(self.mlp(x), self.output_lengths(features.lengths))


class ConvProjector(InputProjector):
    """Strided Conv1d + GELU + Linear (ablation: local context only, no attention)."""

    presets = {
        "whisper-large-v3-to-qwen2.5-7b": {
            "input_dim": 1280,
            "output_dim": 3584,
            "kernel_size": 5,
            "downsample": 2,
        },
        "tiny": {"input_dim": 32, "output_dim": 64, "kernel_size": 3, "downsample": 2},
    }

    def __init__(self, input_dim: int, output_dim: int, kernel_size: int = 5, downsample: int = 2) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.input_dim, self.output_dim, self.downsample = input_dim, output_dim, downsample
        self.conv = _centred_strided_conv(input_dim, output_dim, kernel_size, downsample)
        self.out = nn.Sequential(nn.GELU(), nn.Linear(output_dim, output_dim))

    def forward(self, features: SequenceBatch) -> SequenceBatch:
        x = _zero_padding(features.values, features.mask)
        y = self.out(self.conv(x.transpose(1, 2)).transpose(1, 2))
        return SequenceBatch(y, self.output_lengths(features.lengths))
