"""The built-in corpus: determinism, contents, dataset card, and the duplex labelling rules."""

from __future__ import annotations

import hashlib
import random
import re
import subprocess
import sys
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pytest
from datasets import load_from_disk
from minmo_lightning.datamodules import synth
from minmo_lightning.datamodules.corpus_plan import HELD_OUT_VOICES, SIZES, USER_VOICES, CorpusSize
from minmo_lightning.datamodules.corpus_tasks import CORPUS_TASKS, plan_corpus
from minmo_lightning.datamodules.corpus_text import INTENTS, QUESTION_WORDS
from minmo_lightning.datamodules.timeline import (
    KEEP_LISTENING,
    PAUSE_KINDS,
    RESPOND,
    STOP_SPEAKING,
    DuplexConfig,
    build_session,
    draw_user_turn,
    frame_labels,
)

TINY = SIZES["tiny"]
SHORT_SESSIONS = DuplexConfig(min_seconds=6.0, max_seconds=12.0)


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("corpus")
    synth.build_corpus(out, TINY, seed=3, workers=2, duplex=SHORT_SESSIONS, log=lambda _: None)
    return out


def test_same_seed_same_bytes_whatever_the_worker_count(corpus, tmp_path):
    again = tmp_path / "again"
    synth.build_corpus(again, TINY, seed=3, workers=1, duplex=SHORT_SESSIONS, log=lambda _: None)
    assert _digest(again) == _digest(corpus)
    other = tmp_path / "other"
    synth.build_corpus(other, TINY, seed=4, tasks=["asr"], workers=2, log=lambda _: None)
    assert _digest(other / "asr") != _digest(corpus / "asr")


def test_corpus_layout_and_card(corpus):
    card = (corpus / "README.md").read_text()
    assert "synthetic prosody-style proxy, not human emotion" in card.lower()
    for task in CORPUS_TASKS:
        data = load_from_disk(str(corpus / task))
        for split, dataset in data.items():
            assert f"| {task} | {split} | {len(dataset)} |" in card
            assert np.all(np.asarray(dataset["duration"]) > 0)
    asr = load_from_disk(str(corpus / "asr"))
    assert list(asr) == ["train", "validation", "test"]
    assert len(asr["train"]) == TINY.asr_train and len(asr["test"]) == TINY.asr_eval
    assert not set(asr["test"]["text"]) & set(asr["train"]["text"])  # disjoint test sentences
    emotion = load_from_disk(str(corpus / "emotion"))
    assert emotion["train"].features["prosody_style"].names == ["neutral", "happy", "sad", "angry"]
    assert "PROXY" in emotion["train"].info.description
    assert len(emotion["train"]) == 4 * TINY.emotion_train
    unseen = set(USER_VOICES[-HELD_OUT_VOICES:])
    assert set(emotion["test_unseen_voices"]["speaker"]) <= unseen
    assert not set(emotion["train"]["speaker"]) & unseen
    assert set(load_from_disk(str(corpus / "tts"))["train"].features) >= {"text", "audio"}


def test_every_task_has_its_sizes_and_writes_its_columns(corpus):
    """A task's entry is all the builder needs: its sizes, its columns in order, WAV in its audio columns."""
    sizes = {f"{name}_{part}" for name in CORPUS_TASKS for part in ("train", "eval")}
    extra = {"tts_more_train", "tts_voice_lm_train"}  # TTS's own extra sentences
    assert {f.name for f in fields(CorpusSize)} == sizes | extra
    for name, task in CORPUS_TASKS.items():
        dataset = load_from_disk(str(corpus / name))["train"]
        assert list(dataset.features) == list(task.columns)
        assert dataset.info.description == task.description
        row = dataset[0]
        for column in (column for column, kind in task.columns.items() if kind == "audio"):
            assert row[column]["bytes"][:4] == b"RIFF" and row[column]["path"].startswith(row["id"])


def test_duplex_rows_match_their_events(corpus):
    duplex = load_from_disk(str(corpus / "duplex"))["train"]
    row = duplex[0]
    assert SHORT_SESSIONS.min_seconds <= row["duration"] <= SHORT_SESSIONS.max_seconds
    expected = frame_labels(row["events"], row["duration"], row["frame_rate"], 0.24)
    np.testing.assert_array_equal(np.asarray(row["frame_labels"]), expected)
    assert {e["type"] for e in row["events"]} >= {"user_speech", "turn_end", "assistant_speech"}


@pytest.mark.parametrize("seed", [0, 1])
def test_tts_held_out_texts_were_never_read_in_training(seed):
    """Answers recur across exchanges: a TTS test text heard in training would flatter the round trip."""
    plan = plan_corpus(SIZES["default"], seed, ("tts",), DuplexConfig(), 12.5, 0.24)
    rows = plan.meta["tts"]
    heard = {row["text"] for row in rows["train"]}
    assert len(rows["train"]) == SIZES["default"].tts_train + SIZES["default"].tts_more_train
    assert len(rows["voice_lm_train"]) == SIZES["default"].tts_voice_lm_train
    heard |= {row["text"] for row in rows["voice_lm_train"]}
    for split in ("validation", "test"):
        assert len(rows[split]) == SIZES["default"].tts_eval
        assert not heard & {row["text"] for row in rows[split]}


def test_tts_training_reads_small_templates_as_often_as_the_grammar_draws_them():
    """The other tasks' pools use up the arithmetic questions (363 sentences); TTS training must still read
    them, or the voice LM meets the held-out ones (5 % of the test) unheard."""
    plan = plan_corpus(SIZES["default"], 0, ("tts",), DuplexConfig(), 12.5, 0.24)
    texts = [row["text"] for split in ("train", "voice_lm_train") for row in plan.meta["tts"][split]]
    arithmetic = re.compile(
        r"^(what is \w+ (plus|times) \w+|how much is \w+ minus \w+|the answer is|that makes) "
    )
    share = sum(bool(arithmetic.match(text + " ")) for text in texts) / len(texts)
    assert share > 0.7 / len(INTENTS)


def test_more_tts_sentences_change_no_other_task():
    size = replace(SIZES["small"], asr_train=20, tts_train=10, s2s_train=10, duplex_train=2)

    def plan(more: int):
        return plan_corpus(
            replace(size, tts_more_train=more), 3, ("asr", "tts", "s2s", "duplex"), DuplexConfig(), 12.5, 0.24
        )

    few, many = plan(0), plan(40)
    for task in ("asr", "s2s", "duplex"):
        assert few.meta[task] == many.meta[task] and few.jobs[task] == many.jobs[task]
    assert len(many.meta["tts"]["train"]) == len(few.meta["tts"]["train"]) + 40
    assert many.jobs["tts"]["test"] == few.jobs["tts"]["test"]
    # the voice LM's own split leaves every other split as it was
    voice = plan_corpus(
        replace(size, tts_more_train=40, tts_voice_lm_train=30),
        3,
        ("asr", "tts", "s2s", "duplex"),
        DuplexConfig(),
        12.5,
        0.24,
    )
    assert len(voice.meta["tts"]["voice_lm_train"]) == 30
    for split in ("train", "validation", "test"):  # the same sentences, read with the same seeds
        assert voice.meta["tts"][split] == many.meta["tts"][split]
        assert voice.jobs["tts"][split] == many.jobs["tts"][split]
    assert voice.meta["asr"] == many.meta["asr"]
    assert not {r["text"] for r in voice.meta["tts"]["voice_lm_train"]} & {
        r["text"] for r in voice.meta["tts"]["test"]
    }


def test_more_duplex_sessions_leave_the_held_out_ones_as_they_were():
    def plan(train: int):
        size = replace(SIZES["small"], duplex_train=train, duplex_eval=3)
        return plan_corpus(size, 3, ("duplex",), DuplexConfig(), 12.5, 0.24)

    few, many = plan(2), plan(8)
    assert len(many.meta["duplex"]["train"]) == 8
    for split in ("validation", "test"):
        assert many.meta["duplex"][split] == few.meta["duplex"][split]
        assert many.jobs["duplex"][split] == few.jobs["duplex"][split]


def test_cli_rejects_an_unknown_task(capsys, tmp_path):
    assert synth.main(["--out", str(tmp_path), "--tasks", "asr,karaoke"]) == 2
    assert "karaoke" in capsys.readouterr().err


def test_package_import_does_not_load_espeak():
    """espeak-ng is GPL: importing every datamodules module (as the CLI does) must not load it.

    Checked in a fresh interpreter, so tests that build corpora in this process cannot mask it."""
    code = (
        "import importlib, pkgutil, sys; import minmo_lightning.datamodules as p\n"
        "for m in pkgutil.walk_packages(p.__path__, p.__name__ + '.'): importlib.import_module(m.name)\n"
        "assert 'espeakng_loader' not in sys.modules, 'espeak loaded on import'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- labelling rules ---------------------------------------------------------------------------
def test_frame_labels_on_a_hand_built_timeline():
    events = [
        {"type": "user_speech", "start": 0.5, "end": 2.0, "text": "turn on the lights,"},
        {"type": "pause", "start": 2.0, "end": 2.6, "text": ""},
        {"type": "user_speech", "start": 2.6, "end": 3.9, "text": "in the kitchen."},
        {"type": "turn_end", "start": 3.9, "end": 3.9, "text": ""},
        {"type": "assistant_speech", "start": 4.3, "end": 6.0, "text": "okay."},
        {"type": "backchannel", "start": 4.8, "end": 5.2, "text": "uh-huh"},
        {"type": "barge_in", "start": 5.5, "end": 5.5, "text": ""},
    ]
    labels = frame_labels(events, duration=7.0, frame_rate=10.0, label_span=0.3)
    expected = np.zeros(70, dtype=np.int64)
    expected[39:42] = RESPOND  # the frame holding 3.9 s and the next two (0.3 s)
    expected[55:58] = STOP_SPEAKING
    np.testing.assert_array_equal(labels, expected)
    assert (labels[20:26] == KEEP_LISTENING).all()  # the mid-turn pause
    assert (labels[48:52] == KEEP_LISTENING).all()  # the back-channel
    assert len(frame_labels(events, 7.0, 12.5, 0.24)) == 88  # ceil(7.0 * 12.5)
    assert frame_labels(events, 7.0, 1.0, 0.1).tolist().count(RESPOND) == 1  # at least one frame
    delayed = frame_labels(events, duration=7.0, frame_rate=10.0, label_span=0.3, stop_delay=0.3)
    moved = expected.copy()
    moved[55:58], moved[58:61] = KEEP_LISTENING, STOP_SPEAKING  # the stop 0.3 s into the barge-in
    np.testing.assert_array_equal(delayed, moved)  # the respond frames stay where they were
    held = frame_labels(events, duration=7.0, frame_rate=10.0, label_span=0.3, respond_until_answer=True)
    until = expected.copy()
    until[39:43] = RESPOND  # from the turn end at 3.9 s to the frame where the answer starts (4.3 s)
    np.testing.assert_array_equal(held, until)
    long_span = frame_labels(events, 7.0, 10.0, 0.6, respond_until_answer=True)
    assert long_span[39:45].tolist() == [RESPOND] * 6  # never shorter than label_span


def _fake_speaker(text: str) -> np.ndarray:
    """A constant-amplitude burst as long as espeak would roughly take, so rules are checkable."""
    return np.full(int(16000 * (0.25 + 0.055 * len(text))), 0.25, dtype=np.float32)


def test_sessions_follow_the_minmo_rules():
    config = DuplexConfig()
    delays, kinds = [], set()
    for seed in range(40):
        session = build_session(random.Random(seed), _fake_speaker, _fake_speaker, config, 16000)
        assert config.min_seconds <= session.duration <= config.max_seconds
        events = session.events
        kinds |= {e["type"] for e in events}
        replies = [e for e in events if e["type"] == "assistant_speech"]
        for end in (e for e in events if e["type"] == "turn_end"):
            # every user turn end is followed by an assistant reply after the response gap ...
            follow = [r for r in replies if 0 <= r["start"] - end["start"] <= config.response_gap[1] + 1e-3]
            assert follow or end["start"] > session.duration - 12, end
        for pause in (e for e in events if e["type"] == "pause"):
            assert pause["text"] in PAUSE_KINDS
            assert not any(
                e["type"] == "turn_end" and pause["start"] <= e["start"] < pause["end"] for e in events
            )
            resumed = [
                e for e in events if e["type"] == "user_speech" and abs(e["start"] - pause["end"]) < 1e-3
            ]
            assert resumed, "a mid-turn pause is followed by more of the same turn"
        for barge in (e for e in events if e["type"] == "barge_in"):
            reply = next(r for r in replies if r["start"] < barge["start"] <= r["end"])
            delays.append(barge["start"] - reply["start"])
            stop = reply["end"]
            assert config.stop_latency[0] - 1e-3 <= stop - barge["start"] <= config.stop_latency[1] + 1e-3
            after = session.assistant[int((stop + 0.01) * 16000) : int((stop + 0.3) * 16000)]
            assert np.abs(after).max(initial=0) == 0, "the assistant stops after a barge-in"
            assert any(
                e["type"] == "user_speech" and abs(e["start"] - barge["start"]) < 1e-3 for e in events
            ), "a barge-in is the start of a user turn"
        for channel in (e for e in events if e["type"] == "backchannel"):
            reply = next(r for r in replies if r["start"] < channel["start"] <= r["end"])
            assert channel["end"] < reply["end"], "a back-channel does not stop the assistant"
            assert not any(
                e["type"] == "barge_in" and reply["start"] <= e["start"] <= reply["end"] for e in events
            )
        labels = frame_labels(events, session.duration, 12.5, 0.24)
        assert (labels == RESPOND).sum() == 3 * sum(e["type"] == "turn_end" for e in events)
    assert kinds == {"user_speech", "pause", "turn_end", "assistant_speech", "barge_in", "backchannel"}
    assert len(delays) >= 5 and all(d >= 0.1 - 1e-3 for d in delays)
    assert 0.3 < float(np.mean(delays)) < 1.0  # T ~ N(0.6, 0.4^2), clipped below at 0.1 s


def test_user_turns_pause_inside_a_sentence_or_after_a_statement() -> None:
    """A finished question followed by silence is a turn end to any listener: no pause comes after one."""
    inside = between = 0
    for seed in range(300):
        turn = draw_user_turn(random.Random(seed), DuplexConfig())
        texts, spoken = [t for t, _ in turn.pieces], [s for _, s in turn.pieces]
        assert spoken[-1] == texts[-1] + ("?" if turn.exchange.question else ".")
        assert all(s == t + "," for t, s in zip(texts[:-1], spoken[:-1], strict=True))
        assert all(len(t.split()) >= 2 for t in texts)
        assert " ".join(texts) == " ".join(turn.sentences) and turn.sentences[-1] == turn.exchange.user
        assert not any(s.split()[0] in QUESTION_WORDS for s in turn.sentences[:-1])
        ends = set(np.cumsum([len(sentence.split()) for sentence in turn.sentences]).tolist())
        said = np.cumsum([len(text.split()) for text in texts[:-1]]).tolist()
        assert turn.pause_kinds == [PAUSE_KINDS[n in ends] for n in said]
        inside += turn.pause_kinds.count("mid_sentence")
        between += turn.pause_kinds.count("between_sentences")
    assert inside > 50 and between > 50


def test_a_piece_past_the_session_end_is_cut_away() -> None:
    from minmo_lightning.datamodules.timeline import _Track

    track = _Track(100)
    track.add(0.5, np.ones(20, dtype=np.float32))
    track.add(2.0, np.ones(20, dtype=np.float32))  # starts after the 1 s session ends
    rendered = track.render(100)
    assert rendered.sum() == 20 and rendered[50:70].tolist() == [1.0] * 20
