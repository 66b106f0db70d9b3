"""SenseVoice voice encoder: golden parity, official key layout, loading, input errors, batching."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from minmo_lightning.components.voice_encoder.cmvn import estimate_cmvn, write_cmvn
from minmo_lightning.components.voice_encoder.frontend import SenseVoiceFrontend, load_cmvn
from minmo_lightning.components.voice_encoder.sensevoice import SenseVoiceEncoder
from saved_activations import run_counting_saved

from minmo_lightning.checkpoints import CheckpointMismatchError
from minmo_lightning.contracts import AudioBatch, lengths_to_mask
from minmo_lightning.golden import run_golden


def tiny(**overrides) -> SenseVoiceEncoder:
    torch.manual_seed(0)
    args = dict(
        output_size=32, attention_heads=2, linear_units=64, num_layers=2, tp_layers=1, stream_left_frames=8
    )
    return SenseVoiceEncoder.from_preset("tiny", **{**args, **overrides}).eval()


@pytest.mark.parametrize("item", ["sensevoice_frontend", "sensevoice_encoder", "sensevoice_model"])
def test_golden(item: str, golden_dir: Path) -> None:
    _, results = run_golden(golden_dir / item)
    failed = [f"{r.name}: {r.max_abs_error:.3g} > {r.tolerance:g}" for r in results if not r.passed]
    assert results and not failed, failed


def _official_keys(golden_dir: Path) -> dict[str, tuple[int, ...]]:
    keys = golden_dir / "checkpoint_keys" / "sensevoice_small" / "keys.tsv"
    rows = [line.split("\t") for line in keys.read_text().splitlines()[1:]]
    return {key: tuple(json.loads(shape)) for key, shape, _ in rows}


def test_sensevoice_small_matches_official_keys_and_loads_strictly(golden_dir: Path) -> None:
    official = _official_keys(golden_dir)
    with torch.device("meta"):
        block = SenseVoiceEncoder.from_preset("sensevoice-small")
    ours = {k: tuple(v.shape) for k, v in block.state_dict().items()}
    assert list(ours) == list(official)
    assert ours == official
    assert sum(p.numel() for p in block.parameters()) == 233_999_167
    meta_state = {k: torch.empty(shape, device="meta") for k, shape in official.items()}
    from minmo_lightning.checkpoints import load_state_dict_strict

    load_state_dict_strict(block, meta_state, source="keys.tsv")
    del meta_state["ctc.ctc_lo.bias"]
    with pytest.raises(CheckpointMismatchError, match="missing keys .*ctc.ctc_lo.bias"):
        load_state_dict_strict(block, meta_state, source="keys.tsv")


def test_presets_build_on_meta() -> None:
    with torch.device("meta"):
        large = SenseVoiceEncoder.from_preset("sensevoice-large-like")
    count = sum(p.numel() for p in large.encoder.parameters())
    assert 550e6 < count < 700e6 and large.output_dim == 1280
    block = SenseVoiceEncoder.from_preset("tiny")
    assert block.frame_rate == pytest.approx(16000 / 960) and block.sample_rate == 16000


def test_forward_contract_and_batch_equals_items() -> None:
    block = tiny()
    torch.manual_seed(1)
    waves = [torch.randn(16000) * 0.1, torch.randn(9000) * 0.1]
    batch = block(AudioBatch.from_list(waves, 16000))
    assert batch.values.shape[-1] == block.output_dim
    expected = [4 + -(-(1 + (len(w) - 400) // 160) // 6) for w in waves]
    assert batch.lengths.tolist() == expected
    for i, wave in enumerate(waves):
        alone = block(AudioBatch.from_list([wave], 16000))
        torch.testing.assert_close(batch.values[i, : expected[i]], alone.values[0], atol=1e-5, rtol=1e-5)


def test_frontend_handles_clips_shorter_than_a_frame() -> None:
    frontend = SenseVoiceFrontend().eval()
    feats, lengths = frontend(torch.randn(2, 800) * 0.1, torch.tensor([800, 300]))
    assert lengths.tolist() == [1, 1] and torch.isfinite(feats).all()


def test_input_errors_are_clear() -> None:
    block = tiny(max_seconds=2.0)
    with pytest.raises(ValueError, match="expects 16000 Hz"):
        block(AudioBatch(torch.zeros(1, 8000), torch.tensor([8000]), 8000))
    with pytest.raises(ValueError, match="mono"):
        block(AudioBatch(torch.zeros(1, 2, 8000), torch.tensor([8000]), 16000))
    with pytest.raises(ValueError, match="empty waveform"):
        block(AudioBatch(torch.zeros(2, 8000), torch.tensor([8000, 0]), 16000))
    with pytest.raises(ValueError, match="at most 2 s"):
        block(AudioBatch(torch.zeros(1, 48000), torch.tensor([48000]), 16000))
    with pytest.raises(ValueError, match="not a SenseVoice language"):
        SenseVoiceEncoder.from_preset("tiny", language="xx")


def _sentencepiece_model(folder: Path) -> Path:
    import sentencepiece
    from minmo_lightning.components.voice_encoder.tokenizer import (
        EMOTIONS,
        EVENTS,
        LANGUAGES,
        TEXT_NORMS,
        tag,
    )

    text = folder / "text.txt"
    text.write_text(
        "\n".join(["turn on the kitchen lights", "what is the weather in paris", "call anna now"] * 20)
    )
    tags = [tag(t) for t in (*LANGUAGES, *EMOTIONS, *EVENTS, *TEXT_NORMS)]
    sentencepiece.SentencePieceTrainer.train(
        input=str(text), model_prefix=str(folder / "toy.bpe"), vocab_size=60, model_type="bpe",
        user_defined_symbols=tags, unk_id=0, bos_id=-1, eos_id=-1, minloglevel=2,
    )  # fmt: skip
    return folder / "toy.bpe.model"


def test_load_pretrained_official_layout(tmp_path: Path, golden_dir: Path) -> None:
    import sentencepiece

    model = _sentencepiece_model(tmp_path)
    vocab = sentencepiece.SentencePieceProcessor(model_file=str(model)).get_piece_size()
    source = tiny(vocab_size=vocab, ctc_slots_per_frame=1, tokenizer=None)
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, tmp_path / "model.pt"
    )
    (tmp_path / "am.mvn").write_text((golden_dir / "sensevoice_frontend" / "am.mvn").read_text())
    conf = {k: source.hparams[k] for k in ("output_size", "attention_heads", "linear_units")}
    conf["num_blocks"] = source.hparams.num_layers  # funasr's names for the layer counts
    conf["tp_blocks"] = source.hparams.tp_layers
    (tmp_path / "config.yaml").write_text(
        json.dumps({"encoder_conf": conf, "tokenizer_conf": {"bpemodel": "toy.bpe.model"}})
    )
    target = tiny(vocab_size=vocab, ctc_slots_per_frame=1, tokenizer=None)
    target.load_pretrained(str(tmp_path))
    for key, value in source.state_dict().items():
        torch.testing.assert_close(target.state_dict()[key], value)
    assert target.frontend.cmvn is not None and target.hparams.cmvn_file.endswith("am.mvn")
    result = target.transcribe(AudioBatch(torch.randn(1, 16000) * 0.1, torch.tensor([16000]), 16000))
    assert isinstance(result[0].text, str)

    wrong_size = tiny(output_size=48, vocab_size=vocab, ctc_slots_per_frame=1, tokenizer=None)
    with pytest.raises(ValueError, match="output_size: 32 there, 48 here"):
        wrong_size.load_pretrained(str(tmp_path))
    wrong_depth = tiny(num_layers=3, vocab_size=vocab, ctc_slots_per_frame=1, tokenizer=None)
    with pytest.raises(ValueError, match="num_blocks: 2 there, 3 here"):
        wrong_depth.load_pretrained(str(tmp_path))
    state = source.state_dict()
    del state["embed.weight"]
    torch.save(state, tmp_path / "model.pt")
    with pytest.raises(CheckpointMismatchError, match=r"missing keys \(1\): embed.weight"):
        target.load_pretrained(str(tmp_path))


def test_load_pretrained_wrong_folder_lists_expected_files(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="missing model.pt, am.mvn, config.yaml.*Found: weights.bin"):
        tiny().load_pretrained(str(tmp_path))


def test_cmvn_estimate_round_trips_and_normalises(tmp_path) -> None:
    g = torch.Generator().manual_seed(0)
    batches = [
        AudioBatch.from_list(
            [0.3 * torch.randn(16000, generator=g), 0.1 * torch.randn(9000, generator=g)], 16000
        )
    ]
    frontend = SenseVoiceFrontend()
    cmvn = estimate_cmvn(frontend, batches, max_frames=10**6)
    write_cmvn(tmp_path / "am.mvn", cmvn)
    loaded = load_cmvn(tmp_path / "am.mvn")
    torch.testing.assert_close(loaded, cmvn, rtol=1e-6, atol=0)
    frontend.set_cmvn(loaded)
    feats, lengths = frontend(batches[0].waveform, batches[0].lengths)
    frames = torch.cat([feats[i, :n] for i, n in enumerate(lengths.tolist())])
    assert frames.mean(0).abs().max() < 1e-3 and (frames.std(0, unbiased=False) - 1).abs().max() < 1e-3
    with pytest.raises(ValueError, match="has none set"):
        estimate_cmvn(frontend, batches, max_frames=10)


@pytest.mark.parametrize("name", ["SenseVoiceEncoder", "WhisperEncoder"])
def test_gradient_checkpointing_keeps_outputs_and_gradients(name: str) -> None:
    """Recomputing layer activations in backward is a memory trade, never a numerical change."""
    from minmo_lightning.components.voice_encoder.whisper import WhisperEncoder

    cls = {"SenseVoiceEncoder": SenseVoiceEncoder, "WhisperEncoder": WhisperEncoder}[name]
    audio = AudioBatch(0.1 * torch.randn(2, 16000, generator=torch.Generator().manual_seed(0)),
                       torch.tensor([16000, 11000]), 16000)  # fmt: skip
    results = []
    for recompute in (False, True):
        torch.manual_seed(0)
        extra = {"dropout_rate": 0.0, "dither": 0.0} if name == "SenseVoiceEncoder" else {}
        block = cls.from_preset("tiny", gradient_checkpointing=recompute, **extra)
        block.configure_model()
        block.train()
        out, saved = run_counting_saved(lambda: block(audio))  # noqa: B023 (called at once)
        valid = lengths_to_mask(out.lengths, out.values.shape[1])
        out.values[valid].square().mean().backward()
        grads = {n: p.grad.clone() for n, p in block.named_parameters() if p.grad is not None}
        results.append((out.values.detach(), grads, saved))
    (plain, plain_grads, plain_saved), (recomputed, recomputed_grads, recomputed_saved) = results
    assert recomputed_saved < 0.5 * plain_saved  # activations are really dropped until backward
    torch.testing.assert_close(recomputed, plain)
    assert plain_grads.keys() == recomputed_grads.keys() and len(plain_grads) > 10
    for key, grad in plain_grads.items():
        torch.testing.assert_close(recomputed_grads[key], grad, msg=key)


@pytest.mark.parametrize("name", ["SenseVoiceEncoder", "WhisperEncoder"])
def test_a_bf16_encoder_keeps_float32_features(name):
    """Lightning's bf16-true casts the whole model: the frontend's windows, mel banks and CMVN stay float32 (the
    features are computed as the official frontends compute them) and the encoder runs in bf16."""
    from minmo_lightning.blocks import VoiceEncoder
    from minmo_lightning.registry import resolve_class

    torch.manual_seed(0)
    encoder = resolve_class(name, VoiceEncoder).from_preset("tiny")
    encoder.configure_model()
    encoder.eval()
    audio = AudioBatch.from_list([0.1 * torch.randn(16000)], 16000)
    reference = encoder(audio).values
    encoder.to(torch.bfloat16)
    constants = [b for b in encoder.frontend.buffers() if b is not None]
    assert constants and all(b.dtype == torch.float32 for b in constants)
    out = encoder(audio).values
    assert out.dtype == torch.bfloat16
    assert (out.float() - reference).abs().max() < 0.05 * reference.abs().max()
