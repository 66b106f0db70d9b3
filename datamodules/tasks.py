"""One datamodule per MinMo task family; recipes name them by class name (``class_path: ASRDataModule``).

Every constructor takes the shared arguments of ``SpeechDataModule`` (path, schema, columns, splits,
batching, workers, seed) plus its own sample rates. Batches are dicts:

- asr: ``{"ids", "audio": AudioBatch, "text": list[str], "supervises": tuple[str, ...]}``
- emotion: asr keys + ``"emotion": LongTensor[B]`` (index into ``emotion_labels``)
- the other speech-to-text families (translation, language, speaker, events, spoken QA, dialogue):
  ``understanding.py`` and ``dialogue.py``
- tts: ``{"ids", "text", "audio", "speech_tokens": TokenBatch (when mapped)}``
- s2s: ``{"ids", "user_audio", "user_text", "answer_text", "answer_audio", "answer_speech_tokens" (when mapped)}``
- duplex: ``{"ids", "user_audio", "assistant_audio", "frame_labels": LongTensor[B, T] (-100 on padding),
  "frame_lengths": LongTensor[B], "events": list[list[dict]]}``
"""

from __future__ import annotations

from collections import Counter
from typing import Any, ClassVar

import numpy as np
import torch
from datasets import ClassLabel, Dataset
from minmo_lightning.datamodules.base import ColumnMapping, Columns, SpeechDataModule, Waves, pad_audio
from minmo_lightning.datamodules.schema import EMOTION_LABELS, TASK_FIELDS, canonical_emotion
from minmo_lightning.datamodules.timeline import frame_labels as labels_from_events

from minmo_lightning.contracts import IGNORE_INDEX, TokenBatch
from minmo_lightning.prompts import SPEECH_TASKS


def column_texts(columns: dict, mapping: dict, field: str, rows: list[int]) -> list[str]:
    """A text field of the batch's rows ("" when unmapped); a ``ClassLabel`` column gives its label names."""
    if f"_{field}" in columns:  # label names resolved in setup (``base.class_names``)
        return [str(columns[f"_{field}"][r]) for r in rows]
    column = mapping.get(field)
    return [str(columns[column][r] or "") for r in rows] if column else [""] * len(rows)


class SpeechToTextDataModule(SpeechDataModule):
    """A source of speech-to-text items: it says which of ``prompts.SPEECH_TASKS`` its items supervise
    (``tasks``, default ``supervises``; the first is the one ``minmo evaluate`` predicts) and puts them in
    every batch as ``batch["supervises"]``. A task whose fields this source cannot fill is an error when the
    data is set up, naming the task, the field and the source; never an answer read from another field."""

    supervises: ClassVar[tuple[str, ...]]
    #: fields a datamodule fills from its own arguments when no column holds them
    filled_without_column: ClassVar[frozenset[str]] = frozenset()

    def __init__(
        self, path: str, sample_rate: int = 16000, tasks: list[str] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(path, **kwargs)
        self.sample_rate = sample_rate
        self.tasks = tuple(tasks if tasks is not None else self.supervises)
        if not self.tasks:
            raise ValueError(f"{type(self).__name__} ({path}) supervises no task: give it `tasks`")
        fields = TASK_FIELDS[self.task]
        for name in self.tasks:
            if name not in SPEECH_TASKS:
                raise ValueError(
                    f"{type(self).__name__} ({path}): unknown task {name!r}; choose from {', '.join(SPEECH_TASKS)}"
                )
            missing = [f for f in SPEECH_TASKS[name].fields if f not in fields]
            if missing:
                raise ValueError(
                    f"{type(self).__name__} ({path}) cannot supervise task {name!r}: its batches have no "
                    f"{', '.join(missing)}; supervise one of the tasks its data has fields for"
                )

    def _prepare(self, role: str, split: str, dataset: Dataset) -> Any:
        data = super()._prepare(role, split, dataset)
        mapping = self.mapping[role]
        for name in self.tasks:
            absent = [
                f
                for f in SPEECH_TASKS[name].fields
                if f in mapping and mapping[f] is None and f not in self.filled_without_column
            ]
            if absent:
                raise ValueError(
                    f"task {name!r} needs field {absent[0]!r}, which {self.path!r} split {split!r} does not "
                    f"have (columns: {', '.join(dataset.column_names)}); map it with `columns: "
                    f"{{{absent[0]}: COLUMN}}` or leave {name!r} out of this source's `tasks`"
                )
        return data

    @property
    def supervised_tasks(self) -> list[str]:
        return list(self.tasks)

    def collate(self, columns: Columns, mapping: ColumnMapping, role: str = "train") -> dict[str, Any] | None:
        batch = super().collate(columns, mapping, role)
        if batch is not None:
            batch["supervises"] = self.tasks
        return batch


class ASRDataModule(SpeechToTextDataModule):
    """Speech -> transcript pairs, audio at ``sample_rate`` (16 kHz for the voice encoders)."""

    task = "asr"
    supervises = ("asr",)

    def __init__(self, path: str = "data/builtin/asr", sample_rate: int = 16000, **kwargs: Any) -> None:
        super().__init__(path, sample_rate, **kwargs)

    def batch_fields(
        self, columns: Columns, mapping: ColumnMapping, waves: Waves, rows: list[int]
    ) -> dict[str, Any]:
        return {
            "audio": pad_audio(waves["audio"], self.sample_rate),
            "text": column_texts(columns, mapping, "text", rows),
        }


class EmotionDataModule(ASRDataModule):
    """Speech -> emotion class; rows whose label is not in ``emotion_labels`` are skipped and counted.

    ``emotion_labels`` defaults to the schema's canonical set (``schema.EMOTION_LABELS``); raw spellings
    (``ang``, ``joy``, IEMOCAP ``exc``...) map onto it through ``schema.EMOTION_ALIASES``. The built-in
    set's labels are a synthetic prosody-style proxy, not human emotion.
    """

    task = "emotion"
    supervises = ("ser",)

    def __init__(
        self,
        path: str = "data/builtin/emotion",
        sample_rate: int = 16000,
        emotion_labels: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(path, sample_rate, **kwargs)
        preset = EMOTION_LABELS.get(self.schema, EMOTION_LABELS["generic"])
        self.emotion_labels = [canonical_emotion(x) for x in (emotion_labels or preset)]

    def screen(self, split: str, dataset: Dataset, mapping: ColumnMapping) -> tuple[np.ndarray, dict]:
        column = mapping["emotion"]
        raw = dataset[column]
        feature = dataset.features[column]
        if isinstance(feature, ClassLabel):
            raw = [feature.int2str(int(v)) for v in raw]
        index = {label: i for i, label in enumerate(self.emotion_labels)}
        ids = np.fromiter(
            (index.get(canonical_emotion(str(v)), -1) for v in raw), dtype=np.int64, count=len(raw)
        )
        keep = ids >= 0
        reasons = Counter({"label_not_in_emotion_labels": int((~keep).sum())})
        return keep, {"_emotion": ids, "_reasons": reasons}

    def batch_fields(
        self, columns: Columns, mapping: ColumnMapping, waves: Waves, rows: list[int]
    ) -> dict[str, Any]:
        """The ASR fields plus the emotion class ids."""
        batch = super().batch_fields(columns, mapping, waves, rows)
        batch["emotion"] = torch.tensor([columns["_emotion"][r] for r in rows], dtype=torch.long)
        return batch


class TTSDataModule(SpeechDataModule):
    """Text -> speech pairs, audio at ``sample_rate`` (24 kHz: token2wav targets); speech tokens if mapped."""

    task = "tts"

    def __init__(self, path: str = "data/builtin/tts", sample_rate: int = 24000, **kwargs: Any) -> None:
        super().__init__(path, **kwargs)
        self.sample_rate = sample_rate

    def batch_fields(
        self, columns: Columns, mapping: ColumnMapping, waves: Waves, rows: list[int]
    ) -> dict[str, Any]:
        batch = {"text": column_texts(columns, mapping, "text", rows)}
        if "audio" in waves:  # `columns: {audio: null}` skips decoding when only speech tokens are used
            batch["audio"] = pad_audio(waves["audio"], self.sample_rate)
        if mapping.get("speech_tokens"):
            batch["speech_tokens"] = TokenBatch.from_list(
                [columns[mapping["speech_tokens"]][r] for r in rows]
            )
        return batch


class VoiceControlDataModule(TTSDataModule):
    """Instruction-controlled speech: a text, an instruction asking for a style (an emotion, a speaking rate,
    a pitch) and the speech that has it; ``control`` / ``target`` name the asked change, ``neutral_audio``
    and ``phonemes`` are what evaluation measures the change against."""

    task = "voice_control"
    audio_rates = {"audio": "sample_rate", "neutral_audio": "sample_rate"}

    def __init__(self, path: str = "data/builtin/voice_control", **kwargs: Any) -> None:
        super().__init__(path, **kwargs)

    def batch_fields(
        self, columns: Columns, mapping: ColumnMapping, waves: Waves, rows: list[int]
    ) -> dict[str, Any]:
        batch = super().batch_fields(columns, mapping, waves, rows)
        for field in ("instruction", "control", "target"):
            batch[field] = column_texts(columns, mapping, field, rows)
        if "neutral_audio" in waves:
            batch["neutral_audio"] = pad_audio(waves["neutral_audio"], self.sample_rate)
        if mapping.get("phonemes"):
            batch["phonemes"] = [columns[mapping["phonemes"]][r] for r in rows]
        if mapping.get("neutral_speech_tokens"):  # with speech_tokens: the evaluation's ceiling pair
            batch["neutral_speech_tokens"] = TokenBatch.from_list(
                [columns[mapping["neutral_speech_tokens"]][r] for r in rows]
            )
        return batch


class S2SDataModule(SpeechDataModule):
    """Spoken question -> answer text and answer speech (user audio 16 kHz, answer audio 24 kHz)."""

    task = "s2s"
    audio_rates = {"user_audio": "user_sample_rate", "answer_audio": "answer_sample_rate"}
    duration_channels = None  # the built-in ``duration`` is the question only: read both headers

    def __init__(
        self,
        path: str = "data/builtin/s2s",
        user_sample_rate: int = 16000,
        answer_sample_rate: int = 24000,
        **kwargs: Any,
    ) -> None:
        super().__init__(path, **kwargs)
        self.user_sample_rate = user_sample_rate
        self.answer_sample_rate = answer_sample_rate

    def batch_fields(
        self, columns: Columns, mapping: ColumnMapping, waves: Waves, rows: list[int]
    ) -> dict[str, Any]:
        batch = {
            "user_audio": pad_audio(waves["user_audio"], self.user_sample_rate),
            "user_text": column_texts(columns, mapping, "user_text", rows),
            "answer_text": column_texts(columns, mapping, "answer_text", rows),
        }
        if "answer_audio" in waves:  # not decoded when unmapped (stage 3 reads answer speech tokens)
            batch["answer_audio"] = pad_audio(waves["answer_audio"], self.answer_sample_rate)
        if mapping.get("answer_speech_tokens"):
            batch["answer_speech_tokens"] = TokenBatch.from_list(
                [columns[mapping["answer_speech_tokens"]][r] for r in rows]
            )
        return batch


class DuplexDataModule(SpeechDataModule):
    """Two-channel sessions with per-frame turn-taking labels (``timeline.LABELS``).

    ``frame_rate=None`` uses the stored ``frame_labels``; a number recomputes them from ``events`` at
    that rate (match the duplex predictor's input frame rate), with ``label_span`` seconds per decision,
    the stop ``stop_delay`` seconds into the barge-in and, with ``respond_until_answer``, ``respond`` held
    until the assistant speaks (``timeline.frame_labels``).
    """

    task = "duplex"
    audio_rates = {"user_audio": "sample_rate", "assistant_audio": "sample_rate"}
    duration_channels = 2

    def __init__(
        self,
        path: str = "data/builtin/duplex",
        sample_rate: int = 16000,
        frame_rate: float | None = None,
        label_span: float = 0.24,
        stop_delay: float = 0.0,
        respond_until_answer: bool = False,
        max_duration: float = 60.0,
        max_seconds_per_batch: float = 480.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            path, max_duration=max_duration, max_seconds_per_batch=max_seconds_per_batch, **kwargs
        )
        self.sample_rate = sample_rate
        self.frame_rate = frame_rate
        self.label_span = label_span
        self.stop_delay = stop_delay
        self.respond_until_answer = respond_until_answer
        for name, asked in (("stop_delay", stop_delay), ("respond_until_answer", respond_until_answer)):
            if asked and frame_rate is None:
                raise ValueError(
                    f"{name} needs frame_rate: the stored frame_labels were written without it; set "
                    "frame_rate (Hz) to recompute them from the events"
                )

    def screen(self, split: str, dataset: Dataset, mapping: ColumnMapping) -> tuple[np.ndarray, dict]:
        if self.frame_rate is None and not mapping.get("frame_labels"):
            raise ValueError(
                f"{self.path!r} split {split!r} has no frame_labels column; set frame_rate (Hz) so the labels "
                f"are computed from the events, or map columns: {{frame_labels: <column>}}"
            )
        return super().screen(split, dataset, mapping)

    def batch_fields(
        self, columns: Columns, mapping: ColumnMapping, waves: Waves, rows: list[int]
    ) -> dict[str, Any]:
        events = [list(columns[mapping["events"]][r]) for r in rows]
        if self.frame_rate is None:
            labels = [columns[mapping["frame_labels"]][r] for r in rows]
        else:
            seconds = [len(w) / self.sample_rate for w in waves["user_audio"]]
            labels = [
                labels_from_events(
                    e, s, self.frame_rate, self.label_span, self.stop_delay, self.respond_until_answer
                )
                for e, s in zip(events, seconds)
            ]
        frames = TokenBatch.from_list(labels)
        return {
            "user_audio": pad_audio(waves["user_audio"], self.sample_rate),
            "assistant_audio": pad_audio(waves["assistant_audio"], self.sample_rate),
            "frame_labels": frames.tokens.masked_fill(~frames.mask, IGNORE_INDEX),
            "frame_lengths": frames.lengths,
            "events": events,
        }
