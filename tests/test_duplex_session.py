"""DuplexSession on scripted timelines: a real tiny MinMo (random weights) whose decisions are forced through
the session's decision hook, so each test checks what the session does with a decision."""

from __future__ import annotations

import pytest
import torch
from builders import speaking_minmo, tiny_minmo
from minmo_lightning.components.duplex_predictor.transformer import TransformerDuplexPredictor
from minmo_lightning.components.duplex_predictor.vad import VADDuplexPredictor

from minmo_lightning.contracts import AudioBatch
from minmo_lightning.duplex import KEEP_LISTENING, RESPOND, STOP_SPEAKING, DuplexSession
from minmo_lightning.generation import TextSamplingConfig
from minmo_lightning.streaming import SpeechResponder


@pytest.fixture(scope="module")
def model():
    predictor = TransformerDuplexPredictor.from_preset("tiny", input_dim=64)
    return speaking_minmo(token2wav=True, duplex_predictor=predictor)


def scripted(plan: dict[int, int]):
    """A decision hook: chunk index -> the decision of that chunk's last frame; keep listening elsewhere."""
    seen = []

    def hook(decisions: torch.Tensor, end: float) -> torch.Tensor:
        forced = torch.full_like(decisions, KEEP_LISTENING)
        if len(seen) in plan:
            forced[:, -1] = plan[len(seen)]
        seen.append(end)
        return forced

    return hook


def run(session: DuplexSession, chunks: int, seed: int = 0):
    torch.manual_seed(seed)
    size = session.listener.chunk_samples
    steps = []
    for _ in range(chunks):
        audio = AudioBatch(
            0.05 * torch.randn(session.batch_size, size), torch.full((session.batch_size,), size), 16000
        )
        steps.append(session.push(audio))
    return steps


def kinds(steps, kind: str) -> list[tuple[int, float]]:
    return [(i, e.seconds) for i, s in enumerate(steps) for e in s.events if e.kind == kind]


def test_answer_starts_at_the_turn_end_and_plays_on_the_input_timeline(model) -> None:
    session = DuplexSession(
        model, text_config=TextSamplingConfig(max_new_tokens=12), decision_hook=scripted({3: RESPOND})
    )
    steps = run(session, 20)
    chunk = session.listener.chunk_seconds
    assert kinds(steps, "turn_start") == [(3, pytest.approx(4 * chunk))]
    audio = torch.cat([s.audio.waveform for s in steps], dim=1)
    samples = round(chunk * session.out_rate)
    assert audio.shape == (1, 20 * samples)  # the assistant channel has the input's duration
    assert audio[:, : 4 * samples].abs().max() == 0  # silent until the decision at the end of chunk 3
    assert audio[:, 4 * samples :].abs().max() > 0  # the answer plays from the next chunk on
    assert kinds(steps, "turn_end"), "a 12-token answer finishes within 20 chunks"
    assert all(e.compute_seconds > 0 for s in steps for e in s.events)


def test_barge_in_stops_the_answer_within_one_chunk(model) -> None:
    session = DuplexSession(
        model,
        text_config=TextSamplingConfig(max_new_tokens=40),
        decision_hook=scripted({1: RESPOND, 4: STOP_SPEAKING}),
    )
    steps = run(session, 9)
    assert [i for i, _ in kinds(steps, "interrupted")] == [4]
    assert all(s.audio.waveform.abs().max() == 0 for s in steps[5:])  # nothing plays after the stop
    assert steps[3].audio.waveform.abs().max() > 0


def test_back_channel_and_a_stop_while_silent_change_nothing(model) -> None:
    """keep_listening during the answer lets it go on; stop_speaking while silent is a no-op."""
    session = DuplexSession(
        model,
        text_config=TextSamplingConfig(max_new_tokens=40),
        decision_hook=scripted({0: STOP_SPEAKING, 1: RESPOND}),
    )
    steps = run(session, 6)
    assert not kinds(steps, "interrupted") and kinds(steps, "turn_start")
    assert all(s.audio.waveform.abs().max() > 0 for s in steps[2:6])


def test_no_decision_no_answer(model) -> None:
    session = DuplexSession(model, decision_hook=scripted({}))
    steps = run(session, 6)
    assert not kinds(steps, "turn_start") and all(s.audio.waveform.abs().max() == 0 for s in steps)


def test_second_turn_sees_the_first_in_its_context(model, monkeypatch) -> None:
    """The second answer's prompt holds the first answer's tokens and the turn's close, in that order; its
    voice decoder's query reads the user's turn after the first answer (before it: the whole context)."""
    prompts, turns, spoken = [], [], []
    stream = SpeechResponder.stream
    monkeypatch.setattr(
        SpeechResponder,
        "stream",
        lambda self, embeds, mask, forced=None, turn_mask=None: (
            prompts.append(embeds[0])
            or turns.append(turn_mask[0])
            or stream(self, embeds, mask, forced, turn_mask)
        ),
    )
    end_response = DuplexSession._end_response
    monkeypatch.setattr(
        DuplexSession,
        "_end_response",
        lambda self, row, at, interrupted: (
            spoken.append(list(self.responses[row].text_ids)) or end_response(self, row, at, interrupted)
        ),
    )
    session = DuplexSession(
        model,
        text_config=TextSamplingConfig(max_new_tokens=6),
        decision_hook=scripted({1: RESPOND, 14: RESPOND}),
    )
    steps = run(session, 16)
    assert len(kinds(steps, "turn_start")) == 2 and len(prompts) == 2 and spoken
    first_turn = session.model.llm.embed(torch.tensor([spoken[0] + session.turns.assistant_close]))[0]
    second = prompts[1]
    found = [
        i
        for i in range(len(second) - len(first_turn) + 1)
        if torch.allclose(second[i : i + len(first_turn)], first_turn)
    ]
    assert found and not any(
        torch.allclose(prompts[0][i : i + len(first_turn)], first_turn)
        for i in range(len(prompts[0]) - len(first_turn) + 1)
    )
    assert bool(turns[0].all())
    user_turn = found[-1] + len(spoken[0])  # the close opens the user's next turn
    assert not turns[1][:user_turn].any() and bool(turns[1][user_turn:].all())


def test_batch_rows_are_independent(model) -> None:
    def only_row_1_answers(decisions: torch.Tensor, end: float) -> torch.Tensor:
        forced = torch.full_like(decisions, KEEP_LISTENING)
        if round(end / session.listener.chunk_seconds) == 2:
            forced[1, -1] = RESPOND
        return forced

    session = DuplexSession(
        model,
        batch_size=2,
        text_config=TextSamplingConfig(max_new_tokens=8),
        decision_hook=only_row_1_answers,
    )
    steps = run(session, 6)
    assert all(s.audio.waveform[0].abs().max() == 0 for s in steps)
    assert any(s.audio.waveform[1].abs().max() > 0 for s in steps)


def test_context_stays_bounded_over_a_long_session(model) -> None:
    session = DuplexSession(model, max_context_seconds=1.0, decision_hook=scripted({}))
    run(session, 40)
    window = round(1.0 / session.listener.frame_seconds)
    assert len(session.recent[0]) <= window and session.mask.shape[1] <= len(session.header) + 2 * window


def test_vad_baseline_plugs_into_the_same_session(model) -> None:
    session = DuplexSession(
        model,
        predictor=VADDuplexPredictor(frame_seconds=0.08),
        text_config=TextSamplingConfig(max_new_tokens=4),
    )
    size = session.listener.chunk_samples
    loud = AudioBatch(0.3 * torch.randn(1, size), torch.tensor([size]), 16000)
    quiet = AudioBatch(torch.zeros(1, size), torch.tensor([size]), 16000)
    steps = [session.push(loud) for _ in range(5)] + [session.push(quiet) for _ in range(6)]
    assert kinds(steps, "turn_start"), "silence after speech past the timeout -> respond"


def test_a_model_without_predictor_names_the_fix() -> None:
    with pytest.raises(ValueError, match="--predictor vad"):
        DuplexSession(tiny_minmo())
