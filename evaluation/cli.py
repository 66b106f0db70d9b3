"""``minmo evaluate``: score predictions or run a model, and write a report directory.

    minmo evaluate --predictions preds.jsonl --task asr [--references data/builtin/asr --split test]
    minmo evaluate --config recipes/eval/asr_builtin.yaml [--ckpt model.ckpt] [--out DIR]
        [--data.init_args.path /my/copy] [--metrics.normalizer basic] [--any.recipe.key VALUE]
    minmo evaluate fdb --task smooth_turn_taking --root DIR [--out DIR] [--no-reference-compat]
    minmo evaluate fdb --task v15_latency --root DIR [--out DIR]
    minmo evaluate --compare RUN_DIR RUN_DIR... --out DIR [--names A B ...]

A recipe supplies defaults (task, dataset, metric settings, baselines, model and data); flags override.
Any recipe key is set with a dotted flag, as in `minmo fit` (value parsed as YAML, key checked: see
evaluation/overrides.py); the named flags below win over dotted ones. With --ckpt and a recipe model
without init_args (checkpoint mode), --model.init_args.* override the checkpoint's saved arguments.
Overriding data.init_args.path also sets dataset.path (what the report names) unless that is given.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path

import yaml
from minmo_lightning.evaluation.overrides import apply_overrides, parse_overrides
from minmo_lightning.evaluation.report import find_file
from minmo_lightning.evaluation.tasks import TASK_SPECS


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="minmo evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", help="eval recipe YAML (recipes/eval/*.yaml)")
    p.add_argument("--ckpt", help="checkpoint to load strictly into the recipe's model")
    p.add_argument("--predictions", help="score this JSONL instead of running a model")
    p.add_argument("--references", help="references: a JSONL or an HF save_to_disk dataset folder")
    p.add_argument("--split", help="split of a DatasetDict given as --references")
    p.add_argument("--task", choices=tuple(TASK_SPECS))
    p.add_argument("--out", help="report directory (default runs/eval/<task>-<name>)")
    p.add_argument("--model-name", help="name shown in the report")
    p.add_argument("--normalizer", help="asr: whisper_english | basic | chinese | mixed | none")
    p.add_argument("--unit", choices=("word", "char"), help="asr: WER (word) or CER (char)")
    p.add_argument(
        "--crosscheck-torchmetrics", action="store_true", help="asr: also compute torchmetrics' rate"
    )
    p.add_argument(
        "--label-map",
        help="emotion / lid: map raw labels with this dataset's map (iemocap, meld, crema-d, ...)",
    )
    p.add_argument("--labels", nargs="+", help="emotion / lid: the full label set, in order")
    p.add_argument("--tolerances", nargs="+", type=float, help="duplex: offsets K for F1@K")
    p.add_argument("--tolerance-unit", choices=("frames", "ms"))
    p.add_argument("--frame-ms", type=float)
    p.add_argument("--window", choices=("symmetric", "after"))
    p.add_argument("--baselines", help="YAML of published figures")
    p.add_argument("--baseline-key", help="entry of the baselines YAML to compare with")
    p.add_argument("--limit", type=int, help="model mode: at most this many batches (smoke runs)")
    p.add_argument(
        "--overwrite", action="store_true", help="model mode: discard earlier predictions in --out"
    )
    p.add_argument("--no-progress", action="store_true")
    return p


def _fdb_parser() -> argparse.ArgumentParser:
    from minmo_lightning.evaluation.fdb import FDB_TASKS
    from minmo_lightning.evaluation.fdb_timing import TASK as TIMING_TASK

    p = argparse.ArgumentParser(
        prog="minmo evaluate fdb",
        description="Full-Duplex-Bench metrics on its own folder layout: the v1 tasks, and v1.5's stop and "
        "response latency from each sample's input.wav and output.wav (--task v15_latency).",
    )
    p.add_argument("--task", required=True, choices=(*FDB_TASKS, TIMING_TASK))
    p.add_argument("--root", required=True, help="one folder per sample (output.json, turn_taking.json, ...)")
    p.add_argument("--out", help="where metrics.json, report.md and the timeline go (default: --root)")
    p.add_argument(
        "--no-reference-compat",
        action="store_true",
        help="correct the reference's number-changing quirks (see evaluation/fdb.py)",
    )
    return p


def fdb_main(argv: list[str]) -> int:
    from minmo_lightning.evaluation.fdb_report import run_fdb
    from minmo_lightning.evaluation.fdb_timing import TASK as TIMING_TASK
    from minmo_lightning.evaluation.fdb_timing import run_timing

    args = _fdb_parser().parse_args(argv)
    if args.task == TIMING_TASK:
        result = run_timing(args.root, args.out or args.root)
        for kind in ("stop", "response"):
            value, count = result[f"{kind}_latency"], result[f"n_{kind}_intervals"]
            print(f"{kind}_latency: {'null' if value is None else f'{value:.4f}'} s over {count} intervals")
        print(f"samples: {result['n_samples']}  (metrics.json in {Path(args.out or args.root)})")
        for error in result["errors"][:5]:
            print(f"  not timed: {error['sample']}: {error['error']}")
        return 0
    result = run_fdb(args.root, args.task, args.out or args.root, not args.no_reference_compat)
    for key in ("tor", "latency", "freq", "jsd", "gpt_score"):
        if key in result:
            value = result[key]
            print(f"{key}: {'null' if value is None else f'{value:.4f}'}")
    print(f"samples: {result['n_samples']}  (metrics.json in {Path(args.out or args.root)})")
    if result["errors"]:
        print(
            f"not scored: {result['n_errors']} samples (listed under errors in metrics.json and report.md):"
        )
        for error in result["errors"][:5]:
            print(f"  {error['sample']}: {error['error']}")
    return 0


def _settings(args: argparse.Namespace, recipe: dict) -> dict:
    settings = dict(recipe.get("metrics") or {})
    overrides = {
        "normalizer": args.normalizer,
        "unit": args.unit,
        "label_map": args.label_map,
        "labels": args.labels,
        "tolerances": args.tolerances,
        "tolerance_unit": args.tolerance_unit,
        "frame_ms": args.frame_ms,
        "window": args.window,
    }
    settings.update({k: v for k, v in overrides.items() if v is not None})
    if args.crosscheck_torchmetrics:
        settings["crosscheck_torchmetrics"] = True
    if "tolerances" in settings:
        settings["tolerances"] = [int(t) if float(t).is_integer() else t for t in settings["tolerances"]]
    return settings


def main(argv: list[str] | None = None) -> int:
    """Input problems (missing files, mismatched ids or labels) print one clear line and exit 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "fdb":
            return fdb_main(argv[1:])
        return compare_main(argv) if "--compare" in argv else _evaluate_main(argv)
    except (OSError, ValueError, KeyError, TypeError) as error:
        from minmo_lightning.cli import explain_error

        if os.environ.get("MINMO_VERBOSE", "") not in ("", "0"):
            traceback.print_exception(error)
        # the root cause, also of a block that failed to build inside the parser
        print(f"minmo evaluate: error: {explain_error(error)}", file=sys.stderr)
        return 2


def compare_main(argv: list[str]) -> int:
    from minmo_lightning.evaluation.compare import compare_runs

    p = argparse.ArgumentParser(
        prog="minmo evaluate --compare",
        description="Evaluation runs side by side; the first is the base the others are compared with.",
    )
    p.add_argument("--compare", nargs="+", required=True, metavar="RUN_DIR", help="report directories")
    p.add_argument("--names", nargs="+", help="one name per run (default: the folder names)")
    p.add_argument("--out", required=True, help="where comparison.json, report.md and comparison.png go")
    args = p.parse_args(argv)
    result = compare_runs(args.compare, args.out, args.names)
    for row in result["runs"]:
        versus = row.get("vs_base")
        delta = (
            "base"
            if versus is None
            else f"{versus['difference']:+.4f} [{versus['ci95'][0]:+.4f}, {versus['ci95'][1]:+.4f}]"
        )
        print(f"{row['run']}: {result['headline']} {row['summary'].get(result['headline'])}  {delta}")
    print(f"report: {Path(args.out) / 'report.md'}")
    return 0


def _with_overrides(recipe: dict, extra: list[str], task: str | None, ckpt: str | None) -> dict:
    """The recipe with the dotted flags applied; in checkpoint mode ``model.init_args`` becomes
    ``model.load_args`` (the saved arguments to override, see runner.load_model)."""
    pairs = parse_overrides(extra)
    checkpoint_mode = bool(ckpt) and "init_args" not in (recipe.get("model") or {})
    recipe = apply_overrides(recipe, pairs, task)
    if checkpoint_mode and "init_args" in (recipe.get("model") or {}):
        recipe["model"]["load_args"] = recipe["model"].pop("init_args")
    keys = {key for key, _ in pairs}
    if "data.init_args.path" in keys and "dataset.path" not in keys and "dataset" in recipe:
        recipe["dataset"]["path"] = recipe["data"]["init_args"]["path"]
    return recipe


def _evaluate_main(argv: list[str]) -> int:
    args, extra = _parser().parse_known_args(argv)
    recipe: dict = {}
    if args.config:
        recipe = yaml.safe_load(find_file(args.config).read_text()) or {}
    task = args.task or recipe.get("task")
    if task is None:
        raise SystemExit(f"minmo evaluate: give --task ({', '.join(TASK_SPECS)}) or a --config with task:")
    recipe = _with_overrides(recipe, extra, task, args.ckpt)
    dataset = dict(recipe.get("dataset") or {})
    if args.split:
        dataset["split"] = args.split
    references = args.references or (dataset.get("path") if args.predictions else None)
    baselines = recipe.get("baselines") or {}
    name = dataset.get("name") or (Path(args.predictions).stem if args.predictions else "run")
    out = args.out or recipe.get("output_dir") or f"runs/eval/{task}-{name}"
    from minmo_lightning.evaluation.runner import evaluate

    metrics = evaluate(
        task,
        out,
        _settings(args, recipe),
        predictions=args.predictions,
        references=references,
        dataset=dataset,
        recipe=None if args.predictions else recipe,
        ckpt=args.ckpt,
        baselines=args.baselines or baselines.get("file"),
        baseline_key=args.baseline_key or baselines.get("key"),
        model_name=args.model_name,
        limit=args.limit,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    print(json.dumps(metrics["summary"], indent=2))
    print(f"report: {Path(out) / 'report.md'}")
    return 0
