"""MinMo's streaming voice decoder on ``CosyVoice2LM``: semantic vectors in, speech tokens out, chunk by chunk.

Each step reads ``ratio.text`` (5) semantic vectors per row and writes up to ``ratio.speech`` (15) speech
tokens, with one KV cache kept across steps: exactly the 5:15 layout that ``decoder_forward`` trains on.
A row whose text is complete (``state.end_input(rows)``) brings its last 0-5 vectors; the turn-of-speech
token follows them and the row writes speech until eos, 15 tokens per step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from minmo_lightning.contracts import SemanticChunk, TokenBatch

from .generation import ratio_cap, warn_cap
from .layout import SOS_ROW, TASK_ROW
from .state import VoiceLMState

if TYPE_CHECKING:
    from .cosyvoice2_lm import CosyVoice2LM


def _row_list(rows: Tensor) -> list[int]:
    return rows.nonzero().flatten().tolist()


def _check_chunk(model: CosyVoice2LM, chunk: SemanticChunk, state: VoiceLMState, lengths: Tensor) -> None:
    text_size, speech_size = model.ratio.text, model.ratio.speech
    if chunk.vectors.values.shape[0] != state.batch_size:
        raise ValueError(
            f"chunk has batch {chunk.vectors.values.shape[0]} but the state was made for {state.batch_size}"
        )
    if bool((lengths > text_size).any()):
        raise ValueError(
            f"a chunk holds at most {text_size} semantic vectors per row (mix ratio {text_size}:{speech_size}), "
            f"got {lengths.tolist()}"
        )
    late = state.turn_of_speech_fed & (lengths > 0)
    if bool(late.any()):
        raise ValueError(
            f"rows {_row_list(late)} already ended their text (end_input) and had the turn of speech; "
            "send empty chunks until they finish, or reset them to start a new turn"
        )
    prefix = chunk.prefix
    if prefix is not None and bool((state.started & (prefix.lengths.to(lengths.device) > 0)).any()):
        raise ValueError("a prefix is read once per turn, before the first chunk; these rows already started")


def _check_live_rows(model: CosyVoice2LM, state: VoiceLMState, lengths: Tensor, live: Tensor) -> None:
    text_size = model.ratio.text
    empty = live & ~state.started & (lengths == 0)
    if bool(empty.any()):
        raise ValueError(
            f"empty text: rows {_row_list(empty)} start a turn with no semantic vectors; a turn needs at least "
            "one text token"
        )
    short = live & ~state.input_ended & (lengths != text_size)
    if bool(short.any()):
        raise ValueError(
            f"rows {_row_list(short)} brought {lengths[short].tolist()} semantic vectors: a row brings exactly "
            f"{text_size} per step while its text goes on; call state.end_input(rows) before the step that "
            f"brings its last 0-{text_size}"
        )


def scatter_parts(parts: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """Concatenate per-row variable-length parts ``(values [B, n, D], counts [B])`` left-aligned.

    Returns ``inputs`` [B, T, D] (zeros after each row's end) and ``valid`` [B, T]. One scatter per part.
    """
    counts = torch.stack([c for _, c in parts], 1)
    starts = counts.cumsum(1) - counts
    total = counts.sum(1)
    values0 = parts[0][0]
    batch, dim = values0.shape[0], values0.shape[-1]
    out = values0.new_zeros(batch, max(int(total.max()), 1), dim)
    for p, (values, count) in enumerate(parts):
        slot = torch.arange(values.shape[1], device=out.device)[None]
        take = slot < count[:, None]
        rows = torch.arange(batch, device=out.device)[:, None].expand_as(take)
        out[rows[take], (starts[:, p : p + 1] + slot).expand_as(take)[take]] = values[take].to(out.dtype)
    valid = torch.arange(out.shape[1], device=out.device)[None] < total[:, None]
    return out, valid


@torch.no_grad()
def read_chunk(model: CosyVoice2LM, chunk: SemanticChunk, state: VoiceLMState) -> TokenBatch:
    """One streaming step (``CosyVoice2LM.step``): returns this call's speech tokens per row.

    A row still reading text brings exactly ``ratio.text`` vectors and gets ``ratio.speech`` tokens (eos is
    banned). A row marked with ``state.end_input`` brings its last 0 to ``ratio.text`` vectors: a full chunk
    still gets its 15 tokens first; a shorter one (empty included) is followed by the turn of speech, after
    which the row writes speech until eos or ``max_token_text_ratio`` (``state.finished``), 15 tokens per
    call (send empty chunks to continue). ``chunk.prefix`` is read once, before a row's first vectors.
    """
    speech_size = model.ratio.speech
    semantic, prefix = chunk.vectors, chunk.prefix
    lengths = semantic.lengths.to(state.position.device)
    _check_chunk(model, chunk, state, lengths)
    sample = model.sampler(state.options)
    live = ~state.finished
    if not bool(live.any()):
        return TokenBatch(lengths.new_zeros(state.batch_size, 0), torch.zeros_like(lengths))
    _check_live_rows(model, state, lengths, live)
    fresh = live & ~state.started
    turn_of_speech = live & state.input_ended & ~state.turn_of_speech_fed & (lengths < model.ratio.text)
    special = model.llm_embedding.weight
    batch, dim = state.batch_size, model.hidden_size
    parts = [(special[SOS_ROW].expand(batch, 1, dim), fresh.long())]
    if prefix is not None:
        parts.append((prefix.values, torch.where(fresh, prefix.lengths.to(lengths.device), 0)))
    parts += [
        (model.speech_embedding(state.pending)[:, None], (live & state.has_pending).long()),
        (semantic.values, torch.where(live, lengths, 0)),
        (special[TASK_ROW].expand(batch, 1, dim), turn_of_speech.long()),
    ]
    inputs, valid = scatter_parts(parts)
    state.started |= live
    state.turn_of_speech_fed |= turn_of_speech
    state.text_count = state.text_count + torch.where(live, lengths, 0)
    state.has_pending &= ~live
    max_len = ratio_cap(model, state.text_count.clamp(min=1))

    # speech ids only while text is coming; eos too once the turn of speech was given; never fill
    ids = torch.arange(model.ids.num_outputs, device=lengths.device)[None]
    eos_allowed = (ids == model.ids.eos) & state.turn_of_speech_fed[:, None]
    banned = ~((ids < model.speech_vocab_size) | eos_allowed)
    tokens = lengths.new_zeros(batch, speech_size)
    produced = torch.zeros_like(lengths)
    active, capped = live.clone(), torch.zeros_like(live)
    hidden = model.feed(state, inputs, valid)
    for g in range(speech_size):
        logp = model.log_probs(hidden).masked_fill(banned, float("-inf"))
        token = sample(logp, state.recent_tokens())
        stop = token == model.ids.eos
        state.finished |= active & stop
        emit = active & ~stop
        tokens[:, g] = torch.where(emit, token, 0)
        produced += emit.long()
        state.remember(token, emit)
        capped |= emit & state.turn_of_speech_fed & (state.speech_count >= max_len)
        state.finished |= capped
        active = emit & ~state.finished
        state.pending = torch.where(emit, token, state.pending)
        if g == speech_size - 1 or not bool(active.any()):
            state.has_pending |= active
            break
        hidden = model.feed(state, model.speech_embedding(token)[:, None], active[:, None])
    state.trim_cache()
    if bool(capped.any()):
        cap = f"max_token_text_ratio={model.hparams.max_token_text_ratio:g} x their text"
        warn_cap(f"CosyVoice2LM.step rows {_row_list(capped)}", cap)
    return TokenBatch(tokens[:, : int(produced.max())], produced)
