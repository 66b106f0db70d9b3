"""Names to classes: the one resolver, the alias index of block implementations, and their presets.

``resolve_class`` turns a recipe's ``class_path`` (a short class name, a class's short ``alias``, or a
dotted ``module.Class`` path) into a class of a given base; the model, the CLI, the evaluation runner and
the vocoder choice all resolve through it, so every unknown name gets the same near-miss message.
Block implementations register themselves by subclassing a slot (see ``blocks.py``); the index rejects
duplicate names (YAML resolves implementations by short class name) and turns a preset name into plain
constructor arguments that a recipe can show in full.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import pkgutil
import re
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from minmo_lightning.blocks import Block

_IMPLEMENTATIONS: dict[str, type[Block]] = {}


#: the implementations, one package per slot (``components/<slot>/``)
_COMPONENTS = "minmo_lightning.components"
#: where the classes a recipe names by short name live; imported before a short name is looked up
SEARCHED_MODULES = (_COMPONENTS, "minmo_lightning.datamodules", "minmo_lightning.model")


class RegistryError(ValueError):
    """A name that is registered twice, or looked up but unknown."""


def import_modules(package: str) -> None:
    """Import a module and, if it is a package, every module under it, so that its subclasses exist."""
    root = importlib.import_module(package)
    for info in pkgutil.walk_packages(getattr(root, "__path__", []), prefix=package + "."):
        importlib.import_module(info.name)


def resolve_class(name: str, base: type, what: str | None = None) -> type:
    """The subclass of ``base`` that ``name`` means: a dotted ``module.Class`` path, a short class name, or
    the ``alias`` a class declares (e.g. ``alias = "hift"``). ``what`` names where the name came from
    (a recipe key, ``"vocoder"``) in the error, which suggests the near miss and lists the valid choices."""
    subject = f"{what} {name!r}" if what else repr(name)
    if "." in name:
        cls = _import_dotted(name, subject)
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise RegistryError(f"{subject} is not a {base.__name__} subclass")
        return cls
    found = named_subclasses(base).get(name)
    if found is None or len(found) > 1:  # not loaded yet (or ambiguous): import what recipes may name
        for module in SEARCHED_MODULES:
            import_modules(module)
    choices = named_subclasses(base)
    found = choices.get(name)
    if found is None:
        close = difflib.get_close_matches(name, list(choices), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise RegistryError(f"{subject} is not a known {base.__name__}{hint}; {_choices(name, choices)}")
    if len(found) > 1:
        raise RegistryError(
            f"{subject} names several {base.__name__} classes ({', '.join(_qualname(cls) for cls in found)}); "
            "write the dotted path (package.module.Class)"
        )
    return found[0]


#: how many names an unknown-name error lists (the nearest first when there are more)
LISTED_CHOICES = 12


def _choices(name: str, choices: dict[str, list[type]]) -> str:
    """The valid names, all of them when few, else the nearest to ``name`` and how many there are."""
    if len(choices) <= LISTED_CHOICES:
        return f"valid choices: {', '.join(sorted(choices))}"
    nearest = sorted(choices, key=lambda c: -difflib.SequenceMatcher(None, name.lower(), c.lower()).ratio())
    return f"nearest of {len(choices)} choices: {', '.join(nearest[:LISTED_CHOICES])}, ..."


def named_subclasses(base: type) -> dict[str, list[type]]:
    """Every public subclass of ``base`` (at any depth) under its class name and under its own ``alias``.

    A class defined again under the same qualified name (a reloaded module, a test's throw-away class)
    replaces the earlier one, as in :func:`register`.
    """
    found: dict[str, dict[str, type]] = {}
    seen, todo = set(), [base]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub in seen:
                continue
            seen.add(sub)
            todo.append(sub)
            if sub.__name__.startswith("_"):
                continue
            for key in (sub.__name__, sub.__dict__.get("alias")):
                if isinstance(key, str):
                    found.setdefault(key, {})[_qualname(sub)] = sub
    return {key: list(classes.values()) for key, classes in found.items()}


def _import_dotted(path: str, subject: str) -> object:
    module_name, _, attribute = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and (module_name + ".").startswith(error.name + "."):
            raise RegistryError(f"{subject}: there is no module {module_name!r}") from error
        raise
    if not hasattr(module, attribute):
        raise RegistryError(f"{subject}: module {module_name!r} has no {attribute!r}")
    return getattr(module, attribute)


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


def import_all_components() -> None:
    """Import every module under ``minmo_lightning.components`` so that all subclasses register."""
    import_modules(_COMPONENTS)


@dataclass(frozen=True)
class PresetInfo:
    slot: str
    implementation: str
    preset: str
    parameters: int | None


#: the implementation column of a slot that nothing implements yet
NONE_REGISTERED = "(none registered)"


def count_preset_parameters(cls: type[torch.nn.Module], preset: str) -> int:
    """Parameter count of a preset, built on the meta device so no memory is allocated."""
    with torch.device("meta"):
        module = cls.from_preset(preset)
        if hasattr(module, "configure_model"):
            module.configure_model()
    return sum(p.numel() for p in module.parameters())


def list_presets(count: bool = True) -> list[PresetInfo]:
    """Every preset of every implementation, under the recipe slot it fills (``model.SLOT_TYPES``' names;
    a slot nothing implements gets one ``(none registered)`` row).

    A slot implementation may be composed of parts that live in the slot's component package without
    being slots themselves (token2wav's flow and vocoders): they are listed as ``slot (part)``, the part
    named by the module of its family's root class (``flow``, ``vocoder``). Blocks of no MinMo slot (the
    speech tokenizer, which data preparation uses) go under their own slot's name.
    """
    from minmo_lightning.model import SLOT_TYPES

    rows = []
    for cls in [*implementations().values(), *_component_parts(SLOT_TYPES)]:
        slot = _slot_label(cls, SLOT_TYPES)
        presets = cls.presets or {}
        if not presets:
            rows.append(PresetInfo(slot, cls.__name__, "-", None))
        for preset in presets:
            parameters = count_preset_parameters(cls, preset) if count else None
            rows.append(PresetInfo(slot, cls.__name__, preset, parameters))
    filled = {row.slot for row in rows}
    rows += [PresetInfo(slot, NONE_REGISTERED, "-", None) for slot in SLOT_TYPES if slot not in filled]
    return sorted(rows, key=lambda r: (r.slot, r.implementation, r.preset))


def _component_parts(slots: dict[str, type]) -> list[type]:
    """Concrete modules with presets in a slot's component package that are not blocks (the vocoders)."""
    from minmo_lightning.blocks import Block

    import_all_components()
    found = []
    for name, module in list(sys.modules.items()):
        if not name.startswith(_COMPONENTS + ".") or name.split(".")[2] not in slots:
            continue
        for obj in vars(module).values():
            if (
                isinstance(obj, type)
                and obj.__module__ == name
                and issubclass(obj, torch.nn.Module)
                and not issubclass(obj, Block)
                and not inspect.isabstract(obj)
                and getattr(obj, "presets", None)
            ):
                found.append(obj)
    return found


def _slot_label(cls: type, slots: dict[str, type]) -> str:
    for slot, base in slots.items():
        if issubclass(cls, base):
            return slot
    package = cls.__module__.split(".")
    if cls.__module__.startswith(_COMPONENTS + ".") and package[2] in slots:
        family = next(
            c for c in reversed(cls.__mro__) if c.__module__.startswith(".".join(package[:3]) + ".")
        )
        return f"{package[2]} ({family.__module__.rsplit('.', 1)[-1]})"
    return re.sub(r"(?<!^)(?=[A-Z])", "_", cls.slot_name()).lower()
