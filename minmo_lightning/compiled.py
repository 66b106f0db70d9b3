"""One switch for the speak path's compiled decode steps (``MinMo.respond(compile=True)``).

Eager, a decode step on a GPU costs mostly the host launching its kernels: a 7B LLM step is no slower at
batch 8 than at batch 1. Compiled, each block decodes with static shapes: the LLM and the voice token LM
over a static KV cache, one position per captured step; token2wav's flow estimator (every ODE step) and its
vocoder compiled. ``torch.compile`` mode ``reduce-overhead`` on CUDA (CUDA graphs: one launch per step),
its default mode elsewhere (inductor's fused kernels). Eager stays the default: compiling a full-size model
takes minutes, and a CPU gains little. Greedy decoding gives the same tokens either way (tested).

A block offers the compiled path with ``compile_decoding(mode)`` (``mode`` None: eager); the switch is the
block's until it is set again, and sessions already running keep the path they started on.
"""

from __future__ import annotations

from typing import Any

import torch

#: the blocks a spoken response decodes with, in the order they run
DECODING_SLOTS = ("llm", "voice_token_lm", "token2wav")


def compile_mode(compile: bool | str, device: torch.device | str) -> str | None:
    """``compile`` as a torch.compile mode: True picks ``reduce-overhead`` on CUDA and the default mode
    elsewhere; a string is a mode itself; False is eager (None)."""
    if compile is False:
        return None
    if compile is True:
        return "reduce-overhead" if torch.device(device).type == "cuda" else "default"
    return compile


def set_decoding(model: Any, compile: bool | str) -> str | None:
    """Switch every decoding block of ``model`` to compiled (``compile_mode``) or eager steps; returns the mode."""
    mode = compile_mode(compile, model.device)
    for slot in DECODING_SLOTS:
        block = getattr(model, slot, None)
        switch = getattr(block, "compile_decoding", None)
        if switch is not None:
            switch(mode)
        elif block is not None and mode is not None:
            raise ValueError(
                f"compile={compile!r}: the {slot} {type(block).__name__} has no compiled decode path "
                "(compile_decoding); respond with compile=False"
            )
    return mode
