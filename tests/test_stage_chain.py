"""The tiny stage-1 recipe chain runs end to end: 1a -> 1b -> 1c, each loading the previous checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from minmo_lightning import demo
from minmo_lightning.ablate import load_ablation
from minmo_lightning.cli import lightning_main, main

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "tiny"
CHAIN = ("stage1a_prealign", "stage1b_fullalign", "stage1c_sft", "stage4_duplex")


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("corpus")
    args = [
        "synth-data",
        "--out",
        str(out),
        "--size",
        "tiny",
        "--tasks",
        "asr,emotion,tts,s2s,duplex,s2tt,lid,speaker,aed,sqa,dialogue,turn_pieces",
        "--workers",
        "1",
    ]
    args += ["--duplex-min-seconds", "6", "--duplex-max-seconds", "9"]
    assert main(args) == 0
    return out


def _recipe(name: str, corpus: Path, runs: Path) -> Path:
    recipe = yaml.safe_load((RECIPES / f"{name}.yaml").read_text())
    tag = name.split("_")[0]
    recipe["trainer"].update(
        {"max_steps": 1, "val_check_interval": 1, "limit_val_batches": 1, "default_root_dir": str(runs / tag)}
    )
    recipe["trainer"]["callbacks"][0]["init_args"]["dirpath"] = str(runs / tag / "checkpoints")
    init = recipe["model"]["init_args"]["init_checkpoint"]
    if init:  # the stage before it in CHAIN (stage 4 starts from 1c here: its speech blocks keep their init)
        previous = CHAIN[CHAIN.index(name) - 1].split("_")[0]
        recipe["model"]["init_args"]["init_checkpoint"] = str(runs / previous / "checkpoints" / "last.ckpt")
    data = recipe["data"]["init_args"]
    for source in data.get("datamodules", [recipe["data"]]):  # a mixture lists its sources
        task = Path(source["init_args"]["path"]).name
        # a two-channel session of up to 9 s counts 18 s; a spoken-QA passage and question last up to ~15 s
        budget = {"duplex": 40.0, "sqa": 30.0}.get(task, 8.0)
        source["init_args"].update({"path": str(corpus / task), "max_seconds_per_batch": budget})
    recipe["model"]["init_args"]["voice_encoder"]["init_args"]["cmvn_file"] = str(corpus / "asr" / "am.mvn")
    recipe["model"]["init_args"]["max_new_tokens"] = 4
    path = runs / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_tiny_stage1_chain(tiny_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    previous = None
    for name in CHAIN:
        lightning_main(["fit", "--config", str(_recipe(name, tiny_corpus, tmp_path))])
        checkpoint = tmp_path / name.split("_")[0] / "checkpoints" / "last.ckpt"
        assert checkpoint.is_file(), f"{name} wrote no last.ckpt"
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        if previous is not None:
            assert state["hyper_parameters"]["init_checkpoint"] == str(previous)
        previous = checkpoint
    assert any(key.startswith("duplex_predictor.") for key in state["state_dict"]), (
        "stage 4 adds the predictor"
    )
    assert not any("lora_" in key for key in state["state_dict"]), "stage 4 froze the LLM: 1c's LoRA merged"

    recipe = yaml.safe_load((RECIPES.parent / "eval" / "duplex_builtin.yaml").read_text())
    recipe["data"]["init_args"]["path"] = str(tiny_corpus / "duplex")
    recipe["output_dir"] = str(tmp_path / "eval")
    config = tmp_path / "duplex_eval.yaml"
    config.write_text(yaml.safe_dump(recipe))
    # the VAD baseline as `minmo ablate duplex_predictor` swaps it in: the base's checkpoint, the block replaced
    vad = next(v for v in load_ablation("duplex_predictor").variants if v.name == "vad")
    swap = f"--variants.{vad.name}={json.dumps(vad.swaps('tiny'))}"
    assert main(["evaluate", "--config", str(config), "--ckpt", str(previous), swap]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert {"assistant_f1@240", "backchannel_accuracy"} <= set(metrics["summary"])
    assert set(metrics["variants"]) == {"vad"} and "assistant_f1@240" in metrics["variants"]["vad"]
    assert "Variants" in (tmp_path / "eval" / "report.md").read_text()

    monkeypatch.setattr(demo, "DATA", tiny_corpus)  # the demo converses over the corpus's test dialogues
    chats = demo.converse(previous, tmp_path / "chat", 1)
    (dialogue,) = [p for p in chats.iterdir() if p.is_dir()]
    assert {"input.wav", "output.wav", "events.json", "timeline.png"} <= {p.name for p in dialogue.iterdir()}
    log = json.loads((dialogue / "events.json").read_text())  # it talks as `minmo chat` does
    assert log["predictor"] == "SilenceBackstop" and log["backed_predictor"] == "TransformerDuplexPredictor"


def test_block_trained_alone_reloads_through_ckpt_path(tiny_corpus: Path, tmp_path: Path) -> None:
    """`minmo test --ckpt_path` on a block's own run rebuilds it from the checkpoint's hyperparameters."""
    recipe = yaml.safe_load((RECIPES.parent / "components" / "voice_encoder_ctc.yaml").read_text())
    for source in recipe["data"]["init_args"]["datamodules"]:  # ASR, emotion and TTS sets of the tiny corpus
        task = Path(source["init_args"]["path"]).name
        source["init_args"].update({"path": str(tiny_corpus / task), "max_seconds_per_batch": 8.0})
    recipe["model"]["init_args"]["cmvn_file"] = str(tiny_corpus / "asr" / "am.mvn")  # synth-data writes it
    config = tmp_path / "voice_encoder_ctc.yaml"
    config.write_text(yaml.safe_dump(recipe))
    common = ["--config", str(config), "--trainer.default_root_dir", str(tmp_path)]
    fit = ["fit", *common, "--trainer.max_steps", "1", "--trainer.max_time", "null"]
    lightning_main([*fit, "--trainer.limit_val_batches", "1", "--trainer.val_check_interval", "1"])
    checkpoint = next(tmp_path.rglob("last.ckpt"))
    cli = lightning_main(
        ["test", *common, "--ckpt_path", str(checkpoint), "--trainer.limit_test_batches", "1"]
    )
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    tested = cli.model.state_dict()
    assert saved.keys() == tested.keys()
    assert all(torch.equal(tested[k].cpu(), v) for k, v in saved.items()), (
        "test did not run the saved weights"
    )
    assert any(k.startswith("test") for k in cli.trainer.callback_metrics), cli.trainer.callback_metrics
