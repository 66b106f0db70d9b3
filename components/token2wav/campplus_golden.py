"""Parity with 3D-Speaker's ``CAMPPlus`` (golden item ``campplus``, see its README)."""

from __future__ import annotations

from minmo_lightning.components.token2wav.campplus import CAMPPlus

from minmo_lightning.checkpoints import load_state_dict_strict
from minmo_lightning.golden import Comparison, Fixture, compare, golden_check

#: the reference's only nonlinearity setting that the released model (and this implementation) uses
_CONFIG_STR = "batchnorm-relu"


@golden_check("campplus")
def check_campplus(fixture: Fixture) -> list[Comparison]:
    ref = fixture.config["CAMPPlus"]
    if ref.get("config_str", _CONFIG_STR) != _CONFIG_STR:
        raise ValueError(f"CAMPPlus config_str {ref['config_str']!r} is not supported (only {_CONFIG_STR!r})")
    model = CAMPPlus(
        feat_dim=ref["feat_dim"],
        embedding_size=ref["embedding_size"],
        growth_rate=ref["growth_rate"],
        bn_size=ref["bn_size"],
        init_channels=ref["init_channels"],
    ).eval()
    load_state_dict_strict(model, fixture.state_dict(), source=str(fixture.folder))
    inputs, outputs = fixture.group("input."), fixture.group("output.")
    results = []
    for i in range(len(fixture.config["input_frames"])):
        feats = inputs[f"feats{i}"]
        results.append(compare(f"embedding{i}", model(feats), outputs[f"embedding{i}"], atol=1e-4))
        results.append(compare(f"head{i}", model.head(feats.transpose(1, 2)), outputs[f"head{i}"], atol=1e-4))
    results.append(
        compare("batch_embedding", model(inputs["batch_feats"]), outputs["batch_embedding"], atol=1e-4)
    )
    return results
