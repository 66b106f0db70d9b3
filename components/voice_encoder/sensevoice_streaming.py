"""``SenseVoiceEncoder`` chunk by chunk: bounded per-layer caches, equal to the chunked offline encoder.

Attention sees the current chunk and at most ``stream_left_frames`` frames before it, the FSMN reads zeros
past the chunk's end, and the four query frames (the same for every session) are encoded once, alone; see
the module docstring of ``sanm`` for the chunked function this equals.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from minmo_lightning.components.voice_encoder.sanm import ChunkLayout
from minmo_lightning.components.voice_encoder.sensevoice_queries import NUM_QUERIES
from torch import Tensor

from minmo_lightning.blocks import whole_chunks
from minmo_lightning.contracts import AudioBatch, SequenceBatch
from minmo_lightning.stream_state import StreamState


@dataclass
class SenseVoiceStreamState(StreamState):
    """Per-session streaming state; every cache is bounded (``left`` frames per layer).

    ``samples`` [B, R]: waveform tail not yet framed; ``last_fbank`` [B, P, n_mels]: fbank frames LFR still
    needs; ``fresh`` [B]: the query frames are still to be emitted; ``positions`` [B]: frames encoded so far;
    ``cache`` [B, layers, left, 2d] right-aligned keys/values with ``cache_len`` [B] valid slots.
    ``query_cache`` / ``query_out``: the query frames' keys/values and outputs, the same for every session.
    """

    samples: Tensor
    last_fbank: Tensor
    fresh: Tensor
    positions: Tensor
    cache: Tensor
    cache_len: Tensor
    query_cache: Tensor
    query_out: Tensor

    def reset(self, items: Tensor | list[int]) -> None:
        """Rows restart with the query frames already in their cache (``query_cache`` is not per row)."""
        rows = self.rows(items)
        self.samples[rows] = 0
        self.last_fbank[rows] = 0
        self.fresh[rows] = True
        self.positions[rows] = NUM_QUERIES
        self.cache[rows] = self.query_cache
        self.cache_len[rows] = min(NUM_QUERIES, self.cache.shape[2])
        self.input_ended[rows] = False


class SenseVoiceStreaming:
    """``init_state`` / ``step`` of ``SenseVoiceEncoder`` (no stream options: every session is the same)."""

    def _stream_geometry(self) -> tuple[int, int, int]:
        """(samples per LFR frame, waveform tail kept between chunks, fbank frames kept for LFR)."""
        fbank, m, n = self.frontend.fbank, self.frontend.lfr_m, self.frontend.lfr_n
        lag = -(-(fbank.window_size - fbank.shift) // fbank.shift)  # frames a fresh stream starts behind
        keep = (m - 1) // 2 - lag
        if keep < 0 or m - 1 - (m - 1) // 2 != n // 2:
            raise ValueError(
                f"streaming supports LFR windows centred on their hop (m=7, n=6); got m={m}, n={n}"
            )
        return fbank.shift * n, lag * fbank.shift, keep

    @torch.no_grad()
    def init_state(self, batch_size: int, options: None = None) -> SenseVoiceStreamState:
        """Fresh sessions; the query frames (the same for every session) are encoded once here."""
        left = self.hparams.stream_left_frames
        if left < self.encoder.layers[0].self_attn.pad_left:
            raise ValueError(f"stream_left_frames must cover the FSMN's left taps; got {left}")
        _, tail, keep = self._stream_geometry()
        layers, width = len(self.encoder.layers), 2 * self.output_dim
        empty = self.embed.weight.new_zeros(1, layers, left, width)
        queries = self.embed(self.query_rows(1))
        query_out, query_kv = self.encoder.step(
            queries, torch.zeros(1, dtype=torch.long), empty, torch.zeros(1, dtype=torch.long)
        )
        query_cache = torch.cat([empty, query_kv], dim=2)[0, :, -left:]
        device = self.embed.weight.device
        state = SenseVoiceStreamState(
            batch_size=batch_size,
            samples=torch.zeros(batch_size, tail, device=device),
            last_fbank=torch.zeros(batch_size, keep, self.hparams.n_mels, device=device),
            fresh=torch.ones(batch_size, dtype=torch.bool, device=device),
            positions=torch.zeros(batch_size, dtype=torch.long, device=device),
            cache=empty.new_zeros(batch_size, layers, left, width),
            cache_len=torch.zeros(batch_size, dtype=torch.long, device=device),
            query_cache=query_cache,
            query_out=query_out[0],
            options=options,
        )
        state.reset(torch.ones(batch_size, dtype=torch.bool))
        return state

    def stream_offline(self, audio: AudioBatch, chunk_samples: int) -> SequenceBatch:
        """All that ``step`` emits for ``audio`` in chunks of ``chunk_samples`` (full-length rows), in one call:
        the chunked offline encoder ``step`` equals (queries first, then every chunk's frames)."""
        hop, who = self._stream_geometry()[0], type(self).__name__
        audio.require(self.sample_rate, who=f"{who}.stream_offline")
        if chunk_samples % hop:
            raise ValueError(
                f"{who}.stream_offline: chunks hold a multiple of {hop} samples; got {chunk_samples}"
            )
        whole_chunks(audio.waveform.shape[1], audio.lengths, chunk_samples, who)
        feats, lengths = self.frontend(audio.waveform, audio.lengths)
        layout = ChunkLayout(NUM_QUERIES, chunk_samples // hop, self.hparams.stream_left_frames)
        out, lengths = self.encode(feats, lengths, chunks=layout)
        return SequenceBatch(out, lengths)

    @torch.no_grad()
    def step(self, chunk: AudioBatch, state: SenseVoiceStreamState) -> SequenceBatch:
        """Encode one chunk (a multiple of 60 ms, the same length for every session).

        Returns the frames that became final: the four query frames first for a fresh session, then one
        frame per 60 ms of audio. Equals ``encode(..., chunks=ChunkLayout(4, N, stream_left_frames))`` on
        the same audio, where ``N`` is the chunk's frame count (see the module docstring of ``sanm``).
        Nothing is held back between chunks, so ``state.end_input`` has nothing to flush.
        """
        hop, tail, keep = self._stream_geometry()
        chunk.require(self.sample_rate, who=f"{type(self).__name__}.step")
        samples = chunk.waveform.shape[1]
        if (
            samples % hop
            or bool((chunk.lengths != samples).any())
            or chunk.waveform.shape[0] != state.batch_size
        ):
            raise ValueError(
                f"streaming chunks must hold a multiple of {hop} samples ({hop / self.sample_rate * 1000:g} ms) for "
                f"every one of the {state.batch_size} sessions (full lengths); got shape {tuple(chunk.waveform.shape)} "
                f"with lengths {chunk.lengths.tolist()}"
            )
        frames_per_chunk = samples // hop
        fbank = self.frontend.fbank
        buffer = torch.cat([state.samples, chunk.waveform.float()], dim=1)
        state.samples = buffer[:, buffer.shape[1] - tail :].clone()
        frames = fbank.frames_to_fbank(
            buffer.unfold(1, fbank.window_size, fbank.shift) * 32768.0, fbank.window, fbank.banks
        )
        lag = tail // fbank.shift
        pad = (self.frontend.lfr_m - 1) // 2
        fresh_stack = torch.cat([frames[:, lag : lag + 1].expand(-1, pad, -1), frames[:, lag:]], dim=1)
        steady_stack = torch.cat([state.last_fbank, frames], dim=1)
        stack = torch.where(state.fresh[:, None, None], fresh_stack, steady_stack)
        state.last_fbank = stack[:, stack.shape[1] - keep :].clone()
        lfr = stack.unfold(1, self.frontend.lfr_m, self.frontend.lfr_n).transpose(2, 3).flatten(2)
        lfr = self.frontend.apply_cmvn(lfr, torch.full_like(state.positions, frames_per_chunk))
        out, kv = self.encoder.step(lfr, state.positions, state.cache, state.cache_len)
        left = state.cache.shape[2]
        state.cache = torch.cat([state.cache, kv], dim=2)[:, :, -left:]
        state.cache_len = (state.cache_len + frames_per_chunk).clamp(max=left)
        state.positions = state.positions + frames_per_chunk
        fresh = state.fresh.clone()
        state.fresh[:] = False
        if not bool(fresh.any()):
            return SequenceBatch(out, torch.full_like(state.positions, frames_per_chunk))
        queries = state.query_out.expand(out.shape[0], -1, -1)
        padded = torch.cat([out, out.new_zeros(out.shape[0], NUM_QUERIES, out.shape[2])], dim=1)
        values = torch.where(fresh[:, None, None], torch.cat([queries, out], dim=1), padded)
        return SequenceBatch(values, frames_per_chunk + NUM_QUERIES * fresh.long())
