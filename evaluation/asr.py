"""Corpus-level WER / CER / MER through jiwer, with the S/D/I breakdown and per-utterance alignments.

Rates are computed from summed counts, (S + D + I) / (H + S + D), never as a mean of per-utterance
rates. Normalisation (``normalizers.py``) runs first, on references and hypotheses alike.

Empty-input conventions (documented because jiwer 4 and torchmetrics disagree: jiwer returns the raw
insertion count when the corpus reference is empty, torchmetrics returns inf or nan):

- An utterance whose *normalised reference* is empty has no defined rate. It is excluded from the
  corpus totals, as the Open ASR Leaderboard does, and counted in ``skipped_empty_reference`` (ids
  listed) with its insertions in ``insertions_on_empty_references``; nothing is dropped silently.
- An empty hypothesis against a non-empty reference is all deletions (rate 1.0 for that utterance).
- A corpus with no scorable utterance has ``rate = None`` (JSON null), never NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import NamedTuple

import jiwer
from minmo_lightning.evaluation.normalizers import TextScheme, get_scheme, metric_name

_OP = {"equal": "=", "substitute": "S", "delete": "D", "insert": "I"}


@dataclass
class ErrorCounts:
    hits: int = 0
    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0

    @property
    def reference_tokens(self) -> int:
        return self.hits + self.substitutions + self.deletions

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def rate(self) -> float | None:
        return self.errors / self.reference_tokens if self.reference_tokens else None

    def __iadd__(self, other: ErrorCounts) -> ErrorCounts:
        self.hits += other.hits
        self.substitutions += other.substitutions
        self.deletions += other.deletions
        self.insertions += other.insertions
        return self


@dataclass
class UtteranceScore:
    id: str
    reference: str
    hypothesis: str
    reference_normalized: str
    hypothesis_normalized: str
    chunks: (
        list  # jiwer AlignmentChunks; counts and alignment lists derive lazily (100k of them cost seconds)
    )

    @cached_property
    def counts(self) -> ErrorCounts:
        return _count(self.chunks)

    @property
    def alignment(self) -> list[list]:
        """One ``[op, ref_start, ref_end, hyp_start, hyp_end]`` per chunk; op in ``= S D I``."""
        return [
            [_OP[c.type], c.ref_start_idx, c.ref_end_idx, c.hyp_start_idx, c.hyp_end_idx] for c in self.chunks
        ]

    def to_record(self) -> dict:
        return {
            "id": self.id,
            "reference": self.reference,
            "hypothesis": self.hypothesis,
            "reference_normalized": self.reference_normalized,
            "hypothesis_normalized": self.hypothesis_normalized,
            "hits": self.counts.hits,
            "substitutions": self.counts.substitutions,
            "deletions": self.counts.deletions,
            "insertions": self.counts.insertions,
            "rate": self.counts.rate,
            "alignment": self.alignment,
        }


@dataclass
class AsrResult:
    metric: str  # "wer" | "cer" | "mer"
    normalizer: str
    unit: str
    counts: ErrorCounts
    utterances: list[UtteranceScore]
    skipped_empty_reference: list[str] = field(default_factory=list)
    insertions_on_empty_references: int = 0

    @property
    def rate(self) -> float | None:
        return self.counts.rate

    def summary(self) -> dict:
        c = self.counts
        n = c.reference_tokens
        return {
            self.metric: self.rate,
            "substitution_rate": c.substitutions / n if n else None,
            "deletion_rate": c.deletions / n if n else None,
            "insertion_rate": c.insertions / n if n else None,
            "hits": c.hits,
            "substitutions": c.substitutions,
            "deletions": c.deletions,
            "insertions": c.insertions,
            "reference_tokens": n,
            "utterances": len(self.utterances),
            "scored_utterances": len(self.utterances) - len(self.skipped_empty_reference),
            "skipped_empty_reference": len(self.skipped_empty_reference),
            "skipped_empty_reference_ids": self.skipped_empty_reference[:50],
            "insertions_on_empty_references": self.insertions_on_empty_references,
            "empty_hypotheses": sum(1 for u in self.utterances if not u.hypothesis_normalized),
            "normalizer": self.normalizer,
            "unit": self.unit,
        }


class _Given:
    """A jiwer transform that hands back token lists we already made (so nothing is split twice)."""

    def __init__(self, tokens: list[list[str]]):
        self.tokens = tokens

    def __call__(self, sentences: list[str]) -> list[list[str]]:
        assert len(sentences) == len(self.tokens)
        return self.tokens


class _Chunk(NamedTuple):
    """Same fields as jiwer's ``AlignmentChunk`` (for exact matches, which skip jiwer)."""

    type: str
    ref_start_idx: int
    ref_end_idx: int
    hyp_start_idx: int
    hyp_end_idx: int


def _count(chunks: list) -> ErrorCounts:
    """H/S/D/I of one utterance from its jiwer alignment chunks."""
    spans = {"equal": 0, "substitute": 0, "delete": 0, "insert": 0}
    for c in chunks:
        kind = c.type
        spans[kind] += (
            (c.hyp_end_idx - c.hyp_start_idx) if kind == "insert" else (c.ref_end_idx - c.ref_start_idx)
        )
    return ErrorCounts(spans["equal"], spans["substitute"], spans["delete"], spans["insert"])


def score_asr(
    references: Sequence[str],
    hypotheses: Sequence[str],
    ids: Sequence[str] | None = None,
    scheme: TextScheme | None = None,
) -> AsrResult:
    """Align every pair with jiwer and sum the counts over the corpus."""
    scheme = scheme or get_scheme()
    if len(references) != len(hypotheses):
        raise ValueError(
            f"got {len(references)} references but {len(hypotheses)} hypotheses; pair them by utterance id first"
        )
    ids = [str(i) for i in range(len(references))] if ids is None else [str(i) for i in ids]
    for name, texts in (("reference", references), ("hypothesis", hypotheses)):
        bad = next((i for i, t in zip(ids, texts) if not isinstance(t, str)), None)
        if bad is not None:
            raise TypeError(f"{name} of utterance {bad!r} is not a string; write '' for an empty {name}")
    ref_norm = [scheme.normalize(t) for t in references]
    hyp_norm = [scheme.normalize(t) for t in hypotheses]
    split = list if scheme.unit == "char" else str.split
    ref_tokens = [split(t) for t in ref_norm]
    # exact matches need no alignment (often most of a good system's output): one "equal" chunk each
    differ = [k for k, (r, h) in enumerate(zip(ref_norm, hyp_norm)) if r != h]
    chunks_of: dict[int, list] = {}
    total = ErrorCounts()
    if differ:
        refs, hyps = [ref_tokens[k] for k in differ], [split(hyp_norm[k]) for k in differ]
        out = jiwer.process_words(
            [ref_norm[k] for k in differ],
            [hyp_norm[k] for k in differ],
            reference_transform=_Given(refs),
            hypothesis_transform=_Given(hyps),
        )
        chunks_of = dict(zip(differ, out.alignments))
        total = ErrorCounts(out.hits, out.substitutions, out.deletions, out.insertions)
    skipped, insertions_on_empty, utterances = [], 0, []
    for k, tokens in enumerate(ref_tokens):
        n = len(tokens)
        chunks = chunks_of.get(k)
        if chunks is None:
            total.hits += n
            chunks = [_Chunk("equal", 0, n, 0, n)] if n else []
        if n == 0:  # no rate defined: excluded from the corpus totals, counted (see module docstring)
            skipped.append(ids[k])
            inserted = sum(c.hyp_end_idx - c.hyp_start_idx for c in chunks)
            insertions_on_empty += inserted
            total.insertions -= inserted
        utterances.append(
            UtteranceScore(ids[k], references[k], hypotheses[k], ref_norm[k], hyp_norm[k], chunks)
        )
    return AsrResult(
        metric_name(scheme), scheme.name, scheme.unit, total, utterances, skipped, insertions_on_empty
    )


def render_alignment(utterance: UtteranceScore, unit: str = "word") -> str:
    """One readable line: ``the cat [sat->sit] [-on] [+a] mat``."""
    sep = "" if unit == "char" else " "
    ref = list(utterance.reference_normalized) if unit == "char" else utterance.reference_normalized.split()
    hyp = list(utterance.hypothesis_normalized) if unit == "char" else utterance.hypothesis_normalized.split()
    parts = []
    for op, r0, r1, h0, h1 in utterance.alignment:
        r, h = sep.join(ref[r0:r1]), sep.join(hyp[h0:h1])
        parts.append({"=": r, "S": f"[{r}->{h}]", "D": f"[-{r}]", "I": f"[+{h}]"}[op])
    return " ".join(parts)


def rtf(processing_seconds: float, audio_seconds: float) -> dict:
    """Real-time factor (processing / audio; < 1 is faster than real time) and RTFx = 1 / RTF."""
    if audio_seconds <= 0:
        raise ValueError(f"audio duration must be positive to compute RTF, got {audio_seconds} s")
    value = processing_seconds / audio_seconds
    return {
        "rtf": value,
        "rtfx": audio_seconds / processing_seconds if processing_seconds > 0 else None,
        "processing_s": processing_seconds,
        "audio_s": audio_seconds,
    }
