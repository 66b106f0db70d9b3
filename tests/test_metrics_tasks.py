"""Hand-computed cases for the metrics of translation, language ID, speaker attributes, audio events, spoken QA
and voice control, and each task scored end to end from a predictions file."""

import json
import math
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from minmo_lightning.evaluation.attributes import attributes_report
from minmo_lightning.evaluation.classification import chance_levels, classification_report
from minmo_lightning.evaluation.compare import compare_runs
from minmo_lightning.evaluation.events import events_report, match_events
from minmo_lightning.evaluation.prosody import median_f0_hz, phoneme_count, speech_seconds
from minmo_lightning.evaluation.qa import answer_scores, normalize_answer, qa_report, token_f1
from minmo_lightning.evaluation.runner import evaluate
from minmo_lightning.evaluation.tasks import TASK_SPECS, BatchLabels
from minmo_lightning.evaluation.translation import corpus_scores, tokenizer_for, translation_report
from minmo_lightning.evaluation.voice_control import voice_control_report
from sacrebleu.metrics import BLEU, CHRF

from minmo_lightning.answers import render_attributes, render_events

RATE = 16000

# ----------------------------------------------------------------------------- translation


def test_bleu_hand_computed_and_equal_to_sacrebleu():
    # n-gram precisions 5/6, 3/5, 2/4, 1/3 (one "the" clipped), equal lengths: BLEU = (1/12) ** (1/4)
    hyp, ref = "the cat sat on the mat", "the cat sat on a mat"
    scores = corpus_scores([hyp], [ref], "13a")
    assert scores["bleu"] == pytest.approx(100 * (1 / 12) ** 0.25)
    assert scores["bleu"] == pytest.approx(BLEU().corpus_score([hyp], [[ref]]).score)
    assert scores["chrf"] == pytest.approx(CHRF().corpus_score([hyp], [[ref]]).score)
    assert scores["brevity_penalty"] == 1.0 and "tok:13a" in scores["signature_bleu"]


def test_tokenizer_follows_the_target_language():
    assert tokenizer_for("French") == "13a" and tokenizer_for("chinese") == "zh"
    assert tokenizer_for("Japanese") in ("ja-mecab", "char")
    # Chinese characters are the n-grams: the same 5/6, 3/5, 2/4, 1/3 as above; as one 13a token it scores 0
    hyp, ref = "今天天气很好", "今天天气不好"
    assert corpus_scores([hyp], [ref], "zh")["bleu"] == pytest.approx(100 * (1 / 12) ** 0.25)
    assert corpus_scores([hyp], [ref], "13a")["bleu"] == 0.0


def test_translation_report_per_language_mean_and_chance(tmp_path):
    records = [
        {"id": "1", "reference": "the cat sat on a mat", "hypothesis": "the cat sat on the mat"},
        {"id": "2", "reference": "a dog ran in the park", "hypothesis": "a dog ran in the park"},
        {"id": "3", "reference": "今天天气不好", "hypothesis": "今天天气很好", "target_language": "Chinese"},
    ]
    scored = translation_report(records, {"target_language": "English", "tokenize": None}, tmp_path)
    english = BLEU().corpus_score(
        [r["hypothesis"] for r in records[:2]], [[r["reference"] for r in records[:2]]]
    )
    assert scored.metrics["languages"]["English"]["bleu"] == pytest.approx(english.score)
    assert scored.metrics["languages"]["Chinese"]["tokenize"] == "zh"
    assert scored.summary["bleu"] == pytest.approx((english.score + 100 * (1 / 12) ** 0.25) / 2)
    # chance: each English reference against the other one; a single Chinese record has none
    swapped = BLEU().corpus_score(
        [records[1]["reference"], records[0]["reference"]],
        [[records[0]["reference"], records[1]["reference"]]],
    )
    assert scored.summary["chance_bleu"] == pytest.approx(swapped.score)
    assert scored.metrics["languages"]["Chinese"]["chance"] is None
    assert scored.records[1]["sentence_chrf"] == pytest.approx(100.0)
    with pytest.raises(ValueError, match="record '1' has no target_language"):
        translation_report(records[:1], {"target_language": None}, tmp_path)


# ------------------------------------------------------------------------ classification


def test_chance_levels_and_language_id_figures(tmp_path):
    assert chance_levels(["en", "en", "fr"], ["de", "en", "fr"]) == {
        "uniform": pytest.approx(1 / 3),
        "majority": pytest.approx(2 / 3),
        "majority_class": "en",
    }
    records = [
        {"id": "a", "reference": "English", "prediction_text": "English."},
        {"id": "b", "reference": "English", "prediction_text": "The language is French"},
        {"id": "c", "reference": "English", "prediction_text": "no idea"},
        {"id": "d", "reference": "French", "prediction_text": "french"},
    ]
    scored = classification_report(records, {"labels": None, "label_map": None}, tmp_path)
    s = scored.summary
    assert s["accuracy"] == pytest.approx(2 / 4) and s["ua"] == pytest.approx((1 / 3 + 1) / 2)
    assert s["unparseable_rate"] == pytest.approx(1 / 4) and scored.metrics["unparseable_ids"] == ["c"]
    assert (s["chance_uniform"], s["chance_majority"]) == (pytest.approx(1 / 2), pytest.approx(3 / 4))
    assert scored.metrics["confusion"] == [
        [1, 1, 1],
        [0, 1, 0],
    ]  # rows English, French; last column unparseable
    assert [r["correct"] for r in scored.records] == [True, False, False, True]
    # a dataset's codes mapped onto names, and a closed-set pick scored beside the generated answer
    coded = [
        {**r, "reference": {"English": "en", "French": "fr"}[r["reference"]], "scored_prediction": "en"}
        for r in records
    ]
    scored = classification_report(
        coded, {"labels": ["English", "French"], "label_map": {"en": "English", "fr": "French"}}, tmp_path
    )
    assert scored.summary["accuracy"] == pytest.approx(2 / 4) and scored.summary[
        "closed_set_accuracy"
    ] == pytest.approx(3 / 4)


# ------------------------------------------------------------------------- speaker attributes


def test_speaker_attributes_per_attribute_joint_and_chance(tmp_path):
    rows = [
        (("female", "adult"), "female, adult"),
        (("female", "senior"), "female, adult"),
        (("male", "adult"), "male, adult"),
        (("male", "child"), "a man"),  # gender unparseable ("man" is no label), age unparseable
    ]
    records = [
        {"id": str(k), "reference_attributes": {"gender": g, "age": a}, "prediction_text": text}
        for k, ((g, a), text) in enumerate(rows)
    ]
    labels = {"gender": ["female", "male"], "age": ["child", "adult", "senior"]}
    scored = attributes_report(records, {"attribute_labels": labels}, tmp_path)
    s = scored.summary
    assert s["gender_accuracy"] == pytest.approx(3 / 4) and s["age_accuracy"] == pytest.approx(2 / 4)
    assert s["joint_accuracy"] == pytest.approx(2 / 4)
    assert s["gender_chance_uniform"] == pytest.approx(1 / 2) and s["age_chance_majority"] == pytest.approx(
        2 / 4
    )
    assert s["joint_chance_uniform"] == pytest.approx(1 / 6)
    assert s["joint_chance_majority"] == pytest.approx(1 / 4)  # "female, adult" everywhere: only record 0
    assert s["age_unparseable_rate"] == pytest.approx(1 / 4)
    assert scored.records[1]["predicted_attributes"] == {"gender": "female", "age": "adult"}
    assert render_attributes(["female", "adult"]) == "female, adult"
    with pytest.raises(ValueError, match="record '1' has attributes \\['gender'\\]"):
        attributes_report(
            [records[0], {**records[1], "reference_attributes": {"gender": "male"}}], {}, tmp_path
        )


# ----------------------------------------------------------------------------- audio events


def _events(*pairs):
    return [{"label": label, "onset": onset, "offset": onset + 0.3} for label, onset in pairs]


def test_event_matching_tolerance_edges():
    def counts(ref, pred, tolerance=0.2):
        by_label = match_events(ref, pred, tolerance).values()
        return tuple(sum(getattr(c, k) for c in by_label) for k in ("tp", "fp", "fn"))

    ref = _events(("tone", 0.5))
    assert counts(ref, [{"label": "tone", "onset": 0.7}]) == (1, 0, 0)  # the boundary is inside
    assert counts(ref, [{"label": "tone", "onset": 0.3}]) == (1, 0, 0)
    assert counts(ref, [{"label": "tone", "onset": 0.71}]) == (0, 1, 1)
    # 0.7 + 0.2 is 0.8999999999999999 in floating point: 0.9 is still on the boundary
    assert counts(_events(("tone", 0.7)), [{"label": "tone", "onset": 0.9}]) == (1, 0, 0)
    assert counts(ref, [{"label": "click", "onset": 0.5}]) == (0, 1, 1)  # the label must match
    assert counts(_events(("Tone", 0.5)), [{"label": "tone", "onset": 0.5}]) == (1, 0, 0)
    # one-to-one: a second answer near the same event is a false positive
    assert counts(ref, [{"label": "tone", "onset": 0.45}, {"label": "tone", "onset": 0.55}]) == (1, 1, 0)
    # time order pairs both (nearest-first would pair 1.2 with 1.3 and leave two unmatched)
    two = _events(("tone", 1.0), ("tone", 1.3))
    assert counts(two, [{"label": "tone", "onset": 1.2}, {"label": "tone", "onset": 1.5}]) == (2, 0, 0)
    assert counts([], []) == (0, 0, 0)


def test_events_report_f1_none_accuracy_and_baselines(tmp_path):
    records = [
        {
            "id": "a",
            "reference_events": _events(("tone", 0.5)),
            "prediction_text": render_events(_events(("tone", 0.6))),
        },
        {
            "id": "b",
            "reference_events": _events(("tone", 0.7), ("click", 1.0)),
            "prediction_text": "tone at 0.7 s; noise at 1.0 s",
        },
        {"id": "c", "reference_events": [], "prediction_text": "None."},
        {"id": "d", "reference_events": [], "prediction_text": "I hear nothing"},  # unparseable
        {"id": "e", "reference_events": [], "prediction_text": "click at 2.0 s"},
    ]
    scored = events_report(records, {"tolerance_s": 0.2}, tmp_path)
    s = scored.summary
    # TP 2 (tone, tone); FP 2 (noise, click at 2.0); FN 1 (click at 1.0)
    assert (s["event_precision"], s["event_recall"]) == (pytest.approx(2 / 4), pytest.approx(2 / 3))
    assert s["event_f1"] == pytest.approx(4 / 7)
    assert s["none_accuracy"] == pytest.approx(1 / 3) and scored.metrics["unparseable_ids"] == ["d"]
    assert (
        scored.metrics["per_label"]["tone"]["f1"] == 1.0 and scored.metrics["per_label"]["click"]["f1"] == 0.0
    )
    # prior: "tone at 0.6 s" (median of 0.5 and 0.7) everywhere: TP 2, FP 3 (event-free items), FN 1 (click)
    assert scored.metrics["baselines"]["prior"]["answer"] == [{"label": "tone", "onset": pytest.approx(0.6)}]
    assert s["prior_event_f1"] == pytest.approx(4 / 8)
    assert scored.metrics["baselines"]["always_none"]["none_accuracy"] == 1.0
    assert [(r["tp"], r["fp"], r["fn"]) for r in scored.records][:2] == [(1, 0, 0), (1, 1, 1)]


# ------------------------------------------------------------------------------- spoken QA


def test_squad_normalisation_exact_match_and_token_f1():
    assert normalize_answer("  The Eiffel   Tower! ") == "eiffel tower"
    assert normalize_answer("An apple, a day.") == "apple day"
    assert token_f1("in the city of Paris", "Paris city") == pytest.approx(2 / 3)  # P 2/4, R 2/2
    assert token_f1("", "") == 1.0 and token_f1("the", "paris") == 0.0
    scores = answer_scores("It is Paris.", ["Paris", "City of Light"])
    assert scores == {"exact_match": 0.0, "f1": pytest.approx(0.5), "answer_contained": 1.0}  # P 1/3, R 1
    assert answer_scores("Yes.", "yes")["exact_match"] == 1.0
    assert answer_scores("Parisian", "Paris")["answer_contained"] == 0.0  # whole tokens only


def test_qa_report_by_answer_type_and_constant_baseline(tmp_path):
    records = [
        {"id": "1", "reference": "yes", "prediction_text": "Yes", "answer_type": "yesno"},
        {"id": "2", "reference": "yes", "prediction_text": "no", "answer_type": "yesno"},
        {"id": "3", "reference": "no", "prediction_text": "No.", "answer_type": "yesno"},
        {"id": "4", "reference": "the red house", "prediction_text": "a red house", "answer_type": "span"},
        {"id": "5", "reference": "blue", "prediction_text": "green", "answer_type": "span"},
    ]
    scored = qa_report(records, {}, tmp_path)
    s = scored.summary
    assert s["exact_match"] == pytest.approx(3 / 5) and s["exact_match_yesno"] == pytest.approx(2 / 3)
    assert s["exact_match_span"] == pytest.approx(1 / 2)
    # baseline: "yes" for yes/no items (2 of 3 right), "blue" (first in order of the tied spans) for spans
    assert scored.metrics["baseline_answers"] == {"yesno": "yes", "span": "blue"}
    assert s["baseline_exact_match"] == pytest.approx(3 / 5)


# ---------------------------------------------------------------------------- voice control


def _noise(seconds, level=0.1, seed=0):
    return np.random.default_rng(seed).normal(0, level, int(seconds * RATE))


def _silence(seconds):
    return np.zeros(int(seconds * RATE))


def _tone(f0, seconds=0.6):
    t = np.arange(int(seconds * RATE)) / RATE
    return sum(0.2 / k * np.sin(2 * np.pi * k * f0 * t) for k in (1, 2, 3))


def _wav(path: Path, wave: np.ndarray) -> str:
    soundfile.write(str(path), wave.astype(np.float32), RATE)
    return str(path)


def test_speech_seconds_trim_silence_and_median_f0():
    wave = np.concatenate([_silence(0.3), _noise(1.0), _silence(0.5)])
    assert speech_seconds(wave, RATE, 40.0) == pytest.approx(1.0, abs=0.02)
    assert speech_seconds(_silence(1.0), RATE, 40.0) == 0.0
    assert median_f0_hz(np.concatenate([_silence(0.2), _tone(200.0)]), RATE, 75.0, 600.0) == pytest.approx(
        200.0, rel=0.01
    )
    assert median_f0_hz(_noise(0.5), RATE, 75.0, 600.0) is None  # nothing voiced
    assert median_f0_hz(_tone(200.0, 0.01), RATE, 75.0, 600.0) is None  # shorter than an analysis window
    assert [phoneme_count(p) for p in (7, ["h", "ə", "l"], "h ə l oʊ")] == [7, 3, 4]


SETTINGS = dict(TASK_SPECS["voice_control"].settings)


def loudness_judge(wave: np.ndarray, sample_rate: int) -> str:
    """A stand-in emotion classifier: loud clips sound angry."""
    return "angry" if np.abs(wave).max() > 0.3 else "neutral"


class PeakJudge:
    """The same, built from ``{class_path, init_args}``."""

    def __init__(self, level: float) -> None:
        self.level = level

    def __call__(self, wave: np.ndarray, sample_rate: int) -> str:
        return "angry" if np.abs(wave).max() > self.level else "neutral"


def test_voice_control_rate_pitch_and_emotion(tmp_path):
    neutral = _wav(tmp_path / "neutral.wav", np.concatenate([_silence(0.3), _noise(1.0), _silence(0.3)]))
    fast = _wav(tmp_path / "fast.wav", np.concatenate([_silence(0.5), _noise(0.6), _silence(0.1)]))
    low, high = _wav(tmp_path / "low.wav", _tone(150.0)), _wav(tmp_path / "high.wav", _tone(400.0))
    loud = _wav(tmp_path / "loud.wav", 4 * _tone(200.0))
    base = {"phonemes": 10, "neutral_audio_path": neutral}
    records = [
        {"id": "r1", "control": "rate", "target": "fast", "output_audio_path": fast, **base},
        {"id": "r2", "control": "rate", "target": "slow", "output_audio_path": fast, **base},
        {
            "id": "r3",
            "control": "rate",
            "target": "slow",
            "output_audio_path": _wav(tmp_path / "mute.wav", _silence(1.0)),
            **base,
        },
        {"id": "p1", "control": "pitch", "target": "high", "output_audio_path": high, "neutral_f0_hz": 200.0},
        {
            "id": "p2",
            "control": "pitch",
            "target": "low",
            "output_audio_path": low,
            "neutral_audio_path": high,
        },
        {
            "id": "e1",
            "control": "emotion",
            "target": "angry",
            "output_audio_path": loud,
            "neutral_audio_path": low,
        },
        {"id": "e2", "control": "emotion", "target": "happy", "output_audio_path": low},
    ]
    scored = voice_control_report(records, SETTINGS, tmp_path)
    by_id = {r["id"]: r for r in scored.records}
    assert by_id["r1"]["rate_ratio"] == pytest.approx(0.6, abs=0.03) and by_id["r1"]["moved"]
    assert by_id["r1"]["seconds_per_phoneme"] == pytest.approx(0.06, abs=0.003)
    assert (
        not by_id["r2"]["moved"] and not by_id["r3"]["moved"]
    )  # slower asked, faster given; no speech at all
    assert (
        by_id["p1"]["semitone_shift"] == pytest.approx(12 * math.log2(2.0), abs=0.1) and by_id["p1"]["moved"]
    )
    assert (
        by_id["p2"]["semitone_shift"] == pytest.approx(12 * math.log2(150 / 400), abs=0.1)
        and by_id["p2"]["moved"]
    )
    s = scored.summary
    assert (s["rate_moved"], s["pitch_moved"], s["emotion_moved"]) == (pytest.approx(1 / 3), 1.0, None)
    assert s["moved"] == pytest.approx(3 / 5) and s["rate_chance"] == 0.5
    assert s["chance"] == 0.5  # over the judged records only: no emotion record without a judge
    assert scored.metrics["per_target"]["rate/slow"]["unmeasured_ids"] == ["r3"]
    assert "needs a judge" in scored.sections[0][1]

    judged = voice_control_report(
        records, {**SETTINGS, "emotion_judge": f"{__name__}.loudness_judge"}, tmp_path
    )
    assert judged.summary["emotion_moved"] == pytest.approx(1 / 2) and judged.summary["emotion_chance"] == 0.5
    assert judged.metrics["per_target"]["emotion/angry"]["neutral_hit"] == 0.0
    sad = {"id": "e3", "control": "emotion", "target": "sad", "output_audio_path": low}
    judged = voice_control_report(
        [*records, sad], {**SETTINGS, "emotion_judge": f"{__name__}.loudness_judge"}, tmp_path
    )
    assert judged.summary["chance"] == pytest.approx((5 * 0.5 + 3 * (1 / 3)) / 8)  # records' own chances
    judge = {"class_path": f"{__name__}.PeakJudge", "init_args": {"level": 0.01}}  # everything sounds angry
    judged = voice_control_report(records, {**SETTINGS, "emotion_judge": judge}, tmp_path)
    assert judged.metrics["per_target"]["emotion/angry"]["neutral_hit"] == 1.0
    ceiling = {"ceiling_audio_path": low, "ceiling_neutral_audio_path": high}  # the chain carried "lower"
    paired = [
        {**records[4], **ceiling},
        {**records[3], **ceiling},
        {**records[0], "ceiling_audio_path": fast},
    ]
    paired = {r["id"]: r for r in voice_control_report(paired, SETTINGS, tmp_path).records}
    assert paired["p2"]["ceiling_moved"] and not paired["p1"]["ceiling_moved"]  # low asked: moved; high: not
    assert paired["p1"]["ceiling_semitone_shift"] == pytest.approx(12 * math.log2(150 / 400), abs=0.1)
    assert paired["p1"]["moved"] and paired["p1"]["semitone_shift"] > 0  # the output's own measure untouched
    assert "ceiling_moved" not in paired["r1"]  # no neutral reading through the chain: no ceiling
    summary = voice_control_report(list(paired.values()), SETTINGS, tmp_path).summary
    assert summary["pitch_ceiling_moved"] == 0.5 and summary["ceiling_moved"] == 0.5
    assert summary["rate_ceiling_moved"] is None and scored.summary["ceiling_moved"] is None
    with pytest.raises(ValueError, match="emotion_judge 'no_such_module.judge' cannot be imported"):
        voice_control_report(records, {**SETTINGS, "emotion_judge": "no_such_module.judge"}, tmp_path)
    with pytest.raises(ValueError, match="control 'volume' is not one of"):
        voice_control_report([{**records[0], "control": "volume"}], SETTINGS, tmp_path)
    with pytest.raises(ValueError, match="pitch target 'fast' is not one of \\('high', 'low'\\)"):
        voice_control_report([{**records[3], "target": "fast"}], SETTINGS, tmp_path)


# ------------------------------------------------------------------------ tasks end to end


def _write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return path


def test_every_new_task_scores_a_predictions_file_and_compares(tmp_path):
    files = {
        "s2tt": [
            {"id": "1", "reference": "el gato", "prediction_text": "el gato", "target_language": "Spanish"},
            {
                "id": "2",
                "reference": "la casa roja",
                "prediction_text": "la casa",
                "target_language": "Spanish",
            },
        ],
        "lid": [
            {"id": "1", "reference": "English", "prediction_text": "English"},
            {"id": "2", "reference": "German", "prediction_text": "English"},
        ],
        "speaker": [
            {
                "id": "1",
                "reference_attributes": {"gender": "male", "age": "adult"},
                "prediction_text": "male, adult",
            }
        ],
        "aed": [{"id": "1", "reference_events": _events(("tone", 0.5)), "prediction_text": "tone at 0.8 s"}],
        "sqa": [{"id": "1", "reference": "four", "prediction_text": "Four."}],
    }
    for task, records in files.items():
        m = evaluate(
            task, tmp_path / task, predictions=_write(tmp_path / f"{task}.jsonl", records), progress=False
        )
        assert m["task"] == task and m["summary"], task
        assert "## Summary" in (tmp_path / task / "report.md").read_text()
    assert m["summary"]["exact_match"] == 1.0
    # aed at a wider tolerance: the comparison recomputes each run's counts at its own tolerance
    evaluate(
        "aed", tmp_path / "aed_wide", {"tolerance_s": 0.5}, predictions=tmp_path / "aed.jsonl", progress=False
    )
    result = compare_runs([tmp_path / "aed", tmp_path / "aed_wide"], tmp_path / "cmp")
    assert result["headline"] == "event_f1" and result["runs"][1]["vs_base"]["difference"] == 1.0
    result = compare_runs([tmp_path / "s2tt", tmp_path / "s2tt"], tmp_path / "cmp_bleu", names=["a", "b"])
    assert result["headline"] is None  # BLEU: no interval


def test_batch_references_of_the_new_tasks():
    import torch

    labels = BatchLabels(None, 80.0)
    batch = {
        "translation": ["bonjour"],
        "target_language": ["French"],
        "language": ["German"],
        "gender": ["female"],
        "age": ["senior"],
        "events": [[{"label": "click", "onset": torch.tensor(0.5), "offset": 0.6}]],
        "answer_text": ["yes"],
        "answer_type": ["yesno"],
        "control": ["pitch"],
        "target": ["high"],
        "phonemes": [torch.tensor([3, 4, 5])],
    }
    refs = {
        name: TASK_SPECS[name].references_from_batch(batch, 0, labels)
        for name in ("s2tt", "lid", "speaker", "aed", "sqa", "voice_control")
    }
    assert refs["s2tt"] == {"reference": "bonjour", "target_language": "French"}
    assert refs["lid"] == {"reference": "German"}
    assert refs["speaker"] == {"reference_attributes": {"gender": "female", "age": "senior"}}
    assert refs["aed"] == {"reference_events": [{"label": "click", "onset": 0.5, "offset": 0.6}]}
    assert refs["sqa"] == {"reference": "yes", "answer_type": "yesno"}
    assert refs["voice_control"] == {"control": "pitch", "target": "high", "phonemes": [3, 4, 5]}
    json.dumps(refs)


def test_the_emotion_judge_hears_a_sensevoice_tag(monkeypatch):
    """``EmotionJudge`` answers with the encoder's emotion tag as a plain label, from any sample rate."""
    from minmo_lightning.evaluation import asr_judge

    heard = []

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def transcribe(self, audio):
            heard.append((audio.sample_rate, int(audio.lengths[0])))
            return [types.SimpleNamespace(emotion="<|HAPPY|>")]

    monkeypatch.setattr(asr_judge, "load_judge", lambda path: Encoder())
    judge = asr_judge.EmotionJudge("encoder.ckpt")
    assert judge(np.zeros(24000, dtype=np.float32), 24000) == "happy"
    assert heard == [(16000, 16000)]
    monkeypatch.setattr(asr_judge, "default_checkpoint", lambda: None)
    with pytest.raises(asr_judge.JudgeError, match="no emotion judge"):
        asr_judge.EmotionJudge()
