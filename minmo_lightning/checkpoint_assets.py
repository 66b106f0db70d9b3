"""Checkpoints that load anywhere: the small files a block reads when it is built travel inside them.

A block's weights are in its checkpoint, but building the block may also read files named by its
constructor arguments: feature statistics (SenseVoice's ``am.mvn``), a tokenizer, a model's
``config.json``. Recorded as paths, relative to the directory a run started in, they tie a checkpoint to
the machine and directory that trained it. So saving packs each block's ``checkpoint_assets()`` (weights
excluded) into the checkpoint, and loading unpacks them once into a content-addressed cache
(``$MINMO_CACHE``, else ``~/.cache/minmo``) and rebuilds the block from ``restore_args``: those arguments
point at the unpacked copies and weight files are not read again (the checkpoint holds the weights).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: where a checkpoint keeps its packed files: ``{owner: {argument: {"kind", "files"}}}`` (owner: a slot, or
#: ``""`` for a block saved alone)
ASSETS_KEY = "minmo_assets"
#: files never packed from a folder: the checkpoint holds the weights already
WEIGHT_SUFFIXES = frozenset(
    {".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".onnx", ".gguf", ".h5", ".msgpack"}
)
#: a packed file larger than this is a mistake (weights under another name), not an asset
MAX_ASSET_BYTES = 64 * 2**20


def pack(assets: Mapping[str, str | Path]) -> dict[str, dict[str, Any]]:
    """``{argument: path}`` -> ``{argument: {"kind": "file" | "folder", "files": {name: bytes}}}``.

    A folder contributes the files at its top level, except weights (tokenizer folders are flat).
    """
    packed = {}
    for argument, path in assets.items():
        path = Path(path)
        if path.is_file():
            packed[argument] = {"kind": "file", "files": {path.name: _read(path, argument)}}
        elif path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix not in WEIGHT_SUFFIXES)
            packed[argument] = {"kind": "folder", "files": {p.name: _read(p, argument) for p in files}}
        else:
            raise FileNotFoundError(
                f"{argument}={path} does not exist, so it cannot be saved with the checkpoint"
            )
    return packed


def _read(path: Path, argument: str) -> bytes:
    size = path.stat().st_size
    if size > MAX_ASSET_BYTES:
        raise ValueError(
            f"{argument}: {path} is {size / 2**20:.0f} MiB, too large to travel inside a checkpoint "
            f"(limit {MAX_ASSET_BYTES // 2**20} MiB); weights belong in the state dict"
        )
    return path.read_bytes()


def cache_dir() -> Path:
    root = (
        os.environ.get("MINMO_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "minmo"
    )
    return Path(root) / "checkpoint-assets"


def unpack(packed: Mapping[str, Mapping[str, Any]]) -> dict[str, Path]:
    """Write packed assets under the cache (once per content) -> ``{argument: file or folder path}``."""
    paths = {}
    for argument, entry in packed.items():
        files: Mapping[str, bytes] = entry["files"]
        digest = hashlib.sha256()
        for name in sorted(files):
            digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
        folder = cache_dir() / digest.hexdigest()[:24]
        if not folder.is_dir():
            _write_folder(folder, files)
        paths[argument] = folder / next(iter(files)) if entry["kind"] == "file" else folder
    return paths


def _write_folder(folder: Path, files: Mapping[str, bytes]) -> None:
    """Fill a temporary sibling, then rename it into place: a reader never sees half a folder."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".unpacking-"))
    for name, data in files.items():
        (staging / name).write_bytes(data)
    try:
        staging.rename(folder)
    except OSError:  # another process unpacked the same content first
        for child in staging.iterdir():
            child.unlink()
        staging.rmdir()


def restore_args(
    block_class: Any, init_args: Mapping[str, Any], packed: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The constructor arguments that rebuild ``block_class`` from a checkpoint holding its weights."""
    return block_class.restore_args(dict(init_args), unpack(packed or {}))
