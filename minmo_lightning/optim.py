"""One optimizer set-up for every block and the composite: AdamW, parameter groups, warmup-cosine.

Each caller states its numbers (learning rate, betas, weight decay, warmup, the cosine's floor) so the
schedules that differ between blocks differ in data, not in code. Norm gains and biases (parameters with
fewer than two dimensions) never decay, as in NeMo's and litgpt's recipes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Timer


@dataclass(frozen=True)
class OptimizerConfig:
    """AdamW and its warmup-cosine schedule.

    ``floor`` is the fraction of ``learning_rate`` the cosine ends at; ``cosine=False`` holds the rate
    constant after warmup. ``follow_timer``: under ``Trainer(max_time=...)`` the cosine follows whichever
    budget is further along, the steps or the wall clock, so a run that stops on its time ends annealed (for
    blocks trained on a time budget; off by default, so a max_time used as a job's safety cap leaves the
    schedule to the steps). ``max_warmup_fraction`` caps the warmup at
    that fraction of the run (a short run still reaches its peak rate).
    """

    learning_rate: float
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    floor: float = 0.1
    cosine: bool = True
    follow_timer: bool = False
    max_warmup_fraction: float | None = None

    @classmethod
    def from_hparams(cls, hparams: Any, **settings: Any) -> OptimizerConfig:
        """A block's own ``learning_rate`` and, where it has them, ``weight_decay`` and ``warmup_steps``,
        with the block's fixed ``settings`` (betas, floor, ...)."""
        own = {k: hparams[k] for k in ("learning_rate", "weight_decay", "warmup_steps") if k in hparams}
        return cls(**{**own, **settings})


def parameter_groups(module: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters in two groups: matrices decay, norms and biases do not."""
    decay, no_decay = [], []
    for param in module.parameters():
        if param.requires_grad:
            (decay if param.dim() >= 2 else no_decay).append(param)
    if not decay and not no_decay:
        raise ValueError("nothing to train: every parameter is frozen (set a slot to `full` or `lora`)")
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine(step: int, warmup: int, total: float, floor: float, progress_floor: float = 0.0) -> float:
    """Learning-rate factor: linear warmup to 1, then cosine from 1 down to ``floor`` at ``total`` steps.

    ``progress_floor`` lets another clock (wall time) push the cosine ahead of the step count.
    """
    if step < warmup:
        return (step + 1) / warmup
    if not math.isfinite(total) or total <= warmup:
        progress = progress_floor
    else:
        progress = max((step - warmup) / (total - warmup), progress_floor)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def configure_adamw(module: L.LightningModule, config: OptimizerConfig) -> dict[str, Any]:
    """What ``configure_optimizers`` returns: AdamW over ``parameter_groups`` and a per-step schedule."""
    optimizer = torch.optim.AdamW(
        parameter_groups(module, config.weight_decay), lr=config.learning_rate, betas=config.betas
    )
    trainer = module._trainer
    total = float(trainer.estimated_stepping_batches) if trainer is not None else math.inf
    warmup = max(int(config.warmup_steps), 0)
    if config.max_warmup_fraction is not None and math.isfinite(total):
        warmup = min(warmup, max(int(total * config.max_warmup_fraction), 1))
    timer = _timer(trainer) if config.follow_timer else None

    def schedule(step: int) -> float:
        if not config.cosine:
            return min(1.0, (step + 1) / warmup) if warmup else 1.0
        by_time = 0.0
        if timer is not None and timer.time_remaining("train") is not None:
            elapsed = timer.time_elapsed("train")
            by_time = elapsed / max(elapsed + timer.time_remaining("train"), 1e-9)
        return warmup_cosine(step, warmup, total, config.floor, by_time)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _timer(trainer: L.Trainer | None) -> Timer | None:
    if trainer is None:
        return None
    return next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
