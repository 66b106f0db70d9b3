"""What every task's datamodule shares: opening the source, the column mapping, screening bad rows,
duration-bucketed loaders, and the skip report.

A subclass names its ``task`` (a key of ``schema.TASK_FIELDS``) and implements ``batch_fields``:
the decoded rows of one planned batch -> the task's fields of the batch dict (see ``tasks.py``);
``collate`` decodes the audio and puts the row ``ids`` first. A split may join several of the source's
splits with ``+`` (``train_split: train.clean.100+train.clean.360``).

Bad rows are skipped, counted and listed by id, never dropped silently and never a crash mid-epoch:
``setup`` screens what it can without decoding (missing/unreadable/empty audio headers, empty text, clips
over ``max_duration``, labels outside the label set); ``collate`` skips rows whose audio fails to decode
or holds NaN/Inf samples (a batch then has fewer rows; a batch with none left is not handed out). Several channels are mixed down and other sample rates resampled;
clipped audio is kept. Every skipped row is in ``skipped_rows`` (``skipped.py``) and, under a Trainer,
in ``<default_root_dir>/skipped_rows.jsonl``; each epoch logs a warning per split with the count and the
first ids. A split whose every row is skipped is an error in ``setup`` naming the source.

``streaming: true`` streams the training split from its files instead (``streamed.py``: corpora that do
not fit on a node's disk): rows are screened pool by pool as they are read (each rank records the rows it
skipped), batches are bucketed in a shuffle buffer of ``stream_buffer`` rows and have the same format.
Validation and test splits are still loaded whole (only their own files are read).
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
from datasets import Audio, ClassLabel, Dataset, Features, IterableDataset, Value, concatenate_datasets
from minmo_lightning.datamodules.audio import AudioError, decode_audio, probe_duration
from minmo_lightning.datamodules.sampler import DurationBatchSampler, ResumableLoader
from minmo_lightning.datamodules.schema import resolve_columns
from minmo_lightning.datamodules.skipped import SKIPPED_KEY, SkipLedger
from minmo_lightning.datamodules.sources import load_source, stream_source
from minmo_lightning.datamodules.streamed import Rows, StreamedLoader, StreamPlanner
from torch.utils.data import DataLoader, get_worker_info

from minmo_lightning.contracts import AudioBatch

log = logging.getLogger(__name__)

Columns = dict[str, list]
"""Column name -> the values of one planned batch's rows."""
ColumnMapping = dict[str, str | None]
"""Task field -> the dataset column holding it (None: not mapped)."""
Waves = dict[str, list[np.ndarray]]
"""Audio field -> the decoded waveforms of a batch's rows."""

TEXT_REQUIRED = {"asr": ("text",), "tts": ("text",), "s2s": ("answer_text",)}
#: the id column a streamed row without one gets (its pass, rank and row number)
STREAM_ROW_ID = "_stream_row"
#: how an ``Audio(decode=False)`` column is stored (what its rows hold)
AUDIO_STRUCT = {"bytes": Value("binary"), "path": Value("string")}


def class_names(dataset: Dataset, mapping: ColumnMapping, skip: Any = ()) -> dict[str, np.ndarray]:
    """``_<field>``: the label names of every field mapped to a ``ClassLabel`` column (stored as ids), so a
    batch holds ``"Spanish"``, not ``1``; fields in ``skip`` (a subclass's own label handling) are left."""
    names, features = {}, dataset.features or {}
    for field, column in mapping.items():
        feature = features.get(column) if column else None
        if isinstance(feature, ClassLabel) and f"_{field}" not in skip:
            names[f"_{field}"] = np.array([feature.int2str(int(v)) for v in dataset[column]], dtype=object)
    return names


def joined(sources: dict[str, Any], split: str) -> Any:
    """A split by name, or several joined with ``+`` (``train+voice_lm_train``, as ``datasets`` writes it)."""
    parts = split.split("+")
    return sources[split] if len(parts) == 1 else concatenate_datasets([sources[part] for part in parts])


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
        streaming: bool = False,
        stream_buffer: int = 1000,
    ) -> None:
        """``streaming``: stream the training split from its files (see the module docstring);
        ``stream_buffer``: rows a rank holds at once to shuffle and bucket them."""
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
        self.streaming = streaming
        self.stream_buffer = stream_buffer
        self.data: dict[str, SplitData] = {}
        self.streams: dict[str, IterableDataset] = {}
        self.mapping: dict[str, dict[str, str | None]] = {}
        #: role -> reason -> count of rows left out in setup; ``"decode"``: rows left out while decoding
        self.skipped: dict[str, Counter] = {}
        #: every skipped row by id (see ``skipped.py``)
        self.ledger = SkipLedger()
        #: the trainer epoch of the last batch seen in the main process, and the epochs already reported
        self._epoch: int | None = None
        self._reported: set[tuple[str, int]] = set()
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
        if self.data or self.streams:
            return
        if self.trainer is not None:
            self.ledger.path = Path(self.trainer.default_root_dir) / "skipped_rows.jsonl"
        wanted = {role: split for role, split in self.splits.items() if split is not None}
        streamed = {"train": wanted.pop("train")} if self.streaming and "train" in wanted else {}
        if "+" in streamed.get("train", ""):
            raise ValueError(
                f"train_split {streamed['train']!r} joins splits, which a streamed corpus cannot: stream one "
                "split, or set streaming: false"
            )
        sources: dict[str, Any] = {}
        if streamed:
            sources, self._base_dir = stream_source(self.path)
        if wanted:
            parts = [part for split in wanted.values() for part in split.split("+")]
            loaded, self._base_dir = load_source(self.path, self.name, parts if streamed else None)
            sources.update({part: loaded[part] for part in parts if part in loaded})
        for role, split in {**streamed, **wanted}.items():
            absent = [part for part in split.split("+") if part not in sources]
            if absent:
                message = (
                    f"{self.path!r} has no split {absent[0]!r} (splits: {sorted(sources)}); set {role}_split"
                )
                if role == "train":
                    raise ValueError(message)
                log.warning("%s; %s is disabled", message, role)
                continue
            if role in streamed:
                self.streams[role] = self._open_stream(role, split, sources[split])
            else:
                self.data[role] = self._prepare(role, split, joined(sources, split))

    def _prepare(self, role: str, split: str, dataset: Dataset) -> SplitData:
        where = f"{self.path!r} split {split!r}"
        mapping = resolve_columns(self.task, self.schema, self.columns, dataset.column_names, where)
        self.mapping[role] = mapping
        dataset = dataset.select_columns(sorted({c for c in mapping.values() if c is not None}))
        data, records = self.screen_rows(role, split, dataset, mapping)
        self.skipped[role] = Counter(record["reason"] for record in records)
        self.ledger.add(records, write=getattr(self.trainer, "global_rank", 0) == 0)
        if len(dataset) and not len(data):
            raise ValueError(
                f"every row of {where} was skipped: {self.ledger.summary(role)}; check the audio files and "
                "the column mapping (columns:)"
            )
        if records:
            log.warning("%s: %s", where, self.ledger.summary(role))
        return data

    def screen_rows(
        self, role: str, split: str, dataset: Dataset, mapping: ColumnMapping
    ) -> tuple[SplitData, list[dict]]:
        """The rows of ``dataset`` fit to train on, and a skip record for each row left out (see the module
        docstring for the checks)."""
        screened, extra = self.screen(split, dataset, mapping)
        extra.update(class_names(dataset, mapping, skip=extra))
        keep = np.ones(len(dataset), dtype=bool)
        why = np.full(len(dataset), "", dtype=object)  # the reason each left-out row is skipped
        details: dict[int, str] = {}

        def drop(bad: np.ndarray, reason: str) -> None:
            why[bad & keep] = reason
            keep[bad] = False

        drop(~screened, ", ".join(sorted(k for k, v in extra.pop("_reasons", {}).items() if v)) or "screen")
        for field in TEXT_REQUIRED.get(self.task, ()):
            texts = dataset[mapping[field]]
            drop(
                np.fromiter((not (t or "").strip() for t in texts), dtype=bool, count=len(texts)),
                "empty_transcript",
            )
        longest, total = self._durations(dataset, mapping, keep, why, details)
        drop(longest > self.max_duration, f"longer_than_{self.max_duration:g}s")
        # a row longer than the batch budget could never be batched
        drop(
            total > self.max_seconds_per_batch, f"over_max_seconds_per_batch_{self.max_seconds_per_batch:g}s"
        )
        indices = np.flatnonzero(keep)
        extra = {name: values[indices] for name, values in extra.items()}
        extra["_duration"] = total[indices]
        left_out = np.flatnonzero(~keep).tolist()
        records = [
            self._skip_record(role, row_id, why[row], details.get(row, ""))
            for row, row_id in zip(left_out, self._row_ids(dataset, mapping, left_out))
        ]
        return SplitData(dataset, indices, extra), records

    # ---- streamed training split -------------------------------------------------------------
    def _open_stream(self, role: str, split: str, stream: IterableDataset) -> IterableDataset:
        """Check the stream's columns the way a loaded split's are checked (on no rows) and keep the mapped
        ones; a row's seconds must be in a column, since bucketing comes before reading any audio."""
        where = f"{self.path!r} split {split!r} (streamed)"
        features = stream.features
        if features is None:  # json: the types show in the rows
            first = next(iter(stream), None)
            if first is None:
                raise ValueError(f"{where} has no rows")
            features = Dataset.from_list([first]).features
        self._prepare(role, split, Dataset.from_dict({name: [] for name in features}, features=features))
        mapping = self.mapping[role]
        if self.duration_channels is not None and not mapping.get("duration"):
            raise ValueError(
                f"{where} has no duration column (columns: {list(features)}): a streamed corpus is bucketed "
                "before its audio is read, so each row needs its seconds; add a float `duration` column to the "
                "files, or map yours with data.init_args.columns: {duration: <column>}"
            )
        stream = stream.select_columns(sorted({c for c in mapping.values() if c is not None}))
        if not mapping.get("id"):
            mapping["id"] = STREAM_ROW_ID
        return stream

    def _screen_pool(self, role: str, split: str, rows: Rows, names: list[str]) -> SplitData:
        """One pool of streamed rows -> the rows kept; the others are counted, listed and logged."""
        mapping = self.mapping[role]
        features = self._pool_features(role, list(rows[0]))
        if mapping["id"] == STREAM_ROW_ID:
            rows = [{**row, STREAM_ROW_ID: name} for row, name in zip(rows, names)]
        data, records = self.screen_rows(role, split, Dataset.from_list(rows, features=features), mapping)
        if records:
            self.skipped.setdefault(role, Counter()).update(record["reason"] for record in records)
            self.ledger.add(records)
            log.warning(
                "%r split %r (streamed): %d of a pool's %d rows skipped; so far %s",
                self.path,
                split,
                len(records),
                len(rows),
                self.ledger.summary(role),
            )
        return data

    def _pool_features(self, role: str, columns: list[str]) -> Features | None:
        """The types of a pool's columns: the stream's, Audio as its stored struct (encoding Audio needs
        torchcodec); None where the stream does not know them (json: inferred from the rows)."""
        known = self.streams[role].features
        if known is None:
            return None
        features = Features(
            {name: AUDIO_STRUCT if isinstance(known[name], Audio) else known[name] for name in columns}
        )
        if self.mapping[role]["id"] == STREAM_ROW_ID:
            features[STREAM_ROW_ID] = Value("string")
        return features

    def _stream_loader(self, role: str, shuffle: bool) -> StreamedLoader:
        split = self.splits[role]
        planner = StreamPlanner(
            self.streams[role],
            functools.partial(self._screen_pool, role, split),
            self.max_seconds_per_batch,
            self.max_batch_size,
            self.stream_buffer,
            self.seed,
            where=f"{self.path!r} split {split!r}",
            shuffle=shuffle,
            on_pass_end=lambda index: self._pass_ended(role, index),
        )
        return StreamedLoader(
            planner,
            functools.partial(self.collate, mapping=self.mapping[role], role=role),
            num_workers=self.num_workers,
            finish_batch=self.take_skipped,
            source=f"{self.path} split {split}",
            batches_per_epoch=self._batches_per_epoch(),
        )

    def _batches_per_epoch(self) -> int | None:
        """The training batches a trainer takes per epoch from an endless stream (None: no trainer)."""
        trainer = self.trainer
        if trainer is None:
            return None
        if isinstance(trainer.limit_train_batches, int):
            return trainer.limit_train_batches
        if trainer.max_steps >= 0:
            return trainer.max_steps * trainer.accumulate_grad_batches
        raise ValueError(
            f"{self.path!r} is streamed (streaming: true), an endless stream of training batches, and the "
            "trainer has no step limit: set trainer.max_steps (and, for epochs of N steps, "
            "trainer.limit_train_batches: N)"
        )

    def _row_ids(self, dataset: Dataset, mapping: ColumnMapping, rows: list[int]) -> list[str]:
        if mapping.get("id"):
            return [str(v) for v in dataset.select(rows)[mapping["id"]]]
        return [f"row {row}" for row in rows]

    def _skip_record(self, role: str, row_id: str, reason: str, detail: str = "") -> dict[str, str]:
        split = self.splits[role] or role
        return {
            "source": self.path,
            "split": split,
            "role": role,
            "id": row_id,
            "reason": reason,
            "detail": detail,
        }

    def _durations(
        self, dataset: Dataset, mapping: dict, keep: np.ndarray, why: np.ndarray, details: dict[int, str]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per row: seconds of the longest audio field (for ``max_duration``) and of all audio fields
        together (the batch budget), from the duration column or from the audio headers; rows whose headers
        are unreadable or empty leave ``keep`` with their reason in ``why``."""
        audio_fields = [f for f in self.audio_rates if mapping.get(f)]
        if mapping.get("duration") and self.duration_channels is not None:
            values = dataset[mapping["duration"]]
            seconds = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
            for row in np.flatnonzero(keep & ~(seconds > 0)).tolist():  # NaN, missing, zero or negative
                keep[row], why[row] = False, "bad_duration"
                details[row] = f"{mapping['duration']} = {values[row]!r}"
            return seconds, seconds * self.duration_channels
        longest = np.zeros(len(dataset), dtype=np.float64)
        total = np.zeros(len(dataset), dtype=np.float64)
        for field in audio_fields:
            for row, value in enumerate(dataset[mapping[field]]):
                if not keep[row]:
                    continue
                try:
                    seconds = probe_duration(value, self._base_dir)
                except AudioError as error:
                    keep[row], why[row], details[row] = False, error.reason, f"{field}: {error}"
                    continue
                if seconds <= 0:
                    keep[row], why[row], details[row] = False, "empty_audio", f"{field}: 0 samples"
                longest[row] = max(longest[row], seconds)
                total[row] += seconds
        return longest, total

    # ---- decoding ----------------------------------------------------------------------------
    def collate(self, columns: Columns, mapping: ColumnMapping, role: str = "train") -> dict[str, Any] | None:
        """One planned batch's columns -> the batch: the decoded rows' ``ids``, then ``batch_fields``; None
        when no row decoded. In a worker process the skipped rows ride along under ``SKIPPED_KEY``."""
        waves, rows, skipped = self.decode(columns, mapping, role)
        batch = {"ids": self.ids(columns, mapping, rows)}
        if rows:
            batch.update(self.batch_fields(columns, mapping, waves, rows))
        if skipped and get_worker_info() is not None:
            return {**batch, SKIPPED_KEY: (self.ledger.token, skipped)}
        self._note_skipped(skipped)
        return batch if rows else None

    def decode(
        self, columns: Columns, mapping: ColumnMapping, role: str = "train"
    ) -> tuple[Waves, list[int], list[dict]]:
        """Decode every mapped audio field; returns the waveforms of the rows that decoded, those rows, and a
        skip record for each row that did not (unreadable, empty, NaN/Inf, longer than ``max_duration``)."""
        fields = [(f, getattr(self, arg)) for f, arg in self.audio_rates.items() if mapping.get(f)]
        waves: Waves = {field: [] for field, _ in fields}
        good: list[int] = []
        skipped: list[dict] = []
        for row in range(len(columns["_duration"])):
            try:
                decoded = [self._decode_field(columns[mapping[f]][row], f, rate) for f, rate in fields]
            except AudioError as error:
                row_id = self.ids(columns, mapping, [row])[0]
                skipped.append(self._skip_record(role, row_id, error.reason, str(error)))
                continue
            good.append(row)
            for (field, _), wave in zip(fields, decoded):
                waves[field].append(wave)
        return waves, good, skipped

    def _decode_field(self, value: Any, field: str, rate: int) -> np.ndarray:
        try:
            wave = decode_audio(value, rate, self._base_dir)[0]
        except AudioError as error:
            raise AudioError(f"{field}: {error}", error.reason) from error
        # the duration column said it fits; a clip over the limit (plus rounding) would fail in the encoder
        if len(wave) > (self.max_duration * 1.05 + 0.1) * rate:
            raise AudioError(
                f"{field}: {len(wave) / rate:.1f} s decoded, over max_duration {self.max_duration:g} s",
                f"longer_than_{self.max_duration:g}s",
            )
        return wave

    def _note_skipped(self, records: list[dict]) -> None:
        """Record rows skipped while decoding (in the main process): counted, listed and logged once each."""
        known = len(self.ledger.rows)
        self.ledger.add(records)
        for record in self.ledger.rows[known:]:
            self._runtime_skips[record["reason"]] += 1
            log.warning("skipping %s of %s: %s", record["id"], self.path, record["detail"])

    def take_skipped(self, batch: Any) -> Any:
        """Record the rows a worker skipped for this datamodule and strip them from ``batch``; a batch with
        no row left becomes None. Under a Trainer, the first batch of a new epoch reports the last one."""
        epoch = getattr(self.trainer, "current_epoch", None)
        if self._epoch is not None and epoch != self._epoch:
            self._report_epoch(self._epoch)
        self._epoch = epoch
        if isinstance(batch, dict) and batch.get(SKIPPED_KEY, (None,))[0] == self.ledger.token:
            self._note_skipped(batch.pop(SKIPPED_KEY)[1])
            return batch if batch["ids"] else None
        return batch

    def teardown(self, stage: str) -> None:
        """The end of a Trainer run reports its last epoch."""
        if self._epoch is not None:
            self._report_epoch(self._epoch)

    @property
    def skipped_rows(self) -> list[dict]:
        """Every row left out so far, one record each (``skipped.py``)."""
        return self.ledger.rows

    def ids(self, columns: Columns, mapping: dict, rows: list[int]) -> list[str]:
        if mapping.get("id"):
            return [str(columns[mapping["id"]][row]) for row in rows]
        return [f"row {columns['_index'][row]}" for row in rows]

    @property
    def _runtime_skips(self) -> Counter:
        return self.skipped.setdefault("decode", Counter())

    # ---- loaders -----------------------------------------------------------------------------
    def _loader(self, role: str, shuffle: bool) -> ResumableLoader | StreamedLoader:
        if role in self.streams:
            return self._stream_loader(role, shuffle)
        if role not in self.data:
            if not (self.data or self.streams):
                raise RuntimeError("call setup() before asking for a dataloader")
            return []  # type: ignore[return-value]  # no such split: Lightning runs no loop for it
        data = self.data[role]
        sampler = DurationBatchSampler(
            data.extra["_duration"],
            self.max_seconds_per_batch,
            self.max_batch_size,
            shuffle=shuffle,
            seed=self.seed,
            on_epoch_end=lambda epoch, role=role: self._pass_ended(role, epoch),
        )
        sampler.set_epoch(getattr(self.trainer, "current_epoch", 0))  # a loader made per epoch: its length
        return ResumableLoader(
            data,
            sampler=sampler,
            batch_size=None,
            num_workers=self.num_workers,
            collate_fn=functools.partial(self.collate, mapping=self.mapping[role], role=role),
            persistent_workers=self.num_workers > 0,
            finish_batch=self.take_skipped,
        )

    def _pass_ended(self, role: str, epoch: int) -> None:
        """The sampler ended a pass: the end of the epoch when a loader is iterated directly. Under a Trainer
        its loops stop before the sampler ends, or workers exhaust it early, so batches report instead."""
        if self.trainer is None:
            self.report(role, epoch)

    def _report_epoch(self, epoch: int) -> None:
        for role in [*self.streams, *self.data]:
            self.report(role, epoch)

    def report(self, role: str, epoch: int) -> None:
        """Log what was left out of ``role`` so far (once per epoch, on rank 0): count, reasons, first ids.

        Called when the sampler ends a pass (iterating the loader yourself) or, under a Trainer, from the
        first batch of the next epoch and from ``teardown`` (see ``_pass_ended``).
        """
        if getattr(self.trainer, "global_rank", 0) != 0 or (role, epoch) in self._reported:
            return
        self._reported.add((role, epoch))
        summary = self.ledger.summary(role)
        if summary:
            log.warning("%s epoch %d, %s of %r: %s", self.task, epoch, role, self.path, summary)
        else:
            log.info("%s epoch %d: no rows of %s skipped", self.task, epoch, role)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.shuffle)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)
