"""Checkpoint files that survive a kill: every ``minmo fit`` saves through ``AtomicCheckpointIO``.

Lightning's ``TorchCheckpointIO`` stages a local save in the system temp folder and then moves it over
the target; when that folder is on another file system (``/tmp`` on tmpfs, a scratch disk) the move is
a copy into the target, so a kill during it leaves a truncated ``last.ckpt``. Here the bytes go to a
temporary file beside the target, are flushed to disk, and ``os.replace`` swaps it in: at any moment
the target is the previous complete file or the new complete one. A kill leaves only a hidden
``.NAME.*.tmp`` beside it (never matched by ``--ckpt_path last``), removed by the next save of NAME.
``ModelCheckpoint(save_last=True)``, as in the recipes, writes ``last.ckpt`` as a save of its own
through here, and removes an older top-k file only after the new one is in place. (``save_last="link"``
makes ``last.ckpt`` a symlink that Lightning re-creates by remove-then-link, outside this plugin.)

Loading names the file when it is truncated or corrupt instead of torch's zip-reader message
(``naming_unreadable`` does the same around any other ``torch.load`` of a checkpoint).
"""

from __future__ import annotations

import glob
import os
import pickle
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol

from minmo_lightning.checkpoints import unreadable_checkpoint


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local saves replace the target atomically (see the module docstring)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if storage_options is not None or not _is_local_file_protocol(path):
            super().save_checkpoint(checkpoint, path, storage_options)  # remote stores: Lightning's way
            return
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        # what a killed save of this file left behind
        for stale in target.parent.glob(f".{glob.escape(target.name)}.*.tmp"):
            stale.unlink(missing_ok=True)
        temporary = target.parent / f".{target.name}.{secrets.token_hex(4)}.tmp"
        # os.open applies the umask like a plain open (mkstemp would leave the checkpoint private)
        handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(handle, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, target)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        _sync_folder(target.parent)

    def load_checkpoint(self, path: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        with naming_unreadable(path):
            return super().load_checkpoint(path, *args, **kwargs)


@contextmanager
def naming_unreadable(path: Any) -> Iterator[None]:
    """Turn torch.load's errors for a truncated or corrupt file into a ``CheckpointReadError`` naming
    ``path`` (and the earlier checkpoints beside it); other errors pass unchanged."""
    try:
        yield
    except (RuntimeError, EOFError, pickle.UnpicklingError) as error:
        if not _is_local_file_protocol(path) or not _unreadable(error):
            raise
        raise unreadable_checkpoint(Path(path), error) from None


def _sync_folder(folder: Path) -> None:
    """Flush the folder entry of the replaced file, so the rename itself survives a power cut."""
    if os.name != "posix":
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _unreadable(error: BaseException) -> bool:
    """torch.load's errors for a file cut short or not a torch archive (not e.g. a device error)."""
    return isinstance(error, EOFError) or any(s in str(error) for s in ("PytorchStreamReader", "truncated"))
