"""Per-GPU memory of a MinMo stage under each strategy, computed from its parameters (counts, dtypes, what
trains), so a plan for 8 x 80 GB needs no cluster.

What a GPU holds besides activations:

- weights: in their own dtype (the LLM's ``dtype: bfloat16``, LoRA adapters fp32), or bf16 under ``bf16-true``;
- for what trains: gradients (the weights' dtype) and AdamW's two moments (torch keeps them in the weights'
  dtype); DeepSpeed instead keeps bf16 weights and gradients plus fp32 master weights and moments (2 + 2 + 12
  bytes per trained parameter, the ZeRO paper's accounting);
- while a step runs: the weights FSDP2 / ZeRO-3 gather (each sharded block's own weights stay gathered from its
  forward to its backward; layers are gathered one at a time, with the next one prefetched) and one layer's
  unreduced gradients.

DDP keeps all of it on every GPU (``gradient_as_bucket_view``: no second copy of the gradients); FSDP2 divides
what ``sharding.py`` shards by the world size and keeps the replicated frozen blocks whole; ZeRO-3 divides
everything. Activations depend on the batch: they are measured (``benchmarks/train_step.py``), not computed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from torch import nn

from minmo_lightning.sharding import is_sharded_placement

STRATEGIES = ("ddp", "fsdp2", "deepspeed_zero3")
GIB = 2**30


@dataclass(frozen=True)
class SlotMemory:
    """Bytes one GPU holds for a slot."""

    slot: str
    placement: str  # "sharded" or "replicated"
    weights: float
    gradients: float
    optimizer: float

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer


@dataclass(frozen=True)
class MemoryPlan:
    strategy: str
    world_size: int
    precision: str
    slots: list[SlotMemory]
    gathered: float  # transient bytes while a step runs (gathered weights, unreduced gradients)

    @property
    def states(self) -> float:
        return sum(s.total for s in self.slots)

    @property
    def total(self) -> float:
        return self.states + self.gathered

    def activation_room(self, gpu_gib: float) -> float:
        """GiB left for activations on a GPU of ``gpu_gib``."""
        return gpu_gib - self.total / GIB


def _weight_bytes(param: nn.Parameter, precision: str, strategy: str) -> int:
    if not param.is_floating_point():
        return param.element_size()
    if precision.startswith("bf16") and (precision == "bf16-true" or strategy == "deepspeed_zero3"):
        return 2  # Lightning casts every weight to bf16 (bf16-true); DeepSpeed's bf16 mode does the same
    return param.element_size()


def _trained_bytes(weight: int, precision: str, strategy: str) -> tuple[int, int]:
    """(gradient, optimizer) bytes per trained parameter whose weight takes ``weight`` bytes."""
    if strategy == "deepspeed_zero3":
        return (2, 12) if precision.startswith(("bf16", "16")) else (4, 8)
    return weight, 2 * weight


def _units(block: nn.Module) -> list[list[nn.Parameter]]:
    """The block's FSDP2 units as parameter lists: its declared layers, then the rest of it (its root)."""
    layers = [list(layer.parameters()) for layer in block.shard_units()]
    inside = {id(p) for unit in layers for p in unit}
    return [*layers, [p for p in block.parameters() if id(p) not in inside]]


def memory_plan(
    model: nn.Module, slots: Iterable[str], strategy: str, world_size: int, precision: str
) -> MemoryPlan:
    """What each of ``world_size`` GPUs holds for ``model`` (its stage applied: ``configure_model``)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy {strategy!r} is not one of {', '.join(STRATEGIES)}")
    rows, roots, layers, layer_grads = [], 0.0, [0.0], [0.0]
    for slot in slots:
        block = getattr(model, slot)
        sharded = strategy == "deepspeed_zero3" or (strategy == "fsdp2" and is_sharded_placement(block))
        split = world_size if sharded else 1
        weights = gradients = optimizer = 0.0
        for param in block.parameters():
            size = _weight_bytes(param, precision, strategy)
            weights += param.numel() * size
            if param.requires_grad:
                grad, state = _trained_bytes(size, precision, strategy)
                gradients += param.numel() * grad
                optimizer += param.numel() * state
        rows.append(
            SlotMemory(
                slot,
                "sharded" if sharded else "replicated",
                weights / split,
                gradients / split,
                optimizer / split,
            )
        )
        if sharded and world_size > 1:
            *unit_layers, root = _units(block)
            roots += sum(p.numel() * _weight_bytes(p, precision, strategy) for p in root)
            for unit in unit_layers:
                layers.append(sum(p.numel() * _weight_bytes(p, precision, strategy) for p in unit))
                layer_grads.append(
                    sum(p.numel() * _weight_bytes(p, precision, strategy) for p in unit if p.requires_grad)
                )
    largest = sorted(layers, reverse=True)[:2]
    gathered = (roots + sum(largest)) * (1 - 1 / world_size) + max(layer_grads)
    return MemoryPlan(strategy, world_size, precision, rows, gathered)


def format_plan(plan: MemoryPlan, gpu_gib: float | None = None) -> str:
    """Plain-text table: GiB per GPU by slot, the transient gathered weights, the total and the room left."""
    header = f"{'slot':<18}{'placement':<12}{'weights':>10}{'grads':>10}{'AdamW':>10}{'total':>10}"
    lines = [
        f"{plan.strategy} over {plan.world_size} GPU(s), {plan.precision}: GiB per GPU before activations",
        header,
        "-" * len(header),
    ]
    for s in plan.slots:
        figures = (s.weights, s.gradients, s.optimizer, s.total)
        lines.append(f"{s.slot:<18}{s.placement:<12}" + "".join(f"{v / GIB:>10.2f}" for v in figures))
    lines.append(f"{'gathered while a step runs':<60}{plan.gathered / GIB:>10.2f}")
    lines.append(f"{'all':<60}{plan.total / GIB:>10.2f}")
    if gpu_gib is not None:
        lines.append(
            f"{f'left for activations on {gpu_gib:g} GiB':<60}{plan.activation_room(gpu_gib):>10.2f}"
        )
    return "\n".join(lines)
