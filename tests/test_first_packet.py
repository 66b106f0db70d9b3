"""First packet at MinMo's formula: the voice LM's first 15 speech tokens become audio without its second step."""

from __future__ import annotations

import pytest
import torch
from builders import speaking_minmo
from minmo_lightning.components.token2wav.flow import CosyVoice2Flow, SpeakerPrompt, Token2WavStreamOptions
from minmo_lightning.components.token2wav.flow_cache import chunk_ids, stream_chunk_end

from minmo_lightning.contracts import TokenBatch
from minmo_lightning.generation import TextSamplingConfig

pytestmark = pytest.mark.usefixtures("one_thread")
STEP = 15  # speech tokens the voice LM writes per 5:15 step


def greedy(logp: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
    return logp.argmax(-1)


def test_chunks_end_where_a_step_ends_less_the_lookahead() -> None:
    ids = chunk_ids(torch.tensor([60]), 60, 15, torch.tensor([0]), lookahead=3)[0]
    starts = [0] + [i for i in range(1, 60) if ids[i] != ids[i - 1]]
    assert starts == [0, 12, 27, 42, 57]  # each chunk's look-ahead ends at 15, 30, 45, 60
    ends = [stream_chunk_end(start, 0, 15, 3) for start in starts]
    assert ends == [12, 27, 42, 57, 72]
    with_prompt = chunk_ids(torch.tensor([47]), 47, 15, torch.tensor([20]), lookahead=3)[0]
    assert with_prompt[17:32].unique().numel() == 1  # the prompt's last 3 + the first 12 new tokens
    assert stream_chunk_end(17, 20, 15, 3) == 32


@torch.no_grad()
@pytest.mark.parametrize("prompt_tokens", [0, 20])
def test_every_step_becomes_audio_at_once_and_equals_offline(prompt_tokens: int) -> None:
    flow = CosyVoice2Flow.from_preset("tiny").eval()
    tokens = torch.randint(0, 6561, (1, 4 * STEP))
    prompt = SpeakerPrompt(torch.randn(1, 192))
    if prompt_tokens:
        prompt = SpeakerPrompt(
            torch.randn(1, 192),
            TokenBatch(torch.randint(0, 6561, (1, prompt_tokens)), torch.tensor([prompt_tokens])),
            torch.randn(1, 2 * prompt_tokens, 80),
        )
    offline, _, _ = flow.inference(TokenBatch(tokens, torch.tensor([tokens.shape[1]])), prompt, 15, 2)
    state = flow.init_state(1, Token2WavStreamOptions(prompt))
    streamed = []
    for k in range(4):
        mel, lengths = flow.step(
            TokenBatch(tokens[:, k * STEP : (k + 1) * STEP], torch.tensor([STEP])), state
        )
        streamed.append(mel[0, :, : lengths[0]])
        covered = (
            k + 1
        ) * STEP - flow.lookahead  # all but the step's last 3 tokens (their look-ahead is to come)
        so_far = torch.cat(streamed, dim=1)
        assert so_far.shape[1] == flow.ratio * covered
        torch.testing.assert_close(so_far, offline[0, :, : flow.ratio * covered], atol=1e-5, rtol=1e-5)


def test_the_first_voice_decoder_step_brings_audio_for_every_row() -> None:
    model = speaking_minmo(token2wav=True)
    chunks = model.respond(
        texts=["stop now", "turn on the kitchen lights"],
        verbatim=True,
        speech_sampler=greedy,
        text_config=TextSamplingConfig(max_new_tokens=12),
    )
    first = next(iter(chunks))  # 5 text tokens, 15 speech tokens, token2wav: MinMo's formula
    assert first.speech.lengths.tolist() == [STEP, STEP]
    assert bool((first.audio.lengths > 0).all())
    assert set(first.timings) == {"llm", "output_projector", "voice_token_lm", "token2wav"}
