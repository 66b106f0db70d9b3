"""The `minmo` command: every recipe parses and instantiates; bad recipe input names the key and the fix."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import yaml
from minmo_lightning.components.voice_encoder.cmvn import write_cmvn

from minmo_lightning.cli import lightning_main, main

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
#: eval/ holds evaluation recipes, ablations/ manifests of variants of a training recipe, trainer/ the pieces
#: that set a stage's strategy (tests/test_distributed.py)
TRAINING_RECIPES = sorted(
    p
    for p in RECIPES.rglob("*.yaml")
    if not {"eval", "ablations", "trainer"} & set(p.relative_to(RECIPES).parts)
)
TINY = RECIPES / "tiny" / "stage1a_prealign.yaml"


def _with_identity_cmvn(node: object, tmp_path: Path) -> object:
    """Tiny recipes read the corpus statistics that `minmo synth-data` writes; a fresh checkout has no corpus."""
    if isinstance(node, dict):
        out = {k: _with_identity_cmvn(v, tmp_path) for k, v in node.items()}
        if isinstance(out.get("cmvn_file"), str) and not Path(out["cmvn_file"]).exists():
            path = tmp_path / "am.mvn"
            write_cmvn(path, torch.stack([torch.zeros(560), torch.ones(560)]))
            out["cmvn_file"] = str(path)
        return out
    if isinstance(node, list):
        return [_with_identity_cmvn(v, tmp_path) for v in node]
    return node


@pytest.mark.parametrize("recipe", TRAINING_RECIPES, ids=lambda p: str(p.relative_to(RECIPES)))
def test_recipe_prints_its_config(recipe: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_:
        lightning_main(["fit", "--config", str(recipe), "--print_config"])
    assert exit_.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"]


LOCAL_PATH_KEYS = (
    "path",
    "pretrained_path",
    "init_checkpoint",
    "checkpoint",
    "tokenizer_path",
    "tokenizer",
    "cmvn_file",
)


def _without_absent_local_files(node: object) -> object:
    """Full-size recipes point at the user's model folders; this machine has none of them."""
    if isinstance(node, dict):
        return {
            k: None
            if k in LOCAL_PATH_KEYS and isinstance(v, str) and v.startswith("/") and not Path(v).exists()
            else _without_absent_local_files(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_without_absent_local_files(v) for v in node]
    return node


@pytest.mark.parametrize("recipe", TRAINING_RECIPES, ids=lambda p: str(p.relative_to(RECIPES)))
def test_recipe_instantiates(recipe: Path, tmp_path: Path) -> None:
    """Full-size recipes build on the meta device (no memory, user paths dropped); tiny ones for real."""
    device = "cpu" if "tiny" in recipe.parts else "meta"
    config = _with_identity_cmvn(_without_absent_local_files(yaml.safe_load(recipe.read_text())), tmp_path)
    config["model"].get("init_args", {}).pop("init_checkpoint", None)
    config["model"].get("init_args", {}).pop("init_blocks", None)  # earlier runs' checkpoints
    if device == "meta":
        config["trainer"] = {"accelerator": "cpu", "devices": 1}
    local = tmp_path / recipe.name
    local.write_text(yaml.safe_dump(config))
    with torch.device(device):
        cli = lightning_main(["--config", str(local), "--trainer.default_root_dir", str(tmp_path)], run=False)
        cli.model.configure_model()
    assert sum(p.numel() for p in cli.model.parameters()) > 0


def _error_of(args: list[str], capsys: pytest.CaptureFixture) -> str:
    with pytest.raises(SystemExit) as exit_:
        lightning_main(args)
    assert exit_.value.code not in (0, None)
    return capsys.readouterr().err


def test_unknown_key_is_named(capsys: pytest.CaptureFixture) -> None:
    err = _error_of(["fit", "--config", str(TINY), "--model.init_args.learnin_rate", "1"], capsys)
    assert "learnin_rate" in err


def test_wrong_type_is_named(capsys: pytest.CaptureFixture) -> None:
    err = _error_of(["fit", "--config", str(TINY), "--model.init_args.learning_rate", "fast"], capsys)
    assert "learning_rate" in err and "fast" in err


def test_unknown_implementation_lists_choices(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    recipe = yaml.safe_load(TINY.read_text())
    recipe["model"]["init_args"]["voice_encoder"] = {"class_path": "SenseVoiceEncodr", "init_args": {}}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(recipe))
    message = _error_of(["fit", "--config", str(path)], capsys)
    assert f"{path}: model.init_args.voice_encoder.class_path 'SenseVoiceEncodr'" in message
    assert "did you mean SenseVoiceEncoder?" in message and "valid choices:" in message


def test_unknown_stage_mode_names_choices(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    recipe = yaml.safe_load(TINY.read_text())
    recipe["model"]["init_args"]["trainable"]["llm"] = "half"
    recipe["model"]["init_args"]["voice_encoder"]["init_args"]["cmvn_file"] = None  # no corpus needed here
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(SystemExit) as exit_:
        lightning_main(["--config", str(path)], run=False)
    assert exit_.value.code == 2
    assert (
        "error: model (MinMo): trainable.llm is 'half'; choose one of frozen, full, lora"
        in capsys.readouterr().err
    )


def test_verbose_shows_the_parser_detail_before_the_cause(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["fit", "--verbose", "--config", str(TINY), "--trainer.max_steps", "abc"])
    err = capsys.readouterr().err
    assert "Traceback" in err and 'Parser key "trainer.max_steps"' in err
    assert err.strip().splitlines()[-1] == "minmo fit: error: trainer.max_steps = abc: expected int"


BORING = ["--model", "lightning.pytorch.demos.boring_classes.BoringModel"]
BORING += ["--data", "lightning.pytorch.demos.boring_classes.BoringDataModule"]
BORING += ["--trainer.limit_val_batches", "1", "--trainer.accelerator", "cpu", "--trainer.logger", "false"]


def test_config_is_never_saved_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    lightning_main(["validate", *BORING])
    assert not list(tmp_path.rglob("config.yaml"))  # no logger, no default_root_dir: nowhere to put it
    lightning_main(["validate", *BORING, "--trainer.default_root_dir", str(tmp_path / "run")])
    assert [p.relative_to(tmp_path) for p in tmp_path.rglob("config.yaml")] == [Path("run/config.yaml")]


def test_list_prints_registry(capsys: pytest.CaptureFixture) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("HFCausalLM", "TransformerConvProjector", "qwen2.5-7b-instruct", "7,615,616,512"):
        assert name in out
    rows = [
        [cell.strip() for cell in line.split("│")[1:-1]] for line in out.splitlines() if line.startswith("│")
    ]
    assert ["token2wav (vocoder)", "HiFTVocoder", "cosyvoice2-0.5b", "20,821,295"] in rows
    assert ["token2wav (flow)", "CosyVoice2Flow", "tiny", "1,270,320"] in rows


def test_list_yaml_prints_a_preset(capsys: pytest.CaptureFixture) -> None:
    assert main(["list", "--yaml", "HFCausalLM", "tiny"]) == 0
    block = yaml.safe_load(capsys.readouterr().out)
    assert block["class_path"] == "HFCausalLM" and block["init_args"]["config"]["hidden_size"] == 64


def test_unknown_command(capsys: pytest.CaptureFixture) -> None:
    assert main(["fitt"]) == 2
    assert (
        capsys.readouterr().err.strip().splitlines()[-1]
        == "minmo: error: unknown command 'fitt' (did you mean fit?)"
    )


def test_plain_progress_lines_where_stdout_is_not_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lightning.pytorch.callbacks import ProgressBar, RichProgressBar

    from minmo_lightning.progress_bar import PlainProgressBar

    def progress_bar() -> ProgressBar:
        cli = lightning_main([*BORING, "--trainer.default_root_dir", str(tmp_path)], run=False)
        (bar,) = [c for c in cli.trainer.callbacks if isinstance(c, ProgressBar)]
        return bar

    assert isinstance(progress_bar(), PlainProgressBar)  # captured stdout is not a terminal
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    assert isinstance(progress_bar(), RichProgressBar)
