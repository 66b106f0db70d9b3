"""The built-in corpus task by task: one ``CorpusTask`` each in ``CORPUS_TASKS``, and the plan they draw.

A task states how it draws its jobs and metadata from the seed (``plan``), the columns it writes, how a
synthesised result becomes a row, its dataset-card description and its render shard size; the builder
(``synth.py``) only iterates the table, so adding a task family is adding one entry (and its two
``CorpusSize`` fields). Planning is pure: every random draw happens here, in the parent process, from
one seed, and nothing here loads espeak-ng or ``datasets``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from minmo_lightning.datamodules.corpus_text import Exchange, punctuate, unique_exchanges
from minmo_lightning.datamodules.timeline import LABELS, DuplexConfig

ESPEAK_RATE = 22050
ENCODER_RATE = 16000
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
"""The one fixed voice of the assistant (tts, s2s answers, duplex assistant channel)."""
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
    """How many sentences / sessions each task gets: ``{task}_train``, and ``{task}_eval`` for
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


SIZES = {
    "default": CorpusSize(),
    "tiny": CorpusSize(6, 2, 3, 2, 3, 2, 3, 2, 1, 1),
    "small": CorpusSize(1000, 100, 120, 40, 300, 40, 300, 40, 40, 10),
}


# ---- jobs: picklable descriptions of what a worker synthesises -----------------------------------
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


Job = Utterance | SessionJob | tuple[Utterance, Utterance]


@dataclass(frozen=True)
class PlanInputs:
    """What one task's planner draws from: the shared generator, its sizes, its sentences, the settings."""

    rng: random.Random
    train_size: int
    eval_size: int
    train: list[Exchange]
    held_out: list[Exchange]
    duplex: DuplexConfig
    frame_rate: float
    label_span: float


Planned = tuple[str, Job, dict]
"""(split, job, metadata row) as a planner yields them, in the order they are written."""


def _user_voice(rng: random.Random, voices: tuple[str, ...] = USER_VOICES) -> tuple[str, int, int]:
    return rng.choice(voices), rng.randint(130, 200), rng.randint(30, 70)


def _assistant_says(text: str, seed: int) -> Utterance:
    voice = ASSISTANT_VOICE
    return Utterance(text, voice["name"], voice["rate"], voice["pitch"], seed, sample_rate=ESPEAK_RATE)


def _validation_and_test(eval_size: int) -> int:
    return 2 * eval_size


def _train_validation_test(inputs: PlanInputs) -> dict[str, list[Exchange]]:
    """A task's splits: its training sentences, and its held-out ones cut into validation and test."""
    held_out, eval_size = inputs.held_out, inputs.eval_size
    return {"train": inputs.train, "validation": held_out[:eval_size], "test": held_out[eval_size:]}


# ---- planners: one per task, each draws from the shared generator in table order ------------------
def _plan_asr(inputs: PlanInputs) -> Iterator[Planned]:
    rng = inputs.rng
    for split, exchanges in _train_validation_test(inputs).items():
        for i, ex in enumerate(exchanges):
            voice, rate, pitch = _user_voice(rng)
            text = punctuate(ex.user, ex.question)
            job = Utterance(
                text, voice, rate, pitch, rng.getrandbits(31), gain_db=round(rng.uniform(-3, 3), 2)
            )
            yield split, job, {"id": f"asr-{split}-{i:05d}", "text": ex.user, "speaker": voice}


def _emotion_held_out(eval_size: int) -> int:
    """Half a split for validation, then a test split in seen voices and one in unseen voices."""
    return eval_size // 2 + 2 * eval_size


def _plan_emotion(inputs: PlanInputs) -> Iterator[Planned]:
    rng, held, size = inputs.rng, inputs.held_out, inputs.eval_size
    half = size // 2
    seen_voices, unseen_voices = USER_VOICES[:-HELD_OUT_VOICES], USER_VOICES[-HELD_OUT_VOICES:]
    splits = {
        "train": (inputs.train, seen_voices),
        "validation": (held[:half], seen_voices),
        "test": (held[half : half + size], seen_voices),
        "test_unseen_voices": (held[half + size :], unseen_voices),
    }
    for split, (exchanges, voices) in splits.items():
        for i, ex in enumerate(exchanges):
            voice, base_rate, base_pitch = rng.choice(voices), rng.randint(140, 180), rng.randint(35, 60)
            for style in STYLES:
                factor, offset, volume, pitch_range = STYLE_PROSODY[style]
                job = Utterance(
                    punctuate(ex.user, ex.question),
                    voice,
                    round(base_rate * factor),
                    base_pitch + offset,
                    rng.getrandbits(31),
                    volume=volume,
                    range=pitch_range,
                    gain_db=round(rng.uniform(-6, 6), 2),  # loudness must not give the style away
                )
                meta = {
                    "id": f"emotion-{split}-{i:05d}-{style}",
                    "text": ex.user,
                    "speaker": voice,
                    "prosody_style": STYLES.index(style),
                }
                yield split, job, meta


def _plan_tts(inputs: PlanInputs) -> Iterator[Planned]:
    for split, exchanges in _train_validation_test(inputs).items():
        for i, ex in enumerate(exchanges):
            # Alternate answers and questions so the TTS set covers the whole vocabulary.
            text = ex.answer if i % 2 == 0 else ex.user
            job = _assistant_says(punctuate(text, i % 2 == 1 and ex.question), inputs.rng.getrandbits(31))
            yield split, job, {"id": f"tts-{split}-{i:05d}", "text": text}


def _plan_s2s(inputs: PlanInputs) -> Iterator[Planned]:
    rng = inputs.rng
    for split, exchanges in _train_validation_test(inputs).items():
        for i, ex in enumerate(exchanges):
            voice, rate, pitch = _user_voice(rng)
            question = Utterance(punctuate(ex.user, ex.question), voice, rate, pitch, rng.getrandbits(31))
            answer = _assistant_says(punctuate(ex.answer, False), rng.getrandbits(31))
            meta = {
                "id": f"s2s-{split}-{i:05d}",
                "user_text": ex.user,
                "answer_text": ex.answer,
                "speaker": voice,
            }
            yield split, (question, answer), meta


def _plan_duplex(inputs: PlanInputs) -> Iterator[Planned]:
    rng = inputs.rng
    counts = {"train": inputs.train_size, "validation": inputs.eval_size, "test": inputs.eval_size}
    for split, count in counts.items():
        for i in range(count):
            voice, rate, pitch = _user_voice(rng)
            job = SessionJob(
                rng.getrandbits(31), voice, rate, pitch, inputs.duplex, inputs.frame_rate, inputs.label_span
            )
            yield split, job, {"id": f"duplex-{split}-{i:04d}", "speaker": voice}


# ---- rows: a synthesised result (see ``synth.py``) and its metadata -> one written row -------------
def _utterance_row(meta: dict, result: dict, frame_rate: float) -> dict:
    return {
        **meta,
        "audio": {"bytes": result["bytes"], "path": f"{meta['id']}.wav"},
        "duration": result["duration"],
    }


def _exchange_row(meta: dict, result: tuple[dict, dict], frame_rate: float) -> dict:
    key, (question, answer) = meta["id"], result
    return {
        **meta,
        "user_audio": {"bytes": question["bytes"], "path": f"{key}-user.wav"},
        "answer_audio": {"bytes": answer["bytes"], "path": f"{key}-answer.wav"},
        "duration": question["duration"],
        "answer_duration": answer["duration"],
    }


def _session_row(meta: dict, result: dict, frame_rate: float) -> dict:
    key = meta["id"]
    return {
        **meta,
        "user_audio": {"bytes": result["user"], "path": f"{key}-user.wav"},
        "assistant_audio": {"bytes": result["assistant"], "path": f"{key}-assistant.wav"},
        "duration": result["duration"],
        "events": result["events"],
        "frame_labels": result["frame_labels"].tolist(),
        "frame_rate": frame_rate,
    }


def _column_types() -> dict[str, Any]:
    """Column kind -> its ``datasets`` feature (imported here: only writing needs ``datasets``)."""
    from datasets import Audio, ClassLabel, List, Value

    event = {
        "type": Value("string"),
        "start": Value("float64"),
        "end": Value("float64"),
        "text": Value("string"),
    }
    return {
        "string": Value("string"),
        "float64": Value("float64"),
        "audio": Audio(decode=False),  # stored as struct<bytes, path>; nothing here encodes or decodes
        "prosody_style": ClassLabel(names=list(STYLES)),
        "events": List(event),
        "frame_labels": List(Value("int8")),
    }


def _write_feature_statistics(folder: Path) -> None:
    """The tiny SenseVoice recipes normalise their features with these statistics (``am.mvn``)."""
    from minmo_lightning.components.voice_encoder.cmvn import main as cmvn

    cmvn(["--data", str(folder), "--out", str(folder / "am.mvn")])


# ---- the table -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CorpusTask:
    """Everything the builder knows about one task of the corpus."""

    name: str
    description: str
    """Dataset card entry and ``DatasetInfo.description`` of every split."""
    columns: dict[str, str]
    """Column -> kind (a key of ``_column_types``), in the written order."""
    plan: Callable[[PlanInputs], Iterator[Planned]]
    row: Callable[[dict, Any, float], dict]
    """(metadata, synthesised result, duplex frame rate) -> the written row."""
    held_out_sentences: Callable[[int], int] | None
    """Eval size -> held-out sentences the task reads; None: the task reads no sentences."""
    shard_size: int = 200
    """Jobs per freshly forked worker process."""
    write_extras: Callable[[Path], None] | None = None
    """What ``minmo synth-data`` adds to the task's written folder."""

    def train_size(self, size: CorpusSize) -> int:
        """``CorpusSize`` names a task's sizes ``{task}_train`` and ``{task}_eval``."""
        return getattr(size, f"{self.name}_train")

    def eval_size(self, size: CorpusSize) -> int:
        return getattr(size, f"{self.name}_eval")

    def features(self):
        """The ``datasets.Features`` of the task's rows."""
        from datasets import Features

        types = _column_types()
        return Features({name: types[kind] for name, kind in self.columns.items()})


CORPUS_TASKS: dict[str, CorpusTask] = {
    spec.name: spec
    for spec in (
        CorpusTask(
            "asr",
            description="Synthetic English commands and questions (espeak-ng, 8 voices, random rate/pitch) "
            "with transcripts.",
            columns={
                "id": "string",
                "audio": "audio",
                "text": "string",
                "speaker": "string",
                "duration": "float64",
            },
            plan=_plan_asr,
            row=_utterance_row,
            held_out_sentences=_validation_and_test,
            write_extras=_write_feature_statistics,
        ),
        CorpusTask(
            "emotion",
            description="SYNTHETIC PROSODY-STYLE PROXY, NOT HUMAN EMOTION: the same sentences read by "
            "espeak-ng in four rate/pitch/volume/range patterns named neutral, happy, sad, angry, with a "
            "random +-6 dB gain.",
            columns={
                "id": "string",
                "audio": "audio",
                "text": "string",
                "speaker": "string",
                "prosody_style": "prosody_style",
                "duration": "float64",
            },
            plan=_plan_emotion,
            row=_utterance_row,
            held_out_sentences=_emotion_held_out,
        ),
        CorpusTask(
            "tts",
            description="Text and speech of one fixed synthetic assistant voice "
            "(espeak-ng en-us+f3, 22.05 kHz).",
            columns={"id": "string", "audio": "audio", "text": "string", "duration": "float64"},
            plan=_plan_tts,
            row=_utterance_row,
            held_out_sentences=_validation_and_test,
        ),
        CorpusTask(
            "s2s",
            description="Spoken user question (16 kHz, many voices), answer text and the answer spoken by "
            "the fixed assistant voice (22.05 kHz).",
            columns={
                "id": "string",
                "user_audio": "audio",
                "user_text": "string",
                "answer_text": "string",
                "answer_audio": "audio",
                "speaker": "string",
                "duration": "float64",
                "answer_duration": "float64",
            },
            plan=_plan_s2s,
            row=_exchange_row,
            held_out_sentences=_validation_and_test,
        ),
        CorpusTask(
            "duplex",
            description="Two-channel synthetic full-duplex sessions (user, assistant) with time-stamped "
            f"events and frame labels {list(LABELS)} following MinMo's labelling rules.",
            columns={
                "id": "string",
                "user_audio": "audio",
                "assistant_audio": "audio",
                "speaker": "string",
                "duration": "float64",
                "events": "events",
                "frame_labels": "frame_labels",
                "frame_rate": "float64",
            },
            plan=_plan_duplex,
            row=_session_row,
            held_out_sentences=None,
            shard_size=4,  # sessions are long: small shards keep both workers busy
        ),
    )
}


# ---- planning the whole corpus ---------------------------------------------------------------------
@dataclass
class Plan:
    """Per task and split: the jobs and the metadata rows that go with them."""

    jobs: dict[str, dict[str, list]] = field(default_factory=dict)
    meta: dict[str, dict[str, list[dict]]] = field(default_factory=dict)

    def add(self, task: str, split: str, job: Job, meta: dict) -> None:
        self.jobs.setdefault(task, {}).setdefault(split, []).append(job)
        self.meta.setdefault(task, {}).setdefault(split, []).append(meta)


def _deal(exchanges: list[Exchange], counts: dict[str, int]) -> dict[str, list[Exchange]]:
    """Consecutive slices of ``exchanges``, ``counts[task]`` long each, in the order of ``counts``."""
    pools, start = {}, 0
    for task, count in counts.items():
        pools[task], start = exchanges[start : start + count], start + count
    return pools


def plan_corpus(
    size: CorpusSize,
    seed: int,
    tasks: Iterable[str],
    duplex: DuplexConfig,
    frame_rate: float,
    label_span: float,
) -> Plan:
    rng = random.Random(seed)
    # Sentence pools are drawn for every task that reads sentences, whichever tasks are planned, so a
    # subset plans the same sentences. Held-out sentences first, shared by no training split of any task
    # (a model trained on all tasks must not have heard a test sentence).
    readers = [task for task in CORPUS_TASKS.values() if task.held_out_sentences]
    held_counts = {task.name: task.held_out_sentences(task.eval_size(size)) for task in readers}
    held = unique_exchanges(rng, sum(held_counts.values()))
    held_pools = _deal(held, held_counts)
    train_counts = {task.name: task.train_size(size) for task in readers}
    train = unique_exchanges(rng, sum(train_counts.values()), {ex.user for ex in held})
    train_pools = _deal(train, train_counts)

    plan, selected = Plan(), set(tasks)
    for task in CORPUS_TASKS.values():
        if task.name not in selected:
            continue
        inputs = PlanInputs(
            rng,
            task.train_size(size),
            task.eval_size(size),
            train_pools.get(task.name, []),
            held_pools.get(task.name, []),
            duplex,
            frame_rate,
            label_span,
        )
        for split, job, meta in task.plan(inputs):
            plan.add(task.name, split, job, meta)
    return plan
