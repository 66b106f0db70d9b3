"""Strict state-dict loading with errors that say exactly what does not fit."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import Tensor, nn


class CheckpointMismatchError(ValueError):
    """A checkpoint whose keys or shapes do not match the module: nothing was loaded."""


def _preview(keys: Iterable[str], limit: int = 20) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def check_state_dict(module: nn.Module, state_dict: Mapping[str, Tensor], source: str = "checkpoint") -> None:
    """Raise ``CheckpointMismatchError`` listing missing, unexpected and mis-shaped keys."""
    own = module.state_dict()
    missing = own.keys() - state_dict.keys()
    unexpected = state_dict.keys() - own.keys()
    shapes = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own.keys() & state_dict.keys()
        if tuple(own[k].shape) != tuple(state_dict[k].shape)
    ]
    if missing or unexpected or shapes:
        lines = [f"{source} does not match {type(module).__name__} (nothing was loaded):"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {_preview(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {_preview(unexpected)}")
        if shapes:
            lines.append(f"  shape mismatches ({len(shapes)}): {'; '.join(sorted(shapes)[:10])}")
        lines.append("  check that the preset/config matches the checkpoint (e.g. the right model size).")
        raise CheckpointMismatchError("\n".join(lines))


def load_state_dict_strict(
    module: nn.Module, state_dict: Mapping[str, Tensor], source: str = "checkpoint"
) -> None:
    """Load every key or nothing: never a silent partial load."""
    check_state_dict(module, state_dict, source)
    module.load_state_dict(dict(state_dict), strict=True, assign=_on_meta(module))


def _on_meta(module: nn.Module) -> bool:
    return any(p.is_meta for p in module.parameters())


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a ``.pt``/``.pth``/``.bin`` (torch) or ``.safetensors`` file onto the CPU."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=False)  # Lightning .ckpt files hold hparams
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    return dict(state)


def require_files(folder: str | Path, names: Iterable[str], what: str) -> Path:
    """Check that ``folder`` holds ``names``; the error lists what is expected and what is there."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{what}: {folder} is not a directory")
    missing = [n for n in names if not (folder / n).exists()]
    if missing:
        present = sorted(p.name for p in folder.iterdir())
        raise FileNotFoundError(
            f"{folder} is not a {what} folder: missing {', '.join(missing)}. "
            f"Expected files: {', '.join(names)}. Found: {', '.join(present) or 'nothing'}"
        )
    return folder
