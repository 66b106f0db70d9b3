"""The listen path, chunk by chunk: user audio -> voice encoder ``step`` -> input projector ``step``.

Each chunk of the user channel becomes LLM-width embeddings, one per *audio frame* of the LLM
(``frame_seconds`` = the encoder's frame times the projector's ``downsample``). A fresh session first
emits ``leading_frames`` embeddings of the encoder's leading frames (SenseVoice's query frames): context
for the LLM, tied to no moment of the audio. Stage 4 computes its training features with the same
``Listener`` that a duplex session runs, so what the predictor learns from is what it will read.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from minmo_lightning.blocks import InputProjector, VoiceEncoder
from minmo_lightning.contracts import AudioBatch, SequenceBatch
from minmo_lightning.stream_state import StreamState

#: Full-Duplex-Bench and MinMo's 160 ms chunks; the listener rounds it to whole LLM audio frames.
DEFAULT_CHUNK_SECONDS = 0.16


@dataclass
class ListenState(StreamState):
    """The encoder's and the projector's session states."""

    encoder: StreamState
    projector: StreamState

    def end_input(self, items: Tensor | list[int]) -> None:
        super().end_input(items)
        self.encoder.end_input(items)
        self.projector.end_input(items)

    def reset(self, items: Tensor | list[int]) -> None:
        super().reset(items)
        self.encoder.reset(items)
        self.projector.reset(items)


class Listener:
    """Runs a voice encoder and an input projector as one stream of LLM audio-frame embeddings."""

    def __init__(
        self, encoder: VoiceEncoder, projector: InputProjector, chunk_seconds: float = DEFAULT_CHUNK_SECONDS
    ) -> None:
        if encoder.stream_leading_frames % projector.downsample:
            raise ValueError(
                f"{type(encoder).__name__} emits {encoder.stream_leading_frames} leading frames, not a multiple of "
                f"the projector's downsample {projector.downsample}: the audio frames would not line up"
            )
        self.encoder, self.projector = encoder, projector
        self.frame_samples = encoder.frame_samples * projector.downsample
        self.frame_seconds = self.frame_samples / encoder.sample_rate
        self.chunk_frames = max(1, round(chunk_seconds / self.frame_seconds))
        self.chunk_samples = self.chunk_frames * self.frame_samples
        self.leading_frames = encoder.stream_leading_frames // projector.downsample

    @property
    def chunk_seconds(self) -> float:
        return self.chunk_samples / self.encoder.sample_rate

    def init_state(self, batch_size: int) -> ListenState:
        return ListenState(
            batch_size,
            encoder=self.encoder.init_state(batch_size),
            projector=self.projector.init_state(batch_size),
        )

    @torch.no_grad()
    def step(self, chunk: AudioBatch, state: ListenState) -> SequenceBatch:
        """One chunk (``chunk_samples`` per row) -> its audio-frame embeddings, after a fresh row's leading ones."""
        if chunk.waveform.shape[1] != self.chunk_samples or bool((chunk.lengths != self.chunk_samples).any()):
            raise ValueError(
                f"the listener takes chunks of {self.chunk_samples} samples ({1000 * self.chunk_seconds:g} ms) per "
                f"row; got shape {tuple(chunk.waveform.shape)}, lengths {chunk.lengths.tolist()} (pad the last one)"
            )
        return self.projector.step(self.encoder.step(chunk, state.encoder), state.projector)

    @torch.no_grad()
    def listen(self, audio: AudioBatch) -> SequenceBatch:
        """A whole session as the chunks would stream it: ``[B, leading + frames, D]``, each row's audio padded
        with silence to whole chunks (lengths count the leading frames and the frames of the row's own
        chunks). The blocks' ``stream_offline`` computes it in a few batched calls, equal to ``step`` chunk
        by chunk (``tests/test_listening.py``)."""
        chunks = -(-int(audio.lengths.max()) // self.chunk_samples)
        waveform = torch.nn.functional.pad(
            audio.waveform, (0, chunks * self.chunk_samples - audio.waveform.shape[1])
        )
        full = torch.full_like(audio.lengths, waveform.shape[1])
        frames = self.encoder.stream_offline(
            AudioBatch(waveform, full, audio.sample_rate), self.chunk_samples
        )
        per_chunk = self.chunk_frames * self.projector.downsample
        sizes = [self.encoder.stream_leading_frames + per_chunk] + [per_chunk] * (chunks - 1)
        values = self.projector.stream_offline(frames, sizes).values
        row_chunks = -(-audio.lengths // self.chunk_samples)
        lengths = self.leading_frames + row_chunks.to(values.device) * self.chunk_frames
        return SequenceBatch(values, lengths)
