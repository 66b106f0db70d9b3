"""The training objective of the tokenizer: CTC on the quantized codes (as CosyVoice2 trained FSQ).

Only the rounded FSQ codes reach the head, so whatever the text needs must pass through the 6561-code
bottleneck: that is what makes the tokens carry content. Characters are the targets; speech runs up to
~25 characters per second while tokens come at 25 Hz, so the head emits ``slots`` CTC frames per token
(2 gives 50 Hz, enough room for the labels plus the blanks between repeats).
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from minmo_lightning.components.speech_tokenizer.encoder import EncoderLayer, Rotary
from minmo_lightning.components.voice_encoder.ctc import count_unalignable, greedy_ctc
from torch import Tensor, nn

from minmo_lightning.contracts import TokenBatch


class CharVocabulary:
    """Characters of the CTC targets; id 0 is the blank.

    Text is lower-cased, punctuation other than apostrophes becomes a space (it is not spoken) and
    spaces are collapsed. Any remaining character outside the vocabulary is an error, never dropped.
    """

    _PUNCTUATION = re.compile(r"[^\w\s']|_")

    def __init__(self, characters: str):
        if len(set(characters)) != len(characters) or not characters:
            raise ValueError(f"asr_vocab must list distinct characters, got {characters!r}")
        self.characters = characters
        self._ids = {c: i + 1 for i, c in enumerate(characters)}

    def __len__(self) -> int:
        return len(self.characters) + 1

    def normalize(self, text: str) -> str:
        return " ".join(self._PUNCTUATION.sub(" ", text.lower()).split())

    def encode(self, text: str) -> list[int]:
        normalized = self.normalize(text)
        unknown = sorted(set(normalized) - set(self._ids))
        if unknown:
            raise ValueError(
                f"text {text!r} has characters outside asr_vocab: {''.join(unknown)!r}; "
                "add them to asr_vocab or spell them out (e.g. digits as words) in the dataset"
            )
        return [self._ids[c] for c in normalized]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.characters[i - 1] for i in ids if i > 0)


class CodeASRHead(nn.Module):
    """Characters read back from the speech tokens: rounded FSQ codes ``[B, T, code_dim]`` -> a few encoder
    layers -> CTC log-probabilities ``[B, slots * T, vocab]``."""

    def __init__(
        self,
        code_dim: int,
        dim: int,
        n_heads: int,
        n_layers: int,
        vocab_size: int,
        slots: int,
        fsmn_kernel_size: int,
        ln_eps: float,
    ):
        super().__init__()
        self.slots, self.vocab_size = slots, vocab_size
        self.project_up = nn.Linear(code_dim, dim)
        self.rotary = Rotary(dim // n_heads)
        self.blocks = nn.ModuleList(  # checkpoint key names: asr_head.blocks.N
            EncoderLayer(dim, n_heads, fsmn_kernel_size, ln_eps) for _ in range(n_layers)
        )
        self.norm = nn.LayerNorm(dim, eps=ln_eps)
        self.classifier = nn.Linear(dim, slots * vocab_size)

    def forward(self, codes: Tensor, lengths: Tensor) -> Tensor:
        x = self.project_up(codes)
        pad = (torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None])[:, :, None].to(x.dtype)
        rope = self.rotary(x.shape[1])
        for layer in self.blocks:
            x = layer(x, rope, pad)
        logits = self.classifier(self.norm(x))
        return logits.view(x.shape[0], x.shape[1] * self.slots, self.vocab_size).log_softmax(-1)

    def loss(self, log_probs: Tensor, lengths: Tensor, targets: list[list[int]]) -> tuple[Tensor, int]:
        """Mean CTC loss per target character and the number of items too short for their text."""
        frames = lengths * self.slots
        labels = TokenBatch.from_list(targets, log_probs.device)
        loss = F.ctc_loss(
            log_probs.transpose(0, 1).float(),
            labels.tokens,
            frames,
            labels.lengths,
            reduction="sum",
            zero_infinity=True,
        )
        return loss / labels.lengths.sum().clamp(min=1), count_unalignable(labels, frames)

    def greedy(self, log_probs: Tensor, lengths: Tensor) -> list[list[int]]:
        """Best path over each item's ``slots * lengths`` frames: collapse repeats, drop blanks."""
        return greedy_ctc(log_probs, lengths * self.slots)
