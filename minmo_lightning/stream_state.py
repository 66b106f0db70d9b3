"""``StreamState``: the one per-session state shape every streaming block uses (see its docstring)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import Tensor


@dataclass
class StreamState:
    """Per-session streaming state of one block, for a batch of independent sessions.

    One shape for every streaming block: ``init_state(batch_size, options=None)`` makes it (``options`` is
    the block's typed ``StreamOptions`` dataclass: sampling, speaker prompt, ...; it stays on the state as
    ``options``), ``step(chunk, state)`` feeds one chunk. End of stream is said the same way everywhere:
    ``end_input(rows)`` marks rows whose input is complete, and the next ``step`` flushes what the block
    still holds back for them (a look-ahead, the voice LM's turn of speech). ``reset(rows)`` restarts rows
    as new sessions.

    Subclasses add batch-first tensor fields (caches, counters). The default ``reset`` zeroes the rows of
    every such field; a state whose "empty" value is not zero (e.g. a cache with a length pointer)
    overrides it.
    """

    batch_size: int
    #: [B] the caller sent the row's last input (``end_input``); ``step`` flushes it
    input_ended: Tensor = field(default=None, kw_only=True)  # type: ignore[assignment]
    options: Any = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        if self.input_ended is None:
            self.input_ended = torch.zeros(self.batch_size, dtype=torch.bool, device=self._device())

    def _device(self) -> torch.device:
        """Where the state's tensors live (the first batch-first tensor field), so flags sit beside them."""
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Tensor) and f.name != "input_ended":
                return value.device
        return torch.device("cpu")

    def rows(self, items: Tensor | list[int]) -> Tensor:
        """``items`` (bool mask [B] or indices) as a bool mask [B] on the state's device."""
        index = torch.as_tensor(items, device=self.input_ended.device)
        if index.dtype == torch.bool:
            if index.shape != (self.batch_size,):
                raise ValueError(f"a row mask must have shape [{self.batch_size}], got {tuple(index.shape)}")
            return index
        mask = torch.zeros(self.batch_size, dtype=torch.bool, device=index.device)
        mask[index.long().flatten()] = True
        return mask

    def end_input(self, items: Tensor | list[int]) -> None:
        """The rows in ``items`` have sent their last input: the next ``step`` flushes them."""
        self.input_ended |= self.rows(items)

    def reset(self, items: Tensor | list[int]) -> None:
        """Restart the sessions in ``items`` (bool mask [B] or indices) as if ``init_state`` had just run."""
        mask = self.rows(items)
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == self.batch_size:
                value[mask.to(value.device)] = 0


@dataclass
class VoiceDecoderState(StreamState):
    """The part of a voice token LM's session state that its callers read: ``started`` [B] the row's turn
    began (its per-turn prefix was read), ``finished`` [B] the row reached end of speech."""

    started: Tensor
    finished: Tensor

    def retire(self, items: Tensor | list[int]) -> None:
        """End rows that will say nothing (a turn whose text ended before its first token)."""
        self.finished |= self.rows(items)
