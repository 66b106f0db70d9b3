"""Speech tokenizer figures: full-size throughput and the codebook usage of a trained tokenizer.

Throughput: ``S3TokenizerV2`` at the official size (``speech-tokenizer-v2-25hz``, random weights; the
cost does not depend on the values), waveform -> tokens, in audio seconds per wall second, batch 1 and 16.
Codebook usage: perplexity (exp of the token entropy; 6561 = every code equally often) and the number of
distinct codes of a trained tokenizer (``--checkpoint``, e.g. the tiny recipe's .ckpt) over a dataset split.

    python benchmarks/speech_tokenizer.py --checkpoint runs/.../last.ckpt --dataset data/builtin/asr --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

import torch
from minmo_lightning.components.speech_tokenizer.s3tokenizer import S3TokenizerV2, token_perplexity

from minmo_lightning.contracts import AudioBatch


def _waves(batch: int, seconds: float) -> AudioBatch:
    t = torch.arange(int(seconds * 16000)) / 16000
    waves = [
        0.3 * torch.sin(2 * math.pi * (150 + 40 * i) * t) + 0.01 * torch.randn_like(t) for i in range(batch)
    ]
    return AudioBatch.from_list(waves, 16000)


def throughput(model: S3TokenizerV2, batch: int, seconds: float, repeats: int) -> tuple[float, float]:
    """Audio seconds tokenized per wall second and per process CPU second (after one warm-up call).

    On a shared machine the wall figure falls with the load; the CPU figure does much less.
    """
    audio = _waves(batch, seconds)
    with torch.inference_mode():
        model(audio)
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(repeats):
            model(audio)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return batch * seconds * repeats / wall, batch * seconds * repeats / cpu


def codebook_usage(
    checkpoint: str, dataset: str, split: str, max_rows: int, batch_size: int
) -> dict[str, float]:
    from datasets import Audio, load_from_disk
    from minmo_lightning.datamodules.audio import decode_audio

    model = S3TokenizerV2.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    rows = load_from_disk(dataset)[split]
    rows = rows.select(range(min(max_rows, len(rows)))).cast_column("audio", Audio(decode=False))
    tokens = []
    with torch.inference_mode():
        for first in range(0, len(rows), batch_size):
            waves = [
                torch.from_numpy(decode_audio(a, 16000, dataset)[0])
                for a in rows[first : first + batch_size]["audio"]
            ]
            out = model(AudioBatch.from_list(waves, 16000))
            tokens.append(out.tokens[out.mask])
    flat = torch.cat(tokens)
    return {
        "codebook_perplexity": float(token_perplexity(flat, model.codebook_size)),
        "codes_used": int(flat.unique().numel()),
        "tokens_counted": int(flat.numel()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length for the throughput runs")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--checkpoint", help="trained S3TokenizerV2 .ckpt for the codebook figures")
    parser.add_argument("--dataset", default="data/builtin/asr")
    parser.add_argument("--split", default="test")
    parser.add_argument("--max-rows", type=int, default=300)
    parser.add_argument("--json", help="write {figures, targets, device} here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    model = S3TokenizerV2.from_preset("speech-tokenizer-v2-25hz").eval()
    figures: dict[str, float | int | None] = {}
    for b in (1, 16):
        per_wall, per_cpu = throughput(model, b, args.seconds, args.repeats)
        figures[f"throughput_full_b{b}_audio_s_per_s"] = round(per_wall, 2)
        figures[f"throughput_full_b{b}_audio_s_per_cpu_s"] = round(per_cpu, 2)
    if args.checkpoint and Path(args.dataset).is_dir():
        usage = codebook_usage(args.checkpoint, args.dataset, args.split, args.max_rows, 16)
        figures.update({f"tiny_{k}": round(v, 2) if isinstance(v, float) else v for k, v in usage.items()})
    else:
        print("codebook usage not measured: pass --checkpoint (trained tiny .ckpt) and an existing --dataset")

    load = os.getloadavg()[0]
    device = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {args.threads} torch threads, "
        f"load average {load:.1f} at the end, clips of {args.seconds:g} s"
    )
    targets = {
        "throughput_full_b1_audio_s_per_s": ">= 1.0",
        "throughput_full_b16_audio_s_per_s": ">= 1.0",
        "tiny_codebook_perplexity": ">= 64",
    }
    width = max(map(len, figures))
    print(f"speech tokenizer ({device})")
    for name, value in figures.items():
        print(f"  {name:<{width}}  {value}   target {targets.get(name, '-')}")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"figures": figures, "targets": targets, "device": device}, indent=2)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
