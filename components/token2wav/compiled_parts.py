"""Token2wav's compiled decode path: the modules a streaming step spends its time in, compiled in place.

The flow's estimator runs once per Euler step (10 per chunk, conditioned and unconditioned rows together) and
dominates a chunk's cost; HiFT's trunk (``decode``: the conv stack from mel and excitation to waveform) comes
next. The flow pads every segment to one chunk (``flow_streaming._encode_segment``), so the estimator meets
one shape per batch size (compiled twice: a session's first chunk has empty caches); the vocoder's windows
vary in length, so its trunk compiles with dynamic shapes, as one function: compiled module by module, its
many ResBlocks would each count against torch.compile's recompile limit.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


def compile_in_place(modules: Iterable[nn.Module], mode: str | None, dynamic: bool) -> None:
    """Compile each module's call (``nn.Module.compile``); ``mode`` None puts it back to eager."""
    for module in modules:
        if mode is None:
            module._compiled_call_impl = None  # what nn.Module.compile sets; None calls forward eagerly
        else:
            module.compile(mode=mode, dynamic=dynamic)


def compile_method(owner: nn.Module, name: str, mode: str | None) -> None:
    """Compile ``owner.<name>`` for this instance alone (an instance attribute over the class's method), shapes
    dynamic; ``mode`` None goes back to the method."""
    if mode is None:
        owner.__dict__.pop(name, None)
    else:
        method = getattr(type(owner), name).__get__(owner)
        owner.__dict__[name] = torch.compile(method, mode=mode, dynamic=True)
