"""The shared AdamW schedule: warmup, cosine, and a block trained on a time budget ending annealed."""

from __future__ import annotations

from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Timer

from minmo_lightning.optim import OptimizerConfig, configure_adamw


def scheduled(config: OptimizerConfig, steps: int, elapsed: float, remaining: float | None):
    """The learning rate factor at ``steps`` for a run of 1,000 steps whose timer reads ``elapsed`` seconds
    with ``remaining`` left (None: no max_time)."""
    module = L.LightningModule()
    module.layer = torch.nn.Linear(2, 2)
    timer = Timer(duration="00:00:10:00")
    timer.time_elapsed = lambda stage: elapsed
    timer.time_remaining = lambda stage: remaining
    module._trainer = SimpleNamespace(estimated_stepping_batches=1000, callbacks=[timer])
    scheduler = configure_adamw(module, config)["lr_scheduler"]["scheduler"]
    return scheduler.lr_lambdas[0](steps)


def test_the_cosine_follows_whichever_budget_is_further_along() -> None:
    config = OptimizerConfig(learning_rate=1.0, warmup_steps=10, floor=0.1, follow_timer=True)
    assert scheduled(config, 4, 0.0, None) == pytest.approx(0.5)  # warmup
    assert scheduled(config, 505, 0.0, None) == pytest.approx(0.55)  # half the steps: half way down
    assert scheduled(config, 100, 300.0, 300.0) == pytest.approx(0.55)  # half the time, a tenth of the steps
    assert scheduled(config, 100, 600.0, 0.0) == pytest.approx(0.1)  # out of time: annealed to the floor
    assert scheduled(config, 100, 600.0, None) > 0.9  # no max_time: the steps alone
    held = OptimizerConfig(learning_rate=1.0, warmup_steps=10)
    assert scheduled(held, 100, 600.0, 0.0) > 0.9  # by default max_time is a cap: the steps lead
    constant = OptimizerConfig(learning_rate=1.0, warmup_steps=10, cosine=False)
    assert scheduled(constant, 100, 600.0, 0.0) == 1.0
