"""Audio event detection read from generated answers: event F1 with an onset tolerance.

A record has ``reference_events`` (``[{label, onset, offset}, ...]``, seconds) and ``prediction_text`` (the
answer in ``answers.render_events``' format, read back by ``answers.parse_events``: ``"tone at 0.5 s;
click at 1.2 s"`` or ``"none"``). Each event is a segment identified by its label and onset (the answer
format carries no offset): a predicted event matches a reference event of the same label (case-insensitive)
whose onset is within ``tolerance_s`` of it, boundary included (DCASE's event-based metric, onset only,
collar = tolerance); matching is one-to-one, in time order per label, which pairs the most events a
tolerance allows. Precision, recall and F1 sum true / false positives and misses over the corpus (micro);
per-label F1 beside them. Items without events score "detected none": the answer is exactly ``none``. An
answer that is neither ``none`` nor any event is unparseable: it predicts nothing and is counted (ids kept).

Trivial baselines beside the figures: answering ``none`` everywhere (F1 0, every event-free item right) and
the prior (every item gets the most frequent label at that label's median reference onset).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

from minmo_lightning.evaluation.report import md_table
from minmo_lightning.evaluation.scorers import Scored

from minmo_lightning.answers import NO_EVENTS, parse_events

#: float slack so a tolerance boundary (0.7 - 0.5 vs 0.2) counts as inside
EPSILON = 1e-9


@dataclass
class EventCounts:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __iadd__(self, other: EventCounts) -> EventCounts:
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        return self

    def figures(self) -> dict[str, float | int | None]:
        predicted, reference = self.tp + self.fp, self.tp + self.fn
        return {
            "precision": self.tp / predicted if predicted else None,
            "recall": self.tp / reference if reference else None,
            "f1": 2 * self.tp / (predicted + reference) if predicted + reference else None,
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
        }


def match_events(
    reference: Sequence[Mapping[str, Any]], predicted: Sequence[Mapping[str, Any]], tolerance_s: float
) -> dict[str, EventCounts]:
    """Label -> counts of one recording. Per label, onsets are paired in time order: a prediction earlier than
    the next reference's window is a false positive, a reference it has passed is a miss."""
    labels = {str(e["label"]).lower() for e in [*reference, *predicted]}
    out = {}
    for label in sorted(labels):
        refs = sorted(float(e["onset"]) for e in reference if str(e["label"]).lower() == label)
        preds = sorted(float(e["onset"]) for e in predicted if str(e["label"]).lower() == label)
        counts, i, j = EventCounts(), 0, 0
        while i < len(refs) and j < len(preds):
            if preds[j] < refs[i] - tolerance_s - EPSILON:
                counts.fp, j = counts.fp + 1, j + 1
            elif preds[j] > refs[i] + tolerance_s + EPSILON:
                counts.fn, i = counts.fn + 1, i + 1
            else:
                counts.tp, i, j = counts.tp + 1, i + 1, j + 1
        counts.fp += len(preds) - j
        counts.fn += len(refs) - i
        out[label] = counts
    return out


def said_none(text: str) -> bool:
    return re.sub(r"[^\w\s]", " ", text.lower()).split() == [NO_EVENTS]


def record_counts(record: dict, tolerance_s: float) -> EventCounts:
    """The counts of one scored record (its ``predicted_events``), summed over labels."""
    total = EventCounts()
    for counts in match_events(record["reference_events"], record["predicted_events"], tolerance_s).values():
        total += counts
    return total


def prior_answer(records: list[dict]) -> list[dict]:
    """The most frequent reference label at its median onset (``[]`` when no record has an event)."""
    onsets: dict[str, list[float]] = {}
    for record in records:
        for event in record["reference_events"]:
            onsets.setdefault(str(event["label"]).lower(), []).append(float(event["onset"]))
    if not onsets:
        return []
    label = max(sorted(onsets), key=lambda k: len(onsets[k]))
    return [{"label": label, "onset": median(onsets[label])}]


def corpus_figures(
    records: list[dict], predicted: list[list[dict]], answered_none: list[bool], tolerance_s: float
) -> dict:
    """Micro P/R/F1, per-label F1 and "detected none" accuracy (on event-free items, the share answered
    ``none``) of one set of answers."""
    total, per_label = EventCounts(), {}
    for record, events in zip(records, predicted):
        for label, counts in match_events(record["reference_events"], events, tolerance_s).items():
            per_label.setdefault(label, EventCounts())
            per_label[label] += counts
            total += counts
    empty = [k for k, r in enumerate(records) if not r["reference_events"]]
    return {
        **total.figures(),
        "per_label": {k: v.figures() for k, v in sorted(per_label.items())},
        "event_free_items": len(empty),
        "none_accuracy": sum(answered_none[k] for k in empty) / len(empty) if empty else None,
    }


def events_report(records: list[dict], settings: dict, out_dir: Path) -> Scored:
    """Settings: ``tolerance_s`` (onset tolerance in seconds)."""
    tolerance = float(settings["tolerance_s"])
    out, predicted, answered_none = [], [], []
    for record in records:
        text = record.get("prediction_text") or ""
        events = parse_events(text)
        predicted.append(events)
        answered_none.append(said_none(text))
        scored = {**record, "predicted_events": events}
        counts = record_counts(scored, tolerance)
        out.append({**scored, "tp": counts.tp, "fp": counts.fp, "fn": counts.fn})
    unparseable = [
        r["id"] for r, events, none in zip(records, predicted, answered_none) if not (events or none)
    ]
    model = corpus_figures(records, predicted, answered_none, tolerance)
    always_none = corpus_figures(records, [[] for _ in records], [True] * len(records), tolerance)
    prior_events = prior_answer(records)
    prior = corpus_figures(
        records, [prior_events] * len(records), [not prior_events] * len(records), tolerance
    )
    summary = {
        "event_f1": model["f1"],
        "event_precision": model["precision"],
        "event_recall": model["recall"],
        "none_accuracy": model["none_accuracy"],
        "unparseable_rate": len(unparseable) / len(records),
        "prior_event_f1": prior["f1"],
    }
    metrics = {
        **model,
        "tolerance_s": tolerance,
        "unparseable": len(unparseable),
        "unparseable_ids": unparseable[:50],
        "baselines": {"always_none": always_none, "prior": {**prior, "answer": prior_events}},
    }
    rows = [
        [name, f["f1"], f["precision"], f["recall"], f["none_accuracy"]]
        for name, f in (("model", model), ("always 'none'", always_none), ("prior", prior))
    ]
    labels = sorted(set(model["per_label"]) | set(prior["per_label"]))
    support = Counter(str(e["label"]).lower() for r in records for e in r["reference_events"])
    sections = [
        (
            "Summary",
            md_table(["answers", "event F1", "precision", "recall", "detected none"], rows)
            + f"\n\nEvents match by label and onset within {tolerance:g} s (one-to-one); micro-averaged over "
            f"{sum(support.values())} reference events in {len(records)} items, {model['event_free_items']} of them "
            f"event-free. "
            f"Unparseable answers: {len(unparseable)}. Baselines: 'none' everywhere, and the prior (the most "
            "frequent label at its median onset, everywhere).",
        ),
        (
            "Per label",
            md_table(
                ["label", "reference events", "F1", "precision", "recall", "prior F1"],
                [
                    [
                        label,
                        support[label],
                        model["per_label"].get(label, {}).get("f1"),
                        model["per_label"].get(label, {}).get("precision"),
                        model["per_label"].get(label, {}).get("recall"),
                        prior["per_label"].get(label, {}).get("f1"),
                    ]
                    for label in labels
                ],
            ),
        ),
    ]
    return Scored(summary, metrics, out, sections)
