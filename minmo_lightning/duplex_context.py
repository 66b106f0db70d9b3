"""A duplex conversation laid out for the LLM in time order: the user's audio frames and the assistant's turns.

MinMo's duplex predictor reads the LLM's last-layer states at the user-audio positions of a context that
holds what was said so far by both sides. The layout (the same in stage 4 training and in a live
``DuplexSession``) is ChatML cut at the moments things happen::

    first_user | leading frames | audio frames ... | assistant_open | audio frames heard while the
    assistant speaks ... | spoken text + assistant_close | audio frames ...

``assistant_open`` goes in where the assistant starts speaking and the text it spoke, with
``assistant_close`` (which also opens the next user turn), where it stops: the user's audio keeps its
place on the timeline, and the context says at every frame whether an assistant turn is open.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from minmo_lightning.contracts import SequenceBatch, lengths_to_mask
from minmo_lightning.prompts import DuplexTurns


@dataclass(frozen=True)
class TimedText:
    """Token ids that enter the context at ``seconds`` on the input timeline (before the frames after it)."""

    seconds: float
    ids: tuple[int, ...]


def assistant_turns(
    events: Sequence[dict], turns: DuplexTurns, encode: Callable[[str], list[int]]
) -> list[TimedText]:
    """The corpus's ``assistant_speech`` events (start, end, text) as the texts a session would have added."""
    texts = []
    for event in events:
        if event["type"] == "assistant_speech":
            texts.append(TimedText(float(event["start"]), tuple(turns.assistant_open)))
            spoken = encode(event.get("text") or "") + list(turns.assistant_close)
            texts.append(TimedText(float(event["end"]), tuple(spoken)))
    return sorted(texts, key=lambda t: t.seconds)


@dataclass
class DuplexContext:
    """``embeds`` [B, T, D] right-padded with ``attention_mask`` [B, T]; ``audio_positions`` [B, N] where each
    timed audio frame sits (``audio_lengths`` [B] of them per row; leading frames are not counted)."""

    embeds: Tensor
    attention_mask: Tensor
    audio_positions: Tensor
    audio_lengths: Tensor

    def audio_states(self, hidden: Tensor) -> SequenceBatch:
        """The rows of ``hidden`` [B, T, D] (an LLM pass over ``embeds``) at the timed audio frames."""
        index = self.audio_positions[..., None].expand(-1, -1, hidden.shape[-1])
        return SequenceBatch(hidden.gather(1, index), self.audio_lengths)


def _frame_at(seconds: float, frame_seconds: float) -> int:
    """Index of the first frame that starts at or after ``seconds``."""
    return max(0, math.ceil(seconds / frame_seconds - 1e-9))


@dataclass
class _RowLayout:
    ids: list[int]  # first_user, then every text's ids in order
    id_positions: Tensor  # where each of ``ids`` sits
    frame_positions: Tensor  # where each timed audio frame sits
    length: int


def _row_layout(
    count: int, leading: int, first_user: Sequence[int], texts: Sequence[TimedText], frame_seconds: float
) -> _RowLayout:
    head = len(first_user) + leading
    pending = [t for t in texts if t.seconds < count * frame_seconds]
    at = torch.tensor([_frame_at(t.seconds, frame_seconds) for t in pending], dtype=torch.long)
    sizes = torch.tensor([len(t.ids) for t in pending], dtype=torch.long)
    starts = head + at + sizes.cumsum(0) - sizes
    id_positions = torch.cat(
        [torch.arange(len(first_user))]
        + [torch.arange(s, s + n) for s, n in zip(starts.tolist(), sizes.tolist())]
    )
    frames = torch.arange(count)
    frame_positions = head + frames + (sizes[None] * (at[None] <= frames[:, None])).sum(1)
    ids = list(first_user) + [i for t in pending for i in t.ids]
    return _RowLayout(ids, id_positions, frame_positions, head + count + int(sizes.sum()))


def lay_out(
    frames: SequenceBatch,
    leading: int,
    frame_seconds: float,
    texts: Sequence[Sequence[TimedText]],
    first_user: Sequence[int],
    embed: Callable[[Tensor], Tensor],
) -> DuplexContext:
    """Interleave each row's audio-frame embeddings (``frames``: ``leading`` untimed ones first) with its
    ``texts`` (a text enters before the first frame that starts at or after its moment); texts after the
    row's last frame are left out."""
    device = frames.values.device
    layouts = [
        _row_layout(int(n) - leading, leading, first_user, row_texts, frame_seconds)
        for n, row_texts in zip(frames.lengths.tolist(), texts)
    ]
    lengths = torch.tensor([r.length for r in layouts], device=device)
    embeds = frames.values.new_zeros(len(layouts), int(lengths.max()), frames.values.shape[-1])
    all_ids = torch.tensor([i for r in layouts for i in r.ids], dtype=torch.long, device=device)
    text_embeds = embed(all_ids[None])[0].to(embeds.dtype).split([len(r.ids) for r in layouts])
    for row, layout in enumerate(layouts):
        embeds[row, layout.id_positions.to(device)] = text_embeds[row]
        embeds[row, len(first_user) : len(first_user) + leading] = frames.values[row, :leading]
        count = len(layout.frame_positions)
        embeds[row, layout.frame_positions.to(device)] = frames.values[row, leading : leading + count]
    positions = torch.nn.utils.rnn.pad_sequence([r.frame_positions for r in layouts], batch_first=True)
    counts = torch.tensor([len(r.frame_positions) for r in layouts], device=device)
    return DuplexContext(embeds, lengths_to_mask(lengths).long(), positions.to(device), counts)


def assistant_speaking(events: Sequence[Sequence[dict]], frames: int, frame_seconds: float) -> Tensor:
    """[B, frames] bool: an ``assistant_speech`` event covers the frame's start."""
    starts = torch.arange(frames) * frame_seconds
    speaking = torch.zeros(len(events), frames, dtype=torch.bool)
    for row, row_events in enumerate(events):
        for event in row_events:
            if event["type"] == "assistant_speech":
                speaking[row] |= (starts >= event["start"]) & (starts < event["end"])
    return speaking
