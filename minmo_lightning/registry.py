"""The alias index: every block implementation and its named presets, nothing more.

Implementations register themselves by subclassing a slot (see ``blocks.py``); jsonargparse resolves
them in YAML by short class name once they are imported (``minmo_lightning.cli`` imports them all).
This index only lists them, rejects duplicate names, and turns a preset name into plain constructor
arguments that a recipe can show in full.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from minmo_lightning.blocks import Block

_IMPLEMENTATIONS: dict[str, type[Block]] = {}


class RegistryError(ValueError):
    """A name that is registered twice, or looked up but unknown."""


def register(cls: type[Block]) -> None:
    name = cls.__name__
    existing = _IMPLEMENTATIONS.get(name)
    if existing is not None and existing is not cls and _qualname(existing) != _qualname(cls):
        raise RegistryError(
            f"block name {name!r} is already registered by {_qualname(existing)}; "
            f"rename {_qualname(cls)} (YAML resolves implementations by short class name, so names must be unique)"
        )
    _IMPLEMENTATIONS[name] = cls


def unregister(name: str) -> None:
    """Remove an implementation (tests that register throw-away classes use this)."""
    _IMPLEMENTATIONS.pop(name, None)


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def implementations() -> dict[str, type[Block]]:
    import_all_components()
    return dict(sorted(_IMPLEMENTATIONS.items()))


def get_implementation(name: str) -> type[Block]:
    impls = implementations()
    if name not in impls:
        raise RegistryError(f"unknown block implementation {name!r}; known: {', '.join(impls)}")
    return impls[name]


def import_all_components() -> None:
    """Import every module under ``minmo_lightning.components`` so that all subclasses register."""
    import minmo_lightning.components as root

    for info in pkgutil.walk_packages(root.__path__, prefix=root.__name__ + "."):
        importlib.import_module(info.name)


@dataclass(frozen=True)
class PresetInfo:
    slot: str
    implementation: str
    preset: str
    parameters: int | None


def count_preset_parameters(cls: type[Block], preset: str) -> int:
    """Parameter count of a preset, built on the meta device so no memory is allocated."""
    with torch.device("meta"):
        block = cls.from_preset(preset)
        block.configure_model()
    return sum(p.numel() for p in block.parameters())


def list_presets(count: bool = True) -> list[PresetInfo]:
    rows = []
    for name, cls in implementations().items():
        slot = cls.slot_name()
        presets = cls.presets or {}
        if not presets:
            rows.append(PresetInfo(slot, name, "-", None))
        for preset in presets:
            rows.append(
                PresetInfo(slot, name, preset, count_preset_parameters(cls, preset) if count else None)
            )
    return sorted(rows, key=lambda r: (r.slot, r.implementation, r.preset))


def preset_init_args(implementation: str, preset: str) -> dict[str, Any]:
    cls = get_implementation(implementation)
    return cls.preset_args(preset)
