"""Voice encoder figures: golden parity errors, offline throughput, streaming per-chunk compute.

    python benchmarks/voice_encoder.py [--preset sensevoice-small] [--stream-preset tiny] [--minutes 10] [--json out.json]

Throughput is audio seconds encoded per second (random weights, eval, batches of equal clips), per wall
second and per CPU second of this process (the CPU figure is what a shared, contended machine still measures
reliably; on an idle one with one thread they agree). Streaming feeds ``--minutes`` of audio in
``--chunk-ms`` chunks to one session; the state is bounded, so the median time of the last chunks should stay
within 1.2x of the first ones'.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from minmo_lightning.components.voice_encoder.sensevoice import SenseVoiceEncoder

from minmo_lightning.contracts import AudioBatch

GOLDEN = Path(__file__).parents[1] / "tests" / "fixtures" / "golden"
FIXTURES = ("sensevoice_frontend", "sensevoice_encoder", "sensevoice_model")


def golden_errors() -> dict[str, float]:
    from minmo_lightning.golden import run_golden

    errors = {}
    for item in FIXTURES:
        _, results = run_golden(GOLDEN / item)
        floats = [r.max_abs_error for r in results if r.tolerance > 0]
        errors[f"golden_{item}_max_abs_error"] = max(floats)
        errors[f"golden_{item}_all_pass"] = float(all(r.passed for r in results))
    return errors


def timed(fn, *args) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn(*args)
    return time.perf_counter() - wall, time.process_time() - cpu


@torch.inference_mode()
def throughput(block: SenseVoiceEncoder, batch: int, seconds: float, repeats: int) -> tuple[float, float]:
    """Audio seconds per wall second and per CPU second (medians over ``repeats``)."""
    samples = int(seconds * block.sample_rate)
    audio = AudioBatch(torch.randn(batch, samples) * 0.1, torch.full((batch,), samples), block.sample_rate)
    block(audio)  # warm-up
    walls, cpus = zip(*(timed(block, audio) for _ in range(repeats)))
    return batch * seconds / statistics.median(walls), batch * seconds / statistics.median(cpus)


@torch.inference_mode()
def streaming(block: SenseVoiceEncoder, minutes: float, chunk_ms: int) -> tuple[list[float], list[float]]:
    """Per-chunk wall and CPU seconds over ``minutes`` of audio streamed into one session."""
    chunk = int(block.sample_rate * chunk_ms / 1000)
    state = block.init_state(1)
    walls, cpus = [], []
    for _ in range(int(minutes * 60_000 / chunk_ms)):
        audio = AudioBatch(torch.randn(1, chunk) * 0.1, torch.tensor([chunk]), block.sample_rate)
        wall, cpu = timed(block.step, audio, state)
        walls.append(wall)
        cpus.append(cpu)
    return walls, cpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="sensevoice-small")
    parser.add_argument("--clip-seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--stream-preset", default=None, help="preset for the streaming run (default: --preset)"
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="streamed audio length")
    parser.add_argument("--chunk-ms", type=int, default=600, help="a multiple of 60")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    block = SenseVoiceEncoder.from_preset(args.preset).eval()
    figures = golden_errors()
    name = args.preset
    for batch in (1, 8):
        wall, cpu = throughput(block, batch, args.clip_seconds, args.repeats)
        figures[f"{name}_throughput_audio_s_per_wall_s_batch{batch}"] = wall
        figures[f"{name}_throughput_audio_s_per_cpu_s_batch{batch}"] = cpu
    if args.stream_preset and args.stream_preset != args.preset:
        name = args.stream_preset
        block = SenseVoiceEncoder.from_preset(name).eval()
    figures[f"{name}_stream_chunk_ms"] = float(args.chunk_ms)
    figures[f"{name}_stream_minutes"] = args.minutes
    for clock, times in zip(("wall", "cpu"), streaming(block, args.minutes, args.chunk_ms)):
        window = max(len(times) // 20, 5)
        first, last = statistics.median(times[1 : window + 1]), statistics.median(times[-window:])
        figures[f"{name}_stream_{clock}_first_chunks_median_s"] = first
        figures[f"{name}_stream_{clock}_last_chunks_median_s"] = last
        figures[f"{name}_stream_{clock}_last_over_first"] = last / first
        figures[f"{name}_stream_{clock}_real_time_factor"] = statistics.mean(times) / (args.chunk_ms / 1000)
    targets = {f"{name}_stream_{clock}_last_over_first": "<= 1.2" for clock in ("wall", "cpu")}
    targets.update({f"golden_{item}_all_pass": "== 1" for item in FIXTURES})
    device = f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads"

    width = max(len(k) for k in figures)
    print(f"voice encoder benchmark ({device})")
    for name, value in figures.items():
        print(f"  {name:<{width}}  {value:.4g}  {targets.get(name, '')}")
    if args.json:
        args.json.write_text(json.dumps({"figures": figures, "targets": targets, "device": device}, indent=2))


if __name__ == "__main__":
    main()
