"""Read the official ``speech_tokenizer_v2.onnx`` (CosyVoice2-0.5B) into our state dict.

The release ships only ONNX. Its initializers are named three ways, and each needs its own rule:

- fixed anonymous names: ``onnx::Conv_2216/2217`` (conv1 weight/bias), ``onnx::Conv_2218/2219``
  (conv2), ``onnx::MatMul_2536`` (FSQ ``project_down`` weight) and ``quantizer.project_in.bias``;
- LayerNorm scale/bias: the 2nd/3rd inputs of a node named ``/blocks.N/<ln>/LayerNormalization``;
- every other block weight: named after the node that consumes it, e.g. ``/blocks.N/attn/query/MatMul``
  (weight), ``.../Add`` or ``.../Add_1`` (bias), ``.../fsmn_block/Conv`` (weight), ``/blocks.N/mlp/mlp.0/...``.

Transposes: ONNX ``MatMul`` stores a linear weight as (in, out); torch's ``nn.Linear`` holds
(out, in), so every 2-D weight (the block linears and ``project_down``) is transposed. Convolution
weights (3-D) and 1-D biases/scales are taken as they are. ``onnx`` is an optional dependency.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

_FIXED_NAMES = {
    "onnx::Conv_2216": "encoder.conv1.weight",
    "onnx::Conv_2217": "encoder.conv1.bias",
    "onnx::Conv_2218": "encoder.conv2.weight",
    "onnx::Conv_2219": "encoder.conv2.bias",
    "onnx::MatMul_2536": "quantizer._codebook.project_down.weight",
    "quantizer.project_in.bias": "quantizer._codebook.project_down.bias",
}
_OP_TO_PARAMETER = {"MatMul": "weight", "Mul": "weight", "Conv": "weight", "Add": "bias", "Add_1": "bias"}


def _import_onnx():
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as error:
        raise ImportError(
            "reading speech_tokenizer_v2.onnx needs the optional 'onnx' package: `pip install onnx`; "
            "or convert once elsewhere and pass the resulting .safetensors/.pt state dict instead"
        ) from error
    return onnx, numpy_helper


def _block_key(node_name: str) -> str | None:
    """``/blocks.0/mlp/mlp.0/MatMul`` -> ``encoder.blocks.0.mlp.0.weight`` (None: not a block weight)."""
    parts = node_name.strip("/").split("/")
    if not parts[0].startswith("blocks.") or parts[-1] not in _OP_TO_PARAMETER:
        return None
    path = ".".join(parts[:-1]).replace("mlp.mlp.", "mlp.")
    return f"encoder.{path}.{_OP_TO_PARAMETER[parts[-1]]}"


def onnx_state_dict(path: str | Path) -> tuple[dict[str, Tensor], list[str]]:
    """Our state dict from the ONNX initializers, plus the initializer names no rule claimed."""
    onnx, numpy_helper = _import_onnx()
    graph = onnx.load(str(path)).graph
    initializers = {init.name: init for init in graph.initializer}
    state: dict[str, Tensor] = {}
    claimed: set[str] = set()

    def take(name: str, key: str) -> None:
        tensor = torch.from_numpy(numpy_helper.to_array(initializers[name]).copy())
        state[key] = tensor.t().contiguous() if tensor.dim() == 2 else tensor
        claimed.add(name)

    for node in graph.node:
        if node.op_type == "LayerNormalization":
            prefix = "encoder." + node.name.strip("/").removesuffix("/LayerNormalization").replace("/", ".")
            for name, parameter in zip(node.input[1:3], ("weight", "bias"), strict=False):
                if name in initializers:
                    take(name, f"{prefix}.{parameter}")
            continue
        for name in node.input:
            if name not in initializers:
                continue
            key = _FIXED_NAMES.get(name) or _block_key(node.name)
            if key is not None:
                take(name, key)
    return state, sorted(set(initializers) - claimed)
