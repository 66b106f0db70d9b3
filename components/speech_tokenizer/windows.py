"""The long-audio window policy: how audio over 30 s becomes tokens.

The encoder was trained on at most 30 s (3000 mel frames). Longer audio is cut into 30 s windows
that start every 26 s (4 s overlap). Each window is encoded on its own; from the overlap between two
neighbours, the first half (2 s = 50 tokens) comes from the earlier window and the second half from
the later one, so every kept token saw at least 2 s of context on both sides, and window boundaries
fall on the 25 Hz token grid (26 s = 650 tokens), so the merged sequence has exactly one token per
40 ms, like a short clip.

This is the official S3Tokenizer policy (30 s windows, 4 s overlap, keep the middle) with one
correction: a new window starts only while the previous one has not reached the end of the audio.
The official loop also starts a window inside the last overlap (e.g. for 53 s of audio) whose tokens
are then all dropped, together with the tail of the window before it, losing up to 2 s of tokens.
Both policies give the same tokens whenever that case does not occur.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Window:
    """One encoder window over an utterance: mel frames ``[start, end)``, tokens ``[keep_from, keep_to)`` kept."""

    item: int
    start: int
    end: int
    keep_from: int
    keep_to: int | None


@dataclass(frozen=True)
class WindowPolicy:
    window_frames: int = 3000
    overlap_frames: int = 400
    frames_per_token: int = 4

    def __post_init__(self) -> None:
        if self.overlap_frames % (2 * self.frames_per_token) or self.overlap_frames >= self.window_frames:
            raise ValueError(
                f"overlap_frames ({self.overlap_frames}) must be a multiple of {2 * self.frames_per_token} "
                f"(half of it on the token grid) and shorter than window_frames ({self.window_frames})"
            )

    def split(self, item: int, frames: int) -> list[Window]:
        """Windows covering ``frames`` mel frames; one window when the clip fits."""
        if frames <= self.window_frames:
            return [Window(item, 0, frames, 0, None)]
        stride = self.window_frames - self.overlap_frames
        drop = self.overlap_frames // 2 // self.frames_per_token
        windows, start = [], 0
        while True:
            end = min(start + self.window_frames, frames)
            last = end == frames
            windows.append(Window(item, start, end, drop if start else 0, None if last else -drop))
            if last:
                return windows
            start += stride
