"""Plain progress lines: the helper tools call, and the trainer's bar where stdout is not a terminal."""

from __future__ import annotations

import io
import re

import lightning as L
import pytest
import torch
from lightning.pytorch.demos.boring_classes import BoringModel, RandomDataset
from torch.utils.data import DataLoader

from minmo_lightning.progress import PlainProgressBar, ProgressLine, format_duration, plain_progress_wanted


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
