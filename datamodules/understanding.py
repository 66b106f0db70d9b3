"""Datamodules of the speech-understanding families beyond ASR and emotion: translation, language ID, speaker
attributes, audio events and spoken QA (MinMo's stage-1 task range). Each is a ``SpeechToTextDataModule``:
its items supervise the tasks it names (``tasks``), its batches hold the fields those tasks answer from.

Batches (besides ``ids``, ``audio``, ``text`` when mapped, and ``supervises``):

- s2tt: ``translation``, ``target_language`` (English names), ``source_language``
- lid: ``language`` (label names)
- speaker: ``gender``, ``age`` (label names; an unmapped attribute is ``None`` per item)
- aed: ``events`` ([{label, onset, offset}] per item, seconds)
- sqa: ``answer_text``, ``question`` ("" when the question is spoken in the audio, else " " + its text),
  ``answer_type`` (when mapped)
"""

from __future__ import annotations

from collections import Counter
from typing import Any, ClassVar

import numpy as np
from datasets import ClassLabel, Dataset
from minmo_lightning.datamodules.base import ColumnMapping, Columns, Waves, pad_audio
from minmo_lightning.datamodules.schema import canonical_attribute
from minmo_lightning.datamodules.tasks import SpeechToTextDataModule, column_texts


def label_names(dataset: Dataset, column: str, field: str) -> list[str]:
    """A closed-set column's values as canonical label names (``ClassLabel`` ids read through its names)."""
    values = dataset[column]
    feature = dataset.features[column]
    if isinstance(feature, ClassLabel):
        values = [feature.int2str(int(v)) for v in values]
    return [canonical_attribute(field, v) if v is not None else "" for v in values]


class ClosedSetDataModule(SpeechToTextDataModule):
    """A source whose answers are class names: ``label_fields`` are read as names, optionally restricted to
    ``labels`` (field -> the allowed names; rows outside are skipped and counted)."""

    label_fields: ClassVar[tuple[str, ...]]

    def __init__(self, path: str, labels: dict[str, list[str]] | None = None, **kwargs: Any) -> None:
        super().__init__(path, **kwargs)
        unknown = sorted(set(labels or {}) - set(self.label_fields))
        if unknown:
            raise ValueError(
                f"{type(self).__name__}: labels for unknown field(s) {unknown}; its label fields are "
                f"{', '.join(self.label_fields)}"
            )
        self.labels = {
            field: [canonical_attribute(field, x) for x in names] for field, names in (labels or {}).items()
        }

    def screen(self, split: str, dataset: Dataset, mapping: ColumnMapping) -> tuple[np.ndarray, dict]:
        keep = np.ones(len(dataset), dtype=bool)
        extra: dict[str, Any] = {"_reasons": Counter()}
        for field in self.label_fields:
            if mapping.get(field) is None:
                continue
            names = np.array(label_names(dataset, mapping[field], field), dtype=object)
            bad = names == ""
            if field in self.labels:
                bad |= ~np.isin(names, self.labels[field])
            extra["_reasons"][f"{field}_not_in_labels" if field in self.labels else f"no_{field}"] += int(
                (bad & keep).sum()
            )
            keep &= ~bad
            extra[f"_{field}"] = names
        return keep, extra

    def batch_fields(
        self, columns: Columns, mapping: ColumnMapping, waves: Waves, rows: list[int]
    ) -> dict[str, Any]:
        batch = {
            "audio": pad_audio(waves["audio"], self.sample_rate),
            "text": column_texts(columns, mapping, "text", rows),
        }
        for field in self.label_fields:
            batch[field] = (
                [columns[f"_{field}"][r] for r in rows] if mapping.get(field) else [None] * len(rows)
            )
        return batch


class S2TTDataModule(SpeechToTextDataModule):
    """Speech -> text in another language. ``target_language`` (an English language name) is the target of
    every row when the data has no such column (CoVoST 2: one language pair per config)."""

    task = "s2tt"
    supervises = ("s2tt",)
    filled_without_column = frozenset({"target_language"})

    def __init__(
        self, path: str = "data/builtin/s2tt", target_language: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(path, **kwargs)
        self.target_language = target_language

    def screen(self, split: str, dataset: Dataset, mapping: ColumnMapping) -> tuple[np.ndarray, dict]:
        if mapping.get("target_language") is None and self.target_language is None:
            raise ValueError(
                f"{self.path!r} split {split!r} has no target_language column; give the datamodule "
                "`target_language: <English name of the language>`"
            )
        return super().screen(split, dataset, mapping)

    def batch_fields(
        self, columns: Columns, mapping: ColumnMapping, waves: Waves, rows: list[int]
    ) -> dict[str, Any]:
        targets = column_texts(columns, mapping, "target_language", rows)
        return {
            "audio": pad_audio(waves["audio"], self.sample_rate),
            "text": column_texts(columns, mapping, "text", rows),
            "translation": column_texts(columns, mapping, "translation", rows),
            "target_language": [t or self.target_language for t in targets],
            "source_language": column_texts(columns, mapping, "source_language", rows),
        }


class LanguageIDDataModule(ClosedSetDataModule):
    """Speech -> the name of its language."""

    task = "lid"
    supervises = ("lid",)
    label_fields = ("language",)

    def __init__(self, path: str = "data/builtin/lid", **kwargs: Any) -> None:
        super().__init__(path, **kwargs)


class SpeakerDataModule(ClosedSetDataModule):
    """Speech -> the speaker's gender and age band."""

    task = "speaker"
    supervises = ("speaker",)
    label_fields = ("gender", "age")

    def __init__(self, path: str = "data/builtin/speaker", **kwargs: Any) -> None:
        super().__init__(path, **kwargs)


class AudioEventDataModule(SpeechToTextDataModule):
    """Audio -> its sound events with onsets (``answers.render_events``). A dataset with one label per clip
    (``event_label``, ESC-50) gives each clip one event spanning it."""

    task = "aed"
    supervises = ("aed",)
    filled_without_column = frozenset({"events"})

    def __init__(self, path: str = "data/builtin/aed", **kwargs: Any) -> None:
        super().__init__(path, **kwargs)

    def screen(self, split: str, dataset: Dataset, mapping: ColumnMapping) -> tuple[np.ndarray, dict]:
        if mapping.get("events") is None and mapping.get("event_label") is None:
            raise ValueError(
                f"{self.path!r} split {split!r} has neither an events column nor a per-clip event label; map "
                "one: `columns: {events: COLUMN}` or `columns: {event_label: COLUMN}`"
            )
        if mapping.get("events") is not None:
            return super().screen(split, dataset, mapping)
        names = label_names(dataset, mapping["event_label"], "event_label")
        return np.ones(len(dataset), dtype=bool), {"_event_label": np.array(names, dtype=object)}

    def batch_fields(
        self, columns: Columns, mapping: ColumnMapping, waves: Waves, rows: list[int]
    ) -> dict[str, Any]:
        if mapping.get("events") is not None:
            events = [list(columns[mapping["events"]][r] or []) for r in rows]
        else:
            seconds = [len(w) / self.sample_rate for w in waves["audio"]]
            events = [
                [{"label": columns["_event_label"][r], "onset": 0.0, "offset": s}]
                for r, s in zip(rows, seconds)
            ]
        return {
            "audio": pad_audio(waves["audio"], self.sample_rate),
            "text": column_texts(columns, mapping, "text", rows),
            "events": events,
        }


class SpokenQADataModule(SpeechToTextDataModule):
    """A recording and a question about it -> the answer. ``question_in_prompt``: the question is text put
    in the instruction (AudioBench-style sets); else it is spoken in the audio (the built-in set)."""

    task = "sqa"
    supervises = ("sqa",)
    filled_without_column = frozenset({"question"})

    def __init__(
        self, path: str = "data/builtin/sqa", question_in_prompt: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(path, **kwargs)
        self.question_in_prompt = question_in_prompt

    def screen(self, split: str, dataset: Dataset, mapping: ColumnMapping) -> tuple[np.ndarray, dict]:
        if self.question_in_prompt and mapping.get("question") is None:
            raise ValueError(
                f"{self.path!r} split {split!r} has no question column, but question_in_prompt is set; map it "
                "(`columns: {question: COLUMN}`) or set question_in_prompt: false if the question is spoken"
            )
        return super().screen(split, dataset, mapping)

    def batch_fields(
        self, columns: Columns, mapping: ColumnMapping, waves: Waves, rows: list[int]
    ) -> dict[str, Any]:
        questions = (
            column_texts(columns, mapping, "question", rows) if self.question_in_prompt else [""] * len(rows)
        )
        batch = {
            "audio": pad_audio(waves["audio"], self.sample_rate),
            "answer_text": column_texts(columns, mapping, "answer_text", rows),
            "question": [f" {q}" if q else "" for q in questions],
        }
        if mapping.get("answer_type"):
            batch["answer_type"] = column_texts(columns, mapping, "answer_type", rows)
        return batch
