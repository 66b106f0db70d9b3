"""Count what autograd keeps for backward: how the tests see that activation recomputation really happens."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def run_counting_saved(fn: Callable[[], Any]) -> tuple[Any, int]:
    """``fn()`` and the number of tensor elements autograd saved while it ran."""
    saved: list[int] = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved.append(tensor.numel())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        result = fn()
    return result, sum(saved)
