"""Answer formats: how a structured label is written as the LLM's text answer, and read back from it.

Training renders a batch's label into the answer the LLM learns to write; evaluation parses a generated
answer with the inverse. Both sides use this module, so a format change cannot split them.

- audio events: ``"tone at 0.5 s; click at 1.2 s"`` (label and onset, in onset order), ``"none"`` when the
  recording has no event;
- speaker attributes: ``"female, adult"`` (one value per attribute, in the attributes' order).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

NO_EVENTS = "none"
_EVENT = re.compile(r"([a-z][a-z _-]*?)\s+at\s+(\d+(?:\.\d+)?)\s*s\b")


def render_events(events: Sequence[Mapping[str, Any]]) -> str:
    """Events (``label``, ``onset`` in seconds) in onset order, onsets to a tenth of a second."""
    ordered = sorted(events, key=lambda e: (float(e["onset"]), str(e["label"])))
    return "; ".join(f"{e['label']} at {float(e['onset']):.1f} s" for e in ordered) or NO_EVENTS


def parse_events(text: str) -> list[dict[str, Any]]:
    """The ``label at X s`` pieces of a generated answer; text in between (or ``none``) adds nothing."""
    return [{"label": label.strip(), "onset": float(onset)} for label, onset in _EVENT.findall(text.lower())]


def render_attributes(values: Sequence[str]) -> str:
    return ", ".join(values)


def parse_attribute(text: str, labels: Sequence[str]) -> str | None:
    """The one label of ``labels`` a generated answer names as a whole word (``None``: none or several)."""
    words = set(re.findall(r"[a-z][a-z-]*", text.lower()))
    named = [label for label in labels if label.lower() in words]
    return named[0] if len(named) == 1 else None
