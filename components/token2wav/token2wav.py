"""The Token2Wav slot entry: CosyVoice2's flow (tokens -> mel) followed by a vocoder (mel -> 24 kHz audio).

The vocoder is chosen by name: ``hift`` (CosyVoice2's HiFT, load ``hift.pt``) or ``griffin_lim`` (no weights:
audible audio for demos and tests without pretrained checkpoints). Offline ``forward`` uses the same chunk
mask as streaming, so the concatenated ``step`` outputs equal it.

    t2w = CosyVoice2Token2Wav.from_preset("cosyvoice2-0.5b")
    t2w.load_pretrained("CosyVoice2-0.5B")          # folder with flow.pt (and hift.pt)
    audio = t2w(tokens)                              # TokenBatch -> AudioBatch at 24 kHz
    state = t2w.init_state(batch_size, prompt)       # prompt: SpeakerPrompt (x-vector, prompt tokens+mel)
    for chunk in chunks:                             # e.g. 15 tokens per row per call
        audio_chunk = t2w.step(chunk, state)         # the audio that became final
    audio_chunk = t2w.step(last_chunk, state, final=True)
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from minmo_lightning.components.token2wav.flow import CosyVoice2Flow, FlowStreamState, SpeakerPrompt
from torch import Tensor, nn

from minmo_lightning.blocks import StreamState, Token2Wav
from minmo_lightning.checkpoints import require_files
from minmo_lightning.contracts import AudioBatch, TokenBatch

#: vocoder name -> (module, class); imported on use so each engineer's module stays optional.
VOCODERS: dict[str, tuple[str, str]] = {
    "hift": ("minmo_lightning.components.token2wav.hift", "HiFTVocoder"),
    "griffin_lim": ("minmo_lightning.components.token2wav.griffin_lim", "GriffinLimVocoder"),
}


def build_vocoder(name: str, preset: str | None, args: dict[str, Any]) -> nn.Module:
    """Vocoder ``name`` from its preset (if it has one by that name) with ``args`` overriding single arguments."""
    if name not in VOCODERS:
        raise ValueError(f"unknown vocoder {name!r}; choose one of: {', '.join(VOCODERS)}")
    module, cls_name = VOCODERS[name]
    cls = getattr(importlib.import_module(module), cls_name)
    presets = getattr(cls, "presets", {}) or {}
    if preset is not None and preset not in presets:
        raise ValueError(
            f"vocoder {name!r} has no preset {preset!r}; available: {', '.join(presets) or 'none'}"
        )
    return cls(**{**copy.deepcopy(presets.get(preset, {})), **args})


@dataclass
class Token2WavState(StreamState):
    """The flow's session state, plus one vocoder stream per row (rows emit different numbers of frames)."""

    flow: FlowStreamState
    vocoder: list[Any]
    new_vocoder_stream: Callable[[], Any]

    def reset(self, items: Tensor | list[int]) -> None:
        """Restart the sessions in ``items`` (same speaker prompt) without touching the others."""
        index = torch.as_tensor(items)
        rows = (torch.nonzero(index).flatten() if index.dtype == torch.bool else index.flatten()).tolist()
        self.flow.reset(rows)
        for row in rows:
            self.vocoder[row] = self.new_vocoder_stream()


class CosyVoice2Token2Wav(Token2Wav):
    """CosyVoice2 token2wav: chunk-aware flow matching + HiFT (or Griffin-Lim), offline and streaming."""

    sample_rate: int = 24000
    token_rate: float = 25.0
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "cosyvoice2-0.5b": {
            "flow": CosyVoice2Flow.presets["cosyvoice2-0.5b"],
            "vocoder": "hift",
            "vocoder_preset": "cosyvoice2-0.5b",
            "vocoder_args": {},
            "pretrained_path": None,
        },
        "tiny": {
            "flow": CosyVoice2Flow.presets["tiny"],
            "vocoder": "griffin_lim",
            "vocoder_preset": "cosyvoice2-0.5b",
            "vocoder_args": {},
            "pretrained_path": None,
        },
    }

    def __init__(
        self,
        flow: dict[str, Any] | None = None,
        vocoder: str = "hift",
        vocoder_preset: str | None = "cosyvoice2-0.5b",
        vocoder_args: dict[str, Any] | None = None,
        pretrained_path: str | None = None,
    ) -> None:
        """``flow``: ``CosyVoice2Flow`` arguments; ``vocoder``: ``hift`` | ``griffin_lim`` built from
        ``vocoder_preset`` with ``vocoder_args`` overrides; ``pretrained_path``: a CosyVoice2 model folder
        (``flow.pt``, and ``hift.pt`` for HiFT) loaded in ``configure_model``."""
        super().__init__()
        self.save_hyperparameters()
        self.flow = CosyVoice2Flow(**copy.deepcopy(flow or CosyVoice2Flow.presets["cosyvoice2-0.5b"]))
        self.vocoder = build_vocoder(vocoder, vocoder_preset, dict(vocoder_args or {}))
        rate = getattr(self.vocoder, "sampling_rate", self.sample_rate)
        if rate != self.sample_rate:
            raise ValueError(
                f"the vocoder runs at {rate} Hz; CosyVoice2's flow produces 50 Hz mel for 24000 Hz audio"
            )
        self._loaded = False

    def configure_model(self) -> None:
        if self.hparams.pretrained_path and not self._loaded:
            self.load_pretrained(self.hparams.pretrained_path)

    def load_pretrained(self, path: str) -> None:
        """A CosyVoice2 folder: ``flow.pt`` always, ``hift.pt`` when the vocoder is HiFT (Griffin-Lim has no weights)."""
        needs = ["flow.pt"] + (["hift.pt"] if self.hparams.vocoder == "hift" else [])
        folder = require_files(Path(path), needs, "CosyVoice2 token2wav")
        self.flow.load_pretrained(str(folder / "flow.pt"))
        if self.hparams.vocoder == "hift":
            self.vocoder.load_pretrained(folder / "hift.pt")
        self._loaded = True

    def _prompt(self, prompt: SpeakerPrompt | None, batch: int) -> SpeakerPrompt:
        if prompt is not None:
            return prompt
        device = self.flow.input_embedding.weight.device
        return SpeakerPrompt(torch.zeros(batch, self.flow.hparams.spk_embed_dim, device=device))

    def _vocode(self, mel: Tensor, lengths: Tensor) -> AudioBatch:
        """Each row on its own frames, so a row's audio does not depend on the padding of the others."""
        waves = [self.vocoder(mel[row : row + 1, :, :n])[0] for row, n in enumerate(lengths.tolist())]
        return AudioBatch.from_list(waves, self.sample_rate)

    def forward(
        self, tokens: TokenBatch, prompt: SpeakerPrompt | None = None, full_context: bool = False
    ) -> AudioBatch:
        """Tokens -> audio. ``full_context`` lifts the chunk mask (the reference's non-streaming mode)."""
        flow = self.flow
        mel, lengths, _ = flow.inference(
            tokens,
            self._prompt(prompt, tokens.tokens.shape[0]),
            chunk_size=None if full_context else flow.chunk_size,
            num_left_chunks=flow.num_left_chunks,
        )
        return self._vocode(mel, lengths)

    def init_state(self, batch_size: int, prompt: SpeakerPrompt | None = None) -> Token2WavState:
        flow_state = self.flow.init_state(batch_size, self._prompt(prompt, batch_size))
        vocoders = [self.vocoder.init_state(1) for _ in range(batch_size)]
        return Token2WavState(batch_size, flow_state, vocoders, lambda: self.vocoder.init_state(1))

    def step(self, chunk: TokenBatch, state: Token2WavState, final: bool | Tensor = False) -> AudioBatch:
        """Feed speech tokens (any count per row); returns the audio that became final, per row."""
        final = torch.as_tensor(final).expand(state.batch_size)
        mel, lengths = self.flow.step(chunk, state.flow, final)
        waves = []
        for row, n in enumerate(lengths.tolist()):
            vocoder_state = state.vocoder[row]
            if n == 0 and not bool(final[row]):
                waves.append(mel.new_zeros(0))
                continue
            waves.append(
                self.vocoder.step(mel[row : row + 1, :, :n], vocoder_state, final=bool(final[row]))[0]
            )
        return AudioBatch.from_list(waves, self.sample_rate)
