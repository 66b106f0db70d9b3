"""CosyVoice2's training loss of the speech LM: label-smoothed KL on the scored positions of a layout."""

from __future__ import annotations

import math

from torch import Tensor

from minmo_lightning.contracts import IGNORE_INDEX


def label_smoothed_kl(logits: Tensor, targets: Tensor, smoothing: float, normalize_length: bool) -> Tensor:
    """CosyVoice2's ``LabelSmoothingLoss``: KL(smoothed one-hot || softmax), summed over scored positions.

    Divided by the number of scored positions (``normalize_length``) or by the batch size.
    """
    size = logits.shape[-1]
    logp = logits.float().log_softmax(-1).reshape(-1, size)
    target = targets.reshape(-1)
    scored = target != IGNORE_INDEX
    logp, target = logp[scored], target[scored]
    confidence, low = 1.0 - smoothing, smoothing / (size - 1)
    entropy_term = (size - 1) * low * math.log(low) if low > 0 else 0.0
    entropy_term += confidence * math.log(confidence) if confidence > 0 else 0.0
    cross = low * logp.sum(-1) + (confidence - low) * logp.gather(-1, target[:, None]).squeeze(-1)
    total = (entropy_term - cross).sum()
    return total / (scored.sum().clamp(min=1) if normalize_length else targets.shape[0])
