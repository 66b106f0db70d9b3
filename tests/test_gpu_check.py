"""``benchmarks/gpu_check.sh`` at tiny size: it runs without a GPU and its JSON holds every figure issue #17 names."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: issue #17's figures: per-block decode times, first packet (measured, formula, critical path), batch 1/8/32
#: throughput and first packets, peak memory, the profile, a stage-1c training step's seconds and MFU
NAMED = [
    "eager_d_llm_ms",
    "eager_d_lm_ms",
    "eager_d_syn_ms",
    "eager_first_packet_ms",
    "eager_formula_ms",
    "eager_critical_path_ms",
    "eager_b1_speech_tokens_per_s",
    "eager_b8_speech_tokens_per_s",
    "eager_b32_speech_tokens_per_s",
    "eager_b1_first_packet_ms",
    "eager_b8_first_packet_ms",
    "eager_b32_first_packet_ms",
    "eager_peak_memory_gib",
    "eager_profile_isolated_host_ms",
    "eager_profile_pipeline_host_ms",
    "train_seconds_per_step",
    "train_mfu",
]


def test_tiny_gpu_check_runs_and_reports_every_named_figure(tmp_path: Path) -> None:
    out, results = tmp_path / "out", tmp_path / "RESULTS.md"
    env = {**os.environ, "PRESET": "tiny", "OUT": str(out), "RESULTS": str(results), "PYTHON": sys.executable}
    env["LIMITS"] = (
        "300 200 0"  # the stage limits are for a GPU; a busy CPU runs the tiny eager stage past 120 s
    )
    run = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["missing"] == [] and report["preset"] == "tiny"
    figures = report["figures"]
    assert all(isinstance(figures[name], int | float) and figures[name] > 0 for name in NAMED)
    assert figures["eager_first_packet_steps"] == 1  # the first packet needs one voice-LM step
    assert 0 < figures["train_mfu"] < 1.5  # tiny and noisy on a CPU, but a ratio of sane size
    assert "| d_llm_ms |" in results.read_text()  # the section went to RESULTS.md
    assert {p.name for p in out.iterdir()} == {
        "gpu_check.json",
        "gpu_check.log",
        "RESULTS_section.md",
        "profile_summary.txt",
        "trace_isolated.json.gz",
        "trace_pipeline.json.gz",
    }


def test_tiny_gpu_check_duplex_stage_reports_the_session(tmp_path: Path) -> None:
    out, results = tmp_path / "out", tmp_path / "RESULTS.md"
    env = {**os.environ, "PRESET": "tiny", "OUT": str(out), "RESULTS": str(results), "PYTHON": sys.executable}
    env |= {"STAGES": "duplex", "LIMITS": "0 0 0 300", "DUPLEX_MINUTES": "0.1"}
    run = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["missing"] == [] and report["skipped"] == {}  # only the stage that ran is required
    figures = report["figures"]
    assert figures["duplex_per_chunk_ms_minute_1"] > 0 and figures["duplex_answers"] >= 1
    assert report["targets"]["duplex_last_over_first_minute"] == "<= 1.2"
    assert "| last_over_first_minute |" in results.read_text()
