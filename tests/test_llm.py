"""LLM backbone, prompts with spliced audio, and KV-cached generation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from builders import tiny_batch, tiny_minmo
from minmo_lightning.components.llm.hf_causal_lm import HFCausalLM
from saved_activations import run_counting_saved

from minmo_lightning.contracts import IGNORE_INDEX, AudioBatch, SequenceBatch
from minmo_lightning.generation import TextSamplingConfig, generate
from minmo_lightning.prompts import (
    AUDIO_PLACEHOLDER,
    SpeechPromptBuilder,
    Turn,
    splice_audio,
)


@pytest.fixture(scope="module")
def llm() -> HFCausalLM:
    torch.manual_seed(0)
    model = HFCausalLM.from_preset("tiny")
    model.configure_model()
    return model.eval()


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_audio_frames_land_where_the_placeholder_was(llm: HFCausalLM, padding_side: str) -> None:
    builder = SpeechPromptBuilder(llm.tokenizer)
    lengths = torch.tensor([5, 2, 7])
    frames = SequenceBatch(torch.randn(3, 7, 64), lengths)
    prompt = builder.build(
        ["Transcribe the speech."] * 3, lengths, ["hi", "a longer answer", "ok"], padding_side
    )
    text = llm.embed(prompt.token_ids)
    spliced = splice_audio(text, prompt.audio_mask, frames)
    for b, n in enumerate(lengths.tolist()):
        positions = prompt.audio_mask[b].nonzero().squeeze(-1)
        assert len(positions) == n and torch.all(positions.diff() == 1), "audio span must be contiguous"
        assert torch.equal(spliced[b, positions], frames.values[b, :n])
        assert torch.equal(spliced[b, ~prompt.audio_mask[b]], text[b, ~prompt.audio_mask[b]])
        real = prompt.attention_mask[b].bool()
        first_real = int(real.nonzero()[0])
        last_real = int(real.nonzero()[-1])
        assert last_real - first_real + 1 == int(real.sum()), "padding must sit on one side only"
        assert (last_real == real.numel() - 1) if padding_side == "left" else (first_real == 0)


def test_loss_covers_only_the_response(llm: HFCausalLM) -> None:
    builder = SpeechPromptBuilder(llm.tokenizer)
    prompt = builder.build(
        ["Transcribe the speech.", "What is the emotion?"], torch.tensor([3, 4]), ["yes", "sad"]
    )
    for b, answer in enumerate(["yes", "sad"]):
        supervised = prompt.labels[b][prompt.labels[b] != IGNORE_INDEX]
        assert llm.tokenizer.decode(supervised) == answer + "<|im_end|>"
        assert not (prompt.labels[b] != IGNORE_INDEX)[prompt.audio_mask[b]].any()


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_the_turn_mask_covers_the_current_user_turn_only(llm: HFCausalLM, padding_side: str) -> None:
    """From the current turn's instruction to the assistant's header: no system prompt, earlier turn or
    answer (what the voice decoder's query reads)."""
    builder = SpeechPromptBuilder(llm.tokenizer)
    history = [Turn("user", audio_frames=4), Turn("assistant", "hello ann")]
    prompt = builder.build(
        ["Answer.", "Answer."], torch.tensor([3, 5]), ["yes", "no"], padding_side, [history, []]
    )
    for b, frames in enumerate((3, 5)):
        ids, in_turn = prompt.token_ids[b], prompt.turn_mask[b]
        positions = in_turn.nonzero().flatten()
        assert torch.all(positions.diff() == 1)
        turn_ids = ids[positions][~prompt.audio_mask[b, positions]]
        assert llm.tokenizer.decode(turn_ids) == "Answer.\n<|im_end|>\n<|im_start|>assistant\n"
        assert int(prompt.audio_mask[b, positions].sum()) == frames  # the current audio, not the history's
        assert not (in_turn & (prompt.labels[b] != IGNORE_INDEX)).any()


def test_template_without_placeholder_is_rejected(llm: HFCausalLM) -> None:
    with pytest.raises(ValueError, match=f"must contain the audio placeholder {AUDIO_PLACEHOLDER}"):
        SpeechPromptBuilder(llm.tokenizer, user_template="{instruction}")


def _greedy_without_cache(
    llm: HFCausalLM, embeds: torch.Tensor, mask: torch.Tensor, steps: int
) -> torch.Tensor:
    tokens = []
    for _ in range(steps):
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = llm(embeds, attention_mask=mask, position_ids=positions).logits[:, -1]
        token = logits.argmax(-1)
        tokens.append(token)
        embeds = torch.cat([embeds, llm.embed(token[:, None])], dim=1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    return torch.stack(tokens, dim=1)


def test_kv_cached_generation_equals_full_recompute(llm: HFCausalLM) -> None:
    builder = SpeechPromptBuilder(llm.tokenizer)
    lengths = torch.tensor([4, 9])
    frames = SequenceBatch(torch.randn(2, 9, 64), lengths)
    prompt = builder.build(["Transcribe the speech."] * 2, lengths, padding_side="left")
    embeds = splice_audio(llm.embed(prompt.token_ids), prompt.audio_mask, frames)
    config = TextSamplingConfig(max_new_tokens=12)
    with torch.no_grad():
        cached = generate(llm, embeds, prompt.attention_mask, eos_token_id=-1, pad_token_id=0, config=config)
        reference = _greedy_without_cache(llm, embeds, prompt.attention_mask, 12)
    assert torch.equal(cached.tokens, reference)
    assert cached.hidden_states.shape == (2, 12, llm.hidden_size)
    assert cached.lengths.tolist() == [12, 12]


def test_generation_stops_per_item_at_eos(llm: HFCausalLM) -> None:
    prompt_embeds = torch.randn(2, 5, 64)
    mask = torch.ones(2, 5, dtype=torch.long)
    with torch.no_grad():
        first = _greedy_without_cache(llm, prompt_embeds, mask, 1)[:, 0]
        result = generate(llm, prompt_embeds, mask, int(first[0]), 0, TextSamplingConfig(max_new_tokens=6))
    assert result.lengths[0] == 1


def test_lora_merge_keeps_outputs(llm: HFCausalLM) -> None:
    model = HFCausalLM.from_preset("tiny")
    model.configure_model()
    model.apply_lora()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    x = torch.randn(1, 6, 64)
    with torch.no_grad():
        before = model.eval()(x).logits
        model.merge_lora()
        after = model(x).logits
    assert not model.has_lora
    assert torch.allclose(before, after, atol=1e-5)


def test_local_folder_round_trip(tmp_path: Path, llm: HFCausalLM) -> None:
    llm.base_model.save_pretrained(tmp_path)
    llm.tokenizer.save_pretrained(tmp_path)
    loaded = HFCausalLM(path=str(tmp_path), dtype="float32")
    loaded.configure_model()
    x = torch.randn(1, 4, 64)
    with torch.no_grad():
        assert torch.allclose(loaded.eval()(x).logits, llm(x).logits, atol=1e-6)
    assert loaded.tokenizer.chat_template is not None


def test_folder_without_tokenizer_names_the_fix(tmp_path: Path, llm: HFCausalLM) -> None:
    llm.base_model.config.save_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="tokenizer_path"):
        _ = HFCausalLM(path=str(tmp_path)).tokenizer


def test_folder_without_config_lists_expected_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="Expected files: config.json"):
        HFCausalLM(path=str(tmp_path))


def test_audio_longer_than_context_is_an_error() -> None:
    config = dict(HFCausalLM.presets["tiny"]["config"], max_position_embeddings=32)
    model = tiny_minmo(llm=HFCausalLM.from_preset("tiny", config=config))
    with pytest.raises(ValueError, match="exceeds the LLM context"):
        model.speech_to_text_loss(tiny_batch())


def test_frozen_llm_recomputes_activations_when_gradients_flow_through_it() -> None:
    """Stage 1a: the LLM is frozen (eval mode) but the projector's gradient passes through it; with
    ``gradient_checkpointing`` its layer activations are recomputed, and the input gradient is unchanged."""
    results = []
    for recompute in (False, True):
        torch.manual_seed(0)
        llm = HFCausalLM.from_preset("tiny", gradient_checkpointing=recompute)
        llm.configure_model()
        llm.requires_grad_(False).eval()
        inputs = torch.randn(2, 12, llm.hidden_size, generator=torch.Generator().manual_seed(1))
        inputs.requires_grad_(True)
        out, saved = run_counting_saved(lambda: llm(inputs))  # noqa: B023 (called at once)
        out.hidden_states.square().mean().backward()
        results.append((out.hidden_states.detach(), inputs.grad, saved))
        assert all(not layer.training for layer in llm.decoder_layers())  # eval mode restored
    (plain, plain_grad, plain_saved), (recomputed, recomputed_grad, recomputed_saved) = results
    assert recomputed_saved < 0.5 * plain_saved
    torch.testing.assert_close(recomputed, plain)
    torch.testing.assert_close(recomputed_grad, plain_grad)


def test_closed_set_scores_are_each_answers_log_probability() -> None:
    """``score_answers`` batches every (utterance, answer) pair; each score must equal the summed
    log-probability of that answer's tokens (and end of turn) computed alone, and padding must not leak."""
    torch.manual_seed(0)
    model = tiny_minmo().eval()
    batch = tiny_batch()
    answers = ["happy", "sad", "neutral"]
    instruction = "What is the speaker's emotion?"
    scores = model.score_answers(model.encode_audio(batch["audio"]), instruction, answers)
    assert scores.shape == (2, 3) and bool((scores < 0).all())
    for row in range(2):
        one = AudioBatch.from_list([batch["audio"].waveform[row, : int(batch["audio"].lengths[row])]], 16000)
        for k, answer in enumerate(answers):
            frames = model.encode_audio(one)
            prompt, _, out = model._prompted_llm([instruction], [answer], frames)
            targets = prompt.labels[0, 1:]
            keep = targets != -100
            logp = out.logits[0, :-1][keep].log_softmax(-1).gather(-1, targets[keep][:, None]).sum()
            assert keep.sum() == len(model.prompts.encode(answer)) + 1  # the answer and its end of turn
            torch.testing.assert_close(scores[row, k], logp, atol=1e-4, rtol=1e-4)
