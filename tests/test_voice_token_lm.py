"""CosyVoice2LM: golden parity, official keys, loader, layouts, streaming decoder, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from builders import assert_teacher_forced_argmax
from minmo_lightning.components.voice_token_lm.cosyvoice2_lm import CosyVoice2LM
from minmo_lightning.components.voice_token_lm.generation import generate, generate_bistream
from minmo_lightning.components.voice_token_lm.layout import SpecialIds, plan_row
from minmo_lightning.components.voice_token_lm.loss import label_smoothed_kl
from minmo_lightning.components.voice_token_lm.sampling import SpeechSamplingConfig, sample_tokens

from minmo_lightning.checkpoints import CheckpointMismatchError
from minmo_lightning.contracts import (
    IGNORE_INDEX,
    MixRatio,
    SemanticChunk,
    SequenceBatch,
    TokenBatch,
    VoiceLMStreamOptions,
)
from minmo_lightning.golden import run_golden

V = 6561
EOS, FILL = V, V + 2


def tiny(**overrides) -> CosyVoice2LM:
    model = CosyVoice2LM.from_preset("tiny", **overrides)
    model.configure_model()
    return model.eval()


@pytest.fixture(scope="module")
def model() -> CosyVoice2LM:
    torch.manual_seed(0)
    return tiny(max_token_text_ratio=3.0)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    """A tiny byte-level BPE (Qwen-style) built on the spot: no download."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(["hello world, the quick brown fox jumps over the lazy dog."] * 20, trainer)
    folder = tmp_path_factory.mktemp("tokenizer")
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>").save_pretrained(str(folder))
    return folder


# ---- parity with the official implementation ---------------------------------------------------
def test_golden_cosyvoice2_llm(golden_dir: Path) -> None:
    _, results = run_golden(golden_dir / "cosyvoice2_llm")
    failed = [r for r in results if not r.passed]
    assert results and not failed, failed


def test_preset_keys_equal_official_llm_pt(golden_dir: Path) -> None:
    rows = (golden_dir / "checkpoint_keys/cosyvoice2_0.5b/llm.keys.tsv").read_text().splitlines()[1:]
    official = [(key, tuple(json.loads(shape))) for key, shape, *_ in (r.split("\t") for r in rows)]
    with torch.device("meta"):
        block = CosyVoice2LM.from_preset("cosyvoice2-0.5b")
        block.configure_model()
    ours = [(k, tuple(v.shape)) for k, v in block.state_dict().items()]
    assert ours == official


# ---- loader ------------------------------------------------------------------------------------
def _official_folder(tmp_path: Path, source: CosyVoice2LM, tokenizer_dir: Path) -> Path:
    folder = tmp_path / "CosyVoice2-0.5B"
    blank = folder / "CosyVoice-BlankEN"
    blank.mkdir(parents=True)
    for f in tokenizer_dir.iterdir():
        (blank / f.name).write_bytes(f.read_bytes())
    (blank / "config.json").write_text(json.dumps(source.hparams.qwen2_config))
    torch.save(source.state_dict(), folder / "llm.pt")
    return folder


def test_load_pretrained_folder(tmp_path, tokenizer_dir) -> None:
    source = tiny()
    folder = _official_folder(tmp_path, source, tokenizer_dir)
    loaded = tiny()
    loaded.load_pretrained(str(folder))
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    text = loaded.tokenize(["hello world", "the fox"])
    assert text.tokens.shape[0] == 2 and int(text.lengths.min()) > 0
    tok = loaded.tokenizer  # CosyVoice2's special tokens are appended after the base vocabulary, in its order
    assert (
        tok.convert_tokens_to_ids("[mn]") == len(tok) - 1
        and tok.convert_tokens_to_ids("[breath]") == len(tok) - 16
    )
    # lazy path: pretrained_path in the constructor loads in configure_model()
    lazy = tiny(pretrained_path=str(folder))
    assert torch.equal(lazy.speech_embedding.weight, source.speech_embedding.weight)


def test_load_pretrained_errors(tmp_path, tokenizer_dir) -> None:
    with pytest.raises(FileNotFoundError, match="llm.pt"):
        tiny().load_pretrained(str(tmp_path))
    source = tiny()
    folder = _official_folder(tmp_path, source, tokenizer_dir)
    config = folder / "CosyVoice-BlankEN" / "config.json"
    config.write_text(json.dumps({**source.hparams.qwen2_config, "hidden_size": 896}))
    with pytest.raises(ValueError, match="hidden_size=896"):
        tiny().load_pretrained(str(folder))
    config.write_text(json.dumps(source.hparams.qwen2_config))
    state = source.state_dict()
    state.pop("llm_decoder.bias")
    torch.save(state, folder / "llm.pt")
    with pytest.raises(CheckpointMismatchError, match="llm_decoder.bias"):
        tiny().load_pretrained(str(folder))


# ---- layouts -----------------------------------------------------------------------------------
def _plan(n_text: int, m_speech: int, interleave: bool, prefix: int = 0):
    speech = torch.arange(100, 100 + m_speech)
    return [t.tolist() for t in plan_row(n_text, speech, prefix, interleave, MixRatio(5, 15), SpecialIds(V))]


def test_bistream_layout_hand_checked() -> None:
    kind, index, target = _plan(7, 20, interleave=True)
    # sos | t0..t4 | s0..s14 | t5 t6 | task | s15..s19
    assert kind == [0] + [2] * 5 + [3] * 15 + [2] * 2 + [0] + [3] * 5
    assert index == [0, *range(5), *range(15), 5, 6, 1, *range(15, 20)]
    s = lambda i: 100 + i  # noqa: E731
    assert target == (
        [IGNORE_INDEX] * 5
        + [s(i) for i in range(15)]
        + [FILL]
        + [IGNORE_INDEX] * 2
        + [s(i) for i in range(15, 20)]
        + [EOS]
    )


def test_bistream_tail_when_text_runs_out_on_a_chunk_boundary() -> None:
    kind, index, target = _plan(10, 33, interleave=True, prefix=2)
    # sos | q0 q1 | t0..t4 | s0..s14 | t5..t9 | s15..s29 | task | s30..s32  (no text left before task)
    assert kind == [0, 1, 1] + ([2] * 5 + [3] * 15) * 2 + [0] + [3] * 3
    assert index[-4:] == [1, 30, 31, 32]
    assert target[:7] == [IGNORE_INDEX] * 7 and target[7] == 100
    assert target[42] == FILL and target[43] == 130  # last speech of chunk 2 -> fill; task -> s30
    assert target[-1] == EOS and len(target) == 2 + 2 + 10 + 33


def test_unistream_layout_hand_checked() -> None:
    kind, index, target = _plan(3, 4, interleave=False)
    assert kind == [0, 2, 2, 2, 0, 3, 3, 3, 3]
    assert index == [0, 0, 1, 2, 1, 0, 1, 2, 3]
    assert target == [IGNORE_INDEX] * 4 + [100, 101, 102, 103, EOS]


def test_ratio_that_does_not_divide_is_an_error(model) -> None:
    with pytest.raises(ValueError, match="does not divide"):
        _plan(10, 29, interleave=True)
    semantic = SequenceBatch(torch.randn(1, 10, 64), torch.tensor([10]))
    with pytest.raises(ValueError, match="does not divide"):
        model.decoder_forward(
            semantic,
            TokenBatch(torch.zeros(1, 20, dtype=torch.long), torch.tensor([20])),
            interleave=torch.tensor([True]),
        )
    short = model.decoder_forward(
        semantic, TokenBatch(torch.zeros(1, 20, dtype=torch.long), torch.tensor([20]))
    )
    assert short.layout.interleaved.tolist() == [False]  # default: unistream where 5:15 cannot fit
    with pytest.raises(ValueError, match="mix_ratio"):
        tiny(mix_ratio=[5, 0])
    with pytest.raises(ValueError, match="mix_ratio"):
        tiny(mix_ratio=[5, 15, 1])


def test_bad_inputs_are_errors(model) -> None:
    text = TokenBatch(torch.tensor([[3, 4, 5]]), torch.tensor([3]))
    with pytest.raises(ValueError, match=r"token ids in \[0, 6561\)"):
        model.tts_forward(text, TokenBatch(torch.tensor([[1, 2, V]]), torch.tensor([3])))
    with pytest.raises(ValueError, match="empty text"):
        model.tts_forward(TokenBatch(torch.zeros(1, 3, dtype=torch.long), torch.tensor([0])), text)
    with pytest.raises(ValueError, match="width 64"):
        model.decoder_forward(SequenceBatch(torch.randn(1, 5, 32), torch.tensor([5])), text)
    state = model.init_state(1)
    with pytest.raises(ValueError, match="at most 5"):
        model.step(SemanticChunk(SequenceBatch(torch.randn(1, 6, 64), torch.tensor([6]))), state)
    with pytest.raises(ValueError, match="empty text"):
        model.step(SemanticChunk(SequenceBatch(torch.randn(1, 5, 64), torch.tensor([0]))), state)
    with pytest.raises(ValueError, match=r"exactly 5 per step .* state\.end_input"):
        model.step(SemanticChunk(SequenceBatch(torch.randn(1, 5, 64), torch.tensor([3]))), state)


def test_empty_text_string_is_an_error(tmp_path, tokenizer_dir) -> None:
    block = tiny(tokenizer_path=str(tokenizer_dir))
    with pytest.raises(ValueError, match="empty text"):
        block.tokenize(["hello", ""])


# ---- loss --------------------------------------------------------------------------------------
def test_label_smoothed_loss_matches_kl_definition() -> None:
    logits = torch.randn(2, 4, 7)
    targets = torch.tensor([[1, IGNORE_INDEX, 3, 6], [0, 2, IGNORE_INDEX, IGNORE_INDEX]])
    eps = 0.1
    q = torch.full((8, 7), eps / 6)
    flat = targets.reshape(-1)
    q[torch.arange(8), flat.clamp(min=0)] = 1 - eps
    kl = (q * (q.log() - logits.reshape(-1, 7).log_softmax(-1))).sum(-1)[flat != IGNORE_INDEX]
    torch.testing.assert_close(label_smoothed_kl(logits, targets, eps, True), kl.sum() / 5)
    torch.testing.assert_close(label_smoothed_kl(logits, targets, eps, False), kl.sum() / 2)
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, 7), flat, ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(label_smoothed_kl(logits, targets, 0.0, True), ce)


def test_tts_training_step_learns(tokenizer_dir) -> None:
    block = tiny(tokenizer_path=str(tokenizer_dir), learning_rate=3e-3)
    block.train()
    batch = {
        "text": ["hello world", "the quick brown fox"],
        "speech_tokens": TokenBatch(torch.randint(0, V, (2, 40)), torch.tensor([30, 40])),
    }
    block.log = lambda *a, **k: None
    optimizer = block.configure_optimizers()["optimizer"]
    losses = []
    for i in range(5):
        loss = block.training_step(batch, i)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]
    with pytest.raises(KeyError, match="minmo prepare"):
        block.training_step({"text": ["hello"]}, 0)


def test_styled_rows_train_in_cosyvoice2_instruct_format(tokenizer_dir) -> None:
    """A row with an instruction reads it, <|endofprompt|> (one special id), then its text; others read text."""
    block = tiny(tokenizer_path=str(tokenizer_dir))
    block.log = lambda *a, **k: None
    read: list[list[str]] = []
    tokenize = block.tokenize
    block.tokenize = lambda texts: (read.append(texts), tokenize(texts))[1]
    speech = TokenBatch(torch.randint(0, V, (2, 40)), torch.tensor([30, 40]))
    batch = {"text": ["hello world", "the quick brown fox"], "speech_tokens": speech}
    plain = block.training_step(batch, 0)
    styled = block.training_step({**batch, "instruction": [None, "Say it slowly. "]}, 0)
    assert read == [
        ["hello world", "the quick brown fox"],
        ["hello world", "Say it slowly.<|endofprompt|>the quick brown fox"],
    ]
    assert float(plain) != float(styled)
    ids = tokenize(["Say it slowly.<|endofprompt|>fox"]).tokens[0].tolist()
    assert block.tokenizer.convert_tokens_to_ids("<|endofprompt|>") in ids


# ---- decoding ----------------------------------------------------------------------------------
def test_kv_cached_equals_uncached(model) -> None:
    embeds = torch.randn(2, 23, 64)
    full, _ = model.llm(embeds, torch.ones(2, 23, dtype=torch.long))
    state = model.init_state(2)
    pieces = [
        model.feed(state, embeds[:, start:end], torch.ones(2, end - start, dtype=torch.bool))
        for start, end in ((0, 7), (7, 8), (8, 23))
    ]
    for piece, end in zip(pieces, (7, 8, 23)):
        torch.testing.assert_close(piece, full[:, end - 1], atol=1e-5, rtol=1e-5)


def _stream(
    model,
    semantic: SequenceBatch,
    prefix: SequenceBatch | None,
    max_calls: int = 40,
    end_with_last_vectors: bool = False,
):
    """Feed ``semantic`` 5 vectors at a time, then empty chunks until every row finished.

    A row's text ends (``end_input``) on the first call that brings fewer than 5 vectors, or with
    ``end_with_last_vectors`` on the call that brings its last ones (a full chunk included).
    """
    batch = semantic.values.shape[0]
    state = model.init_state(batch)
    rows: list[list[int]] = [[] for _ in range(batch)]
    per_call = []
    for call in range(max_calls):
        start = 5 * call
        lengths = (semantic.lengths - start).clamp(0, 5)
        values = semantic.values[:, start : start + 5]
        if values.shape[1] < 5:
            values = torch.cat([values, values.new_zeros(batch, 5 - values.shape[1], values.shape[2])], 1)
        last = semantic.lengths <= start + 5 if end_with_last_vectors else lengths < 5
        state.end_input(last)
        chunk = SemanticChunk(SequenceBatch(values, lengths), prefix if call == 0 else None)
        out = model.step(chunk, state)
        per_call.append(out.lengths.tolist())
        for i in range(batch):
            rows[i] += out.tokens[i, : out.lengths[i]].tolist()
        if bool(state.finished.all()):
            break
    return rows, per_call, state


def test_streaming_equals_teacher_forced_argmax(model) -> None:
    torch.manual_seed(1)
    model.sampling = SpeechSamplingConfig(greedy=True)
    semantic = SequenceBatch(torch.randn(2, 12, 64), torch.tensor([12, 7]))
    prefix = SequenceBatch(torch.randn(2, 2, 64), torch.tensor([2, 1]))
    rows, per_call, state = _stream(model, semantic, prefix)
    assert per_call[0] == [15, 15] and per_call[1][0] == 15  # full chunks give exactly 15 tokens
    assert bool(state.finished.all())
    for i in range(2):
        n, p = int(semantic.lengths[i]), int(prefix.lengths[i])
        assert_teacher_forced_argmax(model, semantic.values[i, :n], prefix.values[i, :p], rows[i])


def test_text_may_end_with_its_last_full_chunk() -> None:
    """``end_input`` with the last 5 vectors: the chunk still gets its 15 tokens, the turn of speech follows."""
    torch.manual_seed(4)
    model = tiny(max_token_text_ratio=6.0)
    model.sampling = SpeechSamplingConfig(greedy=True)
    semantic = SequenceBatch(torch.randn(2, 10, 64), torch.tensor([10, 7]))
    on_empty_chunk, per_call, _ = _stream(model, semantic, None)
    with_last_chunk, per_call_early, _ = _stream(model, semantic, None, end_with_last_vectors=True)
    assert per_call_early[1] == per_call[1] == [15, 15]
    assert with_last_chunk == on_empty_chunk
    assert len(on_empty_chunk[0]) > 30  # speech after the turn of speech was written


def test_streaming_batch_rows_are_independent(model) -> None:
    torch.manual_seed(2)
    model.sampling = SpeechSamplingConfig(greedy=True)
    semantic = SequenceBatch(torch.randn(2, 11, 64), torch.tensor([11, 4]))
    together, _, _ = _stream(model, semantic, None)
    for i in range(2):
        alone, _, _ = _stream(
            model, SequenceBatch(semantic.values[i : i + 1], semantic.lengths[i : i + 1]), None
        )
        assert alone[0] == together[i]


def test_eos_only_after_turn_of_speech_and_reset() -> None:
    block = tiny(max_token_text_ratio=3.0)
    block.sampling = SpeechSamplingConfig(greedy=True)
    with torch.no_grad():
        block.llm_decoder.bias[EOS] += 100.0  # eos is always the most likely id
    state = block.init_state(2)
    full = SequenceBatch(torch.randn(2, 5, 64), torch.tensor([5, 5]))
    assert block.step(SemanticChunk(full), state).lengths.tolist() == [
        15,
        15,
    ]  # eos banned while text is coming
    end = SequenceBatch(torch.randn(2, 5, 64), torch.tensor([2, 0]))
    state.end_input([0, 1])
    out = block.step(SemanticChunk(end), state)
    assert out.lengths.tolist() == [0, 0] and state.finished.tolist() == [True, True]
    state.reset([1])
    assert state.finished.tolist() == [True, False] and int(state.mask[1].sum()) == 0
    assert state.input_ended.tolist() == [True, False]
    again = block.step(SemanticChunk(SequenceBatch(torch.randn(2, 5, 64), torch.tensor([0, 5]))), state)
    assert again.lengths.tolist() == [0, 15]


def test_generate_unistream_batch_matches_single(model) -> None:
    torch.manual_seed(3)
    text = TokenBatch(torch.randint(0, 300, (2, 6)), torch.tensor([6, 4]))
    prompt = TokenBatch(torch.randint(0, V, (2, 5)), torch.tensor([5, 3]))
    greedy = VoiceLMStreamOptions(sampler=lambda logp, history: logp.argmax(-1))
    both = generate(model, text, prompt_speech=prompt, options=greedy)
    assert both.lengths.tolist() == [18, 12]  # no eos before 2x text, capped at 3x text
    for i in range(2):
        one = generate(
            model,
            TokenBatch(text.tokens[i : i + 1, : text.lengths[i]], text.lengths[i : i + 1]),
            prompt_speech=TokenBatch(
                prompt.tokens[i : i + 1, : prompt.lengths[i]], prompt.lengths[i : i + 1]
            ),
            options=greedy,
        )
        assert one.tokens[0].tolist() == both.tokens[i, : both.lengths[i]].tolist()


# ---- sampling ----------------------------------------------------------------------------------
def test_ras_redraws_repeated_tokens_from_the_whole_distribution() -> None:
    """CosyVoice2's RAS: the nucleus (here top_k 1) unless its draw repeats in the window; then one draw
    from the full softmax, where the repeated token keeps its plain chance."""
    rows = 400
    logp = torch.full((rows, 10), -20.0)
    logp[:, 3] = logp[:, 5] = 0.0  # tokens 3 and 5 share the mass; the nucleus of size 1 holds only 3
    config = SpeechSamplingConfig(top_p=0.8, top_k=1, win_size=4, tau_r=0.5)
    fresh = torch.full((rows, 4), -1)
    assert set(sample_tokens(logp, fresh, config).tolist()) == {3}
    repeated = torch.tensor(
        [[3, 3, 1, 2]] * (rows // 2) + [[3, 1, 2, 4]] * (rows // 2)
    )  # first half: 2 >= 4 * 0.5
    drawn = sample_tokens(logp, repeated, config, torch.Generator().manual_seed(0))
    redrawn, kept = drawn[: rows // 2], drawn[rows // 2 :]
    assert set(kept.tolist()) == {3}
    assert set(redrawn.tolist()) == {3, 5} and 0.35 < float((redrawn == 5).float().mean()) < 0.65


def test_generate_bistream_streams_and_rejects_empty_text(model) -> None:
    greedy = VoiceLMStreamOptions(sampler=lambda logp, history: logp.argmax(-1))
    pieces = [torch.randint(0, 300, (n,)) for n in (3, 4)]
    tokens = list(generate_bistream(model, iter(pieces), options=greedy))
    assert 15 <= len(tokens) <= 21 and all(
        0 <= t < V for t in tokens
    )  # 15 after the first 5 text, capped at 3x
    with pytest.raises(ValueError, match="empty text"):
        list(generate_bistream(model, iter([]), options=greedy))


def test_ras_sampling_is_seeded_and_in_range() -> None:
    block = tiny(max_token_text_ratio=2.0)  # default sampling: RAS top_p 0.8, top_k 25, window 10
    semantic = SequenceBatch(torch.randn(2, 5, 64), torch.tensor([5, 3]))
    runs = []
    for _ in range(2):
        state = block.init_state(2, VoiceLMStreamOptions(generator=torch.Generator().manual_seed(7)))
        state.end_input([1])
        out = block.step(SemanticChunk(semantic), state)
        runs.append(out.tokens)
        assert int(out.tokens.max()) < V and out.lengths[0] == 15
    assert torch.equal(runs[0], runs[1])


def test_lr_schedule_constant_or_cosine_following_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    from minmo_lightning.components.voice_token_lm import cosyvoice2_lm

    configs = []
    monkeypatch.setattr(cosyvoice2_lm, "configure_adamw", lambda module, config: configs.append(config))
    tiny().configure_optimizers()
    tiny(lr_schedule="cosine").configure_optimizers()
    assert not configs[0].cosine  # CosyVoice2's own: constant after warmup
    assert configs[1].cosine and configs[1].follow_timer  # a time-budgeted run ends annealed
    with pytest.raises(ValueError, match="lr_schedule must be one of constant, cosine"):
        tiny(lr_schedule="linear")


def test_training_on_speech_that_outruns_the_mix_ratio_warns_once_with_the_fix() -> None:
    """Rows with fewer speech tokens per text token than the ratio interleaves (their speech would run
    ahead of the text read so far) are named at the first training batch, with a ratio that fits."""
    import warnings

    from minmo_lightning.components.voice_token_lm.cosyvoice2_lm import MixRatioMismatch

    torch.manual_seed(0)
    lm = tiny(mix_ratio=[5, 15]).train()
    text_lengths = torch.tensor([10, 10, 10, 10])
    speech = TokenBatch(torch.zeros(4, 40, dtype=torch.long), torch.tensor([25, 26, 40, 27]))
    semantic = SequenceBatch(torch.randn(4, 10, lm.hidden_size), text_lengths)
    with pytest.warns(MixRatioMismatch, match=r"3 of these 4 .*median 2\.60.*mix_ratio \[5, 12\]"):
        lm.decoder_forward(semantic, speech)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lm.decoder_forward(semantic, speech)  # once per run
        fits = tiny(mix_ratio=[5, 10]).train()
        fits.check_mix_ratio(text_lengths, speech.lengths)
        lm.eval()
        tiny(mix_ratio=[5, 15]).decoder_forward(semantic, speech)  # inference never warns
    assert MixRatio(5, 15).outruns_text(text_lengths, speech.lengths).tolist() == [True, True, False, True]


def test_speech_input_noise_swaps_inputs_while_training_and_keeps_the_targets() -> None:
    """A ``speech_input_noise`` share of the teacher-forced speech ids is swapped for random ids in training
    only; the targets (and evaluation) see the true ids."""
    torch.manual_seed(0)
    lm = tiny(speech_input_noise=0.25).train()
    tokens = torch.randint(0, V, (8, 400))
    noisy = lm.teacher_tokens(tokens)
    swapped = float((noisy != tokens).float().mean())
    assert 0.2 < swapped < 0.3 and int(noisy.max()) < V
    speech = TokenBatch(tokens[:2, :40], torch.tensor([40, 31]))
    semantic = SequenceBatch(torch.randn(2, 10, lm.hidden_size), torch.tensor([10, 8]))
    interleave = torch.tensor([False, False])
    noisy_pass = lm.decoder_forward(semantic, speech, interleave=interleave)
    lm.eval()
    assert torch.equal(lm.teacher_tokens(tokens), tokens)
    clean_pass = lm.decoder_forward(semantic, speech, interleave=interleave)
    assert torch.equal(noisy_pass.layout.targets, clean_pass.layout.targets)
    assert not torch.equal(noisy_pass.layout.inputs, clean_pass.layout.inputs)
    with pytest.raises(ValueError, match="speech_input_noise must lie in"):
        tiny(speech_input_noise=1.0)
