"""``minmo evaluate fdb --task v15_latency``: Full-Duplex-Bench v1.5 stop and response latency from the audio.

FDB v1.5 (``get_timing.py``) runs a VAD over both channels of every sample, ``input.wav`` (the user) and
``output.wav`` (the model, on the input's timeline: what ``minmo chat --fdb-root`` writes), merges each
channel's segments across short gaps (0.6 s user, 0.5 s model) and lists two kinds of interval
(``fdb.v15_latencies``): where both speak at once (stop latency: how long the model kept talking over the
user) and from the end of a user segment to the next model start (response latency). The repository writes
only the intervals; the paper reports means over every interval of every sample, and so does this report,
beside each sample's ``latency_intervals.json``.

The VAD: a sample's ``input_vad.json`` / ``output_vad.json`` (``{"segments": [[start, end], ...]}``, seconds)
when present, as Silero VAD (FDB's, not bundled here) would write them; otherwise the energy detector of
``energy_vad`` with Silero's default durations, which suits synthesised speech on a silent background.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from minmo_lightning.evaluation import energy_vad
from minmo_lightning.evaluation.fdb import _mean_std, sample_dirs, v15_latencies
from minmo_lightning.evaluation.report import config_hash, md_table, write_report

TASK = "v15_latency"
CHANNELS = {"user": "input", "model": "output"}


def channel_segments(folder: Path, stem: str) -> tuple[list[tuple[float, float]], str]:
    """Speech segments of ``folder/<stem>.wav`` and where they came from (its ``<stem>_vad.json`` or energy)."""
    written = folder / f"{stem}_vad.json"
    if written.is_file():
        try:
            segments = json.loads(written.read_text())["segments"]
            return [(float(s), float(e)) for s, e in segments], written.name
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise ValueError(
                f'{written}: expected {{"segments": [[start, end], ...]}} in seconds ({error}); fix or delete it'
            ) from error
    wav = folder / f"{stem}.wav"
    if not wav.is_file():
        hint = "run the model on it (`minmo chat --fdb-root ROOT`)" if stem == "output" else "the FDB sample"
        raise FileNotFoundError(f"{wav} not found: {hint}")
    import soundfile

    try:
        wave, rate = soundfile.read(str(wav), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError) as error:
        raise ValueError(f"{wav} is not readable audio ({error})") from error
    return energy_vad.speech_segments(wave.mean(axis=1), rate), "energy"


def evaluate_timing(root: str | Path) -> dict:
    """Every sample folder of ``root``: its intervals (also written to ``latency_intervals.json``) and the
    means over all of them. Samples that cannot be read are listed under ``errors``."""
    rows, errors = [], []
    for folder in sample_dirs(Path(root)):
        try:
            (user, user_source), (model, model_source) = (
                channel_segments(folder, stem) for stem in CHANNELS.values()
            )
        except (OSError, ValueError) as error:
            errors.append({"sample": folder.name, "error": str(error)})
            continue
        timing = v15_latencies(user, model)
        intervals = {
            "latency_stop_list": timing["stop_intervals"],
            "latency_resp_list": timing["response_intervals"],
        }
        (folder / "latency_intervals.json").write_text(json.dumps(intervals))
        rows.append({"id": folder.name, "vad": {"user": user_source, "model": model_source}, **timing})
    if not rows:
        raise ValueError(
            f"no sample of {root} could be timed; the first, {errors[0]['sample']}: {errors[0]['error']}"
        )
    out: dict = {"task": TASK, "n_samples": len(rows)}
    for kind in ("stop", "response"):
        values = [v for r in rows for v in r[f"{kind}_latencies"]]
        mean, std = _mean_std(values)
        median = float(np.median(values)) if values else None
        out |= {f"{kind}_latency": mean, f"{kind}_latency_std": std, f"{kind}_latency_median": median}
        out[f"n_{kind}_intervals"] = len(values)
    return {**out, "n_errors": len(errors), "errors": errors, "per_sample": rows}


def run_timing(root: str | Path, out_dir: str | Path) -> dict:
    """``evaluate_timing`` written as ``metrics.json`` and ``report.md`` in ``out_dir``."""
    result = evaluate_timing(root)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    header = ["samples", "kind", "intervals", "mean (s)", "std (s)", "median (s)"]
    summary = [
        [result["n_samples"], kind, result[f"n_{kind}_intervals"]]
        + [result[f"{kind}_latency{suffix}"] for suffix in ("", "_std", "_median")]
        for kind in ("stop", "response")
    ]

    def mean(values: list[float]) -> float | None:
        return _mean_std(values)[0]

    per_sample = [
        [r["id"], len(r["stop_latencies"]), mean(r["stop_latencies"]), len(r["response_latencies"])]
        + [mean(r["response_latencies"]), f"{r['vad']['user']} / {r['vad']['model']}"]
        for r in result["per_sample"]
    ]
    sections = [
        (
            "Summary",
            md_table(header, summary) + "\n\nStop latency: how long the model spoke over the user in each "
            "overlap; response latency: from the end of a user segment to the next model start (FDB v1.5 "
            "`get_timing.py`, segments merged across 0.6 s user / 0.5 s model gaps).",
        ),
        (
            "Per sample",
            md_table(
                ["id", "overlaps", "stop (s)", "responses", "response (s)", "VAD user / model"], per_sample
            ),
        ),
    ]
    if result["errors"]:
        failed = md_table(["sample", "error"], [[e["sample"], e["error"]] for e in result["errors"]])
        sections.insert(1, (f"Not timed ({len(result['errors'])} samples)", failed))
    settings = {"task": TASK, "root": str(Path(root).resolve()), "vad": energy_vad.NAME}
    metrics = {**result, "config_hash": config_hash(settings), "settings": settings}
    write_report(out_dir, metrics, sections, "Full-Duplex-Bench v1.5 stop and response latency")
    return metrics
