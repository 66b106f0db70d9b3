"""Streaming spoken responses: LLM text -> semantic vectors -> speech tokens -> audio, chunk by chunk.

MinMo §3.2: as the LLM samples text, every ``mix_ratio[0]`` (5) tokens become semantic vectors through
the output projector ([token embedding ; last-layer hidden], after the per-turn query); the voice token
LM reads them and writes ``mix_ratio[1]`` (15) speech tokens with its KV cache kept across chunks; each
batch of speech tokens goes straight to token2wav, which returns the audio that became final. When a
row's text ends (its last chunk holds fewer than 5 tokens), the responder says so with
``state.end_input``; the voice LM then reads the turn-of-speech token and the row writes speech alone
until end-of-speech, and token2wav flushes the row once its speech has ended.

Rows of a batch advance in lockstep (one LLM token per row per step), so every row still speaking has
exactly 5 new tokens at each chunk boundary; a row whose text ends mid-chunk hands over its tail at the
next boundary (up to 4 LLM steps later than it would alone). Greedy decoding gives the same text as
``generate`` and the same speech tokens as the teacher-forced voice decoder's argmax (tested).

First packet. MinMo's voice-decoder latency is ``5*d_llm + 15*d_lm + 15*d_syn``: 5 text tokens, the voice
LM's first 15 speech tokens, and token2wav voicing them. CosyVoice2's flow reads ``pre_lookahead_len`` (3)
tokens past a chunk before the chunk is final; with chunks counted from the first speech token, the first
chunk's look-ahead (tokens 15-17) would come from the voice LM's second step, after 5 more text tokens,
and the first audio would wait one whole voice-decoder step longer than the formula. So a token2wav stream
cuts its first chunk ``lookahead`` tokens short (12 tokens, their look-ahead the step's last 3) and every
later chunk on the same 15-token grid shifted by 3: each voice-LM step's 15 tokens complete one chunk
whose look-ahead came with them, and the first audio needs one step, as the formula says
(``flow_cache.stream_chunk_end``). The offline flow lays chunks out the same way, so streamed audio still
equals offline audio (``tests/test_first_packet.py``).

``compile=True`` runs the decode steps compiled (``compiled.py``: static KV caches, CUDA graphs on a GPU).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from minmo_lightning.compiled import set_decoding
from minmo_lightning.contracts import (
    AudioBatch,
    SemanticChunk,
    SequenceBatch,
    SpeechSampler,
    TokenBatch,
    VoiceDecoderInput,
    VoiceLMStreamOptions,
)
from minmo_lightning.generation import GeneratedStep, TextSamplingConfig, TextStream
from minmo_lightning.timing import synchronized_time


def turn_query(embeds: Tensor, hidden: Tensor, turn_mask: Tensor) -> SequenceBatch:
    """The voice decoder's per-turn query (MinMo §3.2): at each position of the current user turn
    (``turn_mask`` [B, T]), its input embedding beside the LLM's last-layer hidden state there (``embeds``,
    ``hidden`` [B, T, D]), left-aligned: ``[B, Q, 2D]``. The decoder reads the turn's instruction and audio
    unpooled. Training and streaming both build it here."""
    return SequenceBatch.packed(torch.cat([embeds, hidden.to(embeds.dtype)], -1), turn_mask)


@dataclass
class ResponseChunk:
    """What one voice-decoder step produced, with wall-clock seconds since the first text token."""

    text: TokenBatch  # the text tokens behind this chunk's semantic vectors (<= 5 per row)
    speech: TokenBatch  # speech tokens written by the voice token LM (<= 15 per row)
    audio: AudioBatch | None  # audio that token2wav made final (None without a token2wav block)
    finished: Tensor  # [B] the row reached end of speech
    elapsed: float  # seconds from the first sampled text token to the end of this chunk
    timings: dict[str, float] = field(default_factory=dict)  # seconds spent per block in this chunk
    text_cut: Tensor | None = None  # [B] the answer's text was cut at max_new_tokens (known once text ended)


@dataclass
class _TextBuffer:
    """Text steps since the last chunk boundary: token ids, input embeddings and hidden states."""

    steps: list[tuple[Tensor, Tensor, Tensor, Tensor]] = field(default_factory=list)

    def push(self, step: GeneratedStep, real: Tensor) -> None:
        self.steps.append((step.tokens, step.embedding, step.hidden, real))

    def pop(self, batch: int, width: int, like: Tensor) -> tuple[TokenBatch, Tensor, Tensor]:
        """Left-align each row's real tokens: ids, ``[B, n, D]`` embeddings and hidden states."""
        if not self.steps:
            empty = like.new_zeros(batch, 0, width)
            zero = torch.zeros(batch, dtype=torch.long, device=like.device)
            return TokenBatch(zero[:, None][:, :0], zero), empty, empty
        tokens, embeds, hidden, real = (torch.stack(t, 1) for t in zip(*self.steps))
        self.steps.clear()
        # real tokens are a prefix of each row's steps (a row only stops), so no reordering is needed
        lengths = real.sum(1)
        keep = real[..., None]
        return TokenBatch(tokens * real, lengths), embeds * keep, hidden * keep


class SpeechResponder:
    """Runs a MinMo model's LLM, output projector, voice token LM and (optional) token2wav as one stream."""

    def __init__(
        self,
        model,
        text_config: TextSamplingConfig | None = None,
        speech_sampler: SpeechSampler | None = None,
        generator: torch.Generator | None = None,
        synthesize: bool = True,
        max_speech_steps: int = 10_000,
        voice: Any = None,
        compile: bool | str | None = None,
    ) -> None:
        """``voice``: token2wav stream options for the speaker (``Token2Wav.voice_of``; None: its default).
        ``compile``: True (or a torch.compile mode) decodes with compiled steps, False eagerly, None as the
        blocks were last set (eager unless compiled before; ``compiled.set_decoding``)."""
        for slot in ("output_projector", "voice_token_lm"):
            if getattr(model, slot) is None:
                raise ValueError(f"a spoken response needs a {slot}; add it under model.init_args.{slot}")
        if compile is not None:
            set_decoding(model, compile)
        self.model = model
        self.text_config = text_config or TextSamplingConfig(max_new_tokens=model.hparams.max_new_tokens)
        self.speech_sampler, self.generator = speech_sampler, generator
        self.token2wav = model.token2wav if synthesize else None
        self.max_speech_steps = max_speech_steps
        self.voice = voice

    @torch.no_grad()
    def stream(
        self,
        inputs_embeds: Tensor,
        attention_mask: Tensor,
        forced_text: TokenBatch | None = None,
        turn_mask: Tensor | None = None,
    ) -> Iterator[ResponseChunk]:
        """Left-padded prompt embeddings -> ``ResponseChunk`` per voice-decoder step until every row ends.

        ``forced_text`` voices the given answer tokens instead of sampled ones (the LLM is teacher forced).
        ``turn_mask`` [B, T]: the current user turn's positions, which the voice decoder's query reads
        (``PromptBatch.turn_mask``; None: the whole prompt).
        """
        model = self.model
        llm, projector, voice_lm = model.llm, model.output_projector, model.voice_token_lm
        batch, per_chunk = inputs_embeds.shape[0], voice_lm.ratio.text
        text = TextStream(
            llm,
            inputs_embeds,
            attention_mask,
            model.prompts.end_id,
            model.prompts.pad_id,
            self.text_config,
            forced_text,
        )
        in_turn = attention_mask.bool() if turn_mask is None else turn_mask.to(attention_mask.device).bool()
        query = turn_query(inputs_embeds, text.prompt_states, in_turn)
        no_query = SequenceBatch(query.values[:, :0], torch.zeros_like(query.lengths))
        state = voice_lm.init_state(batch, VoiceLMStreamOptions(self.speech_sampler, self.generator))
        wav_state = self.token2wav.init_state(batch, self.voice) if self.token2wav is not None else None
        buffer = _TextBuffer()

        def voice_buffered_text() -> ResponseChunk:
            tokens, embeds, hidden = buffer.pop(batch, llm.hidden_size, inputs_embeds)
            fresh = ~state.started & ~state.finished
            # rows still talking always bring a full chunk, so a fresh row with none answered nothing
            state.retire(fresh & (tokens.lengths == 0))
            # the query is read once, before a row's first vectors, so it is projected only then
            read = query if bool(fresh.any()) else no_query
            inputs = VoiceDecoderInput(read.values, embeds, hidden, tokens.lengths, read.lengths)
            query_rows, semantic = projector.split(inputs, projector(inputs))
            prefix = None
            if query_rows.values.shape[1]:
                prefix = SequenceBatch(query_rows.values, torch.where(fresh, query_rows.lengths, 0))
            clock.mark("output_projector")
            state.end_input(tokens.lengths < per_chunk)  # a short chunk brings the last of the row's text
            speech = voice_lm.step(SemanticChunk(semantic, prefix), state)
            clock.mark("voice_token_lm")
            audio = None
            if wav_state is not None:
                wav_state.end_input(state.finished)
                audio = self.token2wav.step(speech, wav_state)
                clock.mark("token2wav")
            return ResponseChunk(
                tokens, speech, audio, state.finished.clone(), clock.elapsed(), clock.take(), text.cut.clone()
            )

        # the prompt is prefilled: the first text token is sampled from here on
        clock = BlockClock(inputs_embeds.device)

        for step in text:
            clock.mark("llm")
            buffer.push(step, step.active & (step.tokens != model.prompts.end_id))
            if len(buffer.steps) == per_chunk:
                yield voice_buffered_text()
        yield voice_buffered_text()  # every row's text has ended: tails and turn of speech
        for _ in range(self.max_speech_steps):
            if bool(state.finished.all()):
                return
            yield voice_buffered_text()
        raise RuntimeError(
            f"speech did not end within {self.max_speech_steps} voice-decoder steps; check the voice LM's "
            "max_token_text_ratio"
        )


class BlockClock:
    """Wall-clock seconds per block since the last chunk, and since the clock started.

    On CUDA it waits for the queued kernels before reading the time: a block's time is when its output
    exists, not when its kernels were launched (a chunk's audio is ready when it is yielded).
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.origin = self.last = self.now()
        self.spent: dict[str, float] = {}

    def now(self) -> float:
        return synchronized_time(self.device)

    def mark(self, what: str) -> None:
        now = self.now()
        self.spent[what] = self.spent.get(what, 0.0) + now - self.last
        self.last = now

    def take(self) -> dict[str, float]:
        spent, self.spent = self.spent, {}
        return spent

    def elapsed(self) -> float:
        return self.now() - self.origin
