"""MinMo stages 2/3: LLM states -> output projector -> voice token LM, teacher forced."""

from __future__ import annotations

import pytest
import torch
from builders import tiny_batch, tiny_minmo
from minmo_lightning.components.output_projector.query_linear import QueryLinearProjector
from minmo_lightning.components.voice_token_lm.cosyvoice2_lm import CosyVoice2LM

from minmo_lightning.contracts import TokenBatch

FROZEN_LLM_SIDE = {"voice_encoder": "frozen", "input_projector": "frozen", "llm": "frozen"}
DECODER = {"output_projector": "full", "voice_token_lm": "full"}


def voice_minmo(objective: str, **trainable: str):
    lm = CosyVoice2LM.from_preset("tiny")
    return tiny_minmo(
        objective=objective,
        output_projector=QueryLinearProjector.from_preset("tiny", output_dim=lm.hidden_size),
        voice_token_lm=lm,
        trainable={**FROZEN_LLM_SIDE, **DECODER, **trainable},
    )


def speech_batch() -> dict:
    batch = tiny_batch()
    speech = TokenBatch(
        torch.randint(0, 6561, (2, 45), generator=torch.Generator().manual_seed(1)), torch.tensor([45, 30])
    )
    return {**batch, "speech_tokens": speech, "answer_speech_tokens": speech, "answer_text": batch["text"],
            "user_audio": batch["audio"]}  # fmt: skip


def test_query_and_token_rows_follow_the_paper() -> None:
    model = voice_minmo("text_to_speech")
    prompt = model.prompts.build(
        ["Read this text aloud: hello there"], torch.zeros(1, dtype=torch.long), ["hello there"]
    )
    embeds = model.llm.embed(prompt.token_ids)
    hidden = model.llm(embeds, attention_mask=prompt.attention_mask).hidden_states
    inputs = model.voice_decoder_input(prompt, embeds, hidden)

    answer_ids = model.llm.tokenizer("hello there", add_special_tokens=False).input_ids
    n = len(answer_ids)
    assert inputs.lengths.tolist() == [n]
    assert torch.equal(inputs.token_embeddings[0, :n], model.llm.embed(torch.tensor(answer_ids)))
    start = int((prompt.labels[0] != -100).nonzero()[0])
    assert torch.equal(inputs.token_hidden[0, :n], hidden[0, start : start + n])
    # the query: [embedding ; hidden] at each position of the user turn, from its instruction to the
    # assistant's header (the system prompt before it and the answer after it left out)
    d = model.llm.hidden_size
    turn = model.prompts.encode("Read this text aloud: hello there\n")
    first = start - len(turn) - len(model.prompts.encode("<|im_end|>\n<|im_start|>assistant\n"))
    assert model.prompts.tokenizer.decode(prompt.token_ids[0, first : first + len(turn)]) == (
        "Read this text aloud: hello there\n"
    )
    assert inputs.query.shape == (1, start - first, 2 * d) and inputs.query_lengths.tolist() == [
        start - first
    ]
    assert torch.equal(inputs.query[0, :, :d], embeds[0, first:start])
    assert torch.equal(inputs.query[0, :, d:], hidden[0, first:start])


@pytest.mark.parametrize("objective", ["text_to_speech", "speech_to_speech"])
def test_voice_decoder_trains_only_its_blocks(objective: str) -> None:
    model = voice_minmo(objective)
    out = model.voice_decoder_forward(speech_batch())
    out.loss.backward()
    with_grad = {n.split(".")[0] for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == {"output_projector", "voice_token_lm"}


def test_voice_decoder_loss_falls() -> None:
    torch.manual_seed(0)
    model = voice_minmo("text_to_speech")
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    batch, losses = speech_batch(), []
    for _ in range(8):
        loss = model.voice_decoder_forward(batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    assert losses[-1] < 0.8 * losses[0]


def test_missing_speech_tokens_names_the_fix() -> None:
    batch = speech_batch()
    del batch["speech_tokens"]
    with pytest.raises(KeyError, match="minmo prepare"):
        voice_minmo("text_to_speech").voice_decoder_forward(batch)


def test_width_mismatch_names_the_fix() -> None:
    with pytest.raises(ValueError, match="set the output projector's output_dim"):
        tiny_minmo(
            objective="text_to_speech",
            output_projector=QueryLinearProjector.from_preset("tiny", output_dim=48),
            voice_token_lm=CosyVoice2LM.from_preset("tiny"),
            trainable={**FROZEN_LLM_SIDE, **DECODER},
        )
