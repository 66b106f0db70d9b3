"""``SenseVoiceEncoder``: SenseVoiceSmall (funasr) as a voice-encoder block.

Audio -> ``SenseVoiceFrontend`` (fbank 80, LFR 7/6, CMVN; 60 ms frames of 560 dims) -> four query frames
prepended (``embed`` rows for language, event, emotion, text normalisation) -> SAN-M encoder -> frames of
``output_size``. The CTC head ``ctc.ctc_lo`` reads the speech frames for ASR and the query frames for the
"rich" tags (language, emotion, event, ITN), which is how SenseVoice tags and transcribes in one pass.

The state dict is exactly the official one (``encoder.*``, ``ctc.ctc_lo.*``, ``embed.weight``; no buffers), so
``model.pt`` loads strictly. ``forward`` returns every encoder frame, the four query frames first.

``ctc_slots_per_frame`` > 1 lets the CTC head emit several labels per 60 ms frame (``Linear(d, slots * V)``
viewed as ``slots`` frames): character CTC needs it, since speech runs ~17 chars/s and 60 ms frames give
16.7 frames/s. The official model uses 1 slot (subword targets).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Timer
from minmo_lightning.components.voice_encoder.ctc import greedy_ctc, pad_ids, spec_augment_lfr
from minmo_lightning.components.voice_encoder.frontend import SenseVoiceFrontend, load_cmvn
from minmo_lightning.components.voice_encoder.sanm import ChunkLayout, SANMEncoder
from minmo_lightning.components.voice_encoder.tokenizer import Tokenizer, build_tokenizer, tag
from torch import Tensor, nn

from minmo_lightning.blocks import StreamState, VoiceEncoder
from minmo_lightning.checkpoints import load_state_dict_strict, require_files
from minmo_lightning.contracts import AudioBatch, SequenceBatch

# Id constants exactly as funasr's SenseVoiceSmall defines them.
LID_ROWS = {"auto": 0, "zh": 3, "en": 4, "yue": 7, "ja": 11, "ko": 12, "nospeech": 13}
TEXTNORM_ROWS = {"withitn": 14, "woitn": 15}
EVENT_EMOTION_ROWS = (1, 2)
NUM_QUERY_ROWS = 7 + len(LID_ROWS) + len(TEXTNORM_ROWS)
NUM_QUERIES = 4
BLANK_ID = 0
#: token ids of the rich tags in the official 25055-piece sentencepiece vocabulary
OFFICIAL_TAG_IDS = {
    "<|zh|>": 24884,
    "<|en|>": 24885,
    "<|yue|>": 24888,
    "<|ja|>": 24892,
    "<|ko|>": 24896,
    "<|nospeech|>": 24992,
    "<|withitn|>": 25016,
    "<|woitn|>": 25017,
    "<|HAPPY|>": 25001,
    "<|SAD|>": 25002,
    "<|ANGRY|>": 25003,
    "<|NEUTRAL|>": 25004,
    "<|EMO_UNKNOWN|>": 25009,
}
#: what each query frame's CTC output tags (frame 1 carries the emotion, frame 2 the event)
RICH_FIELDS = ("language", "emotion", "event", "text_norm")
IGNORE = -100
#: datamodule emotion labels whose SenseVoice tag is not just the upper-cased label
EMOTION_TAGS = {"surprise": "SURPRISED", "fear": "FEARFUL", "disgust": "DISGUSTED", "unknown": "EMO_UNKNOWN"}


class CTCHead(nn.Module):
    """``ctc.ctc_lo`` of the reference: one linear layer to ``slots * vocab`` logits per frame."""

    def __init__(self, size: int, vocab_size: int, slots: int) -> None:
        super().__init__()
        self.vocab_size, self.slots = vocab_size, slots
        self.ctc_lo = nn.Linear(size, vocab_size * slots)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, T, D]`` -> ``[B, T * slots, V]`` logits."""
        return self.ctc_lo(x).unflatten(-1, (self.slots, self.vocab_size)).flatten(1, 2)


@dataclass
class Transcript:
    language: str
    emotion: str
    event: str
    text_norm: str
    text: str


@dataclass
class SenseVoiceStreamState(StreamState):
    """Per-session streaming state; every cache is bounded (``left`` frames per layer).

    ``samples`` [B, R]: waveform tail not yet framed; ``last_fbank`` [B, P, n_mels]: fbank frames LFR still
    needs; ``fresh`` [B]: the query frames are still to be emitted; ``positions`` [B]: frames encoded so far;
    ``cache`` [B, layers, left, 2d] right-aligned keys/values with ``cache_len`` [B] valid slots.
    ``query_cache`` / ``query_out``: the query frames' keys/values and outputs, the same for every session.
    """

    samples: Tensor
    last_fbank: Tensor
    fresh: Tensor
    positions: Tensor
    cache: Tensor
    cache_len: Tensor
    query_cache: Tensor
    query_out: Tensor

    def reset(self, items: Tensor | list[int]) -> None:
        index = torch.as_tensor(items, device=self.cache.device)
        if index.dtype == torch.bool and index.shape != (self.batch_size,):
            raise ValueError(f"reset mask must have shape [{self.batch_size}], got {tuple(index.shape)}")
        self.samples[index] = 0
        self.last_fbank[index] = 0
        self.fresh[index] = True
        self.positions[index] = NUM_QUERIES
        self.cache[index] = self.query_cache
        self.cache_len[index] = min(NUM_QUERIES, self.cache.shape[2])


class SenseVoiceEncoder(VoiceEncoder):
    """SenseVoice (SAN-M) voice encoder with its frontend, query embeddings and CTC/rich-tag head."""

    sample_rate = 16000
    presets = {
        "sensevoice-small": dict(
            output_size=512,
            attention_heads=4,
            linear_units=2048,
            num_blocks=50,
            tp_blocks=20,
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
            spec_augment=True,
            learning_rate=2e-4,
            weight_decay=0.01,
            warmup_steps=1000,
            stream_left_frames=100,
        ),  # fmt: skip
        # SenseVoice-Large was never released: same SAN-M design at Whisper-large width (~0.63 B encoder).
        "sensevoice-large-like": dict(
            output_size=1280,
            attention_heads=20,
            linear_units=5120,
            num_blocks=24,
            tp_blocks=8,
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
            spec_augment=True,
            learning_rate=1e-4,
            weight_decay=0.01,
            warmup_steps=2000,
            stream_left_frames=100,
        ),  # fmt: skip
        # Trains on the built-in English corpus on a CPU: character CTC with 2 slots per 60 ms frame.
        "tiny": dict(
            output_size=192,
            attention_heads=4,
            linear_units=768,
            num_blocks=6,
            tp_blocks=2,
            kernel_size=11,
            sanm_shift=0,
            dropout_rate=0.1,
            attention_dropout_rate=0.0,
            vocab_size=65,
            ctc_slots_per_frame=2,
            tokenizer="char",
            n_mels=80,
            lfr_m=7,
            lfr_n=6,
            dither=1.0,
            cmvn_file=None,
            language="auto",
            use_itn=False,
            max_seconds=60.0,
            train_language="en",
            auto_language_prob=0.2,
            emotion_labels=["neutral", "happy", "sad", "angry"],
            spec_augment=True,
            learning_rate=1.5e-3,
            weight_decay=0.01,
            warmup_steps=200,
            stream_left_frames=60,
        ),  # fmt: skip
    }

    def __init__(
        self,
        output_size: int = 512,
        attention_heads: int = 4,
        linear_units: int = 2048,
        num_blocks: int = 50,
        tp_blocks: int = 20,
        kernel_size: int = 11,
        sanm_shift: int = 0,
        dropout_rate: float = 0.1,
        attention_dropout_rate: float = 0.1,
        vocab_size: int = 25055,
        ctc_slots_per_frame: int = 1,
        tokenizer: str | None = None,
        n_mels: int = 80,
        lfr_m: int = 7,
        lfr_n: int = 6,
        dither: float = 1.0,
        cmvn_file: str | None = None,
        language: str = "auto",
        use_itn: bool = False,
        max_seconds: float = 120.0,
        train_language: str = "en",
        auto_language_prob: float = 0.2,
        emotion_labels: list[str] | None = None,
        spec_augment: bool = True,
        learning_rate: float = 2e-4,
        weight_decay: float = 0.01,
        warmup_steps: int = 1000,
        stream_left_frames: int = 100,
        gradient_checkpointing: bool = False,
    ) -> None:
        """``gradient_checkpointing`` recomputes each SAN-M layer's activations in backward (memory for
        long batches when the encoder trains inside MinMo)."""
        super().__init__()
        self.save_hyperparameters()
        for name, value, table in (
            ("language", language, LID_ROWS),
            ("train_language", train_language, LID_ROWS),
        ):
            if value not in table:
                raise ValueError(f"{name}={value!r} is not a SenseVoice language; use one of {list(table)}")
        self.frontend = SenseVoiceFrontend(self.sample_rate, n_mels, 25.0, 10.0, lfr_m, lfr_n, dither)
        self.encoder = SANMEncoder(
            n_mels * lfr_m,
            output_size,
            attention_heads,
            linear_units,
            num_blocks,
            tp_blocks,
            kernel_size,
            sanm_shift,
            dropout_rate,
            attention_dropout_rate,
            gradient_checkpointing,
        )
        self.ctc = CTCHead(output_size, vocab_size, ctc_slots_per_frame)
        self.embed = nn.Embedding(NUM_QUERY_ROWS, n_mels * lfr_m)
        self.output_dim = output_size
        self.frame_rate = self.sample_rate / (self.frontend.fbank.shift * lfr_n)
        self.tokenizer: Tokenizer | None = None
        self._set_tokenizer(build_tokenizer(tokenizer))
        if cmvn_file is not None:
            self.frontend.set_cmvn(load_cmvn(cmvn_file))
        self._metrics = nn.ModuleDict()

    # ---- inputs -------------------------------------------------------------------------------
    def _set_tokenizer(self, tokenizer: Tokenizer | None) -> None:
        if tokenizer is not None and tokenizer.vocab_size != self.ctc.vocab_size:
            raise ValueError(
                f"tokenizer has {tokenizer.vocab_size} tokens but the CTC head has vocab_size="
                f"{self.ctc.vocab_size}; set vocab_size to the tokenizer's size"
            )
        self.tokenizer = tokenizer

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
        return torch.cat([self.embed(rows).to(feats.dtype), feats], dim=1), lengths + rows.shape[1]

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
    def _require_tokenizer(self) -> Tokenizer:
        if self.tokenizer is None:
            raise RuntimeError(
                "SenseVoiceEncoder has no tokenizer: pass tokenizer='char' or a sentencepiece .model path, "
                "or load_pretrained() an official folder"
            )
        return self.tokenizer

    def transcribe(self, audio: AudioBatch) -> list[Transcript]:
        """Rich tags from the query frames and greedy CTC text from the speech frames.

        Only for an encoder whose CTC head trained with it: MinMo's stages 1b/1c move the encoder through the
        LLM's loss and never train this head, which then reads stale features (its emotion tag fell to chance).
        """
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

    # ---- official checkpoint --------------------------------------------------------------------
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
        self.hparams.update(cmvn_file=str(folder / "am.mvn"), tokenizer=str(bpe_path))

    def _check_config(self, encoder_conf: dict[str, Any], source: Path) -> None:
        ours = {
            "output_size": self.hparams.output_size,
            "attention_heads": self.hparams.attention_heads,
            "linear_units": self.hparams.linear_units,
            "num_blocks": self.hparams.num_blocks,
            "tp_blocks": self.hparams.tp_blocks,
            "kernel_size": self.hparams.kernel_size,
        }
        wrong = [
            f"{k}: {encoder_conf[k]} there, {v} here" for k, v in ours.items() if encoder_conf.get(k, v) != v
        ]
        if wrong:
            raise ValueError(
                f"{source} describes another SAN-M size ({'; '.join(wrong)}); build the block with the "
                "matching preset (SenseVoiceEncoder.from_preset('sensevoice-small') for SenseVoiceSmall)"
            )

    # ---- standalone training ----------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        labels = getattr(datamodule, "emotion_labels", None)
        if labels is not None and list(labels) != list(self.hparams.emotion_labels or []):
            raise ValueError(
                f"the datamodule's emotion_labels {list(labels)} differ from the encoder's "
                f"{self.hparams.emotion_labels}; set model.init_args.emotion_labels to the datamodule's"
            )

    def _tag_id(self, name: str) -> int:
        return self._require_tokenizer().token_to_id(tag(name))

    def _emotion_ids(self) -> list[int]:
        labels = self.hparams.emotion_labels or []
        return [self._tag_id(EMOTION_TAGS.get(label, label.upper())) for label in labels]

    def _rich_targets(self, batch: dict[str, Any], size: int) -> Tensor:
        language, event = self._tag_id(self.hparams.train_language), self._tag_id("Speech")
        norm = self._tag_id("withitn" if self.hparams.use_itn else "woitn")
        targets = torch.tensor([language, IGNORE, event, norm], device=self.device).repeat(size, 1)
        if "emotion" in batch:
            targets[:, 1] = torch.tensor(self._emotion_ids(), device=self.device)[batch["emotion"]]
        return targets

    def _train_rows(self, size: int) -> Tensor:
        rows = self.query_rows(size, self.hparams.train_language).clone()
        if self.training:
            auto = torch.rand(size, device=rows.device) < self.hparams.auto_language_prob
            rows[:, 0] = torch.where(auto, LID_ROWS["auto"], rows[:, 0])
        return rows

    def _step(self, batch: dict[str, Any]) -> dict[str, Any]:
        tokenizer = self._require_tokenizer()
        feats, lengths = self.features(batch["audio"])
        if self.training and self.hparams.spec_augment:
            feats = spec_augment_lfr(feats, lengths, self.hparams.n_mels)
        size, slots = feats.shape[0], self.ctc.slots
        out, out_lengths = self.encode(feats, lengths, self._train_rows(size))
        logits = self.ctc(out)
        speech = logits[:, NUM_QUERIES * slots :].float().log_softmax(-1)
        speech_lengths = (out_lengths - NUM_QUERIES) * slots
        targets, target_lengths = pad_ids([tokenizer.encode(t) for t in batch["text"]], pad=BLANK_ID)
        targets, target_lengths = targets.to(self.device), target_lengths.to(self.device)
        infeasible = int((target_lengths + _repeats(targets, target_lengths) > speech_lengths).sum())
        ctc = F.ctc_loss(
            speech.transpose(0, 1),
            targets,
            speech_lengths,
            target_lengths,
            BLANK_ID,
            "sum",
            zero_infinity=True,
        )
        rich_logits = logits[:, : NUM_QUERIES * slots : slots].float()
        rich_targets = self._rich_targets(batch, size)
        # each tag weighs as much as one more label of the transcript (SenseVoice puts them in one sequence);
        # a mean over the 4 tags left the emotion tag a quarter of a label and it barely learnt
        per_tag = F.cross_entropy(
            rich_logits.flatten(0, 1), rich_targets.flatten(), ignore_index=IGNORE, reduction="none"
        )
        rich = per_tag.sum() / size
        return dict(
            loss=ctc / size + rich,
            ctc=ctc / size,
            rich=rich,
            infeasible=infeasible,
            size=size,
            speech=speech,
            speech_lengths=speech_lengths,
            rich_logits=rich_logits,
        )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        out = self._step(batch)
        self.log_dict(
            {"train/loss": out["loss"], "train/ctc": out["ctc"], "train/rich": out["rich"]},
            batch_size=out["size"],
            prog_bar=True,
        )
        # CTC cannot align utterances with more labels than frames: counted, never hidden
        self.log("train/ctc_infeasible", float(out["infeasible"]), batch_size=out["size"], reduce_fx="sum")
        return out["loss"]

    def _stage_metrics(self, stage: str) -> nn.ModuleDict:
        if stage not in self._metrics:
            from torchmetrics.classification import MulticlassAccuracy
            from torchmetrics.text import CharErrorRate, WordErrorRate

            metrics = {"wer": WordErrorRate(), "cer": CharErrorRate()}
            if self.hparams.emotion_labels:
                metrics["emotion_acc"] = MulticlassAccuracy(len(self.hparams.emotion_labels), average="micro")
            self._metrics[stage] = nn.ModuleDict(metrics).to(self.device)
        return self._metrics[stage]

    def _evaluate(self, batch: dict[str, Any], stage: str) -> Tensor:
        """Loss, greedy-CTC WER/CER on normalised text, and emotion accuracy from the emotion query frame.

        ``stage`` names the metric set: ``val`` for the first (or only) source, ``val_1``... for the
        others of a ``MixtureDataModule``, so every source is scored on its own.
        """
        tokenizer, metrics = self._require_tokenizer(), self._stage_metrics(stage)
        out = self._step(batch)
        hypotheses = [
            tokenizer.decode(ids) for ids in greedy_ctc(out["speech"], out["speech_lengths"], BLANK_ID)
        ]
        references = [tokenizer.normalize(text) for text in batch["text"]]
        metrics["wer"].update(hypotheses, references)
        metrics["cer"].update(hypotheses, references)
        options = dict(batch_size=out["size"], prog_bar=stage == "val", add_dataloader_idx=False)
        self.log(f"{stage}/loss", out["loss"], **options)
        names = ["wer", "cer"] + (["emotion_acc"] if "emotion" in batch and "emotion_acc" in metrics else [])
        if "emotion_acc" in names:
            emotion_logits = out["rich_logits"][:, RICH_FIELDS.index("emotion")][:, self._emotion_ids()]
            metrics["emotion_acc"].update(emotion_logits.argmax(-1), batch["emotion"])
        for name in names:  # a source's metrics are created on first use: name their attribute for Lightning
            self.log(f"{stage}/{name}", metrics[name], metric_attribute=f"_metrics.{stage}.{name}", **options)
        return out["loss"]

    def validation_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        return self._evaluate(batch, _source_stage("val", dataloader_idx))

    def test_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        return self._evaluate(batch, _source_stage("test", dataloader_idx))

    def configure_optimizers(self) -> dict[str, Any]:
        decay = [p for n, p in self.named_parameters() if p.requires_grad and p.dim() > 1]
        no_decay = [p for n, p in self.named_parameters() if p.requires_grad and p.dim() <= 1]
        optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": self.hparams.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=self.hparams.learning_rate,
            betas=(0.9, 0.98),
        )
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        warmup = min(self.hparams.warmup_steps, max(total // 10, 1))
        # with `max_time`, the cosine follows the wall clock (a step budget is unknown up front)
        timer = next((c for c in self.trainer.callbacks if isinstance(c, Timer)), None)

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = (step - warmup) / max(total - warmup, 1)
            if timer is not None and timer.time_remaining("train") is not None:
                elapsed = timer.time_elapsed("train")
                progress = max(progress, elapsed / max(elapsed + timer.time_remaining("train"), 1e-9))
            return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ---- streaming ------------------------------------------------------------------------------
    def _stream_geometry(self) -> tuple[int, int, int]:
        """(samples per LFR frame, waveform tail kept between chunks, fbank frames kept for LFR)."""
        fbank, m, n = self.frontend.fbank, self.frontend.lfr_m, self.frontend.lfr_n
        lag = -(-(fbank.window_size - fbank.shift) // fbank.shift)  # frames a fresh stream starts behind
        keep = (m - 1) // 2 - lag
        if keep < 0 or m - 1 - (m - 1) // 2 != n // 2:
            raise ValueError(
                f"streaming supports LFR windows centred on their hop (m=7, n=6); got m={m}, n={n}"
            )
        return fbank.shift * n, lag * fbank.shift, keep

    @torch.no_grad()
    def init_state(self, batch_size: int) -> SenseVoiceStreamState:
        """Fresh sessions; the query frames (the same for every session) are encoded once here."""
        left = self.hparams.stream_left_frames
        if left < self.encoder.layers[0].self_attn.pad_left:
            raise ValueError(f"stream_left_frames must cover the FSMN's left taps; got {left}")
        _, tail, keep = self._stream_geometry()
        layers, width = len(self.encoder.layers), 2 * self.output_dim
        empty = self.embed.weight.new_zeros(1, layers, left, width)
        queries = self.embed(self.query_rows(1))
        query_out, query_kv = self.encoder.step(
            queries, torch.zeros(1, dtype=torch.long), empty, torch.zeros(1, dtype=torch.long)
        )
        query_cache = torch.cat([empty, query_kv], dim=2)[0, :, -left:]
        device = self.embed.weight.device
        state = SenseVoiceStreamState(
            batch_size=batch_size,
            samples=torch.zeros(batch_size, tail, device=device),
            last_fbank=torch.zeros(batch_size, keep, self.hparams.n_mels, device=device),
            fresh=torch.ones(batch_size, dtype=torch.bool, device=device),
            positions=torch.zeros(batch_size, dtype=torch.long, device=device),
            cache=empty.new_zeros(batch_size, layers, left, width),
            cache_len=torch.zeros(batch_size, dtype=torch.long, device=device),
            query_cache=query_cache,
            query_out=query_out[0],
        )
        state.reset(torch.ones(batch_size, dtype=torch.bool))
        return state

    @torch.no_grad()
    def step(self, chunk: AudioBatch, state: SenseVoiceStreamState) -> SequenceBatch:
        """Encode one chunk (a multiple of 60 ms, the same length for every session).

        Returns the frames that became final: the four query frames first for a fresh session, then one
        frame per 60 ms of audio. Equals ``encode(..., chunks=ChunkLayout(4, N, stream_left_frames))`` on
        the same audio, where ``N`` is the chunk's frame count (see the module docstring of ``sanm``).
        """
        hop, tail, keep = self._stream_geometry()
        chunk.require(self.sample_rate, who=f"{type(self).__name__}.step")
        samples = chunk.waveform.shape[1]
        if (
            samples % hop
            or bool((chunk.lengths != samples).any())
            or chunk.waveform.shape[0] != state.batch_size
        ):
            raise ValueError(
                f"streaming chunks must hold a multiple of {hop} samples ({hop / self.sample_rate * 1000:g} ms) for "
                f"every one of the {state.batch_size} sessions (full lengths); got shape {tuple(chunk.waveform.shape)} "
                f"with lengths {chunk.lengths.tolist()}"
            )
        frames_per_chunk = samples // hop
        fbank = self.frontend.fbank
        buffer = torch.cat([state.samples, chunk.waveform.float()], dim=1)
        state.samples = buffer[:, buffer.shape[1] - tail :].clone()
        frames = fbank.frames_to_fbank(
            buffer.unfold(1, fbank.window_size, fbank.shift) * 32768.0, fbank.window, fbank.banks
        )
        lag = tail // fbank.shift
        pad = (self.frontend.lfr_m - 1) // 2
        fresh_stack = torch.cat([frames[:, lag : lag + 1].expand(-1, pad, -1), frames[:, lag:]], dim=1)
        steady_stack = torch.cat([state.last_fbank, frames], dim=1)
        stack = torch.where(state.fresh[:, None, None], fresh_stack, steady_stack)
        state.last_fbank = stack[:, stack.shape[1] - keep :].clone()
        lfr = stack.unfold(1, self.frontend.lfr_m, self.frontend.lfr_n).transpose(2, 3).flatten(2)
        lfr = self.frontend.apply_cmvn(lfr, torch.full_like(state.positions, frames_per_chunk))
        out, kv = self.encoder.step(lfr, state.positions, state.cache, state.cache_len)
        left = state.cache.shape[2]
        state.cache = torch.cat([state.cache, kv], dim=2)[:, :, -left:]
        state.cache_len = (state.cache_len + frames_per_chunk).clamp(max=left)
        state.positions = state.positions + frames_per_chunk
        fresh = state.fresh.clone()
        state.fresh[:] = False
        if not bool(fresh.any()):
            return SequenceBatch(out, torch.full_like(state.positions, frames_per_chunk))
        queries = state.query_out.expand(out.shape[0], -1, -1)
        padded = torch.cat([out, out.new_zeros(out.shape[0], NUM_QUERIES, out.shape[2])], dim=1)
        values = torch.where(fresh[:, None, None], torch.cat([queries, out], dim=1), padded)
        return SequenceBatch(values, frames_per_chunk + NUM_QUERIES * fresh.long())


def _source_stage(stage: str, dataloader_idx: int) -> str:
    """Metric prefix of one evaluation source: ``val`` for the first, ``val_1``, ``val_2``... after it."""
    return stage if dataloader_idx == 0 else f"{stage}_{dataloader_idx}"


def _repeats(targets: Tensor, lengths: Tensor) -> Tensor:
    """Adjacent equal labels per row: CTC needs a blank frame between each pair."""
    same = (targets[:, 1:] == targets[:, :-1]) & (
        torch.arange(1, targets.shape[1], device=targets.device) < lengths[:, None]
    )
    return same.sum(1)


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
