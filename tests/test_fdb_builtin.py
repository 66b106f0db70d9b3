"""The Full-Duplex-Bench protocol on the built-in corpus: ``minmo fdb-build`` cuts samples that agree with the
session events, ``minmo asr-judge`` turns CTC paths into FDB's timed words, and ``minmo evaluate fdb`` scores
the judged folders."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import soundfile
import torch
from datasets import load_from_disk
from minmo_lightning.components.voice_encoder.sensevoice import SenseVoiceEncoder
from minmo_lightning.components.voice_encoder.tokenizer import BLANK_ID, CharTokenizer
from minmo_lightning.datamodules.audio import decode_audio
from minmo_lightning.evaluation import asr_judge
from minmo_lightning.evaluation.fdb_cuts import LEAD, TAIL_MAX, TAIL_MIN

from minmo_lightning.cli import main

TASKS = ("pause_handling", "backchannel", "smooth_turn_taking", "user_interruption")
RATE = 16000
#: one CTC frame of the tiny encoder: 60 ms over 2 slots
FRAME = 0.03


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """One test session of 22-30 s: long enough for a barge-in (it needs 20 s of session after it), and with
    seed 120 it also holds a pause and back-channels."""
    out = tmp_path_factory.mktemp("corpus")
    args = ["synth-data", "--out", str(out), "--size", "tiny", "--tasks", "duplex"]
    args += ["--workers", "1", "--seed", "120"]
    assert main(args + ["--duplex-min-seconds", "22", "--duplex-max-seconds", "30"]) == 0
    return out / "duplex"


@pytest.fixture(scope="module")
def root(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fdb") / "root"
    assert main(["fdb-build", "--data", str(corpus), "--split", "test", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def session(corpus) -> dict:
    row = load_from_disk(str(corpus))["test"][0]
    wave, _ = decode_audio(row["user_audio"], target_rate=RATE)
    return {"id": row["id"], "events": row["events"], "wave": wave}


def _of(session: dict, kind: str) -> list[dict]:
    return [e for e in session["events"] if e["type"] == kind]


def _activity(session: dict) -> list[dict]:
    return [e for e in session["events"] if e["type"] in ("user_speech", "backchannel")]


def _samples(root: Path, task: str) -> dict[str, dict]:
    manifest = json.loads((root / "manifest.json").read_text())
    return {s["id"]: s for s in manifest["samples"][task]}


def _meta(root: Path, task: str, sample: str, name: str):
    return json.loads((root / task / sample / name).read_text())


def _silent_user(session: dict, start: float, end: float) -> bool:
    return not any(a["start"] < end - 1e-3 and a["end"] > start + 1e-3 for a in _activity(session))


def test_every_sample_is_the_user_channel_between_its_cut_times(root, session) -> None:
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["split"] == "test" and manifest["sample_rate"] == RATE
    for task in TASKS:
        folders = sorted(p.name for p in (root / task).iterdir() if p.is_dir())
        assert folders == sorted(_samples(root, task)) and folders, f"{task} has no samples"
        for sample in _samples(root, task).values():
            wave, rate = soundfile.read(str(root / task / sample["id"] / "input.wav"), dtype="float32")
            assert rate == RATE and wave.ndim == 1
            first, last = round(sample["start"] * RATE), round(sample["end"] * RATE)
            np.testing.assert_allclose(wave, session["wave"][first:last], atol=1 / 2**15)
            # a cut starts and ends in the user's silence, never inside one of their words
            for edge in (sample["start"], sample["end"]):
                inside = [a for a in _activity(session) if a["start"] + 1e-3 < edge < a["end"] - 1e-3]
                assert not inside, f"{task}/{sample['id']} cuts user speech at {edge}"


def test_pause_samples_hold_one_pause_and_end_with_the_continuation(root, session) -> None:
    samples = _samples(root, "pause_handling")
    pauses = _of(session, "pause")
    assert len(samples) == len(pauses)
    for k, pause in enumerate(pauses):
        sample = samples[f"{session['id']}-{k:02d}"]
        start = sample["start"]
        stamp = _meta(root, "pause_handling", sample["id"], "pause.json")[0]["timestamp"]
        assert stamp == pytest.approx([pause["start"] - start, pause["end"] - start], abs=2e-4)
        after = next(e for e in _of(session, "user_speech") if abs(e["start"] - pause["end"]) < 2e-3)
        before = next(e for e in _of(session, "user_speech") if abs(e["end"] - pause["start"]) < 2e-3)
        assert sample["end"] == pytest.approx(after["end"], abs=1e-4)  # no room to answer the real turn end
        assert before["start"] - LEAD - 1e-4 <= start <= before["start"]
        speech = [e for e in sample["events"] if e["type"] == "user_speech"]
        assert len(speech) == 2 and [e["type"] for e in sample["events"]].count("pause") == 1


def test_turn_taking_samples_end_after_the_turn_with_room_to_answer(root, session) -> None:
    samples = _samples(root, "smooth_turn_taking")
    manifest = json.loads((root / "manifest.json").read_text())
    left_out = [i for ids in manifest["left_out"]["smooth_turn_taking"].values() for i in ids]
    turn_ends = _of(session, "turn_end")
    assert len(samples) + len(left_out) == len(turn_ends)
    for k, turn_end in enumerate(turn_ends):
        sample = samples.get(f"{session['id']}-{k:02d}")
        t = turn_end["start"]
        if sample is None:
            assert (
                f"{session['id']}-{k:02d}" in left_out
            )  # left out: the user speaks again (barge-in, back-channel) or the session ends
            session_end = len(session["wave"]) / RATE
            assert not _silent_user(session, t, t + TAIL_MIN) or session_end - t < TAIL_MIN
            continue
        stamp = _meta(root, "smooth_turn_taking", sample["id"], "turn_taking.json")[0]["timestamp"]
        assert stamp[0] == pytest.approx(t - sample["start"], abs=2e-4)
        answer = min(e["start"] for e in _of(session, "assistant_speech") if e["start"] >= t)
        assert stamp[1] == pytest.approx(answer - sample["start"], abs=2e-4)
        assert TAIL_MIN <= sample["end"] - t <= TAIL_MAX + 1e-4
        assert _silent_user(session, t, sample["end"])
        # only the turn's last piece: no pause of the turn before it
        assert not [e for e in _of(session, "pause") if sample["start"] < e["start"] < t]


def test_interruption_samples_hold_the_context_and_the_interrupting_turn(root, session) -> None:
    samples = _samples(root, "user_interruption")
    barge_ins = _of(session, "barge_in")
    assert len(samples) == len(barge_ins) == 1
    barge = barge_ins[0]["start"]
    sample = samples[f"{session['id']}-00"]
    meta = _meta(root, "user_interruption", sample["id"], "interrupt.json")[0]
    ends = [e["start"] for e in _of(session, "turn_end")]
    interrupt_end = min(t for t in ends if t > barge)
    context_end = max(t for t in ends if t < barge)
    before_context = max((t for t in ends if t < context_end), default=-1.0)
    assert meta["timestamp"] == pytest.approx(
        [barge - sample["start"], interrupt_end - sample["start"]], abs=2e-4
    )
    speech = _of(session, "user_speech")
    context = [e for e in speech if before_context < e["start"] and e["end"] <= context_end + 1e-3]
    assert meta["context"] == " ".join(e["text"] for e in context)
    assert meta["interrupt"] == " ".join(
        e["text"] for e in speech if barge - 1e-3 <= e["start"] < interrupt_end
    )
    assert context[0]["start"] - LEAD - 1e-4 <= sample["start"] <= context[0]["start"]
    assert TAIL_MIN <= sample["end"] - interrupt_end <= TAIL_MAX + 1e-4


def test_backchannel_samples_span_the_answer_and_its_backchannels(root, session) -> None:
    samples = _samples(root, "backchannel")
    gt = json.loads((root / "backchannel" / "icc_gt_distribution.json").read_text())
    assert set(gt) == set(samples)
    for sample in samples.values():
        answer = next(e for e in _of(session, "assistant_speech") if abs(e["start"] - sample["start"]) < 1e-4)
        inside = [b for b in _of(session, "backchannel") if answer["start"] <= b["start"] <= answer["end"]]
        assert inside and _silent_user(session, answer["start"], inside[0]["start"])
        assert _silent_user(session, inside[-1]["end"], sample["end"])
        duration = sample["end"] - sample["start"]
        hist = np.asarray(gt[sample["id"]])
        assert len(hist) == int(duration / 0.2) + 1 and hist.sum() == pytest.approx(1.0)
        busy = np.flatnonzero(hist > 1e-3)
        first_bin = int((inside[0]["start"] - sample["start"]) / 0.2)
        last_bin = int((inside[-1]["end"] - sample["start"]) / 0.2)
        assert busy[0] == first_bin and busy[-1] == last_bin


def test_the_build_is_deterministic(corpus, root, tmp_path) -> None:
    again = tmp_path / "again"
    assert main(["fdb-build", "--data", str(corpus), "--out", str(again)]) == 0
    assert (again / "manifest.json").read_text() == (root / "manifest.json").read_text()
    for wav in root.rglob("input.wav"):
        assert (again / wav.relative_to(root)).read_bytes() == wav.read_bytes()
    assert main(["fdb-build", "--data", str(corpus), "--out", str(again)]) == 2  # not empty: --overwrite


def test_builder_names_what_the_corpus_lacks(corpus, tmp_path, capsys) -> None:
    test = load_from_disk(str(corpus))["test"]
    no_barge_ins = test.map(lambda row: {"events": [e for e in row["events"] if e["type"] != "barge_in"]})
    no_barge_ins.save_to_disk(str(tmp_path / "a" / "test"))
    test.remove_columns("events").save_to_disk(str(tmp_path / "b" / "test"))
    for folder in ("a", "b"):
        (tmp_path / folder / "dataset_dict.json").write_text(json.dumps({"splits": ["test"]}))
    assert main(["fdb-build", "--data", str(tmp_path / "a"), "--out", str(tmp_path / "out")]) == 2
    assert "user_interruption needs 'barge_in' events" in capsys.readouterr().err
    assert main(["fdb-build", "--data", str(tmp_path / "b"), "--out", str(tmp_path / "out")]) == 2
    assert "lacks column(s) events" in capsys.readouterr().err
    tasks = "pause_handling,smooth_turn_taking"
    assert (
        main(["fdb-build", "--data", str(tmp_path / "a"), "--out", str(tmp_path / "c"), "--tasks", tasks])
        == 0
    )
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["manifest.json", *tasks.split(",")]


# ---- the judge ---------------------------------------------------------------------------------------------
def _path(tokenizer: CharTokenizer, frames: int, emitted: dict[int, str]) -> torch.Tensor:
    """Log-probs whose greedy path is blank except ``emitted`` (frame -> token)."""
    ids = torch.full((frames,), BLANK_ID)
    for frame, token in emitted.items():
        ids[frame] = tokenizer.token_to_id(token)
    return torch.nn.functional.one_hot(ids, tokenizer.vocab_size).float().mul(20).log_softmax(-1)


def test_words_and_times_from_a_greedy_ctc_path() -> None:
    tokenizer = CharTokenizer()
    # "hi" (h held two frames), a space, "see" (the two e's split by a blank), a tag, "a" after a long blank
    emitted = {2: "h", 3: "h", 4: "i", 6: " ", 7: "s", 8: "e", 10: "e", 12: "<|en|>", 20: "a"}
    log_probs = _path(tokenizer, 24, emitted)
    chunks = asr_judge.words_from_ctc(log_probs, FRAME, tokenizer, offset=1.0)
    assert [c["text"] for c in chunks] == ["hi", "seea"]  # no boundary between "see" and "a": one word...
    log_probs = _path(tokenizer, 24, {**emitted, 19: " "})
    chunks = asr_judge.words_from_ctc(log_probs, FRAME, tokenizer, offset=1.0)
    assert [c["text"] for c in chunks] == ["hi", "see", "a"]  # ...until a space token splits it
    assert [c["timestamp"] for c in chunks] == [[1.06, 1.15], [1.21, 1.33], [1.6, 1.63]]
    # speech segments (s, on the path's timeline): emissions outside are dropped, no word spans two segments
    chunks = asr_judge.words_from_ctc(_path(tokenizer, 24, emitted), FRAME, tokenizer, speech=[(0.0, 0.25)])
    assert [c["text"] for c in chunks] == ["hi", "se"]
    chunks = asr_judge.words_from_ctc(
        _path(tokenizer, 24, emitted), FRAME, tokenizer, speech=[(0, 0.26), (0.6, 0.7)]
    )
    assert [c["text"] for c in chunks] == ["hi", "see", "a"]
    assert asr_judge.words_from_ctc(_path(tokenizer, 24, {}), FRAME, tokenizer) == []


@pytest.fixture(scope="module")
def judge_checkpoint(tmp_path_factory) -> Path:
    """The tiny encoder, randomly initialised, with a CTC head that always says blank."""
    encoder = SenseVoiceEncoder.from_preset("tiny")
    with torch.no_grad():
        encoder.ctc.ctc_lo.weight.zero_()
        encoder.ctc.ctc_lo.bias.zero_()
        encoder.ctc.ctc_lo.bias.view(encoder.ctc.slots, -1)[:, BLANK_ID] = 10.0
    path = tmp_path_factory.mktemp("judge") / "encoder.ckpt"
    state = {
        "state_dict": encoder.state_dict(),
        "hyper_parameters": dict(encoder.hparams),
        "pytorch-lightning_version": L.__version__,
    }
    torch.save(state, path)
    return path


WORDS = "yes i can do that"


def _spell_over_the_voice(monkeypatch) -> None:
    """Keep the real encoder pass, then spell ``WORDS`` (a letter every other frame) from the first loud frame
    of any voice longer than 1 s; shorter sounds stay blank."""
    real = asr_judge.ctc_log_probs

    def spelled(encoder, wave):
        log_probs, seconds = real(encoder, wave)
        assert seconds == pytest.approx(FRAME) and abs(len(log_probs) - len(wave) / RATE / FRAME) <= 4
        assert (log_probs.argmax(-1) == BLANK_ID).all()
        loud = np.flatnonzero(np.abs(wave) > 0.05)
        if len(loud) and (loud[-1] - loud[0]) / RATE > 1.0:
            first = math.ceil(loud[0] / RATE / FRAME)
            emitted = {first + 2 * k: char for k, char in enumerate(WORDS)}
            log_probs = _path(encoder.tokenizer, len(log_probs), emitted)
        return log_probs, seconds

    monkeypatch.setattr(asr_judge, "ctc_log_probs", spelled)


def _tone(seconds: float, rate: int, spans: list[tuple[float, float]]) -> np.ndarray:
    wave = np.zeros(round(seconds * rate), dtype=np.float32)
    for start, end in spans:
        t = np.arange(round(start * rate), round(end * rate))
        wave[t] = 0.3 * np.sin(2 * np.pi * 220 * t / rate)
    return wave


def test_judge_then_evaluate_fdb(root, judge_checkpoint, tmp_path, monkeypatch, capsys) -> None:
    """Model outputs at 24 kHz: an answer 0.25 s after the turn end and after the interruption, a 0.4 s sound
    in back-channel samples, silence in pause samples; judged, then scored per task."""
    out = tmp_path / "root"
    for task in TASKS:
        for sample in _samples(root, task):
            (out / task / sample).mkdir(parents=True)
            for meta in (root / task / sample).glob("*.json"):
                (out / task / sample / meta.name).write_bytes(meta.read_bytes())
    (out / "backchannel" / "icc_gt_distribution.json").write_bytes(
        (root / "backchannel" / "icc_gt_distribution.json").read_bytes()
    )
    assert main(["asr-judge", "--root", str(out), "--ckpt", str(judge_checkpoint)]) == 2
    assert "run `minmo chat --ckpt CKPT --fdb-root" in capsys.readouterr().err

    rate, answers = 24000, {}
    for task in TASKS:
        for sample in _samples(root, task).values():
            folder = out / task / sample["id"]
            seconds = sample["end"] - sample["start"]
            spans = []
            if task in ("smooth_turn_taking", "user_interruption"):
                name, index = (
                    ("turn_taking.json", 0) if task == "smooth_turn_taking" else ("interrupt.json", 1)
                )
                t_ref = json.loads((folder / name).read_text())[0]["timestamp"][index]
                spans, answers[folder] = [(t_ref + 0.25, t_ref + 1.75)], t_ref + 0.25
            elif task == "backchannel":
                spans = [(0.2, 0.6)]
            soundfile.write(str(folder / "output.wav"), _tone(seconds, rate, spans), rate)

    _spell_over_the_voice(monkeypatch)
    assert main(["asr-judge", "--root", str(out), "--ckpt", str(judge_checkpoint)]) == 0
    for folder, start in answers.items():
        chunks = json.loads((folder / "output.json").read_text())["chunks"]
        assert " ".join(c["text"] for c in chunks) == WORDS
        assert chunks[0]["timestamp"][0] == pytest.approx(start, abs=FRAME + 1e-3)
        assert chunks[-1]["timestamp"][1] == pytest.approx(
            chunks[0]["timestamp"][0] + 2 * (len(WORDS) - 1) * FRAME + FRAME, abs=2e-3
        )
    for folder in (out / "pause_handling").iterdir():
        assert json.loads((folder / "output.json").read_text()) == {"text": "", "chunks": []}
    vad = json.loads(next((out / "backchannel").glob("*/vad.json")).read_text())
    assert vad["segments"] == [pytest.approx([0.17, 0.63], abs=0.025)]
    judged = sum(len(_samples(root, task)) for task in TASKS)
    assert capsys.readouterr().out.startswith(f"{judged} output.json written")
    assert main(["asr-judge", "--root", str(out), "--ckpt", str(judge_checkpoint)]) == 0
    assert capsys.readouterr().out.startswith("0 output.json written")  # resumed: all up to date

    expected = {
        "pause_handling": (0.0, None),
        "backchannel": (0.0, None),
        "smooth_turn_taking": (1.0, 0.25),
        "user_interruption": (1.0, 0.25),
    }
    for task, (tor, latency) in expected.items():
        assert main(["evaluate", "fdb", "--task", task, "--root", str(out / task)]) == 0
        metrics = json.loads((out / task / "metrics.json").read_text())
        assert metrics["n_samples"] == len(_samples(root, task)) and metrics["tor"] == tor
        assert metrics["latency"] == (None if latency is None else pytest.approx(latency, abs=FRAME + 1e-3))
    assert json.loads((out / "backchannel" / "metrics.json").read_text())["freq"] > 0


def test_judge_refuses_a_checkpoint_without_a_ctc_head(tmp_path, judge_checkpoint, capsys) -> None:
    state = torch.load(judge_checkpoint, weights_only=False)
    for name, prefix in (("minmo.ckpt", "voice_encoder."), ("other.ckpt", None)):
        weights = (
            {f"{prefix}{k}": v for k, v in state["state_dict"].items()} if prefix else {"w": torch.zeros(1)}
        )
        torch.save({**state, "state_dict": weights}, tmp_path / name)
    (tmp_path / "s").mkdir()
    soundfile.write(str(tmp_path / "s" / "output.wav"), np.zeros(1600, dtype=np.float32), RATE)
    assert main(["asr-judge", "--root", str(tmp_path), "--ckpt", str(tmp_path / "minmo.ckpt")]) == 2
    assert "inside a larger model" in capsys.readouterr().err
    assert main(["asr-judge", "--root", str(tmp_path), "--ckpt", str(tmp_path / "other.ckpt")]) == 2
    assert "has no CTC head (ctc.ctc_lo.weight)" in capsys.readouterr().err
