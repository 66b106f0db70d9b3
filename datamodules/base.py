"""What every task's datamodule shares: opening the source, the column mapping, screening bad rows,
duration-bucketed loaders, and the skip report.

A subclass names its ``task`` (a key of ``schema.TASK_FIELDS``) and implements ``batch_fields``:
the decoded rows of one planned batch -> the task's fields of the batch dict (see ``tasks.py``);
``collate`` decodes the audio and puts the row ``ids`` first. Bad rows are screened once in ``setup``
(missing/unreadable/empty audio, empty text, clips over ``max_duration``, labels outside the label
set) and listed in ``skipped``; the counts are logged at the end of every epoch, so nothing
disappears silently.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import numpy as np
import torch
from datasets import Dataset
from minmo_lightning.datamodules.audio import AudioError, decode_audio, probe_duration
from minmo_lightning.datamodules.sampler import DurationBatchSampler, ResumableLoader
from minmo_lightning.datamodules.schema import resolve_columns
from minmo_lightning.datamodules.sources import load_source
from torch.utils.data import DataLoader

from minmo_lightning.contracts import AudioBatch

log = logging.getLogger(__name__)

Columns = dict[str, list]
"""Column name -> the values of one planned batch's rows."""
ColumnMapping = dict[str, str | None]
"""Task field -> the dataset column holding it (None: not mapped)."""
Waves = dict[str, list[np.ndarray]]
"""Audio field -> the decoded waveforms of a batch's rows."""

TEXT_REQUIRED = {"asr": ("text",), "tts": ("text",), "s2s": ("answer_text",)}


class SplitData(torch.utils.data.Dataset):
    """One split after screening: ``self[positions]`` gives the columns of those kept rows."""

    def __init__(self, dataset: Dataset, keep: np.ndarray, extra: dict[str, np.ndarray]) -> None:
        self.dataset = dataset
        self.keep = keep
        self.extra = extra  # per-kept-row arrays computed in setup (durations, label ids)

    def __len__(self) -> int:
        return len(self.keep)

    def __getitem__(self, positions: list[int]) -> dict[str, list]:
        positions = np.asarray(positions)
        columns = self.dataset[self.keep[positions].tolist()]
        columns.update({name: values[positions].tolist() for name, values in self.extra.items()})
        columns["_index"] = self.keep[positions].tolist()
        return columns


def pad_audio(waves: list[np.ndarray], sample_rate: int) -> AudioBatch:
    lengths = np.fromiter((len(w) for w in waves), dtype=np.int64, count=len(waves))
    padded = np.zeros((len(waves), int(lengths.max(initial=0))), dtype=np.float32)
    for row, wave in enumerate(waves):
        padded[row, : len(wave)] = wave
    return AudioBatch(torch.from_numpy(padded), torch.from_numpy(lengths), sample_rate)


class SpeechDataModule(L.LightningDataModule):
    """Base of the task datamodules; see the module docstring. Not used directly in recipes."""

    task: ClassVar[str]
    #: audio fields -> the constructor argument holding their target sample rate
    audio_rates: ClassVar[dict[str, str]] = {"audio": "sample_rate"}
    #: how many equally long audio fields a row's ``duration`` column covers (None: it covers only
    #: some of them, so durations come from the headers)
    duration_channels: ClassVar[int | None] = 1

    def __init__(
        self,
        path: str,
        schema: str = "builtin",
        columns: dict[str, str | None] | None = None,
        name: str | None = None,
        train_split: str | None = "train",
        val_split: str | None = "validation",
        test_split: str | None = "test",
        max_seconds_per_batch: float = 120.0,
        max_batch_size: int | None = None,
        max_duration: float = 30.0,
        num_workers: int = 0,
        seed: int = 0,
        shuffle: bool = True,
    ) -> None:
        super().__init__()
        self.path = path
        self.schema = schema
        self.columns = columns
        self.name = name
        self.splits = {"train": train_split, "validation": val_split, "test": test_split}
        self.max_seconds_per_batch = max_seconds_per_batch
        self.max_batch_size = max_batch_size
        self.max_duration = max_duration
        self.num_workers = num_workers
        self.seed = seed
        self.shuffle = shuffle
        self.data: dict[str, SplitData] = {}
        self.mapping: dict[str, dict[str, str | None]] = {}
        #: split -> reason -> count of rows left out in setup
        self.skipped: dict[str, Counter] = {}
        self._base_dir: Path | None = None

    # ---- hooks for subclasses ----------------------------------------------------------------
    def batch_fields(
        self, columns: Columns, mapping: ColumnMapping, waves: Waves, rows: list[int]
    ) -> dict[str, Any]:
        """The task's fields of the decoded ``rows`` of ``columns`` (``waves``: their audio per field)."""
        raise NotImplementedError

    def screen(self, split: str, dataset: Dataset, mapping: ColumnMapping) -> tuple[np.ndarray, dict]:
        """Task-specific row checks: (bool keep mask, extra per-row arrays). Default: none."""
        return np.ones(len(dataset), dtype=bool), {}

    # ---- setup -------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.data:
            return
        sources, self._base_dir = load_source(self.path, self.name)
        for role, split in self.splits.items():
            if split is None:
                continue
            if split not in sources:
                message = (
                    f"{self.path!r} has no split {split!r} (splits: {sorted(sources)}); set {role}_split"
                )
                if role == "train":
                    raise ValueError(message)
                log.warning("%s; %s is disabled", message, role)
                continue
            self.data[role] = self._prepare(role, split, sources[split])

    def _prepare(self, role: str, split: str, dataset: Dataset) -> SplitData:
        where = f"{self.path!r} split {split!r}"
        mapping = resolve_columns(self.task, self.schema, self.columns, dataset.column_names, where)
        self.mapping[role] = mapping
        dataset = dataset.select_columns(sorted({c for c in mapping.values() if c is not None}))
        keep, extra = self.screen(split, dataset, mapping)
        reasons: Counter = Counter()
        for field in TEXT_REQUIRED.get(self.task, ()):
            texts = dataset[mapping[field]]
            empty = np.fromiter((not (t or "").strip() for t in texts), dtype=bool, count=len(texts))
            reasons["empty_transcript"] += int((empty & keep).sum())
            keep &= ~empty
        longest, total = self._durations(dataset, mapping, keep, reasons)
        too_long = keep & (longest > self.max_duration)
        reasons[f"longer_than_{self.max_duration:g}s"] += int(too_long.sum())
        keep &= ~too_long
        over_budget = keep & (total > self.max_seconds_per_batch)  # could never be batched
        reasons[f"over_max_seconds_per_batch_{self.max_seconds_per_batch:g}s"] += int(over_budget.sum())
        keep &= ~over_budget
        reasons.update(extra.pop("_reasons", Counter()))
        indices = np.flatnonzero(keep)
        extra = {name: values[indices] for name, values in extra.items()}
        extra["_duration"] = total[indices]
        self.skipped[role] = Counter({k: v for k, v in reasons.items() if v})
        if self.skipped[role]:
            log.warning("%s: skipped %s", where, dict(self.skipped[role]))
        return SplitData(dataset, indices, extra)

    def _durations(
        self, dataset: Dataset, mapping: dict, keep: np.ndarray, reasons: Counter
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per row: seconds of the longest audio field (for ``max_duration``) and of all audio fields
        together (the batch budget), from the duration column or from the audio headers."""
        audio_fields = [f for f in self.audio_rates if mapping.get(f)]
        if mapping.get("duration") and self.duration_channels is not None:
            seconds = np.asarray(dataset[mapping["duration"]], dtype=np.float64)
            return seconds, seconds * self.duration_channels
        longest = np.zeros(len(dataset), dtype=np.float64)
        total = np.zeros(len(dataset), dtype=np.float64)
        for field in audio_fields:
            for row, value in enumerate(dataset[mapping[field]]):
                if not keep[row]:
                    continue
                try:
                    seconds = probe_duration(value, self._base_dir)
                except AudioError:
                    keep[row] = False
                    reasons["unreadable_audio"] += 1
                    continue
                if seconds <= 0:
                    keep[row] = False
                    reasons["empty_audio"] += 1
                longest[row] = max(longest[row], seconds)
                total[row] += seconds
        return longest, total

    # ---- decoding ----------------------------------------------------------------------------
    def collate(self, columns: Columns, mapping: ColumnMapping) -> dict[str, Any]:
        """One planned batch's columns -> the batch: the decoded rows' ``ids``, then ``batch_fields``."""
        waves, rows = self.decode(columns, mapping)
        return {"ids": self.ids(columns, mapping, rows), **self.batch_fields(columns, mapping, waves, rows)}

    def decode(self, columns: Columns, mapping: ColumnMapping) -> tuple[Waves, list[int]]:
        """Decode every mapped audio field; returns the waveforms of the rows that decoded, and those rows.

        A row that fails here (corrupt data behind a valid header) is dropped from this batch and
        logged with its id; in worker processes its count stays in the worker.
        """
        fields = [(f, getattr(self, arg)) for f, arg in self.audio_rates.items() if mapping.get(f)]
        waves: Waves = {field: [] for field, _ in fields}
        good: list[int] = []
        for row in range(len(columns["_duration"])):
            try:
                decoded = [
                    decode_audio(columns[mapping[f]][row], rate, self._base_dir)[0] for f, rate in fields
                ]
            except AudioError as error:
                self._runtime_skips["unreadable_audio"] += 1
                log.warning("skipping %s: %s", self.ids(columns, mapping, [row])[0], error)
                continue
            good.append(row)
            for (field, _), wave in zip(fields, decoded):
                waves[field].append(wave)
        if not good:
            raise RuntimeError(
                f"every row of a batch failed to decode ({self.path!r}); see the warnings above"
            )
        return waves, good

    def ids(self, columns: Columns, mapping: dict, rows: list[int]) -> list[str]:
        if mapping.get("id"):
            return [str(columns[mapping["id"]][row]) for row in rows]
        return [f"row {columns['_index'][row]}" for row in rows]

    @property
    def _runtime_skips(self) -> Counter:
        return self.skipped.setdefault("decode", Counter())

    # ---- loaders -----------------------------------------------------------------------------
    def _loader(self, role: str, shuffle: bool) -> ResumableLoader:
        if role not in self.data:
            if not self.data:
                raise RuntimeError("call setup() before asking for a dataloader")
            return []  # type: ignore[return-value]  # no such split: Lightning runs no loop for it
        data = self.data[role]
        sampler = DurationBatchSampler(
            data.extra["_duration"],
            self.max_seconds_per_batch,
            self.max_batch_size,
            shuffle=shuffle,
            seed=self.seed,
            on_epoch_end=lambda epoch, role=role: self.report(role, epoch),
        )
        return ResumableLoader(
            data,
            sampler=sampler,
            batch_size=None,
            num_workers=self.num_workers,
            collate_fn=functools.partial(self.collate, mapping=self.mapping[role]),
            persistent_workers=self.num_workers > 0,
        )

    def report(self, role: str, epoch: int) -> None:
        """Log what was left out of ``role`` (once per epoch, on rank 0)."""
        if getattr(self.trainer, "global_rank", 0) != 0:
            return
        counts = dict(self.skipped.get(role, {}))
        if role == "train" and self.skipped.get("decode"):
            counts["failed_decoding_in_process"] = sum(self.skipped["decode"].values())
        if counts:
            log.warning("%s epoch %d: skipped rows of %s: %s", self.task, epoch, role, counts)
        else:
            log.info("%s epoch %d: no rows of %s skipped", self.task, epoch, role)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.shuffle)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)
