"""Where Full-Duplex-Bench v1 samples are cut from a built-in duplex session (``datamodules/timeline.py``).

The model hears one channel only, the user's, so every cut holds the event of interest and nothing that only
makes sense beside the assistant's own turn (a barge-in or a back-channel reacts to it). Times are session
seconds here; ``Cut.files`` holds the FDB metadata with times on the cut's own timeline (0 = cut start),
rounded to 0.1 ms like the events. A cut never starts or ends inside user speech: a lead-in is at most
``LEAD`` s of the user's silence before the first speech the cut holds, and a tail runs to the next user
speech (or back-channel), at most ``TAIL_MAX`` s after the event of interest.

- **pause_handling**, one sample per ``pause`` event: from the lead-in before the piece the user pauses
  after, to the end of the piece that continues the turn (no tail, so a correct answer to the real turn end
  cannot appear in the output). Any take-over is wrong. ``pause.json``: ``[{"text": "[PAUSE]",
  "timestamp": [pause start, pause end]}]`` (FDB ships it; the evaluator does not read it).
- **smooth_turn_taking**, one sample per ``turn_end``: from the lead-in before the turn's last piece (its
  earlier pieces and pauses belong to pause handling: a take-over there would score latency 0) to the tail.
  ``turn_taking.json``: ``[{"text": "[TURN-TAKING]", "timestamp": [turn end, the corpus assistant's answer
  onset]}]``; FDB's evaluator reads ``timestamp[0]``.
- **user_interruption**, one sample per ``barge_in``: from the lead-in before the user turn the interrupted
  answer replied to (the context) to the tail after the interrupting turn ends. The model answers the
  context itself; the user then speaks over that answer, as in FDB's synthetic set. ``interrupt.json``:
  ``[{"context": context turn text, "interrupt": interrupting turn text, "timestamp": [barge-in, its turn
  end]}]``; the evaluator reads ``timestamp[1]`` and the judge crops the output there.
- **backchannel**, one sample per assistant answer with user back-channels: from the answer's onset (the
  user is silent there) to the tail after the last back-channel. Taking the turn on a back-channel is wrong.
  ``ROOT/backchannel/icc_gt_distribution.json`` maps each sample to the occupancy of its back-channels in
  0.2 s bins (``fdb.backchannel_histogram``).

Left out, and counted by reason (``LeftOut``): a cut whose tail is shorter than ``TAIL_MIN`` (a model needs
that much room after the event to say a turn's worth, >= 1 s or > 3 words, at all, or a silent model would
score as a perfect one), and a barge-in that no user turn follows (``build_session`` can end the session
right after a barge-in without placing the turn).

Where this differs from FDB's real recordings:

- the voices are espeak-ng, the background a faint Gaussian noise, and every turn is a short command;
- FDB's pause and turn-taking samples are human speech (Candor) with natural hesitations; ours pause inside a
  sentence or after a statement, the words before the pause read with continuation intonation (a trailing
  comma), and never hesitate ("um");
- FDB's backchannel task (ICC) plays a long user monologue and scores the model's *own* back-channels against
  the human listener's timing. MinMo never back-channels, so here the user back-channels (as the assistant
  speaks, which the input does not hold) and the figure is TOR, the rate at which the model takes a
  back-channel for a turn: FDB v1.5's user back-channel case scored with v1's backchannel rules, except that
  v1.5's model is answering a question when the back-channel comes and ours hears nothing before it. Freq
  and JSD are computed against the user's own back-channel timing and mean little: expect freq ~0, JSD ~1;
- FDB's interruptions are one sentence spoken at a scripted time over the model's answer; ours are whole user
  turns (possibly with pauses) at the time the user barged in on the corpus assistant, whose answer the input
  does not hold; the model's own answer may end before, or start after, that time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from minmo_lightning.evaluation.fdb import backchannel_histogram

#: longest silence kept before the first user speech of a cut (s)
LEAD = 0.5
#: longest silence kept after the event of interest (s)
TAIL_MAX = 4.0
#: a cut with less silence than this after the event of interest is left out (s)
TAIL_MIN = 2.0
#: two event times this close are the same instant (the events are rounded to 0.1 ms one by one)
SAME_TIME = 2e-3
USER_ACTIVITY = ("user_speech", "backchannel")


@dataclass(frozen=True)
class Span:
    """One event of a session (``timeline.EVENT_TYPES``), session seconds."""

    kind: str
    start: float
    end: float
    text: str = ""


@dataclass(frozen=True)
class Turn:
    """A user turn: its pieces in order (pauses between them), ending at a ``turn_end``."""

    pieces: tuple[Span, ...]

    @property
    def start(self) -> float:
        return self.pieces[0].start

    @property
    def end(self) -> float:
        return self.pieces[-1].end

    @property
    def text(self) -> str:
        return " ".join(p.text for p in self.pieces)


@dataclass(frozen=True)
class Cut:
    """One FDB sample: ``[start, end)`` of the session's user channel and its metadata files."""

    #: ordinal of the event of interest in its session (stable sample ids, whatever is left out)
    number: int
    start: float
    end: float
    #: seconds of user silence after the event of interest inside the cut; None where no tail is wanted
    tail: float | None
    #: file name -> JSON content, times on the cut's timeline
    files: dict
    #: FDB backchannel ground truth of this sample (``icc_gt_distribution.json`` value), else None
    gt_distribution: list[float] | None = None


class SessionEvents:
    """A session's events read as user turns, pauses, answers and the user's activity."""

    def __init__(self, session_id: str, events: list[dict], duration: float) -> None:
        self.id, self.duration = session_id, duration
        spans = sorted(
            (Span(e["type"], float(e["start"]), float(e["end"]), e.get("text") or "") for e in events),
            key=lambda s: (s.start, s.end),
        )
        self.spans = spans
        self.activity = [s for s in spans if s.kind in USER_ACTIVITY]
        self.pauses = [s for s in spans if s.kind == "pause"]
        self.answers = [s for s in spans if s.kind == "assistant_speech"]
        self.turns = [self._turn_ending(s.start) for s in spans if s.kind == "turn_end"]

    def of_kind(self, kind: str) -> list[Span]:
        return [s for s in self.spans if s.kind == kind]

    def _piece(self, test: Callable[[Span], bool], what: str) -> Span:
        for piece in self.spans:
            if piece.kind == "user_speech" and test(piece):
                return piece
        raise ValueError(f"session {self.id}: no user_speech {what}; the events are not a built-in timeline")

    def piece_ending(self, t: float) -> Span:
        return self._piece(lambda p: abs(p.end - t) < SAME_TIME, f"ends at {t}")

    def piece_starting(self, t: float) -> Span:
        return self._piece(lambda p: abs(p.start - t) < SAME_TIME, f"starts at {t}")

    def _turn_ending(self, t: float) -> Turn:
        """Walk back from the piece that ends at ``t`` across the pauses that precede each piece."""
        pieces = [self.piece_ending(t)]
        while pause := next((p for p in self.pauses if abs(p.end - pieces[0].start) < SAME_TIME), None):
            pieces.insert(0, self.piece_ending(pause.start))
        return Turn(tuple(pieces))

    def turn_starting(self, t: float) -> Turn | None:
        return next((turn for turn in self.turns if abs(turn.start - t) < SAME_TIME), None)

    def lead_in(self, speech_start: float) -> float:
        """Cut start: ``LEAD`` s before ``speech_start``, never into earlier user activity or before 0."""
        before = [a.end for a in self.activity if a.start < speech_start - SAME_TIME]
        return max(speech_start - LEAD, max(before, default=0.0), 0.0)

    def tail_end(self, t: float) -> float:
        """Cut end after the event at ``t``: ``TAIL_MAX`` s later, the next user activity, or the session end."""
        after = [a.start for a in self.activity if a.start > t + SAME_TIME]
        return min(t + TAIL_MAX, min(after, default=self.duration), self.duration)

    def answer_after(self, t: float) -> Span | None:
        return next((a for a in self.answers if a.start >= t - SAME_TIME), None)

    def answer_at(self, t: float) -> Span:
        """The assistant answer playing at ``t`` (a barge-in time)."""
        for answer in self.answers:
            if answer.start - SAME_TIME <= t <= answer.end + SAME_TIME:
                return answer
        raise ValueError(f"session {self.id}: a barge-in at {t} s interrupts no assistant_speech")


@dataclass(frozen=True)
class LeftOut:
    """An event of interest that gives no sample, and why."""

    number: int
    reason: str


SHORT_TAIL = f"under {TAIL_MIN:g} s of user silence after the event"
NO_INTERRUPTING_TURN = "no user turn follows the barge-in"


def _on(start: float) -> Callable[[float], float]:
    """Session time -> time on the cut that starts at ``start``."""
    return lambda t: round(t - start, 4)


def _cut(number: int, start: float, end: float, tail: float | None, **rest) -> Cut | LeftOut:
    if tail is not None and tail < TAIL_MIN:
        return LeftOut(number, SHORT_TAIL)
    return Cut(number, round(start, 4), round(end, 4), None if tail is None else round(tail, 4), **rest)


def pause_cuts(session: SessionEvents) -> Iterator[Cut | LeftOut]:
    for number, pause in enumerate(session.pauses):
        before, after = session.piece_ending(pause.start), session.piece_starting(pause.end)
        start = session.lead_in(before.start)
        at = _on(start)
        files = {"pause.json": [{"text": "[PAUSE]", "timestamp": [at(pause.start), at(pause.end)]}]}
        yield _cut(number, start, after.end, None, files=files)


def turn_taking_cuts(session: SessionEvents) -> Iterator[Cut | LeftOut]:
    for number, turn in enumerate(session.turns):
        start, end = session.lead_in(turn.pieces[-1].start), session.tail_end(turn.end)
        answer = session.answer_after(turn.end)
        at = _on(start)
        stamp = [at(turn.end), at(answer.start if answer else turn.end)]
        files = {"turn_taking.json": [{"text": "[TURN-TAKING]", "timestamp": stamp}]}
        yield _cut(number, start, end, end - turn.end, files=files)


def interruption_cuts(session: SessionEvents) -> Iterator[Cut | LeftOut]:
    for number, barge in enumerate(session.of_kind("barge_in")):
        interrupted = session.answer_at(barge.start)
        context = [t for t in session.turns if t.end <= interrupted.start + SAME_TIME][-1]
        interrupt = session.turn_starting(barge.start)
        if interrupt is None:
            yield LeftOut(number, NO_INTERRUPTING_TURN)
            continue
        start, end = session.lead_in(context.start), session.tail_end(interrupt.end)
        at = _on(start)
        meta = {
            "context": context.text,
            "interrupt": interrupt.text,
            "timestamp": [at(barge.start), at(interrupt.end)],
        }
        yield _cut(number, start, end, end - interrupt.end, files={"interrupt.json": [meta]})


def backchannel_cuts(session: SessionEvents) -> Iterator[Cut | LeftOut]:
    backchannels = session.of_kind("backchannel")
    answered = [a for a in session.answers if any(a.start <= b.start <= a.end for b in backchannels)]
    for number, answer in enumerate(answered):
        inside = [b for b in backchannels if answer.start <= b.start <= answer.end]
        start, end = answer.start, session.tail_end(inside[-1].end)
        at = _on(start)
        gt = backchannel_histogram([(at(b.start), at(b.end)) for b in inside], round(end - start, 4))
        yield _cut(number, start, end, end - inside[-1].end, files={}, gt_distribution=gt.tolist())


@dataclass(frozen=True)
class CutTask:
    """One FDB task built from sessions: the event types it needs and its cutting rule."""

    name: str
    needs: tuple[str, ...]
    cuts: Callable[[SessionEvents], Iterator[Cut | LeftOut]]
    #: why a corpus may lack the events (said in the error)
    hint: str = ""


CUT_TASKS: dict[str, CutTask] = {
    task.name: task
    for task in (
        CutTask("pause_handling", ("user_speech", "pause"), pause_cuts),
        CutTask("backchannel", ("assistant_speech", "backchannel"), backchannel_cuts),
        CutTask("smooth_turn_taking", ("user_speech", "turn_end"), turn_taking_cuts),
        CutTask(
            "user_interruption",
            ("user_speech", "turn_end", "assistant_speech", "barge_in"),
            interruption_cuts,
            "a barge-in needs 20 s of session left after it (timeline.build_session), so sessions of "
            "--duplex-max-seconds under ~21 never have one",
        ),
    )
}
