"""HiFT vocoder: golden parity, official key layout, checkpoint spellings and errors, streaming == offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from minmo_lightning.components.token2wav.hift import HiFTVocoder

from minmo_lightning.checkpoints import CheckpointMismatchError, load_state_dict_strict
from minmo_lightning.golden import run_golden


def tiny(**overrides) -> HiFTVocoder:
    torch.manual_seed(0)
    return HiFTVocoder.from_preset("tiny", **overrides).eval()


def voiced_mel(batch: int, frames: int) -> torch.Tensor:
    """Random log-mel; the tiny model's f0 is pushed over the voiced threshold for about half the frames."""
    torch.manual_seed(1)
    return torch.randn(batch, 80, frames)


def test_golden_hift(golden_dir: Path) -> None:
    _, results = run_golden(golden_dir / "hift")
    failed = [
        f"{r.name}: {r.max_abs_error:.3g} > {r.tolerance:.3g} ({r.detail})" for r in results if not r.passed
    ]
    assert results and not failed, failed


def test_full_preset_matches_official_keys_on_meta(golden_dir: Path) -> None:
    keys = golden_dir / "checkpoint_keys" / "cosyvoice2_0.5b" / "hift.keys.tsv"
    rows = [line.split("\t") for line in keys.read_text().splitlines()[1:]]
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


def stream(model: HiFTVocoder, mel: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Feed ``mel`` in chunks of ``sizes`` (the rest after ``end_input``) and concatenate the audio."""
    state = model.init_state(mel.shape[0])
    outs, start = [], 0
    for size in sizes:
        outs.append(model.step(mel[:, :, start : start + size], state))
        start += size
        assert state.mel.shape[2] <= model.stream_left_context + model.stream_lookahead + size
        assert state.source.shape[2] <= model.stream_left_context * model.samples_per_frame
    state.end_input(range(mel.shape[0]))
    outs.append(model.step(mel[:, :, start:], state))
    return torch.cat(outs, dim=1)


CHUNKS = [7, 13, 0, 1, 30]  # irregular on purpose: empty, single-frame and shorter-than-lookahead chunks


@torch.no_grad()
def test_streaming_equals_offline_with_exact_context_batch_2() -> None:
    model = tiny(stream_crossfade=3)  # with exact context the cross-fade blends identical audio
    mel = voiced_mel(2, 60)
    assert model.f0_predictor(mel).max() < 10  # unvoiced: isolates the window arithmetic from phase rounding
    offline = model(mel)
    chunked = stream(model, mel, CHUNKS)
    assert chunked.shape == offline.shape == (2, 60 * 480)
    torch.testing.assert_close(chunked, offline, rtol=0, atol=1e-6)
    per_item = torch.cat([stream(model, mel[i : i + 1], CHUNKS) for i in range(2)])
    torch.testing.assert_close(chunked, per_item, rtol=0, atol=1e-6)


@torch.no_grad()
def test_streaming_voiced_matches_offline() -> None:
    model = tiny()
    model.f0_predictor.classifier.weight.mul_(300.0)
    model.f0_predictor.classifier.bias.fill_(120.0)
    mel = voiced_mel(2, 60)
    f0 = model.f0_predictor(mel)
    assert (f0 > 10).float().mean() > 0.5  # the harmonic source (and its carried phase) is exercised
    offline = model(mel)
    chunked = stream(model, mel, CHUNKS)
    # Offline accumulates the harmonic phase (hundreds of radians) in float32 like the reference; the stream
    # carries it wrapped. The rounding difference grows with length: ~3e-5 at 60 frames (signal ~0.1).
    torch.testing.assert_close(chunked, offline, rtol=0, atol=2e-4)


@torch.no_grad()
def test_short_lookahead_is_approximate() -> None:
    """The tolerance above is meaningful: too little context visibly changes the audio at chunk joins."""
    model = tiny(stream_left_context=2, stream_lookahead=2)
    mel = voiced_mel(1, 60)
    error = (stream(model, mel, CHUNKS) - model(mel)).abs().max()
    assert error > 1e-3


def test_streaming_errors() -> None:
    model = tiny()
    state = model.init_state(2)
    with pytest.raises(ValueError, match="batch 1, the stream state 2"):
        model.step(torch.zeros(1, 80, 3), state)
    with pytest.raises(ValueError, match="end the input of every row together"):
        state.end_input([1])
    state.end_input([0, 1])
    model.step(torch.zeros(2, 80, 3), state)
    with pytest.raises(RuntimeError, match="already ended"):
        model.step(torch.zeros(2, 80, 3), state)
    state.reset([0, 1])  # the stream starts over: nothing received, nothing emitted
    assert state.emitted == 0 and state.mel.shape[2] == 0 and not bool(state.input_ended.any())
    assert model.step(torch.zeros(2, 80, 3), state).shape == (2, 0)  # 3 frames wait for their look-ahead
    with pytest.raises(ValueError, match="cannot exceed stream_lookahead"):
        tiny(stream_lookahead=2, stream_crossfade=3)


def test_positional_noise_is_standard_normal_and_addressed_by_position() -> None:
    from minmo_lightning.components.token2wav.hift import positional_normal

    draws = positional_normal(0, 20000, 9, seed=0, device=torch.device("cpu"))
    assert draws.shape == (1, 20000, 9)
    assert abs(float(draws.mean())) < 0.01 and abs(float(draws.std()) - 1) < 0.01
    assert abs(float(torch.corrcoef(torch.stack([draws[0, :-1, 0], draws[0, 1:, 0]]))[0, 1])) < 0.03
    torch.testing.assert_close(positional_normal(1234, 100, 9, 0, torch.device("cpu")), draws[:, 1234:1334])
    assert not torch.equal(positional_normal(0, 100, 9, 1, torch.device("cpu")), draws[:, :100])


def test_empty_mel_is_an_error() -> None:
    with pytest.raises(ValueError, match="mel has 0 frames"):
        tiny()(torch.zeros(1, 80, 0))
