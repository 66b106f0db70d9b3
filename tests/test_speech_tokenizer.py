"""S3TokenizerV2: golden parity, official key list, batching, long-audio windows, loaders, errors, training."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from minmo_lightning.components.speech_tokenizer.s3tokenizer import S3TokenizerV2
from minmo_lightning.components.speech_tokenizer.windows import WindowPolicy

from minmo_lightning.checkpoints import CheckpointMismatchError, load_state_dict_strict
from minmo_lightning.contracts import AudioBatch, TokenBatch
from minmo_lightning.golden import run_golden


def small(**overrides) -> S3TokenizerV2:
    torch.manual_seed(0)
    args = {"dim": 64, "n_heads": 2, "n_layers": 1, "asr_layers": 1, **overrides}
    return S3TokenizerV2.from_preset("tiny", **args).eval()


def chirps(seconds: list[float], seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    waves = []
    for s in seconds:
        t = torch.arange(int(s * 16000)) / 16000
        tone = torch.sin(2 * math.pi * (200 + 900 * t / max(s, 1e-3)) * t) * (
            0.5 + 0.4 * torch.sin(2 * math.pi * 1.3 * t)
        )
        waves.append(0.3 * tone + 0.02 * torch.randn(t.shape, generator=generator))
    return waves


def test_golden_parity_tokens_exact(golden_dir: Path):
    fixture, results = run_golden(golden_dir / "s3tokenizer_v2")
    failed = [r for r in results if not r.passed]
    assert not failed, failed
    assert {r.name for r in results} >= {"tokens (valid positions)", "token_lengths", "mel"}


def test_full_size_keys_match_official_list_on_meta(golden_dir: Path):
    keys = golden_dir / "checkpoint_keys" / "s3tokenizer_v2_25hz" / "keys.tsv"
    rows = [line.split("\t") for line in keys.read_text().splitlines()[1:]]
    official = {key: tuple(json.loads(shape)) for key, shape, _ in rows}
    with torch.device("meta"):
        model = S3TokenizerV2.from_preset("speech-tokenizer-v2-25hz")
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == official
    assert sum(p.numel() for p in model.parameters()) == 123_714_568
    load_state_dict_strict(model, {k: torch.empty(s, device="meta") for k, s in official.items()})


def test_batch_equals_per_item_and_padding_does_not_leak():
    model = small()
    waves = chirps([1.0, 0.37, 2.3])
    with torch.inference_mode():
        batch = model(AudioBatch.from_list(waves, 16000))
        for i, wave in enumerate(waves):
            single = model(AudioBatch.from_list([wave], 16000))
            assert (
                int(batch.lengths[i])
                == int(single.lengths[0])
                == len(wave) // 160 // 4 + (len(wave) // 160 % 4 > 0)
            )
            assert torch.equal(batch.tokens[i, : batch.lengths[i]], single.tokens[0])
    assert int(batch.tokens.max()) < model.codebook_size


@pytest.mark.parametrize("frames", [3001, 5300, 5601, 7000, 12345])
def test_window_policy_tiles_the_token_grid(frames):
    policy = WindowPolicy(3000, 400, 4)
    windows = policy.split(0, frames)
    covered = []
    for w in windows:
        n_tokens = (((w.end - w.start) - 1) // 2) // 2 + 1
        first_token = w.start // 4
        kept = list(range(first_token, first_token + n_tokens))[w.keep_from : w.keep_to]
        covered += kept
    total = ((frames - 1) // 2) // 2 + 1
    assert covered == list(range(total))
    assert all(w.end - w.start <= 3000 for w in windows)


def test_seventy_second_audio_goes_through_windows():
    model = small(n_layers=1, dim=32, n_heads=1, asr_vocab="", asr_layers=0)
    wave = chirps([70.0], seed=1)[0]
    with torch.inference_mode():
        out = model(AudioBatch.from_list([wave], 16000))
        assert out.lengths.tolist() == [1750]
        mel, mel_lengths = model.frontend(wave[None], torch.tensor([len(wave)]))
        expected = []
        for start, end, keep in (
            (0, 3000, slice(0, -50)),
            (2600, 5600, slice(50, -50)),
            (5200, 7000, slice(50, None)),
        ):
            tokens, _ = model.quantize(mel[:, :, start:end], torch.tensor([end - start]))
            expected.append(tokens[0, keep])
        assert torch.equal(out.tokens[0], torch.cat(expected))


def test_errors_on_bad_audio():
    model = small()
    wave = chirps([0.5])[0]
    with pytest.raises(ValueError, match="16000 Hz"):
        model(AudioBatch.from_list([wave], 22050))
    with pytest.raises(ValueError, match="empty"):
        model(AudioBatch(torch.zeros(2, 800), torch.tensor([800, 0]), 16000))
    with pytest.raises(ValueError, match="at least 201 samples"):
        model(AudioBatch.from_list([wave[:150]], 16000))


def test_mismatched_checkpoint_is_a_clear_error(tmp_path):
    from safetensors.torch import save_file

    model = small(asr_vocab="", asr_layers=0)
    other = small(dim=32, n_heads=1, asr_vocab="", asr_layers=0)
    save_file(other.state_dict(), str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointMismatchError, match="shape mismatches"):
        model.load_pretrained(str(tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="speech_tokenizer_v2.onnx"):
        model.load_pretrained(str(tmp_path / "empty"))


def test_state_dict_round_trip(tmp_path):
    from safetensors.torch import save_file

    source, target = small(asr_vocab="", asr_layers=0), small(asr_vocab="", asr_layers=0, n_layers=1)
    torch.nn.init.normal_(source.quantizer._codebook.project_down.weight)
    save_file(source.state_dict(), str(tmp_path / "model.safetensors"))
    target.load_pretrained(str(tmp_path))
    for key, value in source.state_dict().items():
        assert torch.equal(value, target.state_dict()[key])


def _official_style_onnx(model: S3TokenizerV2, path: Path) -> None:
    """An ONNX graph named like speech_tokenizer_v2.onnx (weights only; it is never executed)."""
    onnx = pytest.importorskip("onnx")
    from onnx import helper, numpy_helper

    fixed = {
        "encoder.conv1.weight": "onnx::Conv_2216",
        "encoder.conv1.bias": "onnx::Conv_2217",
        "encoder.conv2.weight": "onnx::Conv_2218",
        "encoder.conv2.bias": "onnx::Conv_2219",
        "quantizer._codebook.project_down.weight": "onnx::MatMul_2536",
        "quantizer._codebook.project_down.bias": "quantizer.project_in.bias",
    }
    initializers, nodes = [], []

    def add(name: str, tensor: torch.Tensor, node_name: str, op: str, inputs: list[str]) -> None:
        array = (tensor.t() if tensor.dim() == 2 else tensor).contiguous().numpy()
        initializers.append(numpy_helper.from_array(array, name))
        nodes.append(helper.make_node(op, inputs, [node_name + "_out"], name=node_name))

    state = model.state_dict()
    for key, name in fixed.items():
        add(
            name,
            state[key],
            "/" + name.replace(":", "_"),
            "Conv" if "Conv" in name else "MatMul",
            ["x", name],
        )
    for i in range(model.hparams.n_layers):
        for ln in ("attn_ln", "mlp_ln"):
            scale, bias = f"ln{i}{ln}.scale", f"ln{i}{ln}.bias"
            initializers += [
                numpy_helper.from_array(state[f"encoder.blocks.{i}.{ln}.weight"].numpy(), scale),
                numpy_helper.from_array(state[f"encoder.blocks.{i}.{ln}.bias"].numpy(), bias),
            ]
            nodes.append(
                helper.make_node(
                    "LayerNormalization",
                    ["x", scale, bias],
                    [f"{ln}{i}"],
                    name=f"/blocks.{i}/{ln}/LayerNormalization",
                )
            )
        for module, onnx_path in (
            ("attn.query", "attn/query"),
            ("attn.key", "attn/key"),
            ("attn.value", "attn/value"),
            ("attn.out", "attn/out"),
            ("mlp.0", "mlp/mlp.0"),
            ("mlp.2", "mlp/mlp.2"),
        ):
            weight = f"encoder.blocks.{i}.{module}.weight"
            add(
                f"onnx::MatMul_{i}{module}",
                state[weight],
                f"/blocks.{i}/{onnx_path}/MatMul",
                "MatMul",
                ["x", f"onnx::MatMul_{i}{module}"],
            )
            if weight.replace("weight", "bias") in state:
                name = f"blocks.{i}.{module}.bias"
                add(
                    name,
                    state[weight.replace("weight", "bias")],
                    f"/blocks.{i}/{onnx_path}/Add",
                    "Add",
                    [name, "x"],
                )
        fsmn = f"encoder.blocks.{i}.attn.fsmn_block.weight"
        add(
            f"onnx::Conv_fsmn{i}",
            state[fsmn],
            f"/blocks.{i}/attn/fsmn_block/Conv",
            "Conv",
            ["x", f"onnx::Conv_fsmn{i}"],
        )
    graph = helper.make_graph(nodes, "s3tokenizer", [], [], initializer=initializers)
    onnx.save(helper.make_model(graph), str(path))


def test_onnx_initializers_convert_with_transposes(tmp_path):
    source = small(asr_vocab="", asr_layers=0)
    torch.nn.init.normal_(source.encoder.blocks[0].attn.query.weight)
    _official_style_onnx(source, tmp_path / "speech_tokenizer_v2.onnx")
    target = small(asr_vocab="", asr_layers=0)
    torch.nn.init.zeros_(target.encoder.blocks[0].attn.query.weight)
    target.load_pretrained(str(tmp_path))
    for key, value in source.state_dict().items():
        assert torch.equal(value, target.state_dict()[key]), key
    bigger = small(asr_vocab="", asr_layers=0, n_layers=2)
    with pytest.raises(CheckpointMismatchError, match="missing keys"):
        bigger.load_pretrained(str(tmp_path / "speech_tokenizer_v2.onnx"))


def test_onnx_without_package_says_how_to_fix(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_onnx(name, *args, **kwargs):
        if name == "onnx" or name.startswith("onnx."):
            raise ImportError("no onnx")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnx)
    (tmp_path / "speech_tokenizer_v2.onnx").write_bytes(b"")
    with pytest.raises(ImportError, match="pip install onnx"):
        small(asr_vocab="", asr_layers=0).load_pretrained(str(tmp_path))


def test_training_step_reaches_the_encoder_through_fsq():
    model = small().train()
    batch = {
        "ids": ["a", "b"],
        "audio": AudioBatch.from_list(chirps([1.2, 0.8]), 16000),
        "text": ["Call Peter now.", "Hi!"],
    }
    loss = model.training_step(batch, 0)
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    assert model.encoder.conv1.weight.grad.abs().sum() > 0
    assert model.quantizer._codebook.project_down.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="outside asr_vocab: '7'"):
        model.training_step({**batch, "text": ["room 7", "x"]}, 0)


def test_prosody_targets_read_the_pitch_and_loudness_of_each_token():
    """A 200 Hz tone (12 semitones re 100 Hz) then silence: voiced at 12 semitones, quiet where silent."""
    from minmo_lightning.components.speech_tokenizer.prosody_head import ProsodyTargets

    t = torch.arange(8000) / 16000
    wave = torch.cat([0.3 * torch.sin(2 * math.pi * 200 * t), torch.zeros(8000)])
    targets = ProsodyTargets(0.04)(AudioBatch.from_list([wave, wave[:4000]], 16000), 25)
    assert targets.shape == (2, 25, 4, 3)
    tone, silence = targets[0, 2:12].flatten(0, 1), targets[0, 14:].flatten(0, 1)
    assert bool((tone[:, 0] == 1).all()) and torch.allclose(tone[:, 1], torch.ones(40), atol=0.02)
    assert bool((silence[:, 0] == 0).all()) and bool(silence[:, 2].max() < tone[:, 2].min() - 2)
    assert bool((targets[1, 7:, :, 0] == 0).all())  # past a clip's length: silence


def test_prosody_objective_trains_the_codes_and_stays_out_of_the_official_keys():
    plain = small().train()
    model = small(prosody_weight=1.0).train()
    batch = {
        "ids": ["a", "b"],
        "audio": AudioBatch.from_list(chirps([1.2, 0.8]), 16000),
        "text": ["Call Peter now.", "Hi!"],
    }
    loss = model.training_step(batch, 0)
    assert loss > plain.training_step(batch, 0)  # same weights (seeded), one more term
    loss.backward()
    assert model.prosody_head.net[0].weight.grad.abs().sum() > 0
    assert model.quantizer._codebook.project_down.weight.grad.abs().sum() > 0
    extra = set(model.state_dict()) - set(plain.state_dict())
    assert extra and all(key.startswith("prosody_head.") for key in extra)
    assert S3TokenizerV2.presets["speech-tokenizer-v2-25hz"]["prosody_weight"] == 0


def test_transcribe_tokens_reads_what_the_ctc_head_reads_from_audio():
    model = small().eval()
    audio = AudioBatch.from_list(chirps([1.2, 0.8]), 16000)
    with torch.no_grad():
        log_probs, lengths, _, _ = model._asr_forward(audio)
    expected = [model.vocab.decode(ids) for ids in model.asr_head.greedy(log_probs, lengths)]
    assert model.transcribe_tokens(model(audio)) == expected
    with pytest.raises(ValueError):
        model.transcribe_tokens(TokenBatch(torch.tensor([[model.codebook_size]]), torch.tensor([1])))
    with pytest.raises(RuntimeError, match="no CTC head"):
        small(asr_vocab="", asr_layers=0).transcribe_tokens(model(audio))


def test_inference_preset_refuses_to_train():
    model = small(asr_vocab="", asr_layers=0)
    batch = {"audio": AudioBatch.from_list(chirps([0.5]), 16000), "text": ["hi"]}
    with pytest.raises(RuntimeError, match="asr_vocab"):
        model.training_step(batch, 0)


def test_calibration_centres_fsq_and_penalty_targets_saturation():
    model = small()
    hidden = 5.0 + torch.randn(400, 64)  # a shared offset like the encoder's residual stream
    model.quantizer.calibrate(hidden)
    z = model.quantizer._codebook.project_down(hidden)
    assert torch.allclose(z.mean(0), torch.zeros(8), atol=1e-4)
    assert torch.allclose(z.std(0), torch.ones(8), atol=1e-4)
    digits = model.quantizer.bounded(hidden).round()
    assert {-1.0, 0.0, 1.0} <= set(digits.unique().tolist())
    assert float(model.quantizer.saturation_penalty(hidden)) < 0.05
    assert float(model.quantizer.saturation_penalty(hidden * 10)) > 1.0


def test_optimizer_warms_up_then_decays_to_its_floor():
    from types import SimpleNamespace

    model = small(learning_rate=2e-3, warmup_steps=20)
    model._trainer = SimpleNamespace(estimated_stepping_batches=200, callbacks=[])
    setup = model.configure_optimizers()
    optimizer, schedule = setup["optimizer"], setup["lr_scheduler"]["scheduler"].lr_lambdas[0]
    assert optimizer.defaults["lr"] == 2e-3 and optimizer.defaults["betas"] == (0.9, 0.98)
    assert sorted(group["weight_decay"] for group in optimizer.param_groups) == [0.0, 0.01]
    assert schedule(0) == pytest.approx(1 / 20) and schedule(19) == pytest.approx(1.0)
    assert schedule(110) == pytest.approx(0.05 + 0.95 * 0.5) and schedule(200) == pytest.approx(0.05)
