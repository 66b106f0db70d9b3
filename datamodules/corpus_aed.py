"""Audio event detection: synthetic non-speech sounds mixed under or between speech, with exact onsets.

The planner draws the speech (an English sentence, or none); the worker lays the clip out and mixes
the events (``mix_events``), so the onsets it reports are the samples it mixed at. The answer a model
learns is ``minmo_lightning.answers.render_events(events)``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
from minmo_lightning.datamodules.corpus_plan import (
    EventClip,
    PlanInputs,
    Planned,
    distinct_splits,
    numbered,
    user_says,
    utterance_row,
)
from minmo_lightning.datamodules.corpus_text import draw_exchange, punctuate

EVENT_LABELS = ("tone", "chirp", "click", "noise", "buzz")
"""tone: a sine beep; chirp: a frequency sweep; click: a few-ms decaying burst; noise: a white-noise
burst; buzz: a sawtooth hum."""
SPEECH_PROBABILITY = 0.8
"""The other clips hold events (or nothing) over a faint noise floor, and an empty transcript."""
EVENT_COUNTS, EVENT_COUNT_WEIGHTS = (0, 1, 2, 3), (1, 3, 3, 2)
EVENT_GAP = 0.3
"""Seconds between one event's end and the next one's onset (onsets stay apart at 0.1 s resolution)."""
EVENT_LEVEL_DB = (6.0, 12.0)
"""An event's RMS over its first ``ONSET_WINDOW`` s, in dB above the louder of the speech's active RMS
(``SILENT_CLIP_LEVEL`` without speech) and the clip's RMS within ``ONSET_WINDOW`` of the onset: an event
always stands out where it starts, under speech too."""
ONSET_WINDOW = 0.02
SILENT_CLIP_LEVEL = 0.05
_FADE = 0.001


def _fade(sound: np.ndarray, sample_rate: int) -> np.ndarray:
    n = min(int(_FADE * sample_rate), len(sound) // 2)
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, n + 1)[1:])  # the first sample already sounds
    sound[:n] *= ramp
    sound[len(sound) - n :] *= ramp[::-1]
    return sound


def event_sound(label: str, rng: random.Random, noise: np.random.Generator, sample_rate: int) -> np.ndarray:
    """One event's waveform, unscaled (float64)."""
    if label == "click":
        t = np.arange(int(0.008 * sample_rate)) / sample_rate
        return noise.standard_normal(len(t)) * np.exp(-t / 0.0015)
    if label == "noise":
        return _fade(noise.standard_normal(int(rng.uniform(0.1, 0.5) * sample_rate)), sample_rate)
    t = np.arange(int(rng.uniform(0.15, 0.6) * sample_rate)) / sample_rate
    if label == "tone":
        wave = np.sin(2 * np.pi * rng.uniform(300, 2000) * t + rng.uniform(0, 2 * np.pi))
    elif label == "chirp":
        low, high = rng.uniform(300, 1000), rng.uniform(1500, 4000)
        start, end = (low, high) if rng.random() < 0.5 else (high, low)
        wave = np.sin(2 * np.pi * (start * t + (end - start) * t**2 / (2 * t[-1])))
    elif label == "buzz":
        wave = 2 * ((rng.uniform(80, 200) * t) % 1.0) - 1
    else:
        raise ValueError(f"no sound for event label {label!r}; labels: {EVENT_LABELS}")
    return _fade(wave, sample_rate)


def _rms(wave: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(wave)))) if len(wave) else 0.0


def mix_events(rng: random.Random, speech: np.ndarray, sample_rate: int) -> tuple[np.ndarray, list[dict]]:
    """Lay out a clip (silence, speech, silence; or 1.5-3.5 s without speech) and mix 0-3 events into it at
    random onsets, each at least ``EVENT_GAP`` s from the others, at ``EVENT_LEVEL_DB``. Returns the float32 clip and the events
    (``label``, ``onset``, ``offset`` in seconds, exact to the sample, in onset order)."""
    noise = np.random.default_rng(rng.getrandbits(64))
    lead = int(rng.uniform(0.2, 0.8) * sample_rate)
    tail = int(rng.uniform(0.3, 1.0) * sample_rate)
    length = lead + len(speech) + tail if len(speech) else int(rng.uniform(1.5, 3.5) * sample_rate)
    clip = noise.standard_normal(length) * 10 ** (rng.uniform(-65, -55) / 20)  # the noise floor
    clip[lead : lead + len(speech)] += speech
    active = speech[np.abs(speech) > 0.01]
    level = _rms(active) if len(active) else SILENT_CLIP_LEVEL
    margin, gap = int(0.05 * sample_rate), int(EVENT_GAP * sample_rate)
    placed: list[tuple[int, int, str]] = []
    for _ in range(rng.choices(EVENT_COUNTS, EVENT_COUNT_WEIGHTS)[0]):
        label = rng.choice(EVENT_LABELS)
        sound = event_sound(label, rng, noise, sample_rate)
        for _try in range(50):
            onset = rng.randrange(margin, max(margin + 1, length - len(sound) - margin))
            end = onset + len(sound)
            if end <= length and all(end + gap <= on or onset >= off + gap for on, off, _ in placed):
                break
        else:
            continue  # no room left: the event is not mixed (the events listed are the ones mixed)
        window = min(int(ONSET_WINDOW * sample_rate), len(sound))
        reference = max(level, _rms(clip[max(0, onset - window) : onset + window]))
        gain = reference * 10 ** (rng.uniform(*EVENT_LEVEL_DB) / 20) / _rms(sound[:window])
        clip[onset:end] += gain * sound
        placed.append((onset, end, label))
    peak = float(np.abs(clip).max())
    if peak > 0.95:
        clip *= 0.95 / peak
    events = [
        {"label": label, "onset": onset / sample_rate, "offset": end / sample_rate}
        for onset, end, label in sorted(placed)
    ]
    return clip.astype(np.float32), events


def plan_aed(inputs: PlanInputs) -> Iterator[Planned]:
    rng = inputs.own_rng
    sentences = distinct_splits(inputs, draw_exchange, lambda exchange: exchange.user)
    for split, _, key, exchange in numbered("aed", sentences):
        if rng.random() < SPEECH_PROBABILITY:
            speech = user_says(rng, punctuate(exchange.user, exchange.question))
            meta = {"id": key, "text": exchange.user, "speaker": speech.voice}
        else:
            speech, meta = None, {"id": key, "text": "", "speaker": ""}
        yield split, EventClip(rng.getrandbits(31), speech), meta


def event_row(meta: dict, result: dict, frame_rate: float) -> dict:
    return {**utterance_row(meta, result, frame_rate), "events": result["events"]}
