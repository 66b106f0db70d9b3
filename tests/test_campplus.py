"""CAM++ (CosyVoice2's speaker encoder): golden parity, official keys and size, frontend, loaders, conditioning."""

from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from minmo_lightning.components.token2wav.campplus import CAMPPlus
from minmo_lightning.components.token2wav.flow import CosyVoice2Flow
from minmo_lightning.components.token2wav.token2wav import CosyVoice2Token2Wav
from minmo_lightning.components.voice_encoder.frontend import KaldiFbank, kaldi_mel_banks

from minmo_lightning.checkpoints import CheckpointMismatchError
from minmo_lightning.contracts import AudioBatch, TokenBatch
from minmo_lightning.golden import load_fixture, run_golden
from minmo_lightning.registry import count_preset_parameters

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def calibrated(golden_dir: Path) -> CAMPPlus:
    """The fixture's small CAM++ with its calibrated batch norms (random weights whose embedding depends on
    the input)."""
    fixture = load_fixture(golden_dir / "campplus")
    args = ("feat_dim", "embedding_size", "growth_rate", "bn_size", "init_channels")
    model = CAMPPlus(**{name: fixture.config["CAMPPlus"][name] for name in args}).eval()
    model.load_state_dict(fixture.state_dict())
    return model


def _voice(f0: float, tilt: float, seed: int, seconds: float = 1.5, rate: int = 16000) -> torch.Tensor:
    """A synthetic voice: 19 harmonics of a vibrato f0 with spectral ``tilt``, a syllable envelope."""
    generator = torch.Generator().manual_seed(seed)
    t = torch.arange(int(rate * seconds)) / rate
    vibrato = 3 + torch.rand(1, generator=generator)
    phase = 2 * math.pi * torch.cumsum(f0 * (1 + 0.03 * torch.sin(2 * math.pi * vibrato * t)), 0) / rate
    offsets = 2 * math.pi * torch.rand(19, generator=generator)
    wave = sum(k**-tilt * torch.sin(k * phase + offsets[k - 1]) for k in range(1, 20))
    wave = wave * (
        0.5 + 0.5 * torch.sin(2 * math.pi * (2 + 2 * torch.rand(1, generator=generator)) * t).abs()
    )
    wave = wave + 0.01 * torch.randn(t.shape, generator=generator)
    return 0.5 * wave / wave.abs().max()


def test_golden_fixture(golden_dir: Path) -> None:
    _, results = run_golden(golden_dir / "campplus")
    assert {r.name for r in results} >= {"embedding0", "head2", "batch_embedding"}
    assert all(r.passed for r in results), [r for r in results if not r.passed]


def test_full_size_keys_and_parameter_count(golden_dir: Path) -> None:
    with (golden_dir / "checkpoint_keys" / "campplus" / "keys.tsv").open() as handle:
        expected = {
            row["key"]: row["shape"].replace(" ", "") for row in csv.DictReader(handle, delimiter="\t")
        }
    assert len(expected) == 937
    with torch.device("meta"):
        model = CAMPPlus.from_preset("campplus")
        token2wav = CosyVoice2Token2Wav.from_preset("cosyvoice2-0.5b")
    assert {k: str(list(v.shape)).replace(" ", "") for k, v in model.state_dict().items()} == expected
    assert count_preset_parameters(CAMPPlus, "campplus") == 6_848_544
    part = {
        k.removeprefix("speaker_encoder.") for k in token2wav.state_dict() if k.startswith("speaker_encoder.")
    }
    assert part == set(expected)


def test_frontend_is_the_kaldi_fbank_minus_its_mean() -> None:
    model = CAMPPlus.from_preset("tiny")
    waves = [_voice(120, 1.0, 0, 0.5), _voice(200, 1.5, 1, 0.3)]
    feats, frames = model.features(AudioBatch.from_list(waves, 16000))
    assert frames.tolist() == [1 + (8000 - 400) // 160, 1 + (4800 - 400) // 160]
    fbank = KaldiFbank(16000, 80, window_type="povey", input_scale=1.0)
    for row, wave in enumerate(waves):
        raw, _ = fbank(wave[None], torch.tensor([wave.numel()]))
        torch.testing.assert_close(feats[row, : frames[row]], raw[0] - raw[0].mean(0), atol=1e-5, rtol=0)
    assert feats[1, frames[1] :].abs().max() == 0
    # torchaudio's Kaldi recipe for the first frame, written out: [-1, 1] samples, DC removal, pre-emphasis
    # 0.97, povey window (Hann ** 0.85), 512-point power spectrum, mel banks from 20 Hz, log
    frame = waves[0][:400].double()
    frame = frame - frame.mean()
    frame = frame - 0.97 * torch.cat([frame[:1], frame[:-1]])
    n = torch.arange(400, dtype=torch.float64)
    frame = frame * (0.5 - 0.5 * torch.cos(2 * math.pi * n / 399)).pow(0.85)
    power = torch.fft.rfft(F.pad(frame, (0, 112))).abs().pow(2)
    expected = (
        (power @ kaldi_mel_banks(80, 512, 16000).double().T).clamp(min=torch.finfo(torch.float32).eps).log()
    )
    raw, _ = fbank(waves[0][None], torch.tensor([waves[0].numel()]))
    torch.testing.assert_close(raw[0, 0].double(), expected, atol=1e-3, rtol=1e-4)


def test_too_short_prompt_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"CAM\+\+: prompt audio row\(s\) \[1\] are shorter than 0.045 s"):
        CAMPPlus.from_preset("tiny").embed(AudioBatch.from_list([torch.zeros(8000), torch.zeros(500)], 16000))
    with pytest.raises(ValueError, match="expects 16000 Hz audio"):
        CAMPPlus.from_preset("tiny").embed(AudioBatch.from_list([torch.zeros(8000)], 24000))


@torch.no_grad()
def test_embedding_depends_on_the_speaker(calibrated: CAMPPlus) -> None:
    low, low_again, high = _voice(110, 1.0, 1), _voice(112, 1.0, 2), _voice(230, 2.0, 3)
    embeddings = calibrated.embed(AudioBatch.from_list([low, low_again, high], 16000))
    unit = F.normalize(embeddings, dim=1)  # what the flow's speaker() does before its affine layer
    torch.testing.assert_close(unit.norm(dim=1), torch.ones(3))
    similarity = unit @ unit.T
    assert similarity[0, 2] < 0.9 and similarity[1, 2] < 0.9, similarity
    alone = calibrated.embed(AudioBatch.from_list([high], 16000))  # rows run alone: padding changes nothing
    torch.testing.assert_close(alone[0], embeddings[2], atol=1e-4, rtol=0)


@torch.no_grad()
def test_pytorch_checkpoint_round_trip(calibrated: CAMPPlus, tmp_path: Path) -> None:
    torch.save(calibrated.state_dict(), tmp_path / "campplus_cn_common.bin")
    reloaded = CAMPPlus(**calibrated.hparams).eval()
    reloaded.load_pretrained(str(tmp_path))  # the folder: finds campplus_cn_common.bin
    feats = torch.randn(1, 150, 80)
    torch.testing.assert_close(reloaded(feats), calibrated(feats), atol=0, rtol=0)
    with pytest.raises(CheckpointMismatchError, match="shape mismatches"):
        CAMPPlus.from_preset("tiny").load_pretrained(tmp_path / "campplus_cn_common.bin")  # 192-d vs 64-d
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(FileNotFoundError, match="expected one of campplus.onnx, campplus_cn_common.bin"):
        reloaded.load_pretrained(tmp_path / "checkpoints")


@torch.no_grad()
def test_onnx_export_round_trip(calibrated: CAMPPlus, tmp_path: Path) -> None:
    """The release's export settings (TorchScript, opset 11, constant folding: batch norms folded into convs)."""
    onnx = pytest.importorskip("onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            calibrated,
            (torch.randn(1, 120, 80),),
            str(tmp_path / "campplus.onnx"),
            dynamo=False,
            opset_version=11,
            do_constant_folding=True,
            input_names=["feature"],
            output_names=["embedding"],
        )
    graph = onnx.load(str(tmp_path / "campplus.onnx")).graph
    norms = sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in calibrated.modules())
    assert sum(n.op_type == "BatchNormalization" for n in graph.node) < norms  # some were folded
    reloaded = CAMPPlus(**calibrated.hparams).eval()
    reloaded.load_pretrained(str(tmp_path))  # the folder: finds campplus.onnx
    for frames in (120, 237, 41):
        feats = torch.randn(1, frames, 80)
        torch.testing.assert_close(reloaded(feats), calibrated(feats), atol=1e-4, rtol=0)  # folding rounds
    with pytest.raises(ValueError, match="build the model with the exported model's sizes"):
        CAMPPlus.from_preset("tiny").load_pretrained(tmp_path / "campplus.onnx")


def _token2wav(speaker_encoder: str | None) -> CosyVoice2Token2Wav:
    torch.manual_seed(0)
    flow = {**CosyVoice2Flow.presets["tiny"], "n_timesteps": 2}
    return CosyVoice2Token2Wav.from_preset("tiny", flow=flow, speaker_encoder=speaker_encoder).eval()


@torch.no_grad()
def test_token2wav_speaks_with_the_prompt_voice() -> None:
    model = _token2wav("tiny")
    prompt_16k = AudioBatch.from_list([_voice(150, 1.2, 4, 1.0)], 16000)
    prompt = model.speaker_prompt(prompt_16k)
    assert prompt.embedding.shape == (1, 192) and prompt.tokens is None
    tokens = TokenBatch(torch.randint(0, 6561, (1, 12)), torch.tensor([12]))
    voiced, plain = model(tokens, prompt), model(tokens)
    assert voiced.lengths.tolist() == plain.lengths.tolist() == [12 * 960]
    assert torch.isfinite(voiced.waveform).all() and voiced.waveform.abs().max() > 0
    assert (voiced.waveform - plain.waveform).abs().max() > 1e-3
    # zero-shot: the prompt's tokens and 24 kHz mel too, cut to 2 mel frames per token
    prompt_24k = AudioBatch.from_list([_voice(150, 1.2, 4, 0.7, rate=24000)], 24000)
    prompt_tokens = TokenBatch(torch.randint(0, 6561, (1, 30)), torch.tensor([30]))
    full = model.speaker_prompt(prompt_16k, prompt_tokens, prompt_24k)
    assert full.tokens.lengths.tolist() == [17] and full.mel.shape == (1, 34, 80)  # 0.7 s: 35 frames
    assert model(tokens, full).lengths.tolist() == [12 * 960]
    without = _token2wav(None).speaker_prompt(prompt_16k)
    assert without.embedding.abs().max() == 0


def test_token2wav_speaker_encoder_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="gives 192-d x-vectors, the flow's spk_embed_dim is 64"):
        CosyVoice2Token2Wav.from_preset(
            "tiny", flow={**CosyVoice2Flow.presets["tiny"], "spk_embed_dim": 64}, speaker_encoder="tiny"
        )
    (tmp_path / "flow.pt").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="missing campplus.onnx"):
        _token2wav("tiny").load_pretrained(str(tmp_path))
    with pytest.raises(ValueError, match="needs both its speech tokens and its 24 kHz audio"):
        _token2wav("tiny").speaker_prompt(
            AudioBatch.from_list([torch.zeros(8000)], 16000),
            audio_24k=None,
            tokens=TokenBatch(torch.zeros(1, 3, dtype=torch.long), torch.tensor([3])),
        )
