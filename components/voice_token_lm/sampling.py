"""Speech-token samplers: greedy and CosyVoice2's repetition-aware sampling (RAS), batched.

RAS draws from the top-p/top-k nucleus; when the drawn token already occurs at least ``win_size * tau_r``
times among the last ``win_size`` tokens, it redraws from the whole distribution (as CosyVoice2's
``random_sampling``: the repeated token may come again, now with its plain probability). This breaks the loops
autoregressive speech LMs fall into without hurting normal tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class SpeechSamplingConfig:
    """CosyVoice2 defaults: top_p 0.8, top_k 25, window 10, tau_r 0.1. ``greedy`` takes the argmax instead."""

    greedy: bool = False
    top_p: float = 0.8
    top_k: int = 25
    win_size: int = 10
    tau_r: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must lie in (0, 1], got {self.top_p}")
        if self.top_k < 1 or self.win_size < 0:
            raise ValueError(f"top_k must be >= 1 and win_size >= 0, got {self.top_k} and {self.win_size}")


def nucleus_sample(
    logp: Tensor, top_p: float, top_k: int, generator: torch.Generator | None = None
) -> Tensor:
    """Draw from the smallest set of most likely ids whose mass reaches ``top_p``, at most ``top_k`` of them."""
    probs, order = logp.softmax(-1).sort(dim=-1, descending=True, stable=True)
    mass_before = probs.cumsum(-1) - probs
    rank = torch.arange(probs.shape[-1], device=probs.device)
    keep = (mass_before < top_p) & (rank < top_k)
    choice = torch.multinomial(probs * keep, 1, generator=generator)
    return order.gather(-1, choice).squeeze(-1)


def sample_tokens(
    logp: Tensor, history: Tensor, config: SpeechSamplingConfig, generator: torch.Generator | None = None
) -> Tensor:
    """``logp`` [B, V] (masked ids at -inf) and ``history`` [B, W] of recent ids (-1 = none) -> ids [B]."""
    if config.greedy:
        return logp.argmax(-1)
    top = nucleus_sample(logp, config.top_p, config.top_k, generator)
    if config.win_size == 0:
        return top
    window = history[:, -config.win_size :]
    repeats = (window == top[:, None]).sum(-1)
    redraw = repeats >= config.win_size * config.tau_r
    if not bool(redraw.any()):
        return top
    fallback = torch.multinomial(logp.softmax(-1), 1, generator=generator).squeeze(-1)
    return torch.where(redraw, fallback, top)
