"""``VoiceLMState``: the decoding sessions of a batch, one per row, over one shared KV cache."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from minmo_lightning.stream_state import VoiceDecoderState


@dataclass
class VoiceLMState(VoiceDecoderState):
    """Per-session decoding state. Zero means "fresh" in every field, so the default ``reset`` restarts rows.

    ``mask`` [B, L] marks the KV-cache columns that belong to each row's live session (a reset row's old
    columns stay in the shared cache but are masked out; columns no row uses are trimmed).
    ``started`` means sos (+ prefix) was fed, ``finished`` that eos was sampled (or the length cap reached).
    ``input_ended`` (``end_input``) says the row's text is complete; ``turn_of_speech_fed`` that the step
    has since given it the turn-of-speech token (task_id), after which only speech and eos follow.
    """

    mask: Tensor  # [B, L]
    position: Tensor  # [B] next rotary position
    pending: Tensor  # [B] last sampled token, fed with the next call
    has_pending: Tensor  # [B]
    turn_of_speech_fed: Tensor  # [B] task_id fed
    text_count: Tensor  # [B] semantic vectors read
    speech_count: Tensor  # [B] speech tokens written
    history: Tensor  # [B, W] most recent speech tokens (repetition-aware sampling)
    cache: Any = None

    def reset(self, items: Tensor | list[int]) -> None:
        super().reset(items)
        self.trim_cache()

    def recent_tokens(self) -> Tensor:
        """``history`` with slots before the row's first token set to -1 (not a token)."""
        width = self.history.shape[1]
        valid = torch.arange(width, device=self.history.device)[None] >= width - self.speech_count[:, None]
        return torch.where(valid, self.history, -1)

    def remember(self, token: Tensor, rows: Tensor) -> None:
        """Count ``token`` [B] as generated for ``rows`` [B] (RAS history, speech counter)."""
        shifted = torch.cat([self.history[:, 1:], token[:, None]], 1)
        self.history = torch.where(rows[:, None], shifted, self.history)
        self.speech_count = self.speech_count + rows.long()

    def trim_cache(self) -> None:
        """Drop leading cache columns that no row uses any more (keeps the cache bounded across sessions)."""
        if self.cache is None or self.mask.numel() == 0:
            return
        used = self.mask.any(0)
        start = int(used.float().argmax()) if bool(used.any()) else self.mask.shape[1]
        if start == 0:
            return
        self.mask = self.mask[:, start:]
        if self.mask.shape[1] == 0:
            self.cache = None
            return
        self.cache.drop_front(start)
