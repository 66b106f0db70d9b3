"""Typed inputs and outputs that blocks pass to each other.

Everything is batch first. Variable lengths travel as a padded tensor plus a ``lengths`` vector;
masks are derived from the lengths, never stored beside them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

#: label value that losses skip (prompt positions, padding), as in ``torch.nn.functional.cross_entropy``.
IGNORE_INDEX = -100


def lengths_to_mask(lengths: Tensor, max_length: int | None = None) -> Tensor:
    """``[B]`` lengths -> ``[B, T]`` bool mask, True on valid positions."""
    max_length = int(lengths.max()) if max_length is None else max_length
    return torch.arange(max_length, device=lengths.device)[None, :] < lengths[:, None]


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` [B, T, D] over the positions where ``mask`` [B, T] is set (0 for an empty row)."""
    weights = mask[..., None].to(values.dtype)
    return (values * weights).sum(1) / weights.sum(1).clamp(min=1)


def _check_lengths(name: str, lengths: Tensor, batch: int, max_length: int) -> None:
    if lengths.dim() != 1 or lengths.shape[0] != batch:
        raise ValueError(
            f"{name}.lengths must have shape [{batch}] (one length per item), got {tuple(lengths.shape)}"
        )
    if lengths.numel() and (int(lengths.max()) > max_length or int(lengths.min()) < 0):
        raise ValueError(
            f"{name}.lengths must lie in [0, {max_length}] (the padded length); got min {int(lengths.min())}, "
            f"max {int(lengths.max())}"
        )


#: a row whose share of samples at full scale (|x| >= 1) exceeds this is reported as clipped
CLIPPED_FRACTION = 0.01


def _rows(rows: list[int]) -> str:
    """``row 2`` / ``rows 0, 3, 5`` / ``rows 0, 1, 2, ... (12 rows)``, short enough for one error line."""
    shown = ", ".join(map(str, rows[:3])) + (f", ... ({len(rows)} rows)" if len(rows) > 3 else "")
    return f"row{'s' if len(rows) > 1 else ''} {shown}"


@dataclass
class AudioBatch:
    """Mono waveforms in [-1, 1]: ``waveform`` [B, S] float, ``lengths`` [B] samples.

    Blocks call ``require`` on what users hand them: a wrong sample rate, an empty row, NaN/Inf samples, a
    non-float waveform or a clip over the block's limit is an error naming the row; clipped rows are a
    warning (still encoded). Stereo is an error, never mixed down silently: average the channels first.
    """

    waveform: Tensor
    lengths: Tensor
    sample_rate: int

    def __post_init__(self) -> None:
        if self.waveform.dim() != 2:
            raise ValueError(
                f"AudioBatch.waveform must be [batch, samples] mono, got shape {tuple(self.waveform.shape)}; "
                "mix stereo down to mono (mean over channels) before passing it"
            )
        _check_lengths("AudioBatch", self.lengths, self.waveform.shape[0], self.waveform.shape[1])

    @classmethod
    def from_list(cls, waves: list[Any], sample_rate: int) -> AudioBatch:
        """Right-pad mono clips (1-D tensors or numpy arrays, or ``[1, T]``) into one batch."""
        tensors = []
        for row, wave in enumerate(waves):
            wave = torch.as_tensor(wave)
            if wave.dim() > 1 and wave.numel() > max(wave.shape):
                raise ValueError(
                    f"audio row {row} has shape {tuple(wave.shape)}: several channels; AudioBatch holds mono "
                    "clips, so mix it down first (wave.mean(0) for [channels, samples])"
                )
            tensors.append(wave.reshape(-1))
        lengths = torch.tensor([t.numel() for t in tensors], dtype=torch.long)
        padded = torch.nn.utils.rnn.pad_sequence(tensors, batch_first=True)
        return cls(padded, lengths, sample_rate)

    @property
    def mask(self) -> Tensor:
        return lengths_to_mask(self.lengths, self.waveform.shape[1])

    def require(self, sample_rate: int, max_seconds: float | None = None, who: str = "this block") -> None:
        """Raise a clear error for the input mistakes users make most (see the class docstring)."""
        if self.sample_rate != sample_rate:
            raise ValueError(
                f"{who} expects {sample_rate} Hz audio, got {self.sample_rate} Hz; resample it from "
                f"{self.sample_rate} to {sample_rate} Hz first (minmo_lightning.datamodules.audio.resample)"
            )
        if not self.waveform.is_floating_point():
            raise ValueError(
                f"{who} reads float audio in [-1, 1], got {self.waveform.dtype}; convert it first "
                "(int16 PCM: divide by 32768)"
            )
        if self.lengths.numel() == 0:
            raise ValueError(f"{who} got an empty batch (no audio rows)")
        empty = (self.lengths == 0).nonzero().flatten().tolist()
        if empty:
            raise ValueError(
                f"{who}: audio {_rows(empty)} is an empty waveform (0 samples); drop empty clips first"
            )
        limit = None if max_seconds is None else max_seconds * sample_rate
        if limit is not None and int(self.lengths.max()) > limit:
            long = (self.lengths > limit).nonzero().flatten().tolist()
            lasts = "lasts" if len(long) == 1 else "last up to"
            raise ValueError(
                f"{who} accepts at most {max_seconds:g} s of audio, but audio {_rows(long)} {lasts} "
                f"{int(self.lengths.max()) / sample_rate:.1f} s; split the clip or use the streaming step()"
            )
        valid = lengths_to_mask(self.lengths.to(self.waveform.device), self.waveform.shape[1])
        self._require_finite(who, valid)
        self._warn_if_clipped(who, valid)

    def _require_finite(self, who: str, valid: Tensor) -> None:
        bad = ~torch.isfinite(self.waveform) & valid
        if not bool(bad.any()):
            return
        counts = bad.sum(1)
        rows = counts.nonzero().flatten().tolist()
        nan = int((torch.isnan(self.waveform) & valid).sum())
        kinds = " and ".join(k for k, n in (("NaN", nan), ("Inf", int(bad.sum()) - nan)) if n)
        found = (
            f"has {int(counts[rows[0]])} {kinds} samples"
            if len(rows) == 1
            else f"have {kinds} samples ({int(counts[rows[0]])} in row {rows[0]})"
        )
        raise ValueError(
            f"{who}: audio {_rows(rows)} {found}; fix or drop that audio (torch.nan_to_num zeroes them)"
        )

    def _warn_if_clipped(self, who: str, valid: Tensor) -> None:
        """One warning per call naming the clipped rows; the text stays the same from call to call for the
        same rows, so Python's warning filter shows it once, not once per streaming chunk."""
        magnitude = self.waveform.abs().masked_fill(~valid, 0)
        share = (magnitude >= 1.0).sum(1) / valid.sum(1).clamp(min=1)
        rows = (share > CLIPPED_FRACTION).nonzero().flatten().tolist()
        if not rows:
            return
        if float(magnitude.max()) > 2.0:
            what = "samples far beyond [-1, 1] (unscaled? int16 PCM: divide by 32768)"
        else:
            what = f"clipped audio (over {CLIPPED_FRACTION:.0%} of the samples at |x| >= 1)"
        warnings.warn(f"{who}: {what} in audio {_rows(rows)}; encoded anyway", stacklevel=3)


@dataclass
class SequenceBatch:
    """Frame vectors: ``values`` [B, T, D], ``lengths`` [B] frames."""

    values: Tensor
    lengths: Tensor

    def __post_init__(self) -> None:
        if self.values.dim() != 3:
            raise ValueError(
                f"SequenceBatch.values must be [batch, time, dim], got shape {tuple(self.values.shape)}"
            )
        _check_lengths("SequenceBatch", self.lengths, self.values.shape[0], self.values.shape[1])

    @property
    def mask(self) -> Tensor:
        return lengths_to_mask(self.lengths, self.values.shape[1])

    @classmethod
    def packed(cls, values: Tensor, mask: Tensor) -> SequenceBatch:
        """The vectors of ``values`` [B, T, D] where ``mask`` [B, T] is set, left-aligned per row, in order."""
        lengths = mask.sum(1)
        keep = lengths_to_mask(lengths, int(lengths.max()) if lengths.numel() else 0)
        out = values.new_zeros(*keep.shape, values.shape[-1])
        out[keep] = values[mask]
        return cls(out, lengths)


@dataclass
class TokenBatch:
    """Discrete tokens: ``tokens`` [B, T] long, ``lengths`` [B]."""

    tokens: Tensor
    lengths: Tensor

    def __post_init__(self) -> None:
        if self.tokens.dim() != 2:
            raise ValueError(f"TokenBatch.tokens must be [batch, time], got shape {tuple(self.tokens.shape)}")
        _check_lengths("TokenBatch", self.lengths, self.tokens.shape[0], self.tokens.shape[1])

    @classmethod
    def from_list(
        cls, rows: list[list[int]] | list[Tensor], device: torch.device | str | None = None
    ) -> TokenBatch:
        """Right-pad variable-length id sequences with 0 (lengths say where each row ends)."""
        tensors = [torch.as_tensor(r, dtype=torch.long).reshape(-1) for r in rows]
        lengths = torch.tensor([t.numel() for t in tensors], dtype=torch.long, device=device)
        padded = torch.nn.utils.rnn.pad_sequence(tensors, batch_first=True).to(device)
        return cls(padded, lengths)

    @property
    def mask(self) -> Tensor:
        return lengths_to_mask(self.lengths, self.tokens.shape[1])

    def concat(self, other: TokenBatch) -> TokenBatch:
        """Row-wise ``self ++ other`` (e.g. prompt tokens before the tokens to speak)."""
        rows = [
            torch.cat([head[:m], tail[:n]])
            for head, m, tail, n in zip(
                self.tokens, self.lengths.tolist(), other.tokens, other.lengths.tolist()
            )
        ]
        return TokenBatch.from_list(rows, self.tokens.device)

    def require_range(self, vocab_size: int, who: str) -> None:
        valid = self.tokens[self.mask]
        if valid.numel() == 0:
            raise ValueError(f"{who} got an empty token sequence; every item needs at least one token")
        low, high = int(valid.min()), int(valid.max())
        if low < 0 or high >= vocab_size:
            raise ValueError(f"{who} accepts token ids in [0, {vocab_size}), got ids in [{low}, {high}]")


@dataclass
class LLMOutput:
    """``logits`` [B, T, V]; ``hidden_states`` [B, T, D] of the last layer; ``cache`` for the next call."""

    logits: Tensor
    hidden_states: Tensor
    cache: Any = None


@dataclass
class VoiceDecoderInput:
    """What the output projector reads (MinMo §3.2).

    ``query`` [B, Q, Dq]: the per-turn query, one row per position of the current user turn: its input
    embedding beside the LLM's last-layer hidden state there, on the feature axis (``streaming.turn_query``);
    ``query_lengths`` [B] counts each row's valid ones (None: all Q are valid).
    ``token_embeddings`` / ``token_hidden`` [B, N, D]: embedding and last-layer hidden state of each sampled
    text token; ``lengths`` [B] counts the valid text tokens.
    """

    query: Tensor
    token_embeddings: Tensor
    token_hidden: Tensor
    lengths: Tensor
    query_lengths: Tensor | None = None


@dataclass
class DuplexFrames:
    """What a duplex predictor reads, one row per frame of the user channel at the LLM's audio-frame rate.

    ``hidden``: the LLM's last-layer states at the user-audio positions [B, T, D] with lengths.
    ``audio``: the user audio those frames cover, frame k = samples [k * hop, (k + 1) * hop) (for
    predictors that listen to the signal itself, such as the VAD baseline). ``assistant_speaking``:
    [B, T] bool, the assistant channel talks during the frame (a barge-in is speech over it).
    ``audio_features``: [B, T, F], what ``DuplexPredictor.audio_features`` made of ``audio`` before (a
    cache); the predictor computes them from ``audio`` when absent.
    """

    hidden: SequenceBatch
    audio: AudioBatch | None = None
    assistant_speaking: Tensor | None = None
    audio_features: Tensor | None = None


@dataclass
class DuplexOutput:
    """Per-frame turn-taking logits ``[B, T, C]`` over ``DuplexPredictor.CLASSES``, with ``lengths`` [B].

    ``respond_threshold`` / ``stop_threshold``: the probability at which ``respond`` / ``stop_speaking`` is
    decided; None decides that class where it wins the argmax. Moving a threshold trades take-over rate
    against latency without retraining (``dataclasses.replace(output, respond_threshold=0.3)``).
    """

    logits: Tensor
    lengths: Tensor
    respond_threshold: float | None = None
    stop_threshold: float | None = None

    def __post_init__(self) -> None:
        for name in ("respond_threshold", "stop_threshold"):
            value = getattr(self, name)
            if value is not None and not 0.0 < value <= 1.0:
                raise ValueError(f"DuplexOutput.{name} must lie in (0, 1] or be None (argmax), got {value}")

    def probabilities(self) -> Tensor:
        """Softmax over the classes, ``[B, T, C]`` float32."""
        return self.logits.float().softmax(-1)

    def decisions(self) -> Tensor:
        """``[B, T]`` class per frame: ``stop_speaking`` where it is decided, else ``respond`` where it is,
        else ``keep_listening`` (stopping to listen wins a tie; with no thresholds this is the argmax)."""
        keep_listening, respond, stop_speaking = 0, 1, 2
        winner = self.logits.argmax(-1)
        probs = self.probabilities()

        def decided(index: int, threshold: float | None) -> Tensor:
            return winner == index if threshold is None else probs[..., index] >= threshold

        out = torch.full_like(winner, keep_listening)
        out[decided(respond, self.respond_threshold)] = respond
        out[decided(stop_speaking, self.stop_threshold)] = stop_speaking
        return out


@dataclass(frozen=True)
class MixRatio:
    """``text`` vectors are followed by ``speech`` tokens in each interleaved chunk (CosyVoice2 and MinMo: 5:15)."""

    text: int = 5
    speech: int = 15

    def __post_init__(self) -> None:
        if self.text < 1 or self.speech < 1:
            raise ValueError(
                f"mix_ratio must be two positive integers [text, speech], got [{self.text}, {self.speech}]"
            )

    def full_chunks(self, text_len: int) -> int:
        return text_len // self.text

    def outruns_text(self, text_lengths: Tensor, speech_lengths: Tensor) -> Tensor:
        """Per row: at most ``speech / text`` speech tokens per text token, so in the interleaved layout
        the speech of a chunk runs past the words read so far (CosyVoice2 trains such rows unistream only)."""
        return speech_lengths.to(text_lengths.device) * self.text <= text_lengths * self.speech

    def can_interleave(self, text_lengths: Tensor, speech_lengths: Tensor) -> Tensor:
        """Per row: every full text chunk has its ``speech`` tokens (else only unistream fits)."""
        return speech_lengths.to(text_lengths.device) >= (text_lengths // self.text) * self.speech


@dataclass
class SemanticChunk:
    """One streaming input of a voice token LM: up to ``ratio.text`` semantic vectors per row, and the
    per-turn query rows (``prefix``) that a row reads once, before its first vectors."""

    vectors: SequenceBatch
    prefix: SequenceBatch | None = None


@dataclass
class DecoderLoss:
    """A teacher-forced pass: token-averaged ``loss`` and next-token accuracy ``acc`` on scored positions."""

    loss: Tensor
    acc: Tensor


#: ``sampler(log_probs [B, V], recent speech tokens [B, W] (-1: none)) -> token ids [B]``
SpeechSampler = Callable[[Tensor, Tensor], Tensor]


@dataclass
class VoiceLMStreamOptions:
    """Per-session options of a voice token LM (``init_state(batch_size, options)``): ``sampler`` picks each
    speech token; None uses the block's own sampling settings, drawing from ``generator``."""

    sampler: SpeechSampler | None = None
    generator: torch.Generator | None = None
