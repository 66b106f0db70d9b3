"""CTC pieces shared by the voice encoders and the speech tokenizer: greedy decoding, the alignment check,
SpecAugment on LFR features."""

from __future__ import annotations

import torch
from torch import Tensor

from minmo_lightning.contracts import TokenBatch, lengths_to_mask


def greedy_ctc(log_probs: Tensor, lengths: Tensor, blank_id: int = 0) -> list[list[int]]:
    """Argmax per frame, merge repeats, drop blanks (funasr's ``inference`` decoding), per utterance."""
    best = log_probs.argmax(-1)
    keep = torch.ones_like(best, dtype=torch.bool)
    keep[:, 1:] = best[:, 1:] != best[:, :-1]
    keep &= (best != blank_id) & lengths_to_mask(lengths, best.shape[1])
    return [row[mask].tolist() for row, mask in zip(best, keep)]


def count_unalignable(targets: TokenBatch, frames: Tensor) -> int:
    """Items CTC cannot align: their labels, plus a blank between each pair of equal neighbours, outnumber
    their ``frames`` (counted, never hidden: ``zero_infinity`` silences their loss)."""
    tokens = targets.tokens
    later = torch.arange(1, tokens.shape[1], device=tokens.device) < targets.lengths[:, None]
    repeats = ((tokens[:, 1:] == tokens[:, :-1]) & later).sum(1)
    return int((targets.lengths + repeats > frames).sum())


def spec_augment_lfr(
    feats: Tensor,
    lengths: Tensor,
    n_mels: int,
    freq_masks: int = 2,
    freq_width: int = 10,
    time_masks: int = 2,
    time_ratio: float = 0.05,
) -> Tensor:
    """SpecAugment on LFR-stacked features: a frequency mask hides the same mel bins in every stacked
    frame (funasr's ``SpecAugLFR``); time masks hide up to ``time_ratio`` of each utterance."""
    batch, steps, dim = feats.shape
    device = feats.device
    keep = torch.ones(batch, steps, dim // n_mels, n_mels, dtype=torch.bool, device=device)
    bins = torch.arange(n_mels, device=device)
    for _ in range(freq_masks):
        width = torch.randint(0, freq_width + 1, (batch, 1), device=device)
        start = (torch.rand(batch, 1, device=device) * (n_mels - width)).long()
        hidden = (bins >= start) & (bins < start + width)
        keep &= ~hidden[:, None, None, :]
    frames = torch.arange(steps, device=device)
    for _ in range(time_masks):
        width = (torch.rand(batch, 1, device=device) * time_ratio * lengths[:, None]).long()
        start = (torch.rand(batch, 1, device=device) * (lengths[:, None] - width).clamp(min=0)).long()
        hidden = (frames >= start) & (frames < start + width)
        keep &= ~hidden[:, :, None, None]
    return feats * keep.reshape(batch, steps, dim)
