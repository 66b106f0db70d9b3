"""Duplex predictors: streaming equals forward, the VAD's rules on a synthetic signal, the Transformer
predictor learns a turn-taking rule from features, presets, thresholds and input errors."""

from __future__ import annotations

import dataclasses
import math

import lightning as L
import pytest
import torch
from minmo_lightning.components.duplex_predictor.backstop import SilenceBackstop
from minmo_lightning.components.duplex_predictor.transformer import (
    TransformerDuplexPredictor,
    inverse_frequency_weights,
)
from minmo_lightning.components.duplex_predictor.vad import VADDuplexPredictor

from minmo_lightning.blocks import DuplexPredictor
from minmo_lightning.contracts import IGNORE_INDEX, AudioBatch, DuplexFrames, DuplexOutput, SequenceBatch
from minmo_lightning.registry import count_preset_parameters
from minmo_lightning.stream_state import StreamState

KEEP, RESPOND, STOP = 0, 1, 2
RATE = 16000
FRAME = 0.12  # the tiny preset's frame: 1920 samples
HOP = 1920


def tiny_transformer(**overrides) -> TransformerDuplexPredictor:
    model = TransformerDuplexPredictor.from_preset("tiny", **overrides).eval()
    with torch.no_grad():  # a non-zero distance bias, so order inside the window matters
        model.layer.distance_bias.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(1))
    return model


def random_frames(lengths: list[int], width: int = 128, seed: int = 0) -> DuplexFrames:
    """Hidden features, user audio with loud bursts, and assistant-speaking flags for rows of ``lengths``."""
    g = torch.Generator().manual_seed(seed)
    batch, frames = len(lengths), max(lengths)
    hidden = SequenceBatch(torch.randn(batch, frames, width, generator=g), torch.tensor(lengths))
    loud = torch.rand(batch, frames, generator=g) < 0.4
    gain = torch.where(loud, 0.1, 0.0005).repeat_interleave(HOP, dim=1)
    waves = [(gain[r] * torch.randn(frames * HOP, generator=g))[: n * HOP] for r, n in enumerate(lengths)]
    speaking = torch.rand(batch, frames, generator=g) < 0.5
    return DuplexFrames(hidden, AudioBatch.from_list(waves, RATE), speaking)


def chunk_of(frames: DuplexFrames, start: int, size: int) -> DuplexFrames:
    """Frames [start, start + size) of every row (fewer where a row ends), with the audio they cover."""
    lengths = (frames.hidden.lengths - start).clamp(0, size)
    hidden = SequenceBatch(frames.hidden.values[:, start : start + size], lengths)
    audio = AudioBatch(
        frames.audio.waveform[:, start * HOP : (start + size) * HOP],
        (frames.audio.lengths - start * HOP).clamp(0, size * HOP).clamp(max=lengths * HOP),
        RATE,
    )
    return DuplexFrames(hidden, audio, frames.assistant_speaking[:, start : start + size])


def streamed(predictor, frames: DuplexFrames, size: int) -> torch.Tensor:
    state = predictor.init_state(frames.hidden.values.shape[0])
    total = frames.hidden.values.shape[1]
    return torch.cat(
        [predictor.step(chunk_of(frames, s, size), state).logits for s in range(0, total, size)], 1
    )


def assert_valid_close(a: torch.Tensor, b: torch.Tensor, lengths: torch.Tensor) -> None:
    mask = torch.arange(a.shape[1])[None, :] < lengths[:, None]
    torch.testing.assert_close(a[mask], b[mask], atol=1e-5, rtol=1e-5)


PREDICTORS = {
    "transformer": tiny_transformer,
    "vad": lambda: VADDuplexPredictor(),
    "backstop": lambda: SilenceBackstop(tiny_transformer(), timeout=0.3).eval(),
}


# ---- streaming == forward ------------------------------------------------------------------------
@pytest.mark.parametrize("kind", PREDICTORS)
@pytest.mark.parametrize("size", [1, 3, 7, 150])
def test_streaming_equals_forward_for_any_chunking(kind: str, size: int) -> None:
    """Rows of different lengths, longer than the Transformer's 64-frame window (the cache bound is hit)."""
    predictor = PREDICTORS[kind]()
    frames = random_frames([150, 97, 1])
    full = predictor(frames)
    assert full.logits.shape == (3, 150, 3)
    assert_valid_close(streamed(predictor, frames, size), full.logits, frames.hidden.lengths)


def test_window_bounds_what_a_frame_sees() -> None:
    """A frame 64 or more frames back (the tiny window) changes nothing; one 63 back does."""
    model = tiny_transformer()
    frames = random_frames([100])
    base = model(frames).logits[0, 99]
    for back, changes in ((64, False), (63, True)):
        edited = frames.hidden.values.clone()
        edited[0, 99 - back] += 5.0
        logits = model(DuplexFrames(SequenceBatch(edited, frames.hidden.lengths))).logits[0, 99]
        assert (not torch.allclose(logits, base, atol=1e-6)) == changes


@pytest.mark.parametrize("kind", PREDICTORS)
def test_reset_restarts_one_row_and_leaves_the_others(kind: str) -> None:
    predictor = PREDICTORS[kind]()
    first, second = random_frames([40, 40, 40], seed=1), random_frames([40, 40, 40], seed=2)
    state = predictor.init_state(3)
    predictor.step(chunk_of(first, 0, 40), state)
    state.reset([1])
    # rows 0 and 2 go on with `first`; row 1 starts afresh on `second`
    mixed = DuplexFrames(
        SequenceBatch(torch.cat([first.hidden.values, first.hidden.values], 1), torch.tensor([80, 80, 80])),
        AudioBatch(
            torch.cat([first.audio.waveform, first.audio.waveform], 1), torch.full((3,), 80 * HOP), RATE
        ),
        torch.cat([first.assistant_speaking, first.assistant_speaking], 1),
    )
    mixed.hidden.values[1, 40:] = second.hidden.values[1]
    mixed.audio.waveform[1, 40 * HOP :] = second.audio.waveform[1]
    mixed.assistant_speaking[1, 40:] = second.assistant_speaking[1]
    out = predictor.step(chunk_of(mixed, 40, 40), state).logits
    continued = predictor(mixed).logits[:, 40:]
    fresh = predictor(chunk_of(second, 0, 40)).logits
    torch.testing.assert_close(out[[0, 2]], continued[[0, 2]], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[1], fresh[1], atol=1e-5, rtol=1e-5)


# ---- the VAD's rules ------------------------------------------------------------------------------
def vad_input(
    loud: list[tuple[int, int]], frames: int = 40, speaking: tuple[int, int] | None = None
) -> DuplexFrames:
    """Noise at -66 dB with a 440 Hz tone (-23 dB) over the frame ranges ``loud``; the assistant talks
    over the frame range ``speaking``."""
    g = torch.Generator().manual_seed(0)
    wave = 0.0005 * torch.randn(frames * HOP, generator=g)
    t = torch.arange(frames * HOP) / RATE
    for start, end in loud:
        wave[start * HOP : end * HOP] += 0.1 * torch.sin(2 * math.pi * 440 * t[start * HOP : end * HOP])
    flags = torch.zeros(1, frames, dtype=torch.bool)
    if speaking is not None:
        flags[0, speaking[0] : speaking[1]] = True
    hidden = SequenceBatch(torch.zeros(1, frames, 0), torch.tensor([frames]))
    return DuplexFrames(hidden, AudioBatch(wave[None], torch.tensor([frames * HOP]), RATE), flags)


def decided(frames: DuplexFrames) -> dict[int, int]:
    """{frame: class} of the frames that are not keep_listening."""
    decisions = VADDuplexPredictor()(frames).decisions()[0]
    return {int(k): int(decisions[k]) for k in torch.nonzero(decisions).flatten()}


def test_vad_frame_energy_in_db_full_scale() -> None:
    energy = VADDuplexPredictor().frame_energy_db(vad_input([(10, 20)]).audio, 40)[0]
    assert energy[15].item() == pytest.approx(20 * math.log10(0.1 / math.sqrt(2)), abs=0.3)
    assert energy[5].item() == pytest.approx(20 * math.log10(0.0005), abs=0.5)


def test_vad_responds_once_after_the_silence_timeout() -> None:
    """Silence, 1.2 s of speech (frames 10-19), then silence: respond where 0.5 s of quiet has passed."""
    expected = 19 + math.ceil(0.5 / FRAME)
    assert decided(vad_input([(10, 20)])) == {expected: RESPOND}
    # a mid-turn pause shorter than the timeout is not a turn end
    assert decided(vad_input([(5, 10), (13, 20)])) == {expected: RESPOND}


def test_vad_stops_for_a_barge_in_and_not_for_a_backchannel() -> None:
    """Over assistant speech: 1.2 s of user speech stops it once 1.0 s (min_barge_in) has passed, then the
    user's turn gets its answer; 0.84 s (a long back-channel) changes nothing."""
    barge_frames = math.ceil(1.0 / FRAME)
    barge = vad_input([(10, 20)], speaking=(0, 22))
    assert decided(barge) == {10 + barge_frames - 1: STOP, 19 + math.ceil(0.5 / FRAME): RESPOND}
    assert decided(vad_input([(10, 17)], speaking=(0, 40))) == {}
    # the hangover bridges a one-frame dip: 0.6 s + dip + 0.6 s is one run, stopped at its 9th frame
    assert decided(vad_input([(10, 15), (16, 21)], speaking=(0, 40)))[10 + barge_frames - 1] == STOP
    assert decided(vad_input([(10, 15), (17, 22)], speaking=(0, 40))) == {}


# ---- the silence backstop --------------------------------------------------------------------------
class ScriptedDuplexPredictor(DuplexPredictor):
    """Its hidden states are its logits: a test writes the decisions it makes."""

    def forward(self, frames: DuplexFrames) -> DuplexOutput:
        return DuplexOutput(frames.hidden.values, frames.hidden.lengths)

    def init_state(self, batch_size: int, options: None = None) -> StreamState:
        return StreamState(batch_size=batch_size)

    def step(self, chunk: DuplexFrames, state: StreamState) -> DuplexOutput:
        return self(chunk)


def backstopped(frames: DuplexFrames, script: dict[int, int] | None = None, training: bool = False) -> dict:
    """{frame: class} a 1.0 s backstop decides (its frames that are not keep_listening) behind a predictor
    that decides ``script`` ({frame: class}) and keeps listening elsewhere."""
    logits = torch.zeros(1, frames.hidden.values.shape[1], 3)
    logits[0, :, KEEP] = 5.0
    for frame, label in (script or {}).items():
        logits[0, frame] = torch.nn.functional.one_hot(torch.tensor(label), 3) * 5.0
    predictor = SilenceBackstop(ScriptedDuplexPredictor(), frame_seconds=FRAME, timeout=1.0).train(training)
    output = predictor(dataclasses.replace(frames, hidden=SequenceBatch(logits, frames.hidden.lengths)))
    decisions = output.decisions()[0]
    return {int(k): int(decisions[k]) for k in torch.nonzero(decisions).flatten()}


def test_backstop_answers_a_turn_the_predictor_left_unanswered() -> None:
    """Speech in frames 10-19 and the predictor silent: respond once 1.0 s of quiet has passed; a 0.36 s
    mid-turn pause is no turn end; a sound shorter than a turn (0.84 s, a long back-channel) is not answered;
    while training the predictor's own logits pass through."""
    expected = 19 + math.ceil(1.0 / FRAME)
    assert backstopped(vad_input([(10, 20)])) == {expected: RESPOND}
    assert backstopped(vad_input([(2, 12), (15, 20)])) == {expected: RESPOND}
    assert backstopped(vad_input([(10, 17)])) == {}
    assert backstopped(vad_input([(10, 17), (25, 32)])) == {}
    assert backstopped(vad_input([(10, 20)]), training=True) == {}


def test_backstop_leaves_the_predictors_decisions_alone() -> None:
    """A turn the predictor answered gets no second answer; its stops pass through, and the backstop never
    stops the assistant itself (the VAD alone would, 1.0 s into the user's speech)."""
    assert backstopped(vad_input([(10, 20)]), {21: RESPOND}) == {21: RESPOND}
    assert backstopped(vad_input([(10, 25)], speaking=(0, 13)), {12: STOP}) == {12: STOP, 24 + 9: RESPOND}
    over = vad_input([(10, 25)], speaking=(0, 40))
    assert decided(over)[10 + math.ceil(1.0 / FRAME) - 1] == STOP
    assert backstopped(over) == {}


def test_backstop_spec_rebuilds_the_predictor_it_backs() -> None:
    """What a checkpoint holding a backstop does: its spec rebuilds the backed predictor, weights load."""
    backstop = SilenceBackstop(tiny_transformer(respond_threshold=0.7), timeout=1.5)
    spec = backstop.spec()
    assert spec["init_args"]["predictor"]["init_args"]["respond_threshold"] == 0.7
    rebuilt = SilenceBackstop(**spec["init_args"])
    rebuilt.load_state_dict(backstop.state_dict())
    frames = random_frames([30])
    torch.testing.assert_close(rebuilt.eval()(frames).logits, backstop.eval()(frames).logits)
    assert rebuilt.vad.timeout_frames == math.ceil(1.5 / FRAME)


# ---- training --------------------------------------------------------------------------------------
def flip_batch(g: torch.Generator, batch: int = 8, frames: int = 48) -> dict:
    """Feature 0 is a user-talking bit, feature 1 an assistant-talking bit, the rest noise. Rule: respond on
    the frame after the user bit falls; stop_speaking on the frame it rises while the assistant talks."""
    user = torch.zeros(batch, frames, dtype=torch.bool)
    for t in range(1, frames):
        flip = torch.rand(batch, generator=g) < 0.25
        user[:, t] = user[:, t - 1] ^ flip
    assistant = torch.rand(batch, 1, generator=g).expand(-1, frames) < 0.5
    labels = torch.zeros(batch, frames, dtype=torch.long)
    labels[:, 1:][user[:, :-1] & ~user[:, 1:]] = RESPOND
    labels[:, 1:][~user[:, :-1] & user[:, 1:] & assistant[:, 1:]] = STOP
    values = 0.5 * torch.randn(batch, frames, 128, generator=g)
    values[..., 0], values[..., 1] = user.float() * 2 - 1, assistant.float() * 2 - 1
    lengths = torch.randint(frames // 2, frames + 1, (batch,), generator=g)
    labels[torch.arange(frames)[None, :] >= lengths[:, None]] = IGNORE_INDEX
    return {"hidden": SequenceBatch(values, lengths), "frame_labels": labels}


def test_transformer_learns_a_turn_taking_rule_from_features() -> None:
    g = torch.Generator().manual_seed(0)
    train = [flip_batch(g) for _ in range(300)]
    val = [flip_batch(g) for _ in range(8)]
    labels = torch.cat([b["frame_labels"].flatten() for b in train])
    counts = [int((labels == c).sum()) for c in range(3)]
    prior = max(counts) / sum(counts)
    model = TransformerDuplexPredictor.from_preset(
        "tiny", class_weights=inverse_frequency_weights(counts), learning_rate=3e-3, warmup_steps=20
    )
    trainer = L.Trainer(
        max_steps=300,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        accelerator="cpu",
    )
    loader = torch.utils.data.DataLoader
    trainer.fit(model, loader(train, batch_size=None), loader(val, batch_size=None))
    metrics = trainer.validate(model, loader(val, batch_size=None), verbose=False)[0]
    assert prior < 0.85
    assert metrics["val/acc"] > 0.97 > prior + 0.1
    assert metrics["val/f1_respond"] > 0.9
    assert metrics["val/f1_stop_speaking"] > 0.9


def test_inverse_frequency_weights_balance_the_classes() -> None:
    weights = inverse_frequency_weights([900, 90, 10])
    assert weights[2] > weights[1] > weights[0]
    assert 900 * weights[0] == pytest.approx(10 * weights[2], rel=1e-3)


# ---- presets, thresholds, errors ------------------------------------------------------------------
def test_presets_build_on_meta_with_the_stated_parameter_counts() -> None:
    assert count_preset_parameters(TransformerDuplexPredictor, "minmo") == 17_848_067
    assert count_preset_parameters(TransformerDuplexPredictor, "tiny") == 58_819


def test_thresholds_turn_probabilities_into_decisions() -> None:
    probs = torch.tensor([[[0.6, 0.4, 0.0], [0.5, 0.2, 0.3], [0.2, 0.5, 0.3], [0.3, 0.35, 0.35]]])
    out = DuplexOutput(probs.clamp(min=1e-6).log(), torch.tensor([4]))
    assert out.decisions().tolist() == [[KEEP, KEEP, RESPOND, RESPOND]]
    assert dataclasses.replace(out, respond_threshold=0.3).decisions().tolist() == [
        [RESPOND, KEEP, RESPOND, RESPOND]
    ]
    # stop_speaking wins where both are decided
    both = dataclasses.replace(out, respond_threshold=0.3, stop_threshold=0.3)
    assert both.decisions().tolist() == [[RESPOND, STOP, STOP, STOP]]
    with pytest.raises(ValueError, match="respond_threshold must lie in"):
        DuplexOutput(out.logits, out.lengths, respond_threshold=1.5)


def test_block_thresholds_reach_its_outputs() -> None:
    model = tiny_transformer(respond_threshold=0.2)
    out = model(random_frames([5]))
    assert out.respond_threshold == 0.2 and out.stop_threshold is None


def test_bad_inputs_name_the_fix() -> None:
    with pytest.raises(ValueError, match="set input_dim to the LLM's hidden_size"):
        tiny_transformer()(random_frames([5], width=3584))
    frames = random_frames([5])
    vad = VADDuplexPredictor()
    with pytest.raises(ValueError, match=r"pass DuplexFrames\(audio=AudioBatch"):
        vad(dataclasses.replace(frames, audio=None))
    with pytest.raises(ValueError, match="Set frame_seconds to the LLM's audio frame"):
        VADDuplexPredictor(frame_seconds=0.08)(frames)
    with pytest.raises(ValueError, match="must outlast the hangover"):
        VADDuplexPredictor(silence_timeout=0.1, hangover=0.2)
    with pytest.raises(ValueError, match="one label per frame"):
        tiny_transformer().training_step({"hidden": frames.hidden, "frame_labels": torch.zeros(1, 4)}, 0)
