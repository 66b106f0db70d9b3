"""Weight normalisation that loads both checkpoint spellings.

Modules use torch's parametrised weight norm, whose state-dict keys are ``X.parametrizations.weight.original0``
(g) and ``X.parametrizations.weight.original1`` (v), the spelling of the official CosyVoice2 ``hift.pt``.
Checkpoints written with the legacy ``torch.nn.utils.weight_norm`` store ``X.weight_g`` / ``X.weight_v``
instead; ``upgrade_weight_norm_keys`` renames those before the strict load, so a strict load works for both.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm as _parametrized_weight_norm

_LEGACY_SUFFIXES = {
    "weight_g": "parametrizations.weight.original0",
    "weight_v": "parametrizations.weight.original1",
}


def weight_norm(module: nn.Module) -> nn.Module:
    """Weight-normalise ``module.weight`` over dim 0 (g has shape [dim0, 1, ...])."""
    return _parametrized_weight_norm(module, name="weight", dim=0)


def upgrade_weight_norm_keys(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename legacy ``*.weight_g`` / ``*.weight_v`` keys to the parametrisation spelling; others unchanged."""
    upgraded = {}
    for key, value in state_dict.items():
        prefix, _, leaf = key.rpartition(".")
        if leaf in _LEGACY_SUFFIXES:
            key = f"{prefix}.{_LEGACY_SUFFIXES[leaf]}" if prefix else _LEGACY_SUFFIXES[leaf]
        if key in upgraded:
            raise ValueError(
                f"checkpoint holds weight norm of {key!r} in both the legacy and the new spelling"
            )
        upgraded[key] = value
    return upgraded
