"""Training stages as data: per slot ``frozen | full | lora``, compiled to parameter-name rules.

A stage recipe says, for every slot the model holds, whether it trains. That compiles to an ordered list
of regex rules over parameter names (later rules win, as in NeMo's freeze/keep lists). Rules are applied
once the model is materialised (before any sharding) and re-checked when the optimizer is built; a rule
that matches no parameter is an error, because it almost always means a typo or a missing block.

Stale heads: a block may carry a head that only its own recipe trains (``standalone_head``: parameter-name
prefixes, e.g. SenseVoice's CTC/rich-tag head ``ctc.``). A stage that trains the rest of the block leaves the
head reading features it was not trained on, unless it trains the head beside it (``MinMo(encoder_head_weight=
...)``: the block's own loss, ``VoiceEncoder.head_loss``, on the batches that carry its labels). Otherwise the
stage records why in the block's ``head_stale`` hyperparameter (saved with its spec in every checkpoint and
export, inherited by the stages that start from it), and the block refuses to use the head.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from torch import nn

from minmo_lightning.checkpoints import read_checkpoint

SlotMode = Literal["frozen", "full", "lora"]
MODES: tuple[str, ...] = ("frozen", "full", "lora")


class StageError(ValueError):
    """A stage that cannot be applied as written."""


@dataclass(frozen=True)
class Rule:
    pattern: str
    trainable: bool
    origin: str  # what in the recipe produced it, for error messages


def compile_stage(
    trainable: Mapping[str, str],
    slots: Iterable[str],
    train_patterns: Iterable[str] = (),
    freeze_patterns: Iterable[str] = (),
    lora_pattern: str = "lora_",
    standalone_heads: Mapping[str, Iterable[str]] | None = None,
) -> list[Rule]:
    """Turn ``{slot: mode}`` plus extra patterns into ordered rules.

    Every present slot must be named (no silent default); naming an absent slot is an error too. A block's
    ``standalone_head`` (``standalone_heads``: slot -> parameter-name prefixes) stays frozen whatever its
    slot's mode: no MinMo objective gives it a loss, and a trainable weight that never gets a gradient stops
    DDP at its first step and leaves FSDP2's optimizer state without it. ``train_patterns`` can still
    reach it.
    """
    slots = list(slots)
    unknown = sorted(set(trainable) - set(slots))
    if unknown:
        raise StageError(
            f"stage names slot(s) {', '.join(unknown)} that this model does not have; its slots are {', '.join(slots)}"
        )
    unstated = [s for s in slots if s not in trainable]
    if unstated:
        raise StageError(
            "stage does not say whether these slots train: "
            + ", ".join(unstated)
            + f"; add `{unstated[0]}: frozen` (or full / lora) under model.init_args.trainable"
        )
    rules: list[Rule] = []
    for slot in slots:
        mode = trainable[slot]
        if mode not in MODES:
            raise StageError(f"trainable.{slot} is {mode!r}; choose one of {', '.join(MODES)}")
        prefix = rf"^{re.escape(slot)}\."
        origin = f"trainable.{slot}: {mode}"
        rules.append(Rule(prefix, mode == "full", origin))
        if mode == "lora":
            rules.append(Rule(prefix + rf".*{lora_pattern}", True, origin))
        heads = (standalone_heads or {}).get(slot, ())
        rules += [Rule(prefix + re.escape(h), False, f"{slot}'s standalone_head {h!r}") for h in heads]
    rules += [Rule(p, True, f"train_patterns: {p}") for p in train_patterns]
    rules += [Rule(p, False, f"freeze_patterns: {p}") for p in freeze_patterns]
    return rules


def expected_trainable(model: nn.Module, rules: list[Rule]) -> dict[str, bool]:
    """Parameter name -> whether the rules make it trainable; raises on a rule matching nothing."""
    names = [name for name, _ in model.named_parameters()]
    state = dict.fromkeys(names, True)
    for rule in rules:
        regex = re.compile(rule.pattern)
        matched = [n for n in names if regex.search(n)]
        if not matched:
            raise StageError(
                f"stage rule {rule.pattern!r} (from {rule.origin}) matches no parameter; "
                f"parameter names look like: {', '.join(names[:3])} ..."
            )
        for name in matched:
            state[name] = rule.trainable
    return state


def apply_stage(model: nn.Module, rules: list[Rule]) -> None:
    state = expected_trainable(model, rules)
    for name, param in model.named_parameters():
        param.requires_grad_(state[name])


def verify_stage(model: nn.Module, rules: list[Rule]) -> None:
    """Raise if anything changed ``requires_grad`` since the stage was applied."""
    state = expected_trainable(model, rules)
    wrong = [n for n, p in model.named_parameters() if p.requires_grad != state[n]]
    if wrong:
        raise StageError(
            f"{len(wrong)} parameter(s) no longer follow the stage rules (e.g. {wrong[0]}); "
            "something changed requires_grad after the stage was applied"
        )


#: the block hyperparameter that says why its ``standalone_head`` is stale (None: it is not)
HEAD_STALE = "head_stale"


def heads_left_stale(model: nn.Module, rules: list[Rule], slots: Iterable[str]) -> list[str]:
    """Slots whose block has a ``standalone_head`` that stays frozen while these rules train the rest of
    the block (a head that trains beside it, ``MinMo(encoder_head_weight=...)``, stays true)."""
    trainable = expected_trainable(model, rules)
    stale = []
    for slot in slots:
        head = tuple(f"{slot}.{prefix}" for prefix in getattr(getattr(model, slot), "standalone_head", ()))
        ours = [n for n in trainable if n.startswith(f"{slot}.")]
        body = [n for n in ours if not n.startswith(head)]
        head_trains = all(trainable[n] for n in ours if n.startswith(head))
        if head and any(trainable[n] for n in body) and not head_trains:
            stale.append(slot)
    return stale


def mark_stale_heads(model: nn.Module, rules: list[Rule]) -> None:
    """Record in each block whose head this stage leaves behind why it is stale (``HEAD_STALE``)."""
    trainable, objective = model.hparams.trainable, model.hparams.objective
    adopt_stale_heads(
        model,
        {
            slot: f"a MinMo stage (objective {objective}, trainable.{slot}: {trainable[slot]}) trained the rest "
            "of the block without it"
            for slot in heads_left_stale(model, rules, model.slots)
        },
    )


def adopt_stale_heads(model: nn.Module, reasons: Mapping[str, str]) -> None:
    """Mark these slots' heads stale (the first reason recorded is kept) and refresh the block specs that
    the composite saves, so its checkpoints and exports carry the mark."""
    for slot, reason in reasons.items():
        block = getattr(model, slot, None)
        if block is None or HEAD_STALE not in block.hparams:
            continue
        if block.hparams[HEAD_STALE] is None:
            block.hparams[HEAD_STALE] = reason
        model.hparams[slot] = block.spec()


def recorded_stale_heads(hyper_parameters: Mapping[str, Any]) -> dict[str, str]:
    """Slot -> reason, from a composite checkpoint's hyperparameters (its blocks' saved specs)."""
    reasons = {}
    for slot, spec in hyper_parameters.items():
        args = spec.get("init_args") if isinstance(spec, Mapping) else None
        if isinstance(args, Mapping) and args.get(HEAD_STALE):
            reasons[slot] = args[HEAD_STALE]
    return reasons


def starting_point_stale_heads(
    init_checkpoint: str | None, init_blocks: Mapping[str, str] | None
) -> dict[str, str]:
    """What the stage's starting points record as stale: a previous stage's ``.ckpt`` (its hyperparameters),
    a block's own ``.ckpt`` or an exported ``model.safetensors`` (the ``config.json`` beside it)."""
    reasons = {}
    if init_checkpoint and not str(init_checkpoint).endswith(".safetensors"):
        reasons.update(
            recorded_stale_heads(read_checkpoint(init_checkpoint, mmap=True).get("hyper_parameters") or {})
        )
    for slot, path in (init_blocks or {}).items():
        path = Path(path)
        if path.suffix == ".safetensors":
            config = path.parent / "config.json"
            args = json.loads(config.read_text()).get("init_args", {}) if config.is_file() else {}
        else:
            args = read_checkpoint(path, mmap=True).get("hyper_parameters") or {}
        if args.get(HEAD_STALE):
            reasons[slot] = args[HEAD_STALE]
    return reasons


@dataclass(frozen=True)
class SlotSummary:
    slot: str
    mode: str
    trainable: int
    total: int


def summarize(model: nn.Module, trainable: Mapping[str, str], slots: Iterable[str]) -> list[SlotSummary]:
    rows = []
    for slot in slots:
        params = list(getattr(model, slot).parameters())
        rows.append(
            SlotSummary(
                slot,
                trainable.get(slot, "-"),
                sum(p.numel() for p in params if p.requires_grad),
                sum(p.numel() for p in params),
            )
        )
    return rows


def format_summary(rows: list[SlotSummary]) -> str:
    """Plain-text table (goes to the log and the console)."""
    header = f"{'slot':<18}{'mode':<8}{'trainable':>16}{'total':>16}{'%':>8}"
    lines = [header, "-" * len(header)]
    for r in rows:
        share = 100.0 * r.trainable / r.total if r.total else 0.0
        lines.append(f"{r.slot:<18}{r.mode:<8}{r.trainable:>16,}{r.total:>16,}{share:>7.1f}%")
    trainable, total = sum(r.trainable for r in rows), sum(r.total for r in rows)
    lines.append(f"{'all':<26}{trainable:>16,}{total:>16,}{100.0 * trainable / max(total, 1):>7.1f}%")
    return "\n".join(lines)
