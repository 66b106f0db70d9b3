"""CosyVoice2's flow-matching estimator: ``CausalConditionalDecoder``, a causal 1-D U-Net with transformers.

Input channels are [x ; mu ; speaker ; prompt-mel condition] stacked (4 x 80 = 320 at full size). One
resolution level (CosyVoice2 uses ``channels=[256]``): a down block, ``num_mid_blocks`` mid blocks and an up
block, each a causal ResNet block followed by ``n_blocks`` transformer blocks; then a final causal block
and a 1x1 projection. Module and parameter names follow the reference so ``flow.pt`` loads as is.

Every convolution is causal (kernel 3, two frames of left padding) and attention takes a boolean mask, so
the same module runs offline (``cache=None``, a chunk mask) and chunk by chunk (a ``StreamCache`` holding
the last two input frames of each convolution and the keys/values of the attention window).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from minmo_lightning.components.token2wav.flow_cache import StreamCache, name_cache_keys
from torch import Tensor, nn


class CausalConv1d(nn.Conv1d):
    """Conv1d padded on the left only; in streaming the padding is the previous chunk's last frames."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size)
        self.cache_key = ""

    def forward(self, x: Tensor, cache: StreamCache | None = None) -> Tensor:
        left = self.kernel_size[0] - 1
        if cache is None:
            return super().forward(F.pad(x, (left, 0)))
        return super().forward(cache.extend(self.cache_key, x, left))


class CausalBlock1D(nn.Module):
    """Causal conv -> LayerNorm over channels -> Mish, on masked input."""

    def __init__(self, dim: int, dim_out: int) -> None:
        super().__init__()
        # The reference's Sequential holds Transpose at 1 and Mish at 3; only these two carry weights.
        self.block = nn.ModuleDict({"0": CausalConv1d(dim, dim_out, 3), "2": nn.LayerNorm(dim_out)})

    def forward(self, x: Tensor, mask: Tensor, cache: StreamCache | None) -> Tensor:
        h = self.block["0"](x * mask, cache)
        h = F.mish(self.block["2"](h.transpose(1, 2)).transpose(1, 2))
        return h * mask


class CausalResnetBlock1D(nn.Module):
    """Two causal blocks with the time embedding added in between, plus a 1x1 residual projection."""

    def __init__(self, dim: int, dim_out: int, time_emb_dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Mish(), nn.Linear(time_emb_dim, dim_out))
        self.block1 = CausalBlock1D(dim, dim_out)
        self.block2 = CausalBlock1D(dim_out, dim_out)
        self.res_conv = nn.Conv1d(dim, dim_out, 1)

    def forward(self, x: Tensor, mask: Tensor, time_emb: Tensor, cache: StreamCache | None) -> Tensor:
        h = self.block1(x, mask, cache) + self.mlp(time_emb).unsqueeze(-1)
        h = self.block2(h, mask, cache)
        return h + self.res_conv(x * mask)


class Attention(nn.Module):
    """Multi-head self-attention (diffusers ``Attention`` layout: bias-free q/k/v, biased output)."""

    def __init__(self, dim: int, heads: int, head_dim: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.head_dim, self.dropout = heads, head_dim, dropout
        inner = heads * head_dim
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim), nn.Dropout(dropout)])
        self.cache_key = ""

    def _heads(self, x: Tensor) -> Tensor:
        return x.view(x.shape[0], x.shape[1], self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: Tensor, mask: Tensor, cache: StreamCache | None) -> Tensor:
        q, k, v = self._heads(self.to_q(x)), self._heads(self.to_k(x)), self._heads(self.to_v(x))
        if cache is not None:
            k = cache.extend(self.cache_key + ".k", k, cache.window)
            v = cache.extend(self.cache_key + ".v", v, cache.window)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask[:, None], dropout_p=self.dropout if self.training else 0.0
        )
        out = out.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)
        return self.to_out[1](self.to_out[0](out))


class GELUProjection(nn.Module):
    """Linear then exact GELU (diffusers ``GELU`` activation module)."""

    def __init__(self, dim: int, dim_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, dim_out)

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(self.proj(x))


class FeedForward(nn.Module):
    """GELU projection -> dropout -> linear, width x4 (keys ``net.0.proj``, ``net.2``)."""

    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.ModuleList([GELUProjection(dim, 4 * dim), nn.Dropout(dropout), nn.Linear(4 * dim, dim)])

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class TransformerBlock(nn.Module):
    """Pre-norm self-attention and GELU feed-forward (Matcha-TTS ``BasicTransformerBlock`` as configured)."""

    def __init__(self, dim: int, heads: int, head_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads, head_dim, dropout)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, dropout)

    def forward(self, x: Tensor, mask: Tensor, cache: StreamCache | None) -> Tensor:
        x = x + self.attn1(self.norm1(x), mask, cache)
        return x + self.ff(self.norm3(x))


class TimestepEmbedding(nn.Module):
    """Linear -> SiLU -> Linear on the sinusoidal flow-time embedding."""

    def __init__(self, in_channels: int, dim: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_channels, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


def sinusoidal_time(t: Tensor, dim: int, scale: float = 1000.0) -> Tensor:
    """``[B] -> [B, dim]``: sin then cos of ``scale * t`` at geometric frequencies (Matcha ``SinusoidalPosEmb``)."""
    half = dim // 2
    freq = torch.exp(torch.arange(half, device=t.device).float() * -(math.log(10000) / (half - 1)))
    angle = scale * t.reshape(-1, 1) * freq[None, :]
    return torch.cat([angle.sin(), angle.cos()], dim=-1)


class ConditionalDecoderStack(nn.ModuleList):
    """[resnet, transformer blocks(, causal conv)] as the reference's nested ModuleList (keys ``N.0``, ``N.1.M``, ``N.2``)."""

    def __init__(self, resnet: nn.Module, transformers: nn.ModuleList, conv: nn.Module | None = None) -> None:
        super().__init__([resnet, transformers] + ([conv] if conv is not None else []))

    def forward(
        self, x: Tensor, mask: Tensor, time_emb: Tensor, attn_mask: Tensor, cache: StreamCache | None
    ):
        x = self[0](x, mask, time_emb, cache).transpose(1, 2)
        for block in self[1]:
            x = block(x, attn_mask, cache)
        return x.transpose(1, 2)


class CausalConditionalDecoder(nn.Module):
    """The CFM vector-field estimator ``v(x, mask, mu, t, spks, cond)`` (reference argument names)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        channels: list[int],
        attention_head_dim: int,
        n_blocks: int,
        num_mid_blocks: int,
        num_heads: int,
        dropout: float = 0.0,
        act_fn: str = "gelu",
    ) -> None:
        super().__init__()
        if len(channels) != 1:
            raise ValueError(
                f"CausalConditionalDecoder supports one resolution level (CosyVoice2 uses channels=[256]); "
                f"got channels={channels}"
            )
        if act_fn != "gelu":
            raise ValueError(f"CosyVoice2's estimator uses act_fn='gelu'; got {act_fn!r}")
        width = channels[0]
        self.in_channels, self.out_channels = in_channels, out_channels
        time_dim = 4 * width
        self.time_mlp = TimestepEmbedding(in_channels, time_dim)

        def decoder_stack(dim_in: int, with_conv: bool) -> ConditionalDecoderStack:
            blocks = nn.ModuleList(
                TransformerBlock(width, num_heads, attention_head_dim, dropout) for _ in range(n_blocks)
            )
            conv = CausalConv1d(width, width, 3) if with_conv else None
            return ConditionalDecoderStack(CausalResnetBlock1D(dim_in, width, time_dim), blocks, conv)

        self.down_blocks = nn.ModuleList([decoder_stack(in_channels, True)])
        self.mid_blocks = nn.ModuleList(decoder_stack(width, False) for _ in range(num_mid_blocks))
        self.up_blocks = nn.ModuleList([decoder_stack(2 * width, True)])
        self.final_block = CausalBlock1D(width, width)
        self.final_proj = nn.Conv1d(width, out_channels, 1)
        name_cache_keys(self)

    def forward(
        self,
        x: Tensor,
        mask: Tensor,
        mu: Tensor,
        t: Tensor,
        spks: Tensor,
        cond: Tensor,
        attn_mask: Tensor,
        cache: StreamCache | None = None,
    ) -> Tensor:
        """x, mu, cond [B, C, T]; mask [B, 1, T] float; t [B]; spks [B, C]; attn_mask [B, T, Tkeys] bool."""
        time_emb = self.time_mlp(sinusoidal_time(t, self.in_channels).to(t.dtype))
        h = torch.cat([x, mu, spks[:, :, None].expand(-1, -1, x.shape[-1]), cond], dim=1)

        down = self.down_blocks[0]
        skip = down(h, mask, time_emb, attn_mask, cache)
        h = down[2](skip * mask, cache)
        for mid in self.mid_blocks:
            h = mid(h, mask, time_emb, attn_mask, cache)
        up = self.up_blocks[0]
        h = up(torch.cat([h, skip], dim=1), mask, time_emb, attn_mask, cache)
        h = up[2](h * mask, cache)
        h = self.final_block(h, mask, cache)
        return self.final_proj(h * mask) * mask
