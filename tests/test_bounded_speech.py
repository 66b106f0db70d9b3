"""Every speech decoding loop stops at a cap and says so; the golden harness gives bistream its recorded cap."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from minmo_lightning.components.voice_token_lm.cosyvoice2_lm import CosyVoice2LM
from minmo_lightning.components.voice_token_lm.generation import (
    SpeechCapReached,
    generate,
    generate_bistream,
)
from safetensors.torch import load_file, save_file

from minmo_lightning.contracts import SemanticChunk, SequenceBatch, TokenBatch, VoiceLMStreamOptions
from minmo_lightning.golden import run_golden

EOS = 6561
GREEDY = VoiceLMStreamOptions(sampler=lambda logp, history: logp.argmax(-1))


def never_ends(ratio: float = 20.0) -> CosyVoice2LM:
    """Random tiny weights that never choose end-of-speech (its logit is pushed far down)."""
    model = CosyVoice2LM.from_preset("tiny", max_token_text_ratio=ratio)
    model.configure_model()
    with torch.no_grad():
        model.llm_decoder.bias[EOS] -= 100.0
    return model.eval()


def backbone_calls(model: CosyVoice2LM) -> list[int]:
    calls: list[int] = []
    model.llm.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[1]))
    return calls


# ---- bistream ------------------------------------------------------------------------------------
def test_bistream_without_eos_stops_exactly_at_max_tokens() -> None:
    model = never_ends()
    calls = backbone_calls(model)
    pieces = [torch.randint(0, 300, (n,)) for n in (4, 6, 3)]
    with pytest.warns(SpeechCapReached, match="max_tokens=40 speech tokens"):
        tokens = list(generate_bistream(model, iter(pieces), options=GREEDY, max_tokens=40))
    assert len(tokens) == 40 and all(0 <= t < EOS for t in tokens)
    # 40 speech steps and the 2 forced fills between them, nothing after the cap (13 text tokens x 20 allowed 260)
    assert len(calls) == 42


def test_bistream_cap_can_cut_the_text_short() -> None:
    """The cap ends the stream at once: text still coming is left unread, as a consumer that stops pulling."""
    model = never_ends()
    read: list[int] = []

    def text():
        for i in range(10):
            read.append(i)
            yield torch.randint(0, 300, (5,))

    with pytest.warns(SpeechCapReached):
        tokens = list(generate_bistream(model, text(), options=GREEDY, max_tokens=20))
    assert len(tokens) == 20 and read == [0, 1]  # 15 tokens per 5 text tokens: the second block hit the cap


def test_bistream_without_max_tokens_stops_at_the_ratio_cap() -> None:
    model = never_ends(ratio=3.0)
    pieces = [torch.randint(0, 300, (n,)) for n in (3, 4)]
    match = r"max_token_text_ratio=3 x 7 text tokens = 21 speech tokens"
    with pytest.warns(SpeechCapReached, match=match):
        tokens = list(generate_bistream(model, iter(pieces), options=GREEDY))
    assert len(tokens) == 21


def test_bistream_that_ends_by_itself_does_not_warn(recwarn) -> None:
    model = CosyVoice2LM.from_preset("tiny")
    model.configure_model()
    with torch.no_grad():
        model.llm_decoder.bias[EOS] += 100.0  # eos as soon as it is allowed (after the text)
    pieces = [torch.randint(0, 300, (n,)) for n in (5, 2)]
    tokens = list(generate_bistream(model.eval(), iter(pieces), options=GREEDY, max_tokens=100))
    assert len(tokens) == 15 and not [w for w in recwarn if issubclass(w.category, SpeechCapReached)]


def test_max_tokens_must_be_positive() -> None:
    model = never_ends()
    with pytest.raises(ValueError, match="max_tokens must be at least 1"):
        list(generate_bistream(model, iter([torch.arange(5)]), options=GREEDY, max_tokens=0))
    with pytest.raises(ValueError, match="max_tokens must be at least 1"):
        generate(model, TokenBatch(torch.arange(5)[None], torch.tensor([5])), options=GREEDY, max_tokens=0)


# ---- unistream and the streaming voice decoder ------------------------------------------------------
def test_generate_names_the_rows_its_cap_stopped() -> None:
    model = CosyVoice2LM.from_preset("tiny")
    model.configure_model()
    with torch.no_grad():
        model.llm_decoder.bias[EOS] += 100.0  # eos as soon as min_token_text_ratio (2 x text) allows
    text = TokenBatch(torch.randint(0, 300, (2, 6)), torch.tensor([6, 2]))
    with pytest.warns(SpeechCapReached, match=r"rows \[0\] stopped at max_tokens=8 speech tokens"):
        out = generate(model.eval(), text, options=GREEDY, max_tokens=8)
    assert out.lengths.tolist() == [8, 4]  # row 1 ended by itself after its 2 x 2 tokens


def test_streaming_step_says_which_rows_hit_the_ratio_cap() -> None:
    model = never_ends(ratio=3.0)
    state = model.init_state(2, GREEDY)
    first = SequenceBatch(torch.randn(2, 5, 64), torch.tensor([5, 5]))
    assert model.step(SemanticChunk(first), state).lengths.tolist() == [15, 15]
    state.end_input([0, 1])
    last = SequenceBatch(torch.randn(2, 5, 64), torch.tensor([2, 1]))
    with pytest.warns(SpeechCapReached, match=r"CosyVoice2LM.step rows \[0, 1\]"):
        out = model.step(SemanticChunk(last), state)
    assert out.lengths.tolist() == [6, 3] and state.finished.all()  # 3 x 7 and 3 x 6 speech tokens


# ---- the golden harness -----------------------------------------------------------------------------
def capped_copy(source: Path, out: Path, cap: int) -> Path:
    """The ``cosyvoice2_llm`` fixture as if its reference bistream run had been consumed for ``cap`` tokens.

    The reference generator is lazy, so that run is a prefix of the recorded one: the first ``cap``
    tokens, the sampler calls up to the one that gave the last of them, and the backbone calls up to it.
    Each backbone call is followed by one choice: a forced fill (the next call then feeds more than one
    input: new text, or the final block) or a sampler call (whose argmax is the token; fills are forced).
    """
    tensors = load_file(str(source / "tensors.safetensors"))
    prefix = "output.inference_bistream."
    tokens, logp = tensors[prefix + "tokens"], tensors[prefix + "sampled_step_logp"]
    lens = tensors[prefix + "forward_one_step_input_lens"].tolist()
    sampled = (logp.argmax(-1) < EOS).long().cumsum(0)
    sampler_calls = int((sampled < cap).sum()) + 1  # through the one that gave token number `cap`
    forced = [i + 1 < len(lens) and lens[i + 1] > 1 for i in range(len(lens))]
    sampling_call = [i for i, f in enumerate(forced) if not f][sampler_calls - 1]
    assert len(lens) - sum(forced) == logp.shape[0]  # every sampler call found its backbone call
    tensors[prefix + "tokens"] = tokens[:cap].clone()
    tensors[prefix + "sampled_step_logp"] = logp[:sampler_calls].clone()
    tensors[prefix + "forward_one_step_input_lens"] = torch.tensor(lens[: sampling_call + 1])
    out.mkdir()
    save_file(tensors, str(out / "tensors.safetensors"))
    config = json.loads((source / "config.json").read_text())
    config["inference_bistream"]["max_tokens"] = cap
    (out / "config.json").write_text(json.dumps(config))
    return out


def failed(folder: Path) -> list[str]:
    _, results = run_golden(folder)
    assert results
    return [r.name for r in results if not r.passed]


def test_golden_fixture_passes_and_its_uncapped_run_ends_by_itself(golden_dir: Path) -> None:
    folder = golden_dir / "cosyvoice2_llm"
    assert json.loads((folder / "config.json").read_text())["inference_bistream"]["max_tokens"] == 150
    _, results = run_golden(folder)
    by_name = {r.name: r for r in results}
    assert all(r.passed for r in results)
    assert by_name["inference_bistream.stopped_at_cap"].passed  # 137 tokens then eos: not at the cap of 150


@pytest.mark.parametrize("cap", [40, 130])  # while the text streams in; after it, before eos
def test_golden_harness_stops_bistream_at_the_recorded_cap(
    golden_dir: Path, tmp_path: Path, cap: int
) -> None:
    folder = capped_copy(golden_dir / "cosyvoice2_llm", tmp_path / "capped", cap)
    assert failed(folder) == []
    config = json.loads((folder / "config.json").read_text())
    del config["inference_bistream"]["max_tokens"]  # a harness that ignored the cap runs on to eos
    ignored = tmp_path / "ignored"
    shutil.copytree(folder, ignored)
    (ignored / "config.json").write_text(json.dumps(config))
    assert "inference_bistream.tokens" in failed(ignored)
