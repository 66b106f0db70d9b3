"""The evaluation tasks, one :class:`TaskSpec` each: the record fields a task reads, its default settings,
its scorer and where its references come from. Nothing outside this table branches on a task's name.

A record is one utterance as a dict (one line of ``predictions.jsonl``). Fields each task reads:

- ``asr``: ``id``, ``reference``, ``hypothesis`` (or ``prediction``, as ``MinMo.predict_step`` writes it).
- ``emotion``: ``id``, ``reference`` (label), and ``prediction`` (label) or ``prediction_text``
  (free text, mapped to a label by ``emotion.parse_label``; unmappable text is counted wrong).
- ``duplex``: ``id``, ``reference_labels`` and ``predicted_labels`` (one class id per frame,
  ``DuplexPredictor.CLASSES``), optional ``backchannels`` ([[start, end], ...] frames).
- ``tts`` / ``s2s`` (spoken output, ``spoken.py``): ``id``, ``reference`` (tts: the text to speak, from the
  batch; s2s: the model's own text answer) and ``output_audio_path`` (a WAV under the report directory) or its
  transcript ``hypothesis``; optional ``ceiling_audio_path`` and ``ceiling_reference`` (s2s: the answer text).
- ``latency``: ``id``, ``first_packet_s``, optional ``components_s``, ``d_llm_s``, ``d_lm_s``, ``d_syn_s``.
- ``s2tt`` (``translation.py``): ``id``, ``reference`` (target-language text), ``hypothesis`` (or
  ``prediction_text``), ``target_language`` (English name; or the ``target_language`` setting).
- ``lid`` (``classification.py``): ``id``, ``reference`` (language label), and ``prediction`` or
  ``prediction_text``, as for ``emotion``.
- ``speaker`` (``attributes.py``): ``id``, ``reference_attributes`` (``{attribute: label}``),
  ``prediction_text``; optional ``attribute_labels`` (``{attribute: [labels]}``).
- ``aed`` (``events.py``): ``id``, ``reference_events`` (``[{label, onset, offset}]``, seconds),
  ``prediction_text``.
- ``sqa`` (``qa.py``): ``id``, ``reference`` (the answer, or a list of accepted answers), ``prediction_text``,
  optional ``answer_type`` (``span`` / ``yesno``).
- ``dialogue``: as ``sqa`` (the answer to a conversation's last turn).
- ``voice_control`` (``voice_control.py``): ``id``, ``control`` (``rate`` / ``pitch`` / ``emotion``),
  ``target``, ``output_audio_path``, ``neutral_audio_path`` (or ``neutral_seconds_per_phoneme`` /
  ``neutral_f0_hz``); rate: ``phonemes``.

Any task: optional ``processing_s`` and ``audio_s`` give the RTF / RTFx of the run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from minmo_lightning.evaluation.attributes import attributes_report
from minmo_lightning.evaluation.classification import classification_report
from minmo_lightning.evaluation.events import events_report, record_counts
from minmo_lightning.evaluation.qa import qa_report
from minmo_lightning.evaluation.report import md_table
from minmo_lightning.evaluation.scorers import Scored, asr_report, duplex_report, latency_report
from minmo_lightning.evaluation.spoken import spoken_report
from minmo_lightning.evaluation.translation import translation_report
from minmo_lightning.evaluation.voice_control import voice_control_report

#: metric settings of the spoken-output tasks: the ASR task's, the judge, and how many WAVs stay
SPOKEN_SETTINGS = {
    "normalizer": "whisper_english",
    "unit": None,
    "crosscheck_torchmetrics": False,
    "judge": None,
    "keep_wavs": 20,
}


@dataclass(frozen=True)
class BatchLabels:
    """What turns a batch's label ids into reference values: the datamodule's emotion class names
    (``None`` when it has none) and the length of a duplex label frame."""

    emotion_labels: Sequence[str] | None
    frame_ms: float


@dataclass(frozen=True)
class PairedStatistic:
    """A task's headline figure as a ratio of per-record counts summed over the corpus, so a paired bootstrap
    can resample records (utterances, dialogues) and recompute it exactly as the scorer does."""

    #: settings -> the summary key it reproduces (``wer``, ``assistant_f1@600``, ...)
    name: Callable[[dict], str]
    #: a scored record and the run's settings -> (numerator, denominator)
    counts: Callable[[dict, dict], tuple[float, float]]
    lower_is_better: bool


def _error_rate_name(settings: dict) -> str:
    """``wer``, ``cer`` or ``mer``: what the scheme of these settings reports (``normalizers.metric_name``)."""
    from minmo_lightning.evaluation.normalizers import get_scheme, metric_name

    return metric_name(get_scheme(settings.get("normalizer", "whisper_english"), settings.get("unit")))


def _word_errors(record: dict, settings: dict) -> tuple[float, float]:
    errors = record["substitutions"] + record["deletions"] + record["insertions"]
    return float(errors), float(record["hits"] + record["substitutions"] + record["deletions"])


#: the error rate of the ASR-scored tasks (asr, tts, s2s), from per-utterance edit counts
ERROR_RATE = PairedStatistic(_error_rate_name, _word_errors, lower_is_better=True)


def _correct(record: dict, settings: dict) -> tuple[float, float]:
    return float(bool(record["correct"])), 1.0


def _exact_match(record: dict, settings: dict) -> tuple[float, float]:
    return float(record["exact_match"]), 1.0


def _moved(record: dict, settings: dict) -> tuple[float, float]:
    """A voice-control record moved as asked (an emotion record without a judge counts nowhere)."""
    return (0.0, 0.0) if record["moved"] is None else (float(record["moved"]), 1.0)


def _event_f1_counts(record: dict, settings: dict) -> tuple[float, float]:
    """2TP and 2TP + FP + FN of a record's events at the run's onset tolerance."""
    counts = record_counts(record, float(settings["tolerance_s"]))
    return 2.0 * counts.tp, 2.0 * counts.tp + counts.fp + counts.fn


def _primary_tolerance(settings: dict) -> float:
    return max(settings.get("tolerances") or [1])


def _assistant_f1_counts(record: dict, settings: dict) -> tuple[float, float]:
    """2TP and 2TP + FP + FN of the assistant's turn-taking onsets at the largest tolerance."""
    from minmo_lightning.evaluation.duplex import EventScore, onsets, tolerance_frames

    k = tolerance_frames(_primary_tolerance(settings), settings["tolerance_unit"], settings["frame_ms"])
    score = EventScore()
    score.add(
        onsets(record["reference_labels"], 1), onsets(record["predicted_labels"], 1), k, settings["window"]
    )
    return 2.0 * score.tp, 2.0 * score.tp + score.fp + score.fn


@dataclass(frozen=True)
class TaskSpec:
    name: str
    #: record fields the scorer reads
    required: tuple[str, ...]
    #: records, settings, report directory -> figures, records and report sections
    scorer: Callable[[list[dict], dict, Path], Scored]
    #: metric settings a recipe or flag may override
    settings: Mapping[str, Any] = field(default_factory=dict)
    #: a required text field a model may write under another name (field -> that name)
    alternative_names: Mapping[str, str] = field(default_factory=dict)
    #: a record needs at least one of these (e.g. a label or the text to parse one from)
    any_of: tuple[str, ...] = ()
    #: dataset column holding the reference, and the record field it fills (``None``: the records hold it)
    reference_column: str | None = None
    reference_field: str | None = None
    #: model mode: a batch's references for utterance ``i`` (``None``: the task has no model mode)
    batch_references: Callable[[dict, int, BatchLabels], dict] | None = None
    #: predictions are one label per frame: the datamodule's frame rate must match ``frame_ms``, and
    #: predicted frames beyond the reference's are dropped
    per_frame: bool = False
    #: the headline figure a comparison of runs resamples (``None``: compared without intervals)
    statistic: PairedStatistic | None = None

    def check_record(self, record: dict, source: str) -> None:
        """Fill a field the model wrote under another name; fail naming what a record lacks."""
        for name, written_as in self.alternative_names.items():
            if name not in record and isinstance(record.get(written_as), str):
                record[name] = record[written_as]
        if self.any_of and not any(f in record for f in self.any_of):
            raise ValueError(
                f"{source}: record {record['id']!r} has neither {' nor '.join(map(repr, self.any_of))}"
            )
        missing = [f for f in self.required if f not in record]
        if missing:
            raise ValueError(
                f"{source}: record {record['id']!r} lacks {missing} needed for task {self.name!r} "
                f"(it has {sorted(record)}); give references with --references or add the fields"
            )

    def references_from_batch(self, batch: dict, i: int, labels: BatchLabels) -> dict:
        if self.batch_references is None:
            raise ValueError(
                f"task {self.name!r} cannot run a model: its records come from elsewhere; "
                "score them with --predictions"
            )
        return self.batch_references(batch, i, labels)


def _asr_references(batch: dict, i: int, labels: BatchLabels) -> dict:
    return {"reference": batch["text"][i]}


def _emotion_references(batch: dict, i: int, labels: BatchLabels) -> dict:
    if labels.emotion_labels is None:
        raise ValueError("the datamodule has no emotion_labels; it must name the classes of batch['emotion']")
    return {"reference": labels.emotion_labels[int(batch["emotion"][i])]}


def _tts_references(batch: dict, i: int, labels: BatchLabels) -> dict:
    return {"reference": batch["text"][i]}


def _s2s_references(batch: dict, i: int, labels: BatchLabels) -> dict:
    return {"ceiling_reference": batch["answer_text"][i]}


def _duplex_references(batch: dict, i: int, labels: BatchLabels) -> dict:
    n = int(batch["frame_lengths"][i])
    events = batch["events"][i] if batch.get("events") is not None else []

    # events carry seconds; a back-channel (a mid-turn pause) covers the frames from its start to its end
    def spans(kind: str) -> list[list[int]]:
        return [
            [int(e["start"] * 1000 / labels.frame_ms), int(e["end"] * 1000 / labels.frame_ms)]
            for e in events
            if e.get("type") == kind
        ]

    return {
        "reference_labels": batch["frame_labels"][i][:n].tolist(),
        "backchannels": spans("backchannel"),
        "pauses": spans("pause"),
        "pause_kinds": [e.get("text") or "" for e in events if e.get("type") == "pause"],
    }


#: the speaker attributes a batch may carry (each a list of label strings)
SPEAKER_ATTRIBUTES = ("gender", "age")


def _plain(value: Any) -> Any:
    """A batch value as JSON takes it (tensors become lists and numbers)."""
    return value.tolist() if hasattr(value, "tolist") else value


def _translation_references(batch: dict, i: int, labels: BatchLabels) -> dict:
    return {"reference": batch["translation"][i], "target_language": batch["target_language"][i]}


def _language_references(batch: dict, i: int, labels: BatchLabels) -> dict:
    return {"reference": batch["language"][i]}


def _speaker_references(batch: dict, i: int, labels: BatchLabels) -> dict:
    attributes = {a: batch[a][i] for a in SPEAKER_ATTRIBUTES if batch.get(a) is not None}
    if not attributes:
        raise ValueError(f"the batch has no speaker attribute ({' nor '.join(SPEAKER_ATTRIBUTES)}) to score")
    return {"reference_attributes": attributes}


def _event_references(batch: dict, i: int, labels: BatchLabels) -> dict:
    return {"reference_events": [{k: _plain(v) for k, v in event.items()} for event in batch["events"][i]]}


def _qa_references(batch: dict, i: int, labels: BatchLabels) -> dict:
    types = batch.get("answer_type")
    return {"reference": batch["answer_text"][i]} | ({"answer_type": types[i]} if types is not None else {})


def _voice_control_references(batch: dict, i: int, labels: BatchLabels) -> dict:
    return {
        "control": batch["control"][i],
        "target": batch["target"][i],
        "phonemes": _plain(batch["phonemes"][i]),
    }


def _spoken_task(
    name: str, batch_references: Callable[[dict, int, BatchLabels], dict], reference_column: str | None = None
) -> TaskSpec:
    """tts and s2s differ only in where the reference comes from (the batch's text; the model's own answer)."""
    return TaskSpec(
        name,
        required=("reference",),
        scorer=spoken_report,
        settings=SPOKEN_SETTINGS,
        any_of=("output_audio_path", "hypothesis"),
        reference_column=reference_column,
        reference_field="reference" if reference_column else None,
        batch_references=batch_references,
        statistic=ERROR_RATE,
    )


def _classification_task(
    name: str,
    title: str,
    reference_column: str,
    batch_references: Callable[[dict, int, BatchLabels], dict],
    accuracy_key: str = "accuracy",
) -> TaskSpec:
    """A closed-set task (emotion, language ID): a label or text to parse one from, scored against the labels."""
    return TaskSpec(
        name,
        required=("reference",),
        scorer=partial(classification_report, accuracy_key=accuracy_key, title=title),
        settings={"labels": None, "label_map": None},
        any_of=("prediction", "prediction_text"),
        reference_column=reference_column,
        reference_field="reference",
        batch_references=batch_references,
        statistic=PairedStatistic(lambda settings: accuracy_key, _correct, lower_is_better=False),
    )


def _answer_task(name: str) -> TaskSpec:
    """A generated answer scored by exact match and token F1 against ``answer_text`` (spoken QA, dialogue)."""
    return TaskSpec(
        name,
        required=("reference", "prediction_text"),
        scorer=qa_report,
        reference_column="answer_text",
        reference_field="reference",
        batch_references=_qa_references,
        statistic=PairedStatistic(lambda settings: "exact_match", _exact_match, lower_is_better=False),
    )


TASK_SPECS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            "asr",
            required=("reference", "hypothesis"),
            scorer=asr_report,
            settings={"normalizer": "whisper_english", "unit": None, "crosscheck_torchmetrics": False},
            alternative_names={"hypothesis": "prediction"},  # MinMo.predict_step's name for the transcript
            reference_column="text",
            reference_field="reference",
            batch_references=_asr_references,
            statistic=ERROR_RATE,
        ),
        _classification_task("emotion", "emotion", "emotion", _emotion_references, accuracy_key="wa"),
        TaskSpec(
            "duplex",
            required=("reference_labels", "predicted_labels"),
            scorer=duplex_report,
            settings={
                "tolerances": [1, 5, 10],
                "tolerance_unit": "frames",
                "frame_ms": 80.0,
                "window": "symmetric",
            },
            reference_column="frame_labels",
            reference_field="reference_labels",
            batch_references=_duplex_references,
            per_frame=True,
            statistic=PairedStatistic(
                lambda settings: f"assistant_f1@{_primary_tolerance(settings):g}",
                _assistant_f1_counts,
                lower_is_better=False,
            ),
        ),
        _spoken_task("tts", _tts_references, reference_column="text"),
        _spoken_task("s2s", _s2s_references),
        TaskSpec("latency", required=("first_packet_s",), scorer=latency_report),
        TaskSpec(
            "s2tt",
            required=("reference", "hypothesis"),
            scorer=translation_report,
            settings={"tokenize": None, "target_language": None},
            alternative_names={"hypothesis": "prediction_text"},
            reference_column="translation",
            reference_field="reference",
            batch_references=_translation_references,
            statistic=None,  # corpus BLEU is not a ratio of per-record counts: compared without intervals
        ),
        _classification_task("lid", "language ID", "language", _language_references),
        TaskSpec(
            "speaker",
            required=("reference_attributes", "prediction_text"),
            scorer=attributes_report,
            settings={"attribute_labels": None},
            batch_references=_speaker_references,
            statistic=PairedStatistic(lambda settings: "joint_accuracy", _correct, lower_is_better=False),
        ),
        TaskSpec(
            "aed",
            required=("reference_events", "prediction_text"),
            scorer=events_report,
            settings={"tolerance_s": 0.2},
            reference_column="events",
            reference_field="reference_events",
            batch_references=_event_references,
            statistic=PairedStatistic(lambda settings: "event_f1", _event_f1_counts, lower_is_better=False),
        ),
        _answer_task("sqa"),
        _answer_task("dialogue"),  # the answer to a dialogue's last turn, scored as spoken QA answers are
        TaskSpec(
            "voice_control",
            required=("control", "target", "output_audio_path"),
            scorer=voice_control_report,
            settings={
                "trim_db": 40.0,
                "rate_margin": 0.05,
                "pitch_margin_st": 0.5,
                "pitch_floor_hz": 75.0,
                "pitch_ceiling_hz": 600.0,
                "emotion_judge": None,
            },
            batch_references=_voice_control_references,
            statistic=PairedStatistic(lambda settings: "moved", _moved, lower_is_better=False),
        ),
    )
}


def task_spec(task: str) -> TaskSpec:
    if task not in TASK_SPECS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASK_SPECS)}")
    return TASK_SPECS[task]


def check_records(spec: TaskSpec, records: list[dict], source: str) -> None:
    if not records:
        raise ValueError(f"{source} holds no predictions (empty file?); nothing to score")
    seen: set[str] = set()
    for line, rec in enumerate(records, 1):
        if "id" not in rec:
            raise ValueError(f"{source}: record {line} has no 'id' field")
        if rec["id"] in seen:
            raise ValueError(f"{source}: utterance id {rec['id']!r} appears twice; ids must be unique")
        seen.add(rec["id"])
        spec.check_record(rec, source)


def score(
    spec: TaskSpec, records: list[dict], settings: dict, out_dir: Path, source: str = "predictions"
) -> Scored:
    check_records(spec, records, source)
    scored = spec.scorer(records, {**spec.settings, **settings}, out_dir)
    timing = _rtf(records)
    if timing:
        scored.summary.update(rtf=timing["rtf"], rtfx=timing["rtfx"])
        scored.metrics["speed"] = timing
        scored.sections.append(
            (
                "Speed",
                md_table(
                    ["audio (s)", "processing (s)", "RTF", "RTFx"],
                    [[timing["audio_s"], timing["processing_s"], timing["rtf"], timing["rtfx"]]],
                ),
            )
        )
    return scored


def _rtf(records: list[dict]) -> dict | None:
    timed = [r for r in records if r.get("processing_s") is not None and r.get("audio_s")]
    if not timed:
        return None
    processing = float(sum(r["processing_s"] for r in timed))
    audio = float(sum(r["audio_s"] for r in timed))
    return {
        "rtf": processing / audio,
        "rtfx": audio / processing if processing else None,
        "processing_s": processing,
        "audio_s": audio,
        "timed_utterances": len(timed),
    }
