"""A recipe's training step under a strategy: seconds per step, peak GPU memory, and the per-GPU memory plan.

Answers "does this stage fit one GPU at the recipe's batch, and how fast is it" before a cluster is booked, and
"what does each GPU hold at world size W with DDP, FSDP2 or ZeRO-3" (``minmo_lightning/distributed_memory.py``:
weights, gradients and AdamW state of what trains, sharded or replicated, computed from the recipe's
parameters on the meta device; no GPU needed). With a GPU, the measured step gives the activation memory per
second of audio, so the plan also says how many seconds of audio per GPU fit.
The recipe's model is built with every pretrained path and stage checkpoint dropped (random weights; the
tiny tokenizer stands in for Qwen's, its ids are valid Qwen ids), then Lightning's own fit loop runs a few
steps at the recipe's precision on synthetic batches: ``--seconds-per-batch`` of audio (the recipe's batch
per device) cut into ``--clip-seconds`` clips, each with a transcript of ~2.5 words per second. On an
out-of-memory error the batch is halved until a step fits, so the report says what fits. ``--strategy`` takes
the strategy of ``recipes/trainer/<name>.yaml`` and ``--devices`` processes (Lightning launches them: this
script runs once per process; rank 0 reports).

    python benchmarks/train_step.py --recipe recipes/minmo/stage1c_sft.yaml [--seconds-per-batch 400]
                                    [--clip-seconds 20] [--steps 5] [--gradient-checkpointing on|off]
                                    [--strategy single|ddp|fsdp2|deepspeed_zero3] [--devices 1]
                                    [--world-size 8] [--gpu-gib 80] [--plan-only]
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import statistics
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from minmo_lightning.components.llm.hf_causal_lm import TINY_TOKENIZER

from minmo_lightning.contracts import AudioBatch
from minmo_lightning.distributed_memory import GIB, MemoryPlan, format_plan, memory_plan
from minmo_lightning.model import MinMo
from minmo_lightning.timing import describe_device, synchronized_time

WORDS = [
    "turn",
    "on",
    "the",
    "kitchen",
    "lights",
    "and",
    "set",
    "a",
    "timer",
    "for",
    "twenty",
    "minutes",
    "then",
    "call",
    "peter",
    "about",
    "dinner",
]
#: files a block reads when built: weights, and a voice encoder's CMVN statistics (random weights need neither)
WEIGHT_PATHS = ("path", "pretrained_path", "checkpoint_path", "cmvn_file")
TRAINER_PIECES = Path(__file__).resolve().parents[1] / "recipes" / "trainer"
#: --strategy -> the memory plan's layout ("single": one device, as DDP's per-GPU share)
PLAN_STRATEGY = {"single": "ddp", "ddp": "ddp", "fsdp2": "fsdp2", "deepspeed_zero3": "deepspeed_zero3"}


def random_weight_spec(recipe: dict[str, Any], checkpointing: str) -> dict[str, Any]:
    """The recipe's MinMo arguments with nothing to load from disk (``checkpointing`` on/off overrides the
    LLM's and the voice encoder's ``gradient_checkpointing``)."""
    args = dict(recipe["model"]["init_args"])
    args["init_checkpoint"], args["init_blocks"] = None, None
    for slot, spec in args.items():
        if not (isinstance(spec, dict) and "class_path" in spec):
            continue
        block = dict(spec.get("init_args") or {})
        for key in WEIGHT_PATHS:
            if key in block:
                block[key] = None
        if slot == "llm":
            block["tokenizer_path"] = block.get("tokenizer_path") or TINY_TOKENIZER
        if slot in ("llm", "voice_encoder") and checkpointing != "recipe":
            block["gradient_checkpointing"] = checkpointing == "on"
        args[slot] = {**spec, "init_args": block}
    return args


def synthetic_batches(seconds: float, clip_seconds: float, count: int, rate: int = 16000) -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    clips = max(1, round(seconds / clip_seconds))
    samples = int(clip_seconds * rate)
    words = max(1, round(2.5 * clip_seconds))
    text = " ".join(WORDS[i % len(WORDS)] for i in range(words))
    return [
        {
            "ids": [f"b{b}-{i}" for i in range(clips)],
            "audio": AudioBatch(
                0.1 * torch.randn(clips, samples, generator=generator),
                torch.full((clips,), samples),
                rate,
            ),
            "text": [text] * clips,
            "supervises": ("asr",),
        }
        for b in range(count)
    ]


class StepTimer(L.Callback):
    """Wall seconds per optimizer step (GPU work included) and peak memory after the first step."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.start = 0.0
        self.peak_gib: float | None = None

    def on_train_batch_start(
        self, trainer: L.Trainer, module: L.LightningModule, batch: Any, idx: int
    ) -> None:
        if idx == 1 and module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(module.device)
        self.start = synchronized_time(module.device)

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        self.seconds.append(synchronized_time(module.device) - self.start)
        if module.device.type == "cuda":  # read here: after fit, Lightning moves the model back to the CPU
            self.peak_gib = torch.cuda.max_memory_allocated(module.device) / 2**30


def trainer_strategy(name: str) -> Any:
    """The strategy ``recipes/trainer/<name>.yaml`` names, built from its class_path and init_args."""
    if name == "single":
        return "auto"
    spec = yaml.safe_load((TRAINER_PIECES / f"{name}.yaml").read_text())["trainer"]["strategy"]
    if isinstance(spec, str):
        return spec
    module, _, cls = spec["class_path"].rpartition(".")
    return getattr(importlib.import_module(module), cls)(**spec.get("init_args", {}))


def planned(spec: dict[str, Any], strategy: str, world_size: int, precision: str) -> MemoryPlan:
    """The memory plan of the recipe's model, built on the meta device (no memory, no GPU)."""
    with torch.device("meta"):
        model = MinMo(**spec)
        model.configure_model()
    return memory_plan(model, model.slots, PLAN_STRATEGY[strategy], world_size, precision)


def run_steps(
    spec: dict[str, Any], trainer_args: dict[str, Any], batches: list[dict], args: argparse.Namespace
) -> dict[str, float]:
    torch.manual_seed(0)
    model = MinMo(**spec)
    timer = StepTimer()
    trainer = L.Trainer(
        accelerator=args.accelerator,
        devices=args.devices,
        strategy=trainer_strategy(args.strategy),
        precision=trainer_args["precision"],
        gradient_clip_val=trainer_args.get("gradient_clip_val"),
        max_steps=len(batches),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    trainer.fit(model, torch.utils.data.DataLoader(batches, batch_size=None))
    if not trainer.is_global_zero:
        return {}
    figures = {
        "seconds_per_step": statistics.median(timer.seconds[1:] or timer.seconds),
        "first_step_seconds": timer.seconds[0],
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "total_params": sum(p.numel() for p in model.parameters()),
    }
    if timer.peak_gib is not None:
        figures["peak_memory_gib"] = timer.peak_gib
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=Path("recipes/minmo/stage1c_sft.yaml"))
    parser.add_argument("--seconds-per-batch", type=float, default=None, help="default: the recipe's")
    parser.add_argument("--clip-seconds", type=float, default=20.0)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument(
        "--gradient-checkpointing",
        choices=["recipe", "on", "off"],
        default="recipe",
        help="LLM and voice encoder activation recomputation (default: as the recipe says)",
    )
    parser.add_argument(
        "--strategy",
        choices=list(PLAN_STRATEGY),
        default="single",
        help="single: one device, no strategy; otherwise the strategy of recipes/trainer/<name>.yaml",
    )
    parser.add_argument("--devices", type=int, default=1, help="processes of the measured run")
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--precision", default=None, help="default: the recipe's")
    parser.add_argument(
        "--world-size", type=int, default=None, help="of the plan; default: the recipe's GPUs"
    )
    parser.add_argument("--gpu-gib", type=float, default=80.0, help="memory of one GPU, for the plan")
    parser.add_argument("--plan-only", action="store_true", help="compute the memory plan, run no step")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    recipe = yaml.safe_load(args.recipe.read_text())
    trainer_args = dict(recipe.get("trainer") or {})
    trainer_args["precision"] = args.precision or trainer_args.get("precision", "bf16-mixed")
    world = args.world_size or int(trainer_args.get("devices", 1)) * int(trainer_args.get("num_nodes", 1))
    spec = random_weight_spec(recipe, args.gradient_checkpointing)
    plan = planned(spec, args.strategy, world, trainer_args["precision"])
    figures: dict[str, Any] = {f"planned_{plan.strategy}_gib_per_gpu_at_{world}": plan.total / GIB}
    requested = args.seconds_per_batch or recipe["data"]["init_args"].get("max_seconds_per_batch", 100.0)
    tried: dict[str, str] = {}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if not args.plan_only:
        measured, seconds = measure(spec, trainer_args, args, requested, tried)
        if measured is None:
            return 0  # not rank 0: rank 0 reports
        figures |= measured
        if "peak_memory_gib" in measured:
            at_run = planned(spec, args.strategy, args.devices, trainer_args["precision"])
            per_second = (measured["peak_memory_gib"] - at_run.total / GIB) / seconds
            figures["activation_gib_per_audio_second"] = per_second
            figures[f"audio_seconds_per_gpu_that_fit_at_{world}"] = (
                plan.activation_room(args.gpu_gib) / per_second
            )
    described = (
        f"{describe_device(device)}, {args.recipe.name}, {args.strategy} x {args.devices}, random weights"
    )
    print(f"training step: {described}")
    for name, reason in tried.items():
        print(f"  {name:34s} {reason}")
    for name, value in figures.items():
        print(f"  {name:34s} {value:14,}" if isinstance(value, int) else f"  {name:34s} {value:14,.3f}")
    print(format_plan(plan, args.gpu_gib))
    if args.json:
        report = {
            "figures": figures,
            "targets": {"seconds_of_audio_per_batch": f">= {requested:g}"},
            "out_of_memory": tried,
            "device": described,
        }
        args.json.write_text(json.dumps(report, indent=2))
    return 0


def measure(
    spec: dict[str, Any],
    trainer_args: dict[str, Any],
    args: argparse.Namespace,
    requested: float,
    tried: dict[str, str],
) -> tuple[dict[str, Any] | None, float]:
    """Run the steps, halving the batch on out-of-memory; None on ranks other than 0."""
    seconds = requested
    figures = None
    while figures is None:
        batches = synthetic_batches(seconds, min(args.clip_seconds, seconds), args.steps)
        try:
            figures = run_steps(spec, trainer_args, batches, args)
        except torch.cuda.OutOfMemoryError:
            if seconds / 2 < min(args.clip_seconds, 5.0):
                raise
            tried[f"{seconds:g} s of audio per batch"] = "out of memory"
            print(f"{seconds:g} s of audio per batch: out of memory; halving")
        if figures is None:  # outside the except block, so the failed run's tensors can be freed
            gc.collect()
            torch.cuda.empty_cache()
            seconds /= 2
    if not figures:
        return None, seconds
    return figures | {
        "seconds_of_audio_per_batch": seconds,
        "audio_seconds_per_second": args.devices * seconds / figures["seconds_per_step"],
    }, seconds


if __name__ == "__main__":
    raise SystemExit(main())
