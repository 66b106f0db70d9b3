"""CosyVoice2Token2Wav: flow + vocoder composition, offline == streaming, batch, errors, full-size keys."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from minmo_lightning.components.token2wav.flow import CosyVoice2Flow
from minmo_lightning.components.token2wav.token2wav import CosyVoice2Token2Wav

from minmo_lightning.contracts import TokenBatch

pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny(vocoder: str, vocoder_preset: str | None) -> CosyVoice2Token2Wav:
    torch.manual_seed(0)
    flow = {**CosyVoice2Flow.presets["tiny"], "chunk_size": 5, "num_left_chunks": 1, "n_timesteps": 2}
    return CosyVoice2Token2Wav(flow=flow, vocoder=vocoder, vocoder_preset=vocoder_preset).eval()


def _streamed(
    model: CosyVoice2Token2Wav, tokens: torch.Tensor, lengths: torch.Tensor, step: int
) -> list[torch.Tensor]:
    state = model.init_state(tokens.shape[0])
    pieces: list[list[torch.Tensor]] = [[] for _ in range(tokens.shape[0])]
    for start in range(0, tokens.shape[1], step):
        counts = (lengths - start).clamp(0, step)
        if start + step >= tokens.shape[1]:
            state.end_input(range(tokens.shape[0]))
        audio = model.step(TokenBatch(tokens[:, start : start + step], counts), state)
        assert audio.sample_rate == 24000
        for row in range(tokens.shape[0]):
            pieces[row].append(audio.waveform[row, : audio.lengths[row]])
    return [torch.cat(p) for p in pieces]


@torch.no_grad()
def test_streaming_equals_offline_for_a_batch() -> None:
    model = _tiny("hift", "tiny")
    tokens = torch.randint(0, 6561, (2, 17))
    lengths = torch.tensor([17, 11])
    offline = model(TokenBatch(tokens, lengths))
    assert offline.lengths.tolist() == [17 * 960, 11 * 960]  # 2 mel frames x 480 samples per token
    streamed = _streamed(model, tokens, lengths, step=5)
    for row in range(2):
        assert streamed[row].shape[0] == int(offline.lengths[row])
        torch.testing.assert_close(
            streamed[row], offline.waveform[row, : offline.lengths[row]], atol=1e-4, rtol=1e-4
        )
    # a row of the batch equals the same request alone
    alone = model(TokenBatch(tokens[1:, :11], lengths[1:]))
    torch.testing.assert_close(
        alone.waveform[0], offline.waveform[1, : offline.lengths[1]], atol=1e-5, rtol=1e-5
    )


@torch.no_grad()
def test_griffin_lim_vocoder_gives_audio_without_weights() -> None:
    model = CosyVoice2Token2Wav.from_preset(
        "tiny", flow={**CosyVoice2Flow.presets["tiny"], "n_timesteps": 2}
    ).eval()
    assert type(model.vocoder).__name__ == "GriffinLimVocoder"
    tokens, lengths = torch.randint(0, 6561, (2, 17)), torch.tensor([17, 11])
    offline = model(TokenBatch(tokens, lengths))
    streamed = _streamed(model, tokens, lengths, step=15)
    for row in range(2):  # Griffin-Lim streams close to, not equal to, offline: check lengths and sanity
        assert streamed[row].shape[0] == int(offline.lengths[row]) == 960 * int(lengths[row])
        assert torch.isfinite(streamed[row]).all() and streamed[row].abs().max() > 0


@torch.no_grad()
def test_reset_restarts_one_session() -> None:
    model = _tiny("hift", "tiny")
    tokens = torch.randint(0, 6561, (2, 10))
    state = model.init_state(2)
    model.step(TokenBatch(tokens, torch.tensor([10, 10])), state)
    state.end_input([0, 1])
    state.reset([0])
    assert state.input_ended.tolist() == [False, True]
    state.end_input([0])
    again = model.step(TokenBatch(tokens, torch.tensor([10, 0])), state)
    fresh_state = model.init_state(1)
    fresh_state.end_input([0])
    fresh = model.step(TokenBatch(tokens[:1], torch.tensor([10])), fresh_state)
    torch.testing.assert_close(again.waveform[0, : again.lengths[0]], fresh.waveform[0, : fresh.lengths[0]])
    assert model.step(TokenBatch(tokens, torch.tensor([0, 0])), state).lengths.tolist() == [0, 0]  # flushed


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="vocoder 'wavenet' is not a known Vocoder"):
        CosyVoice2Token2Wav(flow=CosyVoice2Flow.presets["tiny"], vocoder="wavenet")
    with pytest.raises(ValueError, match="did you mean hift"):
        CosyVoice2Token2Wav(flow=CosyVoice2Flow.presets["tiny"], vocoder="hfit")
    with pytest.raises(ValueError, match="has no preset 'huge'; available: cosyvoice2-0.5b, tiny"):
        CosyVoice2Token2Wav(flow=CosyVoice2Flow.presets["tiny"], vocoder="hift", vocoder_preset="huge")
    by_class_name = CosyVoice2Token2Wav(
        flow=CosyVoice2Flow.presets["tiny"], vocoder="HiFTVocoder", vocoder_preset="tiny"
    )
    assert type(by_class_name.vocoder).__name__ == "HiFTVocoder"
    model = _tiny("hift", "tiny")
    with pytest.raises(ValueError, match=r"token ids in \[0, 6561\)"):
        model(TokenBatch(torch.tensor([[5, 6561]]), torch.tensor([2])))
    with pytest.raises(ValueError, match="empty token sequence"):
        model(TokenBatch(torch.tensor([[5, 6]]), torch.tensor([0])))
    with pytest.raises(FileNotFoundError, match="flow.pt"):
        model.load_pretrained(str(tmp_path))  # a folder without the checkpoints


def test_full_size_preset_has_the_official_keys(golden_dir: Path) -> None:
    with torch.device("meta"):
        model = CosyVoice2Token2Wav.from_preset("cosyvoice2-0.5b")
    ours = model.state_dict()
    for part, file in (("flow", "flow.keys.tsv"), ("vocoder", "hift.keys.tsv")):
        with (golden_dir / "checkpoint_keys" / "cosyvoice2_0.5b" / file).open() as handle:
            expected = {row["key"] for row in csv.DictReader(handle, delimiter="\t")}
        mine = {k[len(part) + 1 :] for k in ours if k.startswith(part + ".")}
        if part == "vocoder":  # the HiFT module may spell weight norm in either key style
            mine = {
                k.replace("weight_g", "parametrizations.weight.original0").replace(
                    "weight_v", "parametrizations.weight.original1"
                )
                for k in mine
            }
        assert mine == expected, part
