"""Hand-computed cases for the ASR, emotion, duplex and latency metrics."""

import math
import random

import pytest
from minmo_lightning.evaluation.asr import render_alignment, rtf, score_asr
from minmo_lightning.evaluation.duplex import (
    DuplexRecord,
    match_events,
    onsets,
    score_duplex,
    tolerance_frames,
)
from minmo_lightning.evaluation.emotion import map_label, parse_label, score_emotion
from minmo_lightning.evaluation.latency import LatencyRecord, distribution, score_latency, theoretical_latency
from minmo_lightning.evaluation.normalizers import get_scheme

NONE = get_scheme("none")

# ----------------------------------------------------------------------------- ASR


def test_wer_each_edit_type():
    # ref a b c d / hyp a x c d e: one substitution (b->x), one insertion (e), 3 hits -> 2/4
    r = score_asr(["a b c d"], ["a x c d e"], scheme=NONE)
    c = r.counts
    assert (c.hits, c.substitutions, c.deletions, c.insertions) == (3, 1, 0, 1)
    assert r.rate == pytest.approx(0.5)
    # deletion: a b c / a c -> 1/3
    r = score_asr(["a b c"], ["a c"], scheme=NONE)
    assert (r.counts.deletions, r.counts.hits) == (1, 2) and r.rate == pytest.approx(1 / 3)
    # jiwer's documented example: one of each -> WER 3/3
    r = score_asr(["short one here"], ["shoe order one"], scheme=NONE)
    c = r.counts
    assert (c.hits, c.substitutions, c.deletions, c.insertions) == (1, 1, 1, 1) and r.rate == 1.0
    assert [op[0] for op in r.utterances[0].alignment] == ["I", "S", "=", "D"]
    assert render_alignment(r.utterances[0]) == "[+shoe] [short->order] one [-here]"


def test_wer_is_corpus_level_not_mean_of_utterances():
    refs = ["hello world", "i like monty python"]
    hyps = ["hello duck", "i like python"]
    r = score_asr(refs, hyps, scheme=NONE)
    assert r.rate == pytest.approx(2 / 6)  # the per-utterance mean would be (1/2 + 1/4) / 2 = 0.375
    assert r.summary()["substitution_rate"] == pytest.approx(1 / 6)


def test_cer_counts_single_spaces_like_jiwer():
    r = score_asr(["hello world"], ["hello duck"], scheme=get_scheme("none", "char"))
    assert r.metric == "cer" and r.rate == pytest.approx(5 / 11)
    # extra spaces are collapsed by normalisation, so they are not errors
    r = score_asr(["a b c"], ["a  b   c "], scheme=get_scheme("none", "char"))
    assert r.rate == 0.0


def test_empty_reference_and_hypothesis_conventions():
    r = score_asr(
        ["hello world", "", "a b"],
        ["hello duck", "extra words here", ""],
        ids=["u1", "u2", "u3"],
        scheme=NONE,
    )
    s = r.summary()
    assert s["skipped_empty_reference"] == 1 and s["skipped_empty_reference_ids"] == ["u2"]
    assert s["insertions_on_empty_references"] == 3
    assert s["empty_hypotheses"] == 1
    assert r.rate == pytest.approx((1 + 2) / 4)  # u1: 1 sub; u3: 2 deletions; u2 excluded
    assert r.utterances[1].counts.rate is None
    everything_empty = score_asr(["", "  "], ["x", ""], scheme=NONE)
    assert everything_empty.rate is None and everything_empty.summary()["wer"] is None


def test_asr_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        score_asr(["a", "b"], ["a"])
    with pytest.raises(TypeError, match="utterance 'x'.*not a string"):
        score_asr(["a"], [None], ids=["x"])


def test_jiwer_agrees_with_torchmetrics_on_normal_inputs():
    from torchmetrics.text import CharErrorRate, WordErrorRate

    rng = random.Random(0)
    vocab = ["the", "a", "cat", "dog", "sat", "on", "mat", "ran", "fast", "slow", "big"]
    refs = [" ".join(rng.choices(vocab, k=rng.randint(3, 12))) for _ in range(60)]
    hyps = []
    for ref in refs:
        words = ref.split()
        for _ in range(rng.randint(0, 3)):
            op = rng.choice("sdi")
            k = rng.randrange(len(words)) if words else 0
            if op == "s" and words:
                words[k] = rng.choice(vocab)
            elif op == "d" and words:
                words.pop(k)
            else:
                words.insert(k, rng.choice(vocab))
        hyps.append(" ".join(words))
    ours_w = score_asr(refs, hyps, scheme=NONE).rate
    ours_c = score_asr(refs, hyps, scheme=get_scheme("none", "char")).rate
    assert ours_w > 0.05
    assert ours_w == pytest.approx(float(WordErrorRate()(hyps, refs)), abs=1e-6)  # torchmetrics: hyp first
    assert ours_c == pytest.approx(float(CharErrorRate()(hyps, refs)), abs=1e-6)


def test_normalizers():
    en = get_scheme("whisper_english")
    assert en.normalize("The colour is twenty-five percent! Uh, I won't.") == "the color is 25% i will not"
    assert score_asr(["Mr. Smith's colour"], ["mister smith is color"], scheme=en).rate == 0.0
    basic = get_scheme("basic")
    assert basic.normalize("Héllo, WÖRLD! [noise] ऋषि") == "héllo wörld ऋषि"  # marks kept
    zh = get_scheme("chinese")
    assert zh.unit == "char" and zh.normalize("<|zh|>你好，世界！ ＡＢＣ 1２") == "你好世界abc12"
    assert score_asr(["你好，世界"], ["你好 世介"], scheme=zh).rate == pytest.approx(1 / 4)
    mixed = get_scheme("mixed")
    assert mixed.tokens("我喜欢 Python 编程, it's fun!") == [
        "我",
        "喜",
        "欢",
        "python",
        "编",
        "程",
        "it's",
        "fun",
    ]
    r = score_asr(["我喜欢python"], ["我爱Python"], scheme=mixed)
    assert r.metric == "mer" and r.rate == pytest.approx(2 / 4)
    with pytest.raises(ValueError, match="unknown normalizer 'klingon'"):
        get_scheme("klingon")


def test_rtf():
    out = rtf(2.0, 10.0)
    assert out["rtf"] == pytest.approx(0.2) and out["rtfx"] == pytest.approx(5.0)
    with pytest.raises(ValueError, match="audio duration must be positive"):
        rtf(1.0, 0.0)


# ----------------------------------------------------------------------------- emotion


def test_ua_vs_wa_on_an_imbalanced_set():
    refs = ["neutral"] * 8 + ["angry"] * 2
    preds = ["neutral"] * 10
    s = score_emotion(refs, preds, labels=["angry", "neutral"]).summary()
    assert s["wa"] == pytest.approx(0.8) and s["micro_f1"] == pytest.approx(0.8)
    assert s["ua"] == pytest.approx(0.5)
    f1_neutral = 2 * 8 / (10 + 8)
    assert s["macro_f1"] == pytest.approx(f1_neutral / 2)
    assert s["weighted_f1"] == pytest.approx(f1_neutral * 0.8)
    assert s["per_class"]["angry"]["recall"] == 0.0 and s["per_class"]["neutral"][
        "precision"
    ] == pytest.approx(0.8)
    assert s["confusion"] == [[0, 2, 0], [0, 8, 0]]


def test_unparseable_predictions_count_as_wrong():
    s = score_emotion(["a", "a", "b"], ["a", None, "b"]).summary()
    assert s["n_unparseable"] == 1
    assert s["wa"] == pytest.approx(2 / 3) and s["ua"] == pytest.approx(0.75)
    assert s["micro_f1"] == pytest.approx(2 * 2 / (6 - 1))
    assert s["confusion"] == [[1, 0, 1], [0, 1, 0]]


def test_emotion_label_sets_must_agree():
    with pytest.raises(ValueError, match=r"predictions contain \['joy'\].*utterances \['u2'\]"):
        score_emotion(["happy", "sad"], ["happy", "joy"], ids=["u1", "u2"])
    with pytest.raises(ValueError, match=r"references contain \['fru'\]"):
        score_emotion(["fru"], ["sad"], labels=["sad"])
    with pytest.raises(ValueError, match="reference list is empty"):
        score_emotion([], [])


def test_label_mapping_and_parsing():
    assert map_label("exc", "iemocap") == "happy" and map_label("HAP", "crema-d") == "happy"
    assert map_label("Excited", "iemocap") == "happy" and map_label("angry", "crema-d") == "angry"
    assert map_label("joy", "meld") == "happy"
    with pytest.raises(ValueError, match="'fru' is not in the iemocap label map"):
        map_label("fru", "iemocap")
    labels = ["angry", "happy", "neutral", "sad"]
    assert parse_label("The speaker sounds Happy.", labels) == "happy"
    assert parse_label("joyful", labels) == "happy"
    assert parse_label("happy or sad", labels) is None
    assert parse_label("", labels) is None


# ----------------------------------------------------------------------------- duplex (MinMo style)


def test_onsets_ignore_padding():
    assert onsets([0, 1, 1, 0, 1, -100, -100], 1).tolist() == [1, 4]
    assert onsets([2, 2, 0, 2], 2).tolist() == [0, 3]


def test_f1_at_k_boundaries():
    assert match_events([10], [15], k=5) == [(10, 15)]  # |offset| == K is a hit
    assert match_events([10], [15], k=4) == []
    assert match_events([10], [5], k=5) == [(10, 5)]
    assert match_events([10], [7], k=5, window="after") == []
    assert match_events([10, 12], [11], k=5) == [(10, 11)]  # one-to-one
    assert match_events([10, 30], [9, 31, 60], k=2) == [(10, 9), (30, 31)]
    assert tolerance_frames(400, "ms", 80) == 5.0
    assert tolerance_frames(100, "ms", 80) == 1.25


def test_score_duplex_hand_computed():
    #       frame: 0  1  2  3  4  5  6  7  8  9
    ref = [0, 0, 1, 1, 0, 0, 2, 0, 0, 1]
    pred = [0, 0, 0, 1, 0, 2, 0, 0, 2, 0]
    rec = DuplexRecord("d1", ref, pred, backchannels=[(7, 8)])
    out = score_duplex([rec], tolerances=(0, 1), unit="frames", frame_ms=80)
    a = out["assistant_turn_taking"]
    # reference respond onsets {2, 9}, predicted {3}: K=0 nothing; K=1 one hit (offset +1)
    assert a["at_k"]["0"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "tp": 0, "fp": 1, "fn": 2}
    assert a["at_k"]["1"]["f1"] == pytest.approx(2 / 3) and a["at_k"]["1"]["precision"] == 1.0
    assert a["offsets_frames"] == [1] and out["response_latency_ms"] == pytest.approx(80.0)
    u = out["user_turn_taking"]
    # reference stop onset {6}, predicted {5, 8}: K=1 matches 5 (offset -1), 8 is a false positive
    assert u["at_k"]["1"] == {
        "precision": 0.5,
        "recall": 1.0,
        "f1": pytest.approx(2 / 3),
        "tp": 1,
        "fp": 1,
        "fn": 0,
    }
    assert u["mean_offset_frames"] == -1.0 and u["mean_abs_offset_frames"] == 1.0
    # the back-channel at frames 7-8 sees a predicted stop at 8: handled wrongly
    assert out["backchannel"] == {"accuracy": 0.0, "correct": 0, "n": 1}
    assert out["pause"] == {"rate": None, "taken": 0, "n": 0, "by_kind": {}}


def test_pause_takeover_counts_pauses_with_a_respond_onset_inside():
    #       frame: 0  1  2  3  4  5  6  7  8  9
    pred = [0, 0, 1, 1, 0, 0, 0, 0, 1, 0]
    kinds = ["mid_sentence", "mid_sentence", "between_sentences"]
    rec = DuplexRecord("d", [0] * 10, pred, pauses=[(1, 2), (3, 4), (6, 8)], pause_kinds=kinds)
    # (1, 2) holds the onset at 2; (3, 4) only the respond run that started before it; (6, 8) the onset at 8
    pause = score_duplex([rec], tolerances=(1,))["pause"]
    assert (pause["rate"], pause["taken"], pause["n"]) == (pytest.approx(2 / 3), 2, 3)
    assert pause["by_kind"] == {
        "between_sentences": {"rate": 1.0, "taken": 1, "n": 1},
        "mid_sentence": {"rate": 0.5, "taken": 1, "n": 2},
    }


def test_score_duplex_in_ms_and_bad_lengths():
    rec = DuplexRecord("d", [0, 1, 0, 0, 0], [0, 0, 0, 1, 0], backchannels=[(0, 1)])
    out = score_duplex([rec], tolerances=(160,), unit="ms", frame_ms=80)
    assert out["assistant_turn_taking"]["at_k"]["160"]["tp"] == 1
    assert out["backchannel"]["accuracy"] == 1.0
    assert (
        score_duplex([rec], tolerances=(100,), unit="ms")["assistant_turn_taking"]["at_k"]["100"]["tp"] == 0
    )
    with pytest.raises(ValueError, match="5 reference frames but 4 predicted frames"):
        DuplexRecord("d", [0] * 5, [0] * 4)


# ----------------------------------------------------------------------------- latency


def test_theoretical_latency_and_comparison():
    assert theoretical_latency(0.02, 0.005, 0.004) == pytest.approx(5 * 0.02 + 15 * 0.005 + 15 * 0.004)
    records = [
        LatencyRecord("t1", 0.30, {"llm": 0.1, "voice_token_lm": 0.1}, 0.02, 0.005, 0.004, 1.0, 4.0),
        LatencyRecord("t2", 0.40, {"llm": 0.2, "voice_token_lm": 0.1}, 0.02, 0.005, 0.004, 1.0, 4.0),
    ]
    out = score_latency(records)
    assert out["first_packet_s"]["p50"] == pytest.approx(0.35) and out["first_packet_s"]["max"] == 0.4
    assert out["components_s"]["llm"]["mean"] == pytest.approx(0.15)
    assert out["components_s"]["other"]["mean"] == pytest.approx(0.1)
    t = out["theory"]
    assert t["theoretical_s"] == pytest.approx(0.235) and t["overhead_s"] == pytest.approx(0.35 - 0.235)
    assert out["rtf"] == pytest.approx(0.25) and out["rtfx"] == pytest.approx(4.0)
    with pytest.raises(ValueError, match="components sum to 0.5000 s, more than first_packet_s"):
        LatencyRecord("bad", 0.3, {"llm": 0.5})


def test_percentiles():
    d = distribution([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    assert d["p50"] == pytest.approx(5.5) and d["p90"] == pytest.approx(9.1)
    assert d["std"] == pytest.approx(math.sqrt(8.25))
    assert distribution([]) == {"n": 0}
