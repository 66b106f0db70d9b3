"""The Python half of ``benchmarks/gpu_check.sh`` (issue #17): a training step's model-FLOPs utilisation, and
the report that gathers every stage's figures.

``train`` runs ``train_step.py`` on a recipe, then counts the model FLOPs of one clip's training step (forward
and backward with ``torch.utils.flop_counter``, activation recomputation off, so recomputed FLOPs do not count)
and measures the matmul peak of this device in the same run: MFU = FLOPs per step / (seconds per step x peak).
``report`` merges the stages' JSON under their names (``eager_d_llm_ms``, ``train_mfu``, ...), lists the
figures the issue names that are missing, writes ``gpu_check.json`` and a Markdown section, and appends that
section to ``benchmarks/RESULTS.md`` with the device's name and the date.

    python benchmarks/gpu_check.py train --recipe recipes/minmo/stage1c_sft.yaml [--steps 3] --json PATH
    python benchmarks/gpu_check.py report --out DIR --results benchmarks/RESULTS.md NAME=PATH...
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import statistics
from pathlib import Path
from typing import Any

import torch
import train_step
import yaml
from torch.utils.flop_counter import FlopCounterMode

from minmo_lightning.model import MinMo
from minmo_lightning.registry import import_modules
from minmo_lightning.timing import describe_device, synchronized_time

#: the figures issue #17 names, as the report calls them (a compiled run adds the same latency figures)
LATENCY = [
    "d_llm_ms",
    "d_lm_ms",
    "d_syn_ms",
    "first_packet_ms",
    "formula_ms",
    "critical_path_ms",
    "first_packet_over_formula",
    "d_llm_bound_ms",
    "pipeline_d_llm_ms",
    "b1_speech_tokens_per_s",
    "b8_speech_tokens_per_s",
    "b32_speech_tokens_per_s",
    "b1_first_packet_ms",
    "b8_first_packet_ms",
    "b32_first_packet_ms",
    "peak_memory_gib",
]
REQUIRED = (
    [f"eager_{name}" for name in LATENCY]
    + ["eager_profile_isolated_host_ms", "eager_profile_pipeline_host_ms"]
    + ["train_seconds_per_step", "train_model_tflops_per_step", "train_matmul_peak_tflops", "train_mfu"]
)
REQUIRED_ON_CUDA = [f"compiled_{name}" for name in LATENCY]


def matmul_peak_tflops(device: torch.device, dtype: torch.dtype) -> float:
    """TFLOP/s of a large square matrix product on ``device`` (median of 5 after a warm-up)."""
    size = 8192 if device.type == "cuda" else 1024
    a, b = (torch.randn(size, size, device=device).to(dtype) for _ in range(2))
    times = []
    for _ in range(6):
        start = synchronized_time(device)
        a @ b
        times.append(synchronized_time(device) - start)
    return 2 * size**3 / statistics.median(times[1:]) / 1e12


def step_flops(recipe: dict[str, Any], clip_seconds: float, device: torch.device, precision: str) -> float:
    """Model FLOPs of one clip's training step (forward + backward) of the recipe's model, random weights."""
    spec = train_step.random_weight_spec(recipe, "off")
    torch.manual_seed(0)
    with device:
        model = MinMo(**spec)
        model.configure_model()
    model.train()
    batch = model.transfer_batch_to_device(
        train_step.synthetic_batches(clip_seconds, clip_seconds, 1)[0], device, 0
    )
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16)
        if precision.startswith("bf16")
        else contextlib.nullcontext()
    )
    with FlopCounterMode(display=False) as counter:
        with autocast:
            loss = model.training_step(batch, 0)
        loss.backward()
    return float(counter.get_total_flops())


def train(args: argparse.Namespace) -> None:
    # every component registered first: recipe names then resolve without importing the datamodules
    import_modules("minmo_lightning.components")
    step_json = args.json.with_suffix(".step.json")
    train_step.main(
        [
            "--recipe",
            str(args.recipe),
            "--steps",
            str(args.steps),
            "--clip-seconds",
            str(args.clip_seconds),
            "--json",
            str(step_json),
        ]
        + (["--seconds-per-batch", str(args.seconds_per_batch)] if args.seconds_per_batch else [])
    )
    measured = json.loads(step_json.read_text())["figures"]
    gc.collect()  # the measured run's model, before building the one whose FLOPs are counted
    torch.cuda.empty_cache()
    recipe = yaml.safe_load(args.recipe.read_text())
    precision = str((recipe.get("trainer") or {}).get("precision", "bf16-mixed"))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    flops = step_flops(recipe, args.clip_seconds, device, precision)
    clips = measured["seconds_of_audio_per_batch"] / args.clip_seconds
    peak = matmul_peak_tflops(device, torch.bfloat16 if precision.startswith("bf16") else torch.float32)
    per_step = flops * clips / 1e12
    figures = {
        **measured,
        "model_tflops_per_step": per_step,
        "model_tflops_per_s": per_step / measured["seconds_per_step"],
        "matmul_peak_tflops": peak,
        "mfu": per_step / measured["seconds_per_step"] / peak,
    }
    described = f"{describe_device(device)}, {args.recipe.name}, {precision}, random weights"
    for name, value in figures.items():
        print(f"  {name:40s} {value:14,.3f}")
    args.json.write_text(json.dumps({"figures": figures, "targets": {}, "device": described}, indent=2))


def report(args: argparse.Namespace) -> None:
    figures: dict[str, float] = {}
    targets: dict[str, str] = {}
    devices, skipped = {}, {}
    for part in args.parts:
        name, _, path = part.partition("=")
        if not Path(path).is_file():
            skipped[name] = f"no {path}: the stage failed, ran out of time or was not run (see gpu_check.log)"
            continue
        data = json.loads(Path(path).read_text())
        figures |= {f"{name}_{key}": value for key, value in data["figures"].items()}
        targets |= {f"{name}_{key}": value for key, value in data.get("targets", {}).items()}
        devices[name] = data["device"]
    stages = {part.partition("=")[0] for part in args.parts}
    required = REQUIRED + (REQUIRED_ON_CUDA if torch.cuda.is_available() else [])
    missing = [name for name in required if name not in figures and name.split("_")[0] in stages]
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else describe_device("cpu")
    date = datetime.date.today().isoformat()
    out = {
        "figures": figures,
        "targets": targets,
        "device": device,
        "date": date,
        "preset": args.preset,
        "stage_devices": devices,
        "missing": missing,
        "skipped": skipped,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(out, indent=2))
    section = markdown(out)
    (args.out / "RESULTS_section.md").write_text(section)
    with args.results.open("a") as results:
        results.write("\n" + section)
    print(section)


def markdown(report: dict[str, Any]) -> str:
    """The RESULTS.md section: latency figures eager beside compiled, then the training step."""
    figures, targets = report["figures"], report["targets"]

    def cell(name: str) -> str:
        value = figures.get(name)
        return "-" if value is None else f"{value:,.2f}"

    lines = [
        f"## {report['date']}: {report['device']}, PRESET={report['preset']} (`benchmarks/gpu_check.sh`)",
        "",
        "| figure | eager | compiled | target |",
        "| --- | ---: | ---: | --- |",
    ]
    names = [key.removeprefix("eager_") for key in figures if key.startswith("eager_")]
    for name in names:
        target = targets.get(f"compiled_{name}") or targets.get(f"eager_{name}", "")
        lines.append(f"| {name} | {cell(f'eager_{name}')} | {cell(f'compiled_{name}')} | {target} |")
    lines += ["", "| training step | value |", "| --- | ---: |"]
    lines += [
        f"| {key.removeprefix('train_')} | {cell(key)} |" for key in figures if key.startswith("train_")
    ]
    duplex = [key for key in figures if key.startswith("duplex_")]
    if duplex:
        lines += ["", "| duplex session (`duplex_session.py`) | value | target |", "| --- | ---: | --- |"]
        lines += [
            f"| {key.removeprefix('duplex_')} | {cell(key)} | {targets.get(key, '')} |" for key in duplex
        ]
    if report["missing"]:
        lines += ["", f"Missing figures: {', '.join(report['missing'])}."]
    for name, why in report["skipped"].items():
        lines.append(f"Stage {name}: {why}.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    step = commands.add_parser("train", help="a recipe's training step: seconds, model FLOPs, MFU")
    step.add_argument("--recipe", type=Path, required=True)
    step.add_argument("--steps", type=int, default=3)
    step.add_argument("--clip-seconds", type=float, default=20.0)
    step.add_argument("--seconds-per-batch", type=float, default=None, help="default: the recipe's")
    step.add_argument("--json", type=Path, required=True)
    gather = commands.add_parser("report", help="merge the stages' JSON, write the report, append RESULTS.md")
    gather.add_argument("--out", type=Path, required=True)
    gather.add_argument("--results", type=Path, required=True, help="the RESULTS.md to append to")
    gather.add_argument("--preset", default="full")
    gather.add_argument("parts", nargs="+", help="NAME=PATH of each stage's JSON")
    args = parser.parse_args(argv)
    if args.command == "train":
        train(args)
    else:
        report(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
