"""Sharded checkpoints: what ``FSDP2Strategy`` (Lightning's ``ModelParallelStrategy``) saves, read in one process.

Such a checkpoint is a folder (named like a file: ``last.ckpt/``): one ``torch.distributed.checkpoint`` shard
file per rank holding the weights and optimizer states (``state_dict.*``, ``optimizer_N.*``), their index
(``.metadata``), and Lightning's ``meta.pt`` with everything else: hyperparameters, loop state, the packed
checkpoint assets. Resuming (``--ckpt_path``) is Lightning's own and works at any world size (DCP reshards);
this module turns the folder into what a single-file checkpoint holds, for ``minmo export`` and for a next
stage's ``init_checkpoint``. The whole model is assembled in this process's memory (the optimizer states
are left out).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

#: Lightning's file for the non-tensor part of a sharded checkpoint; DCP's index of the shards
META_FILE, INDEX_FILE = "meta.pt", ".metadata"
STATE_PREFIX = "state_dict."


def is_sharded_checkpoint(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and (path / INDEX_FILE).is_file()


def read_sharded_checkpoint(folder: str | Path, weights: bool = True) -> dict[str, Any]:
    """``meta.pt``'s contents with the full ``state_dict`` assembled from every rank's shards (``weights``;
    without, only the metadata: hyperparameters, packed assets, loop state)."""
    from torch.distributed.checkpoint import FileSystemReader, load
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    folder = Path(folder)
    if not (folder / META_FILE).is_file():
        present = ", ".join(sorted(p.name for p in folder.iterdir())) or "nothing"
        raise FileNotFoundError(
            f"{folder} holds torch.distributed.checkpoint shards but no {META_FILE} (Lightning's hyperparameters "
            f"and loop state), so it is not a whole Lightning checkpoint; found {present}"
        )
    checkpoint = torch.load(folder / META_FILE, map_location="cpu", weights_only=False)
    if not weights:
        return checkpoint
    reader = FileSystemReader(str(folder))
    entries = reader.read_metadata().state_dict_metadata
    state, other = {}, []
    for key, entry in entries.items():
        if not key.startswith(STATE_PREFIX):
            continue  # optimizer states
        if isinstance(entry, TensorStorageMetadata):
            state[key[len(STATE_PREFIX) :]] = torch.empty(entry.size, dtype=entry.properties.dtype)
        else:
            other.append(key[len(STATE_PREFIX) :])
    if other:
        raise ValueError(
            f"{folder}: the model state holds {len(other)} non-tensor entr(ies) ({', '.join(sorted(other)[:5])}), "
            "which a MinMo state dict never has; this is not a MinMo checkpoint"
        )
    load({"state_dict": state}, storage_reader=reader, no_dist=True)
    checkpoint["state_dict"] = state
    return checkpoint


def consolidate(folder: str | Path, out_file: str | Path) -> Path:
    """Write the single-file Lightning checkpoint of a sharded one (weights and metadata, no optimizer
    states): what ``MinMo.load_from_checkpoint`` and a next stage's ``init_checkpoint`` read."""
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    torch.save(read_sharded_checkpoint(folder), out_file)
    return out_file
