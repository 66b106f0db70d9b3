"""Ablation recipes: each variant changes exactly the entry it names; full size builds on the meta device
(parameters per slot printed); the tiny twins train two steps; the comparison report resolves differences."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
import yaml
from minmo_lightning.datamodules.synth import wav_bytes
from minmo_lightning.evaluation.compare import compare_runs
from test_cli import _with_identity_cmvn, _without_absent_local_files

from minmo_lightning import ablate
from minmo_lightning.ablate import Ablation, Variant, available, load_ablation, main
from minmo_lightning.cli import lightning_main

ABLATIONS = {name: load_ablation(name) for name in available()}
CASES = [(name, v.name) for name, a in ABLATIONS.items() for v in a.variants]
NO_CHANGE = Variant("base", {}, {})


def _pop(tree: dict, key: str):
    *parents, last = key.split(".")
    for part in parents:
        tree = tree[part]
    return tree.pop(last, None)


def _variant(ablation: Ablation, name: str) -> Variant:
    return next(v for v in ablation.variants if v.name == name)


@pytest.mark.parametrize("size", ["tiny", "full"])
@pytest.mark.parametrize(("ablation", "variant"), CASES)
def test_a_variant_differs_from_its_base_in_exactly_its_entry(ablation: str, variant: str, size: str) -> None:
    spec = ABLATIONS[ablation]
    chosen = _variant(spec, variant)
    base, changed = spec.recipe(size, NO_CHANGE), spec.recipe(size, chosen)
    keys = [*chosen.changes.get(size, {}), *chosen.follows.get(size, {})]
    assert len(chosen.changes.get(size, {})) <= 1
    for key in chosen.changes.get(size, {}):
        before, after = _pop(copy.deepcopy(base), key), _pop(copy.deepcopy(changed), key)
        assert before != after, f"{ablation}/{variant} sets {key} to the base's own value"
    for key in keys:
        _pop(base, key), _pop(changed, key)
    assert base == changed
    if spec.then:  # the stage each variant continues into carries the same one change
        start = Path("run/checkpoints/last.ckpt")
        base, changed = spec.then_recipe(size, NO_CHANGE, start), spec.then_recipe(size, chosen, start)
        assert base["model"]["init_args"]["init_checkpoint"] == str(start)
        for key in keys:
            _pop(base, key), _pop(changed, key)
        assert base == changed


def test_the_ablation_table_covers_the_papers_questions() -> None:
    assert {
        "input_projector",
        "projector_downsampling",
        "llm_adaptation",
        "output_projector",
        "mix_ratio",
        "token2wav_chunk",
    } <= set(ABLATIONS)


def _build(config: dict, tmp_path: Path, device: str):
    config = _with_identity_cmvn(_without_absent_local_files(config), tmp_path)
    config["model"]["init_args"].pop("init_checkpoint", None)
    config["model"]["init_args"].pop("init_blocks", None)
    if device == "meta":
        config["trainer"] = {"accelerator": "cpu", "devices": 1}
    tmp_path.mkdir(parents=True, exist_ok=True)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(config))
    with torch.device(device):
        cli = lightning_main(
            ["--config", str(recipe), "--trainer.default_root_dir", str(tmp_path)], run=False
        )
        cli.model.configure_model()
    return cli


def _trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_full_size_llm_adaptation_variants_order_their_trainable_parameters(tmp_path: Path, capsys) -> None:
    """On the meta device: per-slot counts printed; frozen < LoRA r8 < LoRA r64 < full fine-tuning."""
    spec = ABLATIONS["llm_adaptation"]
    trainable = {}
    for variant in spec.variants:
        model = _build(spec.recipe("full", variant), tmp_path / variant.name, "meta").model
        slots = {slot: sum(p.numel() for p in getattr(model, slot).parameters()) for slot in model.slots}
        trainable[variant.name] = _trainable(model)
        print(variant.name, slots, "trainable", trainable[variant.name])
    assert trainable["frozen"] < trainable["lora_r8"] < trainable["lora_r64"] < trainable["full_finetune"]
    # Qwen2.5-7B: 7.07 B parameters outside the embeddings are what full fine-tuning adds over frozen
    assert trainable["full_finetune"] - trainable["frozen"] == pytest.approx(7.6e9, rel=0.02)
    assert "llm" in capsys.readouterr().out


#: MinMo's Table 1 sizes (``spec.md`` §1.1); the voice token LM's 370 M leave out CosyVoice2's text embedding
#: (151,936 x 896), which the block keeps for the official checkpoint's layout and MinMo never reads
PAPER_PARAMETERS = {
    "voice_encoder": 636e6,
    "input_projector": 170e6,
    "llm": 7.6e9,
    "output_projector": 6.4e6,
    "voice_token_lm": 370e6 + 151936 * 896,
    "duplex_predictor": 18e6,
}


@pytest.mark.parametrize(("ablation", "variant"), CASES)
def test_full_size_variant_builds_on_meta(ablation: str, variant: str, tmp_path: Path, capsys) -> None:
    """Every variant at full size (parameters per slot printed); a variant that trains nothing swaps its block
    into the base's model at evaluation, so the base's stage is what must train."""
    spec = ABLATIONS[ablation]
    chosen = _variant(spec, variant)
    recipe = spec.recipe("full", chosen if chosen.trains else NO_CHANGE)
    model = _build(recipe, tmp_path, "meta").model
    sizes = {slot: sum(p.numel() for p in getattr(model, slot).parameters()) for slot in model.slots}
    print(variant, sizes)
    assert _trainable(model) > 0
    if chosen is spec.variants[0]:  # the base is MinMo's own choice: its blocks have the paper's sizes
        for slot, size in sizes.items():
            if slot in PAPER_PARAMETERS:
                assert size == pytest.approx(PAPER_PARAMETERS[slot], rel=0.03), slot
    if spec.then and chosen.trains:
        start = tmp_path / "start.ckpt"
        assert (
            _trainable(_build(spec.then_recipe("full", chosen, start), tmp_path / "then", "meta").model) > 0
        )
    assert variant in capsys.readouterr().out


def _asr_corpus(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    texts = ["hello there", "stop now", "what is five plus four", "turn left"] * 2
    split = datasets.Dataset.from_dict(
        {
            "id": [f"u{i}" for i in range(len(texts))],
            "audio": [
                {
                    "bytes": wav_bytes((0.1 * rng.standard_normal(12000)).astype(np.float32), 16000),
                    "path": None,
                }
                for _ in texts
            ],
            "text": texts,
            "duration": [0.75] * len(texts),
        }
    ).cast_column("audio", datasets.Audio(decode=False))
    datasets.DatasetDict({"train": split, "validation": split, "test": split}).save_to_disk(str(folder))
    return folder


def _trains_two_steps(config: dict, where: Path) -> None:
    """Two optimizer steps of ``config`` (no validation, no logger) change the model's weights."""
    config["trainer"].update(max_steps=2, limit_val_batches=0, logger=False)
    cli = _build(config, where, "cpu")
    before = {k: v.clone() for k, v in cli.model.state_dict().items()}
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert cli.trainer.global_step == 2
    assert any(not torch.equal(before[k], v) for k, v in cli.model.state_dict().items())


@pytest.mark.parametrize(
    ("ablation", "variant"),
    [(n, v) for n, v in CASES if ABLATIONS[n].evaluate and "stage1" in ABLATIONS[n].base["tiny"]],
)
def test_tiny_twin_trains_two_steps(ablation: str, variant: str, tmp_path: Path) -> None:
    spec = ABLATIONS[ablation]
    config = spec.recipe("tiny", _variant(spec, variant), tmp_path / "run")
    corpus = str(_asr_corpus(tmp_path / "asr"))  # the stage's own corpus may be a mixture: ASR is enough here
    config["data"] = {
        "class_path": "ASRDataModule",
        "init_args": {"path": corpus, "max_seconds_per_batch": 3.0},
    }
    if config["model"]["init_args"].get("objective") == "speech_to_text":
        config["model"]["init_args"]["tasks"] = ["asr"]  # what the ASR corpus supervises
    _trains_two_steps(config, tmp_path)


@pytest.mark.parametrize(
    ("ablation", "variant"),
    [(n, v) for n, v in CASES if ABLATIONS[n].evaluate and "stage2" in ABLATIONS[n].base["tiny"]],
)
def test_tiny_speech_stage_twin_trains_two_steps(ablation: str, variant: str, tmp_path: Path) -> None:
    """The speech stages' twins on a tokenized TTS set (``minmo prepare``'s layout), and the stage a
    variant continues into (``then``) with the same change."""
    from test_voice_token_lm_recipe import _tts_dataset

    spec = ABLATIONS[ablation]
    chosen = _variant(spec, variant)
    tts = {
        "class_path": "TTSDataModule",
        "init_args": {
            "path": str(_tts_dataset(tmp_path / "tts")),
            "columns": {"audio": None},
            "sample_rate": 24000,
            "max_seconds_per_batch": 3.0,
        },
    }
    configs = [spec.recipe("tiny", chosen, tmp_path / "run")]
    if spec.then:
        configs.append(spec.then_recipe("tiny", chosen, tmp_path / "none.ckpt", tmp_path / "then"))
    for number, config in enumerate(configs):
        config["data"] = tts  # the stage's own data may be a mixture: TTS is enough here
        _trains_two_steps(config, tmp_path / f"fit{number}")


@pytest.mark.parametrize(
    ("ablation", "variant"),
    [(n, v.name) for n, a in ABLATIONS.items() if "stage4" in a.base["tiny"] for v in a.variants if v.trains],
)
def test_tiny_duplex_twin_trains_two_steps(ablation: str, variant: str, tmp_path: Path) -> None:
    """Stage 4's twins on two-channel sessions of the built-in corpus's generator (tiny size)."""
    from minmo_lightning.datamodules.synth import main as synth

    corpus = tmp_path / "corpus"
    args = ["--out", str(corpus), "--size", "tiny", "--tasks", "duplex", "--workers", "1"]
    assert synth([*args, "--duplex-min-seconds", "6", "--duplex-max-seconds", "9"]) == 0
    spec = ABLATIONS[ablation]
    config = spec.recipe("tiny", _variant(spec, variant), tmp_path / "run")
    config["data"]["init_args"].update(path=str(corpus / "duplex"), max_seconds_per_batch=40.0)
    _trains_two_steps(config, tmp_path / "fit")


def _run(folder: Path, errors: list[int]) -> Path:
    """An ASR evaluation run: one record per utterance, ``errors[i]`` substitutions in 4 words."""
    folder.mkdir(parents=True)
    records = [
        {"id": f"u{i}", "hits": 4 - e, "substitutions": e, "deletions": 0, "insertions": 0}
        for i, e in enumerate(errors)
    ]
    (folder / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    wer = sum(errors) / (4 * len(errors))
    (folder / "metrics.json").write_text(json.dumps({"task": "asr", "summary": {"wer": wer}, "settings": {}}))
    return folder


def test_comparison_resolves_a_real_difference_and_not_noise(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 3, 200).tolist()
    worse = [min(4, e + 1) for e in base]  # one more error in every utterance
    noise = [e if i % 2 else max(0, e - 1) if i % 4 else min(4, e + 1) for i, e in enumerate(base)]
    result = compare_runs(
        [_run(tmp_path / "a", base), _run(tmp_path / "b", worse), _run(tmp_path / "c", noise)],
        tmp_path / "cmp",
        names=["base", "worse", "noise"],
    )
    worse_row, noise_row = result["runs"][1]["vs_base"], result["runs"][2]["vs_base"]
    assert worse_row["difference"] == pytest.approx(0.25 * sum(min(4, e + 1) - e for e in base) / len(base))
    assert worse_row["ci95"][0] > 0  # resolved
    assert noise_row["ci95"][0] < 0 < noise_row["ci95"][1]  # not resolved
    report = (tmp_path / "cmp" / "report.md").read_text()
    assert "worse than the base" in report and "not resolved" in report
    assert (tmp_path / "cmp" / "comparison.png").stat().st_size > 1000


def test_comparison_refuses_runs_of_different_tasks(tmp_path: Path) -> None:
    _run(tmp_path / "a", [0, 1])
    other = tmp_path / "b"
    other.mkdir()
    (other / "predictions.jsonl").write_text('{"id": "u0", "correct": true}\n')
    (other / "metrics.json").write_text(json.dumps({"task": "emotion", "summary": {"wa": 1.0}}))
    with pytest.raises(ValueError, match="different tasks"):
        compare_runs([tmp_path / "a", other], tmp_path / "cmp")


def test_dry_run_writes_one_recipe_per_variant(tmp_path: Path) -> None:
    assert main(["input_projector", "--size", "full", "--dry-run", "--out", str(tmp_path)]) == 0
    written = sorted(p.parent.name for p in tmp_path.glob("*/recipe.yaml"))
    assert written == sorted(v.name for v in ABLATIONS["input_projector"].variants)
    linear = yaml.safe_load((tmp_path / "linear" / "recipe.yaml").read_text())
    assert linear["model"]["init_args"]["input_projector"]["class_path"] == "LinearProjector"
    assert linear["trainer"]["default_root_dir"] == str(tmp_path / "linear")


def test_a_variant_changing_two_entries_is_refused(tmp_path: Path) -> None:
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(
        yaml.safe_dump(
            {
                "base": {"tiny": "tiny/stage1a_prealign.yaml"},
                "evaluate": "eval/asr_builtin.yaml",
                "variants": {
                    "a": {},
                    "b": {"tiny": {"model.init_args.learning_rate": 1, "trainer.max_steps": 2}},
                },
            }
        )
    )
    with pytest.raises(ValueError, match="changes 2 entries at size tiny"):
        load_ablation(str(manifest))


def test_evaluate_compare_command(tmp_path: Path, capsys) -> None:
    from minmo_lightning.evaluation.cli import main as evaluate

    runs = [str(_run(tmp_path / "a", [0, 1, 2, 1])), str(_run(tmp_path / "b", [1, 1, 2, 2]))]
    assert evaluate(["--compare", *runs, "--names", "old", "new", "--out", str(tmp_path / "cmp")]) == 0
    assert "new: wer 0.375  +0.1250" in capsys.readouterr().out
    assert json.loads((tmp_path / "cmp" / "comparison.json").read_text())["base"] == "old"
    assert evaluate(["--compare", runs[0], "--out", str(tmp_path / "one")]) == 2
    assert "at least two" in capsys.readouterr().err


def test_variants_that_change_nothing_at_a_size_are_not_run_there(tmp_path: Path) -> None:
    assert main(["voice_encoder", "--size", "full", "--dry-run", "--out", str(tmp_path / "full")]) == 0
    assert main(["voice_encoder", "--size", "tiny", "--dry-run", "--out", str(tmp_path / "tiny")]) == 0
    full = sorted(p.parent.name for p in (tmp_path / "full").glob("*/recipe.yaml"))
    tiny = sorted(p.parent.name for p in (tmp_path / "tiny").glob("*/recipe.yaml"))
    assert full == ["base_encoder", "sensevoice_large_like", "sensevoice_small"]
    assert tiny == ["base_encoder", "whisper_untrained"]


def _manifest(tmp_path: Path, variants: dict) -> str:
    path = tmp_path / "m.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "base": {"tiny": "tiny/stage4_duplex.yaml"},
                "evaluate": "eval/duplex_builtin.yaml",
                "variants": variants,
            },
            sort_keys=False,  # the first variant is the base
        )
    )
    return str(path)


VAD = {"class_path": "VADDuplexPredictor", "init_args": {"frame_seconds": 0.12}}


def test_a_variant_that_trains_nothing_may_only_swap_a_whole_block(tmp_path: Path) -> None:
    swap = {"tiny": {"model.init_args.duplex_predictor": VAD}, "trains": False}
    assert load_ablation(_manifest(tmp_path, {"predictor": {}, "vad": swap})).variants[1].swaps("tiny") == {
        "duplex_predictor": VAD
    }
    setting = {"tiny": {"model.init_args.learning_rate": 0.1}, "trains": False}
    with pytest.raises(ValueError, match="must swap one whole block"):
        load_ablation(_manifest(tmp_path, {"predictor": {}, "lr": setting}))
    with pytest.raises(ValueError, match="first variant is the base and must train"):
        load_ablation(_manifest(tmp_path, {"vad": swap, "predictor": {}}))


def test_a_variant_that_trains_nothing_is_scored_on_the_base_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The base trains once; its evaluation swaps the block in (``--variants.NAME``); the comparison reads that
    swap's report, with zero trainable parameters and no train time."""
    import minmo_lightning.evaluation.cli
    import minmo_lightning.evaluation.compare

    import minmo_lightning.cli

    fits, evaluations, compared = [], [], {}

    class Fitted:
        trainer = type("T", (), {"global_step": 3})()
        model = torch.nn.Linear(2, 2)

    def fit(argv):
        fits.append(argv)
        checkpoints = (
            Path(yaml.safe_load(Path(argv[2]).read_text())["trainer"]["default_root_dir"]) / "checkpoints"
        )
        checkpoints.mkdir(parents=True, exist_ok=True)
        (checkpoints / "last.ckpt").write_text("")
        return Fitted()

    def evaluate(argv):
        evaluations.append(argv)
        out = Path(argv[argv.index("--out") + 1])
        swaps = [a for a in argv if a.startswith("--variants.")]
        for folder in [out, *(out / "variants" / a.split("=")[0].removeprefix("--variants.") for a in swaps)]:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "metrics.json").write_text("{}")
        return 0

    monkeypatch.setattr(minmo_lightning.cli, "lightning_main", fit)
    monkeypatch.setattr(minmo_lightning.evaluation.cli, "main", evaluate)
    monkeypatch.setattr(
        minmo_lightning.evaluation.compare,
        "compare_runs",
        lambda dirs, out, names: compared.update(zip(names, dirs)),
    )
    monkeypatch.setattr(ablate, "starting_points", lambda recipe: [])  # the fits are stand-ins
    manifest = _manifest(
        tmp_path,
        {"predictor": {}, "vad": {"tiny": {"model.init_args.duplex_predictor": VAD}, "trains": False}},
    )
    assert main([manifest, "--out", str(tmp_path / "runs")]) == 0
    assert len(fits) == 1 and len(evaluations) == 1
    assert f"--variants.vad={json.dumps({'duplex_predictor': VAD})}" in evaluations[0]
    assert compared["vad"] == tmp_path / "runs" / "predictor" / "eval" / "variants" / "vad"
    assert json.loads((compared["vad"] / "training.json").read_text())["trainable_parameters"] == 0
    assert main([manifest, "--out", str(tmp_path / "runs")]) == 0  # done: nothing runs again
    assert len(fits) == 1 and len(evaluations) == 1
    (tmp_path / "runs" / "predictor" / "training.json").unlink()  # as if the fit had been interrupted
    assert main([manifest, "--out", str(tmp_path / "runs")]) == 0
    checkpoint = tmp_path / "runs" / "predictor" / "checkpoints" / "last.ckpt"
    assert fits[-1][3:5] == ["--ckpt_path", str(checkpoint)]  # it goes on from its last.ckpt


def test_a_variant_continues_into_the_next_stage_and_is_scored_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``then``: each variant's next stage starts from its own checkpoint with its change; that stage's
    checkpoint is evaluated and the train times add up."""
    import minmo_lightning.evaluation.cli
    import minmo_lightning.evaluation.compare

    import minmo_lightning.cli

    fits, evaluated = [], []

    def fit(argv):
        recipe = yaml.safe_load(Path(argv[2]).read_text())
        fits.append(recipe)
        checkpoints = Path(recipe["trainer"]["default_root_dir"]) / "checkpoints"
        checkpoints.mkdir(parents=True)
        (checkpoints / "last.ckpt").write_text("")
        return type(
            "Fitted", (), {"trainer": type("T", (), {"global_step": 2})(), "model": torch.nn.Linear(2, 2)}
        )

    def evaluate(argv):
        evaluated.append(argv[argv.index("--ckpt") + 1])
        out = Path(argv[argv.index("--out") + 1])
        out.mkdir(parents=True)
        (out / "metrics.json").write_text("{}")
        return 0

    monkeypatch.setattr(minmo_lightning.cli, "lightning_main", fit)
    monkeypatch.setattr(minmo_lightning.evaluation.cli, "main", evaluate)
    monkeypatch.setattr(minmo_lightning.evaluation.compare, "compare_runs", lambda dirs, out, names: None)
    runs = tmp_path / "runs"
    monkeypatch.chdir(tmp_path)  # where no tiny run exists
    with pytest.raises(FileNotFoundError, match=r"start from runs/tiny/stage1c/checkpoints/last.ckpt.*train"):
        main(["output_projector", "--out", str(runs)])  # nothing trained yet, nothing run
    assert not fits and not runs.exists()
    monkeypatch.setattr(ablate, "starting_points", lambda recipe: [])  # the fits below are stand-ins
    assert main(["output_projector", "--variants", "both", "hidden_only", "--out", str(runs)]) == 0
    assert len(fits) == 4 and evaluated == [
        str(runs / name / "then" / "checkpoints" / "last.ckpt") for name in ("both", "hidden_only")
    ]
    stage2b = fits[3]["model"]["init_args"]
    assert stage2b["init_checkpoint"] == str(runs / "hidden_only" / "checkpoints" / "last.ckpt")
    assert stage2b["output_projector"]["init_args"]["features"] == "hidden"
    assert (
        fits[3]["model"]["init_args"]["objective"] == "text_to_speech"
        and stage2b["trainable"]["voice_token_lm"] == "full"
    )
    assert json.loads((runs / "hidden_only" / "eval" / "training.json").read_text())["steps"] == 4
