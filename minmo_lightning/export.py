"""``minmo export``: a trained ``MinMo`` checkpoint -> one folder per block.

Each block folder holds ``model.safetensors`` and ``config.json`` (its ``class_path`` and constructor
arguments), so a later recipe can start that block from it (``MinMo.init_blocks``) or rebuild it alone.
The LLM is written as a transformers folder (weights, config, tokenizer) that ``HFCausalLM(path=...)``
and ``from_pretrained`` read; when it was tuned with LoRA the adapters are saved separately
(``llm/adapter/``) and merged into the weights of ``llm/``.

A sharded checkpoint (a folder of ``torch.distributed.checkpoint`` shards, what ``recipes/trainer/fsdp2.yaml``
saves) is consolidated first (``distributed_checkpoint.py``), into a single-file checkpoint kept at
``--consolidated`` (a next stage's ``init_checkpoint`` reads it) or in a temporary file inside ``--out``.

A block whose own head a stage left stale (``stages.HEAD_STALE``) is exported with that mark in its
``config.json`` (the rebuilt block refuses the head) and a ``StaleHeadWarning`` naming it: never silently.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import warnings
from pathlib import Path

from safetensors.torch import save_file

from minmo_lightning.distributed_checkpoint import consolidate, is_sharded_checkpoint
from minmo_lightning.model import MinMo
from minmo_lightning.stages import HEAD_STALE


class StaleHeadWarning(UserWarning):
    """An exported block carries a head that no longer fits the rest of it."""


def export_blocks(model: MinMo, out: str | Path) -> dict[str, Path]:
    out = Path(out)
    written = {}
    for slot in model.slots:
        block = getattr(model, slot)
        folder = out / slot
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(block.spec(), indent=2, default=str))
        if block.hparams.get(HEAD_STALE):
            warnings.warn(
                f"{slot}: its own head is stale ({block.hparams[HEAD_STALE]}); exported with "
                f"init_args.{HEAD_STALE} in {folder / 'config.json'}, so the rebuilt block refuses to use it",
                StaleHeadWarning,
                stacklevel=2,
            )
        if slot == "llm":
            if block.has_lora:
                block.save_adapters(folder / "adapter")
                block.merge_lora()
            block.base_model.save_pretrained(str(folder))
            if block.hparams.tokenizer_path or block.hparams.path:
                block.tokenizer.save_pretrained(str(folder))
        else:
            state = {k: v.detach().contiguous().cpu() for k, v in block.state_dict().items()}
            save_file(state, str(folder / "model.safetensors"))
        written[slot] = folder
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="minmo export", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--ckpt", required=True, help="a MinMo Lightning checkpoint: a .ckpt file or a sharded .ckpt folder"
    )
    parser.add_argument("--out", required=True, help="output folder (one sub-folder per block)")
    parser.add_argument(
        "--consolidated",
        default=None,
        help="for a sharded checkpoint: keep its single-file form here (default: a temporary file)",
    )
    args = parser.parse_args(argv)
    if not is_sharded_checkpoint(args.ckpt):
        return _export(args.ckpt, args.out)
    if args.consolidated:
        print(f"consolidated {args.ckpt} -> {consolidate(args.ckpt, args.consolidated)}")
        return _export(args.consolidated, args.out)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.out, prefix=".consolidating-") as scratch:
        return _export(consolidate(args.ckpt, Path(scratch) / "model.ckpt"), args.out)


def _export(checkpoint: str | Path, out: str | Path) -> int:
    model = MinMo.load_from_checkpoint(checkpoint, map_location="cpu")
    for slot, folder in export_blocks(model, out).items():
        print(f"{slot:<18} -> {folder}")
    return 0
