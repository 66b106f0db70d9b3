"""What the corpus planners share: sizes, voices, the jobs handed to the synthesis workers, plan inputs.

``corpus_tasks`` (the table) and the family modules (``corpus_*.py``, one per task family) both import
this module, so a family module never imports the table. Nothing here loads espeak-ng or ``datasets``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from minmo_lightning.datamodules.corpus_text import Exchange, draw_distinct
from minmo_lightning.datamodules.timeline import DuplexConfig

ESPEAK_RATE = 22050
ENCODER_RATE = 16000
SPEECH_OUT_RATE = 24000
"""The rate of MinMo's generated speech (token2wav): the voice-control targets are written at it."""
USER_VOICES = (
    "en-us",
    "en-us+f2",
    "en",
    "en+f4",
    "en-GB-x-rp+m3",
    "en-US-nyc+m5",
    "en-GB-scotland",
    "en-029+f1",
)
"""User voices; the emotion set holds the last two out of training (``test_unseen_voices``)."""
HELD_OUT_VOICES = 2
ASSISTANT_VOICE = {"name": "en-us+f3", "rate": 165, "pitch": 55}
"""The one fixed voice of the assistant (tts, s2s answers, duplex assistant channel, voice control)."""
STYLES = ("neutral", "happy", "sad", "angry")
"""Prosody styles of the emotion proxy: (rate factor, pitch offset, volume, pitch range) per style."""
STYLE_PROSODY = {
    "neutral": (1.0, 0, 100, 50),
    "happy": (1.15, 15, 110, 85),
    "sad": (0.8, -15, 60, 25),
    "angry": (1.15, 5, 170, 20),
}


@dataclass(frozen=True)
class CorpusSize:
    """How many sentences / sessions / rows each task gets: ``{task}_train``, and ``{task}_eval`` for
    validation and test each."""

    asr_train: int = 8000
    asr_eval: int = 300
    emotion_train: int = 480
    emotion_eval: int = 120
    tts_train: int = 2000
    tts_eval: int = 100
    s2s_train: int = 2000
    s2s_eval: int = 100
    duplex_train: int = 300
    duplex_eval: int = 20
    s2tt_train: int = 1000
    s2tt_eval: int = 100
    lid_train: int = 1000
    lid_eval: int = 100
    speaker_train: int = 1000
    speaker_eval: int = 100
    aed_train: int = 1000
    aed_eval: int = 100
    sqa_train: int = 1000
    sqa_eval: int = 100
    dialogue_train: int = 600
    dialogue_eval: int = 60
    voice_control_train: int = 4800
    """Styled readings: at 600 the voice decoder learnt its training rows (loss 1.9) and not the styles
    (held-out loss 3.2)."""
    voice_control_eval: int = 60
    turn_pieces_train: int = 3000
    turn_pieces_eval: int = 100
    tts_more_train: int = 6000
    """TTS training sentences beyond ``tts_train``, from the task's own generator: no other task changes."""
    tts_voice_lm_train: int = 24000
    """Further TTS sentences in their own split, ``voice_lm_train``: the voice token LM trained alone reads
    them beside ``train`` (text -> speech tokens needs many sentences; the blocks that read ``train`` do not)."""


FAMILIES = ("s2tt", "lid", "speaker", "aed", "sqa", "dialogue", "voice_control", "turn_pieces")
"""The task families added after the first five (asr, emotion, tts, s2s, duplex)."""


def _for_families(train: int, eval_size: int) -> dict[str, int]:
    return {f"{name}_{part}": n for name in FAMILIES for part, n in (("train", train), ("eval", eval_size))}


SIZES = {
    "default": CorpusSize(),
    "tiny": CorpusSize(
        6, 2, 3, 2, 3, 2, 3, 2, 1, 1, **_for_families(3, 2), tts_more_train=3, tts_voice_lm_train=2
    ),
    "small": CorpusSize(
        1000,
        100,
        120,
        40,
        300,
        40,
        300,
        40,
        40,
        10,
        **_for_families(200, 40),
        tts_more_train=900,
        tts_voice_lm_train=600,
    ),
}


# ---- jobs: picklable descriptions of what a worker synthesises (see ``synth.py``) ----------------
@dataclass(frozen=True)
class Utterance:
    text: str
    voice: str
    rate: int
    pitch: int
    seed: int
    volume: int = 100
    range: int = 50
    gain_db: float = 0.0
    sample_rate: int = ENCODER_RATE


@dataclass(frozen=True)
class SessionJob:
    seed: int
    voice: str
    rate: int
    pitch: int
    config: DuplexConfig
    frame_rate: float
    label_span: float
    sample_rate: int = ENCODER_RATE


@dataclass(frozen=True)
class Concatenation:
    """Utterances read one after another into one recording, ``silences[i]`` seconds before part i+1."""

    parts: tuple[Utterance, ...]
    silences: tuple[float, ...]
    sample_rate: int = ENCODER_RATE


@dataclass(frozen=True)
class EventClip:
    """Speech (or none) with synthetic sound events mixed under or around it; the worker draws the
    events and their onsets from ``seed`` (``corpus_aed.mix_events``)."""

    seed: int
    speech: Utterance | None
    sample_rate: int = ENCODER_RATE


@dataclass(frozen=True)
class PhonemeCount:
    """espeak-ng's phonemes of ``text`` in ``voice`` (counted in a worker: only workers load espeak)."""

    text: str
    voice: str


Job = Utterance | SessionJob | Concatenation | EventClip | PhonemeCount | tuple


@dataclass(frozen=True)
class PlanInputs:
    """What one task's planner draws from.

    ``rng`` is the generator shared in table order by the first five tasks (asr ... duplex), and
    ``train``/``held_out`` their sentence pools; the later families draw from ``own_rng`` alone (seeded by
    the corpus seed and the task name), so their rows do not depend on which tasks are built, and the
    first five keep the bytes they had before the families existed. ``taken`` holds every sentence of the
    shared pools (user and answer): the families draw none of them, so no sentence of a family is a test
    or training sentence of those five. ``held_out_users`` holds every task's held-out user sentences.
    """

    rng: random.Random
    train_size: int
    eval_size: int
    train: list[Exchange]
    held_out: list[Exchange]
    duplex: DuplexConfig
    frame_rate: float
    label_span: float
    seed: int
    size: CorpusSize
    own_rng: random.Random
    taken: frozenset[str]
    held_out_users: frozenset[str]


Planned = tuple[str, Job, dict]
"""(split, job, metadata row) as a planner yields them, in the order they are written."""

T = TypeVar("T")


def distinct_splits(
    inputs: PlanInputs, draw: Callable[[random.Random], T], key: Callable[[T], Hashable]
) -> dict[str, list[T]]:
    """Items with distinct keys for train, validation and test, from ``inputs.own_rng``: the held-out
    items first (their number does not depend on the training size), none in ``inputs.taken``."""
    rng, size = inputs.own_rng, inputs.eval_size
    held = draw_distinct(rng, draw, 2 * size, key, inputs.taken)
    train = draw_distinct(rng, draw, inputs.train_size, key, inputs.taken | {key(item) for item in held})
    return {"train": train, "validation": held[:size], "test": held[size:]}


def user_voice(rng: random.Random, voices: tuple[str, ...] = USER_VOICES) -> tuple[str, int, int]:
    """A voice and a random rate (words/min) and pitch, as a user of the corpus speaks."""
    return rng.choice(voices), rng.randint(130, 200), rng.randint(30, 70)


def user_says(rng: random.Random, text: str, voices: tuple[str, ...] = USER_VOICES) -> Utterance:
    """``text`` in a random user voice at a random rate, pitch and gain (+-3 dB)."""
    voice, rate, pitch = user_voice(rng, voices)
    return Utterance(text, voice, rate, pitch, rng.getrandbits(31), gain_db=round(rng.uniform(-3, 3), 2))


def numbered(task: str, items: dict[str, list[T]]) -> Iterator[tuple[str, int, str, T]]:
    """(split, index in the split, row id, item) in split order."""
    for split, split_items in items.items():
        for i, item in enumerate(split_items):
            yield split, i, f"{task}-{split}-{i:05d}", item


# ---- rows: a synthesised result and its metadata -> one written row --------------------------------
def audio_cell(key: str, result: dict, suffix: str = "") -> dict:
    """An ``Audio(decode=False)`` cell: the WAV bytes and a file name that starts with the row id."""
    return {"bytes": result["bytes"], "path": f"{key}{suffix}.wav"}


def utterance_row(meta: dict, result: dict, frame_rate: float) -> dict:
    return {**meta, "audio": audio_cell(meta["id"], result), "duration": result["duration"]}
