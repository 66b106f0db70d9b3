"""``minmo check-golden DIR``: the one parity harness against reference fixtures.

A fixture folder (format of ``shared/golden``) holds ``config.json`` (with ``item`` and the reference's
own hyperparameter names) and ``tensors.safetensors`` (``state_dict.*``, ``input.*``, ``output.*``).
Each block that mirrors a reference registers a check for its ``item`` with ``@golden_check``; the
check maps the reference hyperparameters onto our constructor (never hard-coding a fixture's sizes),
loads the weights, runs the inputs and returns one ``Comparison`` per output.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from minmo_lightning.registry import import_all_components


@dataclass(frozen=True)
class Comparison:
    """One output compared with the reference: max abs error against an allowed tolerance."""

    name: str
    max_abs_error: float
    tolerance: float
    passed: bool
    detail: str = ""


@dataclass
class Fixture:
    folder: Path
    config: dict
    tensors: dict[str, Tensor]

    @property
    def item(self) -> str:
        return self.config["item"]

    def state_dict(self, prefix: str = "state_dict.") -> dict[str, Tensor]:
        return {k[len(prefix) :]: v for k, v in self.tensors.items() if k.startswith(prefix)}

    def group(self, prefix: str) -> dict[str, Tensor]:
        """Tensors under ``prefix`` (e.g. ``"input."``) with the prefix stripped."""
        return {k[len(prefix) :]: v for k, v in self.tensors.items() if k.startswith(prefix)}

    def __getitem__(self, key: str) -> Tensor:
        if key not in self.tensors:
            raise KeyError(f"fixture {self.folder} has no tensor {key!r}")
        return self.tensors[key]


GoldenCheck = Callable[[Fixture], list[Comparison]]
_CHECKS: dict[str, GoldenCheck] = {}


def golden_check(item: str) -> Callable[[GoldenCheck], GoldenCheck]:
    """Register the parity check for fixtures whose ``config.json`` says ``"item": item``."""

    def decorate(fn: GoldenCheck) -> GoldenCheck:
        if item in _CHECKS and _CHECKS[item] is not fn:
            raise ValueError(f"golden item {item!r} already has a check: {_CHECKS[item].__module__}")
        _CHECKS[item] = fn
        return fn

    return decorate


def registered_items() -> list[str]:
    import_all_components()
    return sorted(_CHECKS)


def compare(name: str, ours: Tensor, reference: Tensor, atol: float, rtol: float = 0.0) -> Comparison:
    """Allclose-style: passes when ``|ours - ref| <= atol + rtol * |ref|`` at every element."""
    ours, reference = ours.detach().double().cpu(), reference.detach().double().cpu()
    if ours.shape != reference.shape:
        shapes = f"shape {tuple(ours.shape)} != reference {tuple(reference.shape)}"
        return Comparison(name, float("inf"), atol, False, shapes)
    error = (ours - reference).abs()
    passed = bool((error <= atol + rtol * reference.abs()).all())
    max_error = float(error.max()) if error.numel() else 0.0
    return Comparison(name, max_error, atol, passed, f"atol={atol:g} rtol={rtol:g}")


def compare_exact(name: str, ours: Tensor, reference: Tensor) -> Comparison:
    """Integer outputs (token ids, lengths): must be identical."""
    ours, reference = ours.detach().cpu(), reference.detach().cpu()
    if ours.shape != reference.shape:
        shapes = f"shape {tuple(ours.shape)} != reference {tuple(reference.shape)}"
        return Comparison(name, float("inf"), 0.0, False, shapes)
    mismatches = int((ours != reference).sum())
    error = float((ours.double() - reference.double()).abs().max()) if ours.numel() else 0.0
    return Comparison(name, error, 0.0, mismatches == 0, f"exact; {mismatches} of {ours.numel()} differ")


def load_fixture(folder: str | Path) -> Fixture:
    from safetensors.torch import load_file

    folder = Path(folder)
    config_path, tensor_path = folder / "config.json", folder / "tensors.safetensors"
    for path in (config_path, tensor_path):
        if not path.is_file():
            raise FileNotFoundError(f"{folder} is not a golden fixture: {path.name} is missing")
    config = json.loads(config_path.read_text())
    if "item" not in config:
        raise ValueError(f"{config_path} has no 'item' key naming what the fixture checks")
    return Fixture(folder, config, load_file(str(tensor_path)))


class UnknownGoldenItem(LookupError):
    pass


def run_golden(folder: str | Path) -> tuple[Fixture, list[Comparison]]:
    fixture = load_fixture(folder)
    items = registered_items()
    if fixture.item not in _CHECKS:
        raise UnknownGoldenItem(
            f"no implementation checks golden item {fixture.item!r} yet (implemented: {', '.join(items) or 'none'})"
        )
    with torch.no_grad():
        return fixture, _CHECKS[fixture.item](fixture)


def main(argv: list[str] | None = None) -> int:
    import argparse

    from rich.console import Console
    from rich.table import Table

    parser = argparse.ArgumentParser(prog="minmo check-golden", description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", help="fixture folder(s), or a folder of fixture folders")
    args = parser.parse_args(argv)

    folders: list[Path] = []
    for folder in map(Path, args.folders):
        if (folder / "config.json").is_file():
            folders.append(folder)
        else:
            folders.extend(sorted(p.parent for p in folder.glob("*/tensors.safetensors")))
    if not folders:
        parser.error(
            f"no fixture folders (with config.json + tensors.safetensors) under {', '.join(args.folders)}"
        )

    console = Console()
    failed = 0
    for folder in folders:
        try:
            fixture, results = run_golden(folder)
        except UnknownGoldenItem as error:
            console.print(f"[red]FAIL[/red] {folder}: {error}")
            failed += 1
            continue
        table = Table(title=f"{fixture.item} ({folder})")
        for column in ("output", "max abs error", "tolerance", "", "note"):
            table.add_column(column)
        for r in results:
            status = "[green]ok[/green]" if r.passed else "[red]FAIL[/red]"
            table.add_row(r.name, f"{r.max_abs_error:.3g}", f"{r.tolerance:.3g}", status, r.detail)
        console.print(table)
        if not results or not all(r.passed for r in results):
            failed += 1
    console.print(f"{len(folders) - failed} of {len(folders)} fixture(s) pass")
    return 1 if failed else 0
