"""Speaker attributes read from one generated answer: per-attribute accuracy and the all-correct rate.

A record has ``reference_attributes`` (``{attribute: label}``, e.g. ``{"gender": "female", "age": "adult"}``)
and ``prediction_text`` (``answers.render_attributes``' format, ``"female, adult"``). Each attribute's label
is read with ``answers.parse_attribute`` against that attribute's label set: the ``attribute_labels``
setting (``{attribute: [labels]}``), else the union of the records' own ``attribute_labels``, else the sorted
reference labels. Per attribute: the figures of ``classification.label_figures`` (accuracy, UA, confusion,
unparseable rate, chance levels). Joint: the share of records with every attribute right (with gender and
age: both correct), beside its chance levels: uniform guessing (the product of 1 / classes) and the constant
answer of each attribute's majority class.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from minmo_lightning.evaluation import plots
from minmo_lightning.evaluation.classification import figures_table, label_figures
from minmo_lightning.evaluation.report import image, md_table
from minmo_lightning.evaluation.scorers import Scored

from minmo_lightning.answers import parse_attribute


def attribute_names(records: list[dict]) -> list[str]:
    """The attributes every record names (in the first record's order); a record missing one is an error."""
    names = list(records[0]["reference_attributes"])
    for record in records:
        missing = [a for a in names if a not in record["reference_attributes"]]
        if missing or len(record["reference_attributes"]) != len(names):
            raise ValueError(
                f"record {record['id']!r} has attributes {sorted(record['reference_attributes'])}, the first "
                f"record {names}; every record must name the same speaker attributes"
            )
    return names


def label_set(attribute: str, records: list[dict], settings: dict) -> list[str]:
    given = (settings.get("attribute_labels") or {}).get(attribute)
    if given:
        return list(given)
    own = {label for r in records for label in (r.get("attribute_labels") or {}).get(attribute, [])}
    return sorted(own or {r["reference_attributes"][attribute] for r in records})


def joint_chance(records: list[dict], labels: dict[str, Sequence[str]], majority: dict[str, str]) -> dict:
    uniform = 1.0
    for values in labels.values():
        uniform /= len(values)
    constant = sum(all(r["reference_attributes"][a] == majority[a] for a in labels) for r in records) / len(
        records
    )
    return {"uniform": uniform, "majority": constant}


def attributes_report(records: list[dict], settings: dict, out_dir: Path) -> Scored:
    """Settings: ``attribute_labels`` (``{attribute: [labels]}``; ``None``: from the records)."""
    names = attribute_names(records)
    ids = [r["id"] for r in records]
    labels = {a: label_set(a, records, settings) for a in names}
    predicted = {
        a: [parse_attribute(r.get("prediction_text") or "", labels[a]) for r in records] for a in names
    }
    figures, sections, summary = {}, [], {}
    for a in names:
        refs = [r["reference_attributes"][a] for r in records]
        figures[a], result = label_figures(refs, predicted[a], labels[a], ids)
        png = plots.confusion_png(
            labels[a], result.confusion, out_dir / f"confusion_{a}.png", f"{a} confusion"
        )
        sections.append((a, figures_table(figures[a], "accuracy") + "\n\n" + image(png, f"{a} confusion")))
        summary |= {
            f"{a}_accuracy": figures[a]["accuracy"],
            f"{a}_ua": figures[a]["ua"],
            f"{a}_unparseable_rate": figures[a]["unparseable_rate"],
            f"{a}_chance_uniform": figures[a]["chance"]["uniform"],
            f"{a}_chance_majority": figures[a]["chance"]["majority"],
        }
    out = []
    for k, record in enumerate(records):
        guesses = {a: predicted[a][k] for a in names}
        right = {a: guesses[a] == record["reference_attributes"][a] for a in names}
        out.append(
            {
                **record,
                "predicted_attributes": guesses,
                "attribute_correct": right,
                "correct": all(right.values()),
            }
        )
    joint = sum(r["correct"] for r in out) / len(out)
    chance = joint_chance(records, labels, {a: figures[a]["chance"]["majority_class"] for a in names})
    summary |= {
        "joint_accuracy": joint,
        "joint_chance_uniform": chance["uniform"],
        "joint_chance_majority": chance["majority"],
    }
    headline = md_table(
        ["attribute", "accuracy", "UA", "unparseable", "chance (uniform)", "chance (majority)"],
        [
            [
                a,
                f["accuracy"],
                f["ua"],
                f["unparseable_rate"],
                f["chance"]["uniform"],
                f["chance"]["majority"],
            ]
            for a, f in figures.items()
        ]
        + [["all correct", joint, None, None, chance["uniform"], chance["majority"]]],
    )
    sections.insert(
        0,
        (
            "Summary",
            headline
            + "\n\nEach attribute read from the one answer (answers.parse_attribute); an answer naming "
            "no label of an attribute (or several) is wrong for it. All correct: every attribute right.",
        ),
    )
    return Scored(summary, {**summary, "attributes": figures}, out, sections)
