"""A silence timeout behind a trained predictor, so that every user turn gets its answer, late at worst.

A trained predictor that misses a turn end (its ``respond`` probability never reaches the threshold in the
silence after it) leaves the user waiting for good: the tiny stage 4 never answered 4 of the 55 smooth
turns of the built-in Full-Duplex-Bench set. ``SilenceBackstop`` runs the energy VAD
(``VADDuplexPredictor``) beside it with a timeout longer than a speaker's mid-turn pauses and answers where
the VAD would, unless the predictor already answered that user turn (its ``respond`` closes the VAD's open
turn). Every other decision, ``stop_speaking`` included, is the predictor's own.

``timeout`` 1.0 s: the built-in corpus pauses 0.3-0.8 s inside a turn (``timeline.DuplexConfig.pause``), so
with the VAD's 0.1 s hangover the backstop never answers inside a pause there; natural speech pauses longer
now and then, so raise it where pauses do. ``min_turn`` 1.0 s: a user turn it answers holds a voiced run that
long, so a back-channel alone ("uh-huh": voiced runs of at most 0.96 s in the corpus's voices, see
``vad.py``) is never answered (without it, the backstop answered 28 of the 29 back-channel samples of the
built-in FDB set, which the trained predictor rightly let pass). The backstop trains nothing: wrap a trained predictor for a
session (``DuplexSession(model, predictor=SilenceBackstop(model.duplex_predictor))``; ``minmo chat`` does so
by default, ``--silence-backstop 0`` turns it off); its frames come out as the VAD's one-hot logits, its
other frames as the predictor's logits and thresholds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch
from minmo_lightning.components.duplex_predictor.transformer import MINMO, TINY
from minmo_lightning.components.duplex_predictor.vad import DECIDED_LOGIT, VADDuplexPredictor, VADState
from torch import Tensor

from minmo_lightning.blocks import DuplexPredictor
from minmo_lightning.contracts import AudioBatch, DuplexFrames, DuplexOutput
from minmo_lightning.registry import resolve_class
from minmo_lightning.stream_state import StreamState

KEEP_LISTENING, RESPOND, STOP_SPEAKING = range(3)


@dataclass
class BackstopState(StreamState):
    """The wrapped predictor's state and the VAD's, row for row."""

    predictor: StreamState
    vad: VADState

    def reset(self, items: Tensor | list[int]) -> None:
        super().reset(items)
        self.predictor.reset(items)
        self.vad.reset(items)


class SilenceBackstop(DuplexPredictor):
    """``predictor``'s decisions, plus ``respond`` after ``timeout`` s of user silence in a turn it left
    unanswered (see the module docstring)."""

    presets = {
        "tiny": {"predictor": {"class_path": "TransformerDuplexPredictor", "init_args": TINY}},
        "minmo": {
            "predictor": {"class_path": "TransformerDuplexPredictor", "init_args": MINMO},
            "frame_seconds": 0.08,
        },
    }

    def __init__(
        self,
        predictor: DuplexPredictor | Mapping[str, Any],
        frame_seconds: float = 0.12,
        timeout: float = 1.0,
        threshold_db: float = -45.0,
        hangover: float = 0.1,
        min_turn: float = 1.0,
    ) -> None:
        """``predictor``: the one to back (a block, or its ``{class_path, init_args}`` spec);
        ``frame_seconds``: the LLM's audio frame, as for the VAD; ``min_turn``: the voiced run a user turn
        needs before the backstop answers it (see the module docstring)."""
        super().__init__()
        if not isinstance(predictor, DuplexPredictor):
            cls = resolve_class(predictor["class_path"], DuplexPredictor, "SilenceBackstop predictor")
            predictor = cls(**dict(predictor.get("init_args", {})))
        self.predictor = predictor
        self.save_hyperparameters(ignore=["predictor"])
        self.hparams["predictor"] = predictor.spec()  # the checkpoint rebuilds what it backs
        self.vad = VADDuplexPredictor(
            frame_seconds=frame_seconds,
            threshold_db=threshold_db,
            silence_timeout=timeout,
            min_barge_in=None,  # barge-ins are the predictor's to decide
            hangover=hangover,
            min_turn=min_turn,
        )

    def forward(self, frames: DuplexFrames) -> DuplexOutput:
        """While training, the predictor's own logits: the backstop is a rule to act on, not to learn from."""
        output = self.predictor(frames)
        if self.training:
            return output
        return self._merged(output, frames, self.vad.init_state(frames.hidden.values.shape[0]))

    def audio_features(self, audio: AudioBatch, frames: int) -> Tensor | None:
        return self.predictor.audio_features(audio, frames)

    def init_state(self, batch_size: int, options: None = None) -> BackstopState:
        return BackstopState(
            batch_size=batch_size,
            predictor=self.predictor.init_state(batch_size, options),
            vad=self.vad.init_state(batch_size),
        )

    @torch.no_grad()
    def step(self, chunk: DuplexFrames, state: BackstopState) -> DuplexOutput:
        return self._merged(self.predictor.step(chunk, state.predictor), chunk, state.vad)

    def _merged(self, output: DuplexOutput, frames: DuplexFrames, vad_state: VADState) -> DuplexOutput:
        """``output`` with ``respond`` forced where the VAD answers a turn the predictor left unanswered."""
        decided = output.decisions().cpu()
        vad = self.vad.decide(frames, vad_state, answered=decided == RESPOND)
        forced = (vad == RESPOND) & (decided == KEEP_LISTENING)
        if not forced.any():
            return output
        one_hot = torch.nn.functional.one_hot(torch.tensor(RESPOND), len(self.CLASSES)) * DECIDED_LOGIT
        forced = forced.to(output.logits.device)
        logits = torch.where(forced[..., None], one_hot.to(output.logits), output.logits)
        return replace(output, logits=logits)
