"""The corpus families beyond asr/emotion/tts/s2s/duplex: their labels agree with their audio and text.

Plan-level checks (pure Python, no synthesis) run at a few hundred rows; audio checks read a small
corpus synthesised once for the module.
"""

from __future__ import annotations

import io
import itertools
import json
import random
import re
import string
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from datasets import load_from_disk
from minmo_lightning.datamodules import synth
from minmo_lightning.datamodules.corpus_aed import EVENT_GAP, EVENT_LABELS, mix_events
from minmo_lightning.datamodules.corpus_dialogue import SCENARIOS, draw_dialogue
from minmo_lightning.datamodules.corpus_lid import LANGUAGE_NAMES, LANGUAGE_VOICES
from minmo_lightning.datamodules.corpus_parallel import CODES, SLOTS, TEMPLATES, draw_parallel
from minmo_lightning.datamodules.corpus_plan import FAMILIES, SIZES
from minmo_lightning.datamodules.corpus_speaker import AGES, CELLS, GENDERS
from minmo_lightning.datamodules.corpus_sqa import FACTS, draw_question_item
from minmo_lightning.datamodules.corpus_tasks import plan_corpus
from minmo_lightning.datamodules.corpus_text import number_words
from minmo_lightning.datamodules.corpus_voice_control import TARGET_CONTROL
from minmo_lightning.datamodules.timeline import DuplexConfig

from minmo_lightning.answers import parse_events, render_events

SIZE = replace(
    SIZES["tiny"],
    s2tt_train=6,
    lid_train=5,
    speaker_train=6,
    aed_train=6,
    aed_eval=3,
    sqa_train=4,
    dialogue_train=4,
    voice_control_train=7,  # every target once
)


def _plan(task: str, train: int, eval_size: int, seed: int = 0, also: tuple[str, ...] = ()):
    size = replace(SIZES["tiny"], **{f"{task}_train": train, f"{task}_eval": eval_size})
    return plan_corpus(size, seed, (task, *also), DuplexConfig(), 12.5, 0.24)


def _rows(plan, task: str) -> dict[str, list[dict]]:
    return plan.meta[task]


def _decode(cell: dict) -> tuple[np.ndarray, int]:
    wave, rate = sf.read(io.BytesIO(cell["bytes"]), dtype="float32")
    return wave, rate


def _arrow_files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.suffix == ".arrow" or p.name == "dataset_info.json"
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("families")
    synth.build_corpus(out, SIZE, seed=5, tasks=FAMILIES, workers=2, log=lambda _: None)
    return out


def test_a_family_built_alone_has_the_same_rows(corpus, tmp_path, monkeypatch):
    """Each family draws from its own generator: building a subset changes none of its rows."""
    synth.build_corpus(tmp_path, SIZE, seed=5, tasks=["lid", "voice_control"], workers=1, log=lambda _: None)
    for task in ("lid", "voice_control"):
        assert _arrow_files(tmp_path / task) == _arrow_files(corpus / task)
    assert json.loads((tmp_path / "lid" / "dataset_dict.json").read_text())["plan_version"] == 1
    # a later run that builds another task keeps the folders already there in the card, and says which of
    # them an older plan of their task wrote
    monkeypatch.setitem(synth.CORPUS_TASKS, "lid", replace(synth.CORPUS_TASKS["lid"], plan_version=2))
    said: list[str] = []
    synth.build_corpus(tmp_path, SIZE, seed=5, tasks=["asr"], workers=1, log=said.append)
    card = (tmp_path / "README.md").read_text()
    assert "| asr | train | 6 |" in card and f"| lid | train | {SIZE.lid_train} |" in card
    assert "lid, voice_control kept the folders an earlier run wrote" in card
    assert [line for line in said if line.startswith("warning")] == [
        f"warning: {tmp_path / 'lid'} was written by plan 1 of the lid set and this version draws plan 2: "
        "rebuild it with --tasks lid"
    ]


def test_every_row_lasts_as_long_as_its_audio(corpus):
    for task in FAMILIES:
        for split, dataset in load_from_disk(str(corpus / task)).items():
            assert len(dataset) == getattr(SIZE, f"{task}_{'train' if split == 'train' else 'eval'}")
            for row in dataset:
                wave, rate = _decode(row["audio"])
                assert rate == (24000 if task == "voice_control" else 16000)
                assert len(wave) / rate == pytest.approx(row["duration"], abs=1e-9), row["id"]


def test_card_documents_the_families(corpus):
    card = (corpus / "README.md").read_text()
    for heading in ("Translation and language ID", "Speaker attributes are a proxy", "Audio events"):
        assert heading in card
    assert "`age` (child/adult/senior)" in card and all(f"`{label}`" in card for label in EVENT_LABELS)


# ---- translation and language ID ---------------------------------------------------------------------
def _parallel_sentences() -> dict[str, dict[str, str]]:
    """Every sentence of the grammar: English -> {language code: rendering}."""
    sentences = {}
    for template in TEMPLATES:
        slots = sorted(set(re.findall(r"{(\w+)}", template.texts[0])))
        for picks in itertools.product(*(range(len(SLOTS[slot])) for slot in slots)):
            if "name2" in slots and picks[slots.index("name")] == picks[slots.index("name2")]:
                continue
            texts = {
                code: text.format(**{slot: SLOTS[slot][pick][i] for slot, pick in zip(slots, picks)})
                for i, (code, text) in enumerate(zip(CODES, template.texts))
            }
            sentences[texts["en"]] = texts
    return sentences


def test_parallel_templates_use_the_same_slots_in_every_language():
    for template in TEMPLATES:
        slots = [sorted(re.findall(r"{(\w+)}", text)) for text in template.texts]
        assert all(s == slots[0] for s in slots), template.texts[0]
    for values in SLOTS.values():
        assert all(len(value) == len(CODES) for value in values)
    draws = [draw_parallel(random.Random(7)) for _ in range(2)]
    assert draws[0] == draws[1]
    assert len(_parallel_sentences()) > 4000  # room for the default sizes (2 x 1200 distinct)


def test_translations_are_exact_and_test_pairs_unheard_in_training():
    grammar = _parallel_sentences()
    spanish = {texts["es"]: english for english, texts in grammar.items()}
    plan = _plan("s2tt", 120, 30, also=("lid",))
    rows = _rows(plan, "s2tt")
    english_of = {}
    for split, split_rows in rows.items():
        directions = [(row["source_language"], row["target_language"]) for row in split_rows]
        assert directions[:2] == [(0, 1), (1, 0)] and set(directions) == {(0, 1), (1, 0)}
        for row in split_rows:
            source, target = LANGUAGE_NAMES[row["source_language"]], LANGUAGE_NAMES[row["target_language"]]
            english = row["text"] if source == "English" else spanish[row["text"]]
            translation = grammar[english]["es" if target == "Spanish" else "en"]
            assert row["translation"] == translation, row["id"]
            english_of.setdefault(split, set()).add(english)
    assert not english_of["test"] & english_of["train"] and not english_of["validation"] & english_of["train"]
    lid_train = {row["text"] for row in _rows(plan, "lid")["train"]}
    every_rendering = {text for english in english_of["test"] for text in grammar[english].values()}
    assert not every_rendering & lid_train


def test_language_id_is_balanced_and_read_by_voices_of_its_language():
    rows = _rows(_plan("lid", 100, 20), "lid")
    for split, split_rows in rows.items():
        counts = np.bincount([row["language"] for row in split_rows], minlength=len(CODES))
        assert counts.max() - counts.min() <= 1, split
    for row in rows["train"]:
        assert row["speaker"] in LANGUAGE_VOICES[CODES[row["language"]]]


# ---- speaker attributes -----------------------------------------------------------------------------
def test_speakers_are_disjoint_across_splits_and_every_split_has_every_cell(corpus):
    rows = _rows(_plan("speaker", 120, 40), "speaker")
    built = {split: list(dataset) for split, dataset in load_from_disk(str(corpus / "speaker")).items()}
    for split_rows in (rows, built):
        speakers = {split: {row["speaker"] for row in r} for split, r in split_rows.items()}
        assert not speakers["train"] & speakers["test"] and not speakers["train"] & speakers["validation"]
        assert not speakers["validation"] & speakers["test"]
    attributes = {}
    for split, split_rows in rows.items():
        cells = set()
        for row in split_rows:
            attributes.setdefault(row["speaker"], set()).add((row["gender"], row["age"], row["voice"]))
            gender, age = GENDERS[row["gender"]], AGES[row["age"]]
            assert row["voice"].split("+")[1] in CELLS[gender, age].variants
            cells.add((gender, age))
        assert cells == set(CELLS), split
    assert all(len(a) == 1 for a in attributes.values())  # a speaker keeps one voice, gender and age


# ---- audio events -----------------------------------------------------------------------------------
def _rms(wave: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(wave, dtype=np.float64))))


def _check_events(wave: np.ndarray, rate: int, events: list[dict], context: str) -> None:
    onsets = [event["onset"] for event in events]
    assert onsets == sorted(onsets), context
    for event, following in zip(events, events[1:]):
        assert following["onset"] - event["offset"] >= EVENT_GAP - 1e-9, context
    for event in events:
        assert event["label"] in EVENT_LABELS
        onset = round(event["onset"] * rate)
        assert onset == event["onset"] * rate and 0 < event["onset"] < event["offset"] <= len(wave) / rate
        window = min(int(0.02 * rate), round((event["offset"] - event["onset"]) * rate))
        after, before = _rms(wave[onset : onset + window]), _rms(wave[onset - window : onset])
        assert after > 1.5 * before, (context, event, after, before)


def test_event_onsets_are_where_the_energy_starts(corpus):
    for dataset in load_from_disk(str(corpus / "aed")).values():
        for row in dataset:
            wave, rate = _decode(row["audio"])
            _check_events(wave, rate, row["events"], row["id"])
            assert (row["text"] == "") == (row["speaker"] == "")
            answer = parse_events(render_events(row["events"]))
            assert [e["label"] for e in answer] == [e["label"] for e in row["events"]]
            assert [e["onset"] for e in answer] == pytest.approx(
                [e["onset"] for e in row["events"]], abs=0.05
            )


def test_mixed_events_start_at_their_onset_sample():
    """Many layouts over syllable-like speech, and over silence where the onset sample itself is checked."""
    rate, noise = 16000, np.random.default_rng(0)
    envelope = np.abs(np.sin(np.linspace(0, 12 * np.pi, 2 * rate)))  # six "syllables" in 2 s
    speech = (0.2 * envelope * noise.standard_normal(2 * rate)).astype(np.float32)
    labels = set()
    for seed in range(40):
        wave, events = mix_events(random.Random(seed), speech, rate)
        _check_events(wave, rate, events, f"seed {seed}")
        silent, silent_events = mix_events(random.Random(seed), np.zeros(0, np.float32), rate)
        for event in silent_events:
            onset = round(event["onset"] * rate)
            assert np.abs(silent[onset - 40 : onset]).max() < 0.01 < np.abs(silent[onset : onset + 16]).max()
        labels |= {event["label"] for event in events + silent_events}
    assert labels == set(EVENT_LABELS)


# ---- spoken QA --------------------------------------------------------------------------------------
def _fact_pattern(sentence: str) -> re.Pattern:
    return re.compile("^" + re.sub(r"{(\w+)}", r"(?P<\1>.+?)", sentence) + "$")


def test_qa_answers_follow_from_the_passage():
    """Read the facts back from the passage, then every question has exactly the recorded answer."""
    patterns = [(fact, _fact_pattern(fact.sentence)) for fact in FACTS]
    rng, kinds = random.Random(3), set()
    for _ in range(300):
        item = draw_question_item(rng)
        span_answers, yes_questions = {}, set()
        sentences = item.passage.rstrip(".").split(". ")
        assert 2 <= len(sentences) <= 4
        for sentence in sentences:
            fact, values = next((f, m.groupdict()) for f, p in patterns if (m := p.match(sentence)))
            yes_questions.add(fact.yes_no.format(**values) + "?")
            for question, answer in fact.span_questions:
                span_answers[question.format(**values) + "?"] = answer.format(**values)
        if item.answer_type == "span":
            assert span_answers[item.question] == item.answer
            assert re.search(rf"\b{re.escape(item.answer)}\b", item.passage)
        else:
            assert item.answer == ("yes" if item.question in yes_questions else "no")
        kinds.add((item.answer_type, item.answer if item.answer_type == "yesno" else "span"))
    assert kinds == {("span", "span"), ("yesno", "yes"), ("yesno", "no")}


# ---- dialogue ---------------------------------------------------------------------------------------
_NUMBERS = {number_words(n): n for n in range(1000)}


def _number_in(text: str) -> list[int]:
    """The numbers a text says, in order ("twenty four" is one number)."""
    words = text.split()
    found, i = [], 0
    while i < len(words):
        for length in (5, 4, 3, 2, 1):
            phrase = " ".join(words[i : i + length])
            if phrase in _NUMBERS:
                found.append(_NUMBERS[phrase])
                i += length
                break
        else:
            i += 1
    return found


def test_the_last_answer_needs_the_history():
    literal = {
        word
        for scenario in SCENARIOS
        for _, answer in scenario.turns
        for word in re.sub(r"{\w+}", " ", answer).translate(str.maketrans("", "", string.punctuation)).split()
    }
    rng, turn_counts = random.Random(11), set()
    for _ in range(400):
        turns = draw_dialogue(rng).turns
        turn_counts.add(len(turns))
        (last, answer), history = turns[-1], " ".join(" ".join(turn) for turn in turns[:-1])
        needed = set(answer.replace(",", "").split()) - set(last.split()) - literal
        assert needed, turns
        if last.startswith("and what is that times"):  # small talk comes first: "that" is the turn before
            a, b = _number_in(turns[-2][0])
            assert _number_in(answer) == [(a + b) * _number_in(last)[0]]
        elif last.startswith("add "):
            assert _number_in(answer) == [_number_in(turns[0][0])[0] + _number_in(last)[0]]
        else:
            assert needed & set(history.replace(",", "").split()), turns
    assert turn_counts == {2, 3, 4}


def test_dialogue_history_alternates_and_carries_the_user_audio(corpus):
    for dataset in load_from_disk(str(corpus / "dialogue")).values():
        for row in dataset:
            history = row["history"]
            assert 2 <= len(history) // 2 + 1 <= 4 and len(history) % 2 == 0
            assert [turn["role"] for turn in history] == ["user", "assistant"] * (len(history) // 2)
            for turn in history:
                assert turn["audio"][:4] == b"RIFF" if turn["role"] == "user" else turn["audio"] == b""


# ---- voice control ----------------------------------------------------------------------------------
def _median_f0(wave: np.ndarray, rate: int) -> float:
    """Autocorrelation pitch of the loud 40 ms frames (enough to order high / neutral / low)."""
    frame, hop = int(0.04 * rate), int(0.01 * rate)
    frames = [wave[i : i + frame] for i in range(0, len(wave) - frame, hop)]
    loud = max(_rms(f) for f in frames)
    pitches = []
    for f in (f for f in frames if _rms(f) > 0.3 * loud):
        f = f - f.mean()
        correlation = np.correlate(f, f, "full")[frame - 1 :]
        low, high = rate // 400, rate // 70
        pitches.append(rate / (low + int(np.argmax(correlation[low:high]))))
    return float(np.median(pitches))


def test_more_voice_control_rows_leave_the_held_out_ones_as_they_were():
    def plan(train: int):
        return plan_corpus(
            replace(SIZE, voice_control_train=train), 5, ("voice_control",), DuplexConfig(), 12.5, 0.24
        )

    few, many = plan(7), plan(30)
    assert len(many.meta["voice_control"]["train"]) == 30
    assert many.meta["voice_control"]["train"][:7] == few.meta["voice_control"]["train"]
    for split in ("validation", "test"):  # the same sentences, wordings, seeds and user voices
        assert many.meta["voice_control"][split] == few.meta["voice_control"][split]
        assert many.jobs["voice_control"][split] == few.jobs["voice_control"][split]


def test_styled_speech_moves_the_way_the_instruction_asks(corpus):
    rows = list(load_from_disk(str(corpus / "voice_control"))["train"])
    assert {row["target"] for row in rows} == set(range(len(TARGET_CONTROL)))
    targets = list(TARGET_CONTROL)
    for row in rows:
        target = targets[row["target"]]
        assert ["emotion", "rate", "pitch"][row["control"]] == TARGET_CONTROL[target]
        assert row["request_text"].endswith(row["instruction"]) and row["text"] in row["request_text"]
        assert row["phonemes"] >= len(row["text"].split())
        styled, rate = _decode(row["audio"])
        neutral, neutral_rate = _decode(row["neutral_audio"])
        assert rate == neutral_rate == 24000 and _decode(row["request_audio"])[1] == 16000
        assert len(neutral) / rate == pytest.approx(row["neutral_duration"])
        ratio = row["duration"] / row["neutral_duration"]
        pitch = _median_f0(styled, rate) / _median_f0(neutral, rate)
        if target == "slow":
            assert ratio > 1.2
        elif target == "fast":
            assert ratio < 0.85
        elif target == "high":
            assert pitch > 1.08 and ratio == pytest.approx(1, abs=0.1)
        elif target == "low":
            assert pitch < 0.92 and ratio == pytest.approx(1, abs=0.1)


# ---- turn pieces ---------------------------------------------------------------------------------------
def test_turn_pieces_mark_where_the_speaker_goes_on():
    """A piece read with continuation intonation (",") is transcribed with ","; a turn's last piece is read
    with its final mark and transcribed without one."""
    plan = _plan("turn_pieces", 300, 40)
    rows, jobs = plan.meta["turn_pieces"], plan.jobs["turn_pieces"]
    assert {split: len(r) for split, r in rows.items()} == {"validation": 40, "test": 40, "train": 300}
    continued = 0
    for split in rows:
        for row, job in zip(rows[split], jobs[split], strict=True):
            if row["text"].endswith(","):
                assert job.text == row["text"]
                continued += 1
            else:
                assert job.text in (row["text"] + ".", row["text"] + "?")
            assert len(row["text"].rstrip(",").split()) >= 2
    assert 0.3 < continued / 380 < 0.7
