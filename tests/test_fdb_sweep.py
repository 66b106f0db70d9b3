"""``minmo fdb-sweep``: one FDB set per threshold, each conversed, judged and scored; the curve reported."""

from __future__ import annotations

import json
from pathlib import Path

import minmo_lightning.evaluation.asr_judge as asr_judge
import minmo_lightning.evaluation.fdb as fdb
import minmo_lightning.evaluation.fdb_builtin as fdb_builtin
import pytest
from minmo_lightning.evaluation import fdb_sweep

import minmo_lightning.chat


@pytest.fixture
def stand_ins(monkeypatch: pytest.MonkeyPatch) -> dict:
    """chat, the judge, the builder and the scorer replaced: a lower threshold answers sooner and takes over
    more; the VAD answers late and takes over every pause."""
    calls: dict = {"chat": [], "built": [], "judged": []}

    def chat(args: list[str]) -> int:
        calls["chat"].append(args)
        return 0

    def build(data, split, root):
        calls["built"].append(Path(root))
        Path(root).mkdir(parents=True, exist_ok=True)
        (Path(root) / "manifest.json").write_text("{}")

    def score(root, task):
        args = next(a for a in calls["chat"] if a[a.index("--fdb-root") + 1] == str(Path(root).parent))
        t = float(args[args.index("--respond-threshold") + 1]) if "--respond-threshold" in args else None
        tor = 1.0 if t is None else round(1.0 - t, 3)
        latency = 0.6 if t is None else t / 2 if task in ("smooth_turn_taking", "user_interruption") else None
        return {"n_samples": 3, "tor": tor, "latency": latency}

    monkeypatch.setattr(minmo_lightning.chat, "main", chat)
    monkeypatch.setattr(fdb_builtin, "build", build)
    monkeypatch.setattr(fdb, "evaluate_fdb", score)
    monkeypatch.setattr(
        asr_judge, "judge_root", lambda root, judge: calls["judged"].append(root) or (3, 0, [])
    )
    monkeypatch.setattr(asr_judge, "load_judge", lambda path, device: "judge")
    monkeypatch.setattr(asr_judge, "default_checkpoint", lambda: Path("encoder.ckpt"))
    return calls


def test_the_sweep_scores_one_fdb_set_per_threshold_and_writes_the_curve(stand_ins, tmp_path, capsys) -> None:
    out = tmp_path / "sweep"
    args = ["--ckpt", "stage4.ckpt", "--out", str(out), "--thresholds", "0.7", "0.2", "--with-vad"]
    assert fdb_sweep.main(args) == 0
    assert [c[c.index("--fdb-root") + 1] for c in stand_ins["chat"]] == [
        str(out / name) for name in ("threshold_0.2", "threshold_0.7", "vad")
    ]
    assert stand_ins["chat"][0][-4:] == ["--respond-threshold", "0.2", "--stop-threshold", "0.2"]
    assert stand_ins["chat"][2][-2:] == ["--predictor", "vad"]
    rows = json.loads((out / "metrics.json").read_text())["rows"]
    assert [r["point"] for r in rows] == ["threshold_0.2", "threshold_0.7", "vad"]
    assert rows[0]["pause_handling_tor"] == 0.8 and rows[1]["smooth_turn_taking_latency"] == 0.35
    assert fdb_sweep.meets(rows[1]) == ["user_interruption_latency"]  # 0.35 s: too slow for a smooth turn
    report = (out / "report.md").read_text()
    assert "threshold_0.7" in report and (out / "curve.png").stat().st_size > 0
    assert "vad" in capsys.readouterr().out

    stand_ins["built"].clear()
    assert fdb_sweep.main(args) == 0  # built sets are reused (chat and the judge resume on their own)
    assert stand_ins["built"] == []


def test_the_silence_backstop_reaches_every_model_point(stand_ins, tmp_path) -> None:
    out = tmp_path / "sweep"
    args = [
        "--ckpt",
        "c",
        "--out",
        str(out),
        "--thresholds",
        "0.5",
        "--with-vad",
        "--silence-backstop",
        "1.2",
    ]
    assert fdb_sweep.main(args) == 0
    model, vad = stand_ins["chat"]
    assert model[model.index("--silence-backstop") + 1] == "1.2" and "--silence-backstop" not in vad
    assert json.loads((out / "metrics.json").read_text())["settings"]["silence_backstop"] == 1.2
    with pytest.raises(SystemExit):
        fdb_sweep.main([*args[:-1], "-1"])
    fdb_sweep.main([*args[:-2], "--out", str(tmp_path / "default")])  # no flag: minmo chat's default
    assert "--silence-backstop" not in stand_ins["chat"][-2]
    assert (
        json.loads((tmp_path / "default" / "metrics.json").read_text())["settings"]["silence_backstop"] == 1.0
    )


def test_bad_thresholds_and_a_missing_judge_are_named(stand_ins, tmp_path, monkeypatch, capsys) -> None:
    with pytest.raises(SystemExit):
        fdb_sweep.main(["--ckpt", "c", "--out", str(tmp_path), "--thresholds", "1.2"])
    assert "probabilities in (0, 1), got [1.2]" in capsys.readouterr().err
    monkeypatch.setattr(asr_judge, "default_checkpoint", lambda: None)
    with pytest.raises(SystemExit):
        fdb_sweep.main(["--ckpt", "c", "--out", str(tmp_path)])
    assert "no --judge" in capsys.readouterr().err
    monkeypatch.setattr(minmo_lightning.chat, "main", lambda args: 2)
    assert fdb_sweep.main(["--ckpt", "c", "--out", str(tmp_path), "--judge", "j.ckpt"]) == 2
    assert "failed" in capsys.readouterr().err
