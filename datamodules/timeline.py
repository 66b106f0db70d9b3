"""Full-duplex sessions: utterances placed on a two-channel timeline, and MinMo's labelling rules.

Rules (MinMo §3.3; ``spec.md`` §1.5):

- assistant turn-taking: the end of a user turn is where the assistant takes the turn -> ``respond``;
- user barge-in: the user starts talking T ~ N(0.6, 0.4^2) s into assistant speech -> ``stop_speaking``,
  and the assistant's audio ends a short reaction time later;
- mid-turn user pauses are not turn ends (``keep_listening``). A pause falls inside a sentence (the words
  so far are unfinished) or between two sentences; the piece before it is read with continuation intonation
  (a trailing comma). A sentence followed by a pause is a statement, never a question: espeak reads a
  question's final rise and a comma's continuation nearly alike (final F0 98 vs 93 Hz against 80 Hz for a
  full stop), so a finished question followed by silence is a turn end to any listener;
- user back-channels ("uh-huh") during assistant speech do not stop it (``keep_listening``).

Events are the source of truth; ``frame_labels`` turns them into per-frame classes at any frame rate,
so the stored labels can be recomputed for a predictor with another frame rate.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from minmo_lightning.datamodules.corpus_text import (
    BACKCHANNELS,
    FOLLOW_UPS,
    Exchange,
    draw_exchange,
    punctuate,
)

LABELS: tuple[str, ...] = ("keep_listening", "respond", "stop_speaking")
"""Frame classes, in the order of ``DuplexPredictor.CLASSES``."""
KEEP_LISTENING, RESPOND, STOP_SPEAKING = 0, 1, 2
EVENT_LABELS: dict[str, int] = {"turn_end": RESPOND, "barge_in": STOP_SPEAKING}
"""Event types that put a decision on the frames; all other events are context (``keep_listening``)."""
EVENT_TYPES = ("user_speech", "pause", "turn_end", "assistant_speech", "barge_in", "backchannel")
PAUSE_KINDS = ("mid_sentence", "between_sentences")
"""A ``pause`` event's ``text``: inside a sentence (the words are unfinished), or after a statement (only
the continuation intonation says more is coming)."""


def frame_labels(
    events: list[dict],
    duration: float,
    frame_rate: float,
    label_span: float,
    stop_delay: float = 0.0,
    respond_until_answer: bool = False,
) -> np.ndarray:
    """Per-frame classes (int64) of a session of ``duration`` s.

    Frame ``k`` covers ``[k / frame_rate, (k + 1) / frame_rate)``. A ``turn_end`` at time t labels the
    frame containing t, a ``barge_in`` at t the frame containing t + ``stop_delay``, and each the following
    frames up to ``label_span`` s in total (at least one frame); everything else is ``keep_listening``.

    ``stop_delay`` asks for the stop once that much of the user's speech is heard: its first syllable
    alone cannot tell an interruption from a back-channel ("uh-huh"), which must not stop the assistant.
    ``respond_until_answer`` holds ``respond`` from a turn end until the assistant's next speech starts
    (when that is later than ``label_span``): the floor stays the assistant's through the whole gap, so a
    predictor that missed the turn end still learns to answer the silence after it.
    """
    count = math.ceil(duration * frame_rate - 1e-9)
    labels = np.zeros(count, dtype=np.int64)
    span = max(1, round(label_span * frame_rate))
    answers = sorted(e["start"] for e in events if e["type"] == "assistant_speech")
    for event in events:
        label = EVENT_LABELS.get(event["type"])
        if label is not None:
            at = event["start"] + (stop_delay if label == STOP_SPEAKING else 0.0)
            first = min(int(at * frame_rate + 1e-9), count - 1)
            last = first + span
            if label == RESPOND and respond_until_answer:
                answer = next((t for t in answers if t >= at), None)
                if answer is not None:
                    last = max(last, int(answer * frame_rate + 1e-9))
            labels[first:last] = label
    return labels


@dataclass(frozen=True)
class DuplexConfig:
    """Timeline sampling parameters (seconds unless noted)."""

    min_seconds: float = 20.0
    max_seconds: float = 60.0
    barge_in_prob: float = 0.3
    barge_in_mean: float = 0.6
    barge_in_std: float = 0.4
    backchannel_prob: float = 0.4
    multi_piece_prob: float = 0.5
    mid_sentence_prob: float = 0.5
    pause: tuple[float, float] = (0.3, 0.8)
    response_gap: tuple[float, float] = (0.2, 0.7)
    next_turn_gap: tuple[float, float] = (0.3, 1.2)
    stop_latency: tuple[float, float] = (0.1, 0.3)
    noise_dbfs: tuple[float, float] = (-65.0, -50.0)

    def __post_init__(self) -> None:
        if not 0 < self.min_seconds < self.max_seconds:
            raise ValueError(
                f"duplex sessions need 0 < min_seconds < max_seconds, got {self.min_seconds}, {self.max_seconds}"
            )


@dataclass
class Session:
    """Two mono float32 channels at ``sample_rate``, the events, and the duration in seconds."""

    user: np.ndarray
    assistant: np.ndarray
    events: list[dict]
    duration: float
    sample_rate: int


Speaker = Callable[[str], np.ndarray]
"""Text -> float32 waveform at the session's sample rate."""


class _Track:
    """One channel being laid out: (start sample, waveform) pieces."""

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self.pieces: list[tuple[int, np.ndarray]] = []

    def add(self, start: float, wave: np.ndarray) -> float:
        """Place ``wave`` at ``start`` s; returns its end time."""
        offset = round(start * self.sample_rate)
        self.pieces.append((offset, wave))
        return (offset + len(wave)) / self.sample_rate

    def render(self, length: int) -> np.ndarray:
        out = np.zeros(length, dtype=np.float32)
        for offset, wave in self.pieces:
            end = min(length, offset + len(wave))
            if end > offset:  # a piece placed past the session's end is cut away entirely
                out[offset:end] += wave[: end - offset]
        return out


def _event(kind: str, start: float, end: float, text: str = "") -> dict:
    return {"type": kind, "start": round(start, 4), "end": round(end, 4), "text": text}


def _fade_out(wave: np.ndarray, keep: int, sample_rate: int) -> np.ndarray:
    """First ``keep`` samples with a 20 ms linear fade (how a stopped playback ends)."""
    cut = wave[:keep].copy()
    fade = min(len(cut), int(0.02 * sample_rate))
    if fade:
        cut[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    return cut


def build_session(
    rng: random.Random, speak_user: Speaker, speak_assistant: Speaker, config: DuplexConfig, sample_rate: int
) -> Session:
    """Alternate user turns and assistant replies until the drawn length is reached (see module doc)."""
    sr = sample_rate
    target = rng.uniform(config.min_seconds, config.max_seconds)
    limit = config.max_seconds - 0.3  # room for the closing silence
    user, assistant = _Track(sr), _Track(sr)
    events: list[dict] = []
    t = rng.uniform(0.3, 1.0)
    end_time = t
    barged_in = False
    while t < target or barged_in or not events:  # a barge-in always gets the user turn it opens
        # ---- the user's turn: 1-3 pieces; all but the last end in a comma (continuation intonation)
        turn = draw_user_turn(rng, config)
        pieces = [(text, speak_user(spoken)) for text, spoken in turn.pieces]
        pauses = [(rng.uniform(*config.pause), kind) for kind in turn.pause_kinds]
        answer = turn.exchange.answer + ". " + rng.choice(FOLLOW_UPS) + "."
        reply = speak_assistant(answer)
        gap = rng.uniform(*config.response_gap)
        turn_length = sum(len(w) for _, w in pieces) / sr + sum(seconds for seconds, _ in pauses)
        if events and t + turn_length + gap + len(reply) / sr > limit:
            if barged_in:  # the barge-in already started: keep the user's turn, end the session after it
                end_time = max(end_time, _place_user_turn(user, events, t, pieces, pauses))
            break
        turn_end = _place_user_turn(user, events, t, pieces, pauses)
        # ---- the assistant's reply
        start = turn_end + gap
        reply_length = len(reply) / sr
        # A barge-in opens a user turn, so only where one more turn and reply still fit the session.
        room = limit - (start + 20.0)
        barged_in = rng.random() < config.barge_in_prob and reply_length > 1.0 and room > 0
        if barged_in:
            delay = min(max(rng.gauss(config.barge_in_mean, config.barge_in_std), 0.1), reply_length - 0.5)
            barge = start + delay
            stop = barge + rng.uniform(*config.stop_latency)
            reply = _fade_out(reply, round((stop - start) * sr), sr)
            end = assistant.add(start, reply)
            events.append(_event("assistant_speech", start, end, answer))
            events.append(_event("barge_in", barge, barge))
            t, end_time = barge, end
            continue
        end = assistant.add(start, reply)
        events.append(_event("assistant_speech", start, end, answer))
        if rng.random() < config.backchannel_prob and reply_length > 2.0:
            _place_backchannels(rng, user, events, speak_user, start + 0.6, end - 0.6)
        t, end_time = end + rng.uniform(*config.next_turn_gap), end
    events.sort(key=lambda e: (e["start"], e["end"]))
    end_time = max([end_time] + [e["end"] for e in events])
    duration = min(config.max_seconds, max(config.min_seconds, end_time + rng.uniform(0.3, 0.8)))
    length = round(duration * sr)
    noise = 10 ** (rng.uniform(*config.noise_dbfs) / 20)
    noise_rng = np.random.default_rng(rng.getrandbits(32))
    user_audio = user.render(length) + noise * noise_rng.standard_normal(length).astype(np.float32)
    return Session(user_audio, assistant.render(length), events, length / sr, sr)


@dataclass(frozen=True)
class UserTurn:
    """A user turn as text: the exchange the assistant answers (the turn's last sentence), the turn's
    sentences in order, and its pieces between pauses as (transcript, text read aloud)."""

    exchange: Exchange
    sentences: tuple[str, ...]
    pieces: tuple[tuple[str, str], ...]

    @property
    def pause_kinds(self) -> list[str]:
        """Per pause (after each piece but the last), one of ``PAUSE_KINDS``: whether the words so far end
        a sentence."""
        ends = set(itertools.accumulate(len(sentence.split()) for sentence in self.sentences))
        said = itertools.accumulate(len(text.split()) for text, _ in self.pieces[:-1])
        return [PAUSE_KINDS[n in ends] for n in said]


def draw_user_turn(rng: random.Random, config: DuplexConfig) -> UserTurn:
    """With ``multi_piece_prob`` the turn holds one or two mid-turn pauses, each inside a sentence with
    ``mid_sentence_prob`` (at a word boundary, every piece two words at least) or else after one more
    sentence said first (a statement: see the module doc)."""
    exchange = draw_exchange(rng)
    if rng.random() >= config.multi_piece_prob:
        spoken = punctuate(exchange.user, exchange.question)
        return UserTurn(exchange, (exchange.user,), ((exchange.user, spoken),))
    inside = [rng.random() < config.mid_sentence_prob for _ in range(rng.randint(1, 2))]
    sentences = [_draw_statement(rng).user for _ in range(inside.count(False))] + [exchange.user]
    cuts: set[tuple[int, int]] = set()  # (sentence, words before the cut)
    for _ in range(inside.count(True)):
        free = [
            (i, k)
            for i, sentence in enumerate(sentences)
            for k in range(2, len(sentence.split()) - 1)
            if not {(i, k - 1), (i, k), (i, k + 1)} & cuts
        ]
        if free:  # a short sentence may leave no word boundary with two words on either side
            cuts.add(rng.choice(free))
    pieces = []
    for i, sentence in enumerate(sentences):
        words = sentence.split()
        bounds = [0, *sorted(k for j, k in cuts if j == i), len(words)]
        pieces += [" ".join(words[a:b]) for a, b in itertools.pairwise(bounds)]
    last = len(pieces) - 1
    spoken = [punctuate(text, exchange.question, final=n == last) for n, text in enumerate(pieces)]
    return UserTurn(exchange, tuple(sentences), tuple(zip(pieces, spoken, strict=True)))


def _draw_statement(rng: random.Random) -> Exchange:
    for _ in range(100):
        exchange = draw_exchange(rng)
        if not exchange.question:
            return exchange
    raise RuntimeError("the corpus grammar drew no statement in 100 tries")


def _place_user_turn(
    track: _Track,
    events: list[dict],
    start: float,
    pieces: list[tuple[str, np.ndarray]],
    pauses: list[tuple[float, str]],
) -> float:
    t = start
    for i, (text, wave) in enumerate(pieces):
        end = track.add(t, wave)
        events.append(_event("user_speech", t, end, text))
        if i < len(pauses):
            seconds, kind = pauses[i]
            events.append(_event("pause", end, end + seconds, kind))
            end += seconds
        t = end
    events.append(_event("turn_end", t, t))
    return t


def _place_backchannels(
    rng: random.Random, track: _Track, events: list[dict], speak: Speaker, earliest: float, latest: float
) -> None:
    """One or two back-channels inside ``[earliest, latest]`` without overlapping each other."""
    t = earliest
    for _ in range(rng.randint(1, 2)):
        text = rng.choice(BACKCHANNELS)
        wave = speak(text + ".")
        start = rng.uniform(t, t + 1.0)
        if start + len(wave) / track.sample_rate > latest:
            return
        end = track.add(start, wave)
        events.append(_event("backchannel", start, end, text))
        t = end + 0.3
