"""``SenseVoiceEncoder``: SenseVoiceSmall (funasr) as a voice-encoder block: the model and its presets.

Audio -> ``SenseVoiceFrontend`` (fbank 80, LFR 7/6, CMVN; 60 ms frames of 560 dims) -> four query frames
prepended (``embed`` rows for language, event, emotion, text normalisation) -> SAN-M encoder -> frames of
``output_size``. The CTC head ``ctc.ctc_lo`` reads the speech frames for ASR and the query frames for the
"rich" tags (language, emotion, event, ITN), which is how SenseVoice tags and transcribes in one pass.

The state dict is exactly the official one (``encoder.*``, ``ctc.ctc_lo.*``, ``embed.weight``; no buffers), so
``model.pt`` loads strictly. ``forward`` returns every encoder frame, the four query frames first.

``ctc_slots_per_frame`` > 1 lets the CTC head emit several labels per 60 ms frame (``Linear(d, slots * V)``
viewed as ``slots`` frames): character CTC needs it, since speech runs ~17 chars/s and 60 ms frames give
16.7 frames/s. The official model uses 1 slot (subword targets).

The block's other jobs live beside it: ``sensevoice_loading`` (the official folder),
``sensevoice_training`` (CTC + rich-tag training and metrics), ``sensevoice_streaming`` (chunk by chunk).

The CTC head is a ``standalone_head``: this block's own recipe trains it, and a MinMo stage that trains the
encoder (stage 1b/1c) trains it too where the stage asks (``MinMo(encoder_head_weight=...)``: ``head_loss`` on
the batches of ``head_tasks``). A stage that moves the features without it records why in ``head_stale`` (see
``stages.py``), and ``transcribe`` then refuses with ``StaleHeadError`` instead of returning text and tags
from a stale head.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from minmo_lightning.components.voice_encoder.ctc import greedy_ctc
from minmo_lightning.components.voice_encoder.frontend import SenseVoiceFrontend, load_cmvn
from minmo_lightning.components.voice_encoder.sanm import ChunkLayout, SANMEncoder
from minmo_lightning.components.voice_encoder.sensevoice_loading import SenseVoiceLoading
from minmo_lightning.components.voice_encoder.sensevoice_queries import (
    EVENT_EMOTION_ROWS,
    LID_ROWS,
    NUM_QUERIES,
    NUM_QUERY_ROWS,
    TEXTNORM_ROWS,
)
from minmo_lightning.components.voice_encoder.sensevoice_streaming import SenseVoiceStreaming
from minmo_lightning.components.voice_encoder.sensevoice_training import SenseVoiceTraining
from minmo_lightning.components.voice_encoder.tokenizer import BLANK_ID, Tokenizer, build_tokenizer
from torch import Tensor, nn

from minmo_lightning.blocks import VoiceEncoder
from minmo_lightning.contracts import AudioBatch, SequenceBatch

#: SenseVoiceSmall as released, with its training and streaming settings; the other presets say how they differ
SENSEVOICE_SMALL = dict(
    output_size=512,
    attention_heads=4,
    linear_units=2048,
    num_layers=50,
    tp_layers=20,
    kernel_size=11,
    sanm_shift=0,
    dropout_rate=0.1,
    attention_dropout_rate=0.1,
    vocab_size=25055,
    ctc_slots_per_frame=1,
    tokenizer=None,
    n_mels=80,
    lfr_m=7,
    lfr_n=6,
    dither=1.0,
    cmvn_file=None,
    language="auto",
    use_itn=False,
    max_seconds=120.0,
    train_language="en",
    auto_language_prob=0.2,
    emotion_labels=["neutral", "happy", "sad", "angry"],
    emotion_weight=1.0,
    spec_augment=True,
    learning_rate=2e-4,
    weight_decay=0.01,
    warmup_steps=1000,
    stream_left_frames=100,
)


class CTCProjection(nn.Module):
    """``ctc.ctc_lo`` of the reference: one linear layer to ``slots * vocab`` logits per frame."""

    def __init__(self, size: int, vocab_size: int, slots: int) -> None:
        super().__init__()
        self.vocab_size, self.slots = vocab_size, slots
        self.ctc_lo = nn.Linear(size, vocab_size * slots)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, T, D]`` -> ``[B, T * slots, V]`` logits."""
        return self.ctc_lo(x).unflatten(-1, (self.slots, self.vocab_size)).flatten(1, 2)


class StaleHeadError(RuntimeError):
    """The CTC/rich-tag head no longer matches the encoder body (``head_stale`` says why)."""


@dataclass
class Transcript:
    language: str
    emotion: str
    event: str
    text_norm: str
    text: str


class SenseVoiceEncoder(SenseVoiceLoading, SenseVoiceTraining, SenseVoiceStreaming, VoiceEncoder):
    """SenseVoice (SAN-M) voice encoder with its frontend, query embeddings and CTC/rich-tag head."""

    sample_rate = 16000
    stream_leading_frames = NUM_QUERIES
    #: parameters only the block's own recipe trains (MinMo's stages never give them a loss)
    standalone_head: ClassVar[tuple[str, ...]] = ("ctc.",)
    #: its head learns from transcribed speech (CTC) and styled speech (the emotion tag), as its recipe
    head_tasks: ClassVar[frozenset[str]] = frozenset({"asr", "ser"})
    presets = {
        "sensevoice-small": SENSEVOICE_SMALL,
        # SenseVoice-Large was never released: same SAN-M design at Whisper-large width (~0.63 B encoder).
        "sensevoice-large-like": {
            **SENSEVOICE_SMALL,
            "output_size": 1280,
            "attention_heads": 20,
            "linear_units": 5120,
            "num_layers": 24,
            "tp_layers": 8,
            "learning_rate": 1e-4,
            "warmup_steps": 2000,
        },
        # Trains on the built-in English corpus on a CPU: character CTC with 2 slots per 60 ms frame.
        "tiny": {
            **SENSEVOICE_SMALL,
            "output_size": 192,
            "linear_units": 768,
            "num_layers": 6,
            "tp_layers": 2,
            "attention_dropout_rate": 0.0,
            "vocab_size": 65,
            "ctc_slots_per_frame": 2,
            "tokenizer": "char",
            "max_seconds": 60.0,
            "learning_rate": 1.5e-3,
            "warmup_steps": 200,
            "stream_left_frames": 60,
            "emotion_weight": 5.0,  # the emotion tag learns from the first minutes (voice_encoder_ctc.yaml)
        },
    }

    def __init__(
        self,
        output_size: int = SENSEVOICE_SMALL["output_size"],
        attention_heads: int = SENSEVOICE_SMALL["attention_heads"],
        linear_units: int = SENSEVOICE_SMALL["linear_units"],
        num_layers: int = SENSEVOICE_SMALL["num_layers"],
        tp_layers: int = SENSEVOICE_SMALL["tp_layers"],
        kernel_size: int = SENSEVOICE_SMALL["kernel_size"],
        sanm_shift: int = SENSEVOICE_SMALL["sanm_shift"],
        dropout_rate: float = SENSEVOICE_SMALL["dropout_rate"],
        attention_dropout_rate: float = SENSEVOICE_SMALL["attention_dropout_rate"],
        vocab_size: int = SENSEVOICE_SMALL["vocab_size"],
        ctc_slots_per_frame: int = SENSEVOICE_SMALL["ctc_slots_per_frame"],
        tokenizer: str | None = None,
        n_mels: int = SENSEVOICE_SMALL["n_mels"],
        lfr_m: int = SENSEVOICE_SMALL["lfr_m"],
        lfr_n: int = SENSEVOICE_SMALL["lfr_n"],
        dither: float = SENSEVOICE_SMALL["dither"],
        cmvn_file: str | None = None,
        language: str = SENSEVOICE_SMALL["language"],
        use_itn: bool = SENSEVOICE_SMALL["use_itn"],
        max_seconds: float = SENSEVOICE_SMALL["max_seconds"],
        train_language: str = SENSEVOICE_SMALL["train_language"],
        auto_language_prob: float = SENSEVOICE_SMALL["auto_language_prob"],
        emotion_labels: list[str] | None = None,
        emotion_weight: float = SENSEVOICE_SMALL["emotion_weight"],
        spec_augment: bool = SENSEVOICE_SMALL["spec_augment"],
        learning_rate: float = SENSEVOICE_SMALL["learning_rate"],
        weight_decay: float = SENSEVOICE_SMALL["weight_decay"],
        warmup_steps: int = SENSEVOICE_SMALL["warmup_steps"],
        stream_left_frames: int = SENSEVOICE_SMALL["stream_left_frames"],
        gradient_checkpointing: bool = False,
        head_stale: str | None = None,
    ) -> None:
        """Defaults are SenseVoiceSmall's (no tokenizer or CMVN file until ``load_pretrained``), except
        ``emotion_labels``: none unless asked for (the presets name four); ``emotion_weight``: what the emotion
        tag weighs in the training loss, in transcript labels (the other tags weigh one). ``num_layers`` counts the SAN-M
        layers before ``after_norm`` (funasr's ``num_blocks``), ``tp_layers`` those after it (funasr's ``tp_blocks``).
        ``gradient_checkpointing`` recomputes each SAN-M layer's activations in backward (memory for long
        batches when the encoder trains inside MinMo). ``head_stale`` says why the CTC/tag head no longer fits the
        body (a MinMo stage trained the body alone; None: it fits): ``transcribe`` then refuses."""
        super().__init__()
        self.save_hyperparameters()
        for name, value in (("language", language), ("train_language", train_language)):
            if value not in LID_ROWS:
                raise ValueError(
                    f"{name}={value!r} is not a SenseVoice language; use one of {list(LID_ROWS)}"
                )
        self.frontend = SenseVoiceFrontend(self.sample_rate, n_mels, 25.0, 10.0, lfr_m, lfr_n, dither)
        self.encoder = SANMEncoder(
            input_size=n_mels * lfr_m,
            output_size=output_size,
            attention_heads=attention_heads,
            linear_units=linear_units,
            num_layers=num_layers,
            tp_layers=tp_layers,
            kernel_size=kernel_size,
            sanm_shift=sanm_shift,
            dropout_rate=dropout_rate,
            attention_dropout_rate=attention_dropout_rate,
            gradient_checkpointing=gradient_checkpointing,
        )
        self.ctc = CTCProjection(output_size, vocab_size, ctc_slots_per_frame)
        self.embed = nn.Embedding(NUM_QUERY_ROWS, n_mels * lfr_m)
        self.output_dim = output_size
        self.frame_rate = self.sample_rate / (self.frontend.fbank.shift * lfr_n)
        self.tokenizer: Tokenizer | None = None
        self._set_tokenizer(build_tokenizer(tokenizer))
        if cmvn_file is not None:
            self.frontend.set_cmvn(load_cmvn(cmvn_file))
        self._metrics = nn.ModuleDict()  # per evaluation split, made on first use (SenseVoiceTraining)

    def shard_units(self) -> list[nn.Module]:
        """Each SAN-M layer is an FSDP2 unit (``sharding.py``)."""
        encoder = self.encoder
        return [*encoder.encoders0, *encoder.encoders, *encoder.tp_encoders]

    def checkpoint_assets(self) -> dict[str, Path]:
        """The CMVN statistics and a sentencepiece model are read at build time and are not weights."""
        assets = {"cmvn_file": self.hparams.cmvn_file}
        if self.hparams.tokenizer not in (None, "char"):
            assets["tokenizer"] = self.hparams.tokenizer
        return {name: Path(path) for name, path in assets.items() if path is not None}

    # ---- inputs -------------------------------------------------------------------------------
    def _set_tokenizer(self, tokenizer: Tokenizer | None) -> None:
        if tokenizer is not None and tokenizer.vocab_size != self.ctc.vocab_size:
            raise ValueError(
                f"tokenizer has {tokenizer.vocab_size} tokens but the CTC head has vocab_size="
                f"{self.ctc.vocab_size}; set vocab_size to the tokenizer's size"
            )
        self.tokenizer = tokenizer

    def _require_tokenizer(self) -> Tokenizer:
        if self.tokenizer is None:
            raise RuntimeError(
                "SenseVoiceEncoder has no tokenizer: pass tokenizer='char' or a sentencepiece .model path, "
                "or load_pretrained() an official folder"
            )
        return self.tokenizer

    def features(self, audio: AudioBatch) -> tuple[Tensor, Tensor]:
        """Validated audio -> CMVN'd LFR features ``[B, T, 560]`` and ``[B]`` frame counts."""
        audio.require(self.sample_rate, self.hparams.max_seconds, who=type(self).__name__)
        return self.frontend(audio.waveform, audio.lengths)

    def query_rows(self, batch: int, language: str | None = None, use_itn: bool | None = None) -> Tensor:
        """``[B, 4]`` embed rows: language, event, emotion, text normalisation (the reference order)."""
        language = self.hparams.language if language is None else language
        use_itn = self.hparams.use_itn if use_itn is None else use_itn
        if language not in LID_ROWS:
            raise ValueError(
                f"language={language!r} is not a SenseVoice language; use one of {list(LID_ROWS)}"
            )
        rows = [LID_ROWS[language], *EVENT_EMOTION_ROWS, TEXTNORM_ROWS["withitn" if use_itn else "woitn"]]
        return torch.tensor(rows, device=self.embed.weight.device).expand(batch, -1)

    def with_queries(self, feats: Tensor, lengths: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
        """Prepend the query embeddings: what the SAN-M encoder reads."""
        queries = self.embed(rows)  # the features (float32 from the frontend) take the encoder's dtype
        return torch.cat([queries, feats.to(queries.dtype)], dim=1), lengths + rows.shape[1]

    def encode(
        self,
        feats: Tensor,
        lengths: Tensor,
        rows: Tensor | None = None,
        chunks: ChunkLayout | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Features -> ``[B, 4 + T, D]`` encoder frames (queries first) and their lengths."""
        rows = self.query_rows(feats.shape[0]) if rows is None else rows
        x, lengths = self.with_queries(feats, lengths, rows)
        return self.encoder(x, lengths, chunks), lengths

    def forward(self, audio: AudioBatch) -> SequenceBatch:
        feats, lengths = self.features(audio)
        out, lengths = self.encode(feats, lengths)
        return SequenceBatch(out, lengths)

    # ---- decoding -----------------------------------------------------------------------------
    def check_head(self) -> None:
        """Raise ``StaleHeadError`` when the CTC/tag head no longer fits the body (``head_stale``)."""
        if self.hparams.head_stale:
            raise StaleHeadError(
                f"SenseVoiceEncoder's CTC/tag head is stale: {self.hparams.head_stale}, so its text and tags "
                "would not match the audio (MinMo's stages never train this head). Retrain it with the encoder's "
                "own recipe (minmo fit --config recipes/components/voice_encoder_ctc.yaml), or transcribe with "
                "an encoder trained alone"
            )

    def transcribe(self, audio: AudioBatch) -> list[Transcript]:
        """Rich tags from the query frames and greedy CTC text from the speech frames.

        Only for an encoder whose CTC head trained with it: a MinMo stage that moves the encoder without
        training this head (``encoder_head_weight`` 0) leaves it reading stale features (its emotion tag fell
        to chance), so such an encoder (``head_stale``) raises ``StaleHeadError``.
        """
        self.check_head()
        tokenizer = self._require_tokenizer()
        encoded = self(audio)
        logits = self.ctc(encoded.values)
        slots = self.ctc.slots
        tags = logits[:, : NUM_QUERIES * slots : slots].argmax(-1).tolist()
        speech = logits[:, NUM_QUERIES * slots :].log_softmax(-1)
        ids = greedy_ctc(speech, (encoded.lengths - NUM_QUERIES) * slots, BLANK_ID)
        return [
            Transcript(*(tokenizer.id_to_token(t) for t in row_tags), tokenizer.decode(row_ids))
            for row_tags, row_ids in zip(tags, ids)
        ]
