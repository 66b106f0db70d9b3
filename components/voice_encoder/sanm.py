"""SAN-M encoder (SenseVoice): self-attention with an FSMN memory block, pre-norm, no subsampling.

Module and parameter names follow funasr's ``SenseVoiceEncoderSmall`` so official state dicts load as they
are: ``encoders0`` (one layer, input width -> model width, no residual around attention), ``encoders``,
``after_norm``, ``tp_encoders``, ``tp_norm``. A SAN-M layer computes ``att(LN(x)) + fsmn(v)`` where the FSMN is a
depthwise conv (kernel 11, no bias) over the attention values ``v``, plus ``v`` itself.

Three ways to run it, all with the same weights:

- ``forward(x, lengths)``: full context (the reference function).
- ``forward(x, lengths, chunks=ChunkLayout(...))``: what streaming computes, offline. Frames are cut into
  chunks; a frame attends to its own chunk and at most ``left`` frames before it, and the FSMN sees the
  true past but zeros past its chunk's end (the future has not arrived yet).
- ``step(x, positions, cache)``: one chunk at a time with a bounded per-layer key/value cache; it equals
  the chunked ``forward`` exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minmo_lightning.activation_checkpointing import call_layer
from minmo_lightning.contracts import lengths_to_mask


def sinusoidal_encoding(positions: Tensor, depth: int) -> Tensor:
    """funasr's ``SinusoidalPositionEncoder``: ``[..., T]`` positions (1-based) -> ``[..., T, depth]``.

    Timescale increment ``ln(1e4) / (depth/2 - 1)``; the first half is sine, the second cosine.
    """
    increment = math.log(10000.0) / (depth / 2 - 1)
    inv_timescales = torch.exp(torch.arange(depth // 2, device=positions.device).float() * -increment)
    scaled = positions.float()[..., None] * inv_timescales
    return torch.cat([torch.sin(scaled), torch.cos(scaled)], dim=-1)


@dataclass(frozen=True)
class ChunkLayout:
    """Chunk boundaries for chunked (streaming-equivalent) inference.

    ``first`` frames form chunk 0 (the query frames), then chunks of ``size`` frames; a frame attends
    back at most ``left`` frames before its chunk starts.
    """

    first: int
    size: int
    left: int

    def masks(self, length: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """``[T, T]`` bool attention mask (True = may attend) and ``[T]`` exclusive chunk ends."""
        t = torch.arange(length, device=device)
        chunk = torch.where(
            t < self.first, 0, 1 + torch.div(t - self.first, self.size, rounding_mode="floor")
        )
        start = torch.where(chunk == 0, 0, self.first + (chunk - 1) * self.size)
        end = torch.where(chunk == 0, self.first, start + self.size).clamp(max=length)
        keys = t[None, :]
        allowed = (keys < end[:, None]) & (keys >= (start - self.left)[:, None])
        return allowed, end


class FeedForward(nn.Module):
    def __init__(self, size: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.w_1 = nn.Linear(size, hidden)
        self.w_2 = nn.Linear(hidden, size)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.w_2(self.dropout(torch.relu(self.w_1(x))))


class SANMAttention(nn.Module):
    """Multi-head attention whose values also feed an FSMN memory (depthwise conv over time)."""

    def __init__(
        self, in_size: int, size: int, heads: int, kernel_size: int, shift: int, dropout: float
    ) -> None:
        super().__init__()
        if size % heads:
            raise ValueError(f"SAN-M width {size} is not divisible by {heads} attention heads")
        self.size, self.heads, self.dropout = size, heads, dropout
        self.linear_out = nn.Linear(size, size)
        self.linear_q_k_v = nn.Linear(in_size, 3 * size)
        self.fsmn_block = nn.Conv1d(size, size, kernel_size, groups=size, bias=False)
        self.pad_left = (kernel_size - 1) // 2 + shift
        self.pad_right = kernel_size - 1 - self.pad_left
        self.drop = nn.Dropout(dropout)

    def _heads(self, x: Tensor) -> Tensor:
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, allowed: Tensor) -> Tensor:
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(self._heads(q), self._heads(k), self._heads(v), allowed, p)
        return self.linear_out(out.transpose(1, 2).flatten(2))

    def fsmn(self, v: Tensor, mask: Tensor, chunk_end: Tensor | None = None) -> Tensor:
        """Memory over masked values; with ``chunk_end`` [T] the taps past a frame's chunk end read zero."""
        v = v * mask
        if chunk_end is None:
            memory = self.fsmn_block(F.pad(v.transpose(1, 2), (self.pad_left, self.pad_right))).transpose(
                1, 2
            )
        else:
            kernel = self.fsmn_block.kernel_size[0]
            windows = F.pad(v, (0, 0, self.pad_left, self.pad_right)).unfold(1, kernel, 1)  # [B, T, D, k]
            source = torch.arange(v.shape[1], device=v.device)[:, None] + torch.arange(
                kernel, device=v.device
            )
            taps = (source - self.pad_left) < chunk_end[:, None]  # [T, k]
            memory = torch.einsum("btdk,dk->btd", windows * taps[:, None, :], self.fsmn_block.weight[:, 0])
        return self.drop(memory + v) * mask

    def forward(self, x: Tensor, mask: Tensor, allowed: Tensor, chunk_end: Tensor | None = None) -> Tensor:
        """``mask`` [B, T, 1] valid frames; ``allowed`` [B or 1, 1, T or 1, T] keys each query may attend."""
        q, k, v = self.linear_q_k_v(x).split(self.size, dim=-1)
        return self._attend(q, k, v, allowed) + self.fsmn(v, mask, chunk_end)

    def step(self, x: Tensor, cache: Tensor, cache_len: Tensor) -> tuple[Tensor, Tensor]:
        """One chunk ``[B, N, in]`` after a right-aligned cache ``[B, L, 2*size]`` of past keys and values.

        Returns the chunk's output and its ``[B, N, 2*size]`` keys/values for the cache.
        """
        q, k, v = self.linear_q_k_v(x).split(self.size, dim=-1)
        past_k, past_v = cache.split(self.size, dim=-1)
        slots = cache.shape[1]
        valid_past = torch.arange(slots, device=x.device)[None, :] >= (slots - cache_len)[:, None]
        allowed = torch.cat([valid_past, valid_past.new_ones(x.shape[0], x.shape[1])], dim=1)
        att = self._attend(q, torch.cat([past_k, k], 1), torch.cat([past_v, v], 1), allowed[:, None, None, :])
        history = past_v[:, slots - self.pad_left :] if self.pad_left else past_v[:, :0]
        window = F.pad(torch.cat([history, v], 1).transpose(1, 2), (0, self.pad_right))
        memory = self.fsmn_block(window).transpose(1, 2) + v
        return att + memory, torch.cat([k, v], dim=-1)


class SANMLayer(nn.Module):
    """Pre-norm SAN-M layer; the attention residual is skipped when the layer changes the width."""

    def __init__(
        self,
        in_size: int,
        size: int,
        heads: int,
        hidden: int,
        kernel_size: int,
        shift: int,
        dropout: float,
        attention_dropout: float,
    ) -> None:
        super().__init__()
        self.self_attn = SANMAttention(in_size, size, heads, kernel_size, shift, attention_dropout)
        self.feed_forward = FeedForward(size, hidden, dropout)
        self.norm1 = nn.LayerNorm(in_size)
        self.norm2 = nn.LayerNorm(size)
        self.dropout = nn.Dropout(dropout)
        self.residual = in_size == size

    def _finish(self, x: Tensor, att: Tensor) -> Tensor:
        x = x + self.dropout(att) if self.residual else self.dropout(att)
        return x + self.dropout(self.feed_forward(self.norm2(x)))

    def forward(self, x: Tensor, mask: Tensor, allowed: Tensor, chunk_end: Tensor | None = None) -> Tensor:
        return self._finish(x, self.self_attn(self.norm1(x), mask, allowed, chunk_end))

    def step(self, x: Tensor, cache: Tensor, cache_len: Tensor) -> tuple[Tensor, Tensor]:
        att, kv = self.self_attn.step(self.norm1(x), cache, cache_len)
        return self._finish(x, att), kv


class SANMEncoder(nn.Module):
    """``SenseVoiceEncoderSmall``: ``x * sqrt(d) + sinusoid`` -> encoders0 -> encoders -> after_norm ->
    tp_encoders -> tp_norm. No subsampling: output lengths equal input lengths."""

    def __init__(
        self,
        input_size: int,
        output_size: int,
        attention_heads: int,
        linear_units: int,
        num_layers: int,
        tp_layers: int,
        kernel_size: int,
        sanm_shift: int,
        dropout_rate: float,
        attention_dropout_rate: float,
        gradient_checkpointing: bool = False,
    ) -> None:
        """``num_layers`` SAN-M layers before ``after_norm`` (``encoders0`` and ``encoders``; funasr's
        ``num_blocks``), ``tp_layers`` after it. ``SenseVoiceEncoder``'s presets hold the sizes."""
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1 (encoders0 is the first layer), got {num_layers}")
        self.gradient_checkpointing = gradient_checkpointing  # recompute layer activations in backward
        self.output_size = output_size

        def layer(in_size: int) -> SANMLayer:
            return SANMLayer(
                in_size,
                output_size,
                attention_heads,
                linear_units,
                kernel_size,
                sanm_shift,
                dropout_rate,
                attention_dropout_rate,
            )

        self.encoders0 = nn.ModuleList([layer(input_size)])
        self.encoders = nn.ModuleList([layer(output_size) for _ in range(num_layers - 1)])
        self.tp_encoders = nn.ModuleList([layer(output_size) for _ in range(tp_layers)])
        self.after_norm = nn.LayerNorm(output_size)
        self.tp_norm = nn.LayerNorm(output_size)
        self.dropout = nn.Dropout(dropout_rate)

    @property
    def layers(self) -> list[SANMLayer]:
        return [*self.encoders0, *self.encoders, *self.tp_encoders]

    def _embed(self, x: Tensor, positions: Tensor) -> Tensor:
        return self.dropout(
            x * self.output_size**0.5 + sinusoidal_encoding(positions, x.shape[-1]).to(x.dtype)
        )

    def forward(self, x: Tensor, lengths: Tensor, chunks: ChunkLayout | None = None) -> Tensor:
        """``[B, T, input_size]`` -> ``[B, T, output_size]`` (frames past ``lengths`` are meaningless)."""
        valid = lengths_to_mask(lengths, x.shape[1])
        allowed, chunk_end = valid[:, None, None, :], None
        if chunks is not None:
            chunk_allowed, chunk_end = chunks.masks(x.shape[1], x.device)
            allowed = allowed & chunk_allowed[None, None]
        x = self._embed(x, torch.arange(1, x.shape[1] + 1, device=x.device))
        mask = valid[..., None].to(x.dtype)
        recompute = self.gradient_checkpointing and self.training
        for i, layer in enumerate(self.layers):
            x = call_layer(layer, x, mask, allowed, chunk_end, recompute=recompute)
            if i == len(self.encoders0) + len(self.encoders) - 1:
                x = self.after_norm(x)
        return self.tp_norm(x)

    def step(self, x: Tensor, positions: Tensor, cache: Tensor, cache_len: Tensor) -> tuple[Tensor, Tensor]:
        """One chunk ``[B, N, input_size]`` whose first frame has 0-based position ``positions`` [B].

        ``cache`` is ``[B, layers, L, 2*output_size]`` (right-aligned, ``cache_len`` [B] valid slots).
        Returns the chunk's outputs and the new chunk's per-layer keys/values ``[B, layers, N, 2*output_size]``.
        """
        steps = positions[:, None] + torch.arange(1, x.shape[1] + 1, device=x.device)
        x = self._embed(x, steps)
        new_kv = []
        for i, layer in enumerate(self.layers):
            x, kv = layer.step(x, cache[:, i], cache_len)
            new_kv.append(kv)
            if i == len(self.encoders0) + len(self.encoders) - 1:
                x = self.after_norm(x)
        return self.tp_norm(x), torch.stack(new_kv, dim=1)
