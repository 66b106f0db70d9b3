"""Compiled decode steps (``respond(compile=True)``) give the eager path's tokens; the static KV cache under them."""

from __future__ import annotations

import pytest
import torch
from builders import speaking_minmo
from minmo_lightning.components.llm.kv_cache import StaticKVCache
from minmo_lightning.components.voice_token_lm.backbone import Qwen2Stack
from minmo_lightning.components.voice_token_lm.cosyvoice2_lm import TINY

from minmo_lightning.compiled import compile_mode, set_decoding
from minmo_lightning.generation import TextSamplingConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def greedy(logp: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
    return logp.argmax(-1)


def inductor_missing() -> str | None:
    """Why inductor cannot compile on this machine (it builds C++ kernels with the system compiler), or None."""
    try:
        torch.compile(lambda x: x * 2 + 1)(torch.ones(2))
    except Exception as error:  # noqa: BLE001 - any failure means: no CPU compile here
        return f"torch.compile (inductor) does not run here: {type(error).__name__}: {error}"[:300]
    return None


@torch.no_grad()
def test_static_cache_grows_and_drops_its_front_like_the_growing_cache() -> None:
    """Multi-position calls run eagerly, so this checks the cache and its masks without compiling."""
    stack = Qwen2Stack(TINY["qwen2_config"], "sdpa").eval()
    inputs = 0.5 * torch.randn(2, 30, TINY["qwen2_config"]["hidden_size"])
    real = torch.ones(2, 30, dtype=torch.bool)
    real[1, 4:7] = False  # a row that fed nothing for a while (a hole in its columns)
    static, growing = (
        StaticKVCache(stack.config.num_hidden_layers, "default", min_capacity=8),
        stack.new_cache(),
    )
    positions = (real.long().cumsum(1) - 1).clamp(min=0)

    def feed(start: int, end: int, front: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        mask = real[:, front:end]
        out_static, _ = stack(inputs[:, start:end], mask, positions[:, start:end], static)
        out_growing, _ = stack(inputs[:, start:end], mask.long(), positions[:, start:end], growing)
        return out_static, out_growing

    for start in range(0, 24, 3):
        out_static, out_growing = feed(start, start + 3)
        keep = real[:, start : start + 3]
        torch.testing.assert_close(out_static[keep], out_growing[keep], atol=1e-5, rtol=1e-5)
    assert static.capacity == 32 and static.columns == 24  # 8 -> 16 -> 32 as the session grew
    static.drop_front(5)
    growing.drop_front(5)
    out_static, out_growing = feed(24, 30, front=5)
    keep = real[:, 24:30]
    torch.testing.assert_close(out_static[keep], out_growing[keep], atol=1e-5, rtol=1e-5)


def test_compile_switch_names_the_mode_and_the_block_that_lacks_it() -> None:
    assert compile_mode(True, "cpu") == "default"
    assert compile_mode(True, "cuda") == "reduce-overhead"
    assert compile_mode(False, "cuda") is None
    assert compile_mode("max-autotune", "cpu") == "max-autotune"

    class Plain(torch.nn.Module):  # a block without a compiled path
        device = torch.device("cpu")
        llm = torch.nn.Linear(1, 1)

    with pytest.raises(ValueError, match="the llm Linear has no compiled decode path"):
        set_decoding(Plain(), True)
    assert set_decoding(Plain(), False) is None  # eager needs nothing of a block


def respond_tokens(model, compile: bool | str) -> tuple[list, list]:
    chunks = list(
        model.respond(
            texts=["stop now", "turn on the kitchen lights and set a timer"],
            speech_sampler=greedy,
            synthesize=False,
            text_config=TextSamplingConfig(max_new_tokens=12),
            compile=compile,
        )
    )
    text = [sum((c.text.tokens[i, : c.text.lengths[i]].tolist() for c in chunks), []) for i in range(2)]
    speech = [sum((c.speech.tokens[i, : c.speech.lengths[i]].tolist() for c in chunks), []) for i in range(2)]
    return text, speech


@torch.no_grad()
def test_compiled_respond_gives_the_eager_tokens() -> None:
    missing = inductor_missing()
    if missing:
        pytest.skip(missing)
    model = speaking_minmo()
    eager = respond_tokens(model, compile=False)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    compiled = respond_tokens(model, compile=True)  # CPU: torch.compile's default mode (inductor)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > graphs  # the steps did compile
    assert model.llm.decode_mode == model.voice_token_lm.decode_mode == "default"
    assert compiled == eager and all(eager[1])  # same text, same speech tokens, both rows spoke
    assert respond_tokens(model, compile=False) == eager  # and back to eager


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="CUDA graphs (mode reduce-overhead) need a CUDA device"
)
@torch.no_grad()
def test_cuda_graphs_give_the_eager_tokens_and_audio() -> None:
    model = speaking_minmo(token2wav=True).cuda()
    eager = list(model.respond(texts=["turn on the lights"], speech_sampler=greedy, compile=False))
    compiled = list(model.respond(texts=["turn on the lights"], speech_sampler=greedy, compile=True))
    assert [c.speech.tokens.tolist() for c in compiled] == [c.speech.tokens.tolist() for c in eager]
    audio = [torch.cat([c.audio.waveform for c in run], dim=1) for run in (eager, compiled)]
    torch.testing.assert_close(audio[1], audio[0], atol=1e-3, rtol=1e-3)
