"""The built-in corpus task by task: one ``CorpusTask`` each in ``CORPUS_TASKS``, and the plan they draw.

A task states how it draws its jobs and metadata from the seed (``plan``), the columns it writes, how a
synthesised result becomes a row, its dataset-card description and notes, and its render shard size; the
builder (``synth.py``) only iterates the table, so adding a task family is adding one entry (its planner
and row writer in a ``corpus_<family>.py`` module) and its two ``CorpusSize`` fields. Planning is pure:
every random draw happens in the parent process, from one seed (a worker that lays a clip out draws
from the seed its job carries), and nothing here loads espeak-ng or ``datasets``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from minmo_lightning.datamodules.corpus_aed import (
    EVENT_GAP,
    EVENT_LABELS,
    EVENT_LEVEL_DB,
    SPEECH_PROBABILITY,
    event_row,
    plan_aed,
)
from minmo_lightning.datamodules.corpus_dialogue import MAX_USER_TURNS, SCENARIOS, dialogue_row, plan_dialogue
from minmo_lightning.datamodules.corpus_lid import LANGUAGE_NAMES, LANGUAGE_VOICES, plan_lid
from minmo_lightning.datamodules.corpus_plan import (
    ASSISTANT_VOICE,
    ESPEAK_RATE,
    HELD_OUT_VOICES,
    STYLE_PROSODY,
    STYLES,
    USER_VOICES,
    CorpusSize,
    Job,
    PlanInputs,
    Planned,
    SessionJob,
    Utterance,
    user_says,
    user_voice,
    utterance_row,
)
from minmo_lightning.datamodules.corpus_s2tt import plan_s2tt
from minmo_lightning.datamodules.corpus_speaker import AGES, CELLS, GENDERS, SPEAKERS_PER_CELL, plan_speaker
from minmo_lightning.datamodules.corpus_sqa import ANSWER_TYPES, SPAN_PROBABILITY, plan_sqa
from minmo_lightning.datamodules.corpus_text import Exchange, exchanges_outside, punctuate, unique_exchanges
from minmo_lightning.datamodules.corpus_turns import plan_turn_pieces
from minmo_lightning.datamodules.corpus_voice_control import (
    CONTROLS,
    PROSODY,
    TARGETS,
    plan_voice_control,
    voice_control_row,
)
from minmo_lightning.datamodules.timeline import LABELS, DuplexConfig


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
            job = user_says(rng, punctuate(ex.user, ex.question))
            yield split, job, {"id": f"asr-{split}-{i:05d}", "text": ex.user, "speaker": job.voice}


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
    splits = _train_validation_test(inputs)
    # Beyond its share of the shared pool (whose size fixes every other task's sentences), TTS trains on
    # sentences of its own generators: the voice LM and the flow need far more of the assistant's voice
    # than the other tasks need sentences. They follow the grammar's own distribution, the one the
    # held-out sentences come from, and exclude only those (every task's): a distinct draw beside the
    # shared pool would find the small templates used up and leave them almost unheard. The voice token
    # LM alone reads a split of its own beside them (``voice_lm_train``), so its size changes no other split.
    more = exchanges_outside(inputs.own_rng, inputs.size.tts_more_train, inputs.held_out_users)
    voice_rng = random.Random(f"{inputs.seed}-tts-voice_lm_train")
    voice = exchanges_outside(voice_rng, inputs.size.tts_voice_lm_train, inputs.held_out_users)
    rows = [("train", ex, inputs.rng) for ex in splits.pop("train")]
    rows += [("train", ex, inputs.own_rng) for ex in more]
    rows += [(split, ex, inputs.rng) for split, exchanges in splits.items() for ex in exchanges]
    rows += [("voice_lm_train", ex, voice_rng) for ex in voice]
    index = {split: 0 for split in ("train", "voice_lm_train", "validation", "test")}
    for split, ex, rng in rows:
        i = index[split]
        index[split] += 1
        # Training alternates answers and questions so it covers the whole vocabulary. Answers recur
        # across exchanges, so held-out rows read their question: a sentence no training split has.
        reads_answer = split in ("train", "voice_lm_train") and i % 2 == 0
        text = ex.answer if reads_answer else ex.user
        job = _assistant_says(punctuate(text, not reads_answer and ex.question), rng.getrandbits(31))
        yield split, job, {"id": f"tts-{split}-{i:05d}", "text": text}


def _plan_s2s(inputs: PlanInputs) -> Iterator[Planned]:
    rng = inputs.rng
    for split, exchanges in _train_validation_test(inputs).items():
        for i, ex in enumerate(exchanges):
            voice, rate, pitch = user_voice(rng)
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
    """Validation, test, then train sessions: the held-out ones do not depend on the training size."""
    rng = inputs.rng
    counts = {"validation": inputs.eval_size, "test": inputs.eval_size, "train": inputs.train_size}
    for split, count in counts.items():
        for i in range(count):
            voice, rate, pitch = user_voice(rng)
            job = SessionJob(
                rng.getrandbits(31), voice, rate, pitch, inputs.duplex, inputs.frame_rate, inputs.label_span
            )
            yield split, job, {"id": f"duplex-{split}-{i:04d}", "speaker": voice}


# ---- rows: a synthesised result (see ``synth.py``) and its metadata -> one written row -------------
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
        "int32": Value("int32"),
        "prosody_style": ClassLabel(names=list(STYLES)),
        "events": List(event),
        "frame_labels": List(Value("int8")),
        "language": ClassLabel(names=list(LANGUAGE_NAMES)),
        "gender": ClassLabel(names=list(GENDERS)),
        "age": ClassLabel(names=list(AGES)),
        "answer_type": ClassLabel(names=list(ANSWER_TYPES)),
        "control": ClassLabel(names=list(CONTROLS)),
        "target": ClassLabel(names=list(TARGETS)),
        "timed_events": List(
            {"label": Value("string"), "onset": Value("float64"), "offset": Value("float64")}
        ),
        "history": List({"role": Value("string"), "text": Value("string"), "audio": Value("binary")}),
    }


def _write_feature_statistics(folder: Path) -> None:
    """The tiny SenseVoice recipes normalise their features with these statistics (``am.mvn``)."""
    from minmo_lightning.components.voice_encoder.cmvn import main as cmvn

    cmvn(["--data", str(folder), "--out", str(folder / "am.mvn")])


# ---- dataset-card sections: generation settings -> markdown --------------------------------------
def _emotion_notes(settings: dict) -> str:
    return """## The emotion set is a proxy

The `prosody_style` column of `emotion` is a **synthetic prosody-style proxy, not human emotion**:
each style is a fixed espeak rate/pitch/volume/range pattern relative to a per-sentence base.
Scores on it say whether a model hears prosody, not whether it recognises emotion."""


def _duplex_notes(settings: dict) -> str:
    return f"""## Duplex labelling

Frame labels at {settings["frame_rate"]} Hz, classes {list(LABELS)}: `respond` on the {settings["label_span"]} s
after each user turn end, `stop_speaking` on the same span after a barge-in (the user starts
T ~ N(0.6, 0.4^2) s into assistant speech; the assistant stops 0.1-0.3 s later). Mid-turn pauses
and back-channels are `keep_listening`. A pause falls inside a sentence or after a statement (never after a
question, whose final rise espeak reads like a comma's), and the words before it are read with
continuation intonation (a trailing comma); a `pause` event's text names its kind (`mid_sentence`,
`between_sentences`). `events` (type, start, end, text) are the source of truth; DuplexDataModule
recomputes the labels at another frame rate (and can put the stop later into the barge-in: `stop_delay`)."""


def _language_notes(settings: dict) -> str:
    voices = "; ".join(
        f"{name}: {', '.join(LANGUAGE_VOICES[code])}" for code, name in zip(LANGUAGE_VOICES, LANGUAGE_NAMES)
    )
    return f"""## Translation and language ID (`s2tt`, `lid`)

Both read one parallel template grammar (`datamodules/corpus_parallel.py`): each template is written
in English, Spanish, German, French and Italian, and each slot value carries its article, preposition
or case per language, so a translation is exact. `s2tt` rows alternate English speech -> Spanish text
and Spanish speech -> English text; `lid` rows take the languages in turn. The two sets draw from one
pool of sentences: no test sentence of either is a training sentence of the other, and none is a
sentence of asr, emotion, tts, s2s or duplex. Text is lower case without a final mark. espeak-ng voices: {voices}."""


def _speaker_notes(settings: dict) -> str:
    rows = "\n".join(
        f"| {gender} | {age} | {', '.join(cell.variants)} | {cell.pitch[0]}-{cell.pitch[1]} | {cell.rate[0]}-{cell.rate[1]} |"
        for (gender, age), cell in CELLS.items()
    )
    per_split = ", ".join(f"{count} {split}" for split, count in SPEAKERS_PER_CELL.items())
    return f"""## Speaker attributes are a proxy (`speaker`)

espeak-ng has no speaker or age model. A speaker is one fixed setting (English accent voice, variant,
pitch, rate); each cell has {per_split} speakers, and no speaker is in two splits (`speaker` ids are
opaque; `voice` names the espeak voice). Rows take a split's speakers in turn (+-5 % rate, +-3 pitch,
+-6 dB gain per row).

| gender | age | espeak variants | pitch (0-100) | rate (wpm) |
| --- | --- | --- | --- | --- |
{rows}

- **child**: the variants with raised formants and a high base pitch (F0 about 230-320 Hz). Their
  gender is the variant's, nominal: children's voices barely differ by sex.
- **adult**: espeak's standard female and male variants (F0 about 150-215 and 85-115 Hz).
- **senior**: the variants with pitch jitter ("flutter") and breathier voicing, read 20-30 % slower;
  their F0 overlaps the adults'. The cue is voice quality and tempo, not pitch.
- Test speakers are settings no training speaker has, but the child and senior cells have one or two
  variants each, so they share variants with training speakers."""


def _aed_notes(settings: dict) -> str:
    return f"""## Audio events (`aed`)

Labels: {", ".join(f"`{label}`" for label in EVENT_LABELS)} (tone: a 300-2000 Hz sine beep; chirp: a
frequency sweep; click: an 8 ms decaying burst; noise: a white-noise burst; buzz: an 80-200 Hz sawtooth).
A clip is an English sentence between 0.2-0.8 s and 0.3-1.0 s of silence ({round(100 * SPEECH_PROBABILITY)} %
of clips) or 1.5-3.5 s without speech (empty `text`), over a -65..-55 dBFS noise floor, with 0-3 events
at random onsets (under the speech or around it), at least {EVENT_GAP} s apart, each
{EVENT_LEVEL_DB[0]:g}-{EVENT_LEVEL_DB[1]:g} dB above the louder of the speech's active RMS and the clip around its onset
(so it stands out where it starts). `events` holds `label`, `onset` and `offset` in seconds, exact to the sample the
event was mixed at. The answer a model learns: `minmo_lightning.answers.render_events` ("tone at 0.5 s;
click at 1.2 s", or "none")."""


def _sqa_notes(settings: dict) -> str:
    return f"""## Spoken QA (`sqa`)

`audio` is a passage of 2-4 facts (one user voice) then, 0.5-1 s later, a question about one of them (another
voice). Within a passage each name, city, item, hour ... is used once, so each question has one answer:
a span of the passage (`answer_type` span, {round(100 * SPAN_PROBABILITY)} %) or yes/no (half yes; a "no" question
changes one value to one the passage does not hold). `passage` and `question` keep their punctuation."""


def _dialogue_notes(settings: dict) -> str:
    return f"""## Multi-turn dialogue (`dialogue`)

{len(SCENARIOS)} scenarios in which the last user turn needs an earlier one ("turn it off again", "and what is
that times three", "what is my name", a changed booking), with 0-2 small-talk turns, 2-{MAX_USER_TURNS} user
turns in all, one user voice per dialogue. `audio`/`text` are the last user turn, `answer_text` the
assistant's answer to it; `history` holds the earlier turns in order: user turns with their WAV bytes,
assistant turns as text (empty `audio`)."""


def _voice_control_notes(settings: dict) -> str:
    styles = "; ".join(
        f"{target}: rate x{factor}, pitch {offset:+d}, volume {volume}, range {pitch_range}"
        for target, (factor, offset, volume, pitch_range) in PROSODY.items()
    )
    return f"""## Instruction-controlled speech (`voice_control`)

The assistant voice ({ASSISTANT_VOICE["name"]}, rate {ASSISTANT_VOICE["rate"]}, pitch {ASSISTANT_VOICE["pitch"]}) reads
`text` in the style `instruction` asks for (`audio`) and neutrally (`neutral_audio`), both at 24 kHz
with one seed. Styles relative to the neutral reading: {styles}. The emotion styles are the emotion
proxy's own settings: a prosody pattern, not human emotion. `phonemes` is espeak-ng's phoneme count of
the text (rate = duration per phoneme against `neutral_duration`). `request_audio` (16 kHz, a user voice)
speaks `request_text`: the text, then the instruction, for speech-to-speech use."""


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
    """Eval size -> held-out sentences the task reads from the shared pools; None: it reads none of them."""
    shard_size: int = 200
    """Jobs per freshly forked worker process."""
    write_extras: Callable[[Path], None] | None = None
    """What ``minmo synth-data`` adds to the task's written folder."""
    card_notes: Callable[[dict], str] | None = None
    """Generation settings -> the task's own section of the dataset card (markdown)."""
    plan_version: int = 1
    """Raised whenever the plan draws other rows for the same seed and sizes: ``minmo synth-data`` records
    it in the folder it writes (``written_plan_version``), and a folder an older plan wrote is stale."""

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


def written_plan_version(folder: Path) -> int:
    """The plan version a task folder was written under (1: written before synth-data recorded it)."""
    return json.loads((folder / "dataset_dict.json").read_text()).get("plan_version", 1)


def stale_folder(folder: Path, task: str) -> str | None:
    """Why ``folder`` (a written ``task`` folder) no longer holds the rows this version draws; None when it does."""
    written, current = written_plan_version(folder), CORPUS_TASKS[task].plan_version
    if written >= current:
        return None
    return f"{folder} was written by plan {written} of the {task} set and this version draws plan {current}"


TRANSCRIBED_COLUMNS = {
    "id": "string",
    "audio": "audio",
    "text": "string",
    "speaker": "string",
    "duration": "float64",
}
"""The columns of a set of transcribed utterances (asr, turn_pieces)."""

CORPUS_TASKS: dict[str, CorpusTask] = {
    spec.name: spec
    for spec in (
        CorpusTask(
            "asr",
            description="Synthetic English commands and questions (espeak-ng, 8 voices, random rate/pitch) "
            "with transcripts.",
            columns=TRANSCRIBED_COLUMNS,
            plan=_plan_asr,
            row=utterance_row,
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
            row=utterance_row,
            held_out_sentences=_emotion_held_out,
            card_notes=_emotion_notes,
        ),
        CorpusTask(
            "tts",
            description="Text and speech of one fixed synthetic assistant voice "
            "(espeak-ng en-us+f3, 22.05 kHz).",
            columns={"id": "string", "audio": "audio", "text": "string", "duration": "float64"},
            plan=_plan_tts,
            row=utterance_row,
            held_out_sentences=_validation_and_test,
            plan_version=2,  # 2: its own sentences drawn as the grammar draws them (exchanges_outside)
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
            card_notes=_duplex_notes,
        ),
        CorpusTask(
            "s2tt",
            description="Speech-to-text translation from a parallel template grammar: English speech with "
            "its Spanish translation and Spanish speech with its English translation (espeak-ng, 16 kHz).",
            columns={
                "id": "string",
                "audio": "audio",
                "text": "string",
                "source_language": "language",
                "translation": "string",
                "target_language": "language",
                "speaker": "string",
                "duration": "float64",
            },
            plan=plan_s2tt,
            row=utterance_row,
            held_out_sentences=None,
            shard_size=50,
            card_notes=_language_notes,
        ),
        CorpusTask(
            "lid",
            description=f"Language identification: parallel-grammar sentences in {', '.join(LANGUAGE_NAMES)}, "
            "read by espeak-ng voices of each language (16 kHz), languages balanced.",
            columns={
                "id": "string",
                "audio": "audio",
                "text": "string",
                "language": "language",
                "speaker": "string",
                "duration": "float64",
            },
            plan=plan_lid,
            row=utterance_row,
            held_out_sentences=None,
            shard_size=50,
            card_notes=_language_notes,
        ),
        CorpusTask(
            "speaker",
            description="Speaker attributes (SYNTHETIC PROXY): English sentences by espeak-ng voice settings "
            "labelled with gender and an age band; speakers disjoint across splits (16 kHz).",
            columns={
                "id": "string",
                "audio": "audio",
                "text": "string",
                "speaker": "string",
                "gender": "gender",
                "age": "age",
                "voice": "string",
                "duration": "float64",
            },
            plan=plan_speaker,
            row=utterance_row,
            held_out_sentences=None,
            shard_size=50,
            card_notes=_speaker_notes,
        ),
        CorpusTask(
            "aed",
            description=f"Audio events: synthetic {'/'.join(EVENT_LABELS)} sounds mixed under or between "
            "speech, with onsets and offsets exact to the sample, and the speech's transcript (16 kHz).",
            columns={
                "id": "string",
                "audio": "audio",
                "text": "string",
                "speaker": "string",
                "events": "timed_events",
                "duration": "float64",
            },
            plan=plan_aed,
            row=event_row,
            held_out_sentences=None,
            shard_size=50,
            card_notes=_aed_notes,
        ),
        CorpusTask(
            "sqa",
            description="Spoken QA: a spoken passage of 2-4 facts, then a spoken question; the answer is a "
            "span of the passage or yes/no (16 kHz).",
            columns={
                "id": "string",
                "audio": "audio",
                "passage": "string",
                "question": "string",
                "answer": "string",
                "answer_type": "answer_type",
                "duration": "float64",
            },
            plan=plan_sqa,
            row=utterance_row,
            held_out_sentences=None,
            shard_size=50,
            card_notes=_sqa_notes,
        ),
        CorpusTask(
            "dialogue",
            description="Multi-turn spoken dialogue: 2-4 user turns (16 kHz) with the assistant's text "
            "answers; the answer to the last turn needs an earlier turn.",
            columns={
                "id": "string",
                "audio": "audio",
                "text": "string",
                "history": "history",
                "answer_text": "string",
                "speaker": "string",
                "duration": "float64",
            },
            plan=plan_dialogue,
            row=dialogue_row,
            held_out_sentences=None,
            shard_size=25,
            card_notes=_dialogue_notes,
        ),
        CorpusTask(
            "voice_control",
            description="Instruction-controlled speech: text, an instruction asking for an emotion style, "
            "a speaking rate or a pitch, the assistant voice's styled and neutral readings (24 kHz) and "
            "the request spoken by a user (16 kHz).",
            columns={
                "id": "string",
                "text": "string",
                "instruction": "string",
                "control": "control",
                "target": "target",
                "audio": "audio",
                "neutral_audio": "audio",
                "phonemes": "int32",
                "request_text": "string",
                "request_audio": "audio",
                "duration": "float64",
                "neutral_duration": "float64",
                "request_duration": "float64",
            },
            plan=plan_voice_control,
            row=voice_control_row,
            held_out_sentences=None,
            shard_size=25,
            card_notes=_voice_control_notes,
            plan_version=2,  # 2: each row draws from a generator of its own id (held-out rows keep)
        ),
        CorpusTask(
            "turn_pieces",
            description="The duplex user's turns cut at their mid-turn pauses, one piece per row (16 kHz): a "
            "piece the speaker goes on from is read with continuation intonation and its transcript ends "
            "in ','; a turn's last piece ends without a mark, as asr transcripts do.",
            columns=TRANSCRIBED_COLUMNS,
            plan=plan_turn_pieces,
            row=utterance_row,
            held_out_sentences=None,
            shard_size=100,
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
    held_users = frozenset(ex.user for ex in held)
    train_counts = {task.name: task.train_size(size) for task in readers}
    train = unique_exchanges(rng, sum(train_counts.values()), held_users)
    train_pools = _deal(train, train_counts)

    taken = frozenset(text for ex in held + train for text in (ex.user, ex.answer))

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
            seed,
            size,
            random.Random(f"{seed}/{task.name}"),
            taken,
            held_users,
        )
        for split, job, meta in task.plan(inputs):
            plan.add(task.name, split, job, meta)
    return plan
