"""Stage 4's pieces: windowed streaming of encoders and projectors, the listen path, the time-ordered duplex
context, and the duplex objective (only the predictor learns; states cached; labels at the right rate)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from builders import FramingTestEncoder, tiny_minmo
from minmo_lightning.components.duplex_predictor.transformer import TransformerDuplexPredictor
from minmo_lightning.components.input_projector.projectors import TransformerConvProjector
from minmo_lightning.components.voice_encoder.sensevoice import SenseVoiceEncoder
from minmo_lightning.components.voice_encoder.whisper import WhisperEncoder
from minmo_lightning.datamodules.timeline import frame_labels

from minmo_lightning.contracts import IGNORE_INDEX, AudioBatch, SequenceBatch
from minmo_lightning.duplex_context import TimedText, assistant_speaking, lay_out
from minmo_lightning.listening import Listener

STAGE4 = {"voice_encoder": "frozen", "input_projector": "frozen", "llm": "frozen", "duplex_predictor": "full"}


def test_windowed_encoder_step_is_forward_on_its_window() -> None:
    """Whisper has no incremental form: each chunk's frames are ``forward`` on the last 2 s + the chunk."""
    encoder = WhisperEncoder.from_preset("tiny").eval()
    encoder.configure_model()
    chunk, window = 4 * encoder.frame_samples, round(encoder.stream_left_seconds * encoder.sample_rate)
    audio = 0.1 * torch.randn(2, 12 * chunk)
    state = encoder.init_state(2)
    for k in range(12):
        piece = audio[:, k * chunk : (k + 1) * chunk]
        out = encoder.step(AudioBatch(piece, torch.full((2,), chunk), 16000), state)
        start = max(0, (k + 1) * chunk - chunk - window)
        whole = encoder(
            AudioBatch(audio[:, start : (k + 1) * chunk], torch.full((2,), (k + 1) * chunk - start), 16000)
        )
        torch.testing.assert_close(out.values, whole.values[:, -4:], atol=1e-5, rtol=1e-4)
    assert state.context.shape[1] == window  # bounded however long the session runs


def test_windowed_projector_rows_keep_their_own_context() -> None:
    """Resetting one row restarts its context only; ragged chunk lengths stay per row."""
    projector = TransformerConvProjector.from_preset("tiny").eval()
    frames = torch.randn(2, 40, projector.input_dim)
    state = projector.init_state(2)
    outputs = []
    for k in range(10):
        outputs.append(
            projector.step(SequenceBatch(frames[:, 4 * k : 4 * k + 4], torch.tensor([4, 4])), state)
        )
        if k == 4:
            state.reset([1])
    fresh = projector.init_state(1)
    for k in range(5, 10):
        alone = projector.step(SequenceBatch(frames[1:, 4 * k : 4 * k + 4], torch.tensor([4])), fresh)
        torch.testing.assert_close(outputs[k].values[1], alone.values[0])
    ragged = projector.step(
        SequenceBatch(torch.randn(2, 4, projector.input_dim), torch.tensor([4, 2])), state
    )
    assert ragged.lengths.tolist() == [2, 1]
    with pytest.raises(ValueError, match="multiple of downsample=2"):
        projector.step(SequenceBatch(torch.randn(2, 3, projector.input_dim), torch.tensor([3, 3])), state)


def test_listener_emits_leading_frames_once_then_one_embedding_per_frame() -> None:
    encoder = SenseVoiceEncoder.from_preset(
        "tiny", output_size=32, attention_heads=2, linear_units=64, num_layers=2, tp_layers=1, cmvn_file=None
    ).eval()
    projector = TransformerConvProjector.from_preset("tiny").eval()
    listener = Listener(encoder, projector)
    assert (listener.frame_seconds, listener.leading_frames, listener.chunk_frames) == (0.12, 2, 1)
    audio = AudioBatch(0.1 * torch.randn(2, 16000), torch.tensor([16000, 9000]), 16000)
    whole = listener.listen(audio)
    assert whole.lengths.tolist() == [2 + 9, 2 + 5]  # 1 s -> 9 chunks of 120 ms (padded), 0.56 s -> 5
    state = listener.init_state(2)
    padded = torch.nn.functional.pad(audio.waveform, (0, 9 * listener.chunk_samples - 16000))
    steps = [
        listener.step(AudioBatch(padded[:, k * 1920 : (k + 1) * 1920], torch.full((2,), 1920), 16000), state)
        for k in range(9)
    ]
    assert steps[0].values.shape[1] == 3 and steps[1].values.shape[1] == 1
    torch.testing.assert_close(torch.cat([s.values for s in steps], 1), whole.values)
    with pytest.raises(ValueError, match="chunks of 1920 samples"):
        listener.step(AudioBatch(torch.zeros(2, 960), torch.full((2,), 960), 16000), state)


def test_context_puts_texts_between_the_frames_of_their_moment() -> None:
    frames = SequenceBatch(100 + torch.arange(12.0).reshape(2, 6, 1), torch.tensor([6, 4]))
    texts = [[TimedText(0.25, (7, 8)), TimedText(0.5, (9,))], [TimedText(10.0, (5,))]]
    context = lay_out(frames, 1, 0.1, texts, [1, 2], lambda ids: ids[..., None].float())
    assert context.embeds[0, :, 0].tolist() == [1, 2, 100, 101, 102, 103, 7, 8, 104, 105]
    assert context.embeds[1, :6, 0].tolist() == [1, 2, 106, 107, 108, 109]  # its text comes after its audio
    assert context.attention_mask.sum(1).tolist() == [10, 6]
    assert context.audio_states(context.embeds).values[0, :, 0].tolist() == [101, 102, 103, 104, 105]
    speaking = assistant_speaking([[{"type": "assistant_speech", "start": 0.2, "end": 0.4}], []], 5, 0.1)
    assert speaking.tolist() == [[False, False, True, True, False], [False] * 5]


def _duplex_batch(frame_seconds: float) -> dict:
    events = [
        [
            {"type": "user_speech", "start": 0.0, "end": 0.8, "text": "turn on the light"},
            {"type": "turn_end", "start": 0.8, "end": 0.8, "text": ""},
            {"type": "assistant_speech", "start": 1.0, "end": 1.8, "text": "done"},
        ],
        [
            {"type": "user_speech", "start": 0.1, "end": 0.9, "text": "what time is it"},
            {"type": "turn_end", "start": 0.9, "end": 0.9, "text": ""},
        ],
    ]
    lengths = [32000, 24000]
    labels = [
        torch.from_numpy(frame_labels(e, n / 16000, 1 / frame_seconds, 0.24)) for e, n in zip(events, lengths)
    ]
    return {
        "ids": ["a", "b"],
        "user_audio": AudioBatch(0.1 * torch.randn(2, 32000), torch.tensor(lengths), 16000),
        "frame_labels": torch.nn.utils.rnn.pad_sequence(labels, batch_first=True, padding_value=IGNORE_INDEX),
        "frame_lengths": torch.tensor([len(x) for x in labels]),
        "events": events,
    }


def _stage4(**overrides):
    predictor = TransformerDuplexPredictor.from_preset("tiny", input_dim=64)
    return tiny_minmo(
        objective="duplex", duplex_predictor=predictor, trainable=STAGE4, tasks=["asr"], **overrides
    )


def test_duplex_objective_trains_only_the_predictor_and_caches_states() -> None:
    model = _stage4(cache_duplex_states=True)
    batch = _duplex_batch(model.listener.frame_seconds)
    loss, metrics = model.duplex_objective(batch)
    loss.backward()
    trained = {n.split(".")[0] for n, p in model.named_parameters() if p.grad is not None}
    assert trained == {"duplex_predictor"} and torch.isfinite(loss) and "frame_acc" in metrics
    assert set(model._duplex_states) == {"a", "b"}
    frames, labels = model.duplex_frames(batch)  # now from the cache: the same states
    fresh, _ = _stage4_copy(model).duplex_frames(batch)
    torch.testing.assert_close(frames.hidden.values, fresh.hidden.values)
    assert (
        frames.hidden.lengths.tolist() == batch["frame_lengths"].tolist()
        and labels.shape == batch["frame_labels"].shape
    )
    records = model.predict_step(batch, 0)
    assert [len(r["predicted_labels"]) for r in records] == batch["frame_lengths"].tolist()


def test_a_predictor_that_hears_pitch_gets_its_features_from_the_cache_as_fresh() -> None:
    predictor = TransformerDuplexPredictor.from_preset("tiny", input_dim=64, pitch_frame_seconds=0.08)
    model = tiny_minmo(
        objective="duplex",
        duplex_predictor=predictor,
        trainable=STAGE4,
        tasks=["asr"],
        cache_duplex_states=True,
    ).eval()
    batch = _duplex_batch(model.listener.frame_seconds)
    assert model.listener.frame_seconds == pytest.approx(0.08)
    t = torch.arange(32000) / 16000
    batch["user_audio"].waveform[0] = (
        0.1 * torch.sin(2 * math.pi * 150 * t) * (t < 0.8)
    )  # a tone, then silence
    fresh, _ = model.duplex_frames(batch)
    cached, _ = model.duplex_frames(batch)
    assert fresh.audio_features.shape == (*fresh.hidden.values.shape[:2], 4)
    assert fresh.audio_features[0, 2, 0] == 1.0  # frame 2 is voiced
    torch.testing.assert_close(cached.audio_features, fresh.audio_features)
    labels = model.duplex_frames(batch)[1]
    recomputed = model.duplex_predictor(dataclasses.replace(fresh, audio_features=None))  # from the audio
    loss = model.duplex_predictor.frame_loss(recomputed, labels)
    torch.testing.assert_close(model.duplex_objective(batch)[0], loss)
    model.duplex_predictor.pitch.frame_seconds = 0.12
    model._duplex_states.clear()
    with pytest.raises(ValueError, match="set pitch_frame_seconds to the LLM's audio frame"):
        model.duplex_frames(batch)


def _stage4_copy(model):
    clone = _stage4()
    clone.load_state_dict(model.state_dict())
    return clone.eval()


def test_labels_at_another_rate_name_the_fix() -> None:
    model = _stage4()
    batch = _duplex_batch(model.listener.frame_seconds * 2)
    with pytest.raises(ValueError, match=r"set the duplex datamodule's frame_rate to 12.5"):
        model.duplex_objective(batch)


def test_stage4_needs_a_duplex_predictor() -> None:
    with pytest.raises(ValueError, match="needs a duplex_predictor"):
        tiny_minmo(objective="duplex", trainable={k: v for k, v in STAGE4.items() if k != "duplex_predictor"})


def test_framing_encoder_streams_through_the_default_window() -> None:
    """Any encoder plugs into the listen path: the test encoder has no step of its own."""
    encoder = FramingTestEncoder.from_preset("tiny")
    state = encoder.init_state(1)
    out = encoder.step(AudioBatch(torch.randn(1, 1280), torch.tensor([1280]), 16000), state)
    assert out.lengths.tolist() == [2]
