"""CosyVoice2 flow: golden parity, full-size key compatibility, input errors, streaming == offline."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from minmo_lightning.components.token2wav.flow import CosyVoice2Flow

from minmo_lightning.checkpoints import CheckpointMismatchError, load_state_dict_strict
from minmo_lightning.golden import run_golden

GOLDEN = Path(__file__).parent / "fixtures" / "golden"
KEYS = GOLDEN / "checkpoint_keys" / "cosyvoice2_0.5b" / "flow.keys.tsv"


@pytest.mark.parametrize("item", ["cosyvoice2_flow_estimator", "cosyvoice2_flow"])
def test_golden_parity(item: str) -> None:
    _, results = run_golden(GOLDEN / item)
    failed = [f"{r.name}: {r.max_abs_error:.3g} > {r.tolerance:g}" for r in results if not r.passed]
    assert results and not failed, failed


def _reference_keys() -> dict[str, tuple[int, ...]]:
    with KEYS.open() as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return {row["key"]: tuple(json.loads(row["shape"])) for row in rows}


def test_full_size_preset_matches_official_flow_keys() -> None:
    expected = _reference_keys()
    with torch.device("meta"):
        flow = CosyVoice2Flow.from_preset("cosyvoice2-0.5b")
    ours = {k: tuple(v.shape) for k, v in flow.state_dict().items()}
    assert ours == expected
    assert sum(p.numel() for p in flow.parameters()) == 112_549_360
    state = {k: torch.empty(shape, device="meta") for k, shape in expected.items()}
    load_state_dict_strict(flow, state, source="flow.keys.tsv")  # strict: every key, every shape


def test_mismatched_checkpoint_lists_keys() -> None:
    expected = _reference_keys()
    state = {k: torch.empty(shape, device="meta") for k, shape in expected.items()}
    state.pop("encoder.after_norm.weight")
    state["encoder.extra.weight"] = torch.empty(3, device="meta")
    state["encoder_proj.weight"] = torch.empty(80, 256, device="meta")
    with torch.device("meta"):
        flow = CosyVoice2Flow.from_preset("cosyvoice2-0.5b")
    with pytest.raises(CheckpointMismatchError) as error:
        load_state_dict_strict(flow, state, source="flow.pt")
    message = str(error.value)
    assert "encoder.after_norm.weight" in message and "encoder.extra.weight" in message
    assert "encoder_proj.weight" in message
