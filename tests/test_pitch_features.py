"""Pitch features of the user channel: the tracker finds a tone's pitch, the held final pitch and slope say
whether speech ended falling or rising, streaming equals a whole sequence, and a predictor that hears pitch
learns a rule only pitch can tell."""

from __future__ import annotations

import dataclasses
import math

import lightning as L
import pytest
import torch
from minmo_lightning.components.duplex_predictor.pitch import FEATURES, PitchFeatures
from minmo_lightning.components.duplex_predictor.transformer import TransformerDuplexPredictor

from minmo_lightning.contracts import AudioBatch, DuplexFrames, SequenceBatch

RATE = 16000
FRAME = 0.12
HOP = 1920
VOICED, FINAL, SLOPE, SILENCE = (FEATURES.index(name) for name in FEATURES)


def voice(f0_start: float, f0_end: float, seconds: float, rate: int = RATE) -> torch.Tensor:
    """A vowel-like harmonic tone whose pitch glides from ``f0_start`` to ``f0_end`` (log-linear)."""
    t = torch.arange(round(seconds * rate), dtype=torch.float64) / rate
    f0 = f0_start * (f0_end / f0_start) ** (t / seconds)
    phase = 2 * math.pi * torch.cumsum(f0, 0) / rate
    wave = sum(torch.sin(k * phase) / k for k in range(1, 8))
    return (0.1 * wave).float()


def utterance(end_f0: float, rate: int = RATE) -> torch.Tensor:
    """1.2 s at 120 Hz, 0.36 s gliding to ``end_f0``, then 1.2 s of silence."""
    return torch.cat(
        [voice(120, 120, 1.2, rate), voice(120, end_f0, 0.36, rate), torch.zeros(round(1.2 * rate))]
    )


def features_of(waves: list[torch.Tensor], rate: int = RATE) -> torch.Tensor:
    audio = AudioBatch.from_list(waves, rate)
    frames = math.ceil(audio.waveform.shape[1] / (FRAME * rate))
    return PitchFeatures(FRAME)(audio, frames)


def test_a_steady_tone_is_voiced_at_its_pitch_and_silence_counts_up() -> None:
    tone = torch.cat([voice(150, 150, 1.2), torch.zeros(HOP * 12)])
    f = features_of([tone])[0]
    assert f.shape == (22, len(FEATURES))
    assert (f[1:10, VOICED] == 1).all()  # the first frame holds the analysis window's run-up
    assert f[1:10, FINAL].abs().max() < 0.05 and f[1:10, SLOPE].abs().max() < 0.05  # at the speaker's mean
    assert (f[-1, VOICED] == 0) and f[-1, SILENCE] == pytest.approx(1.0)  # capped at 1 s
    # frame 11 ends 0.24 s after the tone; its analysis window (57 ms) heard the tone until ~0.19 s before
    assert f[11, SILENCE] == pytest.approx(0.19, abs=0.02)


def test_the_tracker_measures_the_pitch_at_8_and_16_khz() -> None:
    for rate in (8000, 16000):
        tracker = PitchFeatures(FRAME)
        state = tracker.init_state(1, rate)
        wave = voice(180, 180, 0.5, rate)
        sub, window, shortest, longest, _ = tracker._sizes(rate)
        voiced, pitch = tracker._track(
            torch.cat([state.tail, wave[None]], 1), sub, window, shortest, longest, rate
        )
        assert voiced[0, 10:].all()
        expected = 12 * math.log2(180 / 100)
        assert pitch[0, 10:].sub(expected).abs().max() < 0.25  # a quarter semitone: the lag is whole samples


def test_a_pitch_far_from_the_speakers_mean_at_the_end_of_voicing_is_not_heard() -> None:
    """1.5 s at 120 Hz, then 50 ms that read as 390 Hz (what decaying speech gives at the shortest lags):
    the final pitch stays within a semitone of the speaker's (clipping it to 7 semitones above raised it 5.6)."""
    wave = torch.cat([voice(120, 120, 1.5), voice(390, 390, 0.05), torch.zeros(HOP * 6)])
    after = features_of([wave])[0, -3:]
    assert after[:, FINAL].abs().max() * 6 < 1.0  # semitones from the speaker's mean


def test_noise_is_not_voiced() -> None:
    noise = 0.1 * torch.randn(HOP * 10, generator=torch.Generator().manual_seed(0))
    assert features_of([noise])[0, :, VOICED].max() < 0.2


def test_the_final_pitch_and_slope_tell_a_fall_from_a_rise_and_hold_through_the_silence() -> None:
    f = features_of([utterance(80.0), utterance(170.0)])
    silent = slice(15, 22)  # frames of the silence after the glide
    fall, rise = f[0, silent], f[1, silent]
    assert (fall[:, FINAL] < -0.5).all() and (rise[:, FINAL] > 0.5).all()
    assert (fall[:, SLOPE] < -0.2).all() and (rise[:, SLOPE] > 0.2).all()
    torch.testing.assert_close(fall[:, FINAL], fall[:1, FINAL].expand(7))  # held


@pytest.mark.parametrize("sizes", [[1], [2, 5], [7, 1, 3]])
def test_streaming_equals_the_whole_sequence(sizes: list[int]) -> None:
    waves = [utterance(80.0), utterance(170.0)[: 20 * HOP - 500], voice(110, 90, 0.3)]
    audio = AudioBatch.from_list(waves, RATE)
    frames = math.ceil(audio.waveform.shape[1] / HOP)
    tracker = PitchFeatures(FRAME)
    whole = tracker(audio, frames)
    state, start, parts = tracker.init_state(3, RATE), 0, []
    while start < frames:
        size = min(sizes[len(parts) % len(sizes)], frames - start)
        chunk = AudioBatch(
            audio.waveform[:, start * HOP : (start + size) * HOP],
            (audio.lengths - start * HOP).clamp(0, size * HOP),
            RATE,
        )
        parts.append(tracker.step(chunk, size, state))
        start += size
    torch.testing.assert_close(torch.cat(parts, 1), whole, atol=1e-5, rtol=1e-5)


def test_a_reset_row_starts_over() -> None:
    tracker = PitchFeatures(FRAME)
    first, second = utterance(80.0)[: 10 * HOP], utterance(170.0)[: 10 * HOP]
    state = tracker.init_state(1, RATE)
    tracker.step(AudioBatch(first[None], torch.tensor([len(first)]), RATE), 10, state)
    state.reset([0])
    again = tracker.step(AudioBatch(second[None], torch.tensor([len(second)]), RATE), 10, state)
    torch.testing.assert_close(again, features_of([second]))


def test_a_chunk_without_frames_changes_nothing() -> None:
    tracker = PitchFeatures(FRAME)
    wave = utterance(80.0)[: 10 * HOP]
    state = tracker.init_state(1, RATE)
    empty = tracker.step(AudioBatch(torch.zeros(1, 0), torch.tensor([0]), RATE), 0, state)
    assert empty.shape == (1, 0, len(FEATURES))
    features = tracker.step(AudioBatch(wave[None], torch.tensor([len(wave)]), RATE), 10, state)
    torch.testing.assert_close(features, features_of([wave]))


def test_frames_must_be_whole_subframes() -> None:
    with pytest.raises(ValueError, match="whole 10 ms subframes"):
        PitchFeatures(0.125).init_state(1, RATE)


# ---- the predictor that hears pitch -----------------------------------------------------------------
def pitch_sessions(count: int, seed: int) -> tuple[DuplexFrames, torch.Tensor]:
    """Sessions whose hidden states say nothing: only the pitch says a speech end falls (label 1, ``respond``
    on the silent frames after it) or rises (0, keep listening)."""
    g = torch.Generator().manual_seed(seed)
    falls = torch.rand(count, generator=g) < 0.5
    waves = [
        utterance(float(torch.empty(1).uniform_(70, 90, generator=g)) if fall else 165.0) for fall in falls
    ]
    audio = AudioBatch.from_list(waves, RATE)
    frames = math.ceil(audio.waveform.shape[1] / HOP)
    hidden = SequenceBatch(torch.zeros(count, frames, 16), torch.full((count,), frames))
    labels = torch.zeros(count, frames, dtype=torch.long)
    labels[:, 15:17] = falls[:, None].long()
    return DuplexFrames(hidden, audio), labels


def pitch_predictor(**overrides) -> TransformerDuplexPredictor:
    settings = {"input_dim": 16, "model_dim": 32, "num_heads": 2, "ffn_dim": 64, "max_context_frames": 16}
    return TransformerDuplexPredictor(**settings | {"pitch_frame_seconds": FRAME} | overrides)


def test_a_predictor_that_hears_pitch_streams_as_it_runs_whole() -> None:
    model = pitch_predictor().eval()
    frames, _ = pitch_sessions(3, seed=1)
    whole = model(frames).logits
    state, parts = model.init_state(3), []
    for start in range(0, frames.hidden.values.shape[1], 4):
        hidden = frames.hidden.values[:, start : start + 4]
        n = hidden.shape[1]
        chunk = DuplexFrames(
            SequenceBatch(hidden, torch.full((3,), n)),
            AudioBatch(
                frames.audio.waveform[:, start * HOP : (start + n) * HOP], torch.full((3,), n * HOP), RATE
            ),
        )
        parts.append(model.step(chunk, state).logits)
    torch.testing.assert_close(torch.cat(parts, 1), whole, atol=1e-5, rtol=1e-5)


def test_a_predictor_that_hears_pitch_needs_the_audio() -> None:
    frames, _ = pitch_sessions(1, seed=0)
    with pytest.raises(ValueError, match="pass DuplexFrames\\(audio="):
        pitch_predictor()(DuplexFrames(frames.hidden))


def test_only_a_predictor_that_hears_pitch_learns_a_pitch_rule() -> None:
    train, train_labels = pitch_sessions(24, seed=2)
    test, test_labels = pitch_sessions(16, seed=3)
    scores = {}
    for hears in (True, False):
        L.seed_everything(0)
        model = pitch_predictor(pitch_frame_seconds=FRAME if hears else None, class_weights=[1.0, 4.0, 1.0])
        # computed once, as stage 4 caches them per session
        features = model.audio_features(train.audio, train.hidden.values.shape[1])
        cached = dataclasses.replace(train, audio_features=features)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        for _ in range(150):
            loss = model.frame_loss(model(cached), train_labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        decided = model.eval()(test).decisions()[:, 15:17]
        scores[hears] = (decided == test_labels[:, 15:17]).float().mean().item()
    assert scores[True] >= 0.95, scores
    assert scores[False] <= 0.8, scores


def test_cached_audio_features_must_fit_the_frames() -> None:
    frames, _ = pitch_sessions(2, seed=0)
    model = pitch_predictor()
    features = model.audio_features(frames.audio, frames.hidden.values.shape[1])
    torch.testing.assert_close(
        model(dataclasses.replace(frames, audio_features=features)).logits, model(frames).logits
    )
    with pytest.raises(ValueError, match="audio_features"):
        model(dataclasses.replace(frames, audio_features=features[:, :-1]))
