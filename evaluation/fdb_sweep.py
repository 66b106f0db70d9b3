"""``minmo fdb-sweep``: the Full-Duplex-Bench protocol as the duplex predictor's decision threshold moves.

A lower threshold answers sooner and takes over more pauses and back-channels; one operating point hides
that trade-off, so this scores one FDB set per threshold: the set is cut from the built-in duplex corpus
(``fdb_builtin``), the checkpoint converses on every sample with the threshold set on both decisions (respond
and stop speaking; ``minmo chat``), the ASR judge writes the timed words (``asr_judge``) and each task is
scored (``evaluate_fdb``). ``--with-vad`` adds the energy VAD as one more row. Every threshold runs as
``minmo chat`` does, with its silence backstop behind the predictor (``--silence-backstop S``, default
``chat.BACKSTOP_SECONDS``; 0 scores the predictor alone). Writes ``metrics.json``,
``report.md`` and ``curve.png`` (take-over rate against smooth-turn latency, one point per threshold) in
``--out``; every step resumes what it wrote, so an interrupted sweep goes on where it stopped.

    minmo fdb-sweep --ckpt runs/tiny/stage4/checkpoints/last.ckpt --out runs/fdb_sweep \\
        --thresholds 0.3 0.5 0.7 0.9 --with-vad
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from minmo_lightning.evaluation.report import md_table, write_report

from minmo_lightning.chat import BACKSTOP_SECONDS

#: what each FDB task contributes to a row of the curve
FIGURES = {
    "pause_handling": ("tor",),
    "backchannel": ("tor",),
    "smooth_turn_taking": ("tor", "latency"),
    "user_interruption": ("tor", "latency"),
}
#: the FDB v1 targets of issue #14 beside the curve: (column, comparison, value)
TARGETS = (
    ("pause_handling_tor", "<=", 0.1),
    ("backchannel_tor", "<=", 0.1),
    ("smooth_turn_taking_tor", ">=", 0.95),
    ("smooth_turn_taking_latency", "<=", 0.3),
    ("user_interruption_tor", ">=", 0.9),
    ("user_interruption_latency", "<=", 0.5),
)


def point_name(threshold: float | None) -> str:
    return "vad" if threshold is None else f"threshold_{threshold:g}"


def score_point(
    ckpt: str,
    data: str,
    split: str,
    root: Path,
    threshold: float | None,
    judge,
    device: str,
    backstop: float | None = None,
) -> dict:
    """One row of the curve: build the FDB set at ``root`` (once), converse, judge, score every task."""
    from minmo_lightning.evaluation.asr_judge import judge_root
    from minmo_lightning.evaluation.fdb import evaluate_fdb
    from minmo_lightning.evaluation.fdb_builtin import build

    from minmo_lightning.chat import main as chat

    if not (root / "manifest.json").is_file():
        build(data, split, root)
    args = ["--ckpt", ckpt, "--fdb-root", str(root), "--device", device]
    if threshold is None:
        args += ["--predictor", "vad"]
    else:
        args += ["--respond-threshold", str(threshold), "--stop-threshold", str(threshold)]
        if backstop is not None:
            args += ["--silence-backstop", str(backstop)]
    if chat(args) != 0:
        raise RuntimeError(f"minmo chat {' '.join(args)} failed (its message is above)")
    _, _, failed = judge_root(root, judge)
    if failed:
        raise RuntimeError(f"the judge could not read {len(failed)} sample(s) under {root}: {failed[0]}")
    row: dict = {"point": point_name(threshold), "threshold": threshold}
    for task, figures in FIGURES.items():
        result = evaluate_fdb(root / task, task)
        row[f"{task}_samples"] = result["n_samples"]
        row.update({f"{task}_{figure}": result[figure] for figure in figures})
    return row


def meets(row: dict) -> list[str]:
    """The targets a row meets (its columns named)."""
    met = []
    for column, comparison, value in TARGETS:
        figure = row.get(column)
        if figure is not None and (figure <= value if comparison == "<=" else figure >= value):
            met.append(column)
    return met


def curve_png(rows: list[dict], path: Path) -> Path:
    """Take-over rates against the smooth-turn latency, one marker per point, labelled with its name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    series = {
        "pause TOR (lower is better)": "pause_handling_tor",
        "back-channel TOR (lower is better)": "backchannel_tor",
        "smooth-turn TOR (higher is better)": "smooth_turn_taking_tor",
        "interruption TOR (higher is better)": "user_interruption_tor",
    }
    model = [r for r in rows if r["threshold"] is not None]
    for label, column in series.items():
        points = [(r["smooth_turn_taking_latency"], r[column]) for r in model]
        points = [(x, y) for x, y in points if x is not None and y is not None]
        if points:
            axis.plot(*zip(*points), marker="o", label=label)
    for row in rows:
        latency = row["smooth_turn_taking_latency"]
        if latency is not None:
            axis.annotate(row["point"].removeprefix("threshold_"), (latency, row["pause_handling_tor"]))
    axis.set_xlabel("smooth turn-taking latency (s)")
    axis.set_ylabel("take-over rate")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def write_curve(rows: list[dict], out: Path, settings: dict) -> Path:
    """``metrics.json`` (the rows), ``report.md`` and ``curve.png`` in ``out``; returns the report's path."""
    out.mkdir(parents=True, exist_ok=True)
    columns = ["point"] + [f"{task}_{figure}" for task, figures in FIGURES.items() for figure in figures]
    table = [[row[c] for c in columns] + [len(meets(row))] for row in rows]
    targets = ", ".join(f"{column} {comparison} {value}" for column, comparison, value in TARGETS)
    sections = [
        ("Curve", md_table([*columns, f"targets met (of {len(TARGETS)})"], table)),
        ("Targets", targets),
        ("Plot", f"![curve]({curve_png(rows, out / 'curve.png').name})"),
    ]
    metrics = {"task": "fdb_sweep", "rows": rows, "settings": settings}
    write_report(out, metrics, sections, "Full-Duplex-Bench against the decision threshold")
    return out / "report.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="minmo fdb-sweep", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--ckpt", required=True, help="a stage-4 MinMo checkpoint (with its duplex predictor)"
    )
    parser.add_argument("--data", default="data/builtin/duplex", help="a duplex corpus of `minmo synth-data`")
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", required=True, type=Path, help="one FDB set per threshold, and the curve")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.3, 0.5, 0.7, 0.9])
    parser.add_argument("--with-vad", action="store_true", help="add the energy VAD baseline as a row")
    parser.add_argument(
        "--silence-backstop",
        type=float,
        metavar="SECONDS",
        help="behind the predictor, answer a turn it left unanswered after this much silence (default: "
        "minmo chat's; 0: the predictor alone)",
    )
    parser.add_argument("--judge", help="a CTC voice encoder checkpoint (default: minmo demo's)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    bad = [t for t in args.thresholds if not 0.0 < t < 1.0]
    if bad:
        parser.error(f"thresholds are probabilities in (0, 1), got {bad}")
    if args.silence_backstop is not None and args.silence_backstop < 0:
        parser.error(f"--silence-backstop is a silence in seconds (0: none); got {args.silence_backstop}")

    from minmo_lightning.evaluation.asr_judge import JudgeError, default_checkpoint, load_judge

    judge_path = args.judge or default_checkpoint()
    if judge_path is None:
        parser.error("no --judge and no encoder of `minmo demo`: pass a CTC voice encoder checkpoint")
    try:
        judge = load_judge(judge_path, args.device)
        points = [*sorted(args.thresholds), *([None] if args.with_vad else [])]
        rows = []
        for threshold in points:
            print(f"fdb-sweep: {point_name(threshold)}", flush=True)
            root = args.out / point_name(threshold)
            rows.append(
                score_point(
                    args.ckpt,
                    args.data,
                    args.split,
                    root,
                    threshold,
                    judge,
                    args.device,
                    None if threshold is None else args.silence_backstop,
                )
            )
    except (JudgeError, ValueError, RuntimeError) as error:
        print(f"minmo fdb-sweep: {error}", file=sys.stderr)
        return 2
    settings = {
        "ckpt": args.ckpt,
        "data": args.data,
        "split": args.split,
        "judge": str(judge_path),
        "silence_backstop": BACKSTOP_SECONDS if args.silence_backstop is None else args.silence_backstop,
    }
    report = write_curve(rows, args.out, settings)
    for row in rows:
        print(f"  {row['point']:<14} targets met {len(meets(row))}/{len(TARGETS)}: {', '.join(meets(row))}")
    print(f"report: {report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
