"""Activation checkpointing for our own layer loops (transformers models have their own switch).

A full-size encoder fine-tuned on minutes of audio per batch keeps every layer's activations for the
backward pass; recomputing them instead trades roughly a third more step time for one layer's worth of
activation memory, which is what lets the stage-1 recipes' batches fit on one GPU.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


def call_layer(layer: nn.Module, *args: Any, recompute: bool = False) -> Any:
    """``layer(*args)``; with ``recompute`` (and autograd on) its activations are rebuilt in backward."""
    if recompute and torch.is_grad_enabled():
        return checkpoint(layer, *args, use_reentrant=False)
    return layer(*args)
