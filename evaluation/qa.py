"""Spoken question answering: normalised exact match and token F1 (SQuAD's evaluation script conventions).

A record has ``reference`` (the answer, or a list of accepted answers: the best one counts) and
``prediction_text``; optional ``answer_type`` (``span`` / ``yesno``) splits the figures. Both texts are
normalised as SQuAD does: lower case, ASCII punctuation removed, the articles a / an / the dropped, spaces
collapsed. Exact match: the normalised texts are equal. Token F1: the harmonic mean of token precision and
recall over the shared tokens (multiset); 1 when both are empty, 0 when one is. Beside them
``answer_contained``: the normalised answer appears in the normalised output as whole tokens (the accuracy
spoken-QA papers report for free-form answers).

Trivial baseline: every item answered with the most frequent reference answer of its type (for yes/no, the
majority answer; uniform guessing is 0.5).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from pathlib import Path

from minmo_lightning.evaluation.report import md_table
from minmo_lightning.evaluation.scorers import Scored, text_cell

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)
UNTYPED = "all"


def normalize_answer(text: str) -> str:
    """SQuAD's ``normalize_answer``: lower case, no punctuation, no articles, single spaces."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION)).split())


def token_f1(prediction: str, reference: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    shared = sum((Counter(pred) & Counter(ref)).values())
    if shared == 0:
        return 0.0
    precision, recall = shared / len(pred), shared / len(ref)
    return 2 * precision * recall / (precision + recall)


def contained(prediction: str, reference: str) -> bool:
    """The normalised reference occurs in the normalised prediction on token boundaries."""
    ref = normalize_answer(reference)
    return bool(ref) and f" {ref} " in f" {normalize_answer(prediction)} "


def answer_scores(prediction: str, references: str | list[str]) -> dict[str, float]:
    """EM, F1 and containment of one answer, each the best over the accepted references."""
    refs = [references] if isinstance(references, str) else list(references)
    if not refs:
        raise ValueError("a spoken-QA record needs at least one reference answer")
    return {
        "exact_match": max(float(normalize_answer(prediction) == normalize_answer(r)) for r in refs),
        "f1": max(token_f1(prediction, r) for r in refs),
        "answer_contained": max(float(contained(prediction, r)) for r in refs),
    }


def _first(references: str | list[str]) -> str:
    return references if isinstance(references, str) else references[0]


def qa_report(records: list[dict], settings: dict, out_dir: Path) -> Scored:
    out = [{**r, **answer_scores(r["prediction_text"], r["reference"])} for r in records]
    groups: dict[str, list[dict]] = {UNTYPED: out}
    for record in out:
        if record.get("answer_type"):
            groups.setdefault(str(record["answer_type"]), []).append(record)
    # the baseline answers each item with its type's most frequent (normalised) reference
    constant = {}
    for name, group in groups.items():
        if name != UNTYPED:
            counts = Counter(normalize_answer(_first(r["reference"])) for r in group)
            constant[name] = max(sorted(counts), key=counts.__getitem__)
    if not constant:
        counts = Counter(normalize_answer(_first(r["reference"])) for r in out)
        constant[UNTYPED] = max(sorted(counts), key=counts.__getitem__)
    baseline = [answer_scores(constant[str(r.get("answer_type") or UNTYPED)], r["reference"]) for r in out]
    by_id = {r["id"]: b for r, b in zip(out, baseline)}
    figures = {}
    for name, group in groups.items():
        n = len(group)
        figures[name] = {
            "n": n,
            **{k: sum(r[k] for r in group) / n for k in ("exact_match", "f1", "answer_contained")},
            "baseline_exact_match": sum(by_id[r["id"]]["exact_match"] for r in group) / n,
            "baseline_f1": sum(by_id[r["id"]]["f1"] for r in group) / n,
        }
    overall = figures[UNTYPED]
    summary = {k: overall[k] for k in ("exact_match", "f1", "answer_contained")}
    summary |= {
        "baseline_exact_match": overall["baseline_exact_match"],
        "baseline_f1": overall["baseline_f1"],
    }
    summary |= {f"exact_match_{name}": f["exact_match"] for name, f in figures.items() if name != UNTYPED}
    table = md_table(
        ["answers", "n", "exact match", "token F1", "answer contained", "baseline EM", "baseline F1"],
        [
            [
                name,
                f["n"],
                f["exact_match"],
                f["f1"],
                f["answer_contained"],
                f["baseline_exact_match"],
                f["baseline_f1"],
            ]
            for name, f in figures.items()
        ],
    )
    note = (
        "SQuAD normalisation (lower case, punctuation and articles removed). Baseline: every item answered with "
        f"the most frequent reference of its type ({', '.join(f'{k}: {v!r}' for k, v in constant.items())})"
        + ("; uniform guessing on yes/no is 0.5." if "yesno" in groups else ".")
    )
    wrong = [r for r in out if not r["exact_match"]][:10]
    sections = [("Summary", table + "\n\n" + note)]
    if wrong:
        rows = [
            [r["id"], text_cell(_first(r["reference"])), text_cell(r["prediction_text"]), r["f1"]]
            for r in wrong
        ]
        sections.append(("Wrong answers (first 10)", md_table(["id", "reference", "answer", "F1"], rows)))
    return Scored(summary, {"by_type": figures, "baseline_answers": constant}, out, sections)
