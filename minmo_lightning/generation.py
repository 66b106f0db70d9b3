"""Batched KV-cached text generation that also returns each token's last-layer hidden state.

The voice decoder needs both the sampled text tokens and their hidden states, so generation is our own
loop over ``LLMBackbone.forward``: a prefill, then one new position per step (O(1) work per token given
the cache). Iterating a ``TextStream`` yields tokens as they are produced; ``generate`` collects them.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from minmo_lightning.blocks import LLMBackbone
from minmo_lightning.contracts import TokenBatch


@dataclass
class TextSamplingConfig:
    """``temperature == 0`` means greedy; otherwise top-k / top-p sampling."""

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None


@dataclass
class GeneratedStep:
    tokens: Tensor  # [B] the token produced at this step (pad once finished)
    embedding: Tensor  # [B, D] that token's input embedding (what the LLM was fed)
    hidden: Tensor  # [B, D] that token's last-layer hidden state
    finished: Tensor  # [B] bool, True once the item has produced eos (inclusive)
    active: Tensor  # [B] bool, True where ``tokens`` is a real token


@dataclass
class GenerationResult:
    tokens: Tensor  # [B, N]
    hidden_states: Tensor  # [B, N, D]
    lengths: Tensor  # [B] tokens up to and including eos


def sample_next(logits: Tensor, config: TextSamplingConfig, generator: torch.Generator | None) -> Tensor:
    if config.temperature <= 0:
        return logits.argmax(-1)
    logits = logits.float() / config.temperature
    if config.top_k > 0:
        kth = torch.topk(logits, min(config.top_k, logits.shape[-1])).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if config.top_p < 1.0:
        sorted_logits, order = logits.sort(-1, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop = cumulative - sorted_logits.softmax(-1) > config.top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


class TextCapReached(UserWarning):
    """Generation stopped at ``max_new_tokens`` before a row's end of turn."""


class TextStream:
    """Greedy/sampled generation, one ``GeneratedStep`` per iteration; prompts must be left padded.

    The prompt is prefilled on construction, so ``prompt_states`` [B, T, D] (the prompt's last-layer states,
    which MinMo's voice decoder reads in its per-turn query) are available before the first token. ``forced`` teacher-forces the answer instead of sampling it (each row's
    tokens, then eos): the states are those of the given text, e.g. to voice a known text.
    """

    @torch.no_grad()
    def __init__(
        self,
        llm: LLMBackbone,
        inputs_embeds: Tensor,
        attention_mask: Tensor,
        eos_token_id: int,
        pad_token_id: int,
        config: TextSamplingConfig,
        forced: TokenBatch | None = None,
    ) -> None:
        if bool((attention_mask[:, -1] == 0).any()):
            raise ValueError(
                "generation needs left-padded prompts (the last position of every row must be real)"
            )
        if forced is not None:  # one spare column, so a row's eos step never indexes past the end
            forced = TokenBatch(torch.nn.functional.pad(forced.tokens, (0, 1)), forced.lengths)
        self.llm, self.config, self.forced = llm, config, forced
        self.eos_token_id, self.pad_token_id = eos_token_id, pad_token_id
        self.generator = None
        if config.seed is not None:
            self.generator = torch.Generator(device=inputs_embeds.device).manual_seed(config.seed)
        self.cache = llm.new_cache()
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        self._out = llm(
            inputs_embeds,
            attention_mask=attention_mask,
            cache=self.cache,
            position_ids=positions,
            logits_to_keep=1,
        )
        self._next_position = positions[:, -1:] + 1
        self._attention_mask = attention_mask
        self.prompt_states = self._out.hidden_states
        #: [B] rows whose answer ``max_new_tokens`` cut before its end (set when the stream ends)
        self.cut = torch.zeros(attention_mask.shape[0], dtype=torch.bool, device=attention_mask.device)

    @torch.no_grad()
    def __iter__(self) -> Iterator[GeneratedStep]:
        llm, out, mask = self.llm, self._out, self._attention_mask
        finished = torch.zeros(mask.shape[0], dtype=torch.bool, device=mask.device)
        steps = self.config.max_new_tokens if self.forced is None else int(self.forced.lengths.max()) + 1
        for i in range(steps):
            if self.forced is None:
                tokens = sample_next(out.logits[:, -1], self.config, self.generator)
            else:
                given = self.forced.tokens[:, i].to(mask.device)
                ended = i >= self.forced.lengths.to(mask.device)
                tokens = torch.where(ended, torch.full_like(given, self.eos_token_id), given)
            active = ~finished
            tokens = torch.where(active, tokens, torch.full_like(tokens, self.pad_token_id))
            finished = finished | (tokens == self.eos_token_id)
            mask = torch.cat([mask, active[:, None].long()], dim=1)
            embedding = llm.embed(tokens)
            out = llm(
                embedding[:, None], attention_mask=mask, cache=self.cache, position_ids=self._next_position
            )
            self._next_position = self._next_position + 1
            yield GeneratedStep(tokens, embedding, out.hidden_states[:, -1], finished.clone(), active)
            if bool(finished.all()):
                return
        self.cut = ~finished
        rows = self.cut.nonzero().flatten().tolist()
        warnings.warn(
            f"text generation stopped at max_new_tokens={steps} in row(s) {rows}: the answer is cut there",
            TextCapReached,
            stacklevel=2,
        )


def generate(
    llm: LLMBackbone,
    inputs_embeds: Tensor,
    attention_mask: Tensor,
    eos_token_id: int,
    pad_token_id: int,
    config: TextSamplingConfig,
) -> GenerationResult:
    steps = list(TextStream(llm, inputs_embeds, attention_mask, eos_token_id, pad_token_id, config))
    if not steps:
        empty = inputs_embeds.new_zeros(inputs_embeds.shape[0], 0, dtype=torch.long)
        return GenerationResult(empty, inputs_embeds[:, :0], empty.sum(-1))
    tokens = torch.stack([s.tokens for s in steps], dim=1)
    hidden = torch.stack([s.hidden for s in steps], dim=1)
    lengths = torch.stack([s.active for s in steps], dim=1).sum(-1)
    return GenerationResult(tokens, hidden, lengths)
