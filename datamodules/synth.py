"""``minmo synth-data``: the built-in spoken corpus, synthesised locally with espeak-ng.

Writes ``OUT/{asr,emotion,tts,s2s,duplex}`` (one ``DatasetDict`` each, ``save_to_disk``) and a dataset
card ``OUT/README.md``. Everything is drawn from one seed: the same seed and sizes give the same bytes,
whatever the number of worker processes (each shard of work is synthesised in a fresh process, see
``espeak.py``). Audio columns hold ``{"bytes": WAV, "path"}`` structs cast to ``Audio(decode=False)``;
read them with ``minmo_lightning.datamodules.audio``. What each task plans and writes is its entry in
``corpus_tasks.CORPUS_TASKS``.
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
from dataclasses import asdict, fields, replace
from pathlib import Path

import numpy as np
from minmo_lightning.datamodules.corpus_aed import mix_events
from minmo_lightning.datamodules.corpus_plan import (
    ASSISTANT_VOICE,
    ESPEAK_RATE,
    SIZES,
    USER_VOICES,
    Concatenation,
    CorpusSize,
    EventClip,
    PhonemeCount,
    SessionJob,
    Utterance,
)
from minmo_lightning.datamodules.corpus_tasks import CORPUS_TASKS, CorpusTask, plan_corpus, stale_folder
from minmo_lightning.datamodules.corpus_text import vocabulary
from minmo_lightning.datamodules.timeline import DuplexConfig, Speaker, build_session, frame_labels


# ---- synthesis: run in forked worker processes ---------------------------------------------------
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


def _render_concatenation(job: Concatenation) -> dict:
    pieces = [_synthesize(replace(part, sample_rate=job.sample_rate)) for part in job.parts]
    wave = pieces[0]
    for seconds, piece in zip(job.silences, pieces[1:]):
        wave = np.concatenate([wave, np.zeros(round(seconds * job.sample_rate), dtype=np.float32), piece])
    return {"bytes": wav_bytes(wave, job.sample_rate), "duration": len(wave) / job.sample_rate}


def _render_event_clip(job: EventClip) -> dict:
    speech = np.zeros(0, dtype=np.float32) if job.speech is None else _synthesize(job.speech)
    wave, events = mix_events(random.Random(job.seed), speech, job.sample_rate)
    return {
        "bytes": wav_bytes(wave, job.sample_rate),
        "duration": len(wave) / job.sample_rate,
        "events": events,
    }


def _count_phonemes(job: PhonemeCount) -> dict:
    from minmo_lightning.datamodules.espeak import Espeak

    return {"phonemes": len(Espeak.get().phonemes(job.text, job.voice))}


_RENDERERS: dict[type, Callable] = {
    Utterance: _render_utterance,
    SessionJob: _render_session,
    Concatenation: _render_concatenation,
    EventClip: _render_event_clip,
    PhonemeCount: _count_phonemes,
}


def _render_job(job) -> dict | tuple:
    """A job's result; a tuple of jobs gives the tuple of their results."""
    if isinstance(job, tuple):
        return tuple(_render_job(j) for j in job)
    return _RENDERERS[type(job)](job)


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


# ---- writing -------------------------------------------------------------------------------------
def write_split(
    folder: Path, task: CorpusTask, rows: Iterable[dict], fingerprint: str, chunk: int = 256
) -> dict[str, float]:
    """Stream rows into ``folder`` in the layout ``Dataset.save_to_disk`` writes (one Arrow stream file,
    ``dataset_info.json``, ``state.json``), a chunk at a time: memory stays at one chunk of audio."""
    import pyarrow as pa
    from datasets import DatasetInfo

    features = task.features()
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
    DatasetInfo(description=task.description, features=features).write_to_directory(str(folder))
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


def dataset_card(stats: dict, settings: dict, kept: Iterable[str] = ()) -> str:
    """The card of every task in ``stats`` (``{task: {split: {"rows", "hours"}}}``), in table order;
    ``kept`` names the tasks whose folders an earlier run wrote."""
    lines = [
        "# minmo-lightning built-in corpus",
        "",
        "Synthesised locally with espeak-ng (GPL-3.0 tool; the generated audio is data) by `minmo synth-data`.",
        f"English vocabulary: {len(vocabulary())} words (commands, numbers, short questions); the",
        "translation and language-ID sets add a Spanish, German, French and Italian template grammar.",
        "",
        "Audio columns are `{bytes, path}` WAV structs cast to `Audio(decode=False)`: decode with soundfile",
        "(`minmo_lightning.datamodules.audio.decode_audio`), not with `datasets`' torchcodec decoder.",
        "Closed-set columns are `ClassLabel`s: their label names travel with the data.",
        "",
        "| task | split | rows | hours |",
        "| --- | --- | ---: | ---: |",
    ]
    tasks = [CORPUS_TASKS[name] for name in CORPUS_TASKS if name in stats]
    for task in tasks:
        for split, s in stats[task.name].items():
            lines.append(f"| {task.name} | {split} | {s['rows']} | {s['hours']:.3f} |")
    lines += ["", "## Tasks", ""]
    features = {task.name: task.features() for task in tasks}
    for task in tasks:
        columns = ", ".join(_column_doc(column, features[task.name][column]) for column in task.columns)
        lines.append(f"- **{task.name}**: {task.description} Columns: {columns}.")
    notes = [task.card_notes(settings) for task in tasks if task.card_notes]
    for note in dict.fromkeys(notes):  # tasks that share a section print it once
        lines += ["", note]
    lines += [
        "",
        "## Generation settings",
        "",
        f"Of the run that built {', '.join(settings['tasks'])}"
        + (f"; {', '.join(kept)} kept the folders an earlier run wrote." if kept else "."),
        "",
        "```json",
        json.dumps(settings, indent=2, sort_keys=True),
        "```",
        "",
    ]
    return "\n".join(lines)


def _column_doc(column: str, feature) -> str:
    names = getattr(feature, "names", None)
    return f"`{column}` ({'/'.join(names)})" if names else f"`{column}`"


def folder_stats(folder: Path) -> dict[str, dict[str, float]]:
    """``{split: {"rows", "hours"}}`` of a written task folder (for the card of a partial rebuild)."""
    from datasets import load_from_disk

    data = load_from_disk(str(folder))
    return {
        split: {"rows": len(dataset), "hours": float(np.sum(dataset.with_format("numpy")["duration"])) / 3600}
        for split, dataset in data.items()
    }


def build_corpus(
    out: str | Path,
    size: CorpusSize,
    seed: int = 0,
    tasks: Iterable[str] = tuple(CORPUS_TASKS),
    workers: int = 2,
    frame_rate: float = 12.5,
    label_span: float = 0.24,
    duplex: DuplexConfig | None = None,
    log: Callable[[str], None] = print,
    progress: bool = False,
) -> dict:
    """Synthesise and write the corpus; returns ``{task: {split: {"rows", "hours"}}}``. ``progress`` prints a
    plain line per split every 30 s (rows done, rate, ETA), on a terminal or in a log file alike."""
    unknown = sorted(set(tasks) - set(CORPUS_TASKS))
    if unknown:
        raise ValueError(f"unknown tasks {unknown}; choose from {', '.join(CORPUS_TASKS)}")
    tasks = [t for t in CORPUS_TASKS if t in set(tasks)]
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
    for name in tasks:
        task, started = CORPUS_TASKS[name], time.perf_counter()
        staging = out / f"{name}.partial"
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        stats[name] = {}
        for split, jobs in plan.jobs[name].items():
            results = render(jobs, workers, task.shard_size)
            if progress:
                results = _with_progress(results, f"synth-data {name} {split}", len(jobs))
            rows = (task.row(meta, r, frame_rate) for r, meta in zip(results, plan.meta[name][split]))
            stats[name][split] = write_split(staging / split, task, rows, f"{fingerprint}-{name}-{split}")
        # The layout DatasetDict.save_to_disk writes; splits were saved one by one to bound memory.
        # ``plan_version`` beside the splits: what tells a later version's rows from these (stale_folder)
        layout = {"splits": list(plan.jobs[name]), "plan_version": task.plan_version}
        (staging / "dataset_dict.json").write_text(json.dumps(layout))
        replace_folder(staging, out / name)
        hours = sum(s["hours"] for s in stats[name].values())
        rows_total = sum(s["rows"] for s in stats[name].values())
        log(f"{name}: {rows_total} rows, {hours:.2f} h in {time.perf_counter() - started:.1f} s")
    kept = [
        name for name in CORPUS_TASKS if name not in stats and (out / name / "dataset_dict.json").is_file()
    ]
    for name in kept:
        reason = stale_folder(out / name, name)
        if reason:
            log(f"warning: {reason}: rebuild it with --tasks {name}")
    everything = {**stats, **{name: folder_stats(out / name) for name in kept}}
    (out / "README.md").write_text(dataset_card(everything, settings, kept))
    log(f"built in {time.perf_counter() - begin:.1f} s")
    return stats


def _with_progress(results: Iterator, label: str, total: int) -> Iterator:
    from minmo_lightning.progress import ProgressLine

    with ProgressLine(label, total, unit="rows") as line:
        for result in results:
            yield result
            line.advance()


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
        "--tasks", default=",".join(CORPUS_TASKS), help=f"comma-separated subset of {','.join(CORPUS_TASKS)}"
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
    bad = sorted(set(tasks) - set(CORPUS_TASKS))
    if bad:
        print(
            f"minmo synth-data: unknown task(s) {bad}; choose from {', '.join(CORPUS_TASKS)}", file=sys.stderr
        )
        return 2
    duplex = DuplexConfig(min_seconds=args.duplex_min_seconds, max_seconds=args.duplex_max_seconds)
    build_corpus(
        args.out,
        size,
        args.seed,
        tasks,
        args.workers,
        args.frame_rate,
        args.label_span,
        duplex,
        progress=True,
    )
    for task in CORPUS_TASKS.values():
        if task.name in tasks and task.write_extras:
            task.write_extras(Path(args.out) / task.name)
    print(f"wrote {args.out} (dataset card: {Path(args.out) / 'README.md'})")
    return 0
