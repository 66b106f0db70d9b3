"""``QueryLinearProjector``: MinMo's output projector (§3.2), one linear layer to the voice LM width.

The projector input is a sequence. Its first rows are the per-turn query, which the caller builds per
position of the current user turn as [input embedding ; LLM last-layer hidden] on the feature axis
(``VoiceDecoderInput.query``, ``query_lengths`` valid per row). Then, on the
sequence axis, one row per sampled text token: [token embedding ; its last-layer hidden state]. Every
row is ``2 * llm_hidden_size`` wide (7168 for Qwen2.5-7B) and one ``Linear`` maps it to the voice token
LM width (896), ~6.4M parameters at full size.

Ablations are arguments, not classes: ``features`` reads both halves of every row (``both``), only the
LLM-hidden half (``hidden``) or only the embedding half (``embedding``); a one-half variant's ``Linear``
reads ``llm_hidden_size`` features, so its parameter count is its own. ``query`` says how the per-turn
query reaches the voice LM: one row per position of the user turn (``positions``, MinMo), one row of the
turn's mean embedding beside the LLM's hidden state at its last position (``pooled``), or not at all
(``none``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from minmo_lightning.blocks import OutputProjector
from minmo_lightning.contracts import SequenceBatch, VoiceDecoderInput, lengths_to_mask, masked_mean

FEATURES = ("both", "hidden", "embedding")
QUERIES = ("positions", "pooled", "none")


class QueryLinearProjector(OutputProjector):
    """[query ; (embedding ; hidden) per text token] -> semantic vectors for the voice token LM."""

    presets = {
        "minmo": {"llm_hidden_size": 3584, "output_dim": 896, "features": "both", "query": "positions"},
        "tiny": {"llm_hidden_size": 64, "output_dim": 64, "features": "both", "query": "positions"},
    }

    def __init__(
        self, llm_hidden_size: int, output_dim: int, features: str = "both", query: str = "positions"
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if features not in FEATURES:
            raise ValueError(f"features must be one of {', '.join(FEATURES)}, got {features!r}")
        if query not in QUERIES:
            raise ValueError(f"query must be one of {', '.join(QUERIES)}, got {query!r}")
        self.llm_hidden_size, self.output_dim = llm_hidden_size, output_dim
        self.features, self.query = features, query
        self.proj = nn.Linear(llm_hidden_size * (2 if features == "both" else 1), output_dim)

    @classmethod
    def restore_args(cls, init_args: dict[str, Any], assets: dict[str, Path]) -> dict[str, Any]:
        """Checkpoints from before the per-position query said ``use_query``: one pooled row, or none."""
        args = super().restore_args(init_args, assets)
        if "use_query" in args:
            args["query"] = "pooled" if args.pop("use_query") else "none"
        return args

    def query_length(self, inputs: VoiceDecoderInput) -> int:
        """How many leading output rows are the query (the voice LM reads them as its per-turn prefix)."""
        rows = inputs.query.shape[1]
        return {"positions": rows, "pooled": min(rows, 1), "none": 0}[self.query]

    def _check(self, inputs: VoiceDecoderInput) -> None:
        d = self.llm_hidden_size
        emb, hid, query = inputs.token_embeddings, inputs.token_hidden, inputs.query
        if emb.dim() != 3 or emb.shape != hid.shape or emb.shape[-1] != d:
            raise ValueError(
                f"token_embeddings and token_hidden must both be [batch, tokens, {d}] (llm_hidden_size), got "
                f"{tuple(emb.shape)} and {tuple(hid.shape)}"
            )
        if query.dim() != 3 or query.shape[0] != emb.shape[0] or query.shape[-1] != 2 * d:
            raise ValueError(
                f"query must be [batch, rows, {2 * d}] = [input embedding ; LLM last hidden] per user-turn position, "
                f"got {tuple(query.shape)} for a batch of {emb.shape[0]}"
            )
        rows = inputs.query_lengths
        if rows is not None and (
            rows.shape != (query.shape[0],) or bool((rows < 0).any()) or bool((rows > query.shape[1]).any())
        ):
            raise ValueError(
                f"query_lengths must be [{query.shape[0]}] values in [0, {query.shape[1]}], got {rows.tolist()}"
            )
        lengths = inputs.lengths
        if (
            lengths.shape != (emb.shape[0],)
            or bool((lengths < 0).any())
            or bool((lengths > emb.shape[1]).any())
        ):
            raise ValueError(
                f"lengths must be [{emb.shape[0]}] values in [0, {emb.shape[1]}], got {lengths.tolist()}"
            )

    def _project(self, first: Tensor, second: Tensor) -> Tensor:
        """Linear over [first ; second], or over the one half that ``features`` selects."""
        rows = {
            "both": lambda: torch.cat([first, second], -1),
            "embedding": lambda: first,
            "hidden": lambda: second,
        }
        return self.proj(rows[self.features]().to(self.proj.weight.dtype))  # e.g. a bf16 LLM, fp32 projector

    def _query_rows(self, inputs: VoiceDecoderInput) -> Tensor:
        """The query rows to project, [B, query_length, 2D]."""
        query = inputs.query
        if self.query != "pooled" or not query.shape[1]:
            return query[:, : self.query_length(inputs)]
        d, rows = self.llm_hidden_size, torch.arange(query.shape[0], device=query.device)
        lengths = inputs.query_lengths
        if lengths is None:
            lengths = torch.full_like(rows, query.shape[1])
        mean = masked_mean(query[..., :d], lengths_to_mask(lengths, query.shape[1]))
        last = query[rows, (lengths - 1).clamp(min=0), d:]
        return torch.cat([mean, last], -1)[:, None]

    def forward(self, inputs: VoiceDecoderInput) -> SequenceBatch:
        self._check(inputs)
        d = self.llm_hidden_size
        tokens = self._project(inputs.token_embeddings, inputs.token_hidden)
        query = self._query_rows(inputs)
        rows = self._project(query[..., :d], query[..., d:])
        return SequenceBatch(torch.cat([rows, tokens], 1), inputs.lengths.to(tokens.device) + query.shape[1])

    def extra_repr(self) -> str:
        return f"features={self.features}, query={self.query}"
