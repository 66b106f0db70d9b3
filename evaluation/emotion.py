"""Speech emotion recognition metrics (EmoBox conventions) and per-dataset label mappings.

- WA (weighted accuracy) = correct / N; equals micro-F1 for single-label multiclass.
- UA (unweighted accuracy) = mean per-class recall over the classes present in the references
  (sklearn ``balanced_accuracy_score``).
- macro-F1 = unweighted mean of per-class F1; weighted-F1 = per-class F1 weighted by support. Both
  average over the classes that occur in the references or the predictions (sklearn's default).
- Generated text is mapped to a label by ``parse_label`` (lower-case, strip punctuation, synonyms).
  An output that maps to no label is *unparseable*: counted wrong (a miss for its true class, a
  prediction of no class), shown as its own confusion-matrix column and reported as a count.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

UNPARSEABLE = "<unparseable>"

#: raw dataset label -> canonical label (EmoBox ``data/<dataset>/label_map.json`` conventions).
LABEL_MAPS: dict[str, dict[str, str]] = {
    "iemocap": {  # 4-class: codes, and full words as some copies spell them
        "neu": "neutral",
        "hap": "happy",
        "exc": "happy",
        "ang": "angry",
        "sad": "sad",
        "neutral": "neutral",
        "happy": "happy",
        "excited": "happy",
        "angry": "angry",
    },
    "meld": {
        "neutral": "neutral",
        "joy": "happy",
        "sadness": "sad",
        "anger": "angry",
        "surprise": "surprise",
        "disgust": "disgust",
        "fear": "fear",
    },
    "crema-d": {  # file-name codes, and the full words of the AbstractTTS/CREMA-D ``major_emotion`` column
        **{w: w for w in ("angry", "disgust", "fear", "happy", "neutral", "sad")},
        "ang": "angry",
        "dis": "disgust",
        "fea": "fear",
        "hap": "happy",
        "neu": "neutral",
        "sad": "sad",
    },
    "ravdess": {
        "angry": "angry",
        "surprised": "surprise",
        "sad": "sad",
        "disgust": "disgust",
        "happy": "happy",
        "calm": "calm",
        "neutral": "neutral",
        "fearful": "fear",
    },
    "esd": {"neutral": "neutral", "angry": "angry", "happy": "happy", "sad": "sad", "surprise": "surprise"},
    "casia": {
        "neutral": "neutral",
        "angry": "angry",
        "surprise": "surprise",
        "sad": "sad",
        "happy": "happy",
        "fear": "fear",
    },
    "msp-podcast": {
        "n": "neutral",
        "h": "happy",
        "a": "angry",
        "s": "sad",
        "u": "surprise",
        "f": "fear",
        "d": "disgust",
        "c": "contempt",
    },
}
#: generated-text synonyms -> canonical label, tried after an exact label match.
SYNONYMS: dict[str, str] = {
    "neu": "neutral",
    "happiness": "happy",
    "joy": "happy",
    "joyful": "happy",
    "excited": "happy",
    "excitement": "happy",
    "hap": "happy",
    "anger": "angry",
    "mad": "angry",
    "ang": "angry",
    "sadness": "sad",
    "fearful": "fear",
    "afraid": "fear",
    "scared": "fear",
    "disgusted": "disgust",
    "surprised": "surprise",
}


def map_label(raw: str, dataset: str) -> str:
    """A dataset's raw label -> canonical label, e.g. IEMOCAP ``exc`` -> ``happy``."""
    if dataset not in LABEL_MAPS:
        raise ValueError(f"no label map for dataset {dataset!r}; known: {', '.join(LABEL_MAPS)}")
    mapping = LABEL_MAPS[dataset]
    key = raw.strip().lower()
    if key not in mapping:
        raise ValueError(
            f"label {raw!r} is not in the {dataset} label map ({', '.join(mapping)}); "
            "EmoBox drops classes outside the map (e.g. IEMOCAP 'fru', 'xxx'): filter those rows first"
        )
    return mapping[key]


def parse_label(text: str, labels: Sequence[str]) -> str | None:
    """Model output text -> a label in ``labels``, or None when it names none (or several)."""
    cleaned = re.sub(r"[^\w\s]", " ", text.lower()).split()
    if not cleaned:
        return None
    label_set = {label.lower(): label for label in labels}
    joined = " ".join(cleaned)
    if joined in label_set:
        return label_set[joined]
    found = {label_set[w] for w in cleaned if w in label_set}
    found |= {label_set[SYNONYMS[w]] for w in cleaned if w in SYNONYMS and SYNONYMS[w] in label_set}
    return found.pop() if len(found) == 1 else None


@dataclass
class EmotionResult:
    labels: list[str]
    confusion: np.ndarray  # [C, C + 1]: rows reference, columns prediction (+ unparseable)
    n_unparseable: int

    @property
    def n(self) -> int:
        return int(self.confusion.sum())

    def per_class(self) -> dict[str, dict[str, float | int | None]]:
        cm = self.confusion
        out = {}
        for k, label in enumerate(self.labels):
            tp, support, predicted = int(cm[k, k]), int(cm[k].sum()), int(cm[:, k].sum())
            precision = tp / predicted if predicted else 0.0
            recall = tp / support if support else None
            f1 = 2 * tp / (support + predicted) if support + predicted else 0.0
            out[label] = {
                "support": support,
                "predicted": predicted,
                "precision": precision,
                "recall": recall,
                "f1": f1,
            }
        return out

    def summary(self) -> dict:
        per_class = self.per_class()
        present = [c for c in per_class.values() if c["support"] or c["predicted"]]
        with_support = [c for c in per_class.values() if c["support"]]
        correct = int(np.trace(self.confusion[:, : len(self.labels)]))
        total_support = sum(c["support"] for c in with_support)
        return {
            "wa": correct / self.n,
            "ua": float(np.mean([c["recall"] for c in with_support])),
            "macro_f1": float(np.mean([c["f1"] for c in present])),
            # micro P = correct / parseable predictions, micro R = correct / N (= WA when all parse)
            "micro_f1": 2 * correct / (2 * self.n - self.n_unparseable),
            "weighted_f1": sum(c["f1"] * c["support"] for c in with_support) / total_support,
            "n": self.n,
            "n_unparseable": self.n_unparseable,
            "labels": self.labels,
            "per_class": per_class,
            "confusion": self.confusion.tolist(),
        }


def score_emotion(
    references: Sequence[str],
    predictions: Sequence[str | None],
    labels: Sequence[str] | None = None,
    ids: Sequence[str] | None = None,
) -> EmotionResult:
    """Confusion matrix and EmoBox metrics. ``None`` in ``predictions`` means unparseable output.

    ``labels`` fixes the class set and order (default: sorted reference labels). A reference or a
    prediction outside that set is an error that names the offending labels: the two label sets must
    agree (map raw labels with ``map_label`` / ``parse_label`` first).
    """
    if len(references) != len(predictions):
        raise ValueError(f"got {len(references)} references but {len(predictions)} predictions")
    if not references:
        raise ValueError("no utterances to score: the reference list is empty")
    ids = [str(i) for i in range(len(references))] if ids is None else list(ids)
    labels = sorted(set(references)) if labels is None else list(labels)
    index = {label: k for k, label in enumerate(labels)}
    for name, values in (("references", references), ("predictions", predictions)):
        unknown = sorted({v for v in values if v is not None and v not in index})
        if unknown:
            where = [i for i, v in zip(ids, values) if v in unknown][:5]
            raise ValueError(
                f"label sets differ: {name} contain {unknown} (e.g. utterances {where}) which are not in the "
                f"label set {labels}; map them onto the canonical labels (evaluation.emotion.map_label / "
                "parse_label) or pass the full label set"
            )
    cm = np.zeros((len(labels), len(labels) + 1), dtype=np.int64)
    n_unparseable = 0
    for ref, pred in zip(references, predictions):
        if pred is None:
            n_unparseable += 1
            cm[index[ref], len(labels)] += 1
        else:
            cm[index[ref], index[pred]] += 1
    return EmotionResult(labels, cm, n_unparseable)
