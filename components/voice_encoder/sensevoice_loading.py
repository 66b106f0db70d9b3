"""Loading an official SenseVoiceSmall folder into ``SenseVoiceEncoder`` (``model.pt``, ``am.mvn``, ``config.yaml``,
the sentencepiece model), strictly, after checking that its ``encoder_conf`` describes the block's size."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from minmo_lightning.components.voice_encoder.frontend import load_cmvn
from minmo_lightning.components.voice_encoder.tokenizer import build_tokenizer
from torch import Tensor

from minmo_lightning.checkpoints import load_state_dict_strict, require_files

#: funasr's ``encoder_conf`` key -> our hyperparameter (funasr counts layers as "blocks")
ENCODER_CONF_KEYS = {
    "output_size": "output_size",
    "attention_heads": "attention_heads",
    "linear_units": "linear_units",
    "num_blocks": "num_layers",
    "tp_blocks": "tp_layers",
    "kernel_size": "kernel_size",
}


class SenseVoiceLoading:
    """``load_pretrained`` of ``SenseVoiceEncoder``."""

    def load_pretrained(self, path: str) -> None:
        """Load an official SenseVoiceSmall folder: ``model.pt``, ``am.mvn``, ``config.yaml``, the bpe model."""
        import yaml

        folder = require_files(path, ["model.pt", "am.mvn", "config.yaml"], "SenseVoiceSmall")
        config = yaml.safe_load((folder / "config.yaml").read_text()) or {}
        self._check_config(config.get("encoder_conf", {}), folder / "config.yaml")
        bpe = (config.get("tokenizer_conf") or {}).get("bpemodel")
        bpe_path = folder / Path(bpe).name if bpe else next(iter(sorted(folder.glob("*.bpe.model"))), None)
        if bpe_path is None or not bpe_path.is_file():
            raise FileNotFoundError(
                f"{folder} has no sentencepiece model (config.yaml tokenizer_conf.bpemodel or *.bpe.model); "
                "expected chn_jpn_yue_eng_ko_spectok.bpe.model from the official SenseVoiceSmall folder"
            )
        state = _official_state_dict(folder / "model.pt")
        load_state_dict_strict(self, state, source=str(folder / "model.pt"))
        self.frontend.set_cmvn(load_cmvn(folder / "am.mvn"))
        self._set_tokenizer(build_tokenizer(str(bpe_path)))
        # the official head was trained with the official body
        self.hparams.update(cmvn_file=str(folder / "am.mvn"), tokenizer=str(bpe_path), head_stale=None)

    def _check_config(self, encoder_conf: dict[str, Any], source: Path) -> None:
        wrong = [
            f"{theirs}: {encoder_conf[theirs]} there, {self.hparams[ours]} here"
            for theirs, ours in ENCODER_CONF_KEYS.items()
            if encoder_conf.get(theirs, self.hparams[ours]) != self.hparams[ours]
        ]
        if wrong:
            raise ValueError(
                f"{source} describes another SAN-M size ({'; '.join(wrong)}); build the block with the "
                "matching preset (SenseVoiceEncoder.from_preset('sensevoice-small') for SenseVoiceSmall)"
            )


def _official_state_dict(path: Path) -> dict[str, Tensor]:
    """``model.pt`` as funasr saves it; unwraps ``state_dict``/``model_state_dict``/``model`` and ``module.``."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - re-raised with the file named
        raise ValueError(f"{path} is not a readable torch state dict ({error})") from error
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}
