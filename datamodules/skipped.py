"""The rows a datamodule leaves out, by id: nothing disappears silently.

A ``SkipLedger`` keeps one record per skipped row (``source``, ``split``, ``role``, ``id``, ``reason``,
``detail``), counts them per role and reason for the per-epoch warning, and appends every new record as a
JSON line to its ``path`` (the run's ``<default_root_dir>/skipped_rows.jsonl`` under a Trainer; the
evaluation runner writes its own copy next to its report). A row skipped again in a later epoch is
recorded once.

Rows skipped while a worker process decodes travel to the main process inside the batch (under
``SKIPPED_KEY``, with the ledger's ``token``) and are recorded there, as the loader hands the batch out
(``ResumableLoader.finish_batch``), so their ids are not lost in the worker.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

#: batch key that carries the rows a worker skipped, ``(ledger token, [record, ...])``
SKIPPED_KEY = "_skipped_rows"
#: how many ids a warning line shows
SHOWN_IDS = 5


class SkipLedger:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.path: Path | None = None
        #: tells this ledger's rows apart from another datamodule's in a mixture's batches
        self.token = uuid.uuid4().hex
        self._seen: set[tuple[str, str, str]] = set()

    def add(self, records: list[dict[str, Any]], write: bool = True) -> None:
        """Record new rows (a repeat of a recorded ``(role, id, reason)`` is ignored); ``write`` appends them
        to ``path`` when it is set."""
        new = []
        for record in records:
            key = (record["role"], record["id"], record["reason"])
            if key not in self._seen:
                self._seen.add(key)
                new.append(record)
        self.rows += new
        if new and write and self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as sink:
                sink.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in new))

    def of(self, role: str) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["role"] == role]

    def summary(self, role: str) -> str | None:
        """``3 rows skipped (unreadable_audio: 2, empty_audio: 1); first ids: u4, u7, u9`` or None."""
        rows = self.of(role)
        if not rows:
            return None
        counts = Counter(r["reason"] for r in rows)
        reasons = ", ".join(f"{reason}: {n}" for reason, n in counts.most_common())
        ids = ", ".join(r["id"] for r in rows[:SHOWN_IDS]) + (", ..." if len(rows) > SHOWN_IDS else "")
        where = f"; every id in {self.path}" if self.path is not None else ""
        return f"{len(rows)} rows skipped ({reasons}); first ids: {ids}{where}"
