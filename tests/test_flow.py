"""CosyVoice2 flow: golden parity, full-size key compatibility, input errors, streaming == offline."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from minmo_lightning.components.token2wav.flow import CosyVoice2Flow, SpeakerPrompt, Token2WavStreamOptions

from minmo_lightning.checkpoints import CheckpointMismatchError, load_state_dict_strict
from minmo_lightning.contracts import AudioBatch, TokenBatch
from minmo_lightning.golden import run_golden

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("item", ["cosyvoice2_flow_estimator", "cosyvoice2_flow"])
def test_golden_parity(item: str, golden_dir: Path) -> None:
    _, results = run_golden(golden_dir / item)
    failed = [f"{r.name}: {r.max_abs_error:.3g} > {r.tolerance:g}" for r in results if not r.passed]
    assert results and not failed, failed


def _reference_keys(golden_dir: Path) -> dict[str, tuple[int, ...]]:
    with (golden_dir / "checkpoint_keys" / "cosyvoice2_0.5b" / "flow.keys.tsv").open() as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return {row["key"]: tuple(json.loads(row["shape"])) for row in rows}


def test_full_size_preset_matches_official_flow_keys(golden_dir: Path) -> None:
    expected = _reference_keys(golden_dir)
    with torch.device("meta"):
        flow = CosyVoice2Flow.from_preset("cosyvoice2-0.5b")
    ours = {k: tuple(v.shape) for k, v in flow.state_dict().items()}
    assert ours == expected
    assert sum(p.numel() for p in flow.parameters()) == 112_549_360
    state = {k: torch.empty(shape, device="meta") for k, shape in expected.items()}
    load_state_dict_strict(flow, state, source="flow.keys.tsv")  # strict: every key, every shape


def test_mismatched_checkpoint_lists_keys(golden_dir: Path) -> None:
    expected = _reference_keys(golden_dir)
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


# ---- streaming ------------------------------------------------------------------------------------
VOCAB = 100


def _tiny_flow(chunk_size: int = 4, num_left_chunks: int = 1, **overrides) -> CosyVoice2Flow:
    torch.manual_seed(0)
    flow = CosyVoice2Flow.from_preset(
        "tiny",
        vocab_size=VOCAB,
        chunk_size=chunk_size,
        num_left_chunks=num_left_chunks,
        n_timesteps=3,
        **overrides,
    ).eval()
    with torch.no_grad():  # non-zero biases and norms, so that every term of the model matters
        for parameter in flow.parameters():
            if parameter.dim() == 1:
                parameter.add_(0.1 * torch.randn_like(parameter))
    return flow


def _pad(rows: list[torch.Tensor]) -> TokenBatch:
    lengths = torch.tensor([len(r) for r in rows])
    if int(lengths.max()) == 0:
        return TokenBatch(torch.zeros(len(rows), 0, dtype=torch.long), lengths)
    return TokenBatch(torch.nn.utils.rnn.pad_sequence(rows, batch_first=True), lengths)


def _prompt(lengths: list[int], ratio: int = 2) -> SpeakerPrompt:
    tokens = [torch.randint(0, VOCAB, (n,)) for n in lengths]
    mel = torch.randn(len(lengths), ratio * max(lengths), 80)
    return SpeakerPrompt(torch.randn(len(lengths), 192), _pad(tokens), mel)


def _stream(flow, tokens: list[torch.Tensor], prompt, sizes: list[int]) -> list[torch.Tensor]:
    """Feed every row ``sizes[k]`` tokens at call k (fewer when it runs out); the input ends with the last call."""
    state = flow.init_state(len(tokens), Token2WavStreamOptions(prompt))
    out: list[list[torch.Tensor]] = [[] for _ in tokens]
    position = 0
    for k, size in enumerate(sizes):
        rows = [t[position : position + size] for t in tokens]
        position += size
        if k == len(sizes) - 1:
            state.end_input(range(len(tokens)))
        mel, lengths = flow.step(_pad(rows), state)
        for row in range(len(tokens)):
            out[row].append(mel[row, :, : lengths[row]])
    return [torch.cat(pieces, dim=1) for pieces in out]


@torch.no_grad()
def test_streaming_equals_offline_with_the_same_chunk_mask() -> None:
    flow = _tiny_flow(chunk_size=4, num_left_chunks=1)
    tokens = [torch.randint(0, VOCAB, (19,)), torch.randint(0, VOCAB, (13,))]
    prompt = _prompt([6, 3])
    offline, lengths, _ = flow.inference(_pad(tokens), prompt, chunk_size=4, num_left_chunks=1)
    streamed = _stream(flow, tokens, prompt, [5, 4, 3, 7, 2, 6])  # steps not aligned with the chunks
    for row, mel in enumerate(streamed):
        assert mel.shape[1] == int(lengths[row]) == 2 * len(tokens[row])
        torch.testing.assert_close(mel, offline[row, :, : lengths[row]], atol=1e-5, rtol=1e-5)
    # the chunk mask matters: full context gives another result
    full, _, _ = flow.inference(_pad(tokens), prompt, chunk_size=None)
    assert (full[0, :, : lengths[0]] - offline[0, :, : lengths[0]]).abs().max() > 1e-2


@torch.no_grad()
def test_inference_temperature_scales_the_noise_and_streams_like_offline() -> None:
    reference, cooler = _tiny_flow(), _tiny_flow(inference_temperature=0.3)
    start = torch.tensor([0, 7])
    torch.testing.assert_close(
        cooler.decoder.noise(start, 9, torch.device("cpu"), torch.float32),
        0.3 * reference.decoder.noise(start, 9, torch.device("cpu"), torch.float32),
    )
    tokens = [torch.randint(0, VOCAB, (11,))]
    prompt = _prompt([3])
    offline, lengths, _ = cooler.inference(_pad(tokens), prompt, chunk_size=4, num_left_chunks=1)
    (streamed,) = _stream(cooler, tokens, prompt, [4, 4, 3])
    torch.testing.assert_close(streamed, offline[0, :, : lengths[0]], atol=1e-5, rtol=1e-5)
    warm, _, _ = reference.inference(_pad(tokens), prompt, chunk_size=4, num_left_chunks=1)
    assert (warm - offline).abs().max() > 1e-2


@torch.no_grad()
def test_fifteen_token_chunks_batch_equals_per_item() -> None:
    flow = _tiny_flow(chunk_size=15, num_left_chunks=1)
    tokens = [torch.randint(0, VOCAB, (50,)), torch.randint(0, VOCAB, (37,))]
    prompt = _prompt([7, 20])
    batched = _stream(flow, tokens, prompt, [18, 15, 15, 15])
    for row in range(2):
        single = SpeakerPrompt(
            prompt.embedding[row : row + 1],
            TokenBatch(prompt.tokens.tokens[row : row + 1], prompt.tokens.lengths[row : row + 1]),
            prompt.mel[row : row + 1],
        )
        alone = _stream(flow, tokens[row : row + 1], single, [18, 15, 15, 15])[0]
        torch.testing.assert_close(batched[row], alone, atol=1e-5, rtol=1e-5)
        offline, lengths, _ = flow.inference(
            _pad(tokens[row : row + 1]), single, chunk_size=15, num_left_chunks=1
        )
        torch.testing.assert_close(batched[row], offline[0, :, : lengths[0]], atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_first_chunk_takes_its_lookahead_from_the_same_step_then_one_chunk_per_step() -> None:
    flow = _tiny_flow(chunk_size=15, num_left_chunks=2)
    state = flow.init_state(1)
    tokens = torch.randint(0, VOCAB, (1, 48))
    _, lengths = flow.step(TokenBatch(tokens[:, :15], torch.tensor([15])), state)
    assert lengths.tolist() == [24]  # 12 tokens, their look-ahead the step's last 3
    _, lengths = flow.step(TokenBatch(tokens[:, 15:18], torch.tensor([3])), state)
    assert lengths.tolist() == [0]  # tokens 12-26 wait for 27-29
    _, lengths = flow.step(TokenBatch(tokens[:, 18:33], torch.tensor([15])), state)
    assert lengths.tolist() == [30]
    state.end_input([0])
    _, lengths = flow.step(TokenBatch(tokens[:, 33:48], torch.tensor([15])), state)
    assert lengths.tolist() == [42]
    with pytest.raises(ValueError, match="was finalized; reset it"):
        flow.step(TokenBatch(tokens[:, :1], torch.tensor([1])), state)


@torch.no_grad()
def test_state_is_bounded_and_reset_restarts_a_row() -> None:
    flow = _tiny_flow(chunk_size=4, num_left_chunks=2)
    tokens = torch.randint(0, VOCAB, (2, 60))
    state = flow.init_state(2)
    shapes = []
    for k in range(0, 56, 4):
        flow.step(TokenBatch(tokens[:, k : k + 4], torch.tensor([4, 4])), state)
        shapes.append({key: tuple(v.shape) for key, v in state.step_caches[0].items()})
    assert shapes[3] == shapes[-1]  # the caches stop growing once the window is full
    assert state.token_cache["encoders.0.self_attn.k"].shape[2] == 2 * 4
    state.reset([0])
    fresh = flow.init_state(1)
    mel_reset, lengths = flow.step(TokenBatch(tokens[:, :8], torch.tensor([8, 8])), state)
    mel_fresh, _ = flow.step(TokenBatch(tokens[:1, :8], torch.tensor([8])), fresh)
    # row 0 starts over (first chunk 1 token: 4 - look-ahead 3), row 1 goes on
    assert lengths.tolist() == [10, 16]
    torch.testing.assert_close(mel_reset[0, :, :10], mel_fresh[0], atol=1e-5, rtol=1e-5)


def test_bad_inputs_raise_clear_errors() -> None:
    flow = _tiny_flow()
    speaker = SpeakerPrompt(torch.zeros(1, 192))
    with pytest.raises(ValueError, match=r"token ids in \[0, 100\)"):
        flow.inference(TokenBatch(torch.tensor([[1, 2, 100]]), torch.tensor([3])), speaker)
    with pytest.raises(ValueError, match="empty token sequence"):
        flow.inference(TokenBatch(torch.tensor([[1, 2]]), torch.tensor([0])), speaker)
    state = flow.init_state(1)
    with pytest.raises(ValueError, match=r"token ids in \[0, 100\)"):
        flow.step(TokenBatch(torch.tensor([[-1, 2]]), torch.tensor([2])), state)
    state.end_input([0])
    with pytest.raises(ValueError, match="without any speech token"):
        flow.step(TokenBatch(torch.zeros(1, 0, dtype=torch.long), torch.tensor([0])), state)
    bad_prompt = SpeakerPrompt(
        torch.zeros(1, 192), TokenBatch(torch.tensor([[1, 2, 3]]), torch.tensor([3])), torch.zeros(1, 4, 80)
    )
    with pytest.raises(ValueError, match="2 frames per prompt token"):
        flow.init_state(1, Token2WavStreamOptions(bad_prompt))
    with pytest.raises(ValueError, match="num_left_chunks >= 0"):
        _tiny_flow(num_left_chunks=-1).init_state(1)


# ---- training -------------------------------------------------------------------------------------
def test_training_step_learns_on_a_fixed_batch() -> None:

    flow = _tiny_flow(chunk_size=4)
    flow.train()
    torch.manual_seed(1)
    seconds = torch.tensor([0.64, 0.48])
    samples = (seconds * 24000).long()
    t = torch.arange(int(samples.max())) / 24000
    waves = torch.stack([0.3 * torch.sin(2 * torch.pi * 220 * t), 0.3 * torch.sin(2 * torch.pi * 330 * t)])
    batch = {
        "audio": AudioBatch(waves, samples, 24000),
        "speech_tokens": TokenBatch(torch.randint(0, VOCAB, (2, 16)), torch.tensor([16, 12])),
    }
    optimizer = flow.configure_optimizers()["optimizer"]
    losses = []
    for step in range(8):
        loss = flow.training_step(batch, step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-3:]) < sum(losses[:3])
    with pytest.raises(KeyError, match="minmo prepare"):
        flow.training_step({"audio": batch["audio"]}, 0)
    flow.eval()  # streaming still equals offline once training moved the weights
    rows = [batch["speech_tokens"].tokens[0], batch["speech_tokens"].tokens[1, :12]]
    prompt = _prompt([3, 3])
    with torch.no_grad():
        offline, lengths, _ = flow.inference(_pad(rows), prompt, chunk_size=4, num_left_chunks=1)
        streamed = _stream(flow, rows, prompt, [6, 5, 5])
    for row, mel in enumerate(streamed):
        torch.testing.assert_close(mel, offline[row, :, : lengths[row]], atol=1e-5, rtol=1e-5)


def test_recipe_builds_the_flow_and_the_tts_datamodule() -> None:
    from minmo_lightning.cli import lightning_main

    recipe = Path(__file__).parents[1] / "recipes" / "components" / "token2wav_flow.yaml"
    cli = lightning_main(["--config", str(recipe), "--trainer.logger=false"], run=False)
    assert isinstance(cli.model, CosyVoice2Flow)
    assert cli.model.chunk_size == 15 and cli.model.num_left_chunks == 2
    assert type(cli.datamodule).__name__ == "TTSDataModule"
