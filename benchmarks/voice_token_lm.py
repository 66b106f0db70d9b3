"""Voice token LM decode speed: per-token latency at context 50 vs 2000, batch 1 vs 8 throughput.

Runs ``CosyVoice2LM`` at a preset (default ``cosyvoice2-0.5b``, random weights) through the same KV-cached
step the streaming decoder uses: feed the last speech token, project to the 6564 speech ids, pick one.
A flat per-token cost over the context (ratio under 1.3) shows the cache does its job.

``--compile``: steps compiled over a static KV cache (``CosyVoice2LM.compile_decoding``; CUDA graphs on a GPU).

    python benchmarks/voice_token_lm.py [--preset tiny] [--dtype bfloat16] [--compile] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from minmo_lightning.components.voice_token_lm.cosyvoice2_lm import CosyVoice2LM
from minmo_lightning.components.voice_token_lm.state import VoiceLMState

from minmo_lightning.compiled import compile_mode
from minmo_lightning.timing import describe_device, synchronized_time


def decode_ms(
    model: CosyVoice2LM, batch: int, context: int, steps: int, warmup: int = 3
) -> tuple[float, float]:
    """Median wall-clock and process-CPU milliseconds per decode step with ``context`` positions cached.

    On a shared CPU the wall clock includes waiting for a core; CPU time does not, so it is the steadier
    measure of the work per token there.
    """
    device = model.llm_decoder.weight.device
    state: VoiceLMState = model.init_state(batch)
    with torch.no_grad():
        prompt = torch.randn(batch, context, model.hidden_size, device=device) * 0.02
        hidden = model.feed(state, prompt, torch.ones(batch, context, dtype=torch.bool, device=device))
        valid = torch.ones(batch, 1, dtype=torch.bool, device=device)
        wall, cpu = [], []
        for i in range(warmup + steps):
            start, start_cpu = synchronized_time(device), time.process_time()
            token = model.llm_decoder(hidden).float().log_softmax(-1)[:, : model.speech_vocab_size].argmax(-1)
            hidden = model.feed(state, model.speech_embedding(token)[:, None], valid)
            end = synchronized_time(device)
            if i >= warmup:
                wall.append((end - start) * 1000)
                cpu.append((time.process_time() - start_cpu) * 1000)
    return statistics.median(wall), statistics.median(cpu)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cosyvoice2-0.5b")
    parser.add_argument(
        "--dtype", default=None, help="float32 | bfloat16 (default: bfloat16 on GPU, float32 on CPU)"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=20, help="timed decode steps per measurement")
    parser.add_argument("--compile", action="store_true", help="compiled steps over a static KV cache")
    parser.add_argument("--json", type=Path, default=None, help="write figures/targets/device JSON here")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    dtype = args.dtype or ("bfloat16" if device.type == "cuda" else "float32")
    torch.manual_seed(0)
    with torch.device(device):
        model = CosyVoice2LM.from_preset(args.preset, dtype=dtype)
        model.configure_model()
    model.eval()
    mode = compile_mode(args.compile, device)
    model.compile_decoding(mode)

    (near, near_cpu), (far, far_cpu) = (
        decode_ms(model, 1, 50, args.steps),
        decode_ms(model, 1, 2000, args.steps),
    )
    batch8, _ = decode_ms(model, 8, 50, args.steps)
    figures = {
        "per_token_ms_at_50": near,
        "per_token_ms_at_2000": far,
        "latency_ratio_2000_vs_50": far / near,
        "throughput_batch1_tokens_per_s": 1000.0 / near,
        "throughput_batch8_tokens_per_s": 8 * 1000.0 / batch8,
        "batch8_speedup": 8 * near / batch8,
    }
    if device.type == "cpu":
        figures |= {
            "per_token_cpu_ms_at_50": near_cpu,
            "per_token_cpu_ms_at_2000": far_cpu,
            "cpu_time_ratio_2000_vs_50": far_cpu / near_cpu,
        }
    described = f"{describe_device(device)}, {args.preset}, {dtype}, decode {mode or 'eager'}"
    print(f"CosyVoice2LM decode: {described}")
    for key, value in figures.items():
        print(f"  {key:34s} {value:10.2f}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"figures": figures, "targets": {"latency_ratio_2000_vs_50": "< 1.3"}, "device": described},
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
