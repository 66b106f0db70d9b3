"""Stage 4 on ``MinMo``: the duplex objective and duplex predictions (a mixin of the composite).

A two-channel session goes through the listen path (``Listener``, the same chunked computation a
``DuplexSession`` runs) and the LLM, laid out in time order with the assistant's turns
(``duplex_context.py``); the duplex predictor reads the LLM states at the user-audio frames and learns the
turn-taking label of each frame.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from minmo_lightning.contracts import IGNORE_INDEX, AudioBatch, DuplexFrames, SequenceBatch
from minmo_lightning.duplex_context import assistant_speaking, assistant_turns, lay_out
from minmo_lightning.listening import Listener
from minmo_lightning.prompts import SPEECH_TASKS


class DuplexTraining:
    """``MinMo``'s ``duplex`` objective (``OBJECTIVES``) and its ``predict_turn_taking``."""

    @property
    def listener(self) -> Listener:
        return Listener(self.voice_encoder, self.input_projector, self.hparams.duplex_chunk_seconds)

    def duplex_frames(self, batch: Mapping[str, Any]) -> tuple[DuplexFrames, Tensor]:
        """What the predictor reads for each session of a duplex batch, and the frame labels it matches.

        The LLM states at the user-audio frames of the time-ordered context, and the predictor's
        ``audio_features``; cached per session id with ``cache_duplex_states`` (the frozen blocks give the
        same states every epoch).
        """
        listener, audio = self.listener, batch["user_audio"]
        label_width = int(batch["frame_labels"].shape[1])
        expected = -(-audio.lengths // round(listener.frame_seconds * audio.sample_rate))
        if bool(((batch["frame_lengths"].to(expected.device) - expected).abs() > 1).any()):
            raise ValueError(
                f"the frame labels do not run at the listen path's {1 / listener.frame_seconds:g} Hz "
                f"({1000 * listener.frame_seconds:g} ms LLM audio frames); set the duplex datamodule's "
                f"frame_rate to {1 / listener.frame_seconds:g}"
            )
        ids = [str(i) for i in batch["ids"]]
        label_counts = batch["frame_lengths"].tolist()
        if not (self.hparams.cache_duplex_states and all(i in self._duplex_states for i in ids)):
            states = self._duplex_states_of(audio, batch["events"])
            heard = self.duplex_predictor.audio_features(audio, label_width)
            features = [None if heard is None else heard[row, :n] for row, n in enumerate(label_counts)]
            if self.hparams.cache_duplex_states:
                self._duplex_states.update(
                    {i: (s.cpu(), None if f is None else f.cpu()) for i, s, f in zip(ids, states, features)}
                )
        else:
            states, features = zip(*(self._duplex_states[i] for i in ids))
            states = [s.to(self.device) for s in states]
        counts = torch.tensor([min(len(s), n) for s, n in zip(states, label_counts)], device=self.device)
        values = torch.nn.utils.rnn.pad_sequence([s[:label_width] for s in states], batch_first=True)
        speaking = assistant_speaking(batch["events"], values.shape[1], listener.frame_seconds)
        heard = None if features[0] is None else _padded(features, values.shape[1]).to(self.device)
        hidden = DuplexFrames(SequenceBatch(values, counts), audio, speaking.to(self.device), heard)
        return hidden, batch["frame_labels"][:, : values.shape[1]].to(self.device)

    def _duplex_states_of(self, audio: AudioBatch, events: list[list[dict]]) -> list[Tensor]:
        listener = self.listener
        turns = self.prompts.duplex_turns(SPEECH_TASKS["chat"].instruction)
        texts = [assistant_turns(row, turns, self.prompts.encode) for row in events]
        frames = listener.listen(audio)
        context = lay_out(
            frames, listener.leading_frames, listener.frame_seconds, texts, turns.first_user, self.llm.embed
        )
        llm_trains = self.hparams.trainable.get("llm") != "frozen"
        with torch.set_grad_enabled(torch.is_grad_enabled() and llm_trains):
            out = self.llm(context.embeds, attention_mask=context.attention_mask)
        states = context.audio_states(out.hidden_states)
        return [row[:n] for row, n in zip(states.values, states.lengths.tolist())]

    def duplex_objective(self, batch: Mapping[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        frames, labels = self.duplex_frames(batch)
        output = self.duplex_predictor(frames)
        scored = labels != IGNORE_INDEX
        accuracy = ((output.decisions() == labels) & scored).sum() / scored.sum().clamp(min=1)
        return self.duplex_predictor.frame_loss(output, labels), {"frame_acc": accuracy}

    def predict_turn_taking(self, batch: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Duplex sessions: the predictor's decision per user-audio frame, and its respond probability (the
        report moves the respond threshold over it: take-over rate against latency)."""
        frames, _ = self.duplex_frames(batch)
        output = self.duplex_predictor(frames)
        respond = output.probabilities()[..., self.duplex_predictor.CLASSES.index("respond")]
        return [
            {
                "id": i,
                "task": "duplex",
                "predicted_labels": row[:n].tolist(),
                "respond_probability": [round(p, 4) for p in probability[:n].tolist()],
            }
            for i, row, probability, n in zip(
                batch["ids"], output.decisions(), respond, frames.hidden.lengths.tolist()
            )
        ]


def _padded(rows: list[Tensor], width: int) -> Tensor:
    """[B, width, F]: per-row [n, F] features cut or zero-padded to ``width`` frames."""
    batch = torch.nn.utils.rnn.pad_sequence([row[:width] for row in rows], batch_first=True)
    return torch.nn.functional.pad(batch, (0, 0, 0, width - batch.shape[1]))
