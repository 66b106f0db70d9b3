"""The ``minmo`` command.

``minmo fit|validate|test|predict --config recipe.yaml`` is a LightningCLI (Lightning itself ships no
``lightning fit`` command since 2.5.1). Any imported ``LightningModule`` / ``LightningDataModule``
subclass can be named in a recipe by its short class name; every component is imported here so that
works for all of them. The other sub-commands are small tools, each living next to what it serves.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import os
import re
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any

import yaml

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
    "fdb-sweep": (
        "minmo_lightning.evaluation.fdb_sweep:main",
        "Full-Duplex-Bench take-over rates and latencies as the duplex predictor's threshold moves",
    ),
    "asr-judge": (
        "minmo_lightning.evaluation.asr_judge:main",
        "write FDB's output.json (timed words) from every output.wav with a CTC voice encoder",
    ),
    "export": ("minmo_lightning.export:main", "write per-block safetensors folders from a checkpoint"),
    "ablate": (
        "minmo_lightning.ablate:main",
        "train an ablation's tiny variants, evaluate each and write a comparison report",
    ),
    "demo": ("minmo_lightning.demo:main", "build the corpus and train the tiny pipeline end to end"),
}
LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
#: what a user's input raises: a wrong path, value, key or name, a file that does not parse. Anything else
#: is a bug and keeps its traceback.
INPUT_ERRORS = (OSError, ValueError, KeyError, argparse.ArgumentError, yaml.YAMLError)
#: set to 1 for tracebacks and the parser's full detail (as the --verbose flag does)
VERBOSE_ENV = "MINMO_VERBOSE"


def lightning_main(args: list[str] | None = None, run: bool = True, verbose: bool = False) -> Any:
    """Build the LightningCLI (``run=False`` only parses and instantiates: used by recipe tests).

    A bad recipe value, a missing file or an unknown key ends in one short message naming the key, the
    value and the root cause, and ``SystemExit(2)``; ``verbose`` (or ``MINMO_VERBOSE=1``) adds the
    parser's full detail before it.
    """
    args = list(sys.argv[1:] if args is None else args)
    command = f"minmo {args[0]}" if args and args[0] in LIGHTNING_COMMANDS else "minmo"
    try:
        return _lightning_cli(args, run)
    except Exception as error:
        from lightning.fabric.utilities.exceptions import MisconfigurationException

        # MisconfigurationException: Lightning's verdict on a recipe (e.g. no test_step for `minmo test`)
        if not isinstance(error, (*INPUT_ERRORS, MisconfigurationException)):
            raise
        report_error(command, error, verbose)
        raise SystemExit(2) from None


def _lightning_cli(args: list[str], run: bool) -> Any:
    import lightning as L
    from lightning.pytorch.cli import LightningCLI

    from minmo_lightning.registry import SEARCHED_MODULES, import_modules

    for module in SEARCHED_MODULES:
        import_modules(module)
    for config in _config_files(args):
        check_class_paths(config)

    from jsonargparse import lazy_instance
    from lightning.pytorch.callbacks import RichProgressBar

    from minmo_lightning.progress import plain_progress_wanted
    from minmo_lightning.progress_bar import PlainProgressBar

    # Lightning's default logger already writes CSV under default_root_dir (TensorBoard when installed).
    # Checkpoints are replaced atomically: a kill while saving leaves the previous last.ckpt loadable
    # (a class_path, not an instance, so that config.yaml records it).
    # Rich draws nothing where stdout is not a terminal (nohup, SLURM, CI, `| tee`): plain lines there.
    progress_bar = PlainProgressBar if plain_progress_wanted() else RichProgressBar
    trainer_defaults = {
        "callbacks": [lazy_instance(progress_bar)],
        "plugins": [{"class_path": "minmo_lightning.checkpoint_io.AtomicCheckpointIO"}],
    }
    # Errors raise (not print and exit) so that report_error can name their root cause; a misspelt key is
    # an error, never read as the key it abbreviates (`--trainer.max_step 3`).
    strict = {"exit_on_error": False, "allow_abbrev": False}
    # minmo hands LightningCLI its arguments (without --verbose; from `minmo demo`): not a mistake
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    return _minmo_cli(LightningCLI)(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        trainer_defaults=trainer_defaults,
        save_config_callback=_run_dir_config_saver(),
        save_config_kwargs={"overwrite": True},
        parser_kwargs={**strict, **{command: strict for command in LIGHTNING_COMMANDS}},
        seed_everything_default=0,
        args=args,
        run=run,
        auto_configure_optimizers=False,
    )


def _minmo_cli(base: type) -> type:
    """LightningCLI, where ``--ckpt_path`` names an unreadable file in one line, and a model restored from
    it does not first load its stage's starting point (``init_checkpoint``/``init_blocks``): the checkpoint
    holds every weight, and the starting point may be gone."""
    from minmo_lightning.checkpoint_io import naming_unreadable

    class MinmoCLI(base):
        def _parse_ckpt_path(self) -> None:
            ckpt_path = (
                self.config[self.config.subcommand].get("ckpt_path")
                if self.config.get("subcommand")
                else None
            )
            with naming_unreadable(ckpt_path or ""):
                super()._parse_ckpt_path()

        def _run_subcommand(self, subcommand: str) -> None:
            ckpt_path = self.config[subcommand].get("ckpt_path")
            if (
                ckpt_path
                and _restores_weights(self.trainer, ckpt_path)
                and hasattr(self.model, "skip_init_weights")
            ):
                self.model.skip_init_weights()
            super()._run_subcommand(subcommand)

    return MinmoCLI


def _restores_weights(trainer: Any, ckpt_path: str) -> bool:
    """Whether the trainer will load weights from ``ckpt_path``: a file, or ``last`` when a checkpoint
    callback's folder holds one (Lightning starts from scratch, with a warning, otherwise)."""
    if ckpt_path == "last":
        folders = [cb.dirpath for cb in trainer.checkpoint_callbacks if getattr(cb, "dirpath", None)]
        return any(Path(folder, "last.ckpt").exists() for folder in folders)  # a sharded one is a folder
    return Path(ckpt_path).exists()


def _run_dir_config_saver() -> type:
    """LightningCLI's config saver, except that it never writes into the working directory.

    With a logger the config goes to the logger's run folder (as in Lightning); without one, Lightning
    falls back to ``trainer.default_root_dir``, which is the working directory when the recipe names
    none: then nothing is saved (the working directory is not a run folder), and an info line says so.
    Defined here so that ``minmo`` imports Lightning only for the commands that need it.
    """
    from lightning.pytorch.cli import SaveConfigCallback
    from lightning.pytorch.utilities import rank_zero_info

    class RunDirConfigSaver(SaveConfigCallback):
        def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
            if not trainer.loggers and self.config.get("trainer.default_root_dir") is None:
                if not self.already_saved:
                    rank_zero_info(
                        f"{self.config_filename} not saved: no logger and no trainer.default_root_dir "
                        "to put it in"
                    )
                self.already_saved = True
                return
            super().setup(trainer, pl_module, stage)

    return RunDirConfigSaver


def _config_files(args: list[str]) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args[:-1]) if a in ("--config", "-c")]


def check_class_paths(config_file: str) -> None:
    """Fail early, naming the file, the key and the valid choices, on a ``class_path`` that names no known
    class (a ``RegistryError``); a YAML syntax error names the file and line here too.

    jsonargparse would also reject both, but its messages neither list what the slot accepts nor suggest
    the near miss, nor name the file.
    """
    import lightning as L

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
                    raise RegistryError(f"{config_file}: {error}") from None
            for child_key, child in node.items():
                visit(child, f"{key}.{child_key}" if key else str(child_key))

    if not os.path.isfile(config_file):
        return  # the parser names a missing file (and reads an inline YAML string)
    with open(config_file) as handle:
        visit(yaml.safe_load(handle), "")


def take_verbose(argv: list[str]) -> tuple[list[str], bool]:
    """``argv`` without ``--verbose``, and whether it was there."""
    return [a for a in argv if a != "--verbose"], "--verbose" in argv


def report_error(command: str, error: BaseException, verbose: bool = False) -> None:
    """``<command>: error: <root cause>`` on stderr, last; with ``verbose`` (or ``MINMO_VERBOSE=1``) the
    traceback, with every message the parser wrapped around the cause, comes first."""
    verbose = verbose or os.environ.get(VERBOSE_ENV, "") not in ("", "0")
    if verbose:
        traceback.print_exception(error)
    print(f"{command}: error: {explain_error(error)}", file=sys.stderr)
    if not verbose:
        print(f"({command} --verbose, or {VERBOSE_ENV}=1, shows the traceback)", file=sys.stderr)


def explain_error(error: BaseException) -> str:
    """The recipe key and value at fault, and the root cause: the innermost error that is not the parser's
    wrapping of another (a block's message, the file system's, YAML's, or the parser's own verdict).

    jsonargparse reports a bad value as a chain of exceptions (``raise ... from``), one per nesting level,
    each repeating the whole sub-config; the keys come from their ``Parser key "..."`` messages and, for an
    error raised while a class is instantiated, from the parser actions on the stack.
    """
    chain = [error]
    while chain[-1].__cause__ is not None and _raised_by_parser(chain[-1]):
        chain.append(chain[-1].__cause__)
    root, messages = chain[-1], [str(e) for e in chain]
    keys: list[str] = []
    for exception, message in zip(chain, messages):
        named = re.match(r'Parser key "([^"]+)"', message)
        for key in _action_keys(exception) + ([named.group(1)] if named else []):
            if not keys or keys[-1] != key:
                keys.append(key)
    cause, value = _union_member_error(messages, str(root)) or _describe(root), _given_value(messages)
    unknown = _unknown_key(str(root))
    if unknown:
        key, unknown_value = unknown
        keys.append(key)
        value = value or unknown_value
        cause = "unknown key" + _near_miss(key, _accepted_keys(chain))
    subject = ".init_args.".join(keys)
    if subject and value:
        subject += f" = {_shorten(value, 80)}"
    elif subject:
        built = [m for m in map(_built_class, messages) if m]
        subject += f" ({built[-1]})" if built else ""
    return f"{subject}: {cause}" if subject else cause


def _union_member_error(messages: list[str], root: str) -> str | None:
    """For a value no member of a Union accepts, the error of the one member it was meant for (e.g. a strategy
    class that cannot be built), when the chained ``root`` is another member's: jsonargparse lists every
    member's error and chains the first one, which for ``str | Strategy`` is only "Expected a <class 'str'>"."""
    for message in messages:
        found = re.search(r"any of the Union subtypes.*?\nErrors:\n(.*?)\nGiven value", message, re.S)
        if found:
            errors = [" ".join(e.split()) for e in re.split(r"^\s*- ", found.group(1), flags=re.M)[1:]]
            meant = [e for e in errors if not e.startswith("Expected a <class")]
            if len(meant) == 1 and " ".join(root.split()) not in meant[0]:
                return _shorten(meant[0], 800)
    return None


def _raised_by_parser(error: BaseException) -> bool:
    """Whether the innermost frame of ``error`` is jsonargparse's or argparse's (a wrapper, not a cause)."""
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return False
    filename = tb.tb_frame.f_code.co_filename
    return os.sep + "jsonargparse" + os.sep in filename or filename == argparse.__file__


def _frames(error: BaseException) -> list[Any]:
    frames, tb = [], error.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    return frames


def _action_keys(error: BaseException) -> list[str]:
    """The destinations of the parser actions (recipe keys) that were on the stack when ``error`` rose."""
    actions = [frame.f_locals.get("self") for frame in _frames(error)]
    return [
        a.dest
        for a in actions
        if isinstance(a, argparse.Action)
        and not isinstance(a, argparse._SubParsersAction)  # the sub-command (fit, ...): no recipe key
        and isinstance(a.dest, str)
    ]


def _accepted_keys(chain: list[BaseException]) -> list[str]:
    """The keys of the innermost parser on the stack: those a misspelled key was meant to be one of."""
    parsers = [f.f_locals.get("self") for e in chain for f in _frames(e)]
    parsers = [p for p in parsers if isinstance(p, argparse.ArgumentParser)]
    if not parsers:
        return []
    return sorted(
        {
            a.dest
            for a in parsers[-1]._actions
            if a.dest not in (argparse.SUPPRESS, "help", "config") and not a.dest.endswith(".help")
        }
    )


def _unknown_key(message: str) -> tuple[str, str | None] | None:
    """(key, value) when the parser's verdict is a key it does not accept."""
    found = re.search(r"unrecognized arguments: -*(\S+)(?: (.+))?", message)
    if found:
        return found.group(1), found.group(2)
    found = re.search(
        r"(?:Group '([^']+)' does not accept|accept) option '([^']+)'|Option '([^']+)' is not", message
    )
    if found:
        group, key = found.group(1), found.group(2) or found.group(3)
        return (f"{group}.{key}" if group else key), None
    return None


def _near_miss(key: str, accepted: list[str]) -> str:
    if not accepted:
        return ""
    close = difflib.get_close_matches(key, accepted, n=1)
    if close:
        return f" (did you mean {close[0]}?)"
    return "; accepted keys: " + _shorten(", ".join(accepted), 400)


def _given_value(messages: list[str]) -> str | None:
    """The value the user gave, as the innermost parser message quotes it."""
    for message in reversed(messages):
        found = re.search(r"NestedArg\(key='[^']*', val=(.*)\)\s*$", message) or re.search(
            r"Got value: (.*)$", message
        )
        if found:
            return re.sub(r"^'(.*)'$", r"\1", found.group(1))
    return None


def _built_class(message: str) -> str | None:
    """The class being built when an instantiation failed (the parser quotes its class_path)."""
    found = re.search(r"Given value: Namespace\(class_path='(?:[\w]+\.)*(\w+)'", message)
    return found.group(1) if found else None


def _describe(error: BaseException) -> str:
    message = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    if isinstance(error, KeyError) and " " not in message:
        message = f"KeyError: {message!r}"
    message = re.sub(r"\. Got value: .*$", "", message, flags=re.M)
    message = re.sub(r"Expected a <class '(?:\w+\.)*(\w+)'>", r"expected \1", message)
    return _shorten(message.strip() or type(error).__name__, 800)


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def list_main(argv: list[str]) -> int:
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


def _run_tool(name: str, argv: list[str], verbose: bool = False) -> int:
    """Run a tool; a bad input it reports (a missing file, a bad value, an unknown name) ends in one line."""
    target, _ = TOOLS[name]
    module_name, function = target.split(":")
    try:
        return int(getattr(importlib.import_module(module_name), function)(argv) or 0)
    except INPUT_ERRORS as error:
        report_error(f"minmo {name}", error, verbose)
        return 2


def _usage() -> str:
    lines = ["usage: minmo COMMAND [...]", "", "training (LightningCLI; see `minmo fit --help`):"]
    lines += [f"  {c:<14} {c} a recipe: minmo {c} --config recipes/....yaml" for c in LIGHTNING_COMMANDS]
    lines += ["", "tools:"]
    lines += [f"  {name:<14} {help_}" for name, (_, help_) in TOOLS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    argv, verbose = take_verbose(list(sys.argv[1:] if argv is None else argv))
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] in TOOLS:
        return _run_tool(argv[0], argv[1:], verbose)
    if argv[0] not in LIGHTNING_COMMANDS:
        close = difflib.get_close_matches(argv[0], [*LIGHTNING_COMMANDS, *TOOLS], n=1)
        hint = f" (did you mean {close[0]}?)" if close else "; the commands are listed above"
        print(f"{_usage()}\n\nminmo: error: unknown command {argv[0]!r}{hint}", file=sys.stderr)
        return 2
    lightning_main(argv, verbose=verbose)
    return 0
