"""S3Tokenizer v2 encoder and FSQ quantizer (the CosyVoice2 speech tokenizer).

Module and parameter names follow the official checkpoint (``encoder.blocks.N.attn.query``,
``quantizer._codebook.project_down``) so its state dict loads without renaming.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minmo_lightning.contracts import lengths_to_mask


def conv_output_lengths(lengths: Tensor) -> Tensor:
    """Frames after one kernel-3, stride-2, padding-1 convolution."""
    return torch.div(lengths - 1, 2, rounding_mode="floor") + 1


def rotate_half(x: Tensor) -> Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


class Rotary(nn.Module):
    """Rotary positions over a whole head (rotate-half layout, frequencies repeated for both halves)."""

    def __init__(self, head_dim: int, theta: float = 10000.0):
        super().__init__()
        inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2).float() / head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, length: int) -> tuple[Tensor, Tensor]:
        """``cos, sin`` of shape ``[length, head_dim]``."""
        angles = torch.outer(torch.arange(length, device=self.inv_freq.device).float(), self.inv_freq)
        angles = torch.cat((angles, angles), dim=-1)
        return angles.cos(), angles.sin()


class FSMNAttention(nn.Module):
    """Self-attention plus an FSMN memory: a depthwise convolution over the (masked) values."""

    def __init__(self, dim: int, n_heads: int, fsmn_kernel_size: int = 31):
        super().__init__()
        self.n_heads = n_heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        left = (fsmn_kernel_size - 1) // 2
        self.fsmn_padding = (left, fsmn_kernel_size - 1 - left)
        self.fsmn_block = nn.Conv1d(dim, dim, fsmn_kernel_size, groups=dim, bias=False)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor], pad: Tensor) -> Tensor:
        """``x`` [B, T, D]; ``pad`` [B, T, 1] float, 1 on valid frames."""
        batch, length, dim = x.shape
        q, k, v = (
            proj(x).view(batch, length, self.n_heads, -1).transpose(1, 2)
            for proj in (self.query, self.key, self.value)
        )
        cos, sin = rope
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        # Padded keys get no weight; every query row keeps at least one valid key.
        keep = pad[:, None, :, 0].bool()[:, :, None, :]
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
        attended = attended.transpose(1, 2).reshape(batch, length, dim)

        memory = v.transpose(1, 2).reshape(batch, length, dim) * pad
        memory = memory + self.fsmn_block(F.pad(memory.transpose(1, 2), self.fsmn_padding)).transpose(1, 2)
        return self.out(attended) + memory * pad


class EncoderLayer(nn.Module):
    """Pre-norm transformer layer: FSMN attention, then a 4x GELU MLP."""

    def __init__(self, dim: int, n_heads: int, fsmn_kernel_size: int, ln_eps: float):
        super().__init__()
        self.attn = FSMNAttention(dim, n_heads, fsmn_kernel_size)
        self.attn_ln = nn.LayerNorm(dim, eps=ln_eps)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.mlp_ln = nn.LayerNorm(dim, eps=ln_eps)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor], pad: Tensor) -> Tensor:
        x = x + self.attn(self.attn_ln(x), rope, pad)
        return x + self.mlp(self.mlp_ln(x))


class S3Encoder(nn.Module):
    """Log-mel ``[B, n_mels, T]`` -> hidden ``[B, ~T/4, dim]``: two stride-2 convs, then FSMN layers."""

    def __init__(
        self,
        n_mels: int,
        dim: int,
        n_heads: int,
        n_layers: int,
        fsmn_kernel_size: int,
        ln_eps: float,
        rope_theta: float,
    ):
        super().__init__()
        if dim % n_heads or (dim // n_heads) % 2:
            raise ValueError(f"dim {dim} must split into n_heads {n_heads} heads of an even size (rotary)")
        self.conv1 = nn.Conv1d(n_mels, dim, kernel_size=3, stride=2, padding=1)
        self.conv2 = nn.Conv1d(dim, dim, kernel_size=3, stride=2, padding=1)
        self.rotary = Rotary(dim // n_heads, rope_theta)
        self.blocks = nn.ModuleList(
            EncoderLayer(dim, n_heads, fsmn_kernel_size, ln_eps) for _ in range(n_layers)
        )

    def forward(self, mel: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        x = mel * lengths_to_mask(lengths, mel.shape[-1])[:, None, :]
        x = F.gelu(self.conv1(x))
        lengths = conv_output_lengths(lengths)
        x = x * lengths_to_mask(lengths, x.shape[-1])[:, None, :]
        x = F.gelu(self.conv2(x)).transpose(1, 2)
        lengths = conv_output_lengths(lengths)
        pad = lengths_to_mask(lengths, x.shape[1])[:, :, None].to(x.dtype)
        rope = self.rotary(x.shape[1])
        for layer in self.blocks:
            x = layer(x, rope, pad)
        return x, lengths


class _Codebook(nn.Module):
    """Holds ``project_down`` under the official checkpoint's name (``quantizer._codebook``)."""

    def __init__(self, dim: int, code_dim: int):
        super().__init__()
        self.project_down = nn.Linear(dim, code_dim)


class FSQuantizer(nn.Module):
    """Finite scalar quantisation: project to ``code_dim`` values, tanh, round to ``levels`` levels.

    With 3 levels each value lands on {-1, 0, 1}; the code is the base-3 number of the shifted digits
    (digit i weighted by 3**i), so 8 dims give 6561 codes.
    """

    #: the reference scales tanh by float32(0.999) so that |value| < 1 never rounds to +-1 at saturation.
    SCALE = 0.9990000128746033

    def __init__(self, dim: int, code_dim: int = 8, levels: int = 3):
        super().__init__()
        if levels != 3:
            raise ValueError(
                f"only 3 FSQ levels (round to -1/0/1, as S3Tokenizer v2) are supported, got {levels}"
            )
        self.levels, self.code_dim = levels, code_dim
        self._codebook = _Codebook(dim, code_dim)
        self.register_buffer("powers", levels ** torch.arange(code_dim), persistent=False)

    @property
    def codebook_size(self) -> int:
        return self.levels**self.code_dim

    def bounded(self, hidden: Tensor) -> Tensor:
        """Continuous codes in (-1, 1) before rounding."""
        return self._codebook.project_down(hidden).float().tanh() * self.SCALE

    @torch.no_grad()
    def calibrate(self, hidden: Tensor, target_std: float = 1.0) -> None:
        """Centre and scale ``project_down`` on real encoder states ``[N, dim]`` before training.

        The encoder's residual stream carries a large offset shared by all frames (there is no final
        norm); a random projection of it saturates tanh, every frame lands on the same code and the
        straight-through gradient vanishes (measured: perplexity ~1 within 20 steps). Centring on the
        mean state with unit spread per dimension starts all three levels in use.
        """
        weight, bias = self._codebook.project_down.weight, self._codebook.project_down.bias
        mean = hidden.float().mean(0)
        spread = ((hidden.float() - mean) @ weight.T).std(0).clamp(min=1e-6)
        weight.mul_((target_std / spread)[:, None])
        bias.copy_(-(weight @ mean))

    def saturation_penalty(self, hidden: Tensor, limit: float = 2.0) -> Tensor:
        """Mean squared excess of pre-activations beyond ``limit``: keeps tanh out of its flat tails."""
        return torch.relu(self._codebook.project_down(hidden).float().abs() - limit).pow(2).mean()

    def quantize(self, hidden: Tensor) -> Tensor:
        """Rounded codes in {-1, 0, 1}, with a straight-through gradient for training."""
        bounded = self.bounded(hidden)
        return bounded + (bounded.round() - bounded).detach()

    def encode(self, hidden: Tensor) -> Tensor:
        """``[..., dim]`` -> token ids ``[...]`` (long)."""
        digits = self.bounded(hidden).round().long() + 1
        return (digits * self.powers).sum(-1)

    def decode(self, tokens: Tensor) -> Tensor:
        """Token ids -> rounded codes in {-1, 0, 1} (the inverse of ``encode``)."""
        return (torch.div(tokens[..., None], self.powers, rounding_mode="floor") % self.levels).float() - 1
