"""``minmo fdb-build``: a Full-Duplex-Bench v1 folder set cut from the built-in duplex corpus.

    minmo fdb-build --data data/builtin/duplex --split test --out fdb_builtin
    minmo chat --ckpt runs/tiny/stage4/checkpoints/last.ckpt --fdb-root fdb_builtin
    minmo asr-judge --root fdb_builtin --ckpt runs/tiny/voice_encoder/checkpoints/last.ckpt
    minmo evaluate fdb --task smooth_turn_taking --root fdb_builtin/smooth_turn_taking

``OUT/<task>/<session id>-<nn>/input.wav`` is the user channel (16 kHz mono) of one cut, beside the metadata
``evaluation/fdb.py`` reads for that task; ``OUT/backchannel/icc_gt_distribution.json`` holds the backchannel
ground truth; ``OUT/manifest.json`` records, per sample, the session, the cut on the session's timeline and
the session's events inside it (on the cut's timeline), and the events each task left out (by the id their
sample would have had) and why. Where each cut starts and ends, and how that differs from FDB's recordings,
is in ``fdb_cuts``. The same corpus and split always give the same folders (the rules draw nothing at
random). A task whose events the split never has is an error that names the event type; so is a missing
column.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
from minmo_lightning.evaluation.fdb_cuts import (
    CUT_TASKS,
    LEAD,
    TAIL_MAX,
    TAIL_MIN,
    Cut,
    LeftOut,
    SessionEvents,
    Span,
)

SAMPLE_RATE = 16000
COLUMNS = ("id", "user_audio", "events")
GT_FILE = "icc_gt_distribution.json"


class FDBBuildError(ValueError):
    """A dataset or an output folder the builder cannot use."""


def load_sessions(data: str | Path, split: str):
    """The split of a ``minmo synth-data`` duplex folder, checked for the columns the builder reads."""
    from datasets import load_from_disk

    path = Path(data)
    if not (path / "dataset_dict.json").is_file():
        raise FDBBuildError(
            f"{path} is not a saved DatasetDict (build it with `minmo synth-data --tasks duplex`)"
        )
    splits = load_from_disk(str(path))
    if split not in splits:
        raise FDBBuildError(f"{path} has no split {split!r}; it has {', '.join(splits)}")
    sessions = splits[split]
    missing = [c for c in COLUMNS if c not in sessions.column_names]
    if missing:
        raise FDBBuildError(
            f"{path} [{split}] lacks column(s) {', '.join(missing)}; the builder reads {', '.join(COLUMNS)} "
            "(a duplex corpus of `minmo synth-data`)"
        )
    return sessions


def check_events(sessions, tasks: list[str], where: str) -> None:
    present = {event["type"] for events in sessions["events"] for event in events}
    for name in tasks:
        task = CUT_TASKS[name]
        for kind in task.needs:
            if kind not in present:
                hint = f" ({task.hint})" if task.hint else ""
                raise FDBBuildError(
                    f"{name} needs {kind!r} events and {where} has none{hint}; leave the task out with "
                    f"--tasks {','.join(t for t in tasks if t != name) or '...'}"
                )


def _in_cut(span: Span, cut: Cut) -> bool:
    """A span overlaps the cut; an instant (``turn_end``, ``barge_in``) lies in it, ends included."""
    if span.start == span.end:
        return cut.start <= span.start <= cut.end
    return span.end > cut.start and span.start < cut.end


def _events_inside(session: SessionEvents, cut: Cut) -> list[dict]:
    """The session's events in the cut, on the cut's timeline (clipped to it)."""
    return [
        {
            "type": span.kind,
            "start": round(max(span.start, cut.start) - cut.start, 4),
            "end": round(min(span.end, cut.end) - cut.start, 4),
            "text": span.text,
        }
        for span in session.spans
        if _in_cut(span, cut)
    ]


def _write_sample(folder: Path, wave: np.ndarray, cut: Cut) -> None:
    import soundfile

    folder.mkdir(parents=True)
    first, last = round(cut.start * SAMPLE_RATE), round(cut.end * SAMPLE_RATE)
    soundfile.write(str(folder / "input.wav"), wave[first:last], SAMPLE_RATE)
    for name, content in cut.files.items():
        (folder / name).write_text(json.dumps(content, indent=1))


def _prepare(out: Path, tasks: list[str], overwrite: bool) -> None:
    for name in tasks:
        folder = out / name
        if folder.exists() and any(folder.iterdir()):
            if not overwrite:
                raise FDBBuildError(
                    f"{folder} is not empty; pass --overwrite to rebuild it (its output.wav / output.json go too)"
                )
            shutil.rmtree(folder)


def build(
    data: str | Path, split: str, out: str | Path, tasks: list[str] | None = None, overwrite: bool = False
) -> dict:
    """Write the FDB folders of ``tasks`` (default: all four) and return the manifest."""
    from minmo_lightning.datamodules.audio import decode_audio

    tasks = list(CUT_TASKS) if tasks is None else tasks
    unknown = sorted(set(tasks) - set(CUT_TASKS))
    if unknown:
        raise FDBBuildError(f"unknown task(s) {unknown}; choose from {', '.join(CUT_TASKS)}")
    sessions = load_sessions(data, split)
    check_events(sessions, tasks, f"{data} [{split}]")
    out = Path(out)
    _prepare(out, tasks, overwrite)
    samples: dict[str, list[dict]] = {name: [] for name in tasks}
    left_out: dict[str, dict[str, list[str]]] = {name: {} for name in tasks}
    gt: dict[str, list[float]] = {}
    for row in sessions:
        wave, _ = decode_audio(row["user_audio"], target_rate=SAMPLE_RATE)
        session = SessionEvents(row["id"], row["events"], len(wave) / SAMPLE_RATE)
        for name in tasks:
            for cut in CUT_TASKS[name].cuts(session):
                sample_id = f"{session.id}-{cut.number:02d}"
                if isinstance(cut, LeftOut):
                    left_out[name].setdefault(cut.reason, []).append(sample_id)
                    continue
                _write_sample(out / name / sample_id, wave, cut)
                if cut.gt_distribution is not None:
                    gt[sample_id] = cut.gt_distribution
                samples[name].append(
                    {
                        "id": sample_id,
                        "session": session.id,
                        "start": cut.start,
                        "end": cut.end,
                        "events": _events_inside(session, cut),
                    }
                )
    if "backchannel" in tasks:
        (out / "backchannel" / GT_FILE).write_text(json.dumps(gt))
    manifest = {
        "data": str(data),
        "split": split,
        "sample_rate": SAMPLE_RATE,
        "settings": {"lead": LEAD, "tail_min": TAIL_MIN, "tail_max": TAIL_MAX},
        "counts": {name: len(rows) for name, rows in samples.items()},
        "left_out": left_out,
        "samples": samples,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="minmo fdb-build", description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/builtin/duplex", help="a duplex corpus of `minmo synth-data`")
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", required=True, type=Path, help="the FDB root to write")
    parser.add_argument(
        "--tasks", default=",".join(CUT_TASKS), help="comma-separated subset of the four tasks"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace task folders that are not empty")
    args = parser.parse_args(argv)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    try:
        manifest = build(args.data, args.split, args.out, tasks, args.overwrite)
    except ValueError as error:  # FDBBuildError, or a session whose events are not a built-in timeline
        print(f"minmo fdb-build: {error}", file=sys.stderr)
        return 2
    for name, count in manifest["counts"].items():
        reasons = manifest["left_out"][name]
        note = "".join(f"; {len(ids)} left out: {reason}" for reason, ids in reasons.items())
        print(f"{args.out / name}: {count} sample(s){note}")
    print(f"next: `minmo chat --ckpt CKPT --fdb-root {args.out}`, then `minmo asr-judge --root {args.out}`")
    return 0
