"""SenseVoice streaming: bounded per-layer caches, exact against the chunked offline function.

Documented difference from full-context inference: attention sees the current chunk and at most
``stream_left_frames`` frames before it (never the future), the FSMN reads zeros past the chunk end, and the
four query frames are encoded alone once. Given that, streaming equals ``encode(..., chunks=ChunkLayout)``
exactly, and a causal FSMN with attention switched off makes it equal to full-context inference.
"""

from __future__ import annotations

import pytest
import torch
from minmo_lightning.components.voice_encoder.sanm import ChunkLayout
from minmo_lightning.components.voice_encoder.sensevoice import SenseVoiceEncoder

from minmo_lightning.contracts import AudioBatch

HOP = 960  # samples per 60 ms LFR frame


def tiny(**overrides) -> SenseVoiceEncoder:
    torch.manual_seed(0)
    args = dict(
        output_size=32, attention_heads=2, linear_units=64, num_layers=2, tp_layers=1, stream_left_frames=7
    )
    block = SenseVoiceEncoder.from_preset("tiny", **{**args, **overrides}).eval()
    for norm in [m for m in block.modules() if isinstance(m, torch.nn.LayerNorm)]:
        torch.nn.init.normal_(norm.bias, std=0.1)  # nothing trivially zero
    return block


def _stream(block: SenseVoiceEncoder, waves: torch.Tensor, frames_per_chunk: int) -> torch.Tensor:
    state = block.init_state(waves.shape[0])
    outputs = []
    for start in range(0, waves.shape[1], frames_per_chunk * HOP):
        piece = waves[:, start : start + frames_per_chunk * HOP]
        out = block.step(AudioBatch(piece, torch.full((waves.shape[0],), piece.shape[1]), 16000), state)
        assert bool((out.lengths == out.values.shape[1]).all())
        outputs.append(out.values)
    return torch.cat(outputs, dim=1)


def _offline(block: SenseVoiceEncoder, waves: torch.Tensor, chunks: ChunkLayout | None) -> torch.Tensor:
    feats, lengths = block.frontend(waves, torch.full((waves.shape[0],), waves.shape[1]))
    with torch.no_grad():
        return block.encode(feats, lengths, chunks=chunks)[0]


@pytest.mark.parametrize("frames_per_chunk", [2, 5])
def test_streaming_equals_chunked_offline(frames_per_chunk: int) -> None:
    block = tiny()
    block.frontend.set_cmvn(torch.stack([torch.full((560,), -10.0), torch.full((560,), 0.2)]))
    torch.manual_seed(1)
    waves = torch.randn(2, 4 * frames_per_chunk * HOP) * 0.1
    streamed = _stream(block, waves, frames_per_chunk)
    chunked = _offline(block, waves, ChunkLayout(4, frames_per_chunk, block.hparams.stream_left_frames))
    assert streamed.shape == chunked.shape == (2, 4 + 4 * frames_per_chunk, 32)
    torch.testing.assert_close(streamed, chunked, atol=2e-5, rtol=1e-4)
    full = _offline(block, waves, None)
    assert (streamed - full).abs().max() > 1e-3  # the documented difference: bounded, causal context


def test_causal_fsmn_without_attention_streams_exactly() -> None:
    """FSMN memory crosses chunk boundaries through the cache: with left-only taps and attention off the
    network is causal, so streaming must equal full-context inference frame for frame."""
    block = tiny(sanm_shift=5, stream_left_frames=10)
    for layer in block.encoder.layers:
        torch.nn.init.zeros_(layer.self_attn.linear_out.weight)
        torch.nn.init.zeros_(layer.self_attn.linear_out.bias)
    torch.manual_seed(2)
    waves = torch.randn(1, 12 * HOP) * 0.1
    torch.testing.assert_close(_stream(block, waves, 3), _offline(block, waves, None), atol=2e-5, rtol=1e-4)


def test_reset_restarts_one_session_only() -> None:
    block = tiny()
    torch.manual_seed(3)
    before, after = torch.randn(2, 3 * HOP) * 0.1, torch.randn(2, 3 * HOP) * 0.1
    state = block.init_state(2)
    full = lambda waves: AudioBatch(waves, torch.full((2,), waves.shape[1]), 16000)  # noqa: E731
    block.step(full(before), state)
    state.end_input([1])
    state.reset([1])
    assert state.input_ended.tolist() == [False, False]
    out = block.step(full(after), state)
    assert out.lengths.tolist() == [3, 7]
    fresh = block.step(full(after), block.init_state(2))
    continued = block.init_state(2)
    block.step(full(before), continued)
    torch.testing.assert_close(out.values[1], fresh.values[1])
    torch.testing.assert_close(out.values[0, :3], block.step(full(after), continued).values[0])


def test_state_is_bounded() -> None:
    block = tiny()
    state = block.init_state(1)
    sizes = []
    for _ in range(6):
        block.step(AudioBatch(torch.randn(1, 4 * HOP) * 0.1, torch.tensor([4 * HOP]), 16000), state)
        sizes.append(sum(t.numel() for t in vars(state).values() if isinstance(t, torch.Tensor)))
    assert len(set(sizes)) == 1 and state.cache.shape[2] == block.hparams.stream_left_frames


def test_bad_chunks_are_rejected() -> None:
    block = tiny()
    state = block.init_state(1)
    with pytest.raises(ValueError, match="multiple of 960 samples"):
        block.step(AudioBatch(torch.zeros(1, 1000), torch.tensor([1000]), 16000), state)
    with pytest.raises(ValueError, match="expects 16000 Hz"):
        block.step(AudioBatch(torch.zeros(1, 960), torch.tensor([960]), 8000), state)
    with pytest.raises(ValueError, match="FSMN"):
        tiny(stream_left_frames=3).init_state(1)
