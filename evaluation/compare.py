"""Evaluation runs side by side: one table, each run's difference from a base run with a paired bootstrap
95 % interval, and a plot. ``minmo evaluate --compare RUN_DIR...`` and ``minmo ablate`` write it.

The interval resamples the records both runs scored (utterances for WER and accuracy, dialogues for duplex
F1) with replacement and recomputes the task's headline figure from summed per-record counts
(``TaskSpec.statistic``), so it is the corpus-level figure the reports print, not a mean of per-record rates.
A run directory may also hold ``training.json`` (``minmo ablate`` writes it: trainable parameters, train
time): those columns are filled where present.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from minmo_lightning.evaluation.report import fmt, md_table, versions
from minmo_lightning.evaluation.tasks import PairedStatistic, task_spec

BOOTSTRAP_SAMPLES = 2000
#: columns a run's ``training.json`` may fill
TRAINING_COLUMNS = {"trainable_parameters": "trainable params", "train_s": "train time (s)"}


@dataclass
class EvalRun:
    name: str
    folder: Path
    metrics: dict
    records: dict[str, dict]
    training: dict = field(default_factory=dict)

    @property
    def task(self) -> str:
        return self.metrics["task"]

    @property
    def settings(self) -> dict:
        """The metric settings the run scored with (the task's defaults under what it recorded)."""
        return {**task_spec(self.task).settings, **(self.metrics.get("settings") or {})}


def load_run(folder: str | Path, name: str | None = None) -> EvalRun:
    folder = Path(folder)
    metrics_file, predictions = folder / "metrics.json", folder / "predictions.jsonl"
    for needed in (metrics_file, predictions):
        if not needed.is_file():
            raise FileNotFoundError(
                f"{folder} is not an evaluation run: {needed.name} is missing (run `minmo evaluate ... --out {folder}`)"
            )
    records = {}
    for line in predictions.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            records[record["id"]] = record
    training_file = folder / "training.json"
    training = json.loads(training_file.read_text()) if training_file.is_file() else {}
    return EvalRun(name or folder.name, folder, json.loads(metrics_file.read_text()), records, training)


def paired_bootstrap(
    statistic: PairedStatistic,
    base: EvalRun,
    other: EvalRun,
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
) -> dict:
    """``other - base`` on the records both scored, with its 95 % percentile interval."""
    shared = sorted(base.records.keys() & other.records.keys())
    if not shared:
        raise ValueError(
            f"{base.folder} and {other.folder} scored no record in common; compare runs on one test set"
        )
    counts = np.array(
        [
            [
                *statistic.counts(base.records[i], base.settings),
                *statistic.counts(other.records[i], other.settings),
            ]
            for i in shared
        ]
    )
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(shared), size=(samples, len(shared)))
    sums = counts[picks].sum(axis=1)  # [samples, 4]: base num, base den, other num, other den
    with np.errstate(invalid="ignore", divide="ignore"):
        diffs = sums[:, 2] / sums[:, 3] - sums[:, 0] / sums[:, 1]
        total = counts.sum(axis=0)
        point = total[2] / total[3] - total[0] / total[1]
    low, high = np.nanpercentile(diffs, [2.5, 97.5])
    return {
        "difference": float(point),
        "ci95": [float(low), float(high)],
        "shared_records": len(shared),
        "only_base": len(base.records) - len(shared),
        "only_other": len(other.records) - len(shared),
    }


def compare_runs(
    folders: list[str | Path], out: str | Path, names: list[str] | None = None, base: int = 0
) -> dict:
    """Write ``comparison.json``, ``report.md`` and ``comparison.png`` under ``out``; returns the JSON."""
    if len(folders) < 2:
        raise ValueError("compare needs at least two evaluation runs")
    if names is not None and len(names) != len(folders):
        raise ValueError(f"{len(names)} names for {len(folders)} runs")
    runs = [load_run(f, names[i] if names else None) for i, f in enumerate(folders)]
    tasks = {run.task for run in runs}
    if len(tasks) > 1:
        raise ValueError(
            f"the runs score different tasks ({', '.join(sorted(tasks))}); compare runs of one task"
        )
    spec = task_spec(runs[0].task)
    statistic = spec.statistic
    reference = runs[base]
    headline = statistic.name(reference.settings) if statistic else None
    rows = []
    for run in runs:
        row = {"run": run.name, "folder": str(run.folder), "summary": run.metrics.get("summary", {})}
        row.update({key: run.training.get(key) for key in TRAINING_COLUMNS})
        if statistic and run is not reference:
            row["vs_base"] = paired_bootstrap(statistic, reference, run)
        rows.append(row)
    result = {
        "task": spec.name,
        "base": reference.name,
        "headline": headline,
        "lower_is_better": statistic.lower_is_better if statistic else None,
        "bootstrap_samples": BOOTSTRAP_SAMPLES,
        "runs": rows,
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result["versions"] = versions()
    (out / "comparison.json").write_text(json.dumps(result, indent=2))
    body = [f"# Comparison: {spec.name}", ""]
    for heading, text in _sections(result, out):
        body += [f"## {heading}", "", text, ""]
    (out / "report.md").write_text("\n".join(body))
    return result


def _sections(result: dict, out: Path) -> list[tuple[str, str]]:
    rows = result["runs"]
    metrics = list(
        dict.fromkeys(k for row in rows for k, v in row["summary"].items() if isinstance(v, int | float))
    )
    extra = [k for k in TRAINING_COLUMNS if any(row.get(k) is not None for row in rows)]
    headline = result["headline"]
    header = ["run", *metrics, *(TRAINING_COLUMNS[k] for k in extra)]
    if headline:
        header.append(f"Δ {headline} vs {result['base']} [95% CI]")
    table = []
    for row in rows:
        cells = [row["run"], *(row["summary"].get(m) for m in metrics), *(row.get(k) for k in extra)]
        if headline:
            versus = row.get("vs_base")
            cells.append(
                "base"
                if versus is None
                else f"{fmt(versus['difference'])} [{fmt(versus['ci95'][0])}, {fmt(versus['ci95'][1])}]"
            )
        table.append(cells)
    sections = [("Runs", md_table(header, table))]
    if headline:
        better = "lower" if result["lower_is_better"] else "higher"
        sections.append(("Reading the intervals", _verdicts(result, better)))
        sections.append(("Plot", f"![{headline}]({_plot(result, out / 'comparison.png').name})"))
    return sections


def _verdicts(result: dict, better: str) -> str:
    lines = [
        f"{result['headline']}: {better} is better. Paired bootstrap over the records both runs scored "
        f"({result['bootstrap_samples']} resamples); an interval that excludes 0 is a difference this test set resolves."
    ]
    for row in result["runs"]:
        versus = row.get("vs_base")
        if versus is None:
            continue
        low, high = versus["ci95"]
        if low <= 0 <= high:
            verdict = "not resolved (the interval includes 0)"
        else:
            improves = (versus["difference"] < 0) == (better == "lower")
            verdict = "better than the base" if improves else "worse than the base"
        lines.append(f"- {row['run']}: {fmt(versus['difference'])} [{fmt(low)}, {fmt(high)}], {verdict}")
    return "\n".join(lines)


def _plot(result: dict, path: Path) -> Path:
    from minmo_lightning.evaluation.plots import interval_png

    base_value = next(r for r in result["runs"] if r["run"] == result["base"])["summary"].get(
        result["headline"]
    )
    values, errors = {}, {}
    for row in result["runs"]:
        values[row["run"]] = row["summary"].get(result["headline"])
        versus = row.get("vs_base")
        if versus is not None and base_value is not None:
            errors[row["run"]] = (base_value + versus["ci95"][0], base_value + versus["ci95"][1])
    return interval_png(
        values, errors, path, result["headline"], f"{result['headline']}: base + 95% CI of the difference"
    )
