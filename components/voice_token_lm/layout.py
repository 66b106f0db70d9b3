"""CosyVoice2 sequence layouts: where text (or semantic) vectors and speech tokens sit, and what each predicts.

One formula covers both CosyVoice2 layouts and MinMo's voice decoder. With ``a:b`` the mix ratio (5:15),
``n`` text vectors, ``m`` speech tokens and ``k`` full chunks, a row is::

    [sos, prefix..., (a text, b speech) * k, remaining text (n - k*a), task_id, remaining speech (m - k*b)]

and its targets are ignore for sos/prefix, ``[ignore]*(a-1) + b speech + [fill]`` per full chunk, and
``[ignore]*len(remaining text) + remaining speech + [eos]`` for the tail. Unistream is ``k = 0``; bistream
(CosyVoice2's 5:15 interleave, MinMo's streaming decoder) is ``k = n // a``. ``task_id`` is the "turn of
speech" token, ``fill`` asks for the next text chunk, ``eos`` ends the speech. The prefix (empty in
CosyVoice2) carries MinMo's per-turn query vectors.

Rows are assembled by one gather from a bank of vectors, so the layout is differentiable and has no
Python loop over positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from minmo_lightning.contracts import IGNORE_INDEX, MixRatio

# what a layout position reads
SPECIAL, PREFIX, TEXT, SPEECH = 0, 1, 2, 3
SOS_ROW, TASK_ROW = 0, 1  # rows of ``llm_embedding``


@dataclass(frozen=True)
class SpecialIds:
    """CosyVoice2's speech-side special ids: eos = V, an unused stop id V+1, fill = V+2 (V = codebook size)."""

    speech_vocab_size: int

    @property
    def eos(self) -> int:
        return self.speech_vocab_size

    @property
    def unused(self) -> int:
        return self.speech_vocab_size + 1

    @property
    def fill(self) -> int:
        return self.speech_vocab_size + 2

    @property
    def num_outputs(self) -> int:
        return self.speech_vocab_size + 3


def plan_row(
    text_len: int, speech: Tensor, prefix_len: int, interleave: bool, ratio: MixRatio, ids: SpecialIds
) -> tuple[Tensor, Tensor, Tensor]:
    """``(kind, index, target)`` per position of one row; ``speech`` holds the row's speech ids ([m] long)."""
    m = speech.numel()
    k = ratio.full_chunks(text_len) if interleave else 0
    if k * ratio.speech > m:
        raise ValueError(
            f"mix ratio {ratio.text}:{ratio.speech} does not divide this sequence: {text_len} text vectors make {k} "
            f"full chunks that need {k * ratio.speech} speech tokens, but there are only {m}; use the unistream "
            "layout for this item or drop the pair (its speech is too short for its text)"
        )
    text_size, speech_size = ratio.text, ratio.speech
    chunk_size = text_size + speech_size
    device = speech.device
    arange = lambda n, start=0: torch.arange(start, start + n, device=device)  # noqa: E731
    full = lambda n, value: torch.full((n,), value, dtype=torch.long, device=device)  # noqa: E731

    # full chunks: position p of k * chunk_size -> chunk j, offset o
    p = arange(k * chunk_size)
    j, o = p // chunk_size, p % chunk_size
    is_text = o < text_size
    speech_next = (j * speech_size + o - text_size + 1).clamp(0, max(m - 1, 0))
    chunk_target = torch.where(o < text_size - 1, IGNORE_INDEX, speech[speech_next])
    chunk_target = torch.where(o == chunk_size - 1, ids.fill, chunk_target)

    r, rest = text_len - k * text_size, m - k * speech_size
    kind = torch.cat([
        full(1, SPECIAL), full(prefix_len, PREFIX),
        torch.where(is_text, TEXT, SPEECH),
        full(r, TEXT), full(1, SPECIAL), full(rest, SPEECH),
    ])  # fmt: skip
    index = torch.cat([
        full(1, SOS_ROW), arange(prefix_len),
        torch.where(is_text, j * text_size + o, j * speech_size + o - text_size),
        arange(r, k * text_size), full(1, TASK_ROW), arange(rest, k * speech_size),
    ])  # fmt: skip
    target = torch.cat([
        full(1 + prefix_len, IGNORE_INDEX), chunk_target,
        full(r, IGNORE_INDEX), speech[k * speech_size :], full(1, ids.eos),
    ])  # fmt: skip
    return kind, index, target


@dataclass
class Layout:
    """A batch of assembled rows: ``inputs`` [B, T, D] (zeros after each row), ``targets`` [B, T], ``lengths`` [B]."""

    inputs: Tensor
    targets: Tensor
    lengths: Tensor
    interleaved: Tensor  # [B] bool: the row uses the 5:15 layout

    @property
    def mask(self) -> Tensor:
        return torch.arange(self.inputs.shape[1], device=self.lengths.device)[None] < self.lengths[:, None]


def assemble(
    special: Tensor,
    text: Tensor,
    text_lengths: Tensor,
    speech_emb: Tensor,
    speech: Tensor,
    speech_lengths: Tensor,
    interleave: Tensor,
    ratio: MixRatio,
    ids: SpecialIds,
    prefix: Tensor | None = None,
    prefix_lengths: Tensor | None = None,
) -> Layout:
    """Gather every row of the batch from one bank of vectors.

    ``special`` [2, D] = (sos, task_id); ``text`` [B, N, D] text embeddings or semantic vectors;
    ``speech_emb`` [B, M, D] embeddings of ``speech`` [B, M]; ``interleave`` [B] bool picks bistream per
    row; ``prefix`` [B, P, D] (optional) is placed after sos.
    """
    batch, n_max, dim = text.shape
    m_max = speech.shape[1]
    if prefix is None:
        prefix = text.new_zeros(batch, 0, dim)
        prefix_lengths = torch.zeros(batch, dtype=torch.long, device=text.device)
    p_max = prefix.shape[1]
    pad_row = text.new_zeros(1, dim)
    bank = torch.cat(
        [special, prefix.reshape(-1, dim), text.reshape(-1, dim), speech_emb.reshape(-1, dim), pad_row]
    )
    offsets = {SPECIAL: 0, PREFIX: 2, TEXT: 2 + batch * p_max, SPEECH: 2 + batch * (p_max + n_max)}
    row_size = {SPECIAL: 0, PREFIX: p_max, TEXT: n_max, SPEECH: m_max}

    rows, targets = [], []
    for i in range(batch):
        kind, index, target = plan_row(
            int(text_lengths[i]),
            speech[i, : int(speech_lengths[i])],
            int(prefix_lengths[i]),
            bool(interleave[i]),
            ratio,
            ids,
        )
        base = torch.zeros_like(kind)
        for k in (PREFIX, TEXT, SPEECH):
            base = torch.where(kind == k, offsets[k] + i * row_size[k], base)
        rows.append(base + index)
        targets.append(target)
    lengths = torch.tensor([r.numel() for r in rows], device=text.device)
    pad_index = bank.shape[0] - 1
    gather = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=pad_index)
    target = torch.nn.utils.rnn.pad_sequence(targets, batch_first=True, padding_value=IGNORE_INDEX)
    return Layout(bank[gather], target, lengths, interleave.to(lengths.device).bool())
