"""Streaming by re-running ``forward`` on a bounded window: the default ``step`` of encoders and projectors.

A block that has no incremental form of its own (Whisper's encoder, the input projectors) streams by
keeping the last ``W`` inputs of each session and running its offline ``forward`` on [context ; chunk],
keeping only the outputs that belong to the chunk. The cost per chunk is bounded by ``W`` and the
outputs depend only on the stream so far, so a session is reproducible chunk by chunk; what a block
loses is the right context beyond the chunk and the left context beyond ``W``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from minmo_lightning.contracts import SequenceBatch
from minmo_lightning.stream_state import StreamState


@dataclass
class WindowState(StreamState):
    """``context`` [B, W, ...]: each session's last inputs, right-aligned; ``filled`` [B] how many are real."""

    context: Tensor
    filled: Tensor

    @classmethod
    def empty(cls, batch_size: int, window: int, *feature_shape: int, like: Tensor) -> WindowState:
        context = like.new_zeros(batch_size, window, *feature_shape)
        return cls(
            batch_size, context=context, filled=torch.zeros(batch_size, dtype=torch.long, device=like.device)
        )

    def extend(self, chunk: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """[context ; chunk] per row, left-aligned ([B, filled + length, ...] padded) with its lengths; the
        context then keeps the last ``W`` of it."""
        window = self.context.shape[1]
        lengths = lengths.to(self.filled.device)
        joined = torch.cat([self.context, chunk.to(self.context.dtype)], dim=1)
        position = torch.arange(joined.shape[1], device=joined.device)[None]
        valid = (position >= window - self.filled[:, None]) & (position < window + lengths[:, None])
        total = self.filled + lengths
        left_aligned = _gather_rows(joined, torch.sort((~valid).long(), dim=1, stable=True).indices)
        right_aligned = _gather_rows(joined, torch.sort(valid.long(), dim=1, stable=True).indices)
        self.context = right_aligned[:, right_aligned.shape[1] - window :].clone()
        self.filled = total.clamp(max=window)
        return left_aligned[:, : int(total.max())], total


def _gather_rows(values: Tensor, order: Tensor) -> Tensor:
    index = order.reshape(*order.shape, *([1] * (values.dim() - 2))).expand(*order.shape, *values.shape[2:])
    return values.gather(1, index)


def last_outputs(outputs: SequenceBatch, counts: Tensor) -> SequenceBatch:
    """The last ``counts[b]`` valid outputs of each row, left-aligned."""
    counts = counts.to(outputs.lengths.device)
    width = int(counts.max()) if counts.numel() else 0
    offsets = torch.arange(width, device=counts.device)[None]
    index = (outputs.lengths - counts)[:, None] + offsets
    keep = offsets < counts[:, None]
    gathered = _gather_rows(outputs.values, index.clamp(min=0))
    return SequenceBatch(gathered * keep[..., None].to(gathered.dtype), counts)


def windowed_step(
    forward: Callable[[Tensor, Tensor], SequenceBatch],
    state: WindowState,
    chunk: Tensor,
    lengths: Tensor,
    new_outputs: Tensor,
) -> SequenceBatch:
    """Run ``forward(inputs, lengths)`` on [context ; chunk] and keep each row's ``new_outputs`` last outputs."""
    inputs, total = state.extend(chunk, lengths)
    return last_outputs(forward(inputs, total), new_outputs)


def windowed_all(
    forward: Callable[[Tensor, Tensor], SequenceBatch],
    inputs: Tensor,
    sizes: list[int],
    outputs: list[int],
    window: int,
    max_rows: int = 256,
) -> Tensor:
    """What ``windowed_step`` gives chunk by chunk, for every chunk of a whole stream at once.

    ``inputs`` [B, T, ...] are cut into chunks of ``sizes`` inputs (the same for every row, full lengths);
    chunk k runs through ``forward`` with the ``window`` inputs before it (fewer at the start) and keeps its
    last ``outputs[k]`` outputs. Returns [B, sum(outputs), ...]. Chunks whose windows have the same length
    and keep as many outputs run together, at most ``max_rows`` windows per call (so memory stays bounded);
    no window is padded, so each equals its streaming step.
    """
    ends = torch.tensor(sizes).cumsum(0).tolist()
    starts = [max(0, end - size - window) for end, size in zip(ends, sizes)]
    groups: dict[tuple[int, int], list[int]] = {}
    for k, (start, end) in enumerate(zip(starts, ends)):
        groups.setdefault((end - start, outputs[k]), []).append(k)
    batch, pieces = inputs.shape[0], [None] * len(sizes)
    per_call = max(1, max_rows // batch)  # chunks per call: batch rows each
    for (length, count), chunks in groups.items():
        for first in range(0, len(chunks), per_call):
            some = chunks[first : first + per_call]
            index = torch.tensor([starts[k] for k in some])[:, None] + torch.arange(length)[None]
            windows = inputs[:, index.to(inputs.device)].flatten(0, 1)  # [B * len(some), length, ...]
            out = forward(windows, torch.full((windows.shape[0],), length, device=inputs.device))
            kept = last_outputs(out, torch.full((windows.shape[0],), count)).values.unflatten(
                0, (batch, len(some))
            )
            for position, k in enumerate(some):
                pieces[k] = kept[:, position]
    return torch.cat(pieces, dim=1)
