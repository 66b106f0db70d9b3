"""``SenseVoiceEncoder`` trained alone: CTC on the speech frames, one cross-entropy per rich tag on the query
frames, greedy-CTC WER/CER and emotion accuracy per evaluation source."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from minmo_lightning.components.voice_encoder.ctc import count_unalignable, greedy_ctc, spec_augment_lfr
from minmo_lightning.components.voice_encoder.sensevoice_queries import LID_ROWS, NUM_QUERIES, RICH_FIELDS
from minmo_lightning.components.voice_encoder.tokenizer import BLANK_ID, tag
from torch import Tensor, nn

from minmo_lightning.contracts import IGNORE_INDEX, SequenceBatch, TokenBatch
from minmo_lightning.optim import OptimizerConfig, configure_adamw

#: datamodule emotion labels whose SenseVoice tag is not just the upper-cased label
EMOTION_TAGS = {"surprise": "SURPRISED", "fear": "FEARFUL", "disgust": "DISGUSTED", "unknown": "EMO_UNKNOWN"}


class SenseVoiceTraining:
    """Lightning's training hooks of ``SenseVoiceEncoder``."""

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        labels = getattr(datamodule, "emotion_labels", None)
        if labels is not None and list(labels) != list(self.hparams.emotion_labels or []):
            raise ValueError(
                f"the datamodule's emotion_labels {list(labels)} differ from the encoder's "
                f"{self.hparams.emotion_labels}; set model.init_args.emotion_labels to the datamodule's"
            )

    def on_fit_start(self) -> None:
        """This recipe trains the CTC/tag head with the body: whatever made it stale is undone."""
        self.hparams.head_stale = None

    def _tag_id(self, name: str) -> int:
        return self._require_tokenizer().token_to_id(tag(name))

    def _emotion_ids(self) -> list[int]:
        labels = self.hparams.emotion_labels or []
        return [self._tag_id(EMOTION_TAGS.get(label, label.upper())) for label in labels]

    def _rich_targets(self, batch: Mapping[str, Any], size: int) -> Tensor:
        language, event = self._tag_id(self.hparams.train_language), self._tag_id("Speech")
        norm = self._tag_id("withitn" if self.hparams.use_itn else "woitn")
        targets = torch.tensor([language, IGNORE_INDEX, event, norm], device=self.device).repeat(size, 1)
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
        feats, lengths = self.features(batch["audio"])
        if self.training and self.hparams.spec_augment:
            feats = spec_augment_lfr(feats, lengths, self.hparams.n_mels)
        out, out_lengths = self.encode(feats, lengths, self._train_rows(feats.shape[0]))
        return self._head_losses(out, out_lengths, batch)

    def _head_losses(self, out: Tensor, out_lengths: Tensor, batch: Mapping[str, Any]) -> dict[str, Any]:
        """CTC on the speech frames against ``batch["text"]`` and one cross-entropy per rich tag on the
        query frames, for encoder frames ``out`` (queries first)."""
        tokenizer = self._require_tokenizer()
        size, slots = out.shape[0], self.ctc.slots
        logits = self.ctc(out)
        speech = logits[:, NUM_QUERIES * slots :].float().log_softmax(-1)
        speech_lengths = (out_lengths - NUM_QUERIES) * slots
        targets = TokenBatch.from_list([tokenizer.encode(t) for t in batch["text"]], out.device)
        ctc = F.ctc_loss(
            speech.transpose(0, 1),
            targets.tokens,
            speech_lengths,
            targets.lengths,
            BLANK_ID,
            "sum",
            zero_infinity=True,
        )
        rich_logits = logits[:, : NUM_QUERIES * slots : slots].float()
        rich_targets = self._rich_targets(batch, size)
        # each tag weighs as much as one more label of the transcript (SenseVoice puts them in one sequence),
        # the emotion tag ``emotion_weight`` labels; a mean over the 4 tags left the emotion tag a quarter of a
        # label and it barely learnt
        per_tag = F.cross_entropy(
            rich_logits.flatten(0, 1), rich_targets.flatten(), ignore_index=IGNORE_INDEX, reduction="none"
        )
        weights = torch.ones(NUM_QUERIES, device=per_tag.device)
        weights[RICH_FIELDS.index("emotion")] = self.hparams.emotion_weight
        rich = (per_tag.view(size, NUM_QUERIES) * weights).sum() / size
        return dict(
            loss=ctc / size + rich,
            ctc=ctc / size,
            rich=rich,
            infeasible=count_unalignable(targets, speech_lengths),
            size=size,
            speech=speech,
            speech_lengths=speech_lengths,
            rich_logits=rich_logits,
        )

    def head_loss(self, encoded: SequenceBatch, batch: Mapping[str, Any]) -> Tensor | None:
        """This recipe's loss on frames a MinMo stage encoded (``forward``), for a batch of the sources this
        recipe reads (``head_tasks``); ``None`` for other sources."""
        if not self.head_tasks & set(batch.get("supervises", ())):
            return None
        return self._head_losses(encoded.values, encoded.lengths, batch)["loss"]

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

    def _split_metrics(self, split: str) -> nn.ModuleDict:
        if split not in self._metrics:
            from torchmetrics.classification import MulticlassAccuracy
            from torchmetrics.text import CharErrorRate, WordErrorRate

            metrics = {"wer": WordErrorRate(), "cer": CharErrorRate()}
            if self.hparams.emotion_labels:
                metrics["emotion_acc"] = MulticlassAccuracy(len(self.hparams.emotion_labels), average="micro")
            self._metrics[split] = nn.ModuleDict(metrics).to(self.device)
        return self._metrics[split]

    def _evaluate(self, batch: dict[str, Any], split: str) -> Tensor:
        """Loss, greedy-CTC WER/CER on normalised text, and emotion accuracy from the emotion query frame.

        ``split`` names the metric set: ``val`` for the first (or only) source, ``val_1``... for the
        others of a ``MixtureDataModule``, so every source is scored on its own.
        """
        self.check_head()  # scoring a stale head outside a fit would report the stale head's errors
        tokenizer, metrics = self._require_tokenizer(), self._split_metrics(split)
        out = self._step(batch)
        hypotheses = [
            tokenizer.decode(ids) for ids in greedy_ctc(out["speech"], out["speech_lengths"], BLANK_ID)
        ]
        references = [tokenizer.normalize(text) for text in batch["text"]]
        metrics["wer"].update(hypotheses, references)
        metrics["cer"].update(hypotheses, references)
        options = dict(batch_size=out["size"], prog_bar=split == "val", add_dataloader_idx=False)
        self.log(f"{split}/loss", out["loss"], **options)
        names = ["wer", "cer"] + (["emotion_acc"] if "emotion" in batch and "emotion_acc" in metrics else [])
        if "emotion_acc" in names:
            emotion_logits = out["rich_logits"][:, RICH_FIELDS.index("emotion")][:, self._emotion_ids()]
            metrics["emotion_acc"].update(emotion_logits.argmax(-1), batch["emotion"])
        for name in names:  # a source's metrics are created on first use: name their attribute for Lightning
            self.log(f"{split}/{name}", metrics[name], metric_attribute=f"_metrics.{split}.{name}", **options)
        return out["loss"]

    def validation_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        return self._evaluate(batch, _source_split("val", dataloader_idx))

    def test_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        return self._evaluate(batch, _source_split("test", dataloader_idx))

    def configure_optimizers(self) -> dict[str, Any]:
        # the warmup never takes more than a tenth of the run; with `max_time` the cosine follows the clock
        config = OptimizerConfig.from_hparams(
            self.hparams, betas=(0.9, 0.98), floor=0.05, follow_timer=True, max_warmup_fraction=0.1
        )
        return configure_adamw(self, config)


def _source_split(split: str, dataloader_idx: int) -> str:
    """Metric prefix of one evaluation source: ``val`` for the first, ``val_1``, ``val_2``... after it."""
    return split if dataloader_idx == 0 else f"{split}_{dataloader_idx}"
