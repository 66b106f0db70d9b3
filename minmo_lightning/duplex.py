"""``DuplexSession``: MinMo in full duplex, listening while it speaks, for a batch of conversations.

Push the user channel chunk by chunk (``push``); per chunk the session

1. **listens**: the listen path (``listening.Listener``: voice encoder ``step`` -> projector ``step``) turns
   the chunk into LLM audio-frame embeddings, and the LLM appends them to its running KV cache, after any
   text the conversation produced since the last chunk (the context layout of ``duplex_context.py``, the
   same one stage 4 trains on);
2. **decides**: the duplex predictor ``step``s over the LLM states at the new audio frames: one decision
   per frame (``keep_listening`` / ``respond`` / ``stop_speaking``);
3. **speaks**: on ``respond`` (while silent) the assistant turn opens and ``SpeechResponder`` streams an
   answer (LLM text -> 5:15 voice decoder -> token2wav) from the conversation so far (the voice decoder's
   query reads the user's current turn: what the context gained since the assistant last spoke); each chunk the
   session writes as much of it as the playback needs, and the assistant channel plays it on the input
   timeline. On ``stop_speaking`` (while speaking) the answer is dropped within the chunk; back-channels
   come out as ``keep_listening`` and change nothing. A decision acts where it starts (held over several
   frames, it acts once). When the assistant stops (finished or interrupted)
   the text it spoke closes its turn in the context, so later turns see earlier ones.

**One clock.** A chunk covers ``[t, t + chunk_seconds)`` of the input; whatever the session computes for it
(decisions, text, speech, audio) is stamped with the chunk's end, decisions with their frame's end, and
each event also carries the wall-clock seconds its chunk took. The assistant channel has exactly
``chunk_seconds`` of audio per chunk, so its samples line up with the input's (Full-Duplex-Bench's layout).

**Bounded.** The listen path's caches are bounded by construction; the LLM context keeps the first user
header and the most recent ``max_context_seconds`` of the conversation: when a row's context outgrows
that, the session rebuilds the KV cache from the kept embeddings (positions restart after the header,
as in training), so memory and the cost per chunk stay flat over hours.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from minmo_lightning.blocks import DuplexPredictor
from minmo_lightning.contracts import AudioBatch, DuplexFrames, SequenceBatch
from minmo_lightning.generation import TextSamplingConfig, generate
from minmo_lightning.listening import Listener
from minmo_lightning.prompts import SPEECH_TASKS
from minmo_lightning.streaming import BlockClock, ResponseChunk, SpeechResponder

if TYPE_CHECKING:
    from minmo_lightning.model import MinMo

KEEP_LISTENING, RESPOND, STOP_SPEAKING = range(3)

#: decisions [B, n] and the chunk's end (seconds) -> the decisions the session acts on (a test hook)
DecisionHook = Callable[[Tensor, float], Tensor]


@dataclass
class DuplexEvent:
    """Something the session did, stamped on the input timeline (``seconds``) with the wall-clock compute
    of the chunk that produced it (``compute_seconds``).

    Kinds: ``decision`` (value: the class name; only the ones that are not ``keep_listening``),
    ``turn_start`` / ``turn_end`` (value: the text the assistant spoke, on ``turn_end``), ``interrupted``,
    ``text`` (value: the text of the tokens written), ``speech`` (value: the speech token ids),
    ``audio`` (value: the number of samples made), ``voice_chunk`` (value: the seconds each block of the
    speak path spent on one voice-decoder step: llm, output_projector, voice_token_lm, token2wav).
    """

    kind: str
    row: int
    seconds: float
    compute_seconds: float
    value: Any = None


@dataclass
class SessionStep:
    """One pushed chunk's outcome: its events, the predictor's decisions [B, n], the assistant channel for
    the chunk ([B, chunk samples] at the token2wav rate; None when the model has no token2wav) and the
    wall-clock seconds each part of the session spent on it (listen, llm, predictor, speak)."""

    events: list[DuplexEvent]
    decisions: Tensor
    audio: AudioBatch | None
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class _Response:
    """One row's answer in progress: the stream, the text and audio it produced, what is left to play."""

    chunks: Iterator[ResponseChunk] | None
    text_ids: list[int] = field(default_factory=list)
    queue: list[Tensor] = field(default_factory=list)
    done: bool = False

    def queued(self) -> int:
        return sum(len(q) for q in self.queue)

    def play(self, samples: int) -> Tensor:
        """The next ``samples`` of the answer (zeros past its end)."""
        out = torch.cat([*self.queue, torch.zeros(samples)])[:samples] if self.queue else torch.zeros(samples)
        rest = torch.cat(self.queue)[samples:] if self.queue else torch.zeros(0)
        self.queue = [rest] if len(rest) else []
        return out


class DuplexSession:
    """A batch of independent full-duplex conversations with one MinMo model (see the module docstring)."""

    def __init__(
        self,
        model: MinMo,
        batch_size: int = 1,
        predictor: DuplexPredictor | None = None,
        text_config: TextSamplingConfig | None = None,
        max_context_seconds: float = 60.0,
        decision_hook: DecisionHook | None = None,
    ) -> None:
        """
        Args:
            predictor: overrides the model's ``duplex_predictor`` (e.g. the VAD baseline).
            max_context_seconds: how much of the conversation the LLM context keeps (see "Bounded").
            decision_hook: sees and may replace each chunk's decisions before the session acts on them.
        """
        self.model = model
        self.predictor = predictor or model.duplex_predictor
        if self.predictor is None:
            raise ValueError(
                "this checkpoint has no duplex_predictor: train stage 4 (recipes/tiny/stage4_duplex.yaml), or use "
                "the silence-timeout baseline (`minmo chat --predictor vad`, DuplexSession(predictor=VADDuplexPredictor()))"
            )
        if model.voice_encoder is None or model.input_projector is None:
            raise ValueError(
                "a duplex session listens: the model needs a voice_encoder and an input_projector"
            )
        self.batch_size, self.decision_hook = batch_size, decision_hook
        self.listener = Listener(
            model.voice_encoder, model.input_projector, model.hparams.duplex_chunk_seconds
        )
        self.text_config = text_config or TextSamplingConfig(max_new_tokens=model.hparams.max_new_tokens)
        self.speaks = model.output_projector is not None and model.voice_token_lm is not None
        self.out_rate = model.token2wav.sample_rate if self.speaks and model.token2wav is not None else None
        self.turns = model.prompts.duplex_turns(SPEECH_TASKS["chat"].instruction)
        self.max_context = max(1, round(max_context_seconds / self.listener.frame_seconds))
        self.device = model.device
        self.reset()

    # ---- state -------------------------------------------------------------------------------------
    @torch.no_grad()
    def reset(self) -> None:
        """Start every conversation afresh."""
        batch, llm = self.batch_size, self.model.llm
        self.seconds = 0.0
        self.listen_state = self.listener.init_state(batch)
        self.predictor_state = self.predictor.init_state(batch)
        self.header = llm.embed(torch.tensor([self.turns.first_user], device=self.device))[0]
        self.recent = [self.header.new_zeros(0, self.header.shape[-1]) for _ in range(batch)]
        #: where each row's current user turn starts in ``recent``: after the text the assistant last spoke
        #: (None before its first answer: the whole conversation, header included)
        self.turn_start: list[int | None] = [None] * batch
        self.pending: list[list[int]] = [[] for _ in range(batch)]
        self.responses: list[_Response | None] = [None] * batch
        self.last_decision = [KEEP_LISTENING] * batch
        self._rebuild()

    def _rebuild(self) -> Tensor:
        """A fresh LLM cache over [header ; each row's kept context] (right padded); its last hidden states."""
        llm = self.model.llm
        rows = [torch.cat([self.header, r]) for r in self.recent]
        lengths = torch.tensor([len(r) for r in rows], device=self.device)
        embeds = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
        self.mask = (torch.arange(embeds.shape[1], device=self.device)[None] < lengths[:, None]).long()
        self.position = lengths.clone()
        self.cache = llm.new_cache()
        return llm(embeds, attention_mask=self.mask, cache=self.cache, logits_to_keep=1).hidden_states

    # ---- one chunk ---------------------------------------------------------------------------------
    @torch.no_grad()
    def push(self, chunk: AudioBatch) -> SessionStep:
        """Feed ``chunk_samples`` of user audio per row; returns what the session did in that time."""
        clock = BlockClock(self.device)
        start, end = self.seconds, self.seconds + self.listener.chunk_seconds
        frames = self.listener.step(chunk, self.listen_state)
        clock.mark("listen")
        timed = self.listener.chunk_frames
        hidden = self._append(frames, timed)
        clock.mark("llm")
        speaking = torch.tensor(
            [r is not None and r.chunks is not None for r in self.responses], device=self.device
        )
        decisions = self.predictor.step(
            DuplexFrames(
                SequenceBatch(hidden, torch.full((self.batch_size,), timed, device=self.device)),
                chunk,
                speaking[:, None].expand(-1, timed),
            ),
            self.predictor_state,
        ).decisions()
        clock.mark("predictor")
        if self.decision_hook is not None:
            decisions = self.decision_hook(decisions, end)
        audio = self._play()  # what was made before: it played while this chunk was heard
        events: list[DuplexEvent] = []
        frame_seconds = self.listener.frame_seconds
        for row in range(self.batch_size):
            for j, decision in enumerate(decisions[row].tolist()):
                at = start + (j + 1) * frame_seconds
                onset, self.last_decision[row] = decision != self.last_decision[row], decision
                if decision != KEEP_LISTENING:
                    events.append(DuplexEvent("decision", row, at, 0.0, self.predictor.CLASSES[decision]))
                if not onset:  # a decision held over several frames acts once
                    continue
                if decision == RESPOND and self.responses[row] is None:
                    events += self._start_response(row, at)
                elif decision == STOP_SPEAKING and self.responses[row] is not None:
                    events += self._end_response(row, at, interrupted=True)
        self._generate(events, end)
        clock.mark("speak")
        self.seconds = end
        spent = clock.elapsed()
        for event in events:
            event.compute_seconds = spent
        return SessionStep(events, decisions, audio, clock.take())

    def _append(self, frames: SequenceBatch, timed: int) -> Tensor:
        """Append each row's pending text, then its new frames, to the LLM context; the states at the timed
        frames [B, timed, D]."""
        llm = self.model.llm
        rows = []
        for row, (ids, new, count) in enumerate(zip(self.pending, frames.values, frames.lengths.tolist())):
            text = llm.embed(torch.tensor([ids], dtype=torch.long, device=self.device))[0]
            rows.append(torch.cat([text.to(new.dtype), new[:count]]))
            self.recent[row] = torch.cat([self.recent[row], rows[-1]])
        self.pending = [[] for _ in range(self.batch_size)]
        if max(len(r) for r in self.recent) > self.max_context:
            keep = self.max_context * 3 // 4  # rebuild once per quarter window, not every chunk
            dropped = [max(0, len(r) - keep) for r in self.recent]
            self.recent = [r[cut:] for r, cut in zip(self.recent, dropped)]
            self.turn_start = [
                None if start is None else max(0, start - cut) for start, cut in zip(self.turn_start, dropped)
            ]
            hidden, ends = self._rebuild(), self.position
        else:
            counts = torch.tensor([len(r) for r in rows], device=self.device)
            inputs = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
            valid = torch.arange(inputs.shape[1], device=self.device)[None] < counts[:, None]
            positions = self.position[:, None] + torch.arange(inputs.shape[1], device=self.device)[None]
            self.mask = torch.cat([self.mask, valid.long()], dim=1)
            hidden = llm(
                inputs, attention_mask=self.mask, cache=self.cache, position_ids=positions
            ).hidden_states
            self.position, ends = self.position + counts, counts
        index = ends[:, None] - timed + torch.arange(timed, device=self.device)[None]
        return hidden.gather(1, index[..., None].expand(-1, -1, hidden.shape[-1]))

    # ---- speaking ----------------------------------------------------------------------------------
    def _start_response(self, row: int, at: float) -> list[DuplexEvent]:
        """Open the assistant turn and start answering from the conversation so far."""
        llm, prompts = self.model.llm, self.model.prompts
        self.pending[row] += self.turns.assistant_open  # enters the context before the next chunk's audio
        opener = llm.embed(torch.tensor([self.turns.assistant_open], device=self.device))[0]
        prompt = torch.cat([self.header, self.recent[row], opener.to(self.header.dtype)])[None]
        mask = torch.ones(prompt.shape[:2], dtype=torch.long, device=self.device)
        if self.speaks:
            start = self.turn_start[row]
            turn = mask.bool()
            turn[:, : 0 if start is None else len(self.header) + start] = False
            responder = SpeechResponder(self.model, self.text_config, synthesize=self.out_rate is not None)
            self.responses[row] = _Response(responder.stream(prompt, mask, turn_mask=turn))
        else:  # a text-only model answers at once and says nothing aloud
            result = generate(llm, prompt, mask, prompts.end_id, prompts.pad_id, self.text_config)
            ids = [t for t in result.tokens[0, : int(result.lengths[0])].tolist() if t != prompts.end_id]
            self.responses[row] = _Response(None, ids, done=True)
        return [DuplexEvent("turn_start", row, at, 0.0)]

    def _end_response(self, row: int, at: float, interrupted: bool) -> list[DuplexEvent]:
        """Close the assistant turn: the text it spoke enters the context."""
        response, self.responses[row] = self.responses[row], None
        self.turn_start[row] = len(self.recent[row]) + len(self.pending[row]) + len(response.text_ids)
        self.pending[row] += response.text_ids + self.turns.assistant_close
        text = self.model.llm.tokenizer.decode(response.text_ids, skip_special_tokens=True).strip()
        events = [DuplexEvent("interrupted", row, at, 0.0)] if interrupted else []
        return events + [DuplexEvent("turn_end", row, at, 0.0, text)]

    @property
    def _chunk_out_samples(self) -> int:
        return round(self.listener.chunk_seconds * self.out_rate) if self.out_rate else 0

    def _play(self) -> AudioBatch | None:
        """The assistant channel over the current chunk: each row's queued answer audio, else silence."""
        if not self.out_rate:
            return None
        samples = self._chunk_out_samples
        channel = torch.zeros(self.batch_size, samples)
        for row, response in enumerate(self.responses):
            if response is not None:
                channel[row] = response.play(samples)
        return AudioBatch(channel, torch.full((self.batch_size,), samples), self.out_rate)

    def _generate(self, events: list[DuplexEvent], end: float) -> None:
        """Advance every answer until the next chunk's audio is queued; close the turns that have ended."""
        samples, tokenizer = self._chunk_out_samples, self.model.llm.tokenizer
        for row, response in enumerate(self.responses):
            if response is None:
                continue
            while not response.done and (not samples or response.queued() < samples):
                chunk = next(response.chunks, None)
                if chunk is None:
                    response.done = True
                    break
                events.append(DuplexEvent("voice_chunk", row, end, 0.0, chunk.timings))
                ids = chunk.text.tokens[0, : int(chunk.text.lengths[0])].tolist()
                response.text_ids += ids
                if ids:
                    events.append(DuplexEvent("text", row, end, 0.0, tokenizer.decode(ids)))
                speech = chunk.speech.tokens[0, : int(chunk.speech.lengths[0])].tolist()
                if speech:
                    events.append(DuplexEvent("speech", row, end, 0.0, speech))
                made = int(chunk.audio.lengths[0]) if chunk.audio is not None else 0
                if made:
                    response.queue.append(chunk.audio.waveform[0, :made].float().cpu())
                    events.append(DuplexEvent("audio", row, end, 0.0, made))
            if response.done and response.queued() == 0:
                events += self._end_response(row, end, interrupted=False)
