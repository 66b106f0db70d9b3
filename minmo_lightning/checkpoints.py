"""Strict state-dict loading with errors that say exactly what does not fit."""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from minmo_lightning.distributed_checkpoint import is_sharded_checkpoint, read_sharded_checkpoint


class CheckpointMismatchError(ValueError):
    """A checkpoint whose keys or shapes do not match the module: nothing was loaded."""


class CheckpointReadError(ValueError):
    """A file that is not a readable checkpoint (truncated by a killed save, corrupt, or another format)."""


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
    """Read a ``.pt``/``.pth``/``.bin`` (torch) or ``.safetensors`` file, or a sharded checkpoint folder, onto
    the CPU."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = read_checkpoint(path)
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    return dict(state)


def read_checkpoint(path: str | Path, mmap: bool = False) -> Any:
    """``torch.load`` onto the CPU (Lightning ``.ckpt`` files hold hyperparameters, hence not weights-only),
    with one clear error naming the file when it is missing, truncated or not a torch checkpoint.

    ``mmap=True`` maps the tensors instead of reading them: cheap for looking at a large checkpoint's metadata.
    A sharded checkpoint (a folder that FSDP2 saves) is assembled whole (``distributed_checkpoint.py``); with
    ``mmap`` only its metadata is read (the weights stay in their shards).
    """
    path = Path(path)
    if is_sharded_checkpoint(path):
        return read_sharded_checkpoint(path, weights=not mmap)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        return torch.load(
            path, map_location="cpu", weights_only=False, mmap=mmap and zipfile.is_zipfile(path)
        )
    except (RuntimeError, EOFError, pickle.UnpicklingError, ValueError, OSError) as error:
        raise unreadable_checkpoint(path, error) from None


def unreadable_checkpoint(path: Path, error: BaseException) -> CheckpointReadError:
    """The error for a file torch cannot load: the file, its size, why, and the checkpoints beside it."""
    size = path.stat().st_size
    if size == 0:
        cause = "the file is empty"
    elif zipfile.is_zipfile(path):  # torch >= 1.6 writes zip archives
        cause = str(error).split(". ")[0][:160]
    elif path.open("rb").read(4) == b"PK\x03\x04":
        cause = "a zip archive cut short: its index at the end is missing"
    else:
        cause = "not a torch zip archive, nor an old-style pickle"
    others = sorted(p.name for p in path.parent.glob("*.ckpt") if p.name != path.name)
    beside = f" ({path.parent} also holds {', '.join(others[:6])})" if others else ""
    return CheckpointReadError(
        f"{path} ({size:,} bytes) is not a readable checkpoint: it is truncated or corrupt ({cause}). A run killed "
        f"while saving, or an incomplete copy, leaves such a file: use an earlier checkpoint{beside}"
    )


def checkpoint_file(path: str | Path, names: Sequence[str], what: str) -> Path:
    """``path`` itself, or the first of ``names`` inside the folder ``path`` (the error lists what is there)."""
    path = Path(path)
    if not path.is_dir():
        return path
    found = [path / name for name in names if (path / name).is_file()]
    if not found:
        present = ", ".join(sorted(p.name for p in path.iterdir())) or "nothing"
        raise FileNotFoundError(
            f"{path} holds no {what} checkpoint: expected one of {', '.join(names)}; found {present}"
        )
    return found[0]


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
