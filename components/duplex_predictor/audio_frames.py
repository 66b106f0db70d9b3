"""The user audio under a predictor's frames: frame k covers samples [k * hop, (k + 1) * hop)."""

from __future__ import annotations

from torch import Tensor

from minmo_lightning.contracts import AudioBatch


def frame_hop(frame_seconds: float, sample_rate: int) -> int:
    """Samples per frame at ``sample_rate`` (a whole number, or the frames would drift)."""
    hop = round(frame_seconds * sample_rate)
    if abs(hop - frame_seconds * sample_rate) > 1e-6:
        raise ValueError(
            f"frame_seconds={frame_seconds} is not a whole number of samples at {sample_rate} Hz"
        )
    return hop


def audio_of_frames(
    owner: str, audio: AudioBatch | None, lengths: Tensor, frame_seconds: float
) -> AudioBatch:
    """``audio`` once it is there and each row's samples end inside its last frame (``lengths`` [B])."""
    if audio is None:
        raise ValueError(
            f"{owner} listens to the user audio: pass DuplexFrames(audio=AudioBatch(...)) with the samples the "
            "frames cover"
        )
    hop = frame_hop(frame_seconds, audio.sample_rate)
    samples = audio.lengths.to(lengths.device)
    if audio.waveform.shape[0] != lengths.shape[0] or bool(
        ((samples > lengths * hop) | (samples <= (lengths - 1) * hop)).any()
    ):
        raise ValueError(
            f"{owner}: frame k covers samples [k * {hop}, (k + 1) * {hop}) (frame_seconds={frame_seconds} at "
            f"{audio.sample_rate} Hz), so frames {lengths.tolist()} need audio of more than (frames - 1) * {hop} "
            f"and at most frames * {hop} samples; got {samples.tolist()}. Set frame_seconds to the LLM's audio "
            "frame"
        )
    return audio
