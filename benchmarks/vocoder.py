"""HiFT vocoder speed on this CPU: offline RTF and streaming per-chunk cost at the ``cosyvoice2-0.5b`` preset.

    python benchmarks/vocoder.py [--seconds 10] [--chunk-frames 30] [--threads 2] [--json PATH]

Random weights (the cost does not depend on the values), batch 1, float32. Streaming feeds the mel in chunks of
``--chunk-frames`` (30 frames = one 15-token chunk) in two settings: ``exact`` (the receptive field as context:
chunks concatenate to the offline audio) and ``lookahead8`` (8 frames of left context and look-ahead, the hold-back
of the reference's HiFT cache). For each: the compute time of the first chunk and the audio it yields, per-chunk
time (median, last / first of the full chunks), streaming RTF and the max difference from offline synthesis.
Wall-clock RTFs swing with other load on a shared machine; the process CPU seconds per audio second do less
(with one thread they are the uncontended cost).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from minmo_lightning.components.token2wav.hift import HiFTVocoder

SETTINGS = {"exact": {}, "lookahead8": {"stream_left_context": 8, "stream_lookahead": 8}}


def stream(model: HiFTVocoder, mel: torch.Tensor, chunk: int) -> tuple[torch.Tensor, list[float], list[int]]:
    state = model.init_state(mel.shape[0])
    outs, times, frames = [], [], []
    for start in range(0, mel.shape[2], chunk):
        if start + chunk >= mel.shape[2]:
            state.end_input(range(mel.shape[0]))
        began = time.perf_counter()
        out = model.step(mel[:, :, start : start + chunk], state)
        times.append(time.perf_counter() - began)
        frames.append(out.shape[1] // model.samples_per_frame)
        outs.append(out)
    return torch.cat(outs, dim=1), times, frames


@torch.no_grad()
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="audio length to synthesise")
    parser.add_argument(
        "--chunk-frames", type=int, default=30, help="mel frames per streaming chunk (30 = 15 tokens)"
    )
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json", help="write {figures, targets, device} here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model = HiFTVocoder.from_preset("cosyvoice2-0.5b").eval()
    frames = int(args.seconds * 50)
    mel = torch.randn(1, 80, frames) - 4.0
    model(mel[:, :, : args.chunk_frames])  # warm-up (oneDNN kernel selection)

    began, began_cpu = time.perf_counter(), time.process_time()
    offline = model(mel)
    offline_s, offline_cpu = time.perf_counter() - began, time.process_time() - began_cpu
    audio_s = offline.shape[1] / model.sampling_rate
    figures: dict[str, float] = {
        "audio_seconds": round(audio_s, 3),
        "offline_rtf": round(offline_s / audio_s, 4),
        "offline_cpu_seconds_per_audio_second": round(offline_cpu / audio_s, 4),
    }
    for name, overrides in SETTINGS.items():
        streamer = HiFTVocoder.from_preset("cosyvoice2-0.5b", **overrides).eval()
        streamer.load_state_dict(model.state_dict())
        stream(
            streamer, mel[:, :, : 2 * args.chunk_frames], args.chunk_frames
        )  # warm-up of the window shapes
        began_cpu = time.process_time()
        audio, times, emitted = stream(streamer, mel, args.chunk_frames)
        stream_cpu = time.process_time() - began_cpu
        full = times[1:-1] or times
        figures |= {
            f"{name}_left_context_frames": streamer.stream_left_context,
            f"{name}_lookahead_frames": streamer.stream_lookahead,
            f"{name}_first_chunk_ms": round(1000 * times[0], 1),
            f"{name}_first_chunk_audio_ms": emitted[0] * 20,
            f"{name}_chunk_median_ms": round(1000 * statistics.median(full), 1),
            f"{name}_chunk_last_over_first": round(full[-1] / full[0], 3),
            f"{name}_stream_rtf": round(sum(times) / audio_s, 4),
            f"{name}_stream_cpu_seconds_per_audio_second": round(stream_cpu / audio_s, 4),
            f"{name}_max_abs_diff_vs_offline": float(f"{(audio - offline).abs().max():.3g}"),
        }

    device = f"{platform.processor() or platform.machine()}, {args.threads} torch threads, float32, batch 1"
    targets = {
        "offline_rtf": "< 1",
        "exact_chunk_last_over_first": "<= 1.2",
        "lookahead8_chunk_last_over_first": "<= 1.2",
        "exact_max_abs_diff_vs_offline": "<= 1e-4",
    }
    print(
        f"HiFT vocoder, cosyvoice2-0.5b preset, random weights ({device}), {args.chunk_frames}-frame chunks"
    )
    width = max(map(len, figures))
    for name, value in figures.items():
        print(f"  {name:<{width}}  {value}   target {targets.get(name, '-')}")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"figures": figures, "targets": targets, "device": device}, indent=2)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
