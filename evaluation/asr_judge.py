"""``minmo asr-judge``: FDB's ``get_transcript/asr.py`` with a CTC voice encoder of ours as the ASR.

    minmo asr-judge --root fdb_builtin [--ckpt runs/tiny/voice_encoder/checkpoints/last.ckpt]

For every sample folder under ROOT with an ``output.wav`` (what ``minmo chat --fdb-root`` writes; any sample
rate, resampled to the encoder's 16 kHz) it writes ``output.json`` in FDB's format, ``{"text", "chunks":
[{"text": word, "timestamp": [start_s, end_s]}]}``, seconds on the input timeline, and ``vad.json`` (speech
segments, ``energy_vad``) for the backchannel task; a ``vad.json`` newer than ``output.wav`` is kept. No words
gives ``{"text": "", "chunks": []}``. A folder with ``interrupt.json`` (user interruption) is cropped at
``interrupt.json[0].timestamp[1]`` before recognition and that time is added back to every word, as FDB's
``asr.py`` does, so words spoken before the end of the interruption are not in ``output.json``. Folders whose
``output.json`` is newer than ``output.wav`` are skipped, so an interrupted run resumes. Stereo is mixed down;
a folder whose ``output.wav`` cannot be judged (unreadable, empty, NaN/Inf samples) gets no ``output.json``
(a stale one is removed), is listed with the cause, and the others are judged (exit status 1);
``minmo evaluate fdb`` then lists it among the samples it could not score.

Word times come from the greedy CTC path: the argmax token of each CTC frame, a token emitted where it
differs from the previous frame's and is not blank. CTC frame k covers ``[k d, (k + 1) d)`` with d the
encoder's frame (60 ms for SenseVoice) over its CTC slots per frame (2 for the tiny encoder: 30 ms); a word
runs from the start of the frame that emits its first token to the end of the frame that emits its last.
Words split at the tokenizer's word boundary: the space token of the char tokenizer, a ``▁``-prefixed piece
of sentencepiece; tag tokens (``<|en|>``, ``<s>``...) are dropped. A token emitted on a frame whose centre lies
more than ``VOICED_TOLERANCE`` s outside every speech segment of the (cropped) audio (``energy_vad``) is
dropped too, and no word runs across two segments: the tiny encoder emits letters on silence, most at the
start of a clip, and one such "word" spanning a second of silence would count as a take-over; and it often
emits no space at a pause. A model's output channel is digital silence between its answers, so the gate
removes nothing it said.

The judge is a ``SenseVoiceEncoder`` Lightning checkpoint with a CTC head trained with it (the tiny encoder
``minmo demo`` trains, the default). FDB uses parakeet-tdt-0.6b-v2: a judge this small misses or garbles
words, and a missed word changes the take-over rule (> 3 words or >= 1 s), so compare systems under one judge
and do not put these figures beside FDB's published ones without saying so. CTC peaks are also
sharper than a transducer's word boundaries: a word's end is where its last letter is emitted, up to a
few frames before the sound ends.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from minmo_lightning.evaluation import energy_vad
from torch import Tensor

SAMPLE_RATE = 16000
#: below this (s) there is nothing to recognise; the frontend would give no frame
MIN_SECONDS = 0.1
#: where ``minmo demo`` trains the tiny encoder: --full first (the longer run), then the hour plan
DEFAULT_FOLDERS = ("runs/tiny/voice_encoder", "runs/demo/voice_encoder")
DEFAULT_CKPT_GLOB = "**/last.ckpt"
DEFAULT_NAME = " or ".join(f"{folder}/{DEFAULT_CKPT_GLOB}" for folder in DEFAULT_FOLDERS)
CTC_WEIGHT = "ctc.ctc_lo.weight"
#: how far outside a speech segment a token's frame centre may lie and count (s): one SenseVoice frame
VOICED_TOLERANCE = 0.06


class JudgeError(ValueError):
    """A root or a checkpoint the judge cannot use."""


def default_checkpoint() -> Path | None:
    """The newest last.ckpt of the first ``DEFAULT_FOLDERS`` entry that has one."""
    for folder in DEFAULT_FOLDERS:
        found = sorted(Path(folder).glob(DEFAULT_CKPT_GLOB), key=lambda p: p.stat().st_mtime)
        if found:
            return found[-1]
    return None


def load_judge(checkpoint: str | Path, device: str = "cpu"):
    """A ``SenseVoiceEncoder`` with its CTC head and tokenizer, from its Lightning checkpoint, in eval mode."""
    from minmo_lightning.components.voice_encoder.sensevoice import SenseVoiceEncoder

    path = Path(checkpoint)
    if not path.is_file():
        raise JudgeError(f"judge checkpoint {path} not found")
    state = torch.load(path, map_location="cpu", weights_only=False)
    weights = state.get("state_dict") if isinstance(state, dict) else None
    if not isinstance(weights, dict):
        raise JudgeError(f"{path} is not a Lightning checkpoint (no 'state_dict')")
    if CTC_WEIGHT not in weights:
        if any(key.endswith("." + CTC_WEIGHT) for key in weights):
            raise JudgeError(
                f"{path} holds a voice encoder inside a larger model; its CTC head does not train there "
                "(SenseVoiceEncoder.transcribe). Pass the encoder trained alone: "
                f"{DEFAULT_NAME}"
            )
        raise JudgeError(
            f"{path} has no CTC head ({CTC_WEIGHT}): the judge needs a SenseVoiceEncoder trained with CTC "
            "(minmo fit --config recipes/components/voice_encoder_ctc.yaml)"
        )
    encoder = SenseVoiceEncoder.load_from_checkpoint(str(path), map_location=device)
    if encoder.tokenizer is None:
        raise JudgeError(f"{path}: the encoder has no tokenizer, so its CTC tokens cannot be read as words")
    return encoder.eval()


@torch.no_grad()
def ctc_log_probs(encoder, wave: np.ndarray) -> tuple[Tensor, float]:
    """CTC log-probabilities ``[frames, vocab]`` of the speech frames of a 16 kHz ``wave``, and the seconds
    of one CTC frame."""
    from minmo_lightning.components.voice_encoder.sensevoice_queries import NUM_QUERIES

    from minmo_lightning.contracts import AudioBatch

    device = next(encoder.parameters()).device
    audio = AudioBatch(torch.from_numpy(wave)[None].to(device), torch.tensor([len(wave)]), SAMPLE_RATE)
    encoder.check_head()  # a head a later stage left behind its body reads wrong words
    encoded = encoder(audio)
    slots = encoder.ctc.slots
    logits = encoder.ctc(encoded.values)[0, NUM_QUERIES * slots :]
    frames = (int(encoded.lengths[0]) - NUM_QUERIES) * slots
    return logits[:frames].float().log_softmax(-1).cpu(), 1.0 / (encoder.frame_rate * slots)


def greedy_emissions(log_probs: Tensor, blank_id: int = 0) -> list[tuple[int, int]]:
    """``(token, frame)`` of every token the greedy CTC path emits (``ctc.greedy_ctc``'s tokens, with frames)."""
    emitted, previous = [], blank_id
    for frame, token in enumerate(log_probs.argmax(-1).tolist()):
        if token != blank_id and token != previous:
            emitted.append((token, frame))
        previous = token
    return emitted


def speech_segment(time: float, speech: list[tuple[float, float]]) -> int | None:
    """Index of the speech segment within ``VOICED_TOLERANCE`` s of ``time``, else None."""
    tol = VOICED_TOLERANCE
    return next((k for k, (s, e) in enumerate(speech) if s - tol <= time <= e + tol), None)


def words_from_ctc(
    log_probs: Tensor,
    frame_seconds: float,
    tokenizer,
    offset: float = 0.0,
    speech: list[tuple[float, float]] | None = None,
) -> list[dict]:
    """FDB chunks ``[{"text", "timestamp": [start, end]}]`` from the greedy path (see module docstring).

    ``speech``: segments (s, on the log-probs' own timeline) outside which emissions are dropped and across
    which no word runs; None keeps every emission."""
    from minmo_lightning.components.voice_encoder.tokenizer import BLANK_ID

    words: list[tuple[str, int, int]] = []  # text, first frame, last frame
    open_word, segment = False, 0
    for token, frame in greedy_emissions(log_probs, BLANK_ID):
        piece = tokenizer.id_to_token(token)
        if speech is not None:
            here = speech_segment((frame + 0.5) * frame_seconds, speech)
            if here is None:
                continue
            open_word, segment = open_word and here == segment, here
        if piece.startswith("<") and piece.endswith(">"):
            continue
        if piece.strip() in ("", "▁"):
            open_word = False
            continue
        if piece.startswith("▁"):
            open_word, piece = False, piece[1:]
        if open_word:
            text, first, _ = words[-1]
            words[-1] = (text + piece, first, frame)
        else:
            words.append((piece, frame, frame))
            open_word = True
    return [
        {
            "text": text,
            "timestamp": [
                round(offset + first * frame_seconds, 3),
                round(offset + (last + 1) * frame_seconds, 3),
            ],
        }
        for text, first, last in words
    ]


def read_output(path: Path) -> tuple[np.ndarray, int]:
    """``output.wav`` as mono float32 at its own rate; ``AudioError`` (a ValueError) when it is unreadable,
    empty or holds NaN/Inf samples."""
    from minmo_lightning.datamodules.audio import decode_audio

    wave, rate = decode_audio(str(path))
    return np.ascontiguousarray(wave), rate


def interruption_end(folder: Path) -> float | None:
    """``interrupt.json[0].timestamp[1]`` when the folder is a user-interruption sample, else None."""
    path = folder / "interrupt.json"
    if not path.is_file():
        return None
    try:
        return float(json.loads(path.read_text())[0]["timestamp"][1])
    except (ValueError, IndexError, KeyError, TypeError) as error:
        raise JudgeError(f"{path}: expected [{{'timestamp': [start, end], ...}}] ({error})") from error


def transcribe(encoder, wave: np.ndarray, offset: float = 0.0) -> dict:
    """FDB's ``output.json`` of a 16 kHz ``wave`` whose sample 0 lies at ``offset`` s on the input timeline."""
    if len(wave) < MIN_SECONDS * SAMPLE_RATE:
        return {"text": "", "chunks": []}
    speech = energy_vad.speech_segments(wave, SAMPLE_RATE)
    if not speech:
        return {"text": "", "chunks": []}
    log_probs, frame_seconds = ctc_log_probs(encoder, wave)
    chunks = words_from_ctc(log_probs, frame_seconds, encoder.tokenizer, offset, speech)
    return {"text": " ".join(c["text"] for c in chunks), "chunks": chunks}


class EmotionJudge:
    """The emotion a SenseVoice encoder trained alone hears in a clip (its emotion tag): the voice-control
    task's ``metrics.emotion_judge``, ``{class_path: minmo_lightning.evaluation.asr_judge.EmotionJudge}``
    (``init_args: {checkpoint: ...}``; default: the tiny encoder run, ``DEFAULT_FOLDERS``)."""

    def __init__(self, checkpoint: str | None = None) -> None:
        path = checkpoint or default_checkpoint()
        if path is None:
            raise JudgeError(
                "no emotion judge: give init_args.checkpoint, a SenseVoiceEncoder trained alone (minmo fit "
                "--config recipes/components/voice_encoder_ctc.yaml)"
            )
        self.encoder = load_judge(path)

    @torch.no_grad()
    def __call__(self, wave: np.ndarray, sample_rate: int) -> str:
        from minmo_lightning.datamodules.audio import resample

        from minmo_lightning.contracts import AudioBatch

        clip = torch.from_numpy(resample(wave.astype(np.float32), sample_rate, SAMPLE_RATE))
        device = next(self.encoder.parameters()).device
        audio = AudioBatch(clip[None].to(device), torch.tensor([len(clip)], device=device), SAMPLE_RATE)
        return self.encoder.transcribe(audio)[0].emotion.strip("<|>").lower()  # "<|happy|>" -> "happy"


def _newer(path: Path, than: Path) -> bool:
    return path.is_file() and path.stat().st_mtime > than.stat().st_mtime


def judge_folder(encoder, folder: Path) -> dict:
    """Write ``vad.json`` (unless a newer one is there) and then ``output.json`` for one sample folder."""
    from minmo_lightning.datamodules.audio import resample

    output = folder / "output.wav"
    wave, rate = read_output(output)
    if not _newer(folder / "vad.json", output):
        segments = [list(s) for s in energy_vad.speech_segments(wave, rate)]
        vad = {"duration": len(wave) / rate, "segments": segments, "vad": energy_vad.NAME}
        (folder / "vad.json").write_text(json.dumps(vad))
    wave = resample(wave, rate, SAMPLE_RATE)
    crop = interruption_end(folder)
    if crop is not None:
        wave = wave[min(len(wave), round(crop * SAMPLE_RATE)) :]
    result = transcribe(encoder, wave, crop or 0.0)
    (folder / "output.json").write_text(json.dumps(result, indent=1))
    return result


def judge_root(root: str | Path, encoder) -> tuple[int, int, list[str]]:
    """Judge every folder under ``root`` with an ``output.wav``: (judged, skipped as up to date, one line per
    folder that could not be judged)."""
    root = Path(root)
    if not root.is_dir():
        raise JudgeError(f"{root} is not a directory")
    folders = sorted(p.parent for p in root.rglob("output.wav"))
    if not folders:
        raise JudgeError(
            f"no output.wav under {root}: run `minmo chat --ckpt CKPT --fdb-root {root}` first "
            "(it writes output.wav beside every input.wav)"
        )
    judged, failed = 0, []
    for folder in folders:
        if _newer(folder / "output.json", folder / "output.wav"):
            continue
        try:
            judge_folder(encoder, folder)
        except (ValueError, RuntimeError) as error:  # unreadable audio, longer than the encoder takes...
            (folder / "output.json").unlink(missing_ok=True)  # never score a stale answer
            failed.append(f"{folder}: {error}")
            continue
        judged += 1
    return judged, len(folders) - judged - len(failed), failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="minmo asr-judge", description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, type=Path, help="FDB folders with output.wav")
    parser.add_argument(
        "--ckpt",
        type=Path,
        help=f"SenseVoiceEncoder checkpoint (default: the newest {DEFAULT_NAME})",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    try:
        checkpoint = args.ckpt or default_checkpoint()
        if checkpoint is None:
            raise JudgeError(
                f"no --ckpt and no {DEFAULT_NAME}: train the tiny encoder (`minmo demo`) or "
                "pass a SenseVoiceEncoder checkpoint"
            )
        judged, skipped, failed = judge_root(args.root, load_judge(checkpoint, args.device))
    except JudgeError as error:
        print(f"minmo asr-judge: {error}", file=sys.stderr)
        return 2
    print(
        f"{judged} output.json written, {skipped} up to date (judge: {checkpoint}); score with "
        f"`minmo evaluate fdb --task TASK --root {args.root}/TASK`"
    )
    if failed:
        print(f"minmo asr-judge: {len(failed)} folders not judged (no output.json):", file=sys.stderr)
        print("\n".join(f"  {line}" for line in failed), file=sys.stderr)
    return 1 if failed else 0
