"""Text of speech corpora for training an LLM alone (the tiny chain's stage 0): every sentence the corpus
speaks, translates, asks or answers, one training sequence per row.

A source is ``{"path": dataset, "fields": [columns]}``; a row's text is its fields' values joined by a
space (a list field such as a dialogue ``history`` contributes its turns' ``text``). Only the train split
trains and the validation split validates: test sentences stay unseen, so the ASR test set is not learnt as
text. Repeated texts are kept once. Batches: ``{"ids", "text"}``.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch
from minmo_lightning.datamodules.sources import load_source
from torch.utils.data import DataLoader

log = logging.getLogger(__name__)


def _words(value: Any) -> str:
    if isinstance(value, list):
        return " ".join(_words(v.get("text", "") if isinstance(v, dict) else v) for v in value)
    return str(value or "").strip()


def source_texts(path: str, fields: list[str], split: str) -> list[str]:
    """Each row's ``fields`` joined, from one split (empty when the source has no such split)."""
    splits, _ = load_source(path)
    if split not in splits:
        return []
    dataset = splits[split]
    missing = [f for f in fields if f not in dataset.column_names]
    if missing:
        raise ValueError(
            f"text source {path!r} has no column(s) {missing} (columns: {', '.join(dataset.column_names)}); "
            "fix its `fields`"
        )
    columns = dataset.select_columns(fields).to_dict()
    rows = zip(*(columns[f] for f in fields))
    return [text for text in (" ".join(filter(None, map(_words, row))) for row in rows) if text]


class TextDataModule(L.LightningDataModule):
    """The unique texts of ``sources`` in shuffled batches of ``batch_size`` (seeded per epoch)."""

    def __init__(self, sources: list[dict[str, Any]], batch_size: int = 32, seed: int = 0) -> None:
        super().__init__()
        if not sources:
            raise ValueError("TextDataModule needs at least one source: [{path: ..., fields: [...]}]")
        bad = [s for s in sources if not isinstance(s, dict) or set(s) != {"path", "fields"}]
        if bad:
            raise ValueError(f"each text source is {{path: DATASET, fields: [COLUMNS]}}; got {bad[0]!r}")
        self.sources, self.batch_size, self.seed = sources, batch_size, seed
        self.texts: dict[str, list[str]] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.texts:
            return
        for split in ("train", "validation"):
            texts = [t for s in self.sources for t in source_texts(s["path"], s["fields"], split)]
            self.texts[split] = list(dict.fromkeys(texts))
            log.info(
                "%s: %d texts (%d repeats dropped)",
                split,
                len(self.texts[split]),
                len(texts) - len(self.texts[split]),
            )
        if not self.texts["train"]:
            raise ValueError(
                f"no training text in {[s['path'] for s in self.sources]}: they have no train split"
            )

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        texts = self.texts[split]
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            list(range(len(texts))),
            batch_size=self.batch_size,
            shuffle=shuffle,
            generator=generator,
            collate_fn=lambda rows: {"ids": [f"{split}-{r}" for r in rows], "text": [texts[r] for r in rows]},
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation", shuffle=False)
