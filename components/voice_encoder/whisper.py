"""``WhisperEncoder``: the Whisper encoder (transformers' modules and weights) at any length up to 30 s.

transformers' ``WhisperEncoder.forward`` accepts exactly 3000 mel frames, so a 2 s clip pays for 30 s of
attention. This block runs the same submodules (``conv1``, ``conv2``, ``embed_positions``, ``layers``,
``layer_norm``; the official key names under ``model.encoder.``) on the clip's own frames: it slices the
positional table to the clip length and masks padded keys in a batch. On valid frames that equals the
3000-frame computation with zero mel padding whose attention is restricted to the valid frames
(``tests/test_voice_encoder_whisper.py`` proves it). It is *not* the original 30 s-padded function, in
which real frames also attend to the padding's silence frames.

The module is built in ``configure_model()`` (Whisper-large-v3 is 635 M parameters; jsonargparse builds
blocks at parse time, on every rank).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from minmo_lightning.components.voice_encoder.frontend import WhisperLogMel
from torch import Tensor, nn

from minmo_lightning.activation_checkpointing import call_layer
from minmo_lightning.blocks import VoiceEncoder
from minmo_lightning.checkpoints import load_state_dict_strict, read_state_dict
from minmo_lightning.contracts import AudioBatch, SequenceBatch, lengths_to_mask

_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
_ENCODER_PREFIXES = ("model.encoder.", "encoder.")


#: Whisper-large-v3's encoder; ``tiny`` says how it differs
WHISPER_LARGE_V3 = dict(
    d_model=1280,
    encoder_layers=32,
    encoder_attention_heads=20,
    encoder_ffn_dim=5120,
    num_mel_bins=128,
    max_source_positions=1500,
    pretrained_path=None,
)


class WhisperEncoder(VoiceEncoder):
    """Whisper encoder: 16 kHz audio -> log-mel (10 ms) -> two convs (stride 2) -> 50 Hz frames."""

    sample_rate = 16000
    weight_args = ("pretrained_path",)
    presets = {
        "whisper-large-v3": WHISPER_LARGE_V3,
        "tiny": {
            **WHISPER_LARGE_V3,
            "d_model": 64,
            "encoder_layers": 2,
            "encoder_attention_heads": 4,
            "encoder_ffn_dim": 128,
            "num_mel_bins": 80,
        },
    }

    def __init__(
        self,
        d_model: int = WHISPER_LARGE_V3["d_model"],
        encoder_layers: int = WHISPER_LARGE_V3["encoder_layers"],
        encoder_attention_heads: int = WHISPER_LARGE_V3["encoder_attention_heads"],
        encoder_ffn_dim: int = WHISPER_LARGE_V3["encoder_ffn_dim"],
        num_mel_bins: int = WHISPER_LARGE_V3["num_mel_bins"],
        max_source_positions: int = WHISPER_LARGE_V3["max_source_positions"],
        pretrained_path: str | None = None,
        gradient_checkpointing: bool = False,
    ) -> None:
        """``gradient_checkpointing`` recomputes each layer's activations in backward (full-size fine-tuning
        on minutes of audio per batch does not fit one GPU without it)."""
        super().__init__()
        self.save_hyperparameters()
        self.frontend = WhisperLogMel(self.sample_rate, num_mel_bins)
        self.encoder: nn.Module | None = None
        self.output_dim = d_model
        self.frame_rate = self.sample_rate / self.frontend.hop / 2
        self.max_seconds = max_source_positions * 2 * self.frontend.hop / self.sample_rate

    def whisper_config(self):  # -> transformers.WhisperConfig
        from transformers import WhisperConfig

        h = self.hparams
        return WhisperConfig(
            d_model=h.d_model,
            encoder_layers=h.encoder_layers,
            encoder_attention_heads=h.encoder_attention_heads,
            encoder_ffn_dim=h.encoder_ffn_dim,
            num_mel_bins=h.num_mel_bins,
            max_source_positions=h.max_source_positions,
            decoder_layers=1,
            decoder_attention_heads=1,
            vocab_size=8,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            decoder_start_token_id=1,
        )

    def configure_model(self) -> None:
        """Build transformers' encoder (random init) once; load ``pretrained_path`` if one is given."""
        if self.encoder is not None:
            return
        from transformers.models.whisper.modeling_whisper import WhisperEncoder as HFWhisperEncoder

        self.encoder = HFWhisperEncoder(self.whisper_config())
        if self.hparams.pretrained_path:
            self.load_pretrained(self.hparams.pretrained_path)

    def shard_units(self) -> list[nn.Module]:
        """Each encoder layer is an FSDP2 unit (``sharding.py``)."""
        return list(self._module().layers)

    def _module(self) -> nn.Module:
        if self.encoder is None:
            raise RuntimeError(
                "WhisperEncoder is not built yet: call configure_model() (the Trainer does) or load_pretrained()"
            )
        return self.encoder

    # ---- forward ------------------------------------------------------------------------------
    def forward(self, audio: AudioBatch) -> SequenceBatch:
        audio.require(self.sample_rate, self.max_seconds, who=type(self).__name__)
        if int(audio.lengths.min()) < self.frontend.hop:
            raise ValueError(
                f"WhisperEncoder needs at least {self.frontend.hop} samples (one 10 ms mel frame) per clip, got "
                f"lengths {audio.lengths.tolist()}"
            )
        return self.encode_mel(*self.frontend(audio.waveform, audio.lengths))

    def encode_mel(self, mel: Tensor, frames: Tensor) -> SequenceBatch:
        """``[B, n_mels, T]`` log-mel (zero past ``frames``) -> ``[B, ceil(T/2), d_model]`` frames."""
        encoder = self._module()
        limit = self.hparams.max_source_positions * 2
        if mel.shape[-1] > limit:
            raise ValueError(
                f"Whisper encodes at most {limit} mel frames (30 s), got {mel.shape[-1]}; split the audio"
            )
        mel = F.pad(mel, (0, mel.shape[-1] % 2)).to(encoder.conv1.weight.dtype)
        x = F.gelu(encoder.conv2(F.gelu(encoder.conv1(mel)))).transpose(1, 2)
        x = x + encoder.embed_positions.weight[: x.shape[1]]
        x = F.dropout(x, encoder.dropout, self.training)
        lengths = torch.div(frames + 1, 2, rounding_mode="floor")
        valid = lengths_to_mask(lengths, x.shape[1])
        mask = torch.zeros(valid.shape, dtype=x.dtype, device=x.device).masked_fill(
            ~valid, torch.finfo(x.dtype).min
        )
        recompute = self.hparams.gradient_checkpointing and self.training
        for layer in encoder.layers:
            x = call_layer(layer, x, mask[:, None, None, :], recompute=recompute)
        return SequenceBatch(encoder.layer_norm(x), lengths)

    # ---- official checkpoint --------------------------------------------------------------------
    def load_pretrained(self, path: str) -> None:
        """Load the encoder half of a local Whisper folder (``config.json`` + safetensors or ``.bin``)."""
        folder = Path(path)
        if not (folder / "config.json").is_file() or not any((folder / f).is_file() for f in _WEIGHT_FILES):
            present = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
            raise FileNotFoundError(
                f"{folder} is not a Whisper folder: expected config.json and one of {', '.join(_WEIGHT_FILES)}; "
                f"found {', '.join(present) or 'nothing'}"
            )
        self._check_config(json.loads((folder / "config.json").read_text()))
        state = _encoder_state_dict(folder)
        if self.encoder is None:
            from transformers.models.whisper.modeling_whisper import WhisperEncoder as HFWhisperEncoder

            with torch.device("meta"):
                self.encoder = HFWhisperEncoder(self.whisper_config())
        load_state_dict_strict(self.encoder, state, source=f"{folder} (encoder weights)")
        self.hparams.pretrained_path = str(folder)

    def _check_config(self, config: dict) -> None:
        keys = ("d_model", "encoder_layers", "encoder_attention_heads", "encoder_ffn_dim", "num_mel_bins")
        wrong = [
            f"{k}: {config.get(k)} there, {self.hparams[k]} here"
            for k in keys
            if config.get(k) != self.hparams[k]
        ]
        if wrong:
            raise ValueError(
                f"the Whisper folder's config.json describes another encoder ({'; '.join(wrong)}); build the block "
                "with the matching preset (WhisperEncoder.from_preset('whisper-large-v3') for large-v3)"
            )


def _encoder_state_dict(folder: Path) -> dict[str, Tensor]:
    """Encoder tensors only (the decoder is never read), with the ``model.encoder.`` prefix removed."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        from safetensors import safe_open

        weight_map = json.loads(index.read_text())["weight_map"]
        state = {}
        for shard in sorted(set(weight_map.values())):
            with safe_open(str(folder / shard), framework="pt") as handle:
                state.update({k: handle.get_tensor(k) for k in handle if k.startswith(_ENCODER_PREFIXES)})
    else:
        name = "model.safetensors" if (folder / "model.safetensors").is_file() else "pytorch_model.bin"
        state = read_state_dict(folder / name)
    for prefix in _ENCODER_PREFIXES:
        picked = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if picked:
            return picked
    raise ValueError(
        f"{folder} holds no encoder weights (keys starting with {' or '.join(_ENCODER_PREFIXES)})"
    )
