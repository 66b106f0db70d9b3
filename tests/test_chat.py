"""``minmo chat``: a WAV in, the assistant channel on the same timeline out, an event log and a timeline plot;
clear errors on inputs it cannot listen to and on checkpoints that cannot converse."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import soundfile
import torch
from builders import speaking_minmo, tiny_minmo
from minmo_lightning.components.duplex_predictor.transformer import TransformerDuplexPredictor

from minmo_lightning.chat import main


def _save(model, path: Path) -> Path:
    torch.save(
        {
            "state_dict": model.state_dict(),
            "hyper_parameters": dict(model.hparams),
            "pytorch-lightning_version": L.__version__,
        },
        path,
    )
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    predictor = TransformerDuplexPredictor.from_preset("tiny", input_dim=64)
    model = speaking_minmo(token2wav=True, duplex_predictor=predictor, max_new_tokens=6)
    return _save(model, tmp_path_factory.mktemp("ckpt") / "stage4.ckpt")


def _wav(path: Path, seconds: float, rate: int = 16000, channels: int = 1) -> Path:
    wave = 0.1 * np.random.default_rng(0).standard_normal((round(seconds * rate), channels)).astype(
        np.float32
    )
    soundfile.write(str(path), wave if channels > 1 else wave[:, 0], rate)
    return path


@pytest.mark.parametrize("predictor", ["model", "vad"])
def test_chat_writes_the_assistant_channel_on_the_input_timeline(checkpoint, tmp_path, predictor) -> None:
    source = _wav(tmp_path / "user.wav", 1.3)
    out = tmp_path / "out"
    assert (
        main(["--ckpt", str(checkpoint), "--input", str(source), "--out", str(out), "--predictor", predictor])
        == 0
    )
    wave, rate = soundfile.read(str(out / "output.wav"))
    assert rate == 24000 and len(wave) == round(1.3 * 24000)
    log = json.loads((out / "events.json").read_text())
    if predictor == "vad":
        assert log["predictor"] == "VADDuplexPredictor" and log["backstop_seconds"] is None
    else:  # the checkpoint's predictor, with the silence backstop behind it by default
        assert log["predictor"] == "SilenceBackstop" and log["backstop_seconds"] == 1.0
        assert log["backed_predictor"] == "TransformerDuplexPredictor"
    assert all({"kind", "row", "seconds", "compute_seconds"} <= set(e) for e in log["events"])
    assert (out / "timeline.png").stat().st_size > 0


def test_other_rates_are_resampled_and_said(checkpoint, tmp_path, capsys) -> None:
    source = _wav(tmp_path / "user.wav", 0.5, rate=8000)
    assert main(["--ckpt", str(checkpoint), "--input", str(source), "--out", str(tmp_path / "o")]) == 0
    assert "resampled user.wav from 8000 Hz to 16000 Hz" in capsys.readouterr().err
    assert len(soundfile.read(str(tmp_path / "o" / "output.wav"))[0]) == 12000


def _nan_wav(path: Path) -> Path:
    wave = np.zeros(8000, dtype=np.float32)
    wave[[5, 50, 500]] = np.nan
    soundfile.write(str(path), wave, 16000, subtype="FLOAT")
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: _wav(p / "stereo.wav", 0.5, channels=2), "must be mono"),
        (lambda p: _wav(p / "empty.wav", 0.0), "holds no audio"),
        (lambda p: (p / "notes.wav").write_text("not audio") and p / "notes.wav", "not a readable WAV"),
        (lambda p: p / "missing.wav", "no such file"),
        (lambda p: _nan_wav(p / "nan.wav"), "has 3 NaN or Inf samples of 8000"),
    ],
)
def test_bad_inputs_get_a_clear_error(checkpoint, tmp_path, capsys, make, message) -> None:
    source = make(tmp_path)
    assert main(["--ckpt", str(checkpoint), "--input", str(source), "--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err


def test_a_checkpoint_without_a_predictor_names_the_baseline(tmp_path, capsys) -> None:
    checkpoint = _save(tiny_minmo(), tmp_path / "stage1.ckpt")
    source = _wav(tmp_path / "user.wav", 0.5)
    assert main(["--ckpt", str(checkpoint), "--input", str(source), "--out", str(tmp_path / "o")]) == 2
    assert "no duplex_predictor" in capsys.readouterr().err
    assert (
        main(
            [
                "--ckpt",
                str(checkpoint),
                "--input",
                str(source),
                "--out",
                str(tmp_path / "o"),
                "--predictor",
                "vad",
            ]
        )
        == 0
    )


def test_fdb_root_runs_every_sample_and_resumes(checkpoint, tmp_path, capsys) -> None:
    for name in ("0", "1"):
        (tmp_path / "fdb" / name).mkdir(parents=True)
        _wav(tmp_path / "fdb" / name / "input.wav", 0.4)
    assert main(["--ckpt", str(checkpoint), "--fdb-root", str(tmp_path / "fdb")]) == 0
    assert all((tmp_path / "fdb" / n / "output.wav").is_file() for n in ("0", "1"))
    assert main(["--ckpt", str(checkpoint), "--fdb-root", str(tmp_path / "fdb")]) == 0
    assert "0 sample(s) written, 2 already had output.wav" in capsys.readouterr().out


def test_a_checkpoint_loads_without_the_stage_it_started_from(checkpoint, tmp_path) -> None:
    """A trained stage's checkpoint names its starting point (init_checkpoint); loading must not need it."""
    from minmo_lightning.chat import load_model

    state = torch.load(checkpoint, weights_only=False)
    state["hyper_parameters"]["init_checkpoint"] = str(tmp_path / "gone" / "stage1c.ckpt")
    moved = tmp_path / "moved.ckpt"
    torch.save(state, moved)
    model = load_model(str(moved), "cpu")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state["state_dict"].items())


def test_the_decision_threshold_is_exposed(checkpoint, tmp_path, capsys) -> None:
    """``--respond-threshold`` / ``--stop-threshold`` set the probability each decision needs: near 1 the
    random-weight predictor never answers, near 0 it answers; the VAD and values outside (0, 1) are refused."""
    source = _wav(tmp_path / "user.wav", 2.0)

    def turns(*thresholds: str) -> int:
        out = tmp_path / "-".join(thresholds)
        assert main(["--ckpt", str(checkpoint), "--input", str(source), "--out", str(out), *thresholds]) == 0
        events = json.loads((out / "events.json").read_text())["events"]
        return sum(e["kind"] == "turn_start" for e in events)

    assert turns("--respond-threshold", "0.999", "--stop-threshold", "0.999") == 0
    assert turns("--respond-threshold", "0.001", "--stop-threshold", "0.999") > 0
    base = ["--ckpt", str(checkpoint), "--input", str(source), "--out", str(tmp_path / "x")]
    assert main([*base, "--predictor", "vad", "--respond-threshold", "0.5"]) == 2
    assert "thresholds apply to the model's predictor" in capsys.readouterr().err
    assert main([*base, "--stop-threshold", "1.5"]) == 2
    assert "probabilities in (0, 1)" in capsys.readouterr().err


def test_the_silence_backstop_answers_a_turn_the_model_left_unanswered(checkpoint, tmp_path) -> None:
    """1.5 s of speech, then silence: at threshold 0.999 the random-weight predictor never answers; with the
    backstop (on by default, 1 s) the turn is answered once, after a second of silence; ``--silence-backstop
    0`` leaves the predictor alone. With the VAD baseline (a silence timeout already) it is refused."""
    rng = np.random.default_rng(0)
    wave = np.concatenate([0.1 * rng.standard_normal(24000), 0.0005 * rng.standard_normal(38400)])
    source = tmp_path / "user.wav"
    soundfile.write(str(source), wave.astype(np.float32), 16000)
    never = ["--respond-threshold", "0.999", "--stop-threshold", "0.999"]

    def turn_starts(*extra: str) -> list[float]:
        out = tmp_path / "-".join(["chat", *extra])
        assert (
            main(["--ckpt", str(checkpoint), "--input", str(source), "--out", str(out), *never, *extra]) == 0
        )
        log = json.loads((out / "events.json").read_text())
        return [e["seconds"] for e in log["events"] if e["kind"] == "turn_start"], log["predictor"]

    assert turn_starts("--silence-backstop", "0") == ([], "TransformerDuplexPredictor")
    starts, predictor = turn_starts()
    assert predictor == "SilenceBackstop"
    assert len(starts) == 1 and 1.5 + 1.0 <= starts[0] <= 1.5 + 1.0 + 0.3
    later, _ = turn_starts("--silence-backstop", "1.5")
    assert len(later) == 1 and later[0] >= starts[0] + 0.4
    base = ["--ckpt", str(checkpoint), "--input", str(source), "--out", str(tmp_path / "x")]
    for bad in (["--predictor", "vad", "--silence-backstop", "1.0"], ["--silence-backstop", "-1"]):
        with pytest.raises(SystemExit):
            main([*base, *bad])
