"""The listen path at once (``stream_offline``) equals it chunk by chunk (``step``): what stage 4 trains on is
what a duplex session hears, for SenseVoice's own incremental form and for the windowed default (Whisper, the
projectors), over sessions long enough that the windows fill and slide."""

from __future__ import annotations

import pytest
import torch
from minmo_lightning.components.input_projector.projectors import ConvProjector, TransformerConvProjector
from minmo_lightning.components.voice_encoder.sensevoice import SenseVoiceEncoder
from minmo_lightning.components.voice_encoder.whisper import WhisperEncoder

from minmo_lightning.contracts import AudioBatch, SequenceBatch
from minmo_lightning.listening import Listener
from minmo_lightning.windowed import windowed_all


def stepped(listener: Listener, waveform: torch.Tensor) -> torch.Tensor:
    state, size = listener.init_state(waveform.shape[0]), listener.chunk_samples
    full = torch.full((waveform.shape[0],), size)
    pieces = [
        listener.step(AudioBatch(waveform[:, k : k + size], full, 16000), state).values
        for k in range(0, waveform.shape[1], size)
    ]
    return torch.cat(pieces, dim=1)


def sensevoice() -> SenseVoiceEncoder:
    torch.manual_seed(0)
    args = dict(output_size=32, attention_heads=2, linear_units=64, num_layers=2, tp_layers=1, cmvn_file=None)
    return SenseVoiceEncoder.from_preset("tiny", **args, stream_left_frames=5).eval()


def whisper() -> WhisperEncoder:
    torch.manual_seed(0)
    encoder = WhisperEncoder.from_preset("tiny")
    encoder.configure_model()
    encoder.stream_left_seconds = 0.3  # the window fills within the session
    return encoder.eval()


@pytest.mark.parametrize(
    ("encoder", "projector", "chunk_seconds"),
    [
        (sensevoice, TransformerConvProjector, 0.12),
        (sensevoice, TransformerConvProjector, 0.36),
        (whisper, ConvProjector, 0.16),
    ],
)
def test_listening_at_once_equals_chunk_by_chunk(encoder, projector, chunk_seconds) -> None:
    block = encoder()
    torch.manual_seed(1)
    mapper = projector.from_preset("tiny", input_dim=block.output_dim).eval()
    mapper.stream_left_frames = 6  # windows of 6 frames: they slide after a few chunks
    listener = Listener(block, mapper, chunk_seconds)
    chunks = 12
    waveform = 0.1 * torch.randn(2, chunks * listener.chunk_samples)
    lengths = torch.tensor([waveform.shape[1], waveform.shape[1] - listener.chunk_samples - 5])
    whole = listener.listen(AudioBatch(waveform, lengths, 16000))
    torch.testing.assert_close(whole.values, stepped(listener, waveform), atol=2e-5, rtol=1e-4)
    leading, per_chunk = listener.leading_frames, listener.chunk_frames
    assert whole.lengths.tolist() == [leading + chunks * per_chunk, leading + (chunks - 1) * per_chunk]


def test_windowed_all_groups_windows_and_keeps_each_chunks_outputs() -> None:
    """A forward that reports its window (first input, length) shows which inputs each chunk saw."""

    def forward(values: torch.Tensor, lengths: torch.Tensor) -> SequenceBatch:
        first = values[:, :1].expand(-1, values.shape[1], -1)
        seen = torch.cat([first, lengths[:, None, None].expand(-1, values.shape[1], 1).float()], dim=2)
        return SequenceBatch(seen, lengths)

    inputs = torch.arange(14.0)[None, :, None].repeat(2, 1, 1)
    out = windowed_all(forward, inputs, [4, 2, 2, 2, 2, 2], [2, 1, 1, 1, 1, 1], window=4, max_rows=3)
    assert out.shape == (2, 7, 2)
    # chunk ends 4, 6, 8, ...: windows start at max(0, previous end - 4)
    assert out[0, :, 0].tolist() == [0, 0, 0, 2, 4, 6, 8] and out[0, :, 1].tolist() == [4, 4, 6, 6, 6, 6, 6]
    with pytest.raises(ValueError, match="whole number of 1920-sample chunks"):
        whisper().stream_offline(AudioBatch(torch.zeros(1, 2000), torch.tensor([2000]), 16000), 1920)
    with pytest.raises(ValueError, match="multiple of 960 samples"):
        sensevoice().stream_offline(AudioBatch(torch.zeros(1, 2000), torch.tensor([2000]), 16000), 1000)
    with pytest.raises(ValueError, match="whole number of 1920-sample chunks"):
        sensevoice().stream_offline(AudioBatch(torch.zeros(2, 3840), torch.tensor([3840, 1920]), 16000), 1920)
