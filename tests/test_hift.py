"""HiFT vocoder: golden parity, official key layout, checkpoint spellings and errors, streaming == offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from minmo_lightning.components.token2wav.hift import HiFTVocoder

from minmo_lightning.checkpoints import CheckpointMismatchError, load_state_dict_strict
from minmo_lightning.golden import run_golden

GOLDEN = Path(__file__).parent / "fixtures" / "golden"
KEYS = GOLDEN / "checkpoint_keys" / "cosyvoice2_0.5b" / "hift.keys.tsv"


def tiny(**overrides) -> HiFTVocoder:
    torch.manual_seed(0)
    return HiFTVocoder.from_preset("tiny", **overrides).eval()


def voiced_mel(batch: int, frames: int) -> torch.Tensor:
    """Random log-mel; the tiny model's f0 is pushed over the voiced threshold for about half the frames."""
    torch.manual_seed(1)
    return torch.randn(batch, 80, frames)


def test_golden_hift() -> None:
    _, results = run_golden(GOLDEN / "hift")
    failed = [
        f"{r.name}: {r.max_abs_error:.3g} > {r.tolerance:.3g} ({r.detail})" for r in results if not r.passed
    ]
    assert results and not failed, failed


def test_full_preset_matches_official_keys_on_meta() -> None:
    rows = [line.split("\t") for line in KEYS.read_text().splitlines()[1:]]
    expected = {key: json.loads(shape) for key, shape, _, _ in rows}
    with torch.device("meta"):
        model = HiFTVocoder.from_preset("cosyvoice2-0.5b")
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == expected
    assert sum(p.numel() for p in model.parameters()) == 20_821_295
    load_state_dict_strict(
        model, {k: torch.empty(s, device="meta") for k, s in expected.items()}, "hift.keys.tsv"
    )


def test_load_pretrained_accepts_legacy_weight_norm_and_generator_prefix(tmp_path: Path) -> None:
    source = tiny()
    legacy = {}
    for key, value in source.state_dict().items():
        key = key.replace("parametrizations.weight.original0", "weight_g")
        key = key.replace("parametrizations.weight.original1", "weight_v")
        legacy[f"generator.{key}"] = value
    assert any(k.endswith(".weight_g") for k in legacy)
    torch.save(legacy, tmp_path / "hift.pt")

    loaded = HiFTVocoder.from_preset("tiny").eval()
    loaded.load_pretrained(tmp_path)  # the folder form
    mel = voiced_mel(1, 6)
    torch.testing.assert_close(loaded(mel), source(mel), rtol=0, atol=0)


def test_load_pretrained_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="holds no hift.pt"):
        tiny().load_pretrained(tmp_path)
    state = tiny().state_dict()
    state.pop("conv_post.bias")
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "hift.pt")
    with pytest.raises(CheckpointMismatchError, match=r"missing keys \(1\): conv_post.bias") as error:
        tiny().load_pretrained(tmp_path / "hift.pt")
    assert "unexpected keys (1): extra.weight" in str(error.value)
    with pytest.raises(CheckpointMismatchError, match="shape mismatches"):
        HiFTVocoder.from_preset("tiny", base_channels=16).load_pretrained(tmp_path / "hift.pt")


def test_bad_input_errors() -> None:
    model = tiny()
    with pytest.raises(ValueError, match=r"mel must have shape \[batch, 80, frames\]"):
        model(torch.zeros(1, 40, 5))
    with pytest.raises(ValueError, match="SineGen"):
        HiFTVocoder.from_preset("tiny", sampling_rate=22050)
