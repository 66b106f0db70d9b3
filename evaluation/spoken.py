"""Spoken output, judged by listening: the ``tts`` and ``s2s`` tasks of ``minmo evaluate``.

A model speaks (``MinMo.predict_speech`` / ``predict_spoken_answer``; the runner writes each clip as
``audio/<id>.output_audio.wav``); an ASR judge transcribes the clip and the transcript is scored against the
text the model was asked to speak (tts) or its own text answer (s2s), with the normaliser and unit of the
``asr`` task. Beside it, the ceiling: the reference speech tokens through the same token2wav and judge
(``ceiling_audio``), scored against the reference text: what the vocoder and judge allow at best. Also the
duration ratio (spoken seconds over the ceiling's). The judge (``judge`` setting) is a ``SenseVoiceEncoder``
checkpoint with its CTC head (default: the tiny encoder ``minmo demo`` trains, read through
``asr_judge.transcribe``) or a speech-to-text ``MinMo`` checkpoint (its ``transcribe``). Transcripts are kept in the records (``hypothesis``, ``ceiling_hypothesis``), so
rescoring needs no audio; the WAVs of the first ``keep_wavs`` records (by id) stay with the report, the
others are deleted once judged. Clip paths are relative to the report directory (as the runner writes them)
or absolute (records from elsewhere: never deleted).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile
import torch
from minmo_lightning.evaluation.asr import score_asr
from minmo_lightning.evaluation.asr_judge import SAMPLE_RATE
from minmo_lightning.evaluation.normalizers import get_scheme
from minmo_lightning.evaluation.report import md_table
from minmo_lightning.evaluation.scorers import Scored, asr_report

#: the clip fields a record may name (``<field>_path``), and the transcript field each one fills
CLIPS = {"output_audio": "hypothesis", "ceiling_audio": "ceiling_hypothesis"}


def spoken_report(records: list[dict], settings: dict, out_dir: Path) -> Scored:
    judge = _Judge(settings.get("judge"))
    for record in records:
        for clip, transcript in CLIPS.items():
            path = record.get(f"{clip}_path")
            if path is None:
                continue
            path = out_dir / path  # relative to the report directory (as the runner writes them), or absolute
            if transcript not in record:
                record[transcript] = judge(path)
            if f"{clip}_seconds" not in record and path.is_file():
                record[f"{clip}_seconds"] = soundfile.info(str(path)).duration
    missing = [r["id"] for r in records if "hypothesis" not in r]
    if missing:
        raise ValueError(
            f"records {missing[:5]} have no spoken output to judge (output_audio_path) and no transcript "
            "(hypothesis); run the model with `minmo evaluate --config ... --ckpt ...`"
        )
    scored = asr_report(records, settings, out_dir)
    metric = next(iter(k for k in ("wer", "cer", "mer") if k in scored.summary))
    with_ceiling = [r for r in scored.records if "ceiling_hypothesis" in r]
    ceiling = None
    if with_ceiling:
        scheme = get_scheme(settings.get("normalizer", "whisper_english"), settings.get("unit"))
        ceiling = score_asr(
            [r.get("ceiling_reference", r["reference"]) for r in with_ceiling],
            [r["ceiling_hypothesis"] for r in with_ceiling],
            ids=[r["id"] for r in with_ceiling],
            scheme=scheme,
        ).rate
    spoken = sum(r.get("output_audio_seconds", 0.0) for r in with_ceiling)
    reference = sum(r.get("ceiling_audio_seconds", 0.0) for r in with_ceiling)
    extra = {
        f"ceiling_{metric}": ceiling,
        f"{metric}_over_ceiling": scored.summary[metric] / ceiling if ceiling else None,
        "duration_ratio": spoken / reference if reference else None,
    }
    answered = [r for r in scored.records if "ceiling_reference" in r]
    if answered:  # s2s: the model's own text answer against the corpus answer (how garbled the text side is)
        scheme = get_scheme(settings.get("normalizer", "whisper_english"), settings.get("unit"))
        extra[f"answer_text_{metric}"] = score_asr(
            [r["ceiling_reference"] for r in answered],
            [r["reference"] for r in answered],
            ids=[r["id"] for r in answered],
            scheme=scheme,
        ).rate
    scored.summary.update(extra)
    scored.metrics.update(extra, judge=str(judge.path) if judge.path else None)
    _keep_first_wavs(scored.records, out_dir, int(settings.get("keep_wavs", 20)))
    table = md_table(
        [metric.upper(), f"ceiling {metric.upper()}", "ratio to ceiling", "duration ratio", "judge"],
        [
            [
                scored.summary[metric],
                ceiling,
                extra[f"{metric}_over_ceiling"],
                extra["duration_ratio"],
                judge.name,
            ]
        ],
    )
    note = (
        "Spoken output transcribed by the judge and scored against the text it should say; the ceiling is the "
        "reference speech tokens through the same token2wav and judge. Examples: the WAVs under audio/."
    )
    if answered:
        note += (
            f" The model's text answers against the corpus answers: {metric.upper()} "
            f"{extra[f'answer_text_{metric}']:.4f} (its speech is scored against its own text, words the "
            "voice decoder never heard included)."
        )
    scored.sections.insert(0, ("Spoken output", table + "\n\n" + note))
    return scored


class _Judge:
    """The ASR judge, loaded on first use (records that already hold transcripts need none): a
    ``SenseVoiceEncoder`` checkpoint (greedy CTC, ``asr_judge.transcribe``) or a speech-to-text ``MinMo``
    checkpoint (its ``transcribe``: the stage-1c model hears the built-in voices far better than the CTC head)."""

    def __init__(self, checkpoint: str | None) -> None:
        from minmo_lightning.evaluation.asr_judge import default_checkpoint

        self.path = Path(checkpoint) if checkpoint else default_checkpoint()
        self._transcribe = None

    @property
    def name(self) -> str:
        return self.path.name if self.path else "none"

    def _load(self):
        from minmo_lightning.evaluation.asr_judge import JudgeError, load_judge, transcribe

        from minmo_lightning.checkpoints import read_checkpoint
        from minmo_lightning.contracts import AudioBatch

        if self.path is None:
            raise JudgeError(
                "no ASR judge: set metrics.judge to a SenseVoiceEncoder checkpoint trained with CTC (the tiny one: "
                "minmo fit --config recipes/components/voice_encoder_ctc.yaml) or a speech-to-text MinMo checkpoint"
            )
        if "llm" in (read_checkpoint(self.path, mmap=True).get("hyper_parameters") or {}):
            from minmo_lightning.model import MinMo

            model = MinMo.load_from_checkpoint(str(self.path), map_location="cpu").eval()
            return lambda wave: model.transcribe(AudioBatch.from_list([torch.from_numpy(wave)], SAMPLE_RATE))[
                0
            ]
        encoder = load_judge(self.path)
        return lambda wave: transcribe(encoder, wave)["text"]

    def __call__(self, path: Path) -> str:
        from minmo_lightning.datamodules.audio import decode_audio

        if self._transcribe is None:
            self._transcribe = self._load()
        if soundfile.info(str(path)).frames == 0:
            return ""  # the model said nothing: every reference word is a deletion
        wave, _ = decode_audio(str(path), target_rate=SAMPLE_RATE)
        return self._transcribe(np.ascontiguousarray(wave, dtype=np.float32))


def _keep_first_wavs(records: list[dict], out_dir: Path, keep: int) -> None:
    """Delete the clips the runner wrote under ``out_dir`` beyond the first ``keep`` records (never a file
    that records name elsewhere)."""
    for rank, record in enumerate(sorted(records, key=lambda r: r["id"])):
        if rank < keep:
            continue
        for clip in CLIPS:
            path = record.get(f"{clip}_path")
            if path is not None and not Path(path).is_absolute():
                (out_dir / path).unlink(missing_ok=True)
