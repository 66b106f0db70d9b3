"""``Vocoder``: the mel -> waveform half of token2wav, chosen in a recipe by its ``alias`` (``vocoder: hift``).

A vocoder is a plain ``nn.Module`` that ``CosyVoice2Token2Wav`` composes (not a slot: it neither trains nor
loads alone through the CLI). ``build_vocoder`` resolves the name through ``registry.resolve_class``, so an
unknown name gets the near-miss message every other name gets.

Streaming is shared: each ``step`` synthesizes a window of ``stream_left_context`` already emitted frames plus
the frames received, returns audio only for frames with ``stream_lookahead`` frames of future context (all of
them once the input ended) and cross-fades ``stream_crossfade`` frames at each join; a subclass says how to
synthesize the window (``synthesize_window``) and what else its state carries.
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from dataclasses import KW_ONLY, dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from minmo_lightning.registry import resolve_class
from minmo_lightning.stream_state import StreamState


def crossfade(tail: Tensor, audio: Tensor) -> Tensor:
    """Fade from ``tail`` (the previous window's audio for these samples) into ``audio`` [B, S] over the tail's
    length, with raised-cosine weights whose fade-in and fade-out sum to exactly one."""
    if tail.shape[1] == 0:
        return audio
    t = (torch.arange(tail.shape[1], dtype=torch.float64, device=audio.device) + 0.5) / tail.shape[1]
    overlap = min(tail.shape[1], audio.shape[1])
    fade_in = torch.sin(0.5 * math.pi * t).pow(2).to(audio)[:overlap]
    return torch.cat([torch.lerp(tail[:, :overlap], audio[:, :overlap], fade_in), audio[:, overlap:]], dim=1)


@dataclass
class VocoderStreamState(StreamState):
    """One stream whose rows advance together (equal-length chunks, shared frame counters).

    ``mel`` [B, C, n] holds frames [start, start + n): left context plus frames not yet emitted; ``tail`` the
    previous window's audio for the next ``stream_crossfade`` frames; ``finished`` says the last frames were
    flushed. Rows end (``end_input``) and restart (``reset``) together; a caller whose sessions differ keeps
    one state per session, as ``CosyVoice2Token2Wav`` does.
    """

    mel: Tensor
    tail: Tensor
    _: KW_ONLY
    start: int = 0
    emitted: int = 0
    finished: bool = False

    def _every_row(self, items: Tensor | list[int], what: str) -> None:
        if not bool(self.rows(items).all()):
            raise ValueError(
                f"the rows of a vocoder stream share their frame counters: {what} every row together, or keep "
                "one stream per session"
            )

    def end_input(self, items: Tensor | list[int]) -> None:
        self._every_row(items, "end the input of")
        super().end_input(items)

    def reset(self, items: Tensor | list[int]) -> None:
        """Start the stream over (every row): nothing received, nothing emitted."""
        self._every_row(items, "reset")
        self.input_ended = torch.zeros_like(self.input_ended)
        self.mel, self.tail = self.mel[:, :, :0], self.tail[:, :0]
        self.start, self.emitted, self.finished = 0, 0, False


class Vocoder(nn.Module, ABC):
    """Log-mel [B, mel_bins, T] -> waveform [B, T * samples_per_frame] at ``sampling_rate``, offline and streaming.

    Subclasses set ``alias`` (the recipe name), ``presets``, ``checkpoint_file`` (None: no weights) and, in
    ``__init__``, ``sampling_rate``, ``mel_bins``, ``samples_per_frame`` and the stream window
    (``set_stream_window``).
    """

    alias: ClassVar[str]
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    #: the official checkpoint file of the vocoder inside a model folder (None: it has no weights)
    checkpoint_file: ClassVar[str | None] = None
    sampling_rate: int
    mel_bins: int
    samples_per_frame: int
    stream_left_context: int
    stream_lookahead: int
    stream_crossfade: int

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> Vocoder:
        if name not in cls.presets:
            raise KeyError(
                f"{cls.__name__} has no preset {name!r}; available presets: {', '.join(cls.presets) or 'none'}"
            )
        return cls(**{**copy.deepcopy(cls.presets[name]), **overrides})

    def set_stream_window(self, left_context: int, lookahead: int, crossfade_frames: int) -> None:
        if crossfade_frames > lookahead:
            raise ValueError(
                f"stream_crossfade ({crossfade_frames}) cannot exceed stream_lookahead ({lookahead}): "
                "the faded-out audio comes from the look-ahead frames"
            )
        self.stream_left_context, self.stream_lookahead = left_context, lookahead
        self.stream_crossfade = crossfade_frames

    def check_mel(self, mel: Tensor, offline: bool = False) -> None:
        if mel.dim() != 3 or mel.shape[1] != self.mel_bins:
            raise ValueError(f"mel must have shape [batch, {self.mel_bins}, frames], got {tuple(mel.shape)}")
        if offline and mel.shape[2] == 0:
            raise ValueError(
                "mel has 0 frames: there is nothing to vocode (drop empty items before the vocoder)"
            )

    def load_pretrained(self, path: Any) -> None:
        raise NotImplementedError(f"{type(self).__name__} has no weights to load")

    @abstractmethod
    def forward(self, mel: Tensor) -> Tensor:
        """Log-mel [B, mel_bins, T] -> waveform [B, T * samples_per_frame]."""

    # ---- streaming ----------------------------------------------------------------------------
    @abstractmethod
    def init_state(self, batch_size: int, options: None = None) -> VocoderStreamState:
        """A fresh stream of ``batch_size`` rows (vocoders have no per-session options)."""

    @abstractmethod
    def synthesize_window(self, mel: Tensor, state: VocoderStreamState, end: int, new_start: int) -> Tensor:
        """Audio of the window ``mel`` (frames [state.start, received)) for the frames up to ``end``; keeps what
        the subclass's state needs for frames [new_start, end) (the next window's left context)."""

    def step(self, mel_chunk: Tensor, state: VocoderStreamState) -> Tensor:
        """Feed mel frames [B, C, n], any n >= 0; returns the audio [B, k * samples_per_frame] of the k frames that
        became final. After ``state.end_input`` (every row) the step flushes every frame left."""
        self.check_mel(mel_chunk)
        if state.finished:
            raise RuntimeError(
                "this stream already ended (end_input) and was flushed; reset it or start a new one with init_state()"
            )
        if mel_chunk.shape[0] != state.batch_size:
            raise ValueError(f"mel_chunk has batch {mel_chunk.shape[0]}, the stream state {state.batch_size}")
        ending = bool(state.input_ended.all())
        mel = torch.cat([state.mel, mel_chunk.to(state.mel)], dim=2)
        received = state.start + mel.shape[2]
        end = received if ending else max(state.emitted, received - self.stream_lookahead)
        state.finished = ending
        if end == state.emitted:
            state.mel = mel
            return mel.new_zeros(state.batch_size, 0)
        new_start = max(0, end - self.stream_left_context)
        wav = self.synthesize_window(mel, state, end, new_start)
        scale = self.samples_per_frame
        first, last = (state.emitted - state.start) * scale, (end - state.start) * scale
        out = crossfade(state.tail, wav[:, first:last])
        state.tail = wav[:, last : last + self.stream_crossfade * scale]
        state.mel = mel[:, :, new_start - state.start :]
        state.start, state.emitted = new_start, end
        return out

    def _check_batch_size(self, batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")


def build_vocoder(name: str, preset: str | None, args: dict[str, Any]) -> Vocoder:
    """The vocoder ``name`` (alias or class name) from its ``preset``, with ``args`` overriding single arguments."""
    cls = resolve_class(name, Vocoder, "vocoder")
    if preset is not None and preset not in cls.presets:
        raise ValueError(
            f"vocoder {name!r} has no preset {preset!r}; available: {', '.join(cls.presets) or 'none'}"
        )
    return cls(**{**copy.deepcopy(cls.presets.get(preset, {})), **args})
