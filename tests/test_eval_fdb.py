"""Full-Duplex-Bench metrics: hand-computed TOR / latency / JSD cases, the quirk switch, and the CLI."""

import json
import math

import numpy as np
import pytest
from minmo_lightning.evaluation.cli import main
from minmo_lightning.evaluation.fdb import (
    JSD_MAX,
    Word,
    backchannel_histogram,
    evaluate_fdb,
    jensen_shannon_distance,
    merge_segments,
    response_latency_intervals,
    score_backchannel,
    stop_latency_intervals,
    take_turn,
    turn_latency,
    v15_latencies,
)


def words(*stamps):
    return [Word(f"w{k}", s, e) for k, (s, e) in enumerate(stamps)]


def test_tor_boundaries():
    assert not take_turn([])
    assert take_turn(words((0.5, 0.9), (1.2, 1.5)))  # span exactly 1.0 s counts as a turn
    assert not take_turn(words((0.5, 0.6), (0.7, 0.8), (0.9, 1.0)))  # exactly 3 words in 0.5 s: not a turn
    assert take_turn(words((0.5, 0.6), (0.7, 0.8), (0.9, 1.0), (1.0, 1.1)))  # 4 words
    assert not take_turn(words((0.5, 0.99)))
    # a null last end falls back to that word's start (pause-handling rule, applied everywhere)
    assert take_turn(words((0.5, 0.6), (1.5, None)))
    assert not take_turn(words((0.5, 0.6), (1.4, None)))


def test_latency_is_clamped_and_only_for_turns():
    assert turn_latency(words((1.8, 2.5), (2.5, 3.0)), t_ref=2.0) == 0.0
    assert turn_latency(words((2.3, 2.5), (2.5, 3.3)), t_ref=2.0) == pytest.approx(0.3)
    assert turn_latency(words((2.3, 2.4)), t_ref=2.0) is None


def test_jsd_hand_computed():
    assert jensen_shannon_distance(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(
        math.sqrt(math.log(2))
    )
    assert jensen_shannon_distance(np.array([0.2, 0.8]), np.array([1.0, 4.0])) == pytest.approx(0.0, abs=1e-9)
    # p = [.5, .5], q = [1, 0], m = [.75, .25]: KL(p|m) = .5 ln(2/3) + .5 ln 2, KL(q|m) = ln(4/3)
    expected = math.sqrt((0.5 * math.log(2 / 3) + 0.5 * math.log(2) + math.log(4 / 3)) / 2)
    assert jensen_shannon_distance(np.array([0.5, 0.5]), np.array([1.0, 0.0])) == pytest.approx(expected)
    assert expected == pytest.approx(0.464502, abs=1e-6)


def test_backchannel_bins_use_float_division_like_the_reference():
    hist = backchannel_histogram([(1.4, 1.5)], duration=2.0)  # 1.4 / 0.2 = 6.999... -> bin 6; 1.5 -> 7
    assert len(hist) == 11
    assert np.flatnonzero(hist > 1e-3).tolist() == [6, 7]
    assert hist.sum() == pytest.approx(1.0)


def test_backchannel_quirks_switch():
    ws = words((0.5, 0.7), (2.0, 2.1), (2.1, 2.2), (2.2, 2.3), (2.3, 2.4))
    segments = [(0.4, 0.8), (1.9, 2.5)]  # 1 word (backchannel), then 4 words (takes the turn)
    gt = [1.0] * 30
    compat = score_backchannel(ws, segments, 5.0, gt, reference_compat=True)
    assert compat["tor"] == 1 and compat["n_backchannels"] == 2  # every segment counted
    fixed = score_backchannel(ws, segments, 5.0, gt, reference_compat=False)
    assert fixed["tor"] == 1 and fixed["n_backchannels"] == 1 and fixed["freq"] == pytest.approx(0.2)
    # the last segment decides in the reference: a turn followed by a backchannel reads as TOR 0
    flipped = score_backchannel(ws[1:] + [Word("mm", 3.0, 3.2)], [(1.9, 2.5), (2.9, 3.3)], 5.0, gt, True)
    assert flipped["tor"] == 0
    assert (
        score_backchannel(ws[1:] + [Word("mm", 3.0, 3.2)], [(1.9, 2.5), (2.9, 3.3)], 5.0, gt, False)["tor"]
        == 1
    )
    # no backchannel: JSD 1 (reference) or the maximal distance (corrected); a > 3 s segment stops the walk
    long = score_backchannel(ws, [(0.0, 3.5), (4.0, 4.2)], 5.0, gt, True)
    assert long["tor"] == 1 and long["jsd"] == 1.0 and long["n_backchannels"] == 0
    assert score_backchannel(ws, [(0.0, 3.5)], 5.0, gt, False)["jsd"] == pytest.approx(JSD_MAX)


def test_v15_stop_and_response_latency():
    assert merge_segments([(0.0, 1.0), (1.5, 2.0), (3.0, 4.0)], 0.6) == [(0.0, 2.0), (3.0, 4.0)]
    user = [(0.0, 2.0), (5.0, 6.0)]
    model = [(1.5, 3.0), (2.5, 2.6), (6.5, 8.0)]
    assert stop_latency_intervals(user, sorted(model)) == [(1.5, 2.0)]
    assert response_latency_intervals(user, model) == [(2.0, 2.5), (6.0, 6.5)]


def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _chunks(*stamps):
    return {
        "text": " ".join(f"w{k}" for k in range(len(stamps))),
        "chunks": [{"text": f"w{k}", "timestamp": list(s)} for k, s in enumerate(stamps)],
    }


def test_fdb_cli_smooth_turn_taking_and_interruption(tmp_path, capsys):
    root = tmp_path / "stt"
    _write(root / "0" / "output.json", _chunks((2.5, 2.9), (3.0, 3.6)))  # turn, latency 0.5
    _write(root / "0" / "turn_taking.json", [{"text": "[TURN-TAKING]", "timestamp": [2.0, 2.4]}])
    _write(root / "1" / "output.json", _chunks((1.0, 1.2)))  # backchannel-like: no turn
    _write(root / "1" / "turn_taking.json", [{"text": "[TURN-TAKING]", "timestamp": [2.0, 2.4]}])
    _write(
        root / "2" / "output.json", _chunks((1.9, 2.1), (2.1, 2.2), (2.2, 2.3), (2.3, 2.4))
    )  # clamped to 0
    _write(root / "2" / "turn_taking.json", [{"text": "[TURN-TAKING]", "timestamp": [2.0, 2.4]}])
    assert main(["fdb", "--task", "smooth_turn_taking", "--root", str(root)]) == 0
    m = json.loads((root / "metrics.json").read_text())
    assert m["tor"] == pytest.approx(2 / 3) and m["latency"] == pytest.approx(0.25)  # mean over turns only
    assert [s["id"] for s in m["per_sample"]] == ["0", "1", "2"]
    assert "tor: 0.6667" in capsys.readouterr().out
    assert (root / "report.md").read_text().count("fdb_smooth_turn_taking_timeline.png") == 1

    ui = tmp_path / "ui"
    _write(ui / "7" / "output.json", _chunks((14.0, 14.3)))
    _write(ui / "7" / "interrupt.json", [{"context": "c", "interrupt": "i", "timestamp": [10.5, 13.1]}])
    main(["fdb", "--task", "user_interruption", "--root", str(ui), "--out", str(tmp_path / "ui_out")])
    m = json.loads((tmp_path / "ui_out" / "metrics.json").read_text())
    assert m["tor"] == 0.0 and m["latency"] is None  # nobody took the turn: null, not a crash


def test_fdb_cli_backchannel(tmp_path):
    root = tmp_path / "bc"
    _write(root / "icc_gt_distribution.json", {"0": [0.25, 0.25, 0.25, 0.25], "1": [1.0, 0.0]})
    _write(root / "0" / "output.json", _chunks((1.0, 1.3)))
    _write(root / "0" / "vad.json", {"duration": 2.0, "segments": [[0.9, 1.4]]})
    _write(root / "1" / "output.json", _chunks())
    _write(root / "1" / "vad.json", {"duration": 4.0, "segments": []})
    main(["fdb", "--task", "backchannel", "--root", str(root)])
    m = json.loads((root / "metrics.json").read_text())
    assert set(m) >= {"tor", "latency", "freq", "jsd", "per_sample"}
    hist = backchannel_histogram([(0.9, 1.4)], 2.0)
    gt0 = np.interp(np.linspace(0, 1, len(hist)), np.linspace(0, 1, 4), [0.25] * 4)
    jsd0 = jensen_shannon_distance(hist, gt0)
    assert m["jsd"] == pytest.approx((jsd0 + 1.0) / 2)
    assert m["freq"] == pytest.approx((1 / 2.0 + 0.0) / 2) and m["tor"] == 0.0 and m["latency"] is None


def test_fdb_bad_layouts_name_the_problem(tmp_path):
    with pytest.raises(
        ValueError, match="unknown FDB task 'pause'; choose one of pause_handling, smooth_turn"
    ):
        evaluate_fdb(tmp_path, "pause")
    with pytest.raises(ValueError, match="holds no sample folders"):
        evaluate_fdb(tmp_path, "pause_handling")
    _write(tmp_path / "0" / "output.json", _chunks((1.0, 1.3)))
    with pytest.raises(FileNotFoundError, match="turn_taking.json not found"):
        evaluate_fdb(tmp_path, "smooth_turn_taking")
    _write(tmp_path / "icc_gt_distribution.json", {"0": [1.0]})
    with pytest.raises(FileNotFoundError, match="vad.json not found.*Silero VAD is not bundled"):
        evaluate_fdb(tmp_path, "backchannel")
    _write(tmp_path / "0" / "output.json", {"chunks": [{"text": "x"}]})
    with pytest.raises(ValueError, match="chunk 0 has no 'timestamp'"):
        evaluate_fdb(tmp_path, "pause_handling")


def test_v15_latencies_and_interruption_judge(tmp_path):
    out = v15_latencies([(0.0, 1.0), (1.4, 2.0), (5.0, 6.0)], [(1.5, 3.0), (3.3, 3.5), (6.5, 8.0)])
    # user merges to (0, 2), (5, 6); model merges to (1.5, 3.5), (6.5, 8)
    assert out["stop_latencies"] == [pytest.approx(0.5)]
    # both user ends (2.0, 6.0) map to the next model start 6.5: the latest user end is kept
    assert out["response_intervals"] == [(6.0, 6.5)] and out["response_latencies"] == [pytest.approx(0.5)]

    root = tmp_path / "ui"
    meta = [{"context": "books?", "interrupt": "fiction instead?", "timestamp": [10.5, 13.0]}]
    _write(root / "0" / "output.json", _chunks((13.4, 13.8), (13.9, 14.6)))
    _write(root / "0" / "interrupt.json", meta)
    _write(root / "0" / "rating.json", {"analysis": "ok", "rating": 4})
    _write(root / "1" / "output.json", _chunks((13.2, 13.3)))
    _write(root / "1" / "interrupt.json", meta)
    _write(root / "1" / "rating.json", {"analysis": "x", "rating": 0})  # did not take the turn: not counted
    m = evaluate_fdb(root, "user_interruption")
    assert (
        m["tor"] == 0.5 and m["latency"] == pytest.approx(0.4) and m["gpt_score"] == 4.0 and m["n_rated"] == 1
    )
    seen = []
    judged = evaluate_fdb(root, "user_interruption", judge=lambda c, i, r: seen.append((c, i, r)) or 2.0)
    assert judged["gpt_score"] == 2.0 and seen == [("books?", "fiction instead?", "w0 w1")]
    assert judged["tor"] == m["tor"] and judged["latency"] == m["latency"]


def _tones(path, seconds: float, spans: list[tuple[float, float]], rate: int = 16000) -> None:
    """A WAV of ``seconds`` holding a 220 Hz tone over each span (seconds), digital silence elsewhere."""
    import soundfile

    wave = np.zeros(round(seconds * rate), dtype=np.float32)
    for start, end in spans:
        t = np.arange(round(start * rate), round(end * rate))
        wave[t] = 0.3 * np.sin(2 * np.pi * 220 * t / rate)
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), wave, rate)


def test_v15_latency_from_both_channels_of_each_sample(tmp_path, capsys):
    """User speech 0-2 s and 5-6 s; the model answers 2.5-4 s and talks over the user 5.5-7 s: one response
    of 0.5 s (the model segment at 5.5 starts before the user ends, so it is no response), one overlap of
    0.5 s (before the VAD's padding). A second sample brings its own VAD for the model; a third has no output.wav and is listed."""
    root = tmp_path / "v15"
    _tones(root / "a" / "input.wav", 8.0, [(0.0, 2.0), (5.0, 6.0)])
    _tones(root / "a" / "output.wav", 8.0, [(2.5, 4.0), (5.5, 7.0)])
    _tones(root / "b" / "input.wav", 4.0, [(0.0, 1.0)])
    _write(root / "b" / "output_vad.json", {"segments": [[1.3, 3.0]]})
    _tones(root / "c" / "input.wav", 2.0, [(0.0, 1.0)])
    out = tmp_path / "report"
    assert main(["fdb", "--task", "v15_latency", "--root", str(root), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    a, b = metrics["per_sample"]
    # the energy VAD pads each segment by 30 ms, as Silero does: overlaps grow by 60 ms, gaps shrink by 60
    assert a["stop_latencies"] == pytest.approx([0.56], abs=0.021)
    assert a["response_latencies"] == pytest.approx([0.44], abs=0.021)
    assert b["vad"] == {"user": "energy", "model": "output_vad.json"}
    assert b["response_latencies"] == pytest.approx([0.27], abs=0.021) and b["stop_latencies"] == []
    assert metrics["n_response_intervals"] == 2 and metrics["response_latency"] == pytest.approx(
        0.355, abs=0.021
    )
    assert metrics["n_errors"] == 1 and metrics["errors"][0]["sample"] == "c"
    assert "output.wav not found" in metrics["errors"][0]["error"]
    written = json.loads((root / "a" / "latency_intervals.json").read_text())  # as FDB's get_timing.py
    assert set(written) == {"latency_stop_list", "latency_resp_list"}
    printed = capsys.readouterr().out
    assert "stop_latency:" in printed and "over 1 intervals" in printed and "not timed: c" in printed
    assert "stop and response latency" in (out / "report.md").read_text()
