"""Dotted command-line overrides of an evaluation recipe, written as for ``minmo fit``.

    minmo evaluate --config R.yaml --data.init_args.path /my/copy --dataset.split test \
        --metrics.tolerances [1,2] --model.init_args.llm.init_args.dtype float32

Each ``--a.b.c VALUE`` (or ``--a.b.c=VALUE``) sets that key of the recipe; the value is parsed as YAML, as
LightningCLI does (``[1,2]`` a list, ``null`` None, ``0.5`` a float). A key must exist: a top-level recipe
key, a ``dataset`` / ``baselines`` field, a metric setting of the recipe's task, or, under ``model`` and
``data``, ``class_path`` or ``init_args.<a parameter of the class>`` (its signature, followed through
``**kwargs`` into its base classes as jsonargparse does), and so on down nested ``class_path`` specs. A key
under a nested block whose class the recipe does not name (a checkpoint-mode ``model: {class_path: MinMo}``)
is checked when the block is built. An unknown key is a one-line error naming it and the nearest valid keys.
"""

from __future__ import annotations

import difflib
import inspect
import typing
from typing import Any

import yaml

RECIPE_KEYS = (
    "task",
    "dataset",
    "metrics",
    "model",
    "data",
    "variants",
    "baselines",
    "stage",
    "seed",
    "output_dir",
)
DATASET_KEYS = ("name", "path", "config_name", "split", "id_column", "reference_column")
BASELINE_KEYS = ("file", "key")


class OverrideError(ValueError):
    """An override whose key the recipe does not have, or that is not written ``--key value``."""


def parse_overrides(argv: list[str]) -> list[tuple[str, Any]]:
    """``["--a.b", "1", "--c.d=x"]`` -> ``[("a.b", 1), ("c.d", "x")]``."""
    pairs, i = [], 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--") or "." not in arg.split("=", 1)[0]:
            raise OverrideError(
                f"unrecognized argument {arg!r}; recipe keys are given as dotted flags: --data.init_args.path DIR"
            )
        if "=" in arg:
            key, text = arg[2:].split("=", 1)
            i += 1
        elif i + 1 < len(argv):
            key, text = arg[2:], argv[i + 1]
            i += 2
        else:
            raise OverrideError(f"{arg} needs a value: {arg} VALUE")
        pairs.append((key, yaml.safe_load(text)))
    return pairs


def apply_overrides(recipe: dict, pairs: list[tuple[str, Any]], task: str | None) -> dict:
    """A copy of ``recipe`` with every override set, each key checked first (see the module docstring)."""
    recipe = yaml.safe_load(yaml.safe_dump(recipe))  # a deep copy
    for key, value in pairs:
        parts = key.split(".")
        check_key(recipe, parts, value, task)
        node = recipe
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    return recipe


def check_key(recipe: dict, parts: list[str], value: Any, task: str | None) -> None:
    """Raise ``OverrideError`` unless ``parts`` names a key the recipe may hold (a ``class_path`` value must
    name a class of the right kind)."""
    head, rest = parts[0], parts[1:]
    _expect(head, RECIPE_KEYS, "the recipe", parts)
    if head in ("dataset", "baselines"):
        _expect_leaf(rest, DATASET_KEYS if head == "dataset" else BASELINE_KEYS, head, parts)
    elif head == "metrics":
        from minmo_lightning.evaluation.tasks import task_spec

        if task is None:
            raise OverrideError(f"--{'.'.join(parts)}: metric settings depend on the task; give --task")
        _expect_leaf(rest, tuple(task_spec(task).settings), f"the {task} metric settings", parts)
    elif head in ("model", "data"):
        import lightning as L

        base = L.LightningModule if head == "model" else L.LightningDataModule
        _check_spec(recipe.get(head), base, rest, value, head, parts)
    elif rest and head != "variants":
        raise OverrideError(f"--{'.'.join(parts)}: {head!r} is a single value, it has no {rest[0]!r}")


def _check_spec(
    spec: Any, base: type | None, parts: list[str], value: Any, where: str, full: list[str]
) -> None:
    """``parts`` below a ``{class_path, init_args}`` spec at ``where`` (``spec``: what the recipe holds;
    ``base``: the class it must subclass, None when the signature does not say)."""
    if not parts:
        return
    from minmo_lightning.registry import resolve_class

    _expect(parts[0], ("class_path", "init_args"), where, full)
    if parts == ["class_path"] and base is not None:
        resolve_class(str(value), base, f"--{'.'.join(full)}")
    if len(parts) == 1:
        return

    class_path = spec.get("class_path") if isinstance(spec, dict) else None
    if class_path is None or base is None:
        return  # the class comes from a checkpoint: the block checks its own arguments when built
    cls = resolve_class(class_path, base, f"{where}.class_path")
    parameters = init_parameters(cls)
    name = parts[1]
    _expect(name, tuple(parameters), f"{cls.__name__} ({where}.init_args)", full)
    if len(parts) > 2:
        child = (spec.get("init_args") or {}).get(name)
        _check_spec(child, _class_of(parameters[name]), parts[2:], value, f"{where}.init_args.{name}", full)


def _class_of(annotation: Any) -> type | None:
    """The block class a parameter takes (``Block``, ``Block | None``); None for anything else (a ``dict``
    spec, a list of datamodules...)."""
    from torch import nn

    candidates = (annotation, *typing.get_args(annotation))
    return next((a for a in candidates if isinstance(a, type) and issubclass(a, nn.Module)), None)


def init_parameters(cls: type) -> dict[str, Any]:
    """Constructor parameter -> its annotation, following ``**kwargs`` into the base classes."""
    found: dict[str, Any] = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            hints = typing.get_type_hints(init)
        except Exception:  # annotations that do not resolve here: names are enough
            hints = {}
        signature = inspect.signature(init)
        for name, parameter in signature.parameters.items():
            if name != "self" and parameter.kind not in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL):
                found.setdefault(name, hints.get(name))
        if not any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
            break
    return found


def _expect_leaf(rest: list[str], valid: tuple[str, ...], where: str, full: list[str]) -> None:
    if len(rest) != 1:
        raise OverrideError(f"--{'.'.join(full)}: give one key of {where}: {', '.join(valid)}")
    _expect(rest[0], valid, where, full)


def _expect(key: str, valid: tuple[str, ...], where: str, full: list[str]) -> None:
    if key in valid:
        return
    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
    listed = f"nearest: {', '.join(close)}" if close else f"valid: {', '.join(valid[:12])}"
    raise OverrideError(f"--{'.'.join(full)}: no key {key!r} in {where}; {listed}")
