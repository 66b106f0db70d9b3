"""Full-Duplex-Bench (v1.0 / v1.5) metrics on its own file layout, from time-stamped words and VAD.

Layout: ``ROOT/<sample_id>/`` holds ``output.json`` (``{"text", "chunks": [{"text", "timestamp": [s, e]}]}``,
one chunk per word, seconds on the input timeline), plus ``turn_taking.json`` (smooth turn-taking),
``interrupt.json`` (user interruption; its ``output.json`` is the transcript cropped at the end of the
interruption, as FDB's ``asr.py`` writes it) or ``vad.json`` (backchannel: ``{"duration": seconds of
output.wav, "segments": [[start, end], ...]}`` from Silero VAD, which is not bundled here). The backchannel
task also reads ``ROOT/icc_gt_distribution.json`` (``{sample_id: [p_0, ...]}``).

The take-over rule (TOR) shared by three tasks: a sample takes the turn iff it has >= 1 word and
(span from first word start to last word end >= 1.0 s, or more than 3 words). Exactly 1.0 s counts as a
turn; exactly 3 words does not. A null last end time falls back to that word's start (FDB does this only
in pause handling and crashes elsewhere; we do it everywhere). Latency = max(0, first word start - t_ref),
averaged over the samples that took the turn only; ``None`` (JSON null) when none did (FDB divides by 0).
Samples are paired and ordered by folder name (FDB pairs by directory-listing order).

A sample that cannot be scored (its ``output.json`` missing or not valid JSON, its task file missing, an
unreadable ``output.wav`` where its duration is needed) is listed in ``errors`` (``[{"sample", "error"}]``,
the cause and the fix) and left out of every figure; the others are scored. Only a root where no sample can
be scored is an error. ``output.wav`` itself is read only for a missing ``vad.json`` duration and to tell
why an ``output.json`` is missing; any channel count and sample rate will do.

Quirks of the reference that change numbers, reproduced when ``reference_compat=True`` (the default, so
figures compare with published ones) and corrected when False:

1. Backchannel TOR of a sample is the value from its *last* processed VAD segment, not "any segment took
   the turn" (corrected: any).
2. Every processed VAD segment is counted as a backchannel, including segments judged to take the turn
   (corrected: only segments that do not take the turn).
3. A sample with no backchannel gets JSD = 1, outside the range of the Jensen-Shannon distance
   [0, sqrt(ln 2)] (corrected: sqrt(ln 2), the maximal distance).

Not reproduced in either mode (they do not change a correct run's numbers): the GPT relevance score
appended twice, the TOR denominator inflated on judge retries, listing-order pairing, crashes on null
end times.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TURN_SECONDS = 1.0
TURN_WORDS = 3
BC_WINDOW_S = 0.2
BC_EPSILON = 1e-10
BC_LONG_SEGMENT_S = 3.0
JSD_MAX = math.sqrt(math.log(2))
#: relevance judge for user interruption: (context, interrupt, response text) -> rating 0-5
Judge = Callable[[str, str, str], float]


@dataclass(frozen=True)
class Word:
    text: str
    start: float | None
    end: float | None


def read_words(path: Path) -> list[Word]:
    data = _read_json(path)
    if not isinstance(data, dict) or "chunks" not in data:
        raise ValueError(
            f"{path}: expected {{'text': ..., 'chunks': [{{'text', 'timestamp': [start, end]}}]}}"
        )
    words = []
    for k, chunk in enumerate(data["chunks"]):
        stamp = chunk.get("timestamp") if isinstance(chunk, dict) else None
        if not isinstance(stamp, list | tuple) or len(stamp) != 2:
            raise ValueError(f"{path}: chunk {k} has no 'timestamp': [start, end] pair: {chunk!r}")
        words.append(Word(str(chunk.get("text", "")), _opt_float(stamp[0]), _opt_float(stamp[1])))
    return words


def take_turn(words: list[Word]) -> bool:
    """FDB's take-over rule (see module docstring)."""
    if not words:
        return False
    first, last = words[0].start, words[-1].end if words[-1].end is not None else words[-1].start
    if first is None or last is None:
        raise ValueError("the first word has no start time, or the last word has neither end nor start")
    return (last - first) >= TURN_SECONDS or len(words) > TURN_WORDS


def turn_latency(words: list[Word], t_ref: float) -> float | None:
    """Seconds from ``t_ref`` to the first word, clamped at 0; None when the sample did not take the turn."""
    return max(0.0, words[0].start - t_ref) if take_turn(words) else None


def jensen_shannon_distance(p: np.ndarray, q: np.ndarray) -> float:
    """sqrt(JS divergence), natural log, both inputs normalised to sum 1 first (scipy's convention)."""
    p, q = np.asarray(p, dtype=float), np.asarray(q, dtype=float)
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log(a[nz] / m[nz])))

    return math.sqrt(max(0.0, (kl(p) + kl(q)) / 2))


def backchannel_histogram(segments: list[tuple[float, float]], duration: float) -> np.ndarray:
    """Occupancy of 0.2 s bins by the segments (both end bins inclusive), + epsilon, normalised."""
    n = int(duration / BC_WINDOW_S) + 1
    hist = np.zeros(n)
    for s, e in segments:
        # int(t / 0.2) exactly as the reference computes it: 1.4 / 0.2 = 6.999... -> bin 6
        hist[int(s / BC_WINDOW_S) : min(int(e / BC_WINDOW_S) + 1, n)] += 1
    hist += BC_EPSILON
    return hist / hist.sum()


def segment_words(words: list[Word], start: float, end: float) -> list[Word]:
    """Words overlapping [start, end] by the reference's three conditions and null handling."""
    out = []
    for w in words:
        if w.start is None or (w.end is None and w.start < end):
            continue
        w_end = w.start if w.end is None else w.end
        inside = w.start >= start and w_end <= end
        if inside or (w.start <= end and w_end > end) or (w.start <= start and w_end > start):
            out.append(w)
    return out


def score_backchannel(
    words: list[Word],
    segments: list[tuple[float, float]],
    duration: float,
    gt_distribution: list[float],
    reference_compat: bool = True,
) -> dict:
    """One sample: TOR, backchannels per second and JSD against the human timing distribution."""
    if duration <= 0:
        raise ValueError(f"output duration must be positive, got {duration}")
    tor, any_turn, backchannels = False, False, []
    for s, e in segments:
        if e - s > BC_LONG_SEGMENT_S:
            tor = any_turn = True
            break
        n = len(segment_words(words, s, e))
        tor = not (n <= 2 and (e - s) < 1.0)
        any_turn |= tor
        if reference_compat or not tor:
            backchannels.append((s, e))
    if backchannels:
        hist = backchannel_histogram(backchannels, duration)
        gt = np.asarray(gt_distribution, dtype=float)
        resized = np.interp(np.linspace(0, 1, len(hist)), np.linspace(0, 1, len(gt)), gt)
        jsd = jensen_shannon_distance(hist, resized)
    else:
        jsd = 1.0 if reference_compat else JSD_MAX
    return {
        "tor": int(tor if reference_compat else any_turn),
        "freq": len(backchannels) / duration,
        "jsd": jsd,
        "n_backchannels": len(backchannels),
        "backchannels": [list(b) for b in backchannels],
    }


# ---------------------------------------------------------------- v1.5 stop / response latency


def merge_segments(segments: list[tuple[float, float]], max_gap: float) -> list[tuple[float, float]]:
    """Merge consecutive segments whose gap is <= ``max_gap`` (FDB v1.5: 0.6 s user, 0.5 s model)."""
    merged: list[list[float]] = []
    for s, e in sorted(segments):
        if merged and s - merged[-1][1] <= max_gap:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    return [(s, e) for s, e in merged]


def stop_latency_intervals(
    user: list[tuple[float, float]], model: list[tuple[float, float]]
) -> list[tuple[float, float]]:
    """Overlaps of user and model speech (two-pointer sweep); stop latency = end - start of each."""
    found: dict[float, tuple[float, float]] = {}
    i = j = 0
    while i < len(user) and j < len(model):
        s, e = max(user[i][0], model[j][0]), min(user[i][1], model[j][1])
        if s < e:
            key = round(e, 3)
            if key not in found or e - s < found[key][1] - found[key][0]:
                found[key] = (s, e)
        if user[i][1] < model[j][1]:
            i += 1
        else:
            j += 1
    return sorted(((round(s, 3), round(e, 3)) for s, e in found.values()), key=lambda x: x[1])


def response_latency_intervals(
    user: list[tuple[float, float]], model: list[tuple[float, float]]
) -> list[tuple[float, float]]:
    """[user_end, next model start] pairs; per model start keep the latest user end (shortest gap)."""
    starts = sorted(s for s, _ in model)
    best: dict[float, float] = {}
    for _, user_end in user:
        k = int(np.searchsorted(starts, user_end, side="right"))
        if k < len(starts):
            best[starts[k]] = max(best.get(starts[k], -math.inf), user_end)
    return sorted((u, m) for m, u in best.items())


def v15_latencies(
    user: list[tuple[float, float]],
    model: list[tuple[float, float]],
    user_gap: float = 0.6,
    model_gap: float = 0.5,
) -> dict:
    """FDB v1.5 timing of one sample from VAD segments: merged segments, then stop/response intervals.

    The reference writes only the intervals; means over all intervals of all samples are what the paper
    reports, so aggregate the returned lists across samples before averaging."""
    user, model = merge_segments(user, user_gap), merge_segments(model, model_gap)
    stops = stop_latency_intervals(user, model)
    responses = response_latency_intervals(user, model)
    return {
        "stop_intervals": stops,
        "response_intervals": responses,
        "stop_latencies": [e - s for s, e in stops],
        "response_latencies": [m - u for u, m in responses],
    }


# ---------------------------------------------------------------- reading a root directory


def _read_json(path: Path):
    if not path.is_file():
        raise FileNotFoundError(f"required file {path} not found")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}); fix or regenerate it") from error


def _opt_float(value) -> float | None:
    return None if value is None else float(value)


def _natural_key(name: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def sample_dirs(root: Path) -> list[Path]:
    if not root.is_dir():
        raise FileNotFoundError(f"FDB root {root} is not a directory")
    dirs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))]
    if not dirs:
        raise ValueError(f"{root} holds no sample folders (expected one folder per sample with output.json)")
    return sorted(dirs, key=lambda p: _natural_key(p.name))


def read_vad(folder: Path) -> tuple[list[tuple[float, float]], float]:
    path = folder / "vad.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: the backchannel task needs the VAD segments of output.wav. Silero VAD is not "
            'bundled; write {"duration": <seconds of output.wav>, "segments": [[start, end], ...]} from '
            "silero_vad.get_speech_timestamps(wav, model, return_seconds=True)"
        )
    data = _read_json(path)
    segments = [
        (float(s["start"]), float(s["end"])) if isinstance(s, dict) else (float(s[0]), float(s[1]))
        for s in data.get("segments", [])
    ]
    duration = data.get("duration")
    if duration is None:
        wav = folder / "output.wav"
        if not wav.is_file():
            raise ValueError(f"{path} has no 'duration' and there is no output.wav to measure it from")
        duration = _wav_seconds(wav)
    return segments, float(duration)


def _wav_seconds(path: Path) -> float:
    import soundfile

    try:
        return soundfile.info(str(path)).duration
    except (soundfile.LibsndfileError, RuntimeError) as error:
        raise ValueError(f"{path} is not readable audio ({error})") from error


def _missing_words(folder: Path) -> str:
    """Why ``output.json`` is missing, from what ``output.wav`` (the model's answer) says."""
    wav, root = folder / "output.wav", folder.parent
    if not wav.is_file():
        return (
            f"{folder.name} has neither output.json nor output.wav: run the model on it "
            f"(`minmo chat --fdb-root {root}`), then `minmo asr-judge --root {root}`"
        )
    seconds = _wav_seconds(wav)  # raises, naming the file, when it is corrupt
    if seconds == 0:
        return f"{wav} is empty (0 samples): rerun the model on this sample"
    return f"{folder / 'output.json'} not found: transcribe output.wav with `minmo asr-judge --root {root}`"


def _relevance(folder: Path, meta: dict, words: list[Word], tor: int, judge: Judge | None) -> float | None:
    """User-interruption relevance (0-5) of a sample that took the turn: ``judge(context, interrupt, response)``
    when given, else the ``rating.json`` an earlier FDB judge run left in the folder, else None."""
    if not tor:
        return None
    if judge is not None:
        return judge(
            str(meta.get("context", "")), str(meta.get("interrupt", "")), " ".join(w.text for w in words)
        )
    path = folder / "rating.json"
    return float(_read_json(path)["rating"]) if path.is_file() else None


@dataclass(frozen=True)
class SampleInputs:
    """What a task's sample scorer may read besides the sample folder and its words."""

    gt: dict | None  # icc_gt_distribution.json (backchannel)
    reference_compat: bool
    judge: Judge | None


def _pause_handling(folder: Path, words: list[Word], inputs: SampleInputs) -> dict:
    return {"tor": int(take_turn(words)), "latency": None}


def _turn_after(folder: Path, words: list[Word], name: str, index: int) -> tuple[dict, dict]:
    """TOR and latency against the time stamp ``index`` (0 start, 1 end) of the first entry of ``name``;
    returns the row fields and that entry."""
    meta = _read_json(folder / name)
    try:
        t_ref = float(meta[0]["timestamp"][index])
    except (IndexError, KeyError, TypeError) as error:
        raise ValueError(f"{folder / name}: expected [{{'timestamp': [start, end], ...}}]") from error
    return {"t_ref": t_ref, "tor": int(take_turn(words)), "latency": turn_latency(words, t_ref)}, meta[0]


def _smooth_turn_taking(folder: Path, words: list[Word], inputs: SampleInputs) -> dict:
    return _turn_after(folder, words, "turn_taking.json", 0)[0]


def _user_interruption(folder: Path, words: list[Word], inputs: SampleInputs) -> dict:
    row, meta = _turn_after(folder, words, "interrupt.json", 1)
    return {**row, "rating": _relevance(folder, meta, words, row["tor"], inputs.judge)}


def _backchannel(folder: Path, words: list[Word], inputs: SampleInputs) -> dict:
    if folder.name not in inputs.gt:
        raise KeyError(f"sample {folder.name!r} has no entry in icc_gt_distribution.json")
    segments, duration = read_vad(folder)
    row = score_backchannel(words, segments, duration, inputs.gt[folder.name], inputs.reference_compat)
    return {**row, "latency": None, "duration": duration, "segments": [list(s) for s in segments]}


def _relevance_summary(rows: list[dict]) -> dict:
    ratings = [r["rating"] for r in rows if r["rating"] is not None]
    return {"gpt_score": _mean_std(ratings)[0], "n_rated": len(ratings)}


def _backchannel_summary(rows: list[dict]) -> dict:
    freq, freq_std = _mean_std([r["freq"] for r in rows])
    jsd, jsd_std = _mean_std([r["jsd"] for r in rows])
    return {"freq": freq, "freq_std": freq_std, "jsd": jsd, "jsd_std": jsd_std}


@dataclass(frozen=True)
class FDBTask:
    """One Full-Duplex-Bench task: what it adds to TOR and latency, per sample and overall, and the report
    columns for it."""

    name: str
    #: the task's fields of one sample's row (``tor`` and ``latency`` among them)
    score_sample: Callable[[Path, list[Word], SampleInputs], dict]
    #: figures over all rows beyond TOR and latency
    summarize: Callable[[list[dict]], dict] | None = None
    #: reads ``ROOT/icc_gt_distribution.json``
    reads_gt: bool = False
    #: extra report columns, (header, key): of the summary, and of each sample's row
    summary_columns: tuple[tuple[str, str], ...] = ()
    sample_columns: tuple[tuple[str, str], ...] = ()


FDB_TASKS: dict[str, FDBTask] = {
    spec.name: spec
    for spec in (
        FDBTask("pause_handling", _pause_handling),
        FDBTask("smooth_turn_taking", _smooth_turn_taking),
        FDBTask(
            "user_interruption",
            _user_interruption,
            _relevance_summary,
            summary_columns=(("relevance (0-5)", "gpt_score"), ("rated", "n_rated")),
        ),
        FDBTask(
            "backchannel",
            _backchannel,
            _backchannel_summary,
            reads_gt=True,
            summary_columns=(("freq (1/s)", "freq"), ("JSD", "jsd")),
            sample_columns=(("backchannels", "n_backchannels"), ("freq", "freq"), ("JSD", "jsd")),
        ),
    )
}


def fdb_task(task: str) -> FDBTask:
    if task not in FDB_TASKS:
        raise ValueError(f"unknown FDB task {task!r}; choose one of {', '.join(FDB_TASKS)}")
    return FDB_TASKS[task]


def evaluate_sample(folder: Path, spec: FDBTask, inputs: SampleInputs) -> dict:
    if not (folder / "output.json").is_file():
        raise FileNotFoundError(_missing_words(folder))
    words = read_words(folder / "output.json")
    row: dict = {"id": folder.name, "n_words": len(words)}
    row.update(spec.score_sample(folder, words, inputs))
    row["words"] = [[w.text, w.start, w.end] for w in words]
    return row


def _message(error: Exception) -> str:
    return str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std())


def evaluate_fdb(
    root: str | Path, task: str, reference_compat: bool = True, judge: Judge | None = None
) -> dict:
    """Score every sample folder of ``root``: ``tor``, ``latency`` (+ ``freq``, ``jsd``) and ``per_sample``.

    ``judge`` (user interruption only) rates relevance; TOR and latency never depend on it. ``gpt_score`` is
    the mean rating over the samples that took the turn and have one (once each: FDB counts each twice)."""
    spec = fdb_task(task)
    root = Path(root)
    gt = _read_json(root / "icc_gt_distribution.json") if spec.reads_gt else None
    inputs = SampleInputs(gt, reference_compat, judge)
    rows, failures = [], []
    for folder in sample_dirs(root):
        try:
            rows.append(evaluate_sample(folder, spec, inputs))
        except (OSError, ValueError, KeyError) as error:
            failures.append((folder.name, error))
    errors = [{"sample": name, "error": _message(error)} for name, error in failures]
    if not rows:
        name, error = failures[0]
        kind = FileNotFoundError if isinstance(error, FileNotFoundError) else ValueError
        raise kind(f"no sample of {root} could be scored; the first, {name}: {_message(error)}")
    latencies = [r["latency"] for r in rows if r["latency"] is not None]
    tor, tor_std = _mean_std([r["tor"] for r in rows])
    latency, latency_std = _mean_std(latencies)
    out = {
        "task": task,
        "reference_compat": reference_compat,
        "n_samples": len(rows),
        "tor": tor,
        "tor_std": tor_std,
        "latency": latency,
        "latency_std": latency_std,
        "n_took_turn": sum(r["tor"] for r in rows),
        "n_errors": len(errors),
        "errors": errors,
    }
    if spec.summarize is not None:
        out.update(spec.summarize(rows))
    out["per_sample"] = rows
    return out
