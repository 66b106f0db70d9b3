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

``stream_source`` opens the same local files as ``IterableDataset`` splits (``streaming=True``: rows are
read as they are iterated, nothing is copied to disk), for corpora too large for a node's disk: data files
(parquet, arrow, json, csv) and ``save_to_disk`` folders. ``load_source(..., splits=[...])`` loads only
the splits named, so the small validation split of a streamed corpus is read whole without converting the
training files.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import json
from pathlib import Path

import datasets
from datasets import Audio, Dataset, DatasetDict, IterableDataset

DATA_SUFFIXES = {
    ".parquet": "parquet",
    ".arrow": "arrow",
    ".json": "json",
    ".jsonl": "json",
    ".csv": "csv",
}
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


#: a ``save_to_disk`` split streams as up to this many contiguous shards (passes reorder them, ranks split them)
SAVED_SHARDS = 64


def no_decode(dataset: Dataset | IterableDataset) -> Dataset | IterableDataset:
    """Cast every ``Audio`` column to ``Audio(decode=False)`` (datasets made with decoding on included)."""
    for name, feature in (dataset.features or {}).items():
        if isinstance(feature, Audio) and feature.decode:
            dataset = dataset.cast_column(name, Audio(decode=False))
    return dataset


def load_source(
    path: str, name: str | None = None, splits: list[str] | None = None
) -> tuple[dict[str, Dataset], Path | None]:
    """``{split: Dataset}`` and the folder that relative audio paths are relative to (or None); ``splits``:
    load only these (data files of other splits are not read)."""
    local = Path(path).expanduser()
    if _is_saved(local):
        loaded, base = _load_saved(local), local
    elif local.is_dir() and _is_audio_folder(local):
        loaded, base = _load_audio_folder(local), local
    elif local.exists() or glob.glob(str(local)):
        kind, files = _data_files(local)
        wanted = {s: f for s, f in files.items() if splits is None or s in splits}
        loaded = dict(datasets.load_dataset(kind, data_files=wanted)) if wanted else {}
        base = local if local.is_dir() else local.parent
    elif _looks_like_hub_id(path):
        loaded, base = _load_cached_hub(path, name), None
    else:
        raise FileNotFoundError(f"dataset path {path!r} does not exist")
    return {s: no_decode(ds) for s, ds in loaded.items() if splits is None or s in splits}, base


def stream_source(path: str) -> tuple[dict[str, IterableDataset], Path]:
    """``{split: IterableDataset}`` over local data files or a ``save_to_disk`` folder, and the folder that
    relative audio paths are relative to."""
    local = Path(path).expanduser()
    if _is_saved(local):
        saved = _load_saved(local)
        streams = {
            s: ds.to_iterable_dataset(num_shards=min(len(ds), SAVED_SHARDS) or 1) for s, ds in saved.items()
        }
        return {s: no_decode(ds) for s, ds in streams.items()}, local
    if local.is_dir() and _is_audio_folder(local):
        raise ValueError(
            f"{path!r} is an audio folder, which cannot be streamed: streaming reads rows from data files; "
            "write the corpus as parquet shards (audio bytes in the rows, a duration column) or set streaming: false"
        )
    if local.exists() or glob.glob(str(local)):
        kind, files = _data_files(local)
        streams = datasets.load_dataset(kind, data_files=files, streaming=True)
        return {s: no_decode(ds) for s, ds in streams.items()}, local if local.is_dir() else local.parent
    if _looks_like_hub_id(path):
        raise ValueError(
            f"{path!r} is not a local path: streaming reads local (or mounted) files and nothing is downloaded "
            "at run time; point path at the corpus's parquet shards"
        )
    raise FileNotFoundError(f"dataset path {path!r} does not exist")


def _is_saved(local: Path) -> bool:
    return local.is_dir() and ((local / "dataset_dict.json").is_file() or (local / "state.json").is_file())


def _load_saved(folder: Path) -> dict[str, Dataset]:
    loaded = datasets.load_from_disk(str(folder))
    return dict(loaded) if isinstance(loaded, DatasetDict) else {"train": loaded}


def _is_audio_folder(folder: Path) -> bool:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return any(p.name in METADATA_FILES for p in files) or any(
        p.suffix.lower() in AUDIO_SUFFIXES for p in files
    )


def _looks_like_hub_id(path: str) -> bool:
    return path.count("/") <= 1 and not path.startswith((".", "/", "~"))


def _data_files(local: Path) -> tuple[str, dict[str, list[str]]]:
    """The ``datasets`` builder for a file, glob or folder of data files, and its files per split (split
    names inferred from file or folder names, as ``datasets`` does)."""
    if not local.is_dir():
        suffix = local.suffix.lower()
        if suffix not in DATA_SUFFIXES:
            raise ValueError(
                f"unsupported data file {str(local)!r}; use {', '.join(DATA_SUFFIXES)} files or a save_to_disk folder"
            )
        return DATA_SUFFIXES[suffix], {"train": [str(local)]}
    files = [p for p in local.rglob("*") if p.is_file()]
    kinds = {DATA_SUFFIXES[p.suffix.lower()] for p in files if p.suffix.lower() in DATA_SUFFIXES}
    if len(kinds) != 1:
        found = sorted({p.suffix for p in files})[:10]
        raise ValueError(
            f"cannot tell what dataset {str(local)!r} holds (file types {found}); expected a save_to_disk folder, "
            f"parquet/arrow/json/csv files of one kind, or audio files with {' or '.join(METADATA_FILES)}"
        )
    kind = kinds.pop()
    split_files = datasets.load_dataset_builder(kind, data_dir=str(local)).config.data_files
    return kind, {str(split): list(paths) for split, paths in split_files.items()}


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
