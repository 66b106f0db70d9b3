"""Closed-set classification scored from records: any task whose answer is one label of a set (language ID,
emotion, each speaker attribute).

A record has ``reference`` (a label) and ``prediction`` (a label) or ``prediction_text`` (generated text,
mapped onto the label set by ``emotion.parse_label``: the whole answer, or the one label it names). An
answer that names no label (or several) is *unparseable*: counted wrong and reported as a rate. The figures
are ``emotion.score_emotion``'s, which hold for any label set: accuracy (EmoBox's WA), UA (per-class
accuracy averaged over the reference classes), macro / weighted / micro F1, and the confusion matrix with an
unparseable column. Beside them, the chance levels: guessing uniformly (1 / classes) and always answering the
majority class (its share of the references). Records that all carry ``scored_prediction`` (the label the
model ranks first, ``MinMo.score_answers``) get the same figures again as ``closed_set_*``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from minmo_lightning.evaluation import plots
from minmo_lightning.evaluation.emotion import (
    LABEL_MAPS,
    EmotionResult,
    map_label,
    parse_label,
    score_emotion,
)
from minmo_lightning.evaluation.report import image, md_table
from minmo_lightning.evaluation.scorers import Scored

#: the figures of a label set, in the order the tables show them (``accuracy`` is renamed per task)
FIGURES = ("accuracy", "ua", "macro_f1", "weighted_f1", "micro_f1")


def chance_levels(references: Sequence[str], labels: Sequence[str]) -> dict:
    """Accuracy of uniform guessing and of always answering the most frequent reference label (ties: the
    first in ``labels``)."""
    counts = Counter(references)
    majority = max(labels, key=lambda label: counts[label])
    return {
        "uniform": 1.0 / len(labels),
        "majority": counts[majority] / len(references),
        "majority_class": majority,
    }


def label_mapper(label_map: str | Mapping[str, str] | None) -> Callable[[str], str]:
    """Raw dataset labels -> canonical ones: a dataset name of ``emotion.LABEL_MAPS`` (canonical names pass),
    a ``{raw: label}`` mapping (labels it lacks pass), or ``None`` (labels as they are)."""
    if label_map is None:
        return lambda raw: raw
    if isinstance(label_map, str):
        canonical = set(LABEL_MAPS[label_map].values()) if label_map in LABEL_MAPS else set()
        return lambda raw: raw if raw in canonical else map_label(raw, label_map)
    return lambda raw: label_map.get(raw, raw)


def label_figures(
    references: Sequence[str],
    predictions: Sequence[str | None],
    labels: Sequence[str],
    ids: Sequence[str],
) -> tuple[dict, EmotionResult]:
    """All figures of one label set (``None`` in ``predictions``: unparseable), with the chance levels
    and the unparseable rate; returns them and the confusion result (for its plot)."""
    result = score_emotion(references, predictions, labels=labels, ids=ids)
    figures = result.summary()
    figures["accuracy"] = figures.pop("wa")
    figures["unparseable_rate"] = result.n_unparseable / result.n
    figures["unparseable_ids"] = [i for i, p in zip(ids, predictions) if p is None][:50]
    figures["chance"] = chance_levels(references, labels)
    return figures, result


def figures_table(figures: dict, accuracy_name: str) -> str:
    """The headline figures beside the two chance levels."""
    chance = figures["chance"]
    return md_table(
        [
            accuracy_name,
            "UA",
            "macro-F1",
            "weighted-F1",
            "micro-F1",
            "n",
            "unparseable",
            "chance (uniform)",
            f"chance (majority: {chance['majority_class']})",
        ],
        [
            [
                *(figures[k] for k in FIGURES),
                figures["n"],
                figures["n_unparseable"],
                chance["uniform"],
                chance["majority"],
            ]
        ],
    )


def per_class_table(figures: dict) -> str:
    return md_table(
        ["class", "support", "predicted", "precision", "recall", "F1"],
        [
            [k, v["support"], v["predicted"], v["precision"], v["recall"], v["f1"]]
            for k, v in figures["per_class"].items()
        ],
    )


def classification_report(
    records: list[dict], settings: dict, out_dir: Path, accuracy_key: str = "accuracy", title: str = "label"
) -> Scored:
    """Settings: ``labels`` (the class set and order; default the sorted reference labels) and ``label_map``
    (see ``label_mapper``). ``accuracy_key`` names the accuracy in the summary (emotion: ``wa``)."""
    to_label = label_mapper(settings.get("label_map"))
    refs = [to_label(r["reference"]) for r in records]
    labels = settings.get("labels") or sorted(set(refs))
    preds = [
        to_label(r["prediction"])
        if r.get("prediction") is not None
        else parse_label(r.get("prediction_text") or "", labels)
        for r in records
    ]
    ids = [r["id"] for r in records]
    figures, result = label_figures(refs, preds, labels, ids)
    out = [
        {**r, "reference_label": ref, "predicted_label": pred, "correct": ref == pred}
        for r, ref, pred in zip(records, refs, preds)
    ]
    name = "WA" if accuracy_key == "wa" else "accuracy"
    png = plots.confusion_png(
        labels, result.confusion, out_dir / "confusion.png", f"{title} confusion matrix"
    )
    sections = [
        (
            "Summary",
            figures_table(figures, name)
            + f"\n\n{name} = correct / all; UA = per-class accuracy averaged over "
            "the reference classes; unparseable answers count as wrong. Chance: uniform guessing, and always "
            "answering the majority class.",
        ),
        ("Per class", per_class_table(figures)),
        ("Confusion matrix", image(png, "confusion matrix")),
    ]
    flat = {accuracy_key if k == "accuracy" else k: figures[k] for k in FIGURES}
    flat |= {
        "unparseable_rate": figures["unparseable_rate"],
        "chance_uniform": figures["chance"]["uniform"],
        "chance_majority": figures["chance"]["majority"],
    }
    scored = [r.get("scored_prediction") for r in records]
    if all(label is not None for label in scored):
        closed, _ = label_figures(refs, [to_label(x) for x in scored], labels, ids)
        closed_flat = {accuracy_key if k == "accuracy" else k: closed[k] for k in FIGURES}
        figures["closed_set"] = closed_flat
        flat |= {f"closed_set_{k}": v for k, v in closed_flat.items()}
        sections.insert(
            1,
            (
                "Closed set (label scoring)",
                md_table([name, "UA", "macro-F1", "weighted-F1", "micro-F1"], [list(closed_flat.values())])
                + "\n\nThe label the model gives the highest log-probability (answer tokens and end of turn) "
                "after the same prompt: what it tells apart, whether or not it spells the answer.",
            ),
        )
    metrics = {accuracy_key if k == "accuracy" else k: v for k, v in figures.items()}
    return Scored(flat, metrics, out, sections)
