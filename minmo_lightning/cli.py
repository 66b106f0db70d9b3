"""The ``minmo`` command.

``minmo fit|validate|test|predict --config recipe.yaml`` is a LightningCLI (Lightning itself ships no
``lightning fit`` command since 2.5.1). Any imported ``LightningModule`` / ``LightningDataModule``
subclass can be named in a recipe by its short class name; every component is imported here so that
works for all of them. The other sub-commands are small tools, each living next to what it serves.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

#: sub-command -> "module:function"; each function takes argv and returns an exit code.
TOOLS: dict[str, tuple[str, str]] = {
    "list": ("minmo_lightning.cli:list_main", "list block implementations and presets with parameter counts"),
    "check-golden": ("minmo_lightning.golden:main", "compare a block with reference fixtures"),
    "synth-data": ("minmo_lightning.datamodules.synth:main", "synthesize the built-in espeak-ng corpus"),
    "prepare": ("minmo_lightning.datamodules.prepare:main", "add speech-token columns to an HF dataset"),
    "cmvn": (
        "minmo_lightning.components.voice_encoder.cmvn:main",
        "estimate a SenseVoice am.mvn from a train split",
    ),
    "evaluate": ("minmo_lightning.evaluation.cli:main", "score a model or predictions and write a report"),
    "chat": (
        "minmo_lightning.chat:main",
        "talk to a checkpoint in full duplex: a WAV in, the assistant channel out",
    ),
    "fdb-build": (
        "minmo_lightning.evaluation.fdb_builtin:main",
        "cut Full-Duplex-Bench sample folders from the built-in duplex corpus",
    ),
    "asr-judge": (
        "minmo_lightning.evaluation.asr_judge:main",
        "write FDB's output.json (timed words) from every output.wav with a CTC voice encoder",
    ),
    "export": ("minmo_lightning.export:main", "write per-block safetensors folders from a checkpoint"),
    "demo": ("minmo_lightning.demo:main", "build the corpus and train the tiny pipeline end to end"),
}
LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


def lightning_main(args: list[str] | None = None, run: bool = True) -> Any:
    """Build the LightningCLI (``run=False`` only parses and instantiates: used by recipe tests)."""
    import lightning as L
    from lightning.pytorch.cli import LightningCLI

    from minmo_lightning.registry import SEARCHED_MODULES, import_modules

    for module in SEARCHED_MODULES:
        import_modules(module)
    for config in _config_files(args if args is not None else sys.argv[1:]):
        check_class_paths(config)

    from jsonargparse import lazy_instance
    from lightning.pytorch.callbacks import RichProgressBar

    # Lightning's default logger already writes CSV under default_root_dir (TensorBoard when installed).
    # Checkpoints are replaced atomically: a kill while saving leaves the previous last.ckpt loadable
    # (a class_path, not an instance, so that config.yaml records it).
    trainer_defaults = {
        "callbacks": [lazy_instance(RichProgressBar)],
        "plugins": [{"class_path": "minmo_lightning.checkpoint_io.AtomicCheckpointIO"}],
    }
    return LightningCLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        trainer_defaults=trainer_defaults,
        save_config_kwargs={"overwrite": True},
        seed_everything_default=0,
        args=args,
        run=run,
        auto_configure_optimizers=False,
    )


def _config_files(args: list[str]) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args[:-1]) if a in ("--config", "-c")]


def check_class_paths(config_file: str) -> None:
    """Fail early, naming the key and the valid choices, on a ``class_path`` that names no known class.

    jsonargparse would also reject it, but its message neither lists what the slot accepts nor suggests
    the near miss.
    """
    import lightning as L
    import yaml

    from minmo_lightning.model import SLOT_TYPES
    from minmo_lightning.registry import RegistryError, resolve_class

    bases = {**SLOT_TYPES, "model": L.LightningModule, "data": L.LightningDataModule}

    def visit(node: Any, key: str) -> None:
        if isinstance(node, dict):
            class_path = node.get("class_path")
            base = bases.get(key.rsplit(".", 1)[-1])
            if isinstance(class_path, str) and base is not None:
                try:
                    resolve_class(class_path, base, what=f"{key}.class_path")
                except RegistryError as error:
                    raise SystemExit(f"minmo: {config_file}: {error}") from None
            for child_key, child in node.items():
                visit(child, f"{key}.{child_key}" if key else str(child_key))

    with open(config_file) as handle:
        visit(yaml.safe_load(handle), "")


def list_main(argv: list[str]) -> int:
    import argparse

    import yaml
    from rich.console import Console
    from rich.table import Table

    from minmo_lightning.blocks import Block
    from minmo_lightning.registry import list_presets, resolve_class

    parser = argparse.ArgumentParser(
        prog="minmo list", description="Block implementations and their presets."
    )
    parser.add_argument("--no-count", action="store_true", help="skip the parameter counts (faster)")
    parser.add_argument(
        "--yaml",
        nargs=2,
        metavar=("IMPLEMENTATION", "PRESET"),
        help="print a preset as a recipe block to paste",
    )
    args = parser.parse_args(argv)
    if args.yaml:
        cls = resolve_class(args.yaml[0], Block, what="implementation")
        block = {"class_path": cls.__name__, "init_args": cls.preset_args(args.yaml[1])}
        print(yaml.safe_dump(block, sort_keys=False), end="")
        return 0

    table = Table(title="minmo-lightning blocks")
    for column in ("slot", "implementation", "preset", "parameters"):
        table.add_column(column, justify="right" if column == "parameters" else "left", no_wrap=True)
    for row in list_presets(count=not args.no_count):
        table.add_row(
            row.slot, row.implementation, row.preset, "-" if row.parameters is None else f"{row.parameters:,}"
        )
    Console(width=max(Console().width, 110)).print(table)
    return 0


def _run_tool(name: str, argv: list[str]) -> int:
    target, _ = TOOLS[name]
    module_name, function = target.split(":")
    return int(getattr(importlib.import_module(module_name), function)(argv) or 0)


def _usage() -> str:
    lines = ["usage: minmo COMMAND [...]", "", "training (LightningCLI; see `minmo fit --help`):"]
    lines += [f"  {c:<14} {c} a recipe: minmo {c} --config recipes/....yaml" for c in LIGHTNING_COMMANDS]
    lines += ["", "tools:"]
    lines += [f"  {name:<14} {help_}" for name, (_, help_) in TOOLS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] in TOOLS:
        return _run_tool(argv[0], argv[1:])
    if argv[0] not in LIGHTNING_COMMANDS:
        print(f"minmo: unknown command {argv[0]!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    lightning_main(None if from_command_line else argv)
    return 0
