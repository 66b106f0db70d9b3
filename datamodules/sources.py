"""Open a dataset from wherever a user keeps it, with no network access.

``path`` may be

- a ``save_to_disk`` folder (a ``DatasetDict`` or a single ``Dataset``);
- parquet / json / jsonl / csv files: one file, a glob, or a folder of them (splits from file or
  folder names, as ``datasets`` infers them);
- an audio folder: audio files plus ``metadata.jsonl`` or ``metadata.csv`` with a ``file_name`` column,
  optionally in ``train/``, ``validation/``, ``test/`` sub-folders (read here: ``datasets``' own
  audiofolder builder needs torchcodec);
- a hub id (``openslr/librispeech_asr``), resolved only from the local HF datasets cache.

Every ``Audio`` column comes back cast to ``Audio(decode=False)`` (see ``audio.py``).
"""

from __future__ import annotations

import contextlib
import csv
import glob
import json
from pathlib import Path

import datasets
from datasets import Audio, Dataset, DatasetDict

DATA_SUFFIXES = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv"}
AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aiff"}
METADATA_FILES = ("metadata.jsonl", "metadata.csv")


@contextlib.contextmanager
def _offline():
    """Force ``datasets`` offline for one call: a hub id must come from the local cache."""
    previous = datasets.config.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE = previous


def no_decode(dataset: Dataset) -> Dataset:
    """Cast every ``Audio`` column to ``Audio(decode=False)`` (datasets made with decoding on included)."""
    for name, feature in dataset.features.items():
        if isinstance(feature, Audio) and feature.decode:
            dataset = dataset.cast_column(name, Audio(decode=False))
    return dataset


def load_source(path: str, name: str | None = None) -> tuple[dict[str, Dataset], Path | None]:
    """``{split: Dataset}`` and the folder that relative audio paths are relative to (or None)."""
    local = Path(path).expanduser()
    if local.is_dir():
        splits, base = _load_folder(local)
    elif local.is_file() or glob.glob(str(local)):
        splits, base = _load_files(str(local)), local.parent
    elif path.count("/") <= 1 and not path.startswith((".", "/", "~")):
        splits, base = _load_cached_hub(path, name), None
    else:
        raise FileNotFoundError(f"dataset path {path!r} does not exist")
    return {split: no_decode(ds) for split, ds in splits.items()}, base


def _load_folder(folder: Path) -> tuple[dict[str, Dataset], Path]:
    if (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file():
        loaded = datasets.load_from_disk(str(folder))
        return (dict(loaded) if isinstance(loaded, DatasetDict) else {"train": loaded}), folder
    files = [p for p in folder.rglob("*") if p.is_file()]
    if any(p.name in METADATA_FILES for p in files) or any(p.suffix.lower() in AUDIO_SUFFIXES for p in files):
        return _load_audio_folder(folder), folder
    kinds = {DATA_SUFFIXES[p.suffix.lower()] for p in files if p.suffix.lower() in DATA_SUFFIXES}
    if len(kinds) == 1:
        builder = kinds.pop()
        return dict(datasets.load_dataset(builder, data_dir=str(folder))), folder
    found = sorted({p.suffix for p in files})[:10]
    raise ValueError(
        f"cannot tell what dataset {str(folder)!r} holds (file types {found}); expected a save_to_disk folder, "
        f"parquet/json/csv files, or audio files with {' or '.join(METADATA_FILES)}"
    )


def _load_files(pattern: str) -> dict[str, Dataset]:
    suffix = Path(pattern).suffix.lower()
    if suffix not in DATA_SUFFIXES:
        raise ValueError(
            f"unsupported data file {pattern!r}; use {', '.join(DATA_SUFFIXES)} files or a save_to_disk folder"
        )
    return dict(datasets.load_dataset(DATA_SUFFIXES[suffix], data_files=pattern))


def _read_metadata(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        with path.open() as handle:
            return [json.loads(line) for line in handle if line.strip()]
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _audio_folder_split(folder: Path, recursive: bool) -> Dataset:
    metadata = next((folder / m for m in METADATA_FILES if (folder / m).is_file()), None)
    if metadata is None:
        files = sorted(
            p
            for p in (folder.rglob("*") if recursive else folder.iterdir())
            if p.suffix.lower() in AUDIO_SUFFIXES
        )
        rows = [{"file_name": str(p.relative_to(folder))} for p in files]
    else:
        rows = _read_metadata(metadata)
        if rows and "file_name" not in rows[0]:
            raise ValueError(
                f"{metadata} needs a 'file_name' column (audio path relative to it); it has {list(rows[0])}"
            )
    columns = {key: [row.get(key) for row in rows] for key in (rows[0] if rows else {"file_name": None})}
    columns["audio"] = [
        {"bytes": None, "path": str((folder / f).resolve())} for f in columns.pop("file_name")
    ]
    return Dataset.from_dict(columns).cast_column("audio", Audio(decode=False))


def _load_audio_folder(folder: Path) -> dict[str, Dataset]:
    split_dirs = [
        d for d in sorted(folder.iterdir()) if d.is_dir() and d.name in ("train", "validation", "test", "dev")
    ]
    if split_dirs:
        return {d.name: _audio_folder_split(d, recursive=True) for d in split_dirs}
    return {"train": _audio_folder_split(folder, recursive=True)}


def _load_cached_hub(repo_id: str, name: str | None) -> dict[str, Dataset]:
    try:
        with _offline():
            loaded = datasets.load_dataset(repo_id, name)
    except Exception as error:  # datasets raises several types for "not cached"
        raise FileNotFoundError(
            f"{repo_id!r} (config {name!r}) is not a local path and is not in the local HF datasets cache "
            f"({datasets.config.HF_DATASETS_CACHE}); nothing is downloaded at run time. On a connected machine run "
            f"datasets.load_dataset({repo_id!r}, {name!r}).save_to_disk(DIR) and pass DIR as the path. ({error})"
        ) from error
    return dict(loaded)
