"""Progress as plain lines, for logs that are not a terminal (nohup, SLURM, CI, ``| tee``).

Rich draws its bar only on a terminal; a cluster log read later needs a line now and then instead.

``ProgressLine``: for any loop that knows (or not) how much there is to do. It prints at most one line
every ``every`` seconds (default 30; the ``MINMO_PROGRESS_SECONDS`` environment variable changes the
default) and always one when closed::

    from minmo_lightning.progress import ProgressLine

    with ProgressLine("prepare train", total=len(rows), unit="rows") as progress:
        for row in rows:
            ...
            progress.advance()  # or progress.update(done), absolute; keyword arguments add fields

    # prepare train: 1200/5000 rows (24%) | 40.1 rows/s | elapsed 30s | ETA 1m35s
    # prepare train: 5000/5000 rows (100%) | 41.0 rows/s | elapsed 2m02s | done

``total=None`` (unknown size) drops the percentage and the ETA. It prints whether or not stdout is a
terminal; ``plain_progress_wanted()`` says whether a tool that also has a live display should use it.

Lightning's progress bar in that form is ``progress_bar.PlainProgressBar`` (this module imports no
Lightning, so a tool pays only for what it uses).
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

import torch

#: seconds between two lines unless a caller says otherwise
DEFAULT_EVERY = 30.0


def default_every() -> float:
    """``MINMO_PROGRESS_SECONDS`` when set, else 30 seconds."""
    value = os.environ.get("MINMO_PROGRESS_SECONDS")
    if value is None:
        return DEFAULT_EVERY
    try:
        return max(0.0, float(value))
    except ValueError:
        raise ValueError(f"MINMO_PROGRESS_SECONDS={value!r} is not a number of seconds") from None


def plain_progress_wanted(stream: TextIO | None = None) -> bool:
    """True when ``stream`` (stdout by default) is not a terminal: a live bar would draw nothing there."""
    stream = stream or sys.stdout
    isatty = getattr(stream, "isatty", None)
    return not (callable(isatty) and isatty())


def format_duration(seconds: float) -> str:
    """``45s``, ``3m05s``, ``2h07m``."""
    if not math.isfinite(seconds):
        return "?"
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def format_field(value: Any) -> str:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class ProgressLine:
    """Counts work done out of ``total`` and prints ``label: done/total unit (pct) | rate | elapsed | ETA``
    at most every ``every`` seconds (and once on ``close``). ``clock`` and ``stream`` are for tests."""

    def __init__(
        self,
        label: str,
        total: int | None = None,
        unit: str = "items",
        every: float | None = None,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label, self.total, self.unit = label, total, unit
        self.every = default_every() if every is None else every
        self.done = 0
        self._stream, self._clock = stream, clock
        self._started = self._last = clock()
        self._closed = False

    def advance(self, count: int = 1, **fields: Any) -> None:
        self.update(self.done + count, **fields)

    def update(self, done: int, **fields: Any) -> None:
        """Set the count done so far; print a line when ``every`` seconds passed since the last one."""
        self.done = done
        now = self._clock()
        if now - self._last >= self.every:
            self._last = now
            self._print(self.line(now, **fields))

    def close(self, **fields: Any) -> None:
        """Print the final line (once)."""
        if not self._closed:
            self._closed = True
            self._print(self.line(self._clock(), final=True, **fields))

    def __enter__(self) -> ProgressLine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def line(self, now: float | None = None, final: bool = False, **fields: Any) -> str:
        elapsed = (self._clock() if now is None else now) - self._started
        count = f"{self.done}/{self.total} {self.unit}" if self.total else f"{self.done} {self.unit}"
        if self.total:
            count += f" ({100 * self.done / self.total:.0f}%)"
        parts = [count, *(f"{key} {format_field(value)}" for key, value in fields.items())]
        rate = self.done / elapsed if elapsed > 0 else 0.0
        if rate > 0:
            parts.append(f"{rate:.3g} {self.unit}/s")
        parts.append(f"elapsed {format_duration(elapsed)}")
        if final:
            parts.append("done")
        elif self.total and rate > 0:
            parts.append(f"ETA {format_duration((self.total - self.done) / rate)}")
        return f"{self.label}: " + " | ".join(parts)

    def _print(self, line: str) -> None:
        print(line, file=self._stream or sys.stdout, flush=True)
