"""``minmo evaluate fdb``: Full-Duplex-Bench metrics written as metrics.json + report.md + timeline PNG.

metrics.json keeps FDB's figures at the top level (``tor``, ``latency`` in seconds or null, and for
backchannel ``freq`` and ``jsd``; each the mean over samples) next to ``per_sample``, so it reads like
the reference's printout; versions and settings are added beside them. Samples that could not be scored
are listed under ``errors`` (``[{"sample", "error"}]``) and in the report's "Not scored" section.
"""

from __future__ import annotations

from pathlib import Path

from minmo_lightning.evaluation import plots
from minmo_lightning.evaluation.fdb import evaluate_fdb, fdb_task
from minmo_lightning.evaluation.report import config_hash, image, md_table, write_report

#: FDB v1 README figures (§1.1.7 of the evaluation reference) for the report's comparison table.
PUBLISHED = {
    "pause_handling": (
        "TOR (Synthetic / Candor)",
        {
            "PersonaPlex": "0.584 / 0.662",
            "dGSLM": "0.934 / 0.935",
            "Moshi": "0.985 / 0.980",
            "Freeze-Omni": "0.642 / 0.481",
            "GPT-Realtime": "0.010 / 0.120",
        },
    ),
    "backchannel": (
        "TOR / Freq / JSD",
        {
            "PersonaPlex": "0.327 / 0.025 / 0.649",
            "dGSLM": "0.691 / 0.015 / 0.934",
            "Moshi": "1.000 / 0.001 / 0.957",
            "Freeze-Omni": "0.636 / 0.001 / 0.997",
            "GPT-Realtime": "0.000 / 0.007 / 0.980",
        },
    ),
    "smooth_turn_taking": (
        "TOR / Latency (s)",
        {
            "PersonaPlex": "0.992 / 0.070",
            "dGSLM": "0.975 / 0.352",
            "Moshi": "0.941 / 0.265",
            "Freeze-Omni": "0.336 / 0.953",
            "GPT-Realtime": "1.000 / 1.470",
        },
    ),
    "user_interruption": (
        "TOR / Latency (s)",
        {
            "PersonaPlex": "1.000 / 0.400",
            "dGSLM": "0.917 / 2.531",
            "Moshi": "1.000 / 0.257",
            "Freeze-Omni": "0.867 / 1.409",
            "GPT-Realtime": "0.970 / 1.500",
        },
    ),
}


def run_fdb(root: str | Path, task: str, out_dir: str | Path, reference_compat: bool = True) -> dict:
    result = evaluate_fdb(root, task, reference_compat)
    spec = fdb_task(task)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    header = ["samples", "TOR", "TOR std", "latency (s)", "latency std", "took the turn"]
    header += [name for name, _ in spec.summary_columns]
    row = [
        result["n_samples"],
        result["tor"],
        result["tor_std"],
        result["latency"],
        result["latency_std"],
        result["n_took_turn"],
    ]
    row += [result[key] for _, key in spec.summary_columns]
    per_sample_cols = ["id", "words", "TOR", "latency (s)"] + [name for name, _ in spec.sample_columns]
    per_sample_rows = [
        [r["id"], r["n_words"], r["tor"], r["latency"]] + [r[key] for _, key in spec.sample_columns]
        for r in result["per_sample"]
    ]
    png = plots.fdb_timeline_png(result["per_sample"], task, out_dir / f"fdb_{task}_timeline.png")
    label, published = PUBLISHED[task]
    mode = "reference-compatible (quirks reproduced)" if reference_compat else "corrected (quirks fixed)"
    sections = [
        (
            "Summary",
            md_table(header, [row]) + f"\n\nMode: {mode}. Latency is averaged over the samples that "
            "took the turn only; it is null when none did.",
        ),
        ("Published figures (FDB v1 README)", md_table(["system", label], published.items())),
        ("Timeline", image(png, "model speech per sample")),
        ("Per sample", md_table(per_sample_cols, per_sample_rows)),
    ]
    if result["errors"]:
        failed = md_table(["sample", "error"], [[e["sample"], e["error"]] for e in result["errors"]])
        sections.insert(1, (f"Not scored ({len(result['errors'])} samples)", failed))
    settings = {"task": task, "reference_compat": reference_compat, "root": str(Path(root).resolve())}
    metrics = {**result, "config_hash": config_hash(settings), "settings": settings}
    write_report(out_dir, metrics, sections, f"Full-Duplex-Bench {task}")
    return metrics
