"""Plain progress lines: the helper tools call, and the trainer's bar where stdout is not a terminal."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from lightning.pytorch.demos.boring_classes import BoringModel, RandomDataset
from torch.utils.data import DataLoader

from minmo_lightning.progress import ProgressLine, format_duration, plain_progress_wanted
from minmo_lightning.progress_bar import PlainProgressBar


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_progress_line_prints_at_most_every_interval(capsys: pytest.CaptureFixture) -> None:
    clock = Clock()
    progress = ProgressLine("prepare train", total=100, unit="rows", every=30, clock=clock)
    for _ in range(10):
        clock.now += 2
        progress.advance()  # 20 s: not due yet
    assert capsys.readouterr().out == ""
    clock.now = 40
    progress.update(40, skipped=1)
    assert capsys.readouterr().out == (
        "prepare train: 40/100 rows (40%) | skipped 1 | 1 rows/s | elapsed 40s | ETA 1m00s\n"
    )
    clock.now = 50
    progress.advance(10)  # 10 s after the last line: quiet
    assert capsys.readouterr().out == ""
    progress.close()
    progress.close()
    assert capsys.readouterr().out == "prepare train: 50/100 rows (50%) | 1 rows/s | elapsed 50s | done\n"


def test_progress_line_without_total_and_as_context_manager() -> None:
    clock, stream = Clock(), io.StringIO()
    with ProgressLine("synth", every=0, stream=stream, clock=clock) as progress:
        clock.now = 4
        progress.advance(8)
    lines = stream.getvalue().splitlines()
    assert lines == [
        "synth: 8 items | 2 items/s | elapsed 4s",
        "synth: 8 items | 2 items/s | elapsed 4s | done",
    ]


def test_durations_and_terminal_detection() -> None:
    assert [format_duration(s) for s in (5, 185, 7620, float("inf"))] == ["5s", "3m05s", "2h07m", "?"]

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert plain_progress_wanted(io.StringIO()) and not plain_progress_wanted(Terminal())


class LoggingModel(BoringModel):
    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        loss = self.step(batch)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self.log("val/loss", self.step(batch), prog_bar=True)


def test_plain_bar_prints_step_loss_throughput_and_eta(tmp_path, capsys: pytest.CaptureFixture) -> None:
    data = DataLoader(RandomDataset(32, 64), batch_size=4)
    trainer = L.Trainer(
        max_steps=3,
        limit_val_batches=2,
        val_check_interval=3,
        num_sanity_val_steps=0,
        callbacks=[PlainProgressBar(every=0)],
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        accelerator="cpu",
    )
    trainer.fit(LoggingModel(), data, data)
    lines = [
        line for line in capsys.readouterr().out.splitlines() if line.startswith(("train:", "validation"))
    ]
    train = [line for line in lines if line.startswith("train:")]
    assert len(train) == 4  # one per step (interval 0) and the final line
    pattern = (
        r"train: epoch 0 \| step (\d)/3 \(\d+%\) \| loss [0-9.]+ \| [0-9.e+]+ steps/s, [0-9.e+]+ samples/s \| "
        r"elapsed \d+s \| (ETA \S+|done)"
    )
    for line in train:
        assert re.fullmatch(pattern, line), line
    assert [re.fullmatch(pattern, line).group(1) for line in train] == ["1", "2", "3", "3"]
    assert train[-1].endswith("| done") and "ETA" in train[0]
    assert any(re.fullmatch(r"validation at step 3: val/loss [0-9.]+", line) for line in lines), lines


def test_plain_bar_counts_test_batches(tmp_path, capsys: pytest.CaptureFixture) -> None:
    trainer = L.Trainer(
        callbacks=[PlainProgressBar(every=0)],
        logger=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        accelerator="cpu",
    )
    trainer.test(BoringModel(), DataLoader(RandomDataset(32, 12), batch_size=4), verbose=False)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("test:")]
    assert [line.split(" |")[0] for line in lines] == [
        "test: 1/3 batches (33%)",
        "test: 2/3 batches (67%)",
        "test: 3/3 batches (100%)",
        "test: 3/3 batches (100%)",
    ]
    assert lines[-1].endswith("| done")


def test_demo_announces_each_step_with_expected_elapsed_and_left(
    tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from minmo_lightning import demo

    clock = Clock()
    monkeypatch.setattr(demo, "MINUTES", {"a": (4, 2, 1), "b": (2, 1, 0.5), "c": (6, 3, 2), "d": (1, 1, 1)})
    (tmp_path / "a.ckpt").touch()

    def takes(seconds: float, writes: str | None = None):
        def run() -> None:
            clock.now += seconds
            if writes:
                (tmp_path / writes).touch()

        return run

    steps = [
        demo.Step("a", "step A", takes(999), lambda: tmp_path / "a.ckpt"),
        demo.Step("b", "step B", takes(240)),  # twice the expected 2 min
        demo.Step("c", "step C", takes(360, writes="c.ckpt"), lambda: tmp_path / "c.ckpt"),
        demo.Step("d", "step D", takes(30)),
    ]
    assert demo.run_steps(steps, "full", clock=clock) == pytest.approx(10.5)
    assert capsys.readouterr().out.splitlines() == [
        f"[demo 1/4] step A: done already ({tmp_path / 'a.ckpt'})",
        "[demo 2/4] step B: about 2 min on a 2-core CPU",
        "[demo 2/4] step B: done in 4 min; about 14 min left",  # C and D, 7 min at twice the pace
        "[demo 3/4] step C: about 6 min on a 2-core CPU",
        "[demo 3/4] step C: done in 6 min; about 75 s left",  # D's minute at 10 min / 8 planned
        "[demo 4/4] step D: about 60 s on a 2-core CPU",
        "[demo 4/4] step D: done in 30 s; about 0 s left",
    ]


def test_demo_main_runs_the_steps_with_quick_estimates(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from minmo_lightning import demo

    ran = []
    monkeypatch.setattr(demo, "MINUTES", {**demo.MINUTES, "voice_encoder": (14.0, 9.0, 0.1)})

    def steps(runs, plan):
        ran.append((runs, plan))
        return (
            [demo.Step("voice_encoder", "voice encoder", lambda: None)],
            [runs / "eval-asr" / "report.md"],
            runs,
        )

    monkeypatch.setattr(demo, "demo_steps", steps)
    assert demo.main(["--quick"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert ran == [(Path("runs/tiny-quick"), "quick")]
    assert out[0] == "[demo 1/1] voice encoder: about 6 s on a 2-core CPU"
    assert out[-1].startswith("demo finished in 0.0 min; reports: runs/tiny-quick/eval-asr/report.md")


def test_demo_steps_cover_the_pipeline_and_skip_what_exists(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from minmo_lightning import demo

    monkeypatch.chdir(tmp_path)
    for stage, step in (("stage1a", 4), ("stage1b", 2)):  # --quick budgets 4 steps: 1a ended, 1b stopped at 2
        (tmp_path / "runs" / stage / "checkpoints").mkdir(parents=True)
        torch.save({"global_step": step}, tmp_path / "runs" / stage / "checkpoints" / "last.ckpt")
    steps, reports, chats = demo.demo_steps(Path("runs"), "quick")
    assert [s.key for s in steps] == list(demo.MINUTES)
    assert [s.key for s in steps if s.done()] == ["stage1a"]
    fits = []
    monkeypatch.setattr(demo, "_fit", lambda config, overrides: fits.append(overrides))
    next(s for s in steps if s.key == "stage1b").run()
    assert fits[0][-2:] == ["--ckpt_path", "last"]  # stage 1b continues from its last.ckpt
    tasks = (*demo.UNDERSTANDING_TASKS, *demo.SPOKEN_TASKS, "duplex")
    assert [r.parent.name for r in reports] == [f"eval-{t}" for t in tasks] and chats == Path("runs/chat")


def test_demo_wires_the_speech_side(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stage 2a starts from 1c with the voice LM and the flow trained alone, stage 4 from 3; a smoke run reads tokens it
    prepared itself (never the full run's), and the spoken tasks are judged by the demo's own encoder."""
    import minmo_lightning.datamodules.prepare as prepare
    import minmo_lightning.evaluation.cli as evaluation_cli

    from minmo_lightning import demo

    monkeypatch.chdir(tmp_path)
    steps, _, _ = demo.demo_steps(Path("runs"), "quick")
    step = {s.key: s for s in steps}
    fits = []
    monkeypatch.setattr(demo, "_fit", fit_writing_last_ckpt(fits))

    def value(overrides: list[str], flag: str) -> str:
        return overrides[overrides.index(flag) + 1]

    step["stage2a"].run()
    config, overrides = fits[-1]
    assert value(overrides, "--model.init_args.init_checkpoint") == "runs/stage1c/checkpoints/last.ckpt"
    assert json.loads(value(overrides, "--model.init_args.init_blocks")) == {
        "voice_token_lm": "runs/voice_lm/checkpoints/last.ckpt",
        "token2wav.flow": "runs/flow/checkpoints/last.ckpt",
    }
    text = Path(config).read_text()
    assert "path: runs/builtin-tokens/tts" in text and "path: data/builtin-tokens" not in text
    step["stage4"].run()
    assert value(fits[-1][1], "--model.init_args.init_checkpoint") == "runs/stage3/checkpoints/last.ckpt"

    prepared = []

    def fake_prepare(args: list[str]) -> int:  # records the call and writes the dataset's split list
        prepared.append(args)
        out = Path(value(args, "--out"))
        out.mkdir(parents=True)
        (out / "dataset_dict.json").write_text(
            (Path(value(args, "--dataset")) / "dataset_dict.json").read_text()
        )
        return 0

    monkeypatch.setattr(prepare, "main", fake_prepare)
    for task, extra in (("tts", ["voice_lm_train"]), ("s2s", []), ("voice_control", [])):
        (demo.DATA / task).mkdir(parents=True)
        splits = {"splits": ["train", *extra, "validation", "test"]}
        (demo.DATA / task / "dataset_dict.json").write_text(json.dumps(splits))
    assert step["speech_tokens"].done() is None
    step["speech_tokens"].run()
    tts = next(args for args in prepared if value(args, "--dataset").endswith("tts"))
    assert value(tts, "--splits") == "train,validation,test"  # the voice LM's own split is --full's
    s2s = next(args for args in prepared if value(args, "--dataset").endswith("s2s"))
    assert "--splits" not in s2s
    assert value(s2s, "--out") == "runs/builtin-tokens/s2s" and value(s2s, "--max-rows") == "16"
    assert value(s2s, "--audio-column") == "answer_audio" and value(s2s, "--column") == "answer_speech_tokens"
    styled, neutral = [args for args in prepared if "voice_control" in value(args, "--dataset")]
    assert value(styled, "--out") == value(neutral, "--dataset")  # a pass per column, the second on the first
    assert value(neutral, "--out") == "runs/builtin-tokens/voice_control"
    assert value(neutral, "--audio-column") == "neutral_audio"
    assert value(neutral, "--column") == "neutral_speech_tokens"
    assert sorted(p.name for p in Path("runs/builtin-tokens").iterdir()) == ["s2s", "tts", "voice_control"]

    evaluated = []
    monkeypatch.setattr(evaluation_cli, "main", lambda args: evaluated.append(args) or 0)
    step["evaluation"].run()
    spoken = {value(args, "--out"): Path(value(args, "--config")).read_text() for args in evaluated}
    assert "judge: runs/voice_encoder/checkpoints/last.ckpt" in spoken["runs/eval-tts"]
    assert value(next(a for a in evaluated if value(a, "--out") == "runs/eval-s2s"), "--ckpt") == (
        "runs/stage3/checkpoints/last.ckpt"
    )
    control = next(a for a in evaluated if value(a, "--out") == "runs/eval-voice_control")
    assert value(control, "--ckpt") == "runs/stage2b/checkpoints/last.ckpt"
    assert yaml.safe_load(spoken["runs/eval-voice_control"])["metrics"] == {
        "emotion_judge": {
            "class_path": "minmo_lightning.evaluation.asr_judge.EmotionJudge",
            "init_args": {"checkpoint": "runs/voice_encoder/checkpoints/last.ckpt"},
        }
    }


def fit_writing_last_ckpt(fits: list):
    """A stand-in for ``minmo fit``: records the call and writes the run's last.ckpt where it was told to."""

    def fit(config: str, overrides: list[str]) -> None:
        fits.append((config, overrides))
        folder = Path(overrides[overrides.index("--trainer.callbacks.init_args.dirpath") + 1])
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "last.ckpt").touch()

    return fit


def test_the_default_demo_fits_in_an_hour(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default plan budgets every training step (``HOUR``): a block trained alone stops on its time, a
    stage gets the share of its recipe's steps that fits its minutes; it writes under runs/demo, tokens
    included. A stage ended on its budget is done, one stopped part-way resumes. --full runs the recipes as
    written: stages into runs/tiny, the blocks trained alone into their recipes' own folders (what the
    stage recipes and the ablations read), tokens into the recipes' token folder."""
    from minmo_lightning import demo

    monkeypatch.chdir(tmp_path)
    steps, reports, _ = demo.demo_steps(demo.PLANS["hour"], "hour")
    assert sum(demo.expected_minutes(s.key, "hour") for s in steps) < 55  # measured: 45 min, a margin kept
    assert set(demo.HOUR) == {s.key for s in steps} - {"corpus", "speech_tokens", "evaluation", "chat"}
    step = {s.key: s for s in steps}
    fits = []
    monkeypatch.setattr(demo, "_fit", fit_writing_last_ckpt(fits))

    def value(overrides: list[str], flag: str) -> str:
        return overrides[overrides.index(flag) + 1]

    stage1c = Path("runs/demo/stage1c/checkpoints/last.ckpt")
    stage1c.parent.mkdir(parents=True)
    torch.save({"global_step": 7}, stage1c)  # a run stopped part-way: resumed, not done
    assert step["stage1c"].done() is None
    step["stage1c"].run()
    config, overrides = fits[-1]
    assert value(overrides, "--trainer.max_steps") == "1750"  # its recipe's steps: 14.8 of 14.8 min
    assert overrides[-2:] == ["--ckpt_path", "last"] and "--trainer.max_time" not in overrides
    assert step["stage1c"].done() == stage1c  # its run ended (the marker), whatever its checkpoint's step
    step["stage1a"].run()
    assert value(fits[-1][1], "--trainer.max_steps") == str(round(400 * 1.32 / 1.9))  # 1.32 of 1.9 minutes
    step["stage2a"].run()
    assert "path: runs/demo/builtin-tokens/tts" in Path(fits[-1][0]).read_text()
    step["voice_lm"].run()
    config, overrides = fits[-1]
    assert value(overrides, "--trainer.max_time") == "00:00:03:30"
    assert value(overrides, "--trainer.default_root_dir") == "runs/demo/voice_lm"
    assert "train_split: train\n" in Path(config).read_text()  # the voice LM's own split is --full's
    assert step["voice_lm"].done() == Path("runs/demo/voice_lm/finished")
    assert reports[0] == Path("runs/demo/eval-asr/report.md")
    assert demo.max_time(1.5) == "00:00:01:30" and demo.max_time(75) == "00:01:15:00"

    full = {s.key: s for s in demo.demo_steps(demo.PLANS["full"], "full")[0]}
    full["stage2a"].run()
    config, overrides = fits[-1]
    assert "--trainer.max_time" not in overrides and "--trainer.max_steps" not in overrides
    assert "path: data/builtin-tokens/tts" in Path(config).read_text()
    assert value(overrides, "--trainer.default_root_dir") == "runs/tiny/stage2a"
    assert json.loads(value(overrides, "--model.init_args.init_blocks")) == {
        "voice_token_lm": "runs/voice_token_lm_tts/checkpoints/last.ckpt",
        "token2wav.flow": "runs/token2wav_flow/checkpoints/last.ckpt",
    }
    full["flow"].run()
    assert value(fits[-1][1], "--trainer.default_root_dir") == "runs/token2wav_flow"
    assert full["flow"].done() == Path("runs/token2wav_flow/finished")
    with pytest.raises(RuntimeError, match="wrote no last.ckpt"):
        monkeypatch.setattr(demo, "_fit", lambda config, overrides: None)
        full["stage3"].run()
    assert full["stage3"].done() is None


def test_demo_rebuilds_a_short_or_stale_tts_folder_and_retokenizes_a_newer_corpus(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from datasets import Dataset, DatasetDict
    from minmo_lightning.datamodules.corpus_plan import SIZES
    from minmo_lightning.datamodules.corpus_tasks import CORPUS_TASKS

    from minmo_lightning import demo

    monkeypatch.setattr(demo, "DATA", tmp_path / "data")

    def write(task: str, splits: dict[str, Dataset] | None = None, plan: int | None = None) -> None:
        """A task folder as synth-data writes it (``plan``: the version it records; None: none recorded)."""
        folder = tmp_path / "data" / task
        DatasetDict(splits or {"train": Dataset.from_dict({"text": ["hello"]})}).save_to_disk(str(folder))
        if plan is not None:
            layout = json.loads((folder / "dataset_dict.json").read_text())
            (folder / "dataset_dict.json").write_text(json.dumps({**layout, "plan_version": plan}))

    for task in CORPUS_TASKS:
        write(task, plan=CORPUS_TASKS[task].plan_version)
    size = SIZES["default"]
    short = {"train": Dataset.from_dict({"text": ["hello"] * 3})}
    write("tts", short, plan=CORPUS_TASKS["tts"].plan_version)
    assert demo._missing_families() == ["tts"]  # written before the TTS set had its own 6000 sentences
    enough = Dataset.from_dict({"text": ["hello"] * (size.tts_train + size.tts_more_train)})
    write("tts", {"train": enough}, plan=CORPUS_TASKS["tts"].plan_version)
    assert demo._missing_families() == ["tts"]  # and before the voice LM had a split of its own
    assert demo._missing_families(voice_lm_split=False) == []  # which only --full's voice LM reads
    voice = Dataset.from_dict({"text": ["hello"] * size.tts_voice_lm_train})
    write("tts", {"train": enough, "voice_lm_train": voice}, plan=CORPUS_TASKS["tts"].plan_version)
    assert demo._missing_families() == []

    # the same sizes, written by an earlier plan of the TTS set (other sentences): written again, and said
    write("tts", {"train": enough, "voice_lm_train": voice})
    said: list[str] = []
    assert demo._missing_families(log=said.append) == ["tts"]
    assert said == [
        f"{tmp_path / 'data' / 'tts'} was written by plan 1 of the tts set and this version draws plan "
        f"{CORPUS_TASKS['tts'].plan_version}: writing it again (runs trained on the earlier rows are kept; "
        "delete them to retrain)"
    ]
    write("asr", plan=None)  # a set whose plan never changed reads as current without a recorded version
    assert demo._missing_families(log=said.append) == ["tts"]

    tokenizer, tokens = tmp_path / "tokenizer.ckpt", tmp_path / "tokens" / "s2s"
    tokenizer.write_bytes(b"weights")
    tokens.mkdir(parents=True)
    (tokens / "prepare_report.json").write_text(json.dumps({"checkpoint": str(tokenizer.resolve())}))
    os.utime(tokenizer, (1, 1))
    os.utime(tmp_path / "data" / "s2s" / "dataset_dict.json", (2, 2))
    assert demo._tokens_current(tokens, tokenizer)
    os.utime(tmp_path / "data" / "s2s" / "dataset_dict.json")  # the corpus was written again since
    assert not demo._tokens_current(tokens, tokenizer)


def test_demo_prints_each_task_headline_beside_its_chance(tmp_path) -> None:
    from minmo_lightning import demo

    scored = {"lid": {"accuracy": 0.61, "chance_uniform": 0.2}, "asr": {"wer": 0.05}}
    for task, summary in scored.items():
        (tmp_path / task).mkdir()
        (tmp_path / task / "metrics.json").write_text(json.dumps({"task": task, "summary": summary}))
    reports = [tmp_path / t / "report.md" for t in ("lid", "asr", "sqa")]  # sqa was not scored
    assert demo.headlines(reports) == [
        "  lid       accuracy 0.610  (chance_uniform 0.200)",
        "  asr       wer 0.050",
    ]


def test_eta_is_the_earliest_of_the_step_budget_and_max_time() -> None:
    from types import SimpleNamespace

    from lightning.pytorch.callbacks import Timer

    timer = Timer(duration="00:00:10:00")
    timer.time_remaining = lambda stage: 120.0  # the run's max_time leaves two minutes
    trainer = SimpleNamespace(
        global_step=10, callbacks=[], estimated_stepping_batches=40
    )  # e.g. 2 epochs x 20
    bar = PlainProgressBar(every=0)
    assert bar.total_steps(trainer) == 40
    assert bar.eta(trainer, 40, steps_per_second=0.1) == pytest.approx(300)  # 30 steps at 0.1/s
    trainer.callbacks.append(timer)
    assert bar.eta(trainer, 40, steps_per_second=0.1) == 120
    assert bar.total_steps(SimpleNamespace(estimated_stepping_batches=-1)) == float("inf")  # iterable data
