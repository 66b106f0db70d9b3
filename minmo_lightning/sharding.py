"""FSDP2 for ``MinMo`` under Lightning's ``ModelParallelStrategy``: which weights each rank holds.

``MinMo.configure_model`` calls ``shard_model`` once the blocks have materialised and the stage's rules have
set what trains (FSDP2 fixes each unit's dtype rules from its trainable parameters), in this order:

1. activation checkpointing is already in place: each block applies its own when it materialises (its
   ``gradient_checkpointing``: non-reentrant recomputation of each layer, inside which FSDP2 gathers the
   layer again), so nothing wraps a layer twice;
2. ``fully_shard`` on every repeated layer a block declares (``Block.shard_units``): a rank gathers one layer's
   weights at a time;
3. ``fully_shard`` on the block itself, for its remaining weights (embeddings, heads, norms), gathered around
   ``forward`` and the methods it lists in ``Block.sharded_methods``. Each block is its own root: Lightning
   calls the composite's ``training_step``, never its ``forward``, so hooks on the composite would never run.

Over several processes only rank 0 builds the weights (reads the pretrained folders and the stage's starting
point); the others build on the meta device, and after ``fully_shard`` each rank receives what it holds from
rank 0 one tensor at a time (``weights_from_rank0``): one full copy of the model in host memory, on global
rank 0, not one per process.

A frozen block whose ``frozen_sharding`` is ``replicate`` stays whole on every rank (no all-gather; its
streaming methods reach any submodule); a block that trains is always sharded. Frozen weights keep their
block's dtype (the LLM's ``dtype: bfloat16``) and get no gradient or optimizer state: FSDP2 shards per
parameter, so LoRA adapters beside frozen weights in one layer do not give the frozen weights fp32 gradients
(the FSDP1 flat-parameter waste litgpt users hit, litgpt #1417).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from lightning.pytorch.utilities import rank_zero_info
from torch import nn

#: ``Block.frozen_sharding`` values
FROZEN_SHARDING = ("replicate", "shard")


@dataclass(frozen=True)
class SlotShard:
    """How one slot sits on a rank after ``shard_model``."""

    slot: str
    placement: str  # "sharded" or "replicated"
    units: int  # FSDP2 units (its layers and the block itself); 0 when replicated
    parameters: int
    local_bytes: int  # parameter bytes this rank holds
    dtypes: str  # of its frozen and its trained weights, e.g. "bfloat16 / float32" (LoRA beside a bf16 LLM)


def is_sharded_placement(block: nn.Module) -> bool:
    """Whether FSDP2 shards ``block``: it trains, or it is frozen and says ``frozen_sharding: shard``."""
    mode = getattr(block, "frozen_sharding", "replicate")
    if mode not in FROZEN_SHARDING:
        raise ValueError(
            f"{type(block).__name__}.frozen_sharding is {mode!r}; choose one of {', '.join(FROZEN_SHARDING)}"
        )
    return mode == "shard" or any(p.requires_grad for p in block.parameters())


def data_parallel_mesh(device_mesh: Any) -> Any:
    """The mesh FSDP2 shards over: Lightning's ``data_parallel`` dimension, with no tensor parallelism.

    ``ModelParallelStrategy`` defaults to ``data_parallel_size`` = nodes and ``tensor_parallel_size`` = GPUs
    per node; MinMo has no tensor-parallel plan, so such a mesh would neither shard within a node nor give its
    GPUs different batches.
    """
    names = device_mesh.mesh_dim_names or ()
    tensor_parallel = device_mesh["tensor_parallel"].size() if "tensor_parallel" in names else 1
    if tensor_parallel != 1:
        world = device_mesh.size()
        raise ValueError(
            f"the device mesh has tensor_parallel_size={tensor_parallel}, but MinMo shards with FSDP2 only (no "
            f"tensor parallelism); set trainer.strategy.init_args.data_parallel_size: {world} (devices x "
            "num_nodes) and tensor_parallel_size: 1, or compose recipes/trainer/fsdp2.yaml (FSDP2Strategy sets "
            "them for any launch)"
        )
    return device_mesh["data_parallel"] if "data_parallel" in names else device_mesh


def shard_model(model: nn.Module, slots: Iterable[str], device_mesh: Any) -> list[SlotShard]:
    """Apply FSDP2 to every slot of ``model`` (see the module docstring) and say what each rank holds."""
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    mesh = data_parallel_mesh(device_mesh)
    rows = []
    for slot in slots:
        block = getattr(model, slot)
        units = 0
        if is_sharded_placement(block):
            for layer in block.shard_units():
                fully_shard(layer, mesh=mesh)
                units += 1
            fully_shard(block, mesh=mesh)
            for method in block.sharded_methods:
                register_fsdp_forward_method(block, method)
            units += 1
        rows.append(
            SlotShard(
                slot,
                "sharded" if units else "replicated",
                units,
                sum(p.numel() for p in block.parameters()),
                local_parameter_bytes(block),
                weight_dtypes(block),
            )
        )
    _require_trainable_sharded(model)
    rank_zero_info(format_shards(rows, mesh.size()))
    return rows


def builds_elsewhere(device_mesh: Any) -> bool:
    """Whether this process leaves building the weights to rank 0: one of several FSDP2 ranks, not the first."""
    import torch.distributed as dist

    return device_mesh is not None and device_mesh.size() > 1 and dist.get_rank() != 0


def full_weights(model: nn.Module, slots: Iterable[str], device_mesh: Any) -> dict[str, dict] | None:
    """Rank 0's whole weights per slot, taken before ``fully_shard`` replaces them (None where there is
    nothing to hand out: one process, or a rank other than 0)."""
    import torch.distributed as dist

    if device_mesh is None or device_mesh.size() == 1 or dist.get_rank() != 0:
        return None
    return {slot: getattr(model, slot).state_dict() for slot in slots}


def weights_from_rank0(model: nn.Module, slots: Iterable[str], full: dict[str, dict] | None) -> None:
    """After ``fully_shard``: each rank's shards of every sharded block, replicated blocks and every buffer
    (non-persistent ones too: rotary frequencies, filterbanks) from rank 0's ``full`` weights, moved onto
    the process group's device (a rank built on the meta device gets storage there first)."""
    import torch
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    device = (
        torch.device("cuda", torch.cuda.current_device())
        if dist.get_backend() == "nccl"
        else torch.device("cpu")
    )
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    for slot in slots:
        block = getattr(model, slot)
        if any(t.is_meta for t in (*block.parameters(), *block.buffers())):
            block.to_empty(device=device)
        else:
            block.to(device)
        set_model_state_dict(block, full[slot] if full is not None else {}, options=options)
        for buffer in block.buffers():
            dist.broadcast(buffer, src=0)


def _require_trainable_sharded(model: nn.Module) -> None:
    """Every trained weight must be an FSDP2 shard: a plain one would get no gradient reduction, so the ranks'
    copies would drift apart."""
    from torch.distributed.tensor import DTensor

    plain = [n for n, p in model.named_parameters() if p.requires_grad and not isinstance(p, DTensor)]
    if plain:
        raise ValueError(
            f"{len(plain)} trainable parameter(s) lie outside every sharded block (e.g. {plain[0]}); under FSDP2 "
            "every trained weight must belong to a block slot"
        )


def local_parameter_bytes(module: nn.Module) -> int:
    """Bytes of ``module``'s parameters held by this rank (a shard's local part, or the whole tensor)."""
    total = 0
    for param in module.parameters():
        local = param.to_local() if hasattr(param, "to_local") else param
        total += local.numel() * local.element_size()
    return total


def weight_dtypes(module: nn.Module) -> str:
    """``frozen / trained`` dtypes of ``module``'s weights (``-`` for none)."""

    def names(trained: bool) -> str:
        found = sorted(
            {str(p.dtype).removeprefix("torch.") for p in module.parameters() if p.requires_grad == trained}
        )
        return ",".join(found) or "-"

    return f"{names(False)} / {names(True)}"


def format_shards(rows: list[SlotShard], world_size: int) -> str:
    """Plain-text table for the log: what one rank of ``world_size`` holds per slot."""
    header = (
        f"{'slot':<18}{'placement':<12}{'units':>6}{'parameters':>16}{'MiB on this rank':>18}"
        f"  dtypes (frozen / trained)"
    )
    lines = [f"FSDP2 over {world_size} rank(s):", header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r.slot:<18}{r.placement:<12}{r.units:>6}{r.parameters:>16,}{r.local_bytes / 2**20:>18,.2f}"
            f"  {r.dtypes}"
        )
    total = sum(r.local_bytes for r in rows)
    lines.append(f"{'all':<36}{sum(r.parameters for r in rows):>16,}{total / 2**20:>18,.2f}")
    return "\n".join(lines)
