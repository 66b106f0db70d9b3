"""The flow's streaming sessions: which attention chunk of which row is ready, and its cached encoding.

A chunk of ``chunk_size`` tokens is encoded once its ``pre_lookahead_len`` look-ahead tokens have arrived
(or the row's input ended); the encoder and every Euler step of the estimator keep ``num_left_chunks``
chunks of left context in caches, so a step costs one chunk however long the session is, and equals the
offline pass with the same chunk mask.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from minmo_lightning.components.token2wav.flow_cache import StreamCache, stream_chunk_end, window_mask
from torch import Tensor, nn

from minmo_lightning.contracts import lengths_to_mask
from minmo_lightning.stream_state import StreamState

if TYPE_CHECKING:
    from minmo_lightning.components.token2wav.flow import CosyVoice2Flow


@dataclass
class FlowStreamState(StreamState):
    """One streaming session per row: the token stream so far, what is encoded, and the bounded caches.

    ``stream[b]`` holds the prompt tokens then every token received; ``consumed[b]`` counts the tokens
    already turned into frames (prompt included). The caches hold the left context of every attention and
    causal conv (encoder: token and frame level, rows B; estimator: one dict per Euler step, rows 2B =
    conditioned then unconditioned); their "empty" value is zeros, and how much of each window is real
    follows from ``consumed``. After ``end_input`` the next step encodes every token left (the last ones
    without their look-ahead); ``flushed`` marks the rows that step has ended.
    """

    spks: Tensor
    prompt_lengths: Tensor
    prompt_mel: list[Tensor]
    prompt_tokens: list[Tensor]
    stream: list[Tensor]
    consumed: Tensor
    flushed: Tensor
    token_cache: dict[str, Tensor] = field(default_factory=dict)
    frame_cache: dict[str, Tensor] = field(default_factory=dict)
    step_caches: list[dict[str, Tensor]] = field(default_factory=list)

    def reset(self, items: Tensor | list[int]) -> None:
        """Restart sessions ``items`` with the same prompt (re-encoded on the next ``step``)."""
        mask = self.rows(items)
        rows = mask.nonzero().flatten().tolist()
        for row in rows:
            self.stream[row] = self.prompt_tokens[row].clone()
        for flags in (self.consumed, self.input_ended, self.flushed):
            flags[mask] = 0
        both = rows + [row + self.batch_size for row in rows]
        for cache, index in [(self.token_cache, rows), (self.frame_cache, rows)] + [
            (c, both) for c in self.step_caches
        ]:
            for value in cache.values():
                value[index] = 0


def advance(flow: CosyVoice2Flow, state: FlowStreamState) -> tuple[Tensor, Tensor]:
    """Encode every chunk that is ready, batching the rows that have one; returns the new frames per row."""
    pieces: list[list[Tensor]] = [[] for _ in range(state.batch_size)]
    while True:
        plan = _ready_segments(flow, state)
        if not plan:
            break
        rows = torch.tensor([row for row, _, _ in plan], device=state.consumed.device)
        mel = _encode_segment(flow, state, rows, [n for _, n, _ in plan], [la for _, _, la in plan])
        for index, (row, n, _) in enumerate(plan):
            done, prompt = int(state.consumed[row]), int(state.prompt_lengths[row])
            if done + n > prompt:  # frames of prompt tokens are conditions, not output
                pieces[row].append(mel[index, :, flow.ratio * max(prompt - done, 0) : flow.ratio * n])
            state.consumed[row] += n
    empty_mel = state.spks.new_zeros(flow.mel_dim, 0)
    per_row = [torch.cat(p, dim=1) if p else empty_mel for p in pieces]
    lengths = torch.tensor([p.shape[1] for p in per_row], device=state.spks.device)
    padded = nn.utils.rnn.pad_sequence([p.transpose(0, 1) for p in per_row], batch_first=True)
    return padded.transpose(1, 2), lengths


def _ready_segments(flow: CosyVoice2Flow, state: FlowStreamState) -> list[tuple[int, int, int]]:
    """(row, tokens, look-ahead tokens) of the next attention chunk of every row that can encode one."""
    plan = []
    for row in range(state.batch_size):
        done, available = int(state.consumed[row]), len(state.stream[row])
        prompt = int(state.prompt_lengths[row])
        body = max(prompt - flow.lookahead, 0)  # the prompt's last tokens join the first new chunk
        if done < body:
            size = min(flow.chunk_size, body - done)
        else:
            size = stream_chunk_end(done, prompt, flow.chunk_size, flow.lookahead) - done
        if done + size + flow.lookahead <= available:
            plan.append((row, size, flow.lookahead))
        elif state.input_ended[row] and available > done:
            size = min(size, available - done)
            plan.append((row, size, min(flow.lookahead, available - done - size)))
    return plan


def _encode_segment(
    flow: CosyVoice2Flow, state: FlowStreamState, rows: Tensor, sizes: list[int], lookaheads: list[int]
) -> Tensor:
    """Encode and sample one attention chunk for ``rows`` (right-padded); returns mel [R, 80, ratio*max(sizes)]."""
    device = state.consumed.device
    # every segment padded to one chunk (masked like a shorter row of a batch): a compiled step meets one shape
    count, longest = len(sizes), max(flow.chunk_size, *sizes)
    consumed = state.consumed[rows]
    windows = [
        state.stream[row][done : done + n + la]
        for row, done, n, la in zip(rows.tolist(), consumed.tolist(), sizes, lookaheads)
    ]
    tokens = torch.zeros(count, longest + flow.lookahead, dtype=torch.long, device=device)
    for index, window in enumerate(windows):
        tokens[index, : len(window)] = window
    have = torch.tensor([len(w) for w in windows], device=device)
    present = torch.arange(longest + flow.lookahead, device=device)[None, :] < have[:, None]
    n = torch.tensor(sizes, device=device)
    token_window = flow.num_left_chunks * flow.chunk_size
    frame_window = flow.ratio * token_window
    token_cache = StreamCache(_rows(state.token_cache, rows), n, token_window)
    frame_cache = StreamCache(_rows(state.frame_cache, rows), flow.ratio * n, frame_window)
    token_mask = window_mask(consumed.clamp(max=token_window), token_window, n, longest)
    frames = flow.ratio * longest
    frame_cached = (flow.ratio * consumed).clamp(max=frame_window)
    frame_mask = window_mask(frame_cached, frame_window, flow.ratio * n, frames)
    embedded = flow.embed_tokens(tokens) * present[:, :, None]
    h = flow.encoder(embedded, present, token_mask, frame_mask, token_cache, frame_cache)
    mu = flow.encoder_proj(h).transpose(1, 2)
    _put_rows(state.token_cache, rows, token_cache.tensors, state.batch_size)
    _put_rows(state.frame_cache, rows, frame_cache.tensors, state.batch_size)

    mask = lengths_to_mask(flow.ratio * n, frames)[:, None].to(mu)
    cond = torch.zeros_like(mu)
    for index, (row, done) in enumerate(zip(rows.tolist(), consumed.tolist())):
        prompt_frames = state.prompt_mel[row][flow.ratio * done : flow.ratio * (done + sizes[index])]
        cond[index, :, : prompt_frames.shape[0]] = prompt_frames.transpose(0, 1)
    both = torch.cat([rows, rows + state.batch_size])
    caches = [
        StreamCache(_rows(c, both), torch.cat([flow.ratio * n] * 2), frame_window) for c in state.step_caches
    ]
    z = flow.decoder.noise(flow.ratio * consumed, frames, device, mu.dtype)
    mel = flow.decoder.sample(z, mask, mu * mask, state.spks[rows], cond, frame_mask, caches)
    for stored, cache in zip(state.step_caches, caches):
        _put_rows(stored, both, cache.tensors, 2 * state.batch_size)
    return mel


def _rows(cache: dict[str, Tensor], rows: Tensor) -> dict[str, Tensor]:
    return {key: value[rows] for key, value in cache.items()}


def _put_rows(cache: dict[str, Tensor], rows: Tensor, update: dict[str, Tensor], batch: int) -> None:
    """Write the rows of a chunk's updated windows back into the session caches (allocated on first use)."""
    for key, value in update.items():
        if key not in cache:
            cache[key] = value.new_zeros(batch, *value.shape[1:])
        cache[key][rows] = value
