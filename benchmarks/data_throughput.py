"""Data pipeline throughput: audio seconds loaded, decoded, resampled, featurised and collated per wall second.

Runs ``ASRDataModule`` over a dataset (default: a generated one stored at 22.05 kHz, so every clip is
resampled to 16 kHz), one epoch per setting, and featurises each batch with the SenseVoice front end
(Kaldi fbank 80 + LFR 7/6) in the main process, as training does. Settings: a single process
(``num_workers=0``) and DataLoader workers. Target: >= 200x real time for the single process.

    python benchmarks/data_throughput.py [--path data/builtin/asr] [--workers 0 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

TARGET = 200.0


def make_dataset(folder: Path, clips: int, rate: int, seed: int = 0) -> Path:
    """``clips`` WAV clips of 1-8 s of amplitude-modulated harmonics plus noise, at ``rate`` Hz."""
    import soundfile
    from datasets import Audio, Dataset, DatasetDict

    rng = np.random.default_rng(seed)
    audio, texts = [], []
    for i in range(clips):
        seconds = rng.uniform(1.0, 8.0)
        t = np.arange(int(seconds * rate)) / rate
        f0 = rng.uniform(90, 250)
        voiced = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6))
        envelope = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 5) * t)
        wave = (0.1 * voiced * envelope + 0.01 * rng.standard_normal(len(t))).astype(np.float32)
        buffer = io.BytesIO()
        soundfile.write(buffer, wave, rate, format="WAV", subtype="PCM_16")
        audio.append({"bytes": buffer.getvalue(), "path": f"clip{i}.wav"})
        texts.append(f"clip number {i}")
    data = Dataset.from_dict({"id": [f"clip{i}" for i in range(clips)], "audio": audio, "text": texts})
    DatasetDict({"train": data.cast_column("audio", Audio(decode=False))}).save_to_disk(str(folder))
    return folder


def run(path: str, workers: int, seconds_per_batch: float, sample_rate: int) -> dict[str, float]:
    from minmo_lightning.components.voice_encoder.frontend import SenseVoiceFrontend
    from minmo_lightning.datamodules import ASRDataModule

    frontend = SenseVoiceFrontend(sample_rate=sample_rate)
    module = ASRDataModule(
        path,
        sample_rate=sample_rate,
        val_split=None,
        test_split=None,
        max_seconds_per_batch=seconds_per_batch,
        num_workers=workers,
    )
    begin = time.perf_counter()
    module.setup("fit")
    setup = time.perf_counter() - begin
    audio_seconds, frames, batches, feature_wall = 0.0, 0, 0, 0.0
    cpu_before = _cpu_seconds()
    begin = time.perf_counter()
    batches_iter = iter(module.train_dataloader())
    with torch.inference_mode():
        for batch in batches_iter:
            started = time.perf_counter()
            feats, lengths = frontend(batch["audio"].waveform, batch["audio"].lengths)
            feature_wall += time.perf_counter() - started
            audio_seconds += float(batch["audio"].lengths.sum()) / sample_rate
            frames += int(lengths.sum())
            batches += 1
    wall = time.perf_counter() - begin
    del batches_iter  # shuts the workers down, so their CPU time is counted below
    gc.collect()
    cpu = _cpu_seconds() - cpu_before
    return {
        "realtime_x": audio_seconds / wall,
        "realtime_x_per_cpu_second": audio_seconds / cpu,
        "realtime_x_loading_only": audio_seconds / max(wall - feature_wall, 1e-9),
        "audio_seconds": audio_seconds,
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "featurize_wall_seconds": feature_wall,
        "setup_seconds": setup,
        "batches": batches,
        "feature_frames": frames,
    }


def _cpu_seconds() -> float:
    """CPU time of this process (all threads) and of its finished child processes (the workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def device() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--path", help="dataset for ASRDataModule (default: generate 22.05 kHz clips)")
    parser.add_argument("--clips", type=int, default=300, help="clips in the generated dataset")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="num_workers settings to run")
    parser.add_argument("--seconds-per-batch", type=float, default=100.0)
    parser.add_argument("--sample-rate", type=int, default=16000)
    parser.add_argument("--json", help="write {figures, targets, device} here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as scratch:
        path = args.path or str(make_dataset(Path(scratch) / "clips", args.clips, 22050))
        results = {w: run(path, w, args.seconds_per_batch, args.sample_rate) for w in args.workers}

    print(
        f"data throughput on {device()}  (dataset: {args.path or f'{args.clips} generated 22.05 kHz clips'})"
    )
    print(
        f"load average {os.getloadavg()[0]:.1f} (other jobs share the cores: x per CPU second is the stable figure)"
    )
    header = (
        "workers",
        "audio s",
        "wall s",
        "x real time",
        "CPU s",
        "x per CPU s",
        "featurize s",
        "x w/o feats",
    )
    print(" ".join(f"{h:>12}" for h in header))
    for w, r in results.items():
        row = (w, r["audio_seconds"], r["wall_seconds"], r["realtime_x"], r["cpu_seconds"])
        row += (r["realtime_x_per_cpu_second"], r["featurize_wall_seconds"], r["realtime_x_loading_only"])
        print(" ".join(f"{v:>12.1f}" if isinstance(v, float) else f"{v:>12}" for v in row))
    single = results.get(0)
    if single is not None:
        verdict = "meets" if single["realtime_x"] >= TARGET else "misses"
        print(
            f"single process: {single['realtime_x']:.0f}x real time ({verdict} the >= {TARGET:.0f}x target)"
        )
    if args.json:
        figures = {f"realtime_x_workers_{w}": r["realtime_x"] for w, r in results.items()}
        figures.update(
            {
                f"realtime_x_per_cpu_second_workers_{w}": r["realtime_x_per_cpu_second"]
                for w, r in results.items()
            }
        )
        targets = {f"realtime_x_workers_{w}": f">= {TARGET:g}" for w in results}
        Path(args.json).write_text(
            json.dumps({"figures": figures, "targets": targets, "device": device()}, indent=2)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
