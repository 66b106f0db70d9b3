"""Prosody measured on a recording, for scoring instruction-controlled speech: how long its speech lasts once
leading and trailing silence are trimmed, per phoneme (speaking rate), and its median F0 (pitch).

Silence is trimmed by frame energy (``energy_vad.frame_levels``, 20 ms frames): speech runs from the first
to the last frame within ``trim_db`` of the loudest one (and above -70 dBFS), so pauses inside the utterance
count as speech time, as they do for a listener. F0 comes from Praat's autocorrelation pitch tracker
(``parselmouth``, ``Sound.to_pitch_ac``) between ``floor_hz`` and ``ceiling_hz``; its median is taken over
voiced frames only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import parselmouth
import soundfile
from minmo_lightning.evaluation.energy_vad import FRAME_S, frame_levels

#: what measures F0, for the report
PITCH_TRACKER = f"Praat {parselmouth.PRAAT_VERSION} autocorrelation (parselmouth {parselmouth.__version__})"
#: no frame quieter than this counts as speech, however quiet the loudest one is
SILENCE_FLOOR_DB = -70.0


def read_mono(path: str | Path) -> tuple[np.ndarray, int]:
    """A WAV (any rate), channels averaged."""
    wave, rate = soundfile.read(str(path), dtype="float64", always_2d=True)
    return wave.mean(axis=1), int(rate)


def speech_seconds(wave: np.ndarray, rate: int, trim_db: float) -> float:
    """Seconds from the first to the last speech frame (0 when nothing reaches the level)."""
    levels = frame_levels(np.asarray(wave, dtype=np.float64), rate)
    if len(levels) == 0:
        return 0.0
    loud = np.flatnonzero(levels >= max(levels.max() - trim_db, SILENCE_FLOOR_DB))
    if len(loud) == 0:
        return 0.0
    end = min((loud[-1] + 1) * FRAME_S, len(wave) / rate)  # the last frame may be shorter
    return float(end - loud[0] * FRAME_S)


def phoneme_count(phonemes: int | str | Sequence[str]) -> int:
    """A count as given, the items of a list, or the space-separated symbols of a string."""
    if isinstance(phonemes, int):
        return phonemes
    return len(phonemes.split() if isinstance(phonemes, str) else phonemes)


def median_f0_hz(wave: np.ndarray, rate: int, floor_hz: float, ceiling_hz: float) -> float | None:
    """Median F0 over voiced frames (``None``: no voiced frame, or too short for one analysis window of three
    periods of ``floor_hz``)."""
    if len(wave) < 3 * rate / floor_hz:
        return None
    sound = parselmouth.Sound(np.asarray(wave, dtype=np.float64), sampling_frequency=rate)
    f0 = sound.to_pitch_ac(pitch_floor=floor_hz, pitch_ceiling=ceiling_hz).selected_array["frequency"]
    voiced = f0[f0 > 0]
    return float(np.median(voiced)) if len(voiced) else None
