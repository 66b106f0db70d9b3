"""The Token2Wav slot entry: CosyVoice2's flow (tokens -> mel) followed by a vocoder (mel -> 24 kHz audio).

The vocoder is chosen by its alias (``vocoder.py``): ``hift`` (CosyVoice2's HiFT, load ``hift.pt``) or
``griffin_lim`` (no weights: audible audio for demos and tests without pretrained checkpoints). Offline
``forward`` uses the same chunk mask as streaming, so the concatenated ``step`` outputs equal it. The optional
speaker encoder (``speaker_encoder: campplus``, CAM++ from ``campplus.onnx``) gives the flow the x-vector of a
prompt's voice (``speaker_prompt``); without it the x-vector is zeros and the voice comes from the prompt mel.

    t2w = CosyVoice2Token2Wav.from_preset("cosyvoice2-0.5b")
    t2w.load_pretrained("CosyVoice2-0.5B")          # folder with flow.pt (and hift.pt, campplus.onnx)
    audio = t2w(tokens)                              # TokenBatch -> AudioBatch at 24 kHz
    prompt = t2w.speaker_prompt(prompt_16k, prompt_tokens, prompt_24k)  # zero-shot: speak in its voice
    audio = t2w(tokens, prompt)
    state = t2w.init_state(batch_size, Token2WavStreamOptions(prompt))  # x-vector, prompt tokens + mel
    for chunk in chunks:                             # e.g. 15 tokens per row per call
        audio_chunk = t2w.step(chunk, state)         # the audio that became final
    state.end_input(rows)                            # these rows' tokens are complete:
    audio_chunk = t2w.step(last_chunk, state)        # the step flushes them
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from minmo_lightning.components.token2wav.campplus import CAMPPlus
from minmo_lightning.components.token2wav.compiled_parts import compile_in_place, compile_method
from minmo_lightning.components.token2wav.flow import (
    COSYVOICE2_FLOW,
    TINY_FLOW,
    CosyVoice2Flow,
    SpeakerPrompt,
    Token2WavStreamOptions,
)
from minmo_lightning.components.token2wav.flow_features import log_mel
from minmo_lightning.components.token2wav.flow_streaming import FlowStreamState
from minmo_lightning.components.token2wav.vocoder import VocoderStreamState, build_vocoder
from torch import Tensor

from minmo_lightning.blocks import Token2Wav
from minmo_lightning.checkpoints import require_files
from minmo_lightning.contracts import AudioBatch, TokenBatch, lengths_to_mask
from minmo_lightning.stream_state import StreamState

#: CosyVoice2-0.5B's token2wav (flow + HiFT); the other presets state what they change
COSYVOICE2_TOKEN2WAV = {
    "flow": COSYVOICE2_FLOW,
    "vocoder": "hift",
    "vocoder_preset": "cosyvoice2-0.5b",
    "vocoder_args": {},
    "speaker_encoder": "campplus",
    "pretrained_path": None,
}


@dataclass
class Token2WavState(StreamState):
    """The flow's session state, plus one vocoder stream per row (rows emit different numbers of frames)."""

    flow: FlowStreamState
    vocoder: list[VocoderStreamState]

    def reset(self, items: Tensor | list[int]) -> None:
        """Restart the sessions in ``items`` (same speaker prompt) without touching the others."""
        super().reset(items)
        mask = self.rows(items)
        self.flow.reset(mask)
        for row in mask.nonzero().flatten().tolist():
            self.vocoder[row].reset([0])


class CosyVoice2Token2Wav(Token2Wav):
    """CosyVoice2 token2wav: chunk-aware flow matching + HiFT (or Griffin-Lim), offline and streaming."""

    sample_rate: int = 24000
    token_rate: float = 25.0
    weight_args = ("pretrained_path",)
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "cosyvoice2-0.5b": COSYVOICE2_TOKEN2WAV,
        "tiny": {
            **COSYVOICE2_TOKEN2WAV,
            "flow": TINY_FLOW,
            "vocoder": "griffin_lim",
            "speaker_encoder": None,
        },
    }

    def __init__(
        self,
        flow: dict[str, Any] | None = None,
        vocoder: str = "hift",
        vocoder_preset: str | None = "cosyvoice2-0.5b",
        vocoder_args: dict[str, Any] | None = None,
        speaker_encoder: str | None = None,
        pretrained_path: str | None = None,
    ) -> None:
        """``flow``: ``CosyVoice2Flow`` arguments; ``vocoder``: ``hift`` | ``griffin_lim`` built from
        ``vocoder_preset`` with ``vocoder_args`` overrides; ``speaker_encoder``: a ``CAMPPlus`` preset
        (``campplus``: CosyVoice2's) or None (no encoder: the zero x-vector); ``pretrained_path``: a CosyVoice2
        model folder (``flow.pt``, ``hift.pt`` for HiFT, ``campplus.onnx`` for the encoder) loaded in
        ``configure_model``."""
        super().__init__()
        self.save_hyperparameters()
        self.flow = CosyVoice2Flow(**copy.deepcopy(flow or COSYVOICE2_FLOW))
        self.vocoder = build_vocoder(vocoder, vocoder_preset, dict(vocoder_args or {}))
        self.speaker_encoder = None if speaker_encoder is None else CAMPPlus.from_preset(speaker_encoder)
        spk_dim = self.flow.hparams.spk_embed_dim
        if self.speaker_encoder is not None and self.speaker_encoder.embedding_size != spk_dim:
            raise ValueError(
                f"speaker_encoder {speaker_encoder!r} gives {self.speaker_encoder.embedding_size}-d x-vectors, the "
                f"flow's spk_embed_dim is {spk_dim}; pick a preset of that size"
            )
        if self.vocoder.sampling_rate != self.sample_rate:
            raise ValueError(
                f"the vocoder runs at {self.vocoder.sampling_rate} Hz; CosyVoice2's flow produces 50 Hz mel for "
                "24000 Hz audio"
            )
        self._loaded = False

    def configure_model(self) -> None:
        if self.hparams.pretrained_path and not self._loaded:
            self.load_pretrained(self.hparams.pretrained_path)

    def load_pretrained(self, path: str) -> None:
        """A CosyVoice2 folder: ``flow.pt`` always, the vocoder's checkpoint (``hift.pt``) when it has weights,
        ``campplus.onnx`` when there is a speaker encoder."""
        vocoder_file = self.vocoder.checkpoint_file
        speaker_file = "campplus.onnx" if self.speaker_encoder is not None else None
        needs = ["flow.pt"] + [name for name in (vocoder_file, speaker_file) if name]
        folder = require_files(Path(path), needs, "CosyVoice2 token2wav")
        self.flow.load_pretrained(str(folder / "flow.pt"))
        if vocoder_file:
            self.vocoder.load_pretrained(folder / vocoder_file)
        if speaker_file:
            self.speaker_encoder.load_pretrained(folder / speaker_file)
        self._loaded = True

    def voice_of(self, prompt_audio: AudioBatch, batch_size: int) -> Token2WavStreamOptions:
        """The prompt's x-vector for every row (CosyVoice2 speaks in it); the voice alone, without the prompt
        utterance's tokens and mel (``speaker_prompt`` takes those)."""
        if self.speaker_encoder is None:
            raise ValueError(
                "this token2wav has no speaker encoder, so it cannot take a voice from prompt audio; build it with "
                "speaker_encoder: campplus (the cosyvoice2-0.5b preset does)"
            )
        rows = prompt_audio.waveform.shape[0]
        if rows not in (1, batch_size):
            raise ValueError(f"prompt_audio has {rows} clips for {batch_size} rows: give one, or one per row")
        prompt = self.speaker_prompt(prompt_audio)  # 16 kHz, as CAM++ hears it (it says so otherwise)
        return Token2WavStreamOptions(SpeakerPrompt(prompt.embedding.expand(batch_size, -1)))

    def speaker_prompt(
        self, audio_16k: AudioBatch, tokens: TokenBatch | None = None, audio_24k: AudioBatch | None = None
    ) -> SpeakerPrompt:
        """Who speaks, from a prompt utterance (CosyVoice2's zero-shot frontend): the x-vector of its 16 kHz
        audio (zeros without a speaker encoder) and, given its speech ``tokens`` and 24 kHz audio, its mel,
        both cut to the shorter of tokens and mel frames / 2 so the flow continues the prompt's voice."""
        if self.speaker_encoder is None:
            embedding = torch.zeros(audio_16k.waveform.shape[0], self.flow.hparams.spk_embed_dim)
        else:
            embedding = self.speaker_encoder.embed(audio_16k)
        embedding = embedding.to(self.flow.input_embedding.weight.device)
        if tokens is None and audio_24k is None:
            return SpeakerPrompt(embedding)
        if tokens is None or audio_24k is None:
            raise ValueError(
                "a prompt utterance needs both its speech tokens and its 24 kHz audio (or neither)"
            )
        mel, frames = log_mel(audio_24k, self.flow.mel_dim)
        lengths = torch.minimum(tokens.lengths, torch.div(frames, self.flow.ratio, rounding_mode="floor"))
        count = int(lengths.max())
        mel = (
            mel[:, : self.flow.ratio * count]
            * lengths_to_mask(self.flow.ratio * lengths, self.flow.ratio * count)[..., None]
        )
        cut = TokenBatch(tokens.tokens[:, :count] * lengths_to_mask(lengths, count), lengths)
        return SpeakerPrompt(embedding, cut, mel.to(embedding.device))

    def _prompt(self, prompt: SpeakerPrompt | None, batch: int) -> SpeakerPrompt:
        if prompt is not None:
            return prompt
        device = self.flow.input_embedding.weight.device
        return SpeakerPrompt(torch.zeros(batch, self.flow.hparams.spk_embed_dim, device=device))

    def vocode(self, mel: Tensor, lengths: Tensor) -> AudioBatch:
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
        return self.vocode(mel, lengths)

    def init_state(self, batch_size: int, options: Token2WavStreamOptions | None = None) -> Token2WavState:
        """A fresh session per row; ``options.prompt`` says who speaks (None: the zero x-vector, no prompt)."""
        options = options if options is not None else Token2WavStreamOptions()
        vocoders = [self.vocoder.init_state(1) for _ in range(batch_size)]
        return Token2WavState(
            batch_size, options=options, flow=self.flow.init_state(batch_size, options), vocoder=vocoders
        )

    def compile_decoding(self, mode: str | None) -> None:
        """``mode`` (a torch.compile mode): the flow estimator (every ODE step) and HiFT's trunk run compiled
        (``compiled_parts.py``); None: eager, the default. ``MinMo.respond(compile=True)`` sets it."""
        compile_in_place(self.flow.decoder.estimator, mode)
        if hasattr(self.vocoder, "decode"):  # HiFT's trunk; Griffin-Lim has no network to compile
            compile_method(self.vocoder, "decode", mode)

    def step(self, chunk: TokenBatch, state: Token2WavState) -> AudioBatch:
        """Feed speech tokens (any count per row); returns the audio that became final, per row.

        Rows marked with ``state.end_input(rows)`` are flushed by this step (their last tokens may come with
        it); after that they give no more audio until ``state.reset(rows)``.
        """
        state.flow.end_input(state.input_ended)
        mel, lengths = self.flow.step(chunk, state.flow)
        waves = []
        for row, n in enumerate(lengths.tolist()):
            stream, ending = state.vocoder[row], bool(state.input_ended[row])
            if stream.finished or (n == 0 and not ending):
                waves.append(mel.new_zeros(0))
                continue
            if ending:
                stream.end_input([0])
            waves.append(self.vocoder.step(mel[row : row + 1, :, :n], stream)[0])
        return AudioBatch.from_list(waves, self.sample_rate)
