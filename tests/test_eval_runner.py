"""The evaluation runner: predictions mode per task, reports with plots, resumable model runs, bad inputs."""

import inspect
import json
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from minmo_lightning.evaluation.cli import main
from minmo_lightning.evaluation.report import load_baselines
from minmo_lightning.evaluation.runner import evaluate, read_jsonl
from minmo_lightning.evaluation.tasks import TASK_SPECS, BatchLabels

from minmo_lightning.contracts import AudioBatch
from minmo_lightning.registry import resolve_class

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "eval"


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def png_ok(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 2000


# ------------------------------------------------------------------------------ predictions mode


def test_asr_predictions_report(tmp_path):
    preds = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {
                "id": "a",
                "reference": "The cat sat on the mat.",
                "hypothesis": "the cat sat on a mat",
                "processing_s": 0.5,
                "audio_s": 2.0,
            },
            {
                "id": "b",
                "reference": "Hello world",
                "hypothesis": "hello",
                "processing_s": 0.5,
                "audio_s": 2.0,
            },
        ],
    )
    out = tmp_path / "report"
    assert (
        main(["--predictions", str(preds), "--task", "asr", "--out", str(out), "--crosscheck-torchmetrics"])
        == 0
    )
    m = json.loads((out / "metrics.json").read_text())
    assert m["summary"]["wer"] == pytest.approx(2 / 8)  # 1 substitution + 1 deletion over 8 words
    assert m["summary"]["rtf"] == pytest.approx(0.25)
    assert m["metrics"]["crosscheck_torchmetrics"]["agrees"] is True
    assert (
        m["versions"]["jiwer"]
        and len(m["config_hash"]) == 16
        and m["settings"]["normalizer"] == "whisper_english"
    )
    rows = read_jsonl(out / "predictions.jsonl")
    assert rows[0]["alignment_text"] == "the cat sat on [the->a] mat"
    assert rows[1]["deletions"] == 1 and rows[1]["alignment"] == [["=", 0, 1, 0, 1], ["D", 1, 2, 1, 1]]
    report = (out / "report.md").read_text()
    assert "| WER |" in report and "![per-utterance error rate](utterance_error_rate.png)" in report
    assert png_ok(out / "utterance_error_rate.png") and png_ok(out / "error_types.png")


def test_emotion_predictions_with_references_and_baselines(tmp_path):
    refs = write_jsonl(
        tmp_path / "refs.jsonl",
        [{"id": str(i), "reference": r} for i, r in enumerate(["neu", "neu", "exc", "hap", "ang", "sad"])],
    )
    preds = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"id": "0", "prediction_text": "Neutral."},
            {"id": "1", "prediction_text": "sad"},
            {"id": "2", "prediction_text": "happy"},
            {"id": "3", "prediction_text": "I cannot tell"},
            {"id": "4", "prediction_text": "anger"},
            {"id": "5", "prediction_text": "sad"},
        ],
    )
    out = tmp_path / "emo"
    m = evaluate(
        "emotion",
        out,
        {"label_map": "iemocap", "labels": ["neutral", "happy", "sad", "angry"]},
        predictions=preds,
        references=refs,
        baselines=str(RECIPES / "baselines_minmo.yaml"),
        baseline_key="emotion/iemocap",
        progress=False,
    )
    s = m["summary"]
    assert s["wa"] == pytest.approx(4 / 6)
    assert s["ua"] == pytest.approx((1 / 2 + 1 / 2 + 1 + 1) / 4)
    assert m["metrics"]["n_unparseable"] == 1
    report = (out / "report.md").read_text()
    assert "![confusion matrix](confusion.png)" in report and png_ok(out / "confusion.png")
    assert "| p (this run) | 75.00 | 66.67 | 75.00 |" in report  # ours in percent, beside the published rows
    assert "| MinMo (arXiv 2501.06282, Table 11) | 74.90 | 75.70 | 74.20 |" in report


def test_duplex_and_latency_predictions(tmp_path):
    preds = write_jsonl(
        tmp_path / "d.jsonl",
        [
            {
                "id": "s1",
                "reference_labels": [0, 0, 1, 1, 0, 0, 2, 0, 0, 0],
                "predicted_labels": [0, 0, 0, 1, 0, 2, 0, 0, 0, 0],
                "backchannels": [[8, 9]],
                "first_packet_s": 0.31,
                "components_s": {"llm": 0.1},
            },
            {
                "id": "s2",
                "reference_labels": [0, 1, 0, 0],
                "predicted_labels": [0, 1, 0, 0],
                "first_packet_s": 0.29,
            },
        ],
    )
    m = evaluate("duplex", tmp_path / "dx", {"tolerances": [0, 1]}, predictions=preds, progress=False)
    assert m["summary"]["assistant_f1@1"] == pytest.approx(1.0)
    assert m["summary"]["assistant_f1@0"] == pytest.approx(0.5)
    assert m["summary"]["backchannel_accuracy"] == 1.0
    assert m["metrics"]["latency"]["first_packet_s"]["n"] == 2
    assert png_ok(tmp_path / "dx" / "timeline.png") and png_ok(tmp_path / "dx" / "onset_offsets.png")
    assert png_ok(tmp_path / "dx" / "latency_histograms.png")

    # respond probabilities: the report sweeps the threshold (0.5 finds the turn on time, 0.9 misses it,
    # 0.2 answers a frame early and once more where the reference has no turn)
    swept = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {
                "id": "s1",
                "reference_labels": [0, 0, 0, 1, 1, 0, 0, 0],
                "predicted_labels": [0, 0, 0, 1, 1, 0, 0, 0],
                "respond_probability": [0.0, 0.0, 0.3, 0.6, 0.6, 0.0, 0.3, 0.0],
            }
        ],
    )
    m = evaluate(
        "duplex",
        tmp_path / "sw",
        {"tolerances": [0], "respond_thresholds": [0.2, 0.5, 0.9]},
        predictions=swept,
        progress=False,
    )
    by_threshold = {r["threshold"]: r for r in m["metrics"]["respond_threshold_sweep"]}
    assert by_threshold[0.5]["f1"] == 1.0 and by_threshold[0.5]["predicted_events"] == 1
    assert by_threshold[0.9]["predicted_events"] == 0 and by_threshold[0.2]["predicted_events"] == 2
    assert by_threshold[0.2]["f1"] == 0.0
    assert png_ok(tmp_path / "sw" / "respond_threshold.png")

    lat = write_jsonl(
        tmp_path / "l.jsonl",
        [
            {
                "id": f"t{k}",
                "first_packet_s": 0.3 + 0.01 * k,
                "components_s": {"llm": 0.1, "token2wav": 0.1},
                "d_llm_s": 0.02,
                "d_lm_s": 0.005,
                "d_syn_s": 0.004,
            }
            for k in range(20)
        ],
    )
    m = evaluate("latency", tmp_path / "lat", predictions=lat, progress=False)
    assert m["metrics"]["theory"]["theoretical_s"] == pytest.approx(0.235)
    assert "5*d_llm + 15*d_lm + 15*d_syn" in (tmp_path / "lat" / "report.md").read_text()
    assert png_ok(tmp_path / "lat" / "first_packet.png")


def test_bad_inputs_name_the_problem(tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(["--predictions", str(empty), "--task", "asr", "--out", str(tmp_path / "o")]) == 2
    assert "empty.jsonl is empty: no predictions to score" in capsys.readouterr().err
    with pytest.raises(ValueError, match="empty"):
        evaluate("asr", tmp_path / "o", predictions=empty, progress=False)
    preds = write_jsonl(tmp_path / "p.jsonl", [{"id": "a", "hypothesis": "x"}])
    refs = write_jsonl(tmp_path / "r.jsonl", [{"id": "a", "reference": "x"}, {"id": "b", "reference": "y"}])
    with pytest.raises(ValueError, match=r"missing prediction ids: 1 of 2 .*\['b'\]"):
        evaluate("asr", tmp_path / "o", predictions=preds, references=refs, progress=False)
    with pytest.raises(ValueError, match=r"lacks \['reference'\]"):
        evaluate("asr", tmp_path / "o", predictions=preds, progress=False)
    emo = write_jsonl(tmp_path / "e.jsonl", [{"id": "a", "reference": "happy", "prediction": "joy"}])
    with pytest.raises(ValueError, match=r"label sets differ: predictions contain \['joy'\]"):
        evaluate("emotion", tmp_path / "o", predictions=emo, progress=False)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": "a"}\n{"id": \n{"id": "c"}\n')
    with pytest.raises(ValueError, match="broken.jsonl:2 is not valid JSON"):
        evaluate("asr", tmp_path / "o", predictions=broken, progress=False)
    no_id = write_jsonl(tmp_path / "noid.jsonl", [{"reference": "x", "hypothesis": "x"}])
    with pytest.raises(ValueError, match="record 1 has no 'id'"):
        evaluate("asr", tmp_path / "o", predictions=no_id, progress=False)
    dup = write_jsonl(tmp_path / "dup.jsonl", [{"id": "a", "reference": "x", "hypothesis": "x"}] * 2)
    with pytest.raises(ValueError, match="'a' appears twice"):
        evaluate("asr", tmp_path / "o", predictions=dup, progress=False)


def test_task_specs_are_validated(tmp_path):
    assert all(name == spec.name for name, spec in TASK_SPECS.items())
    with pytest.raises(
        ValueError, match="unknown task 'asrr'; choose one of asr, emotion, duplex, tts, s2s, latency"
    ):
        evaluate("asrr", tmp_path, predictions=tmp_path / "unused.jsonl")
    # latency records come from a latency benchmark: no model mode, no dataset column
    with pytest.raises(ValueError, match="task 'latency' cannot run a model"):
        TASK_SPECS["latency"].references_from_batch({}, 0, BatchLabels(None, 80.0))
    refs = write_jsonl(tmp_path / "refs.jsonl", [{"id": "a", "first_packet_s": 0.5}])
    preds = write_jsonl(tmp_path / "preds.jsonl", [{"id": "a"}])
    assert evaluate("latency", tmp_path / "out", predictions=preds, references=refs)["summary"]
    (tmp_path / "folder").mkdir()
    with pytest.raises(ValueError, match="task 'latency' reads its references from the records"):
        evaluate("latency", tmp_path / "out2", predictions=preds, references=tmp_path / "folder")


def test_references_from_a_saved_hf_dataset(tmp_path):
    import datasets

    ds = datasets.Dataset.from_dict(
        {"id": ["u1", "u2"], "label": [0, 1]},
        features=datasets.Features(
            {"id": datasets.Value("string"), "label": datasets.ClassLabel(names=["ang", "hap"])}
        ),
    )
    datasets.DatasetDict({"session1": ds, "session2": ds}).save_to_disk(str(tmp_path / "iemocap"))
    preds = write_jsonl(
        tmp_path / "p.jsonl", [{"id": "u1", "prediction": "angry"}, {"id": "u2", "prediction": "sad"}]
    )
    m = evaluate(
        "emotion",
        tmp_path / "o",
        {"label_map": "iemocap", "labels": ["angry", "happy", "sad"]},
        predictions=preds,
        references=tmp_path / "iemocap",
        dataset={"split": "session1", "reference_column": "label"},
        progress=False,
    )
    assert m["summary"]["wa"] == 0.5  # ClassLabel ids -> ang/hap -> angry/happy; u2 predicted sad
    with pytest.raises(ValueError, match=r"has splits \['session1', 'session2'\]; choose one with --split"):
        evaluate(
            "emotion", tmp_path / "o2", predictions=preds, references=tmp_path / "iemocap", progress=False
        )


# ------------------------------------------------------------------------------ model mode


class EvalTinyData(L.LightningDataModule):
    """Eight 1-second clips in batches of 3; reference text is the id spelled out."""

    def __init__(self, n: int = 8, batch_size: int = 3):
        super().__init__()
        self.n, self.batch_size = n, batch_size

    def test_dataloader(self):
        items = [f"utt{k}" for k in range(self.n)]

        def collate(ids):
            waves = [torch.full((16000,), 0.1 * (k + 1)) for k, _ in enumerate(ids)]
            return {
                "ids": ids,
                "audio": AudioBatch.from_list(waves, 16000),
                "text": [f"word {i}" for i in ids],
            }

        return torch.utils.data.DataLoader(items, batch_size=self.batch_size, collate_fn=collate)


class EvalTinyAsr(L.LightningModule):
    calls: list = []
    fail_at: int | None = None

    def __init__(self, suffix: str = ""):
        super().__init__()
        self.suffix = suffix
        self.layer = torch.nn.Linear(1, 1)

    def predict_step(self, batch, batch_idx):
        if EvalTinyAsr.fail_at == batch_idx:
            raise KeyboardInterrupt("simulated interruption")
        EvalTinyAsr.calls.append(batch_idx)
        return [{"id": i, "hypothesis": f"word {i}{self.suffix}"} for i in batch["ids"]]


def test_model_run_is_resumable_and_deterministic(tmp_path):
    recipe = {
        "task": "asr",
        "model": {"class_path": "EvalTinyAsr", "init_args": {"suffix": " extra"}},
        "data": {"class_path": "EvalTinyData"},
    }
    out = tmp_path / "run"
    EvalTinyAsr.calls, EvalTinyAsr.fail_at = [], 2
    with pytest.raises(KeyboardInterrupt):
        evaluate("asr", out, {"normalizer": "none"}, recipe=recipe, progress=False)
    assert EvalTinyAsr.calls == [0, 1] and len(read_jsonl(out / "predictions.jsonl")) == 6
    with (out / "predictions.jsonl").open("a") as f:
        f.write('{"id": "utt6", "hyp')  # a write cut short by the crash
    EvalTinyAsr.calls, EvalTinyAsr.fail_at = [], None
    m = evaluate("asr", out, {"normalizer": "none"}, recipe=recipe, progress=False)
    assert EvalTinyAsr.calls == [2]  # batches 0 and 1 were not recomputed
    assert m["inference"]["skipped_batches"] == 2 and m["inference"]["computed_batches"] == 1
    assert m["summary"]["wer"] == pytest.approx(8 / 16)  # one inserted word per 2-word reference
    rows = read_jsonl(out / "predictions.jsonl")
    assert [r["id"] for r in rows] == [f"utt{k}" for k in range(8)]
    assert all(r["audio_s"] == 1.0 and r["processing_s"] >= 0 for r in rows)
    first = {r["id"]: r["hypothesis"] for r in rows}
    EvalTinyAsr.calls = []
    again = evaluate("asr", tmp_path / "again", {"normalizer": "none"}, recipe=recipe, progress=False)
    assert {r["id"]: r["hypothesis"] for r in read_jsonl(tmp_path / "again" / "predictions.jsonl")} == first
    assert again["summary"]["wer"] == m["summary"]["wer"]
    other = {**recipe, "model": {"class_path": "EvalTinyAsr", "init_args": {"suffix": ""}}}
    with pytest.raises(ValueError, match="holds predictions from another config"):
        evaluate("asr", out, {"normalizer": "none"}, recipe=other, progress=False)


def test_eval_recipes_parse():
    files = sorted(RECIPES.glob("*.yaml"))
    assert len(files) >= 6
    for path in files:
        data = yaml.safe_load(path.read_text())
        if path.name.startswith("baselines"):
            assert all("systems" in entry for entry in data.values())
            continue
        assert data["task"] in TASK_SPECS, path
        assert data["dataset"]["path"] and isinstance(data["metrics"], dict), path  # {}: the task's defaults
        # the named classes exist and take the recipe's arguments
        data_cls = resolve_class(data["data"]["class_path"], L.LightningDataModule)
        accepted = {p for cls in data_cls.__mro__[:-1] for p in inspect.signature(cls.__init__).parameters}
        assert set(data["data"]["init_args"]) <= accepted, path
        resolve_class(data["model"]["class_path"], L.LightningModule)
        if "baselines" in data:
            load_baselines(data["baselines"]["file"], data["baselines"]["key"])


class EvalTinyDuplexData(L.LightningDataModule):
    """Two sessions at 12.5 Hz: labels padded with -100, one user back-channel at 0.8-1.2 s."""

    frame_rate = 12.5

    def test_dataloader(self):
        labels = torch.tensor(
            [[0, 0, 1, 0, 0, 0, 2, 0, 0, 0], [0, 1, 0, 0, -100, -100, -100, -100, -100, -100]]
        )
        batch = {
            "ids": ["s1", "s2"],
            "user_audio": AudioBatch(torch.zeros(2, 16000), torch.tensor([16000, 6400]), 16000),
            "frame_labels": labels,
            "frame_lengths": torch.tensor([10, 4]),
            "events": [
                [{"type": "backchannel", "start": 0.8, "end": 1.2}, {"type": "turn_end", "start": 0.16}],
                [],
            ],
        }
        return [batch]


class EvalTinyDuplex(L.LightningModule):
    def predict_step(self, batch, batch_idx):
        # respond one frame late everywhere; returns the padded width, which the runner cuts at frame_lengths
        shifted = torch.roll(batch["frame_labels"].clamp(min=0), 1, dims=1)
        return [{"id": i, "predicted_labels": row} for i, row in zip(batch["ids"], shifted)]


class EvalTinyEmotionData(L.LightningDataModule):
    emotion_labels = ["neutral", "happy", "sad", "angry"]

    def test_dataloader(self):
        return [
            {
                "ids": ["e1", "e2", "e3"],
                "audio": AudioBatch(torch.zeros(3, 8000), torch.full((3,), 8000), 16000),
                "emotion": torch.tensor([1, 2, 3]),
            }
        ]


class EvalTinyEmotion(L.LightningModule):
    def predict_step(self, batch, batch_idx):
        return [
            {"id": i, "prediction_text": t} for i, t in zip(batch["ids"], ["Happy!", "sadness", "no idea"])
        ]


def test_emotion_closed_set_picks_are_scored_beside_the_generated_answers(tmp_path):
    rows = [
        {"id": "0", "reference": "happy", "prediction_text": "hapy", "scored_prediction": "happy"},
        {"id": "1", "reference": "sad", "prediction_text": "sad", "scored_prediction": "sad"},
        {"id": "2", "reference": "angry", "prediction_text": "sad", "scored_prediction": "neutral"},
        {"id": "3", "reference": "neutral", "prediction_text": "neutral", "scored_prediction": "neutral"},
    ]
    out = tmp_path / "emo"
    labels = ["neutral", "happy", "sad", "angry"]
    m = evaluate(
        "emotion",
        out,
        {"labels": labels},
        predictions=write_jsonl(tmp_path / "p.jsonl", rows),
        progress=False,
    )
    assert m["summary"]["wa"] == pytest.approx(2 / 4)  # generated: "hapy" is unparseable, one wrong
    assert m["summary"]["closed_set_wa"] == pytest.approx(3 / 4)
    assert m["summary"]["closed_set_ua"] == pytest.approx((1 + 1 + 1 + 0) / 4)
    assert "## Closed set (label scoring)" in (out / "report.md").read_text()


def test_model_mode_duplex_and_emotion_take_references_from_the_batch(tmp_path):
    recipe = {"model": {"class_path": "EvalTinyDuplex"}, "data": {"class_path": "EvalTinyDuplexData"}}
    m = evaluate("duplex", tmp_path / "dx", {"tolerances": [0, 1]}, recipe=recipe, progress=False)
    rows = read_jsonl(tmp_path / "dx" / "predictions.jsonl")
    assert rows[0]["backchannels"] == [[10, 15]]  # 0.8 s and 1.2 s at 80 ms frames
    assert len(rows[1]["predicted_labels"]) == 4 and rows[1]["reference_labels"] == [0, 1, 0, 0]
    assert m["summary"]["assistant_f1@0"] == 0.0 and m["summary"]["assistant_f1@1"] == 1.0
    assert m["summary"]["response_latency_ms"] == pytest.approx(80.0)
    with pytest.raises(ValueError, match="labels frames at 12.5 Hz .* frame_ms 40"):
        evaluate("duplex", tmp_path / "dx40", {"frame_ms": 40.0}, recipe=recipe, progress=False)

    recipe = {"model": {"class_path": "EvalTinyEmotion"}, "data": {"class_path": "EvalTinyEmotionData"}}
    m = evaluate(
        "emotion",
        tmp_path / "emo",
        {"labels": EvalTinyEmotionData.emotion_labels},
        recipe=recipe,
        progress=False,
    )
    assert m["summary"]["wa"] == pytest.approx(2 / 3) and m["metrics"]["n_unparseable"] == 1
    assert [r["reference_label"] for r in read_jsonl(tmp_path / "emo" / "predictions.jsonl")] == [
        "happy",
        "sad",
        "angry",
    ]
