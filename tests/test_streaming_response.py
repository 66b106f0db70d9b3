"""Streaming spoken responses: LLM -> output projector -> voice token LM -> token2wav, batch > 1."""

from __future__ import annotations

import pytest
import torch
from builders import assert_teacher_forced_argmax, speaking_minmo, tiny_batch, tiny_minmo

from minmo_lightning.contracts import TokenBatch, VoiceDecoderInput
from minmo_lightning.generation import TextSamplingConfig, generate
from minmo_lightning.streaming import SpeechResponder


def greedy_speech(logp: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
    return logp.argmax(-1)


def collect(chunks) -> tuple[list[list[int]], list[list[int]], list]:
    chunks = list(chunks)
    batch = chunks[0].finished.shape[0]
    text = [sum((c.text.tokens[i, : c.text.lengths[i]].tolist() for c in chunks), []) for i in range(batch)]
    speech = [
        sum((c.speech.tokens[i, : c.speech.lengths[i]].tolist() for c in chunks), []) for i in range(batch)
    ]
    return text, speech, chunks


def end_early(model, embeds, mask, text_config) -> int:
    """Make row 0 stop mid-chunk: a sampled token of its, seen there first at step 6-9, becomes the end id
    (the tiny LLM has random weights). Returns the number of text tokens row 0 then speaks."""
    tokens = generate(model.llm, embeds, mask, -1, model.prompts.pad_id, text_config).tokens[0].tolist()
    k = next(k for k in range(6, 10) if tokens[k] not in tokens[:k] and k % 5)
    model.prompts.end_id = tokens[k]
    return k


@pytest.fixture(scope="module")
def model():
    return speaking_minmo()


def test_streamed_response_equals_generate_and_teacher_forced_decoder() -> None:
    model = speaking_minmo()  # its end id is changed below
    audio = tiny_batch()["audio"]
    text_config = TextSamplingConfig(max_new_tokens=14, temperature=1.0, seed=3)
    with torch.no_grad():
        embeds, mask, turn = model.generation_prompt(
            ["Answer the user's spoken question."] * 2, model.encode_audio(audio)
        )
        row0 = end_early(model, embeds, mask, text_config)
        expected = generate(model.llm, embeds, mask, model.prompts.end_id, model.prompts.pad_id, text_config)
    responder = SpeechResponder(model, text_config, speech_sampler=greedy_speech, synthesize=False)
    text, speech, chunks = collect(responder.stream(embeds, mask, turn_mask=turn))

    lengths = [len(t) for t in text]
    assert lengths[0] == row0  # row 0 ended mid-chunk (its eos is not spoken)
    for i in range(2):
        assert text[i] == expected.tokens[i, : lengths[i]].tolist()
        ended = bool(expected.tokens[i, : expected.lengths[i]].eq(model.prompts.end_id).any())
        assert lengths[i] == int(expected.lengths[i]) - ended
    assert chunks[0].speech.lengths.tolist() == [15, 15]  # a full chunk of text gives exactly 15 tokens
    assert int(chunks[1].speech.lengths[1]) == 15
    assert bool(chunks[-1].finished.all())
    assert all(c.elapsed >= 0 and "voice_token_lm" in c.timings for c in chunks)

    # teacher forced: each row alone, prompt + its text through the LLM, then the projector and voice LM;
    # the query is [embedding ; hidden] at each position of the user turn, which starts after the system
    # prompt and runs to the end of the prompt
    with torch.no_grad():
        for i in range(2):
            prompt, in_turn = embeds[i, mask[i].bool()], turn[i, mask[i].bool()]
            assert 0 < int(in_turn.sum()) < prompt.shape[0] and bool(in_turn[-1])
            ids = torch.tensor(text[i])
            answer = model.llm.embed(ids[None])[0]
            hidden = model.llm(torch.cat([prompt, answer])[None]).hidden_states[0]
            query = torch.cat([prompt, hidden[: prompt.shape[0]]], -1)[in_turn][None]
            inputs = VoiceDecoderInput(
                query, answer[None], hidden[None, prompt.shape[0] :], torch.tensor([len(ids)])
            )
            vectors = model.output_projector(inputs).values[0]
            rows = query.shape[1]
            assert_teacher_forced_argmax(model.voice_token_lm, vectors[rows:], vectors[:rows], speech[i])


def test_batched_rows_speak_as_they_would_alone(model) -> None:
    audio = tiny_batch()["audio"]
    text_config = TextSamplingConfig(max_new_tokens=9)
    responder = SpeechResponder(model, text_config, speech_sampler=greedy_speech, synthesize=False)
    with torch.no_grad():
        embeds, mask, turn = model.generation_prompt(
            ["Answer the user's spoken question."] * 2, model.encode_audio(audio)
        )
    _, batched, _ = collect(responder.stream(embeds, mask, turn_mask=turn))
    for i in range(2):
        width = int(mask[i].sum())
        rows = slice(i, i + 1), slice(-width, None)
        _, alone, _ = collect(responder.stream(embeds[rows], mask[rows], turn_mask=turn[rows]))
        assert alone[0] == batched[i]


def test_audio_streams_out_and_matches_offline_token2wav() -> None:
    model = speaking_minmo(token2wav=True)
    responder = SpeechResponder(model, TextSamplingConfig(max_new_tokens=6), speech_sampler=greedy_speech)
    _, speech, chunks = collect(model.respond(texts=["stop now", "hello there"], speech_sampler=greedy_speech,
                                              text_config=TextSamplingConfig(max_new_tokens=6)))  # fmt: skip
    assert responder.token2wav is model.token2wav
    first_audio = next(i for i, c in enumerate(chunks) if int(c.audio.lengths.max()) > 0)
    assert first_audio <= 1  # 15 tokens + the flow's 3 look-ahead tokens: audio by the second chunk
    for i in range(2):
        streamed = torch.cat([c.audio.waveform[i, : c.audio.lengths[i]] for c in chunks])
        tokens = TokenBatch(torch.tensor(speech[i])[None], torch.tensor([len(speech[i])]))
        offline = model.token2wav(tokens)
        assert streamed.shape[0] == int(offline.lengths[0])
        torch.testing.assert_close(streamed, offline.waveform[0], atol=1e-4, rtol=1e-4)


def test_respond_errors_name_the_fix(model) -> None:
    with pytest.raises(ValueError, match="either the user's audio"):
        model.respond()
    text_only = tiny_minmo()
    with pytest.raises(ValueError, match="needs a output_projector"):
        SpeechResponder(text_only)


def test_verbatim_voices_exactly_the_given_text(model) -> None:
    texts = ["stop now", "turn on the kitchen lights please"]
    text, speech, chunks = collect(
        model.respond(texts=texts, verbatim=True, synthesize=False, speech_sampler=greedy_speech)
    )
    assert text == [model.prompts.encode(t) for t in texts]
    assert bool(chunks[-1].finished.all()) and all(speech)
    with pytest.raises(ValueError, match="pass texts"):
        model.respond(audio=tiny_batch()["audio"], verbatim=True)


def test_speech_token_intelligibility_report(model) -> None:
    from minmo_lightning.components.speech_tokenizer.s3tokenizer import S3TokenizerV2
    from minmo_lightning.evaluation.asr import score_asr
    from minmo_lightning.evaluation.speech_tokens import evaluate

    torch.manual_seed(0)
    tokenizer = S3TokenizerV2.from_preset("tiny").eval()
    speech = TokenBatch(torch.randint(0, 6561, (2, 30)), torch.tensor([30, 21]))
    batch = {"ids": ["a", "b"], "text": ["stop now", "call peter"], "speech_tokens": speech}
    result = evaluate(model, tokenizer, [batch, batch], limit=2, seed=0)
    assert result["utterances"] == 2  # the limit stops after the first batch
    assert result["wer_generated_tokens"] >= 0 and result["wer_reference_tokens"] >= 0
    assert [e["text"] for e in result["examples"]] == batch["text"]
    read_back = tokenizer.transcribe_tokens(speech)  # the ceiling is the reader on the reference tokens
    assert [e["from_reference"] for e in result["examples"]] == read_back
    assert result["wer_reference_tokens"] == score_asr(batch["text"], read_back).rate


def test_speech_token_report_of_a_voice_lm_trained_alone() -> None:
    """``--voice-lm``: the block's own TTS decoder speaks; what the reader hears is what it generated."""
    from minmo_lightning.components.speech_tokenizer.s3tokenizer import S3TokenizerV2
    from minmo_lightning.components.voice_token_lm.cosyvoice2_lm import CosyVoice2LM
    from minmo_lightning.components.voice_token_lm.generation import generate
    from minmo_lightning.components.voice_token_lm.sampling import SpeechSamplingConfig
    from minmo_lightning.evaluation.speech_tokens import evaluate, spoken_by_voice_lm

    torch.manual_seed(0)
    lm = CosyVoice2LM.from_preset("tiny")
    lm.configure_model()
    lm.eval().sampling = SpeechSamplingConfig(greedy=True)
    tokenizer = S3TokenizerV2.from_preset("tiny").eval()
    speech = TokenBatch(torch.randint(0, 6561, (2, 30)), torch.tensor([30, 21]))
    batch = {"ids": ["a", "b"], "text": ["stop now", "call peter"], "speech_tokens": speech}
    result = evaluate(lm, tokenizer, [batch], limit=None, seed=0, speak=spoken_by_voice_lm)
    spoken = generate(lm, lm.tokenize(batch["text"]))
    assert [e["from_generated"] for e in result["examples"]] == tokenizer.transcribe_tokens(spoken)
    assert result["utterances"] == 2


def test_speech_token_report_of_a_voice_lm_on_minmos_route() -> None:
    """``--voice-lm --bistream``: the block reads its own text embeddings 5 per step, as MinMo's route reads
    projected LLM states; each row's tokens are the teacher-forced argmax of that interleaved layout."""
    from minmo_lightning.components.voice_token_lm.cosyvoice2_lm import CosyVoice2LM
    from minmo_lightning.components.voice_token_lm.sampling import SpeechSamplingConfig
    from minmo_lightning.evaluation.speech_tokens import spoken_by_voice_lm_bistream

    torch.manual_seed(0)
    lm = CosyVoice2LM.from_preset("tiny", max_token_text_ratio=4.0)
    lm.configure_model()
    lm.eval().sampling = SpeechSamplingConfig(greedy=True)
    texts = ["stop now please", "call peter at home before the rain starts again"]
    with pytest.warns(UserWarning, match="max_token_text_ratio"):  # random weights never end their speech
        spoken = spoken_by_voice_lm_bistream(lm, texts, torch.Generator().manual_seed(0))
    text = lm.tokenize(texts)
    embeds = lm.built_backbone().embed_text(text.tokens)
    for row, speech in enumerate(spoken):
        n = int(text.lengths[row])
        assert len(speech) == 4 * n  # every row ran to its cap, none stopped early or ran past it
        assert_teacher_forced_argmax(lm, embeds[row, :n], embeds[row, :0], speech)
