"""Audio I/O without torchcodec: soundfile decoding, mono mixdown, soxr band-limited resampling.

``datasets`` 5.x decodes ``Audio`` columns through torchcodec, which has no working build here; our
loaders cast every audio column to ``Audio(decode=False)`` and decode the stored value themselves.
A stored value is any of the forms users' datasets hold:

- ``{"bytes": b"...", "path": ...}`` (what ``Audio`` stores; ``bytes`` may be None when ``path`` is a file),
- ``{"array": [...], "sampling_rate": sr}`` (an already decoded example),
- a plain path string.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
import soxr


class AudioError(ValueError):
    """An audio value that cannot be used (unreadable, empty, NaN/Inf samples); loaders skip and count
    these. ``reason`` is the short key they are counted under."""

    def __init__(self, message: str, reason: str = "unreadable_audio") -> None:
        super().__init__(message)
        self.reason = reason


def _source(value: Any, base_dir: str | Path | None) -> Any:
    """File-like or path soundfile can open, from a stored value."""
    if isinstance(value, dict):
        data = value.get("bytes")
        if data:
            return io.BytesIO(data)
        value = value.get("path")
    if not value:
        raise AudioError("the audio value has neither bytes nor a path")
    path = Path(value)
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    if not path.is_file():
        raise AudioError(f"audio file {str(path)!r} does not exist")
    return str(path)


def resample(wave: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Band-limited resampling (soxr "HQ") of a mono float32 waveform."""
    if orig_rate == target_rate:
        return wave
    return soxr.resample(wave, orig_rate, target_rate, quality="HQ").astype(np.float32, copy=False)


def decode_audio(
    value: Any, target_rate: int | None = None, base_dir: str | Path | None = None
) -> tuple[np.ndarray, int]:
    """Stored audio value -> (mono float32 waveform, sample rate), resampled to ``target_rate`` if given.

    Several channels are mixed down to their mean; clipped audio is kept as it is (clipped speech is
    still speech). Raises ``AudioError`` for unreadable, empty (0 samples) or non-finite audio.
    """
    if isinstance(value, dict) and value.get("array") is not None:
        wave = np.asarray(value["array"], dtype=np.float32)
        rate = value.get("sampling_rate")
        if not rate:
            raise AudioError("an audio 'array' value needs its 'sampling_rate'")
        wave = wave.mean(axis=0) if wave.ndim == 2 and wave.shape[0] < wave.shape[1] else wave
        wave = wave.mean(axis=1) if wave.ndim == 2 else wave
    else:
        try:
            wave, rate = soundfile.read(_source(value, base_dir), dtype="float32", always_2d=True)
        except (soundfile.LibsndfileError, RuntimeError, TypeError) as error:
            raise AudioError(f"unreadable audio: {error}") from error
        wave = wave[:, 0] if wave.shape[1] == 1 else wave.mean(axis=1)
    if wave.size == 0:
        raise AudioError("empty audio (0 samples)", "empty_audio")
    bad = int(np.count_nonzero(~np.isfinite(wave)))
    if bad:
        raise AudioError(f"{bad} of {wave.size} samples are NaN or Inf", "non_finite_audio")
    if target_rate is not None:
        wave, rate = resample(np.ascontiguousarray(wave), int(rate), target_rate), target_rate
    return wave, int(rate)


def probe_duration(value: Any, base_dir: str | Path | None = None) -> float:
    """Duration in seconds from the header only (no decoding); raises ``AudioError`` if unreadable."""
    if isinstance(value, dict) and value.get("array") is not None:
        rate = value.get("sampling_rate") or 0
        samples = max(np.shape(value["array"]), default=0)  # [T], [C, T] or [T, C]
        return samples / rate if rate else 0.0
    try:
        info = soundfile.info(_source(value, base_dir))
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as error:
        raise AudioError(f"unreadable audio: {error}") from error
    return info.frames / info.samplerate if info.samplerate else 0.0
