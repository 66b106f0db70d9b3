"""Token2wav's compiled decode path: the modules a streaming step spends its time in, compiled in place.

The flow's estimator runs once per Euler step (10 per chunk, conditioned and unconditioned rows together) and
dominates a chunk's cost; HiFT's trunk (``decode``: the conv stack from mel and excitation to waveform) comes
next. The flow pads every segment to one chunk (``flow_streaming._encode_segment``), so the estimator meets
one shape per batch size (compiled twice at the first: a session's first chunk has empty caches, then once
more with the batch dimension dynamic when another batch size comes); the vocoder's windows
vary in length, so its trunk compiles with dynamic shapes, as one function: compiled module by module, its
many ResBlocks would each count against torch.compile's recompile limit.

Under CUDA graphs (``reduce-overhead``) a replay writes its outputs to the memory of the previous replay, and
the estimator replays 10 times per chunk while the caches it extends are read only after the last: every
call's outputs and new cache windows are copied out before the next.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from minmo_lightning.components.token2wav.flow_cache import StreamCache
from torch import nn


def compile_in_place(module: nn.Module, mode: str | None) -> None:
    """Compile ``module``'s call, shapes static until a second batch size makes them dynamic; ``mode`` None puts
    it back to eager."""
    # nn.Module.__call__ runs _compiled_call_impl when set (what nn.Module.compile sets); None: forward, eagerly
    module._compiled_call_impl = None if mode is None else _kept(module._call_impl, mode, dynamic=None)


def compile_method(owner: nn.Module, name: str, mode: str | None) -> None:
    """Compile ``owner.<name>`` for this instance alone (an instance attribute over the class's method), shapes
    dynamic; ``mode`` None goes back to the method."""
    if mode is None:
        owner.__dict__.pop(name, None)
    else:
        owner.__dict__[name] = _kept(getattr(type(owner), name).__get__(owner), mode, dynamic=True)


def _kept(function: Callable, mode: str, dynamic: bool | None) -> Callable:
    compiled = torch.compile(function, mode=mode, dynamic=dynamic)
    if "reduce-overhead" not in mode:
        return compiled

    def call(*args: Any, **kwargs: Any) -> Any:
        torch.compiler.cudagraph_mark_step_begin()
        out = compiled(*args, **kwargs)
        for value in (*args, *kwargs.values()):
            if isinstance(value, StreamCache):
                value.tensors = {key: window.clone() for key, window in value.tensors.items()}
        return out.clone()

    return call
