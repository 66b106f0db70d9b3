"""Every eval recipe of the new task families runs from a tiny checkpoint on a tiny built-in corpus."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import lightning as L
import pytest
import yaml
from builders import speaking_minmo
from minmo_lightning.datamodules import synth
from minmo_lightning.datamodules.corpus_plan import SIZES
from minmo_lightning.evaluation.cli import main as evaluate

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "eval"
#: recipe -> the folder it reads and the figure its report must hold
FAMILIES = {
    "s2tt_builtin.yaml": ("s2tt", "bleu"),
    "lid_builtin.yaml": ("lid", "accuracy"),
    "speaker_builtin.yaml": ("speaker", "joint_accuracy"),
    "aed_builtin.yaml": ("aed", "event_f1"),
    "sqa_builtin.yaml": ("sqa", "exact_match"),
    "dialogue_builtin.yaml": ("dialogue", "exact_match"),
    "voice_control_builtin.yaml": ("voice_control", "moved"),
}
SIZE = replace(
    SIZES["tiny"],
    **{f"{family}_train": 2 for family, _ in FAMILIES.values()},
    **{f"{family}_eval": 2 for family, _ in FAMILIES.values()},
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("families")
    tasks = [family for family, _ in FAMILIES.values()]
    synth.build_corpus(out, SIZE, seed=1, tasks=tasks, workers=1, log=lambda _: None)
    return out


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny.ckpt"
    model = speaking_minmo(token2wav=True, max_new_tokens=4)
    trainer = L.Trainer(max_steps=0, default_root_dir=path.parent, logger=False, enable_progress_bar=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(path)
    return path


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_the_eval_recipe_runs_from_a_tiny_checkpoint(name, corpus, checkpoint, tmp_path):
    family, figure = FAMILIES[name]
    recipe = yaml.safe_load((RECIPES / name).read_text())
    recipe["dataset"]["path"] = recipe["data"]["init_args"]["path"] = str(corpus / family)
    config = tmp_path / name
    config.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "report"
    code = evaluate(["--config", str(config), "--ckpt", str(checkpoint), "--out", str(out), "--no-progress"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == family and figure in json.dumps(metrics["summary"])
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == 2


def test_voice_control_scores_its_ceiling_from_the_prepared_readings(corpus, checkpoint, tmp_path):
    from datasets import DatasetDict, Sequence, Value, load_from_disk

    ids = Sequence(Value("int32"))
    splits = DatasetDict(
        {  # the columns two minmo prepare passes add: the styled and the neutral readings' tokens
            name: split.add_column("speech_tokens", [[5] * 40] * len(split), feature=ids).add_column(
                "neutral_speech_tokens", [[7] * 30] * len(split), feature=ids
            )
            for name, split in load_from_disk(str(corpus / "voice_control")).items()
        }
    )
    splits.save_to_disk(str(tmp_path / "voice_control"))
    recipe = yaml.safe_load((RECIPES / "voice_control_builtin.yaml").read_text())
    recipe["dataset"]["path"] = recipe["data"]["init_args"]["path"] = str(tmp_path / "voice_control")
    config = tmp_path / "voice_control.yaml"
    config.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "report"
    assert (
        evaluate(["--config", str(config), "--ckpt", str(checkpoint), "--out", str(out), "--no-progress"])
        == 0
    )
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    for record in records:
        for field in ("ceiling_audio_path", "ceiling_neutral_audio_path"):
            assert (out / record[field]).is_file()
        assert "ceiling_moved" in record  # the pair was measured (None only for emotion without a judge)
        assert (record["ceiling_moved"] is None) == (record["control"] == "emotion")
    summary = json.loads((out / "metrics.json").read_text())["summary"]
    assert "ceiling_moved" in summary
    assert "Ceiling: the dataset's styled reading" in (out / "report.md").read_text()
