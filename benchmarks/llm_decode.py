"""LLM backbone decode speed with the KV cache, and full-size parameter counts per slot.

Per-token latency at a short and a long context (the ratio shows the cache works: O(1) work per new
token), batch 1 vs batch N throughput, on a Qwen2.5-0.5B-shaped preset with random weights; then the
parameter counts of MinMo's full-size presets next to the paper's (~636M encoder, ~170M projector, 7B LLM).
``--compile``: steps compiled over a static KV cache (``HFCausalLM.compile_decoding``; CUDA graphs on a GPU).

    python benchmarks/llm_decode.py [--preset qwen2.5-0.5b-instruct] [--compile] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
from minmo_lightning.components.input_projector.projectors import TransformerConvProjector
from minmo_lightning.components.llm.hf_causal_lm import HFCausalLM
from minmo_lightning.components.voice_encoder.whisper import WhisperEncoder

from minmo_lightning.compiled import compile_mode
from minmo_lightning.registry import count_preset_parameters
from minmo_lightning.timing import describe_device, synchronized_time, warm_up


@torch.no_grad()
def per_token_seconds(llm: HFCausalLM, batch: int, context: int, tokens: int, warmup: int = 2) -> float:
    """Median wall seconds per decoded position after a ``context``-long prefill."""
    device = llm.base_model.device
    cache = llm.new_cache()
    prompt = 0.02 * torch.randn(batch, context, llm.hidden_size, dtype=llm.torch_dtype, device=device)
    out = llm(prompt, cache=cache, logits_to_keep=1)
    step = llm.embed(out.logits[:, -1].argmax(-1)[:, None])
    times = []
    for i in range(warmup + tokens):
        start = synchronized_time(device)
        out = llm(step, cache=cache)
        step = llm.embed(out.logits[:, -1].argmax(-1)[:, None])
        if i >= warmup:
            times.append(synchronized_time(device) - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="qwen2.5-0.5b-instruct")
    parser.add_argument("--contexts", type=int, nargs=2, default=[64, 2048])
    parser.add_argument("--batches", type=int, nargs=2, default=[1, 8])
    parser.add_argument("--tokens", type=int, default=16, help="decoded positions timed per setting")
    parser.add_argument("--dtype", default=None, help="default: bfloat16 on GPU, float32 on CPU")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compile", action="store_true", help="compiled steps over a static KV cache")
    parser.add_argument("--json", help="write figures and targets here")
    args = parser.parse_args()

    device = torch.device(args.device)
    args.dtype = args.dtype or ("bfloat16" if device.type == "cuda" else "float32")
    torch.manual_seed(0)
    llm = HFCausalLM.from_preset(args.preset, dtype=args.dtype)
    with device:  # random weights made where they run (a 7B preset takes minutes to initialise on a CPU)
        llm.configure_model()
    llm.eval()
    mode = compile_mode(args.compile, device)
    llm.compile_decoding(mode)
    warm_up(device)
    figures: dict[str, float] = {}
    short, long = args.contexts
    print(
        f"{args.preset} ({args.dtype}, random weights, decode {mode or 'eager'}) on {describe_device(device)}"
    )
    print(f"{'batch':>6}{'context':>9}{'ms/token':>11}")
    for batch in args.batches:
        for context in (short, long):
            seconds = per_token_seconds(llm, batch, context, args.tokens)
            figures[f"ms_per_token_b{batch}_ctx{context}"] = 1000 * seconds
            print(f"{batch:>6}{context:>9}{1000 * seconds:>11.1f}")
    for batch in args.batches:
        figures[f"ratio_ctx{long}_vs_ctx{short}_b{batch}"] = (
            figures[f"ms_per_token_b{batch}_ctx{long}"] / figures[f"ms_per_token_b{batch}_ctx{short}"]
        )
    small, big = args.batches
    figures[f"tokens_per_s_b{big}_over_b{small}"] = (
        big
        / figures[f"ms_per_token_b{big}_ctx{short}"]
        / (small / figures[f"ms_per_token_b{small}_ctx{short}"])
    )
    for name, value in figures.items():
        if name.startswith(("ratio", "tokens")):
            print(f"{name}: {value:.2f}")

    counts = {
        "voice_encoder_whisper_large_v3": (
            count_preset_parameters(WhisperEncoder, "whisper-large-v3"),
            636e6,
        ),
        "input_projector": (
            count_preset_parameters(TransformerConvProjector, "whisper-large-v3-to-qwen2.5-7b"),
            170e6,
        ),
        "llm_qwen2.5_7b": (count_preset_parameters(HFCausalLM, "qwen2.5-7b-instruct"), 7e9),
    }
    print(f"\n{'slot':<34}{'ours':>16}{'paper':>12}")
    for name, (ours, paper) in counts.items():
        figures[f"params_{name}"] = ours
        print(f"{name:<34}{ours:>16,}{paper / 1e6:>11,.0f}M")

    if args.json:
        targets = {f"ratio_ctx{long}_vs_ctx{short}_b{b}": "<= 1.3" for b in args.batches}
        with open(args.json, "w") as handle:
            described = f"{describe_device(device)}, {args.preset}, {args.dtype}, decode {mode or 'eager'}"
            json.dump({"figures": figures, "targets": targets, "device": described}, handle, indent=2)


if __name__ == "__main__":
    main()
