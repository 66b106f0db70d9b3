"""``QueryLinearProjector``: MinMo's output projector (§3.2), one linear layer to the voice LM width.

The projector input is a sequence. Its first rows are the per-turn query, which the caller builds as
[user-turn state ; LLM last hidden] on the feature axis (``VoiceDecoderInput.query``). Then, on the
sequence axis, one row per sampled text token: [token embedding ; its last-layer hidden state]. Every
row is ``2 * llm_hidden_size`` wide (7168 for Qwen2.5-7B) and one ``Linear`` maps it to the voice token
LM width (896), ~6.4M parameters at full size.

Ablations are arguments, not classes: ``features`` reads both halves of every row (``both``), only the
LLM-hidden half (``hidden``: query's last hidden, tokens' hidden states) or only the embedding half
(``embedding``: user-turn state, token embeddings); ``use_query=False`` drops the query rows. A
one-half variant's ``Linear`` reads ``llm_hidden_size`` features, so its parameter count is its own.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from minmo_lightning.blocks import OutputProjector
from minmo_lightning.contracts import SequenceBatch, VoiceDecoderInput

FEATURES = ("both", "hidden", "embedding")


class QueryLinearProjector(OutputProjector):
    """[query ; (embedding ; hidden) per text token] -> semantic vectors for the voice token LM."""

    presets = {
        "minmo": {"llm_hidden_size": 3584, "output_dim": 896, "features": "both", "use_query": True},
        "tiny": {"llm_hidden_size": 64, "output_dim": 64, "features": "both", "use_query": True},
    }

    def __init__(
        self, llm_hidden_size: int, output_dim: int, features: str = "both", use_query: bool = True
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if features not in FEATURES:
            raise ValueError(f"features must be one of {', '.join(FEATURES)}, got {features!r}")
        self.llm_hidden_size, self.output_dim = llm_hidden_size, output_dim
        self.features, self.use_query = features, use_query
        self.proj = nn.Linear(llm_hidden_size * (2 if features == "both" else 1), output_dim)

    def query_length(self, inputs: VoiceDecoderInput) -> int:
        """How many leading output rows are the query (the voice LM reads them as its per-turn prefix)."""
        return inputs.query.shape[1] if self.use_query else 0

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
                f"query must be [batch, rows, {2 * d}] = [user-turn state ; LLM last hidden] on the feature axis, "
                f"got {tuple(query.shape)} for a batch of {emb.shape[0]}"
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

    def forward(self, inputs: VoiceDecoderInput) -> SequenceBatch:
        self._check(inputs)
        d = self.llm_hidden_size
        tokens = self._project(inputs.token_embeddings, inputs.token_hidden)
        lengths = inputs.lengths.to(tokens.device)
        if not self.use_query:
            return SequenceBatch(tokens, lengths)
        query = self._project(inputs.query[..., :d], inputs.query[..., d:])
        return SequenceBatch(torch.cat([query, tokens], 1), lengths + inputs.query.shape[1])

    def extra_repr(self) -> str:
        return f"features={self.features}, use_query={self.use_query}"
