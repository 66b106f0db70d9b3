"""CosyVoice2's token encoder: ``UpsampleConformerEncoder`` (25 Hz tokens -> 50 Hz frames).

linear embed -> pre-lookahead convs (each token reads the next ``pre_lookahead_len`` tokens) -> ``num_layers``
Conformer layers (relative-position self-attention + FFN; no conv module, no macaron) -> nearest x2
upsampling with a causal conv -> a second linear embed -> ``num_up_layers`` Conformer layers -> LayerNorm.
Module names follow the reference so the ``encoder.*`` keys of ``flow.pt`` load as they are.

Attention takes a boolean mask and relative positions only, so a chunk attends to a cached window of keys
exactly as the offline mask allows; the causal convs carry their left frames between chunks.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from minmo_lightning.components.token2wav.flow_cache import StreamCache, name_cache_keys
from torch import Tensor, nn


def relative_sinusoids(positions: Tensor, dim: int) -> Tensor:
    """``[R] -> [R, dim]``: sin/cos interleaved at relative position r (ESPnet's ``rel_pos_espnet`` table)."""
    freq = torch.exp(
        torch.arange(0, dim, 2, dtype=torch.float32, device=positions.device) * -(math.log(10000.0) / dim)
    )
    angle = positions.float()[:, None] * freq[None, :]
    return torch.stack([angle.sin(), angle.cos()], dim=-1).flatten(1)


class LinearEmbed(nn.Module):
    """Linear -> LayerNorm -> dropout, scaled by sqrt(dim) (``LinearNoSubsampling`` + ``EspnetRelPositionalEncoding``)."""

    def __init__(self, in_dim: int, dim: int, dropout: float, positional_dropout: float) -> None:
        super().__init__()
        self.out = nn.Sequential(nn.Linear(in_dim, dim), nn.LayerNorm(dim, eps=1e-5), nn.Dropout(dropout))
        self.xscale = math.sqrt(dim)
        self.dropout = nn.Dropout(positional_dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.out(x) * self.xscale)


class RelPositionAttention(nn.Module):
    """Transformer-XL style self-attention: content score (q+u)k plus position score (q+v)W_pos pe(i-j)."""

    def __init__(self, heads: int, dim: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        self.heads, self.head_dim, self.dropout = heads, dim // heads, dropout
        self.linear_q = nn.Linear(dim, dim)
        self.linear_k = nn.Linear(dim, dim)
        self.linear_v = nn.Linear(dim, dim)
        self.linear_out = nn.Linear(dim, dim)
        self.linear_pos = nn.Linear(dim, dim, bias=False)
        self.pos_bias_u = nn.Parameter(torch.empty(heads, self.head_dim))
        self.pos_bias_v = nn.Parameter(torch.empty(heads, self.head_dim))
        nn.init.xavier_uniform_(self.pos_bias_u)
        nn.init.xavier_uniform_(self.pos_bias_v)
        self.cache_key = ""

    def _heads(self, x: Tensor) -> Tensor:
        return x.view(x.shape[0], x.shape[1], self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: Tensor, mask: Tensor, cache: StreamCache | None) -> Tensor:
        batch, length, dim = x.shape
        q, k, v = self._heads(self.linear_q(x)), self._heads(self.linear_k(x)), self._heads(self.linear_v(x))
        if cache is not None:
            k = cache.extend(self.cache_key + ".k", k, cache.window)
            v = cache.extend(self.cache_key + ".v", v, cache.window)
        offset = k.shape[2] - length  # cached keys precede the queries
        # relative positions i - j run from -(length - 1) (last key, first query) to length - 1 + offset
        positions = torch.arange(-(length - 1), length + offset, device=x.device)
        pos = self.linear_pos(relative_sinusoids(positions, dim).to(x.dtype))
        pos = pos.view(-1, self.heads, self.head_dim).transpose(0, 1)  # [H, R, d]
        position_scores = torch.matmul(q + self.pos_bias_v[:, None], pos.transpose(-2, -1))  # [B, H, T, R]
        query = torch.arange(length, device=x.device)[:, None]
        key = torch.arange(k.shape[2], device=x.device)[None, :]
        index = (query + offset - key + length - 1).expand(batch, self.heads, -1, -1)
        bias = torch.gather(position_scores, -1, index) / math.sqrt(self.head_dim)
        bias = bias.masked_fill(~mask[:, None], float("-inf"))
        out = F.scaled_dot_product_attention(
            q + self.pos_bias_u[:, None],
            k,
            v,
            attn_mask=bias,
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.linear_out(out.transpose(1, 2).reshape(batch, length, dim))


class FeedForward(nn.Module):
    """Position-wise FFN with SiLU (``PositionwiseFeedForward`` with swish)."""

    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.w_1 = nn.Linear(dim, hidden)
        self.dropout = nn.Dropout(dropout)
        self.w_2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.w_2(self.dropout(F.silu(self.w_1(x))))


class ConformerLayer(nn.Module):
    """Pre-norm attention and FFN blocks (``ConformerEncoderLayer`` without conv module or macaron FFN)."""

    def __init__(self, dim: int, heads: int, hidden: int, dropout: float, attention_dropout: float) -> None:
        super().__init__()
        self.self_attn = RelPositionAttention(heads, dim, attention_dropout)
        self.feed_forward = FeedForward(dim, hidden, dropout)
        self.norm_ff = nn.LayerNorm(dim, eps=1e-12)
        self.norm_mha = nn.LayerNorm(dim, eps=1e-12)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor, cache: StreamCache | None) -> Tensor:
        x = x + self.dropout(self.self_attn(self.norm_mha(x), mask, cache))
        return x + self.dropout(self.feed_forward(self.norm_ff(x)))


class PreLookaheadLayer(nn.Module):
    """Each token mixes in the next ``lookahead`` tokens (conv1), then two previous ones (causal conv2); residual."""

    def __init__(self, dim: int, lookahead: int) -> None:
        super().__init__()
        self.lookahead = lookahead
        self.conv1 = nn.Conv1d(dim, dim, lookahead + 1)
        self.conv2 = nn.Conv1d(dim, dim, 3)
        self.cache_key = ""

    def forward(self, x: Tensor, cache: StreamCache | None) -> Tensor:
        """``x`` [B, T + lookahead, D]: the tokens and, after them, their look-ahead (zeros where there is none)."""
        h = F.leaky_relu(self.conv1(x.transpose(1, 2)))
        h = cache.extend(self.cache_key, h, 2) if cache is not None else F.pad(h, (2, 0))
        return self.conv2(h).transpose(1, 2) + x[:, : x.shape[1] - self.lookahead]


class Upsample1D(nn.Module):
    """Nearest-neighbour x``stride`` then a causal conv of kernel 2*stride+1."""

    def __init__(self, dim: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv1d(dim, dim, 2 * stride + 1)
        self.cache_key = ""

    def forward(self, x: Tensor, cache: StreamCache | None) -> Tensor:
        """[B, T, D] -> [B, stride*T, D]."""
        h = x.transpose(1, 2).repeat_interleave(self.stride, dim=2)
        left = 2 * self.stride
        h = cache.extend(self.cache_key, h, left) if cache is not None else F.pad(h, (left, 0))
        return self.conv(h).transpose(1, 2)


class UpsampleConformerEncoder(nn.Module):
    """Token embeddings [B, T, input_size] -> frame features [B, 2T, output_size] (reference argument names)."""

    def __init__(
        self,
        input_size: int,
        output_size: int,
        attention_heads: int,
        linear_units: int,
        num_layers: int,
        num_up_layers: int = 4,
        pre_lookahead_len: int = 3,
        upsample_stride: int = 2,
        dropout_rate: float = 0.1,
        positional_dropout_rate: float = 0.1,
        attention_dropout_rate: float = 0.1,
    ) -> None:
        super().__init__()
        if input_size != output_size:
            raise ValueError(
                f"the pre-lookahead residual and up_embed need input_size == output_size; got {input_size} "
                f"and {output_size} (CosyVoice2 uses 512 for both)"
            )
        self.upsample_stride = upsample_stride

        def layers(count: int) -> nn.ModuleList:
            return nn.ModuleList(
                ConformerLayer(
                    output_size, attention_heads, linear_units, dropout_rate, attention_dropout_rate
                )
                for _ in range(count)
            )

        self.embed = LinearEmbed(input_size, output_size, dropout_rate, positional_dropout_rate)
        self.pre_lookahead_layer = PreLookaheadLayer(output_size, pre_lookahead_len)
        self.encoders = layers(num_layers)
        self.up_layer = Upsample1D(output_size, upsample_stride)
        self.up_embed = LinearEmbed(input_size, output_size, dropout_rate, positional_dropout_rate)
        self.up_encoders = layers(num_up_layers)
        self.after_norm = nn.LayerNorm(output_size, eps=1e-5)
        name_cache_keys(self)

    @property
    def lookahead(self) -> int:
        return self.pre_lookahead_layer.lookahead

    def forward(
        self,
        tokens: Tensor,
        present: Tensor,
        token_mask: Tensor,
        frame_mask: Tensor,
        token_cache: StreamCache | None = None,
        frame_cache: StreamCache | None = None,
    ) -> Tensor:
        """Encode ``tokens`` [B, T + lookahead, D] (token embeddings: T tokens, then their look-ahead).

        ``present`` [B, T + lookahead] marks real tokens: the others (no look-ahead yet at the end of a
        stream) enter the look-ahead conv as zeros, like the reference's padding. ``token_mask`` [B, T, Tk] /
        ``frame_mask`` [B, 2T, Tk'] are the attention masks of the two stacks (chunk masks offline, window
        masks with the caches in streaming). Returns [B, 2T, D].
        """
        x = self.embed(tokens) * present[:, :, None].to(tokens.dtype)
        x = self.pre_lookahead_layer(x, token_cache)
        for layer in self.encoders:
            x = layer(x, token_mask, token_cache)
        x = self.up_embed(self.up_layer(x, frame_cache))
        for layer in self.up_encoders:
            x = layer(x, frame_mask, frame_cache)
        return self.after_norm(x)
