"""Speech segments of a model's output channel from frame energy: the ``vad.json`` FDB's backchannel task reads.

FDB runs Silero VAD (``get_speech_timestamps`` with its defaults), which is not bundled here. This detector
keeps Silero's default durations (speech of at least 250 ms, split only at 100 ms of silence, 30 ms of padding
on each side) on a plain energy test: a 20 ms frame is speech when its level reaches -45 dBFS, the threshold of
``VADDuplexPredictor``. It suits synthesised output on a silent background; on noisy audio run Silero and write
``vad.json`` yourself (the judge keeps a ``vad.json`` newer than ``output.wav``).
"""

from __future__ import annotations

import math

import numpy as np

FRAME_S = 0.02
THRESHOLD_DB = -45.0
MIN_SPEECH_S = 0.25
MIN_SILENCE_S = 0.1
PAD_S = 0.03
NAME = "energy (-45 dBFS, 20 ms frames; Silero's default 250 ms / 100 ms / 30 ms durations)"


def frame_levels(wave: np.ndarray, rate: int) -> np.ndarray:
    """dBFS of each ``FRAME_S`` frame (the last one may be shorter)."""
    hop = max(1, round(FRAME_S * rate))
    count = -(-len(wave) // hop)
    padded = np.zeros(count * hop, dtype=np.float64)
    padded[: len(wave)] = wave
    frames = padded.reshape(count, hop)
    sizes = np.full(count, hop)
    sizes[-1] = len(wave) - (count - 1) * hop
    power = (frames**2).sum(1) / sizes
    return 10 * np.log10(np.maximum(power, 1e-10))


def speech_segments(wave: np.ndarray, rate: int) -> list[tuple[float, float]]:
    """``[(start_s, end_s), ...]`` of speech in ``wave``, rounded to ms (durations counted in whole frames)."""
    if len(wave) == 0:
        return []
    loud = frame_levels(wave, rate) >= THRESHOLD_DB
    edges = np.flatnonzero(np.diff(np.concatenate([[0], loud.astype(np.int8), [0]])))
    min_silence, min_speech = round(MIN_SILENCE_S / FRAME_S), math.ceil(MIN_SPEECH_S / FRAME_S - 1e-9)
    merged: list[list[int]] = []
    for start, end in zip(edges[::2].tolist(), edges[1::2].tolist()):
        if merged and start - merged[-1][1] < min_silence:
            merged[-1][1] = end
        else:
            merged.append([start, end])
    duration = len(wave) / rate
    return [
        (round(max(0.0, s * FRAME_S - PAD_S), 3), round(min(duration, e * FRAME_S + PAD_S), 3))
        for s, e in merged
        if e - s >= min_speech
    ]
