"""MinMo-style frame-level full-duplex metrics: turn-taking F1 within an offset K, offsets, latency.

The duplex predictor emits one decision per frame, classes ``DuplexPredictor.CLASSES``:
0 ``keep_listening``, 1 ``respond`` (assistant turn-taking: the user finished, start talking),
2 ``stop_speaking`` (user turn-taking / barge-in: stop and listen). An *event* is the onset of a run of
class 1 or 2 (the first frame of the run), in the reference labels and in the predicted decisions.

Our definition (MinMo's paper gives no code and does not say what unit K is in; see eval.md 1.4):

- Matching is one-to-one and greedy in time order: a reference event r takes the earliest unmatched
  prediction p with ``-K <= p - r <= K`` (``window="symmetric"``, default) or ``0 <= p - r <= K``
  (``window="after"``: a prediction only counts at or after the gold boundary). Both bounds inclusive.
- TP = matches, FP = predictions - TP, FN = references - TP; positive F1 = 2TP / (2TP + FP + FN).
  Precision/recall are 0.0 when their denominator is 0 and there is something to miss, F1 is None
  only when there are neither reference nor predicted events.
- K is given in ``frames`` or ``ms`` (converted with ``frame_ms``; a tolerance that is not a whole number
  of frames is kept fractional, so 100 ms at 80 ms frames allows offsets of 1 frame, not 2).
- Offset = p - r over matches at the primary K; reported signed and absolute, in frames and ms.
  Average response latency (assistant turn-taking) = mean signed offset in ms (positive = late).
- Back-channel accuracy: a reference user back-channel [s, e] (frames, during assistant speech) is
  handled correctly when no ``stop_speaking`` event is predicted in [s, e + K]. None when there are none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

RESPOND, STOP = 1, 2
EVENT_KINDS = {"assistant_turn_taking": RESPOND, "user_turn_taking": STOP}


def onsets(labels: Sequence[int] | np.ndarray, cls: int) -> np.ndarray:
    """Frames where a run of ``cls`` starts (vectorised; padding values such as -100 never match)."""
    is_cls = np.asarray(labels) == cls
    start = is_cls.copy()
    start[1:] &= ~is_cls[:-1]
    return np.flatnonzero(start)


def tolerance_frames(tolerance: float, unit: str, frame_ms: float) -> float:
    if unit == "frames":
        return float(tolerance)
    if unit == "ms":
        return float(tolerance) / frame_ms
    raise ValueError(f"tolerance unit must be 'frames' or 'ms', got {unit!r}")


def match_events(
    reference: Sequence[int], predicted: Sequence[int], k: float, window: str = "symmetric"
) -> list[tuple[int, int]]:
    """Greedy one-to-one matching in time order; returns (reference, prediction) frame pairs."""
    if window not in ("symmetric", "after"):
        raise ValueError(f"window must be 'symmetric' or 'after', got {window!r}")
    low = 0.0 if window == "after" else -k
    ref, pred = sorted(int(r) for r in reference), sorted(int(p) for p in predicted)
    pairs, j = [], 0
    for r in ref:
        while j < len(pred) and pred[j] - r < low:
            j += 1
        if j < len(pred) and pred[j] - r <= k:
            pairs.append((r, pred[j]))
            j += 1
    return pairs


@dataclass
class EventScore:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    offsets: list[int] = field(default_factory=list)

    def add(self, reference: Sequence[int], predicted: Sequence[int], k: float, window: str) -> None:
        pairs = match_events(reference, predicted, k, window)
        self.tp += len(pairs)
        self.fp += len(predicted) - len(pairs)
        self.fn += len(reference) - len(pairs)
        self.offsets += [p - r for r, p in pairs]

    def summary(self) -> dict:
        tp, fp, fn = self.tp, self.fp, self.fn
        return {
            "precision": tp / (tp + fp) if tp + fp else (0.0 if fn else None),
            "recall": tp / (tp + fn) if tp + fn else (0.0 if fp else None),
            "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None,
            "tp": tp,
            "fp": fp,
            "fn": fn,
        }


@dataclass
class DuplexRecord:
    """One dialogue: frame labels (reference, predicted), reference back-channels and mid-turn pauses in
    frames (first, last)."""

    id: str
    reference: np.ndarray
    predicted: np.ndarray
    backchannels: list[tuple[int, int]] = field(default_factory=list)
    pauses: list[tuple[int, int]] = field(default_factory=list)
    pause_kinds: list[str] = field(default_factory=list)
    """Per pause, its kind (``timeline.PAUSE_KINDS``) where the data says; empty where it does not."""

    def __post_init__(self) -> None:
        self.reference, self.predicted = np.asarray(self.reference), np.asarray(self.predicted)
        if self.reference.shape != self.predicted.shape:
            raise ValueError(
                f"dialogue {self.id!r}: {len(self.reference)} reference frames but {len(self.predicted)} "
                "predicted frames; the predictor must emit one decision per reference frame"
            )


def score_duplex(
    records: Sequence[DuplexRecord],
    tolerances: Sequence[float] = (1, 5, 10),
    unit: str = "frames",
    frame_ms: float = 80.0,
    window: str = "symmetric",
) -> dict:
    """F1@K for each tolerance, offsets and latency at the largest tolerance, back-channel accuracy."""
    if not records:
        raise ValueError("no dialogues to score")
    ks = {t: tolerance_frames(t, unit, frame_ms) for t in tolerances}
    primary = max(tolerances)
    out: dict = {"tolerance_unit": unit, "frame_ms": frame_ms, "window": window, "primary_tolerance": primary}
    for kind, cls in EVENT_KINDS.items():
        scores = {t: EventScore() for t in tolerances}
        for rec in records:
            ref, pred = onsets(rec.reference, cls), onsets(rec.predicted, cls)
            for t, score in scores.items():
                score.add(ref, pred, ks[t], window)
        offsets = np.asarray(scores[primary].offsets, dtype=float)
        out[kind] = {
            "at_k": {str(t): s.summary() for t, s in scores.items()},
            "n_reference_events": scores[primary].tp + scores[primary].fn,
            "n_predicted_events": scores[primary].tp + scores[primary].fp,
            "mean_offset_frames": float(offsets.mean()) if offsets.size else None,
            "mean_abs_offset_frames": float(np.abs(offsets).mean()) if offsets.size else None,
            "mean_offset_ms": float(offsets.mean() * frame_ms) if offsets.size else None,
            "median_offset_ms": float(np.median(offsets) * frame_ms) if offsets.size else None,
            "offsets_frames": offsets.astype(int).tolist(),
        }
    out["response_latency_ms"] = out["assistant_turn_taking"]["mean_offset_ms"]
    out["backchannel"] = backchannel_accuracy(records, ks[primary])
    out["pause"] = pause_takeover(records)
    return out


def pause_takeover(records: Sequence[DuplexRecord]) -> dict:
    """The share of mid-turn pauses in which the model decides ``respond`` (a frame-level pause TOR; the
    user has not finished, so every one is wrong), overall and per pause kind where the records name it."""
    hits: dict[str, list[int]] = {}
    for rec in records:
        responds = onsets(rec.predicted, RESPOND)
        kinds = rec.pause_kinds or [""] * len(rec.pauses)
        for (start, end), kind in zip(rec.pauses, kinds, strict=True):
            hits.setdefault(kind, []).append(int(np.any((responds >= start) & (responds <= end))))
    every = [hit for kind_hits in hits.values() for hit in kind_hits]
    by_kind = {kind: _share(kind_hits) for kind, kind_hits in sorted(hits.items()) if kind}
    return {**_share(every), "by_kind": by_kind}


def _share(hits: list[int]) -> dict:
    return {"rate": sum(hits) / len(hits) if hits else None, "taken": sum(hits), "n": len(hits)}


def backchannel_accuracy(records: Sequence[DuplexRecord], k: float) -> dict:
    correct = total = 0
    for rec in records:
        stops = onsets(rec.predicted, STOP)
        for start, end in rec.backchannels:
            total += 1
            correct += not np.any((stops >= start) & (stops <= end + k))
    return {"accuracy": correct / total if total else None, "correct": correct, "n": total}
