"""MinMo's full-duplex predictor: one causal Transformer layer and a linear-softmax over the classes.

MinMo §3.1 gives "1 Transformer layer and 1 linear-softmax output layer", ~18M parameters, reading the
LLM's last-layer hidden states. Width and class count are not given; we use a 3584 -> 1024 input projection,
16 heads, FFN 4864 and a 128-frame window (10.24 s at 12.5 Hz): 17.85M parameters. The ``tiny`` preset
reads the tiny LLM (128 wide) through a 64-wide layer.

It trains alone on any features at the frame rate (``training_step`` reads ``hidden`` and
``frame_labels``); in stage 4 the composite feeds it the frozen LLM's states.

``pitch_frame_seconds`` (off in both presets, MinMo's design) also lets it hear the user's intonation
(``pitch.py``): four pitch features per frame of the user audio, through a small MLP added to the projected
states. The stage-4 recipes turn it on: the tiny listening path loses the continuation tone that tells a
pause after a statement from a turn end (``recipes/ablations/duplex_predictor.yaml`` measures it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from minmo_lightning.components.duplex_predictor.audio_frames import audio_of_frames, frame_hop
from minmo_lightning.components.duplex_predictor.pitch import FEATURES, PitchFeatures, PitchState
from minmo_lightning.components.duplex_predictor.window_attention import WindowedCausalLayer
from torch import Tensor, nn
from torchmetrics.classification import MulticlassConfusionMatrix

from minmo_lightning.blocks import DuplexPredictor
from minmo_lightning.contracts import IGNORE_INDEX, AudioBatch, DuplexFrames, DuplexOutput, SequenceBatch
from minmo_lightning.optim import OptimizerConfig, configure_adamw
from minmo_lightning.stream_state import StreamState

PITCH_WIDTH = 32
"""The hidden width of the MLP that adds the pitch features to the projected states (34k parameters at the
``minmo`` width)."""

TINY = {
    "input_dim": 128,
    "model_dim": 64,
    "num_heads": 4,
    "ffn_dim": 256,
    "max_context_frames": 64,
    "dropout": 0.0,
}
MINMO = {
    **TINY,
    "input_dim": 3584,
    "model_dim": 1024,
    "num_heads": 16,
    "ffn_dim": 4864,
    "max_context_frames": 128,
    "dropout": 0.1,
}


@dataclass
class TransformerDuplexState(StreamState):
    """``keys`` / ``values`` [B, heads, max_context_frames - 1, head_dim]: the last frames of each row,
    right-aligned, ``filled`` [B] of them valid (zeroed rows are empty sessions); ``pitch`` the pitch
    tracker's state when the predictor hears pitch (made at the first chunk, which gives the sample rate)."""

    keys: Tensor
    values: Tensor
    filled: Tensor
    pitch: PitchState | None = None

    def reset(self, items: Tensor | list[int]) -> None:
        super().reset(items)
        if self.pitch is not None:
            self.pitch.reset(items)


def inverse_frequency_weights(label_counts: list[int]) -> list[float]:
    """Class weights proportional to 1 / count, scaled so that the weighted label mean is 1 (a recipe's
    ``class_weights`` from the label counts of its training split)."""
    counts = torch.tensor(label_counts, dtype=torch.float64).clamp(min=1)
    weights = counts.sum() / (len(counts) * counts)
    return [round(float(w), 4) for w in weights]


class TransformerDuplexPredictor(DuplexPredictor):
    """Input projection -> one windowed causal pre-norm Transformer layer -> norm -> linear head."""

    presets = {"tiny": TINY, "minmo": MINMO}

    def __init__(
        self,
        input_dim: int,
        model_dim: int,
        num_heads: int,
        ffn_dim: int,
        max_context_frames: int,
        dropout: float = 0.0,
        class_weights: list[float] | None = None,
        respond_threshold: float | None = None,
        stop_threshold: float | None = None,
        learning_rate: float = 1e-3,
        weight_decay: float = 0.01,
        warmup_steps: int = 100,
        pitch_frame_seconds: float | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.input_dim = input_dim
        classes = len(self.CLASSES)
        if class_weights is not None and len(class_weights) != classes:
            raise ValueError(
                f"class_weights needs one weight per class {self.CLASSES}, got {len(class_weights)}"
            )
        self.input_proj = nn.Linear(input_dim, model_dim)
        self.pitch = None if pitch_frame_seconds is None else PitchFeatures(pitch_frame_seconds)
        self.pitch_proj = (
            None
            if self.pitch is None
            else nn.Sequential(
                nn.Linear(len(FEATURES), PITCH_WIDTH), nn.GELU(), nn.Linear(PITCH_WIDTH, model_dim)
            )
        )
        self.layer = WindowedCausalLayer(model_dim, num_heads, ffn_dim, max_context_frames, dropout)
        self.norm = nn.LayerNorm(model_dim)
        self.head = nn.Linear(model_dim, classes)
        weights = torch.tensor(class_weights if class_weights is not None else [1.0] * classes)
        self.register_buffer("class_weights", weights, persistent=False)
        self.val_confusion = MulticlassConfusionMatrix(classes, ignore_index=IGNORE_INDEX)

    # ---- inference ----------------------------------------------------------------------------
    def forward(self, frames: DuplexFrames) -> DuplexOutput:
        hidden = self._checked_hidden(frames)
        x = self.input_proj(hidden.values)
        if self.pitch is not None:
            features = frames.audio_features
            if features is None:
                features = self.pitch(self._checked_audio(frames), x.shape[1])
            elif features.shape != (*x.shape[:2], len(FEATURES)):
                raise ValueError(
                    f"audio_features {tuple(features.shape)} must be [batch, frames, {len(FEATURES)}] like the "
                    f"hidden states {tuple(x.shape[:2])}: pass what audio_features(audio, frames) returned"
                )
            x = x + self._pitch_input(features)
        return self._output(self.layer(x, hidden.lengths), hidden.lengths)

    def audio_features(self, audio: AudioBatch, frames: int) -> Tensor | None:
        """The pitch features (``pitch.FEATURES``) of ``frames`` frames, when the predictor hears pitch; the
        longest row must end inside the last frame (frames of another length say a wrong frame_seconds)."""
        if self.pitch is None:
            return None
        hop = frame_hop(self.pitch.frame_seconds, audio.sample_rate)
        longest = int(audio.lengths.max())
        if not (frames - 1) * hop < longest <= frames * hop:
            raise ValueError(
                f"{type(self).__name__}: {frames} frames of pitch_frame_seconds={self.pitch.frame_seconds} do "
                f"not cover the longest row ({longest} samples at {audio.sample_rate} Hz); set "
                "pitch_frame_seconds to the LLM's audio frame"
            )
        return self.pitch(audio, frames)

    def init_state(self, batch_size: int, options: None = None) -> TransformerDuplexState:
        """Fresh sessions. There are no stream options: thresholds live on the output (``DuplexOutput``)."""
        if options is not None:
            raise ValueError(
                f"{type(self).__name__} takes no stream options; set respond_threshold / stop_threshold on "
                "the block, or on its DuplexOutput (dataclasses.replace)"
            )
        keys, values, filled = self.layer.empty_cache(batch_size, self.head.weight)
        return TransformerDuplexState(batch_size=batch_size, keys=keys, values=values, filled=filled)

    @torch.no_grad()
    def step(self, chunk: DuplexFrames, state: TransformerDuplexState) -> DuplexOutput:
        """Decisions for the chunk's frames (any number per row; ``hidden.lengths`` says how many)."""
        hidden = self._checked_hidden(chunk)
        if hidden.values.shape[0] != state.batch_size:
            raise ValueError(
                f"chunk has {hidden.values.shape[0]} rows but the state holds {state.batch_size} sessions"
            )
        x = self.input_proj(hidden.values)
        if self.pitch is not None:
            audio = self._checked_audio(chunk)
            if state.pitch is None:
                state.pitch = self.pitch.init_state(state.batch_size, audio.sample_rate, x.device)
            x = x + self._pitch_input(self.pitch.step(audio, x.shape[1], state.pitch))
        x, cache = self.layer.step(x, hidden.lengths, (state.keys, state.values, state.filled))
        state.keys, state.values, state.filled = cache
        return self._output(x, hidden.lengths)

    def _output(self, x: Tensor, lengths: Tensor) -> DuplexOutput:
        return DuplexOutput(
            self.head(self.norm(x)), lengths, self.hparams.respond_threshold, self.hparams.stop_threshold
        )

    def _pitch_input(self, features: Tensor) -> Tensor:
        return self.pitch_proj(features.to(self.pitch_proj[0].weight))

    def _checked_audio(self, frames: DuplexFrames) -> AudioBatch:
        return audio_of_frames(
            f"{type(self).__name__} with pitch_frame_seconds",
            frames.audio,
            frames.hidden.lengths,
            self.pitch.frame_seconds,
        )

    def _checked_hidden(self, frames: DuplexFrames) -> SequenceBatch:
        width = frames.hidden.values.shape[-1]
        if width != self.input_dim:
            raise ValueError(
                f"{type(self).__name__} reads hidden states {self.input_dim} wide, got {width}; set input_dim "
                "to the LLM's hidden_size (preset 'minmo': 3584 for Qwen2.5-7B, 'tiny': 128)"
            )
        return frames.hidden

    # ---- standalone training ------------------------------------------------------------------
    def _loss(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor, Tensor]:
        hidden, labels = batch["hidden"], batch["frame_labels"]
        if labels.shape != hidden.values.shape[:2]:
            raise ValueError(
                f"frame_labels {tuple(labels.shape)} must match the hidden frames "
                f"{tuple(hidden.values.shape[:2])}: one label per frame, {IGNORE_INDEX} on padding"
            )
        output = self(DuplexFrames(hidden, batch.get("audio")))
        weights = self.class_weights.to(output.logits.dtype)
        loss = F.cross_entropy(
            output.logits.flatten(0, 1), labels.flatten(), weight=weights, ignore_index=IGNORE_INDEX
        )
        return loss, output.decisions(), labels

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        loss, _, labels = self._loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=labels.shape[0])
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        loss, decisions, labels = self._loss(batch)
        self.log("val/loss", loss, prog_bar=True, batch_size=labels.shape[0])
        self.val_confusion.update(decisions.flatten(), labels.flatten())
        return loss

    def on_validation_epoch_end(self) -> None:
        confusion = self.val_confusion.compute().double()  # [true, predicted]
        self.val_confusion.reset()
        hits = confusion.diag()
        self.log("val/acc", hits.sum() / confusion.sum().clamp(min=1), prog_bar=True)
        f1 = 2 * hits / (confusion.sum(0) + confusion.sum(1)).clamp(min=1)
        for name, value in zip(self.CLASSES, f1):
            self.log(f"val/f1_{name}", value)

    def configure_optimizers(self) -> dict[str, Any]:
        return configure_adamw(self, OptimizerConfig.from_hparams(self.hparams, betas=(0.9, 0.98), floor=0.1))
