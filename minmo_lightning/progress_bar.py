"""``PlainProgressBar``: Lightning's progress bar as plain lines, for logs that are not a terminal.

``minmo fit|validate|test|predict`` use it instead of the Rich bar when stdout is not a terminal. Every
``every`` seconds of training it prints the epoch, step / total steps, the logged train loss, steps/s (and
samples/s when the batch size is known) and the ETA (from ``max_steps``, the epochs times the epoch length,
or ``max_time``, whichever ends first), and one line of metrics after each validation.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

import torch
from lightning.pytorch.callbacks import ProgressBar, Timer

from minmo_lightning.progress import ProgressLine, default_every, format_duration, format_field


def batch_size(batch: Any) -> int | None:
    """Rows in a batch when it says: the ``ids`` of the minmo datamodules, or a leading tensor's first dim."""
    if isinstance(batch, Mapping) and isinstance(batch.get("ids"), (list, tuple)):
        return len(batch["ids"])
    if isinstance(batch, (list, tuple)) and batch:
        batch = batch[0]
    if isinstance(batch, torch.Tensor) and batch.ndim > 0:
        return int(batch.shape[0])
    return None


class PlainProgressBar(ProgressBar):
    """Lightning progress as plain lines every ``every`` seconds (see the module docstring)."""

    def __init__(self, every: float | None = None, stream: TextIO | None = None) -> None:
        super().__init__()
        self.every = default_every() if every is None else every
        self._stream = stream
        self._enabled = True
        self._eval: ProgressLine | None = None

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def _print(self, line: str) -> None:
        if self._enabled:
            print(line, file=self._stream or sys.stdout, flush=True)

    # ---- training ------------------------------------------------------------------------------
    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._started = self._last = time.monotonic()
        self._first_step, self._samples, self._epoch = trainer.global_step, 0, trainer.current_epoch

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._epoch, size = trainer.current_epoch, batch_size(batch)
        self._samples = None if size is None or self._samples is None else self._samples + size
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            self._print(self.train_line(trainer, now))

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._print(self.train_line(trainer, time.monotonic(), final=True))

    def total_steps(self, trainer: Any) -> float:
        """Optimizer steps the run will take: ``max_steps`` or epochs x epoch length (inf when unknown)."""
        total = trainer.estimated_stepping_batches
        return total if total > 0 else math.inf

    def train_line(self, trainer: Any, now: float, final: bool = False) -> str:
        step, elapsed = trainer.global_step, now - self._started
        total = self.total_steps(trainer)
        parts = [f"epoch {self._epoch}"]  # Lightning counts the epoch a run stops in as ended
        known = math.isfinite(total)
        parts.append(f"step {step}/{int(total)} ({100 * step / total:.0f}%)" if known else f"step {step}")
        loss = self.train_loss(trainer)
        if loss is not None:
            parts.append(f"loss {format_field(loss)}")
        steps_per_second = (step - self._first_step) / elapsed if elapsed > 0 else 0.0
        rates = f"{steps_per_second:.3g} steps/s"
        if self._samples is not None and elapsed > 0:
            rates += f", {self._samples / elapsed:.3g} samples/s"
        parts += [rates, f"elapsed {format_duration(elapsed)}"]
        if final:
            parts.append("done")
        else:
            parts.append(f"ETA {format_duration(self.eta(trainer, total, steps_per_second))}")
        return "train: " + " | ".join(parts)

    @staticmethod
    def train_loss(trainer: Any) -> Any:
        """The logged train loss: ``train/loss`` (or ``train_loss``), else the first train metric with "loss"."""
        metrics = trainer.progress_bar_metrics
        for key in ("train/loss", "train_loss", "loss"):
            if key in metrics:
                return metrics[key]
        return next((v for k, v in metrics.items() if k.startswith("train") and "loss" in k), None)

    def eta(self, trainer: Any, total: float, steps_per_second: float) -> float:
        """Seconds left: the earliest of the step budget at the current pace and ``max_time``'s timer."""
        left = (total - trainer.global_step) / steps_per_second if steps_per_second > 0 else math.inf
        for callback in trainer.callbacks:
            if isinstance(callback, Timer) and callback.time_remaining("train") is not None:
                left = min(left, callback.time_remaining("train"))
        return left

    # ---- evaluation loops ----------------------------------------------------------------------
    def _start_eval(self, trainer: Any, name: str, total: float) -> None:
        if trainer.sanity_checking:
            self._eval = None
            return
        known = int(total) if math.isfinite(total) and total > 0 else None
        self._eval = ProgressLine(name, known, unit="batches", every=self.every, stream=self._stream)

    def _eval_batch(self, trainer: Any) -> None:
        if self._eval is not None and self._enabled:
            self._eval.advance()

    def _end_eval(self) -> None:
        if self._eval is not None and self._enabled:
            self._eval.close()

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        self._start_eval(trainer, "validation", self.total_val_batches)

    def on_validation_batch_end(self, trainer: Any, *args: Any, **kwargs: Any) -> None:
        self._eval_batch(trainer)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking or self._eval is None:
            return
        metrics = {k: v for k, v in trainer.progress_bar_metrics.items() if k.startswith("val")}
        summary = ", ".join(f"{k} {format_field(v)}" for k, v in metrics.items())
        self._print(f"validation at step {trainer.global_step}: {summary or 'no metrics logged'}")

    def on_test_start(self, trainer: Any, pl_module: Any) -> None:
        self._start_eval(trainer, "test", sum(trainer.num_test_batches))

    def on_test_batch_end(self, trainer: Any, *args: Any, **kwargs: Any) -> None:
        self._eval_batch(trainer)

    def on_test_end(self, trainer: Any, pl_module: Any) -> None:
        self._end_eval()

    def on_predict_start(self, trainer: Any, pl_module: Any) -> None:
        self._start_eval(trainer, "predict", sum(trainer.num_predict_batches))

    def on_predict_batch_end(self, trainer: Any, *args: Any, **kwargs: Any) -> None:
        self._eval_batch(trainer)

    def on_predict_end(self, trainer: Any, pl_module: Any) -> None:
        self._end_eval()
