"""WhisperEncoder: variable-length path == transformers' 3000-frame path, log-mel, loading, presets."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from minmo_lightning.components.voice_encoder.whisper import WhisperEncoder

from minmo_lightning.checkpoints import CheckpointMismatchError
from minmo_lightning.contracts import AudioBatch


def tiny() -> WhisperEncoder:
    torch.manual_seed(0)
    block = WhisperEncoder.from_preset("tiny").eval()
    block.configure_model()
    return block.eval()


def test_full_window_equals_transformers_forward() -> None:
    block = tiny()
    mel = torch.randn(1, 80, 3000)
    ours = block.encode_mel(mel, torch.tensor([3000]))
    with torch.no_grad():
        reference = block.encoder(mel).last_hidden_state
    assert ours.lengths.tolist() == [1500]
    torch.testing.assert_close(ours.values, reference, atol=1e-5, rtol=1e-5)


def _padded_reference(block: WhisperEncoder, mel, frames: int):
    """transformers' modules on the 3000-frame zero-padded input, attention limited to the valid frames."""
    enc = block.encoder
    padded = F.pad(mel[..., :frames], (0, 3000 - frames))
    x = F.gelu(enc.conv2(F.gelu(enc.conv1(padded)))).transpose(1, 2) + enc.embed_positions.weight
    valid = torch.arange(1500) < (frames + 1) // 2
    mask = torch.zeros(1500).masked_fill(~valid, torch.finfo(x.dtype).min)[None, None, None, :]
    for layer in enc.layers:
        x = layer(x, mask)
    return enc.layer_norm(x)[:, valid]


@pytest.mark.parametrize("frames", [101, 250])
def test_sliced_positions_equal_padded_3000_path_on_valid_frames(frames: int) -> None:
    block = tiny()
    mel = torch.randn(1, 80, frames)
    with torch.no_grad():
        ours = block.encode_mel(mel, torch.tensor([frames]))
        reference = _padded_reference(block, mel, frames)
    assert ours.values.shape[1] == (frames + 1) // 2
    torch.testing.assert_close(ours.values, reference, atol=1e-5, rtol=1e-5)


def test_batch_equals_items_and_contract() -> None:
    block = tiny()
    waves = [torch.randn(24000) * 0.1, torch.randn(10000) * 0.1]
    with torch.no_grad():
        batch = block(AudioBatch.from_list(waves, 16000))
        assert batch.lengths.tolist() == [75, 31] and batch.values.shape[-1] == block.output_dim
        for i, wave in enumerate(waves):
            alone = block(AudioBatch.from_list([wave], 16000))
            torch.testing.assert_close(
                batch.values[i, : batch.lengths[i]], alone.values[0], atol=1e-5, rtol=1e-5
            )
    assert block.frame_rate == 50.0


def test_log_mel_matches_whisper_feature_extractor_on_valid_frames() -> None:
    from transformers import WhisperFeatureExtractor

    torch.manual_seed(0)
    wave = torch.randn(20800) * 0.1
    extractor = WhisperFeatureExtractor(feature_size=80)
    reference = extractor(wave.numpy(), sampling_rate=16000, return_tensors="pt").input_features
    mel, frames = tiny().frontend(wave[None], torch.tensor([20800]))
    assert frames.tolist() == [130]
    torch.testing.assert_close(mel[0], reference[0, :, :130], atol=1e-4, rtol=1e-4)


def test_large_v3_preset_is_meta_safe() -> None:
    with torch.device("meta"):
        block = WhisperEncoder.from_preset("whisper-large-v3")
        assert block.encoder is None
        block.configure_model()
    count = sum(p.numel() for p in block.encoder.parameters())
    assert 630e6 < count < 640e6 and block.output_dim == 1280


def test_load_pretrained_local_folder(tmp_path: Path) -> None:
    from transformers import WhisperForConditionalGeneration

    source = tiny()
    hf = WhisperForConditionalGeneration(source.whisper_config())
    hf.model.encoder.load_state_dict(source.encoder.state_dict())
    hf.save_pretrained(tmp_path)
    target = WhisperEncoder.from_preset("tiny").eval()
    target.load_pretrained(str(tmp_path))
    wave = AudioBatch(torch.randn(1, 16000) * 0.1, torch.tensor([16000]), 16000)
    with torch.no_grad():
        torch.testing.assert_close(target(wave).values, source(wave).values)

    with pytest.raises(ValueError, match="d_model: 64 there, 96 here"):
        WhisperEncoder.from_preset("tiny", d_model=96).load_pretrained(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="expected config.json"):
        target.load_pretrained(str(tmp_path / "missing"))
    state = {f"model.encoder.{k}": v for k, v in source.encoder.state_dict().items() if "layers.1." not in k}
    from safetensors.torch import save_file

    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointMismatchError, match="missing keys"):
        target.load_pretrained(str(tmp_path))


def test_errors() -> None:
    block = tiny()
    with pytest.raises(ValueError, match="at most 30 s"):
        block(AudioBatch(torch.zeros(1, 16000 * 31), torch.tensor([16000 * 31]), 16000))
    with pytest.raises(ValueError, match="one 10 ms mel frame"):
        block(AudioBatch(torch.zeros(1, 100), torch.tensor([100]), 16000))
    with pytest.raises(RuntimeError, match="configure_model"):
        WhisperEncoder.from_preset("tiny")(AudioBatch(torch.zeros(1, 1600), torch.tensor([1600]), 16000))
