"""``minmo synth-data``: the built-in spoken corpus, synthesised locally with espeak-ng.

Writes ``OUT/{asr,emotion,tts,s2s,duplex}`` (one ``DatasetDict`` each, ``save_to_disk``) and a dataset
card ``OUT/README.md``. Everything is drawn from one seed: the same seed and sizes give the same bytes,
whatever the number of worker processes (each shard of work is synthesised in a fresh process, see
``espeak.py``). Audio columns hold ``{"bytes": WAV, "path"}`` structs cast to ``Audio(decode=False)``;
read them with ``minmo_lightning.datamodules.audio``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import multiprocessing
import random
import shutil
import sys
import time
import wave as wave_module
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
from minmo_lightning.datamodules.corpus_text import Exchange, punctuate, unique_exchanges, vocabulary
from minmo_lightning.datamodules.timeline import LABELS, DuplexConfig, Speaker, build_session, frame_labels

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
TASKS = ("asr", "emotion", "tts", "s2s", "duplex")


@dataclass(frozen=True)
class CorpusSize:
    """How many sentences / sessions each task gets (eval = validation and test, each)."""

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


def _synthesize(job: Utterance) -> np.ndarray:
    """Synthesise, apply the gain and resample; float32 in [-1, 1]."""
    import soxr
    from minmo_lightning.datamodules.espeak import Espeak, Voice

    voice = Voice(job.voice, job.rate, job.pitch, job.volume, job.range)
    wave = Espeak.get().synthesize(job.text, voice, job.seed).astype(np.float32) / 32768.0
    wave *= 10 ** (job.gain_db / 20)
    if job.sample_rate != ESPEAK_RATE:
        wave = soxr.resample(wave, ESPEAK_RATE, job.sample_rate, quality="HQ").astype(np.float32)
    return np.clip(wave, -1.0, 1.0)


def wav_bytes(wave: np.ndarray, sample_rate: int) -> bytes:
    """float32 [-1, 1] -> 16-bit PCM WAV file bytes (stdlib writer: ~15x faster than soundfile here)."""
    pcm = np.clip(np.round(wave * 32767.0), -32768, 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave_module.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm.tobytes())
    return buffer.getvalue()


def _render_utterance(job: Utterance) -> dict:
    wave = _synthesize(job)
    return {"bytes": wav_bytes(wave, job.sample_rate), "duration": len(wave) / job.sample_rate}


def _render_session(job: SessionJob) -> dict:
    rng = random.Random(job.seed)

    def speaker(voice: str, rate: int, pitch: int) -> Speaker:
        """Text -> waveform in this voice; every utterance draws its seed from the session's ``rng``."""

        def synthesize(text: str) -> np.ndarray:
            return _synthesize(
                Utterance(text, voice, rate, pitch, rng.getrandbits(31), sample_rate=job.sample_rate)
            )

        return synthesize

    user = speaker(job.voice, job.rate, job.pitch)
    assistant = speaker(ASSISTANT_VOICE["name"], ASSISTANT_VOICE["rate"], ASSISTANT_VOICE["pitch"])
    session = build_session(rng, user, assistant, job.config, job.sample_rate)
    return {
        "user": wav_bytes(session.user, job.sample_rate),
        "assistant": wav_bytes(session.assistant, job.sample_rate),
        "events": session.events,
        "duration": session.duration,
        "frame_labels": frame_labels(session.events, session.duration, job.frame_rate, job.label_span),
    }


def _render_job(job: Utterance | SessionJob | tuple) -> dict | tuple:
    if isinstance(job, tuple):
        return tuple(_render_job(j) for j in job)
    return _render_session(job) if isinstance(job, SessionJob) else _render_utterance(job)


def _render_shard(jobs: list) -> list:
    return [_render_job(job) for job in jobs]


def render(jobs: list, workers: int, shard_size: int) -> Iterator:
    """Results of ``jobs`` in job order; shards of ``shard_size`` jobs each run in a freshly forked process.

    Fork (not spawn/forkserver) so callers need no ``if __name__ == "__main__"`` guard; this process
    never loads espeak itself, so every child starts from a clean library state.
    """
    shards = [jobs[i : i + shard_size] for i in range(0, len(jobs), shard_size)]
    context = multiprocessing.get_context("fork")
    with context.Pool(max(1, workers), maxtasksperchild=1) as pool:
        for shard in pool.imap(_render_shard, shards):
            yield from shard


# ---- planning: every random draw happens here, in the parent, from the seed ----------------------
@dataclass
class Plan:
    """Per task and split: the jobs and the metadata rows that go with them."""

    jobs: dict[str, dict[str, list]] = field(default_factory=dict)
    meta: dict[str, dict[str, list[dict]]] = field(default_factory=dict)

    def add(self, task: str, split: str, job, meta: dict) -> None:
        self.jobs.setdefault(task, {}).setdefault(split, []).append(job)
        self.meta.setdefault(task, {}).setdefault(split, []).append(meta)


def _user_voice(rng: random.Random, voices: tuple[str, ...] = USER_VOICES) -> tuple[str, int, int]:
    return rng.choice(voices), rng.randint(130, 200), rng.randint(30, 70)


def _deal(exchanges: list[Exchange], counts: dict[str, int]) -> dict[str, list[Exchange]]:
    """Consecutive slices of ``exchanges``, ``counts[task]`` long each, in the order of ``counts``."""
    pools, start = {}, 0
    for task, count in counts.items():
        pools[task], start = exchanges[start : start + count], start + count
    return pools


def _train_validation_test(
    train: list[Exchange], held_out: list[Exchange], eval_size: int
) -> dict[str, list[Exchange]]:
    """A task's splits: its training sentences, and its held-out ones cut into validation and test."""
    return {"train": train, "validation": held_out[:eval_size], "test": held_out[eval_size:]}


def plan_corpus(
    size: CorpusSize,
    seed: int,
    tasks: Iterable[str],
    duplex: DuplexConfig,
    frame_rate: float,
    label_span: float,
) -> Plan:
    rng = random.Random(seed)
    # Held-out sentences first, shared by no training split of any task (a model trained on all tasks
    # must not have heard a test sentence).
    eval_counts = {
        "asr": 2 * size.asr_eval,
        "emotion": size.emotion_eval // 2 + 2 * size.emotion_eval,
        "tts": 2 * size.tts_eval,
        "s2s": 2 * size.s2s_eval,
    }
    held = unique_exchanges(rng, sum(eval_counts.values()))
    held_pools = _deal(held, eval_counts)
    train_counts = {
        "asr": size.asr_train,
        "emotion": size.emotion_train,
        "tts": size.tts_train,
        "s2s": size.s2s_train,
    }
    train = unique_exchanges(rng, sum(train_counts.values()), {ex.user for ex in held})
    train_pools = _deal(train, train_counts)

    plan = Plan()
    tasks = set(tasks)
    if "asr" in tasks:
        splits = _train_validation_test(train_pools["asr"], held_pools["asr"], size.asr_eval)
        for split, exchanges in splits.items():
            for i, ex in enumerate(exchanges):
                voice, rate, pitch = _user_voice(rng)
                text = punctuate(ex.user, ex.question)
                job = Utterance(
                    text, voice, rate, pitch, rng.getrandbits(31), gain_db=round(rng.uniform(-3, 3), 2)
                )
                plan.add("asr", split, job, {"id": f"asr-{split}-{i:05d}", "text": ex.user, "speaker": voice})
    if "emotion" in tasks:
        half = size.emotion_eval // 2
        held_emotion = held_pools["emotion"]
        seen_voices, unseen_voices = USER_VOICES[:-HELD_OUT_VOICES], USER_VOICES[-HELD_OUT_VOICES:]
        splits = {
            "train": (train_pools["emotion"], seen_voices),
            "validation": (held_emotion[:half], seen_voices),
            "test": (held_emotion[half : half + size.emotion_eval], seen_voices),
            "test_unseen_voices": (held_emotion[half + size.emotion_eval :], unseen_voices),
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
                    plan.add("emotion", split, job, meta)
    assistant = ASSISTANT_VOICE
    if "tts" in tasks:
        splits = _train_validation_test(train_pools["tts"], held_pools["tts"], size.tts_eval)
        for split, exchanges in splits.items():
            for i, ex in enumerate(exchanges):
                # Alternate answers and questions so the TTS set covers the whole vocabulary.
                text = ex.answer if i % 2 == 0 else ex.user
                job = Utterance(
                    punctuate(text, i % 2 == 1 and ex.question),
                    assistant["name"],
                    assistant["rate"],
                    assistant["pitch"],
                    rng.getrandbits(31),
                    sample_rate=ESPEAK_RATE,
                )
                plan.add("tts", split, job, {"id": f"tts-{split}-{i:05d}", "text": text})
    if "s2s" in tasks:
        splits = _train_validation_test(train_pools["s2s"], held_pools["s2s"], size.s2s_eval)
        for split, exchanges in splits.items():
            for i, ex in enumerate(exchanges):
                voice, rate, pitch = _user_voice(rng)
                question = Utterance(punctuate(ex.user, ex.question), voice, rate, pitch, rng.getrandbits(31))
                answer = Utterance(
                    punctuate(ex.answer, False),
                    assistant["name"],
                    assistant["rate"],
                    assistant["pitch"],
                    rng.getrandbits(31),
                    sample_rate=ESPEAK_RATE,
                )
                meta = {
                    "id": f"s2s-{split}-{i:05d}",
                    "user_text": ex.user,
                    "answer_text": ex.answer,
                    "speaker": voice,
                }
                plan.add("s2s", split, (question, answer), meta)
    if "duplex" in tasks:
        counts = {"train": size.duplex_train, "validation": size.duplex_eval, "test": size.duplex_eval}
        for split, count in counts.items():
            for i in range(count):
                voice, rate, pitch = _user_voice(rng)
                job = SessionJob(rng.getrandbits(31), voice, rate, pitch, duplex, frame_rate, label_span)
                plan.add("duplex", split, job, {"id": f"duplex-{split}-{i:04d}", "speaker": voice})
    return plan


# ---- writing -------------------------------------------------------------------------------------
def _features(task: str):
    from datasets import Audio, ClassLabel, Features, List, Value

    audio = Audio(decode=False)  # stored as struct<bytes, path>; nothing here encodes or decodes
    common = {"id": Value("string")}
    if task == "asr":
        return Features(
            {
                **common,
                "audio": audio,
                "text": Value("string"),
                "speaker": Value("string"),
                "duration": Value("float64"),
            }
        )
    if task == "emotion":
        return Features(
            {
                **common,
                "audio": audio,
                "text": Value("string"),
                "speaker": Value("string"),
                "prosody_style": ClassLabel(names=list(STYLES)),
                "duration": Value("float64"),
            }
        )
    if task == "tts":
        return Features({**common, "audio": audio, "text": Value("string"), "duration": Value("float64")})
    if task == "s2s":
        return Features(
            {
                **common,
                "user_audio": audio,
                "user_text": Value("string"),
                "answer_text": Value("string"),
                "answer_audio": audio,
                "speaker": Value("string"),
                "duration": Value("float64"),
                "answer_duration": Value("float64"),
            }
        )
    event = {
        "type": Value("string"),
        "start": Value("float64"),
        "end": Value("float64"),
        "text": Value("string"),
    }
    return Features(
        {
            **common,
            "user_audio": audio,
            "assistant_audio": audio,
            "speaker": Value("string"),
            "duration": Value("float64"),
            "events": List(event),
            "frame_labels": List(Value("int8")),
            "frame_rate": Value("float64"),
        }
    )


AUDIO_COLUMNS = {
    "asr": ("audio",),
    "emotion": ("audio",),
    "tts": ("audio",),
    "s2s": ("user_audio", "answer_audio"),
    "duplex": ("user_audio", "assistant_audio"),
}


def _row(task: str, meta: dict, result, frame_rate: float) -> dict:
    key = meta["id"]
    if task == "s2s":
        question, answer = result
        return {
            **meta,
            "user_audio": {"bytes": question["bytes"], "path": f"{key}-user.wav"},
            "answer_audio": {"bytes": answer["bytes"], "path": f"{key}-answer.wav"},
            "duration": question["duration"],
            "answer_duration": answer["duration"],
        }
    if task == "duplex":
        return {
            **meta,
            "user_audio": {"bytes": result["user"], "path": f"{key}-user.wav"},
            "assistant_audio": {"bytes": result["assistant"], "path": f"{key}-assistant.wav"},
            "duration": result["duration"],
            "events": result["events"],
            "frame_labels": result["frame_labels"].tolist(),
            "frame_rate": frame_rate,
        }
    return {**meta, "audio": {"bytes": result["bytes"], "path": f"{key}.wav"}, "duration": result["duration"]}


DESCRIPTIONS = {
    "asr": "Synthetic English commands and questions (espeak-ng, 8 voices, random rate/pitch) with transcripts.",
    "emotion": "SYNTHETIC PROSODY-STYLE PROXY, NOT HUMAN EMOTION: the same sentences read by espeak-ng in four "
    "rate/pitch/volume/range patterns named neutral, happy, sad, angry, with a random +-6 dB gain.",
    "tts": "Text and speech of one fixed synthetic assistant voice (espeak-ng en-us+f3, 22.05 kHz).",
    "s2s": "Spoken user question (16 kHz, many voices), answer text and the answer spoken by the fixed assistant voice (22.05 kHz).",
    "duplex": "Two-channel synthetic full-duplex sessions (user, assistant) with time-stamped events and frame labels "
    f"{list(LABELS)} following MinMo's labelling rules.",
}


def write_split(
    folder: Path, task: str, rows: Iterable[dict], fingerprint: str, chunk: int = 256
) -> dict[str, float]:
    """Stream rows into ``folder`` in the layout ``Dataset.save_to_disk`` writes (one Arrow stream file,
    ``dataset_info.json``, ``state.json``), a chunk at a time: memory stays at one chunk of audio."""
    import pyarrow as pa
    from datasets import DatasetInfo

    features = _features(task)
    schema = features.arrow_schema
    folder.mkdir(parents=True)
    data_file = "data-00000-of-00001.arrow"
    count, seconds, pending = 0, 0.0, []
    with pa.OSFile(str(folder / data_file), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        for row in rows:
            pending.append(row)
            count, seconds = count + 1, seconds + row["duration"]
            if len(pending) == chunk:
                writer.write_table(pa.Table.from_pylist(pending, schema=schema))
                pending = []
        writer.write_table(pa.Table.from_pylist(pending, schema=schema))
    DatasetInfo(description=DESCRIPTIONS[task], features=features).write_to_directory(str(folder))
    state = {
        "_data_files": [{"filename": data_file}],
        "_fingerprint": fingerprint,
        "_format_columns": None,
        "_format_kwargs": {},
        "_format_type": None,
        "_output_all_columns": False,
        "_split": None,
    }
    (folder / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True))
    return {"rows": count, "hours": seconds / 3600}


def replace_folder(staging: Path, target: Path) -> None:
    """Swap a finished folder in, so readers never see a half-written dataset."""
    old = target.with_name(target.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        target.rename(old)
    staging.rename(target)
    if old.exists():
        shutil.rmtree(old)


def dataset_card(stats: dict, args: dict) -> str:
    lines = [
        "# minmo-lightning built-in corpus",
        "",
        "Synthesised locally with espeak-ng (GPL-3.0 tool; the generated audio is data) by `minmo synth-data`.",
        f"Vocabulary: {len(vocabulary())} English words (commands, numbers, short questions).",
        "",
        "Audio columns are `{bytes, path}` WAV structs cast to `Audio(decode=False)`: decode with soundfile",
        "(`minmo_lightning.datamodules.audio.decode_audio`), not with `datasets`' torchcodec decoder.",
        "",
        "| task | split | rows | hours |",
        "| --- | --- | ---: | ---: |",
    ]
    for task, splits in stats.items():
        for split, s in splits.items():
            lines.append(f"| {task} | {split} | {s['rows']} | {s['hours']:.3f} |")
    lines += ["", "## Tasks", ""]
    for task in stats:
        columns = ", ".join(f"`{name}`" for name in _features(task))
        lines.append(f"- **{task}**: {DESCRIPTIONS[task]} Columns: {columns}.")
    lines += [
        "",
        "## The emotion set is a proxy",
        "",
        "The `prosody_style` column of `emotion` is a **synthetic prosody-style proxy, not human emotion**:",
        "each style is a fixed espeak rate/pitch/volume/range pattern relative to a per-sentence base.",
        "Scores on it say whether a model hears prosody, not whether it recognises emotion.",
        "",
        "## Duplex labelling",
        "",
        f"Frame labels at {args['frame_rate']} Hz, classes {list(LABELS)}: `respond` on the {args['label_span']} s",
        "after each user turn end, `stop_speaking` on the same span after a barge-in (the user starts",
        "T ~ N(0.6, 0.4^2) s into assistant speech; the assistant stops 0.1-0.3 s later). Mid-turn pauses",
        "(pieces before them end in a comma: continuation intonation) and back-channels are `keep_listening`.",
        "`events` (type, start, end, text) are the source of truth; DuplexDataModule recomputes the labels at",
        "another frame rate.",
        "",
        "## Generation settings",
        "",
        "```json",
        json.dumps(args, indent=2, sort_keys=True),
        "```",
        "",
    ]
    return "\n".join(lines)


def build_corpus(
    out: str | Path,
    size: CorpusSize,
    seed: int = 0,
    tasks: Iterable[str] = TASKS,
    workers: int = 2,
    frame_rate: float = 12.5,
    label_span: float = 0.24,
    duplex: DuplexConfig | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Synthesise and write the corpus; returns ``{task: {split: {"rows", "hours"}}}``."""
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        raise ValueError(f"unknown tasks {unknown}; choose from {', '.join(TASKS)}")
    tasks = [t for t in TASKS if t in set(tasks)]
    duplex = duplex or DuplexConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    begin = time.perf_counter()
    settings = {
        "seed": seed,
        "size": asdict(size),
        "tasks": tasks,
        "frame_rate": frame_rate,
        "label_span": label_span,
        "duplex": asdict(duplex),
        "assistant_voice": ASSISTANT_VOICE,
        "user_voices": list(USER_VOICES),
    }
    fingerprint = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    plan = plan_corpus(size, seed, tasks, duplex, frame_rate, label_span)
    stats: dict[str, dict] = {}
    for task in tasks:
        started = time.perf_counter()
        staging = out / f"{task}.partial"
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        stats[task] = {}
        for split, jobs in plan.jobs[task].items():
            results = render(jobs, workers, shard_size=4 if task == "duplex" else 200)
            rows = (_row(task, meta, r, frame_rate) for r, meta in zip(results, plan.meta[task][split]))
            stats[task][split] = write_split(staging / split, task, rows, f"{fingerprint}-{task}-{split}")
        # The layout DatasetDict.save_to_disk writes; splits were saved one by one to bound memory.
        (staging / "dataset_dict.json").write_text(json.dumps({"splits": list(plan.jobs[task])}))
        replace_folder(staging, out / task)
        hours = sum(s["hours"] for s in stats[task].values())
        rows_total = sum(s["rows"] for s in stats[task].values())
        log(f"{task}: {rows_total} rows, {hours:.2f} h in {time.perf_counter() - started:.1f} s")
    (out / "README.md").write_text(dataset_card(stats, settings))
    log(f"built in {time.perf_counter() - begin:.1f} s")
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="minmo synth-data", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="data/builtin", help="output folder (default: data/builtin)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--size", choices=sorted(SIZES), default="default", help="preset sizes (see --help of each count)"
    )
    for f in fields(CorpusSize):
        parser.add_argument(
            f"--{f.name.replace('_', '-')}", type=int, default=None, help=f"override the preset's {f.name}"
        )
    parser.add_argument(
        "--tasks", default=",".join(TASKS), help=f"comma-separated subset of {','.join(TASKS)}"
    )
    parser.add_argument("--workers", type=int, default=2, help="synthesis processes (default 2)")
    parser.add_argument(
        "--frame-rate", type=float, default=12.5, help="duplex frame-label rate in Hz (default 12.5)"
    )
    parser.add_argument(
        "--label-span", type=float, default=0.24, help="seconds of respond/stop frames per event"
    )
    parser.add_argument("--duplex-min-seconds", type=float, default=20.0)
    parser.add_argument("--duplex-max-seconds", type=float, default=60.0)
    args = parser.parse_args(argv)
    size = replace(
        SIZES[args.size],
        **{f.name: getattr(args, f.name) for f in fields(CorpusSize) if getattr(args, f.name) is not None},
    )
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    bad = sorted(set(tasks) - set(TASKS))
    if bad:
        print(f"minmo synth-data: unknown task(s) {bad}; choose from {', '.join(TASKS)}", file=sys.stderr)
        return 2
    duplex = DuplexConfig(min_seconds=args.duplex_min_seconds, max_seconds=args.duplex_max_seconds)
    build_corpus(args.out, size, args.seed, tasks, args.workers, args.frame_rate, args.label_span, duplex)
    if "asr" in tasks:  # the tiny SenseVoice recipes normalise their features with these statistics
        from minmo_lightning.components.voice_encoder.cmvn import main as cmvn

        asr = Path(args.out) / "asr"
        cmvn(["--data", str(asr), "--out", str(asr / "am.mvn")])
    print(f"wrote {args.out} (dataset card: {Path(args.out) / 'README.md'})")
    return 0
