"""``minmo ablate NAME``: train the variants of one ablation, evaluate each on the same test split, compare.

An ablation (``recipes/ablations/NAME.yaml``) names a base stage recipe per size and, per variant, the ONE
recipe entry it changes (a dotted key and its new value)::

    base: {tiny: tiny/stage1a_prealign.yaml, full: minmo/stage1a_prealign.yaml}
    evaluate: eval/asr_builtin.yaml            # how the tiny variants are scored
    starts_from:                               # the base stage's starting point (tiny), for every variant
      model.init_args.init_blocks: {voice_encoder: runs/tiny/voice_encoder/checkpoints/last.ckpt}
    variants:
      transformer_conv: {}                     # the base as it is
      linear:
        tiny: {model.init_args.input_projector: {class_path: LinearProjector, init_args: {...}}}
        full: {model.init_args.input_projector: {...}}
        # follows: {tiny: {dotted.key: value}}  # a width that must match the swapped block, nothing else
      vad:                                     # a block with nothing to train (a baseline):
        tiny: {model.init_args.duplex_predictor: {class_path: VADDuplexPredictor}}
        trains: false                          # evaluated on the base's checkpoint with the block swapped in

An ablation whose effect shows only after the next stage names it (``then: {tiny: ..., full: ...}``): each
variant continues into it from its own checkpoint, with its change set there too, and that stage's checkpoint
is evaluated (``OUT/VARIANT/then/``).

Each variant runs in ``OUT/VARIANT/`` (``recipe.yaml``, ``checkpoints/``, ``eval/`` with ``training.json``:
trainable parameters and train time); ``OUT/comparison/`` holds the side-by-side report
(``evaluation/compare.py``). Finished steps are skipped, so an interrupted ablation resumes.
``--size full --dry-run`` writes the full-size recipes only (they need GPUs).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

SIZES = ("tiny", "full")
SLOT_PREFIX = "model.init_args."


@dataclass(frozen=True)
class Variant:
    name: str
    #: size -> {dotted key: value}: the one entry this variant changes (empty for the base)
    changes: dict[str, dict[str, Any]]
    #: size -> {dotted key: value}: widths that follow the changed block
    follows: dict[str, dict[str, Any]]
    #: False for a block with nothing to train: the base variant's checkpoint is evaluated with it swapped in
    trains: bool = True

    def settings(self, size: str) -> dict[str, Any]:
        """The entry it changes and the widths that follow it, as dotted keys."""
        return self.changes.get(size, {}) | self.follows.get(size, {})

    def swaps(self, size: str) -> dict[str, dict]:
        """A non-training variant's change as the evaluation's block swap: ``{slot: {class_path, ...}}``."""
        return {key.removeprefix(SLOT_PREFIX): spec for key, spec in self.changes.get(size, {}).items()}


@dataclass(frozen=True)
class Ablation:
    name: str
    description: str
    base: dict[str, str]
    evaluate: str
    starts_from: dict[str, Any]
    variants: list[Variant]
    #: size -> the stage each variant continues into before it is evaluated (none: the base is evaluated)
    then: dict[str, str] = field(default_factory=dict)

    def recipe(self, size: str, variant: Variant, run_dir: Path | None = None) -> dict:
        """The base recipe of ``size`` with the variant's entry (and what follows it) set."""
        settings = {**(self.starts_from if size == "tiny" else {})}
        return _changed(self.base[size], settings | variant.settings(size), run_dir)

    def then_recipe(self, size: str, variant: Variant, start: Path, run_dir: Path | None = None) -> dict:
        """The next stage's recipe from the variant's checkpoint ``start``, with the variant's entry set."""
        settings = {"model.init_args.init_checkpoint": str(start)} | variant.settings(size)
        return _changed(self.then[size], settings, run_dir)


def _changed(relative: str, settings: dict[str, Any], run_dir: Path | None) -> dict:
    recipe = yaml.safe_load(Path(recipe_path(relative)).read_text())
    for key, value in settings.items():
        set_dotted(recipe, key, copy.deepcopy(value))
    if run_dir is not None:
        relocate(recipe, run_dir)
    return recipe


def recipe_path(relative: str) -> str:
    return str(resources.files("minmo_lightning.recipes").joinpath(relative))


def load_ablation(name: str) -> Ablation:
    path = Path(name) if name.endswith(".yaml") else Path(recipe_path(f"ablations/{name}.yaml"))
    if not path.is_file():
        raise FileNotFoundError(f"no ablation {name!r}; available: {', '.join(available())}")
    raw = yaml.safe_load(path.read_text()) or {}
    variants = []
    for variant, spec in (raw.get("variants") or {}).items():
        spec = spec or {}
        unknown = set(spec) - {*SIZES, "follows", "trains"}
        if unknown:
            raise ValueError(
                f"{path}: variant {variant!r} has unknown key(s) {sorted(unknown)}; use tiny, full, follows, trains"
            )
        changes = {size: dict(spec.get(size) or {}) for size in SIZES}
        for size, entry in changes.items():
            if len(entry) > 1:
                raise ValueError(
                    f"{path}: variant {variant!r} changes {len(entry)} entries at size {size} ({', '.join(entry)}); "
                    "an ablation changes exactly one (widths that must follow go under `follows`)"
                )
        trains = bool(spec.get("trains", True))
        if not trains:
            _check_block_swap(path, variant, changes, spec.get("follows"))
        variants.append(
            Variant(
                variant,
                changes,
                {s: dict(v or {}) for s, v in (spec.get("follows") or {}).items()},
                trains,
            )
        )
    if len(variants) < 2:
        raise ValueError(f"{path}: an ablation needs at least two variants (the base and one change)")
    if not variants[0].trains:
        raise ValueError(
            f"{path}: the first variant is the base and must train ({variants[0].name!r} does not)"
        )
    return Ablation(
        name=path.stem,
        description=str(raw.get("description", "")).strip(),
        base=dict(raw["base"]),
        evaluate=raw["evaluate"],
        starts_from=dict(raw.get("starts_from") or {}),
        variants=variants,
        then=dict(raw.get("then") or {}),
    )


def _check_block_swap(path: Path, variant: str, changes: dict[str, dict], follows: Any) -> None:
    """A variant that trains nothing may only swap one whole block: the evaluation swaps it into the base's
    trained model, which cannot follow any other change."""
    for size, entry in changes.items():
        for key, value in entry.items():
            slot = key.removeprefix(SLOT_PREFIX)
            if (
                not key.startswith(SLOT_PREFIX)
                or "." in slot
                or not isinstance(value, dict)
                or "class_path" not in value
            ):
                raise ValueError(
                    f"{path}: variant {variant!r} trains nothing, so its change must swap one whole block "
                    f"({SLOT_PREFIX}<slot>: {{class_path: ..., init_args: ...}}); at size {size} it sets {key}"
                )
    if follows:
        raise ValueError(f"{path}: variant {variant!r} trains nothing, so nothing can follow its change")


def starting_points(recipe: dict) -> list[str]:
    """The checkpoints a recipe's model starts from (``init_checkpoint``, ``init_blocks``)."""
    model = recipe.get("model", {}).get("init_args", {})
    blocks = model.get("init_blocks") or {}
    return [p for p in [model.get("init_checkpoint"), *blocks.values()] if isinstance(p, str)]


def available() -> list[str]:
    folder = resources.files("minmo_lightning.recipes").joinpath("ablations")
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def set_dotted(tree: dict, key: str, value: Any) -> None:
    """``a.b.c`` -> ``tree[a][b][c] = value``; every part but the last must exist (a typo is an error)."""
    *parents, last = key.split(".")
    node = tree
    for depth, part in enumerate(parents):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(f"recipe has no entry {'.'.join(parents[: depth + 1])!r} (setting {key})")
        node = node[part]
    if not isinstance(node, dict):
        raise KeyError(f"recipe entry {'.'.join(parents)!r} is not a mapping (setting {key})")
    node[last] = value


def relocate(recipe: dict, run_dir: Path) -> None:
    """Point the run's logs and checkpoints at ``run_dir``."""
    trainer = recipe.setdefault("trainer", {})
    trainer["default_root_dir"] = str(run_dir)
    for callback in trainer.get("callbacks") or []:
        if str(callback.get("class_path", "")).endswith("ModelCheckpoint"):
            callback.setdefault("init_args", {})["dirpath"] = str(run_dir / "checkpoints")


def _fit_once(recipe: dict, run_dir: Path, extra: list[str], what: str) -> dict:
    """Fit ``recipe`` in ``run_dir`` unless a finished run is there (an interrupted one resumes); its train
    time, steps and trainable parameters (``training.json``; the time of a resumed run is its last part's)."""
    from minmo_lightning.cli import lightning_main

    run_dir.mkdir(parents=True, exist_ok=True)
    recipe_file = run_dir / "recipe.yaml"
    recipe_file.write_text(yaml.safe_dump(recipe, sort_keys=False))
    training_file, checkpoint = run_dir / "training.json", run_dir / "checkpoints" / "last.ckpt"
    if not (checkpoint.is_file() and training_file.is_file()):
        # an interrupted run goes on from its last.ckpt (a fresh fit would save beside it as last-v1.ckpt)
        resume = ["--ckpt_path", str(checkpoint)] if checkpoint.is_file() else []
        print(f"ablate: training {what} ({recipe_file})", flush=True)
        started = time.perf_counter()
        cli = lightning_main(["fit", "--config", str(recipe_file), *resume, *extra])
        training = {
            "train_s": round(time.perf_counter() - started, 1),
            "steps": int(cli.trainer.global_step),
            "trainable_parameters": sum(p.numel() for p in cli.model.parameters() if p.requires_grad),
        }
        training_file.write_text(json.dumps(training, indent=2))
    return json.loads(training_file.read_text())


def run_variant(
    ablation: Ablation,
    variant: Variant,
    out: Path,
    extra: list[str],
    eval_args: list[str],
    swapped: list[Variant] = (),
) -> Path:
    """Fit (unless done) and evaluate one tiny variant; returns its evaluation directory. ``swapped``: the
    non-training variants, evaluated with this run as ``eval/variants/NAME`` (the evaluation's block swaps)."""
    from minmo_lightning.evaluation.cli import main as evaluate

    run_dir = out / variant.name
    what = f"{ablation.name}/{variant.name}"
    training = _fit_once(ablation.recipe("tiny", variant, run_dir), run_dir, extra, what)
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    if ablation.then:  # the stage after, from this variant's checkpoint: its time adds up
        then_dir = run_dir / "then"
        recipe = ablation.then_recipe("tiny", variant, checkpoint, then_dir)
        more = _fit_once(recipe, then_dir, extra, f"{what}, then {ablation.then['tiny']}")
        training = {
            "train_s": round(training["train_s"] + more["train_s"], 1),
            "steps": training["steps"] + more["steps"],
            "trainable_parameters": more["trainable_parameters"],
        }
        checkpoint = then_dir / "checkpoints" / "last.ckpt"
    eval_dir = run_dir / "eval"
    swaps = [f"--variants.{v.name}={json.dumps(v.swaps('tiny'))}" for v in swapped]
    done = [eval_dir / "metrics.json", *(eval_dir / "variants" / v.name / "metrics.json" for v in swapped)]
    if not all(path.is_file() for path in done):
        print(f"ablate {ablation.name}: evaluating {variant.name}", flush=True)
        code = evaluate(
            [
                "--config",
                recipe_path(ablation.evaluate),
                "--ckpt",
                str(checkpoint),
                "--out",
                str(eval_dir),
                *eval_args,
                *swaps,
            ]
        )
        if code != 0:
            raise RuntimeError(f"evaluating {variant.name} failed (exit {code}); see the messages above")
    (eval_dir / "training.json").write_text(json.dumps(training, indent=2))
    untrained = json.dumps({"train_s": 0.0, "steps": 0, "trainable_parameters": 0}, indent=2)
    for other in swapped:
        (eval_dir / "variants" / other.name / "training.json").write_text(untrained)
    return eval_dir


def swap_command(ablation: Ablation, variant: Variant, size: str, base_run: Path) -> str:
    """How to evaluate a non-training variant by hand: the base's checkpoint with its block swapped in."""
    swap = json.dumps(variant.swaps(size))
    checkpoint = (base_run / "then" if ablation.then else base_run) / "checkpoints" / "last.ckpt"
    return (
        f"minmo evaluate --config {recipe_path(ablation.evaluate)} --ckpt {checkpoint} "
        f"'--variants.{variant.name}={swap}'"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="minmo ablate", description=__doc__.splitlines()[0])
    parser.add_argument(
        "name", nargs="?", help=f"an ablation: {', '.join(available())} (or a manifest .yaml)"
    )
    parser.add_argument("--list", action="store_true", help="list the ablations and their variants")
    parser.add_argument("--size", choices=SIZES, default="tiny")
    parser.add_argument("--out", help="default runs/ablations/NAME")
    parser.add_argument(
        "--variants", nargs="+", help="run only these variants (the first listed is the base)"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="write each variant's recipe.yaml, train nothing"
    )
    parser.add_argument("--max-steps", type=int, help="override trainer.max_steps (smoke runs)")
    parser.add_argument("--limit", type=int, help="evaluate at most this many batches (smoke runs)")
    args = parser.parse_args(argv)
    if args.list or not args.name:
        for name in available():
            ablation = load_ablation(name)
            print(f"{name}: {', '.join(v.name for v in ablation.variants)}\n  {ablation.description}")
        return 0
    ablation = load_ablation(args.name)
    variants = ablation.variants
    if args.variants:
        by_name = {v.name: v for v in variants}
        unknown = [v for v in args.variants if v not in by_name]
        if unknown:
            raise ValueError(f"{ablation.name} has no variant {unknown}; its variants: {', '.join(by_name)}")
        variants = [by_name[v] for v in args.variants]
    # a variant that changes nothing at this size would rerun the base (the first variant is the base itself)
    variants = variants[:1] + [v for v in variants[1:] if v.changes.get(args.size)]
    out = Path(
        args.out or f"runs/ablations/{ablation.name}" + ("" if args.size == "tiny" else f"-{args.size}")
    )
    if not variants[0].trains:
        raise ValueError(f"the first variant is the base and must train; {variants[0].name!r} trains nothing")
    trained, swapped = [v for v in variants if v.trains], [v for v in variants if not v.trains]
    if args.size == "full" or args.dry_run:
        for variant in trained:
            folder = out / variant.name
            recipes = [(folder, ablation.recipe(args.size, variant, folder))]
            if ablation.then:
                start = folder / "checkpoints" / "last.ckpt"
                recipes.append(
                    (folder / "then", ablation.then_recipe(args.size, variant, start, folder / "then"))
                )
            for where, recipe in recipes:
                where.mkdir(parents=True, exist_ok=True)
                (where / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
            print(
                f"{variant.name}: "
                + " && ".join(f"minmo fit --config {w / 'recipe.yaml'}" for w, _ in recipes)
            )
        for variant in swapped:
            command = swap_command(ablation, variant, args.size, out / variants[0].name)
            print(f"{variant.name}: nothing to train; after the base: {command}")
        return 0
    if not ablation.evaluate:
        raise ValueError(
            f"{ablation.name} names no evaluation for its tiny twins yet (evaluate: null in its manifest); "
            f"`minmo ablate {ablation.name} --dry-run` writes the recipes"
        )
    missing = [p for p in starting_points(ablation.recipe("tiny", variants[0])) if not Path(p).exists()]
    if missing:
        raise FileNotFoundError(
            f"{ablation.name}'s tiny twins start from {', '.join(missing)}, which do not exist yet: train "
            "them first (`minmo demo --full` trains the tiny chain's stages into runs/tiny; a block trained "
            "alone comes from its recipes/components/ recipe)"
        )
    extra = ["--trainer.max_steps", str(args.max_steps)] if args.max_steps else []
    eval_args = ["--limit", str(args.limit)] if args.limit else []
    eval_dirs = {
        v.name: run_variant(ablation, v, out, extra, eval_args, swapped if v is variants[0] else ())
        for v in trained
    }
    eval_dirs |= {v.name: eval_dirs[variants[0].name] / "variants" / v.name for v in swapped}
    from minmo_lightning.evaluation.compare import compare_runs

    compare_runs([eval_dirs[v.name] for v in variants], out / "comparison", names=[v.name for v in variants])
    print(f"ablate {ablation.name}: {out / 'comparison' / 'report.md'}")
    return 0
