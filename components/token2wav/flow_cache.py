"""Chunk masks and bounded left-context caches shared by the flow's encoder and estimator.

The flow is chunk-causal: a position attends to its own chunk and to a bounded window of positions before
that chunk, and its convolutions are causal (the pre-lookahead layer excepted, which reads the next 3
tokens). The offline path expresses that with an attention mask; the streaming path with caches that hold
exactly the left context the mask allows, so both compute the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def chunk_ids(
    lengths: Tensor,
    max_length: int,
    chunk_size: int,
    prompt_lengths: Tensor | None = None,
    lookahead: int = 0,
) -> Tensor:
    """``[B, T]`` chunk index of every token.

    Without ``prompt_lengths`` chunks count from position 0 (the reference's ``static_chunk_size``). With
    them, chunks follow a streaming session (``stream_chunk_end``): the prompt is cut into chunks of its own
    except its last ``lookahead`` tokens (those whose look-ahead reaches into the new tokens), which join the
    first chunk of new tokens; chunk boundaries then sit ``lookahead`` tokens before every multiple of
    ``chunk_size`` new tokens, so each chunk's look-ahead ends exactly at such a multiple.
    """
    position = torch.arange(max_length, device=lengths.device).expand(lengths.shape[0], -1)
    if prompt_lengths is None:
        return torch.div(position, chunk_size, rounding_mode="floor")
    prompt = prompt_lengths.to(lengths.device)[:, None]
    body = (prompt - lookahead).clamp(min=0)
    body_chunks = torch.div(body + chunk_size - 1, chunk_size, rounding_mode="floor")
    in_body = torch.div(position, chunk_size, rounding_mode="floor")
    shift = lookahead % chunk_size
    after = body_chunks + torch.div(position - prompt + shift, chunk_size, rounding_mode="floor").clamp(min=0)
    return torch.where(position < body, in_body, after)


def stream_chunk_end(done: int, prompt: int, chunk_size: int, lookahead: int) -> int:
    """Where the chunk starting at token ``done`` (prompt included) ends in a streaming session, past the
    prompt's body: the first new chunk holds ``chunk_size - lookahead`` new tokens (after the prompt's last
    ``lookahead``), every later one ``chunk_size`` (``chunk_ids`` with ``prompt_lengths``).

    Why: a producer that writes ``chunk_size`` tokens per step (the voice LM's 15 per 5:15 step) then hands
    over each chunk together with its look-ahead, so every step's tokens become audio at once. Chunks counted
    from the first new token would wait for the next step's first ``lookahead`` tokens: the first audio one
    voice-LM step (5 LLM and 15 voice-LM tokens) later than MinMo's ``5*d_llm + 15*d_lm + 15*d_syn``.
    """
    shift = lookahead % chunk_size
    return prompt - shift + chunk_size * (max((done - prompt + shift) // chunk_size, 0) + 1)


def chunk_attention_mask(ids: Tensor | None, valid: Tensor, window: int) -> Tensor:
    """``[B, T, T]`` bool: query i may see key j.

    ``ids`` None means full context (every valid key). Otherwise keys in a later chunk are hidden, and
    with ``window >= 0`` so are keys more than ``window`` positions before the start of the query's chunk.
    """
    batch, length = valid.shape
    if ids is None:
        return valid[:, None, :].expand(batch, length, length)
    allowed = ids[:, None, :] <= ids[:, :, None]
    if window >= 0:
        chunk_start = torch.searchsorted(ids.contiguous(), ids.contiguous())
        key = torch.arange(length, device=valid.device)
        allowed = allowed & (key[None, None, :] >= (chunk_start - window)[:, :, None])
    return _no_empty_rows(allowed & valid[:, None, :])


def _no_empty_rows(mask: Tensor) -> Tensor:
    """Let a query that may see nothing (a padded one) see everything, as the reference does; its output is masked later."""
    return mask | ~mask.any(dim=-1, keepdim=True)


def window_mask(cached: Tensor, window: int, lengths: Tensor, max_length: int) -> Tensor:
    """``[B, T, window + T]`` bool mask of one streaming chunk over [cached window ; the chunk itself].

    ``cached`` [B] counts the real entries at the end of each row's window; the chunk is one attention
    chunk, so every valid query sees every valid key of it.
    """
    slot = torch.arange(window, device=lengths.device)
    left = slot[None, :] >= (window - cached)[:, None]
    current = torch.arange(max_length, device=lengths.device)[None, :] < lengths[:, None]
    keys = torch.cat([left, current], dim=1)
    return _no_empty_rows(keys[:, None, :].expand(-1, max_length, -1))


@dataclass
class StreamCache:
    """Left context of every cached layer at one time resolution, for the rows of one chunk.

    ``tensors`` maps a layer's ``cache_key`` to its window, time on dim 2 (attention keys/values
    [B, H, W, d], convolution inputs [B, C, k-1]). ``lengths`` [B] counts the valid frames of the current
    chunk per row (rows are right-padded to a common length); ``window`` is the attention window.
    """

    tensors: dict[str, Tensor]
    lengths: Tensor
    window: int

    def extend(self, key: str, new: Tensor, size: int) -> Tensor:
        """Return [cached ; new] along time and keep the last ``size`` valid entries for the next chunk."""
        old = self.tensors.get(key)
        if old is None:
            old = new.new_zeros(*new.shape[:2], size, *new.shape[3:])
        full = torch.cat([old, new], dim=2)
        end = self.lengths.to(new.device) + size
        index = end[:, None] - size + torch.arange(size, device=new.device)[None, :]
        index = index.view(new.shape[0], 1, size, *([1] * (new.dim() - 3)))
        self.tensors[key] = torch.take_along_dim(full, index, dim=2)
        return full


def name_cache_keys(root: torch.nn.Module) -> None:
    """Give every cached layer (any module with a ``cache_key`` attribute) its unique module path."""
    for name, module in root.named_modules():
        if hasattr(module, "cache_key"):
            module.cache_key = name
