"""Read a conv + batch-norm network's ONNX export (CosyVoice2's ``campplus.onnx``) back into its state dict.

``campplus.onnx`` is a TorchScript export (opset 11, constant folding, eval mode): a batch norm that directly
follows a bias-free conv is folded into it (the conv gains a bias, the BatchNormalization node disappears) and
folded weights get anonymous names (``onnx::Conv_NNN``), so names cannot be trusted. What survives is the order:
the exporter writes nodes in the order the forward pass ran them. ``onnx_state_dict`` therefore walks the graph's
Conv and BatchNormalization nodes beside our convs and batch norms in the order a forward pass runs them (forward
hooks on an example input), checking every shape. A conv that comes with a bias it does not have carries its
folded batch norm: that norm comes back as a shift by the folded bias (mean = -bias, variance 1 - eps, weight 1,
bias 0), which computes the same output in eval mode; its original statistics are not recoverable. Every batch
norm's ``num_batches_tracked`` is 0. ``onnx`` is an optional dependency, imported only here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd


def read_onnx_constants(path: Path) -> tuple[list[Any], dict[str, Tensor]]:
    """The graph's Conv and BatchNormalization nodes, and every constant tensor by name (initialisers,
    Constant nodes and the Identity nodes that rename them)."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as error:
        raise ImportError(
            f"reading {path.name} needs the optional 'onnx' package: `pip install onnx`; or pass the PyTorch "
            "checkpoint (a state dict with the reference's key names) instead"
        ) from error
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file not found: {path}")
    graph = onnx.load(str(path)).graph
    tensors = {init.name: torch.from_numpy(numpy_helper.to_array(init).copy()) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            tensors[node.output[0]] = torch.from_numpy(numpy_helper.to_array(node.attribute[0].t).copy())
        elif node.op_type == "Identity" and node.input[0] in tensors:
            tensors[node.output[0]] = tensors[node.input[0]]
    nodes = [node for node in graph.node if node.op_type in ("Conv", "BatchNormalization")]
    return nodes, tensors


def execution_order(model: nn.Module, example: Tensor) -> list[tuple[str, nn.Module]]:
    """``model``'s convs and batch norms (qualified name, module) in the order ``model(example)`` runs them."""
    order: list[tuple[str, nn.Module]] = []
    handles = [
        module.register_forward_pre_hook(lambda module, _, name=name: order.append((name, module)))
        for name, module in model.named_modules()
        if isinstance(module, _ConvNd | _BatchNorm)
    ]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return order


class _GraphReader:
    """Takes node inputs into a state dict, checking each shape against the model's."""

    def __init__(self, path: Path, tensors: dict[str, Tensor]) -> None:
        self.path, self.tensors, self.state = path, tensors, {}

    def take(self, node: Any, slot: int, key: str, shape: torch.Size) -> None:
        if len(node.input) <= slot or node.input[slot] not in self.tensors:
            raise ValueError(f"{self.path}: node {_name(node)} has no constant input {slot} for {key}")
        value = self.tensors[node.input[slot]].float()
        if value.shape != shape:
            raise ValueError(
                f"{self.path}: node {_name(node)} gives {key} shape {tuple(value.shape)}, the model has "
                f"{tuple(shape)}; build the model with the exported model's sizes (its preset)"
            )
        self.state[key] = value

    def conv(self, node: Any, name: str, conv: _ConvNd) -> bool:
        """Take the conv's weight (and bias); True when the node's bias is a folded batch norm's."""
        self.take(node, 1, f"{name}.weight", conv.weight.shape)
        if conv.bias is not None:
            self.take(node, 2, f"{name}.bias", conv.bias.shape)
        return conv.bias is None and len(node.input) > 2 and bool(node.input[2])

    def batch_norm(self, node: Any, name: str, norm: _BatchNorm) -> None:
        epsilon = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        if abs(epsilon - norm.eps) > 1e-9:
            raise ValueError(
                f"{self.path}: node {_name(node)} has epsilon {epsilon:g}, {name} uses {norm.eps:g}"
            )
        channels = torch.Size([norm.num_features])
        if norm.affine:
            self.take(node, 1, f"{name}.weight", channels)
            self.take(node, 2, f"{name}.bias", channels)
        self.take(node, 3, f"{name}.running_mean", channels)
        self.take(node, 4, f"{name}.running_var", channels)
        self.state[f"{name}.num_batches_tracked"] = torch.tensor(0)

    def folded_batch_norm(self, node: Any, name: str, norm: _BatchNorm) -> None:
        """The batch norm that adds the conv node's folded bias: mean = -bias, variance 1 - eps, identity affine."""
        channels = torch.Size([norm.num_features])
        self.take(node, 2, f"{name}.running_mean", channels)
        self.state[f"{name}.running_mean"] = -self.state[f"{name}.running_mean"]
        self.state[f"{name}.running_var"] = torch.full(channels, 1.0 - norm.eps)
        self.state[f"{name}.num_batches_tracked"] = torch.tensor(0)
        if norm.affine:
            self.state[f"{name}.weight"] = torch.ones(channels)
            self.state[f"{name}.bias"] = torch.zeros(channels)


def _name(node: Any) -> str:
    return node.name or node.op_type


def onnx_state_dict(model: nn.Module, path: str | Path, example: Tensor) -> dict[str, Tensor]:
    """``model``'s state dict read from its ONNX export at ``path``; ``example`` is any valid input of ``model``.

    Raises a ``ValueError`` naming the first node that does not fit (another model, sizes or export).
    """
    path = Path(path)
    nodes, tensors = read_onnx_constants(path)
    ours = execution_order(model, example)
    reader = _GraphReader(path, tensors)
    position = index = 0
    while index < len(ours):
        name, module = ours[index]
        if position == len(nodes):
            raise ValueError(
                f"{path} ends before {name}: the graph has fewer convs and batch norms than the model"
            )
        node, want = nodes[position], "Conv" if isinstance(module, _ConvNd) else "BatchNormalization"
        if node.op_type != want:
            raise ValueError(f"{path}: node {_name(node)} is a {node.op_type} where {name} needs a {want}")
        position, index = position + 1, index + 1
        if want == "BatchNormalization":
            reader.batch_norm(node, name, module)
        elif reader.conv(node, name, module):
            norm_name, norm = ours[index] if index < len(ours) else (name, None)
            if not isinstance(norm, _BatchNorm):
                raise ValueError(
                    f"{path}: node {_name(node)} has a bias, but {name} has none and runs no batch norm next"
                )
            reader.folded_batch_norm(node, norm_name, norm)
            index += 1
    if position != len(nodes):
        raise ValueError(
            f"{path} has {len(nodes) - position} convs/batch norms more than the model (another model?)"
        )
    return reader.state
