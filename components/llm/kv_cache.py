"""KV caches written in place: O(1) amortised work per new token instead of a copy of the cache.

transformers' ``DynamicLayer`` concatenates on every step, which copies the whole cache per token (50 MB
per token at 2048 positions for Qwen2.5-0.5B, 8x that at batch 8). ``GrowingKVLayer`` appends into a
buffer of doubling capacity; ``keys``/``values`` are views of its filled part. Both the LLM backbone and
the voice token LM decode with it (eager). ``StaticKVCache`` is the compiled decode path's cache: fixed
shapes and addresses, so one captured step replays every token (``captured_step.py``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from transformers.cache_utils import Cache, CacheLayerMixin, DynamicLayer


class GrowingKVLayer(DynamicLayer):
    """``DynamicLayer`` whose ``keys``/``values`` are views of a doubling buffer (see the module docstring)."""

    def update(
        self, key_states: Tensor, value_states: Tensor, *args: Any, **kwargs: Any
    ) -> tuple[Tensor, Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
            self.length, self.buffers = 0, None
        start, end = self.length, self.length + key_states.shape[-2]
        if self.buffers is None or end > self.buffers[0].shape[-2]:
            capacity = max(2 * end, 64)
            grown = [x.new_empty(*x.shape[:-2], capacity, x.shape[-1]) for x in (key_states, value_states)]
            for new, old in zip(grown, (self.keys, self.values)):
                if start:
                    new[..., :start, :] = old
            self.buffers = grown
        self.buffers[0][..., start:end, :] = key_states
        self.buffers[1][..., start:end, :] = value_states
        self._set_length(end)
        return self.keys, self.values

    def _set_length(self, length: int) -> None:
        self.length = length
        self.keys, self.values = (x[..., :length, :] for x in self.buffers)

    def drop_front(self, count: int) -> None:
        """Forget the oldest ``count`` positions (shift the rest to the buffer start)."""
        if not self.is_initialized or count == 0:
            return
        kept = self.length - count
        for x in self.buffers:
            x[..., :kept, :] = x[..., count : self.length, :].clone()
        self._set_length(kept)


class GrowingKVCache(Cache):
    """A transformers ``Cache`` of ``GrowingKVLayer`` (full attention in every layer)."""

    def __init__(self, num_layers: int) -> None:
        super().__init__(layers=[GrowingKVLayer() for _ in range(num_layers)])

    def drop_front(self, count: int) -> None:
        """Forget the oldest ``count`` positions of every layer."""
        for layer in self.layers:
            layer.drop_front(count)


def growing_cache(num_layers: int) -> GrowingKVCache:
    return GrowingKVCache(num_layers)


class StaticKVLayer(CacheLayerMixin):
    """Keys/values in a buffer of fixed capacity at a fixed address, written in place.

    A captured decode step (CUDA graph) replays over the same memory, so the buffer never moves while its
    capacity holds, and the write position is a 0-d device tensor (``written``) that the step reads and
    advances in place, never a Python int baked into the graph. ``update`` returns the whole buffer: the
    caller's attention mask says which columns are real.
    """

    is_compileable = True
    is_sliding = False

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity
        self.written: Tensor | None = None

    def lazy_initialization(self, key_states: Tensor, value_states: Tensor) -> None:
        self.keys, self.values = (
            x.new_zeros(*x.shape[:2], self.capacity, x.shape[-1]) for x in (key_states, value_states)
        )
        self.written = torch.zeros((), dtype=torch.long, device=key_states.device)
        self._pin()
        self.is_initialized = True

    def _pin(self) -> None:
        """Tell torch.compile the buffers keep their address, so a captured step may write into them."""
        if not torch.compiler.is_compiling():
            for x in (self.keys, self.values, self.written):
                torch._dynamo.mark_static_address(x)

    def update(
        self, key_states: Tensor, value_states: Tensor, *args: Any, **kwargs: Any
    ) -> tuple[Tensor, Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        columns = torch.arange(key_states.shape[-2], device=key_states.device) + self.written
        self.written.add_(key_states.shape[-2])
        self.keys.index_copy_(2, columns, key_states)
        self.values.index_copy_(2, columns, value_states)
        return self.keys, self.values

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.capacity, 0

    def get_seq_length(self) -> int:
        return 0 if self.written is None else int(self.written)

    def get_max_length(self) -> int:
        return self.capacity

    def grow(self, capacity: int) -> None:
        """Move to a larger buffer (a new address: a captured step is captured again for the new shape)."""
        self.capacity = capacity
        if not self.is_initialized:
            return
        old = (self.keys, self.values)
        self.keys, self.values = (x.new_zeros(*x.shape[:2], capacity, x.shape[-1]) for x in old)
        for new, x in zip((self.keys, self.values), old):
            new[..., : x.shape[-2], :] = x
        self._pin()

    def drop_front(self, count: int) -> None:
        """Forget the oldest ``count`` columns, shifting the rest to the front in place (same address)."""
        if not self.is_initialized or count == 0:
            return
        kept = int(self.written) - count
        for x in (self.keys, self.values):
            x[..., :kept, :] = x[..., count : count + kept, :].clone()
        self.written.sub_(count)


class StaticKVCache(Cache):
    """A transformers ``Cache`` of ``StaticKVLayer``: fixed shapes for compiled decode steps.

    Capacity comes in buckets (powers of two from ``min_capacity``): ``reserve`` grows every layer to the
    next bucket when a call would overflow, so a session never stops for length, and a compiled step meets
    only a few shapes (one capture per bucket). ``columns`` counts the filled columns on the host; the
    caller passes a mask over all ``capacity`` columns (``attention_mask``).
    """

    def __init__(self, num_layers: int, mode: str, min_capacity: int = 256) -> None:
        """``mode``: the torch.compile mode of the steps that decode into it (``captured_step.py``)."""
        super().__init__(layers=[StaticKVLayer(min_capacity) for _ in range(num_layers)])
        self.mode, self.capacity, self.columns = mode, min_capacity, 0

    def reserve(self, new_columns: int) -> None:
        """Make room for ``new_columns`` more columns (the next call's length)."""
        needed = self.columns + new_columns
        if needed <= self.capacity:
            return
        while self.capacity < needed:
            self.capacity *= 2
        for layer in self.layers:
            layer.grow(self.capacity)

    def attention_mask(self, real: Tensor, length: int) -> dict[str, Tensor]:
        """The 4-D mask (as transformers takes it prepared) for ``length`` new columns after ``columns``.

        ``real`` [B, columns + length] marks the columns that hold a row's real tokens (left padding, a reset
        row's old columns, a row that feeds nothing at a step are not). Query i sees real columns up to its
        own; a query that would see nothing sees its own column (its output is never used).
        """
        batch = real.shape[0]
        width = self.columns + length
        if real.shape[1] != width:
            raise ValueError(
                f"the mask covers {real.shape[1]} columns; the cache holds {self.columns} + {length}"
            )
        keys = real.new_zeros(batch, self.capacity, dtype=torch.bool)
        keys[:, :width] = real.bool()
        column = torch.arange(self.capacity, device=real.device)
        query = self.columns + torch.arange(length, device=real.device)
        causal = column[None, :] <= query[:, None]
        mask = keys[:, None, None, :] & causal[None, None]
        return {"full_attention": mask | (column[None, :] == query[:, None])[None, None]}

    def advance(self, length: int) -> None:
        """Count ``length`` columns as written (after the model call that wrote them)."""
        self.columns += length

    def drop_front(self, count: int) -> None:
        for layer in self.layers:
            layer.drop_front(count)
        self.columns -= count
