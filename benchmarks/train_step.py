"""A full-size recipe's training step on one device: seconds per step and peak GPU memory.

Answers "does this stage fit one GPU at the recipe's batch, and how fast is it" before a cluster is booked.
The recipe's model is built with every pretrained path and stage checkpoint dropped (random weights; the
tiny tokenizer stands in for Qwen's, its ids are valid Qwen ids), then Lightning's own fit loop runs a few
steps at the recipe's precision on synthetic batches: ``--seconds-per-batch`` of audio (the recipe's batch
per device) cut into ``--clip-seconds`` clips, each with a transcript of ~2.5 words per second. On an
out-of-memory error the batch is halved until a step fits, so the report says what fits.

    python benchmarks/train_step.py --recipe recipes/minmo/stage1c_sft.yaml [--seconds-per-batch 400]
                                    [--clip-seconds 20] [--steps 5] [--gradient-checkpointing on|off]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from minmo_lightning.components.llm.hf_causal_lm import TINY_TOKENIZER

from minmo_lightning.contracts import AudioBatch
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
WEIGHT_PATHS = ("path", "pretrained_path", "checkpoint_path")


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


def run_steps(spec: dict[str, Any], trainer_args: dict[str, Any], batches: list[dict]) -> dict[str, float]:
    torch.manual_seed(0)
    model = MinMo(**spec)
    timer = StepTimer()
    trainer = L.Trainer(
        accelerator="auto",
        devices=1,
        precision=trainer_args.get("precision", "bf16-mixed"),
        gradient_clip_val=trainer_args.get("gradient_clip_val"),
        max_steps=len(batches),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    trainer.fit(model, torch.utils.data.DataLoader(batches, batch_size=None))
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
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    recipe = yaml.safe_load(args.recipe.read_text())
    spec = random_weight_spec(recipe, args.gradient_checkpointing)
    requested = args.seconds_per_batch or recipe["data"]["init_args"].get("max_seconds_per_batch", 100.0)
    seconds = requested
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tried: dict[str, str] = {}
    figures = None
    while figures is None:
        batches = synthetic_batches(seconds, min(args.clip_seconds, seconds), args.steps)
        try:
            figures = run_steps(spec, recipe.get("trainer") or {}, batches)
        except torch.cuda.OutOfMemoryError:
            if seconds / 2 < min(args.clip_seconds, 5.0):
                raise
            tried[f"{seconds:g} s of audio per batch"] = "out of memory"
            print(f"{seconds:g} s of audio per batch: out of memory; halving")
        if figures is None:  # outside the except block, so the failed run's tensors can be freed
            gc.collect()
            torch.cuda.empty_cache()
            seconds /= 2
    figures |= {
        "seconds_of_audio_per_batch": seconds,
        "audio_seconds_per_second": seconds / figures["seconds_per_step"],
    }
    described = f"{describe_device(device)}, {args.recipe.name}, random weights"
    print(f"training step: {described}")
    for name, reason in tried.items():
        print(f"  {name:34s} {reason}")
    for name, value in figures.items():
        print(f"  {name:34s} {value:14,}" if isinstance(value, int) else f"  {name:34s} {value:14,.3f}")
    if args.json:
        report = {
            "figures": figures,
            "targets": {"seconds_of_audio_per_batch": f">= {requested:g}"},
            "out_of_memory": tried,
            "device": described,
        }
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
