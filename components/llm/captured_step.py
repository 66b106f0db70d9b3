"""Compiled decode steps over a static KV cache: what ``compile=True`` runs for the LLM and the voice token LM.

A decode step feeds one new position per row. Eager on a GPU, it costs mostly the host launching hundreds of
small kernels (a 7B step: 28 layers x ~15 kernels), so it is no faster at batch 1 than at batch 8. With the
KV cache at fixed shapes and addresses (``StaticKVCache``) the step is one graph: ``torch.compile`` with
mode ``reduce-overhead`` captures it as a CUDA graph that replays with one launch; on a CPU the default mode
fuses its kernels with inductor (no graphs). Calls that feed several positions (prefill, a chunk of semantic
vectors) stay eager: they are few per response and of varying length.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch
from minmo_lightning.components.llm.kv_cache import StaticKVCache
from torch import Tensor, nn

#: forward(embeds [B, t, D], prepared mask, positions [B, t], cache) -> tensors
StepForward = Callable[[Tensor, dict[str, Tensor], Tensor, StaticKVCache], Any]


class CapturedStep:
    """``forward`` run eagerly for several positions and compiled for one, over a ``StaticKVCache``."""

    def __init__(self, forward: StepForward, mode: str) -> None:
        self.forward, self.mode = forward, mode
        # static shapes first; a second batch size or cache bucket recompiles once with those sizes dynamic
        self.compiled = torch.compile(forward, mode=mode)

    def __call__(
        self, embeds: Tensor, real: Tensor | None, positions: Tensor | None, cache: StaticKVCache
    ) -> Any:
        """``real`` [B, cache.columns + t] marks the real columns, the new ones included (None: all);
        ``positions`` [B, t] (None: the column indices)."""
        length = embeds.shape[1]
        if real is None:
            real = torch.ones(embeds.shape[0], cache.columns + length, dtype=torch.bool, device=embeds.device)
        if positions is None:
            positions = cache.columns + torch.arange(length, device=embeds.device)[None].expand(
                embeds.shape[0], -1
            )
        cache.reserve(length)
        mask = cache.attention_mask(real, length)
        if length == 1:
            if "reduce-overhead" in self.mode:
                torch.compiler.cudagraph_mark_step_begin()
            # a CUDA graph writes its outputs to the same memory at every replay: keep copies
            out = _cloned(self.compiled(embeds, mask, positions, cache))
        else:
            out = self.forward(embeds, mask, positions, cache)
        cache.advance(length)
        return out


def _cloned(out: Any) -> Any:
    if isinstance(out, Tensor):
        return out.clone()
    return type(out)(_cloned(x) for x in out)


_STEPS: weakref.WeakKeyDictionary[nn.Module, dict[str, CapturedStep]] = weakref.WeakKeyDictionary()


def captured_step(owner: nn.Module, mode: str, forward: StepForward) -> CapturedStep:
    """``owner``'s step for ``mode``, compiled once and reused by every later session."""
    steps = _STEPS.setdefault(owner, {})
    if mode not in steps:
        steps[mode] = CapturedStep(forward, mode)
    return steps[mode]


def transformer_hidden(decoder: Callable[[], nn.Module]) -> StepForward:
    """The step of a transformers decoder stack (``decoder()`` returns e.g. ``Qwen2Model``, looked up at every
    call so a LoRA wrap or merge is seen): last hidden states [B, t, D]."""

    def forward(embeds: Tensor, mask: dict[str, Tensor], positions: Tensor, cache: StaticKVCache) -> Tensor:
        out = decoder()(
            inputs_embeds=embeds, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True
        )
        return out.last_hidden_state

    return forward


def causal_lm_step(model: Callable[[], nn.Module]) -> StepForward:
    """The step of a transformers causal LM (``model()`` e.g. ``Qwen2ForCausalLM``): (logits at the last
    position [B, 1, V], last hidden states [B, t, D])."""
    hidden_of = transformer_hidden(lambda: model().model)

    def forward(embeds: Tensor, mask: dict[str, Tensor], positions: Tensor, cache: StaticKVCache):
        hidden = hidden_of(embeds, mask, positions, cache)
        return model().lm_head(hidden[:, -1:]), hidden

    return forward
