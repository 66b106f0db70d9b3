"""Every bad input to a ``minmo`` command ends in a short answer: nonzero exit, the cause in the last lines.

Each case runs ``minmo_lightning.cli.main`` in-process, in an empty working directory (no corpus, no runs).
"""

from __future__ import annotations

import io
import logging
import sys
from pathlib import Path

import pytest
import torch
import yaml

from minmo_lightning.cli import lightning_main, main

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "recipes" / "tiny" / "stage1a_prealign.yaml")
EVAL_ASR = str(ROOT / "recipes" / "eval" / "asr_builtin.yaml")


def _tiny_recipe(**model_args: object) -> dict:
    """The tiny stage-1a recipe without its corpus statistics (so it builds here), with ``model_args`` set."""
    recipe = yaml.safe_load(Path(TINY).read_text())
    recipe["model"]["init_args"]["voice_encoder"]["init_args"]["cmvn_file"] = None
    recipe["model"]["init_args"].update(model_args)
    return recipe


def _token2wav_recipe() -> dict:
    from minmo_lightning.components.token2wav.token2wav import CosyVoice2Token2Wav

    tiny = CosyVoice2Token2Wav.presets["tiny"]
    model = {"class_path": "CosyVoice2Token2Wav", "init_args": {**tiny, "vocoder_preset": "nope"}}
    return {
        "model": model,
        "data": {"class_path": "TTSDataModule", "init_args": {"path": "data/builtin/tts"}},
    }


def _unknown_voice_encoder() -> dict:
    recipe = _tiny_recipe()
    recipe["model"]["init_args"]["voice_encoder"]["class_path"] = "SenseVoiceEncodr"
    return recipe


#: recipe files the cases below name as {name}.yaml, written into the case's working directory
RECIPES = {
    "bad_trainable": lambda: _tiny_recipe(
        trainable={"voice_encoder": "frozen", "input_projector": "full", "llm": "half"}
    ),
    "unknown_class": _unknown_voice_encoder,
    "unknown_preset": _token2wav_recipe,
    "buildable": _tiny_recipe,
}
BROKEN_YAML = "trainer:\n  max_steps: 3\n model: [\n"

CASES = [
    # minmo fit|validate|test|predict: the recipe and its overrides
    (["fit", "--config", "missing.yaml"], "config: File does not exist: "),
    (
        ["fit", "--config", TINY, "--model.init_args.nonsense", "1"],
        "model.init_args.nonsense = 1: unknown key",
    ),
    (["fit", "--config", TINY, "--model.init_args.learnin_rate", "1"], "(did you mean learning_rate?)"),
    (["fit", "--config", TINY, "--trainer.max_stepz", "1"], "trainer.max_stepz = 1: unknown key"),
    (["fit", "--config", TINY, "--trainer.max_steps", "abc"], "error: trainer.max_steps = abc: expected int"),
    (
        ["validate", "--config", TINY, "--model.init_args.voice_encoder.init_args.num_layers", "x"],
        "model.init_args.voice_encoder.init_args.num_layers = x: expected int",
    ),
    (
        [
            "fit",
            "--config",
            TINY,
        ],  # before `minmo synth-data`: the block's own message, not the parser's dump
        "model.init_args.voice_encoder (SenseVoiceEncoder): CMVN file data/builtin/asr/am.mvn does not exist",
    ),
    (["fit", "--config", "bad_trainable.yaml"], "trainable.llm is 'half'; choose one of frozen, full, lora"),
    (
        ["fit", "--config", "unknown_class.yaml"],
        "'SenseVoiceEncodr' is not a known VoiceEncoder (did you mean",
    ),
    (["fit", "--config", "unknown_preset.yaml"], "vocoder 'griffin_lim' has no preset 'nope'"),
    (["fit", "--config", "broken.yaml"], 'in "broken.yaml", line 3, column 2'),
    (
        [
            "fit",
            "--config",
            "buildable.yaml",
            "--data.init_args.path",
            "/nonexistent",
            "--trainer.max_steps",
            "1",
        ],
        "dataset path '/nonexistent' does not exist",
    ),
    (["fitt", "--config", TINY], "unknown command 'fitt' (did you mean fit?)"),
    # the tools
    (["export", "--ckpt", "missing.ckpt", "--out", "out"], "checkpoint file not found: missing.ckpt"),
    (["export", "--ckpt", "garbage.ckpt", "--out", "out"], "garbage.ckpt"),
    (["export", "--ckpt", "truncated.ckpt", "--out", "out"], "truncated.ckpt"),
    (["check-golden", "/nonexistent"], "no fixture folders"),
    (["synth-data", "--sizes", "tiny"], "unrecognized arguments: --sizes tiny"),
    (["cmvn", "--data", "/nonexistent", "--out", "am.mvn"], "dataset path '/nonexistent' does not exist"),
    (["chat", "--ckpt", "missing.ckpt", "--input", "user.wav", "--out", "out"], "checkpoint file not found"),
    (
        ["asr-judge", "--root", "/nonexistent", "--ckpt", "missing.ckpt"],
        "judge checkpoint missing.ckpt not found",
    ),
    (["fdb-build", "--data", "/nonexistent", "--out", "fdb"], "/nonexistent is not a saved DatasetDict"),
    (["evaluate", "--config", "missing.yaml"], "missing.yaml not found"),
    (["evaluate", "--predictions", "missing.jsonl", "--task", "asr"], "missing.jsonl not found"),
    (["evaluate", "--config", EVAL_ASR, "--data.init_args.pth", "x"], "pth"),
    (
        ["prepare", "--dataset", "/nonexistent", "--out", "out", "--checkpoint", "missing.ckpt"],
        "missing.ckpt",
    ),
    (["list", "--yaml", "Nope", "tiny"], "implementation 'Nope' is not a known Block"),
    (["list", "--yaml", "HFCausalLM", "huge"], "HFCausalLM has no preset 'huge'"),
    (["demo", "--fast"], "unrecognized arguments: --fast"),
]


@pytest.fixture(autouse=True)
def _in_an_empty_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """Run where nothing exists but the recipe files the cases name."""
    monkeypatch.chdir(tmp_path)
    for name, build in RECIPES.items():
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(build()))
    (tmp_path / "broken.yaml").write_text(BROKEN_YAML)
    (tmp_path / "garbage.ckpt").write_text("not a checkpoint\n")
    whole = io.BytesIO()
    torch.save({"state_dict": {"weight": torch.zeros(4096)}, "hyper_parameters": {}}, whole)
    (tmp_path / "truncated.ckpt").write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])


def _logs_to_this_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    """Library log handlers keep the stderr there was when their library was imported (an earlier test's
    capture, closed since); point them at this test's, so the output checked is what a user would see."""
    loggers = [logging.root, *logging.root.manager.loggerDict.values()]
    for handler in [h for logger in loggers for h in getattr(logger, "handlers", [])]:
        if type(handler) is logging.StreamHandler:
            monkeypatch.setattr(handler, "stream", sys.stderr)


def _run(argv: list[str]) -> int | str | None:
    try:
        return main(argv)
    except SystemExit as exit_:
        return exit_.code


@pytest.mark.parametrize(
    ("argv", "fragment"), CASES, ids=lambda value: " ".join(value) if isinstance(value, list) else None
)
def test_bad_input_is_answered_shortly(
    argv: list[str], fragment: str, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    _logs_to_this_stderr(monkeypatch)
    code = _run(argv)
    out, err = capsys.readouterr()
    assert code not in (0, None), f"exit code {code!r}"
    last_lines = "\n".join(err.strip().splitlines()[-5:]) + "\n" + "\n".join(out.strip().splitlines()[-5:])
    assert fragment in last_lines, last_lines
    assert "Traceback" not in out + err and "Namespace(" not in out + err
    assert len((out + err).encode()) < 4096, f"{len(out + err)} bytes:\n{out}{err}"


def test_an_abbreviated_key_is_an_error_not_the_key_it_abbreviates(capsys) -> None:
    """`--trainer.max_step 3` once ran with max_steps=3: argparse's prefix matching, now off."""
    with pytest.raises(SystemExit):
        lightning_main(["fit", "--config", TINY, "--trainer.max_step", "3"])
    assert "max_step" in capsys.readouterr().err
