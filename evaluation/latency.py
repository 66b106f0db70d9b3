"""Streaming latency: first-packet latency, its per-component decomposition, percentiles, RTF, and the
comparison with MinMo's theoretical voice-decoder latency ``5*d_llm + 15*d_lm + 15*d_syn`` (paper Eq. 1).

Input: one record per turn (``LatencyRecord``), in seconds, as the streaming harness measures them:

- ``first_packet_s``: wall time from the end of the user input to the first audio chunk emitted;
- ``components_s``: the same interval split by stage (e.g. ``duplex``, ``llm``, ``voice_token_lm``,
  ``token2wav``); the remainder, if any, is reported as ``other``;
- ``d_llm_s`` / ``d_lm_s`` / ``d_syn_s``: measured per-token costs of the LLM (one text token), the voice
  token LM (one speech token) and the synthesiser (one speech token's worth of audio).
- optionally ``processing_s`` and ``audio_s`` for the RTF of the turn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

PERCENTILES = (50, 90, 95, 99)
N_TEXT_TOKENS, N_SPEECH_TOKENS = 5, 15


def theoretical_latency(
    d_llm: float, d_lm: float, d_syn: float, n_text: int = N_TEXT_TOKENS, n_speech: int = N_SPEECH_TOKENS
) -> float:
    """``n_text * d_llm + n_speech * d_lm + n_speech * d_syn`` (MinMo: 5 text tokens, 15 speech tokens)."""
    return n_text * d_llm + n_speech * (d_lm + d_syn)


def distribution(values: Sequence[float]) -> dict:
    """n, mean, std, min, max and the p50/p90/p95/p99 percentiles (linear interpolation)."""
    a = np.asarray(values, dtype=float)
    if a.size == 0:
        return {"n": 0}
    out = {"n": int(a.size), "mean": float(a.mean()), "std": float(a.std()), "min": float(a.min())}
    out.update({f"p{q}": float(np.percentile(a, q)) for q in PERCENTILES})
    out["max"] = float(a.max())
    return out


@dataclass
class LatencyRecord:
    id: str
    first_packet_s: float
    components_s: dict[str, float] = field(default_factory=dict)
    d_llm_s: float | None = None
    d_lm_s: float | None = None
    d_syn_s: float | None = None
    processing_s: float | None = None
    audio_s: float | None = None

    def __post_init__(self) -> None:
        if self.first_packet_s < 0:
            raise ValueError(f"turn {self.id!r}: first_packet_s is negative ({self.first_packet_s})")
        parts = sum(self.components_s.values())
        if parts > self.first_packet_s * (1 + 1e-6) + 1e-9:
            raise ValueError(
                f"turn {self.id!r}: components sum to {parts:.4f} s, more than first_packet_s "
                f"{self.first_packet_s:.4f} s; components must split the first-packet interval"
            )


def score_latency(records: Sequence[LatencyRecord]) -> dict:
    if not records:
        raise ValueError("no latency records to score")
    first = [r.first_packet_s for r in records]
    out: dict = {"first_packet_s": distribution(first)}
    names = sorted({k for r in records for k in r.components_s})
    if names:
        comp = {k: distribution([r.components_s.get(k, 0.0) for r in records]) for k in names}
        comp["other"] = distribution([r.first_packet_s - sum(r.components_s.values()) for r in records])
        out["components_s"] = comp
    per_token = [r for r in records if None not in (r.d_llm_s, r.d_lm_s, r.d_syn_s)]
    if per_token:
        d = {
            name: float(np.mean([getattr(r, f"{name}_s") for r in per_token]))
            for name in ("d_llm", "d_lm", "d_syn")
        }
        theory = theoretical_latency(d["d_llm"], d["d_lm"], d["d_syn"])
        measured = float(np.median([r.first_packet_s for r in per_token]))
        out["theory"] = {
            **{f"{k}_s": v for k, v in d.items()},
            "formula": f"{N_TEXT_TOKENS}*d_llm + {N_SPEECH_TOKENS}*d_lm + {N_SPEECH_TOKENS}*d_syn",
            "theoretical_s": theory,
            "measured_p50_s": measured,
            "overhead_s": measured - theory,
            "measured_over_theory": measured / theory if theory > 0 else None,
        }
    timed = [r for r in records if r.processing_s is not None and r.audio_s]
    if timed:
        processing, audio = sum(r.processing_s for r in timed), sum(r.audio_s for r in timed)
        out["rtf"] = processing / audio
        out["rtfx"] = audio / processing if processing > 0 else None
    return out
