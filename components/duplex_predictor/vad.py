"""The baseline every duplex report shows beside the model: an energy VAD with a silence timeout.

Per frame of the user channel (frame k = samples [k * hop, (k + 1) * hop), hop = ``frame_seconds``):

- a frame is *loud* when its energy (10 log10 of the mean square, dB full scale) reaches ``threshold_db``;
  it is *voiced* when loud or within ``hangover`` s after a loud frame (short dips stay inside one run);
- loud user audio while the assistant is silent opens a user turn; the turn's first frame with
  ``silence_timeout`` s of quiet since its last loud frame ends it and decides ``respond`` (once per turn),
  if the turn held a voiced run of ``min_turn`` s (default 0: any sound is a turn; a backstop beside a
  trained predictor sets 1.0 so that a user's back-channel is not answered);
- while ``assistant_speaking`` is set, a voiced run lasting ``min_barge_in`` s decides ``stop_speaking``
  (once per run) and opens a user turn; shorter runs (back-channels) change nothing; ``min_barge_in=None``
  never stops the assistant (a backstop beside a predictor that decides barge-ins, ``backstop.py``);
- every other frame is ``keep_listening``. Durations become whole frames, rounded up.

``frame_seconds`` is the LLM's audio frame: 0.12 s for the tiny models (60 ms SenseVoice frames, projector
downsampling 2), 0.08 s for MinMo (12.5 Hz). ``threshold_db`` -45 and ``silence_timeout`` 0.5 s are the
calibration run's VAD (``calibration.md`` §4). ``min_barge_in`` 1.0 s: the built-in corpus's back-channels
("uh-huh", "mm-hmm", ...) in the 8 user voices at 130-200 wpm make voiced runs of up to 0.96 s here (0.12 s
frames, 0.1 s hangover), so a shorter minimum would stop the assistant for some of them. There are no
presets: nothing here depends on the model size.

Nothing is trained and ``hidden`` is not read: only its lengths count the frames. The logits are one-hot
like (``DECIDED_LOGIT`` on the decided class), so ``DuplexOutput.decisions()`` returns the decisions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from minmo_lightning.components.duplex_predictor.audio_frames import audio_of_frames, frame_hop
from torch import Tensor

from minmo_lightning.blocks import DuplexPredictor
from minmo_lightning.contracts import AudioBatch, DuplexFrames, DuplexOutput
from minmo_lightning.stream_state import StreamState

KEEP_LISTENING, RESPOND, STOP_SPEAKING = range(3)
#: logit of the decided class (the others get 0): probability 1 - 2e-9, so any threshold in (0, 1) agrees
DECIDED_LOGIT = 20.0
#: energy of a frame without samples, and the floor of every frame's energy
SILENT_DB = -100.0
#: ``barge_in_frames`` of a VAD that never decides ``stop_speaking`` (``min_barge_in=None``)
NEVER = torch.iinfo(torch.long).max


@dataclass
class VADState(StreamState):
    """Per row: ``quiet`` frames since the last loud frame (saturating at ``quiet_cap``), ``run`` voiced
    frames in a row (saturating), ``turn_open`` (a user turn awaits its ``respond``), ``spoke`` (the open
    turn held a voiced run of ``min_turn``), ``barged`` (the current run already decided ``stop_speaking``)."""

    quiet: Tensor
    run: Tensor
    turn_open: Tensor
    spoke: Tensor
    barged: Tensor
    quiet_cap: int = 0

    def reset(self, items: Tensor | list[int]) -> None:
        """Restarted rows begin in silence: ``quiet`` is saturated, not 0 (0 means "loud just now")."""
        super().reset(items)
        self.quiet[self.rows(items)] = self.quiet_cap


class VADDuplexPredictor(DuplexPredictor):
    """Energy VAD + silence timeout (+ minimum barge-in duration); see the module docstring."""

    def __init__(
        self,
        frame_seconds: float = 0.12,
        threshold_db: float = -45.0,
        silence_timeout: float = 0.5,
        min_barge_in: float | None = 1.0,
        hangover: float = 0.1,
        min_turn: float = 0.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if (
            frame_seconds <= 0
            or (min_barge_in is not None and min_barge_in < 0)
            or hangover < 0
            or min_turn < 0
        ):
            raise ValueError(
                "VADDuplexPredictor needs frame_seconds > 0 and min_barge_in, hangover, min_turn >= 0; got "
                f"{frame_seconds}, {min_barge_in}, {hangover}, {min_turn}"
            )
        self.frame_seconds = frame_seconds
        self.timeout_frames = self._frames(silence_timeout)
        self.barge_in_frames = NEVER if min_barge_in is None else max(1, self._frames(min_barge_in))
        self.hangover_frames = self._frames(hangover)
        self.min_turn_frames = self._frames(min_turn)
        if self.timeout_frames <= self.hangover_frames:
            raise ValueError(
                f"silence_timeout ({silence_timeout} s = {self.timeout_frames} frames) must outlast the "
                f"hangover ({hangover} s = {self.hangover_frames} frames), or a turn would end while voiced"
            )

    def _frames(self, seconds: float) -> int:
        return math.ceil(seconds / self.frame_seconds - 1e-9)

    def forward(self, frames: DuplexFrames) -> DuplexOutput:
        return self.step(frames, self.init_state(frames.hidden.values.shape[0]))

    def init_state(self, batch_size: int, options: None = None) -> VADState:
        """Fresh sessions, in silence. There are no stream options."""
        if options is not None:
            raise ValueError(
                f"{type(self).__name__} takes no stream options; its settings are constructor args"
            )
        state = VADState(
            batch_size=batch_size,
            quiet=torch.zeros(batch_size, dtype=torch.long),
            run=torch.zeros(batch_size, dtype=torch.long),
            turn_open=torch.zeros(batch_size, dtype=torch.bool),
            spoke=torch.zeros(batch_size, dtype=torch.bool),
            barged=torch.zeros(batch_size, dtype=torch.bool),
            quiet_cap=self.timeout_frames,
        )
        state.reset(torch.ones(batch_size, dtype=torch.bool))
        return state

    @torch.no_grad()
    def step(self, chunk: DuplexFrames, state: VADState) -> DuplexOutput:
        """Decide the chunk's frames in order; the chunk's audio starts at its first frame."""
        decisions = self.decide(chunk, state)
        logits = torch.nn.functional.one_hot(decisions, len(self.CLASSES)).float() * DECIDED_LOGIT
        return DuplexOutput(logits.to(chunk.hidden.values.device), chunk.hidden.lengths)

    @torch.no_grad()
    def decide(self, chunk: DuplexFrames, state: VADState, answered: Tensor | None = None) -> Tensor:
        """The chunk's decisions [B, n] (on the CPU). ``answered`` [B, n]: frames where something else
        (a trained predictor beside this one) answered the user, which closes the user turn open there."""
        lengths = chunk.hidden.lengths.to(state.quiet.device)
        batch, count = chunk.hidden.values.shape[:2]
        if batch != state.batch_size:
            raise ValueError(f"chunk has {batch} rows but the state holds {state.batch_size} sessions")
        audio = audio_of_frames(type(self).__name__, chunk.audio, lengths, self.frame_seconds)
        loud = self.frame_energy_db(audio, count) >= self.hparams.threshold_db
        assistant = chunk.assistant_speaking
        if assistant is None:
            assistant = torch.zeros(batch, count, dtype=torch.bool)
        elif assistant.shape != (batch, count):
            raise ValueError(
                f"assistant_speaking must be [batch, frames] = {(batch, count)}, got {tuple(assistant.shape)}"
            )
        assistant = assistant.bool().cpu()
        answered = torch.zeros(batch, count, dtype=torch.bool) if answered is None else answered.bool().cpu()
        decisions = torch.full((batch, count), KEEP_LISTENING, dtype=torch.long)
        for t in range(count):
            decisions[:, t] = self._advance(state, loud[:, t], assistant[:, t], t < lengths, answered[:, t])
        return decisions

    def _advance(
        self, state: VADState, loud: Tensor, assistant: Tensor, active: Tensor, answered: Tensor
    ) -> Tensor:
        """One frame for every row (rows not ``active`` keep their state); returns the decisions [B]."""
        quiet = torch.where(loud, 0, (state.quiet + 1).clamp(max=state.quiet_cap))
        voiced = quiet <= self.hangover_frames
        run = torch.where(
            voiced, (state.run + 1).clamp(max=max(self.barge_in_frames, self.min_turn_frames)), 0
        )
        barged = state.barged & voiced
        stop = assistant & (run >= self.barge_in_frames) & ~barged
        turn_open = state.turn_open | (loud & ~assistant) | stop
        spoke = (state.spoke | (run >= self.min_turn_frames)) & turn_open
        ended = turn_open & (quiet >= self.timeout_frames)
        respond = ended & spoke
        still_open = turn_open & ~ended & ~answered
        for name, value in (
            ("quiet", quiet),
            ("run", run),
            ("barged", barged | stop),
            ("turn_open", still_open),
            ("spoke", spoke & still_open),
        ):
            setattr(state, name, torch.where(active, value, getattr(state, name)))
        decided = torch.where(stop, STOP_SPEAKING, torch.where(respond, RESPOND, KEEP_LISTENING))
        return torch.where(active, decided, KEEP_LISTENING)

    def frame_energy_db(self, audio: AudioBatch, frames: int) -> Tensor:
        """[B, frames] energy per frame in dB full scale (mean square over the frame's valid samples)."""
        hop = frame_hop(self.frame_seconds, audio.sample_rate)
        size = frames * hop
        valid = audio.mask.float()

        def framed(x: Tensor) -> Tensor:
            x = x[:, :size]
            return torch.nn.functional.pad(x, (0, size - x.shape[1])).unflatten(1, (frames, hop))

        power = framed(audio.waveform.float() * valid).square().sum(-1) / framed(valid).sum(-1).clamp(min=1)
        return (10 * torch.log10(power.clamp(min=1e-10))).clamp(min=SILENT_DB).cpu()
