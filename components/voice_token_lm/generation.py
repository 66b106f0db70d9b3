"""CosyVoice2's own TTS decoders on ``CosyVoice2LM``: unistream ``generate`` (batched) and ``generate_bistream``.

Both follow the released ``Qwen2LM.inference`` / ``inference_bistream`` schedules exactly (golden item
``cosyvoice2_llm``); MinMo's streaming voice decoder is ``CosyVoice2LM.step`` (``streaming.py``).

Every decoding loop here has a length cap (``max_token_text_ratio`` x the text's tokens, and ``max_tokens``
when given): weights that never give end-of-speech stop there, and say so with a ``SpeechCapReached``
warning naming the cap, since speech cut at a cap may end mid-word.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from minmo_lightning.contracts import TokenBatch, VoiceLMStreamOptions

from .layout import SOS_ROW, TASK_ROW

if TYPE_CHECKING:
    from .cosyvoice2_lm import CosyVoice2LM


class SpeechCapReached(UserWarning):
    """A speech decoder stopped at its length cap, not at end-of-speech: the speech may be cut short."""


def warn_cap(who: str, cap: str) -> None:
    warnings.warn(
        f"{who} stopped at {cap} without end-of-speech, so the speech may be cut short; raise the cap, or "
        "check the voice LM's weights (a trained one ends its speech)",
        SpeechCapReached,
        stacklevel=3,
    )


def ratio_cap(model: CosyVoice2LM, text_tokens: Tensor) -> Tensor:
    """The speech tokens a text may get: ``max_token_text_ratio`` x its tokens (CosyVoice2's ``max_len``)."""
    return (text_tokens * model.hparams.max_token_text_ratio).long()


def ratio_cap_name(model: CosyVoice2LM, text_tokens: int) -> str:
    by_ratio = int(ratio_cap(model, torch.tensor(text_tokens)))
    ratio = model.hparams.max_token_text_ratio
    return f"max_token_text_ratio={ratio:g} x {text_tokens} text tokens = {by_ratio} speech tokens"


def _check_max_tokens(max_tokens: int | None) -> None:
    if max_tokens is not None and max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1 (or None for the ratio cap alone), got {max_tokens}")


@torch.no_grad()
def generate(
    model: CosyVoice2LM,
    text: TokenBatch,
    prompt_text: TokenBatch | None = None,
    prompt_speech: TokenBatch | None = None,
    options: VoiceLMStreamOptions | None = None,
    max_tokens: int | None = None,
) -> TokenBatch:
    """CosyVoice2 unistream inference, batched: [sos, prompt text + text, task_id, prompt speech] -> speech.

    eos is banned for the first ``min_token_text_ratio * len(text)`` tokens; a row stops at any stop id
    (eos, the unused id, fill) or after ``max_token_text_ratio * len(text)`` tokens. ``options.sampler``
    defaults to RAS with the block's ``sampling`` settings; ``max_tokens`` caps every row. Rows stopped by
    a cap are named in a ``SpeechCapReached`` warning.
    """
    model.check_text(text.lengths, "text")
    _check_max_tokens(max_tokens)
    batch = text.tokens.shape[0]
    full_text = text if prompt_text is None else prompt_text.concat(text)
    if prompt_speech is None:
        prompt_speech = TokenBatch(text.tokens.new_zeros(batch, 0), torch.zeros_like(text.lengths))
    model.check_speech(prompt_speech, allow_empty=True)
    layout = model.build_layout(
        model.built_backbone().embed_text(full_text.tokens),
        full_text.lengths,
        prompt_speech,
        torch.zeros(batch, dtype=torch.bool, device=text.lengths.device),
    )
    # the layout ends with an eos target slot but no input for it: inputs are exactly the prompt
    state = model.init_state(batch, options)
    sample = model.sampler(state.options)
    hidden = model.feed(state, layout.inputs, layout.mask)
    min_len = (text.lengths * model.hparams.min_token_text_ratio).long()
    by_ratio = ratio_cap(model, text.lengths)
    max_len = by_ratio if max_tokens is None else by_ratio.clamp(max=max_tokens)
    tokens = text.tokens.new_zeros(batch, int(max_len.max()))
    active = max_len > 0
    for i in range(tokens.shape[1]):
        logp = model.log_probs(hidden)
        logp[:, model.ids.eos] = torch.where(i < min_len, float("-inf"), logp[:, model.ids.eos])
        token = sample(logp, state.recent_tokens())
        active = active & (token < model.speech_vocab_size)
        tokens[:, i] = torch.where(active, token, 0)
        state.remember(token, active)
        active = active & (state.speech_count < max_len)
        if not bool(active.any()):
            break
        hidden = model.feed(state, model.speech_embedding(token)[:, None], active[:, None])
    # a row that gave a stop id did so before its cap, so every row at its cap was stopped by it
    capped = (state.speech_count >= max_len).nonzero().flatten().tolist()
    if capped:
        caps = [
            f"max_tokens={max_tokens} speech tokens"
            if max_tokens is not None and max_tokens <= int(by_ratio[r])
            else ratio_cap_name(model, int(text.lengths[r]))
            for r in capped
        ]
        warn_cap(f"CosyVoice2LM.generate rows {capped}", "; ".join(dict.fromkeys(caps)))
    return TokenBatch(tokens[:, : int(state.speech_count.max())], state.speech_count.clone())


@torch.no_grad()
def generate_bistream(
    model: CosyVoice2LM,
    text_chunks: Iterable[Tensor],
    prompt_text: Tensor | None = None,
    prompt_speech: Tensor | None = None,
    options: VoiceLMStreamOptions | None = None,
    max_tokens: int | None = None,
) -> Iterator[int]:
    """CosyVoice2's ``inference_bistream`` for one utterance: text arrives in pieces, speech streams out.

    Text ids (1-D tensors) are buffered and fed 5 at a time; after each 15 speech tokens the LM gives
    fill (forced on schedule) and waits for the next 5 text tokens. When the text iterator ends, the
    rest of the text and task_id follow and speech runs to eos. Prompt speech tokens are interleaved
    with the first text chunks. This reproduces the released schedule exactly, including its quirk: when
    the text ends right after a fill, the last speech token is fed a second time before the final text.

    Caps (the reference's final loop has none): after ``max_tokens`` speech tokens the generator ends at
    once, text left unread (as a consumer that stops pulling: the golden fixture records the cap it read
    up to); after the text, speech ends at ``max_token_text_ratio`` x the text's tokens. Either cap warns
    (``SpeechCapReached``). While text is coming, the forced fill bounds each wait to 16 steps.
    """
    _check_max_tokens(max_tokens)
    text_size, speech_size = model.ratio.text, model.ratio.speech
    backbone, special = model.built_backbone(), model.llm_embedding.weight
    device = special.device
    empty = torch.zeros(0, dtype=torch.long, device=device)
    prompt_text = empty if prompt_text is None else prompt_text.reshape(-1).to(device)
    prompt_speech = empty if prompt_speech is None else prompt_speech.reshape(-1).to(device)
    model.check_speech(
        TokenBatch(prompt_speech[None], torch.tensor([prompt_speech.numel()], device=device)),
        allow_empty=True,
    )
    text_cache = backbone.embed_text(prompt_text)[None]
    prompt_emb = model.speech_embedding(prompt_speech)[None]
    lm_input = special[SOS_ROW].reshape(1, 1, -1)
    state = model.init_state(1, options)
    sample = model.sampler(state.options)
    out: list[int] = []  # every id the LM gave, fills included (RAS looks back over them)
    next_fill = (prompt_speech.numel() // speech_size + 1) * speech_size - prompt_speech.numel()
    text_total = spoken = 0

    def cap_reached(final: bool) -> str | None:
        if max_tokens is not None and spoken >= max_tokens:
            return f"max_tokens={max_tokens} speech tokens"
        if final and spoken >= int(ratio_cap(model, torch.tensor(text_total))):
            return ratio_cap_name(model, text_total)
        return None

    def decode(final: bool) -> Iterator[int]:
        """Speech until fill (text coming) or eos (text ended); returns the cap that stopped it, if one did."""
        nonlocal lm_input, next_fill, spoken
        while (cap := cap_reached(final)) is None:
            valid = torch.ones(lm_input.shape[:2], dtype=torch.bool, device=device)
            logp = model.log_probs(model.feed(state, lm_input, valid))
            if not final and len(out) == next_fill:
                token = model.ids.fill
            else:
                if not final:
                    logp[:, model.ids.eos] = float("-inf")
                history = torch.tensor(out[-state.history.shape[1] :] or [-1], device=device)[None]
                token = int(sample(logp, history)[0])
            if token == model.ids.fill:
                next_fill = len(out) + speech_size + 1
            out.append(token)
            if token == (model.ids.fill if not final else model.ids.eos):
                return None
            if token >= model.speech_vocab_size:
                raise ValueError(f"CosyVoice2LM produced special id {token} mid-speech; check the weights")
            spoken += 1
            yield token
            lm_input = model.speech_embedding.weight[token].reshape(1, 1, -1)
        warn_cap("CosyVoice2LM bistream decoding", cap)
        return cap

    for piece in text_chunks:
        piece = piece.reshape(-1).to(device)
        text_total += piece.numel()
        text_cache = torch.cat([text_cache, backbone.embed_text(piece)[None]], 1)
        while prompt_emb.shape[1] and text_cache.shape[1] >= text_size:
            lm_input = torch.cat([lm_input, text_cache[:, :text_size], prompt_emb[:, :speech_size]], 1)
            text_cache, prompt_emb = text_cache[:, text_size:], prompt_emb[:, speech_size:]
        if prompt_emb.shape[1]:
            continue  # prompt speech still waits for text
        after_fill = bool(out) and out[-1] == model.ids.fill
        if after_fill or (not out and lm_input.shape[1] == 1):
            if text_cache.shape[1] < text_size:
                continue  # wait for 5 text tokens
            chunk = text_cache[:, :text_size]
            lm_input = chunk if after_fill else torch.cat([lm_input, chunk], 1)
            text_cache = text_cache[:, text_size:]
        if (yield from decode(final=False)) is not None:
            return
    if text_total == 0:
        raise ValueError("empty text: the text stream gave no tokens")
    lm_input = torch.cat([lm_input, text_cache, special[TASK_ROW].reshape(1, 1, -1)], 1)
    yield from decode(final=True)
