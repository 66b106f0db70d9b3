"""Parity with the official CosyVoice2 ``Qwen2LM`` (golden item ``cosyvoice2_llm``, see its README)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import Tensor

from minmo_lightning.checkpoints import load_state_dict_strict
from minmo_lightning.contracts import IGNORE_INDEX, TokenBatch, VoiceLMStreamOptions
from minmo_lightning.golden import Comparison, Fixture, compare, compare_exact, golden_check

from .cosyvoice2_lm import CosyVoice2LM
from .generation import SpeechCapReached, generate, generate_bistream
from .layout import Layout

#: reference ``Qwen2Config`` fields that shape the computation (the rest is bookkeeping)
_QWEN2_FIELDS = (
    "vocab_size", "max_position_embeddings", "hidden_size", "intermediate_size", "num_hidden_layers",
    "num_attention_heads", "num_key_value_heads", "hidden_act", "rms_norm_eps", "rope_theta",
    "tie_word_embeddings", "use_sliding_window", "sliding_window", "max_window_layers", "attention_dropout",
)  # fmt: skip
LOGIT_TOL = 1e-4
#: the reference's layout spells "not scored" as target -1 and pads ``lm_input`` with -1.0
REFERENCE_IGNORE_ID, REFERENCE_PAD = -1, -1.0
Result = TypeVar("Result")


def build_from_fixture(fixture: Fixture) -> CosyVoice2LM:
    ref, backbone = fixture.config["Qwen2LM"], fixture.config["Qwen2Encoder.pretrain_path -> Qwen2Config"]
    if ref["llm_input_size"] != backbone["hidden_size"] or ref["llm_output_size"] != backbone["hidden_size"]:
        raise ValueError("CosyVoice2LM ties llm_input_size and llm_output_size to the Qwen2 hidden size")
    model = CosyVoice2LM(
        qwen2_config={k: backbone[k] for k in _QWEN2_FIELDS if k in backbone},
        speech_vocab_size=ref["speech_token_size"],
        mix_ratio=list(ref["mix_ratio"]),
        lsm_weight=float(ref["lsm_weight"]),
        length_normalized_loss=bool(ref["length_normalized_loss"]),
        dtype="float32",
        attn_implementation=fixture.config.get("attn_implementation", "sdpa"),
    )
    model.configure_model()
    load_state_dict_strict(model, fixture.state_dict(), source=f"{fixture.folder} state_dict")
    return model.eval()


def _tokens(fixture: Fixture, name: str, lengths: str | None = None) -> TokenBatch:
    tokens = fixture[f"input.{name}"].long()
    size = fixture[f"input.{lengths}"].long() if lengths else torch.full((tokens.shape[0],), tokens.shape[1])
    return TokenBatch(tokens, size)


def _as_reference(layout: Layout) -> tuple[Tensor, Tensor]:
    """Our layout's inputs and targets spelled with the reference's padding and ignore values."""
    inputs = torch.where(layout.mask[..., None], layout.inputs, REFERENCE_PAD)
    targets = torch.where(layout.targets == IGNORE_INDEX, REFERENCE_IGNORE_ID, layout.targets)
    return inputs, targets


def _capped(run: Callable[[], Result]) -> tuple[Result, bool]:
    """``run()`` and whether it stopped at a length cap (its ``SpeechCapReached`` warning, kept off the
    console; any other warning goes on)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run()
    for warning in caught:
        if not issubclass(warning.category, SpeechCapReached):
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return result, any(issubclass(w.category, SpeechCapReached) for w in caught)


def _compare_finite(name: str, ours: Tensor, ref: Tensor) -> list[Comparison]:
    """Log-prob vectors with banned ids at -inf: same -inf pattern, finite entries within tolerance."""
    if ours.shape != ref.shape:
        return [compare_exact(name, ours, ref)]  # fails, naming both shapes
    finite = torch.isfinite(ref)
    return [
        compare_exact(f"{name} (-inf pattern)", torch.isfinite(ours), finite),
        compare(name, ours[finite], ref[finite], LOGIT_TOL, LOGIT_TOL),
    ]


@golden_check("cosyvoice2_llm")
def check_cosyvoice2_llm(fixture: Fixture) -> list[Comparison]:
    model = build_from_fixture(fixture)
    text = _tokens(fixture, "batch.text_token", "batch.text_token_len")
    speech = _tokens(fixture, "batch.speech_token", "batch.speech_token_len")
    results: list[Comparison] = []
    for name, interleave in (("unistream", False), ("bistream", True)):
        out = model.tts_forward(text, speech, torch.full(text.lengths.shape, interleave))
        ref = fixture.group(f"output.{name}.")
        valid = ref["valid_mask"]
        inputs, targets = _as_reference(out.layout)
        results += [
            compare_exact(f"{name}.lm_input", inputs, ref["lm_input"]),
            compare_exact(f"{name}.lm_target", targets, ref["lm_target"]),
            compare_exact(f"{name}.lm_input_len", out.layout.lengths, ref["lm_input_len"]),
            compare_exact(f"{name}.valid_mask", out.layout.mask, valid),
            compare(f"{name}.lm_output", out.hidden[valid], ref["lm_output"][valid], LOGIT_TOL, LOGIT_TOL),
            compare(f"{name}.logits", out.logits[valid], ref["logits"][valid], LOGIT_TOL, LOGIT_TOL),
            compare(f"{name}.loss", out.loss, ref["loss"], 1e-5),
            compare_exact(f"{name}.acc", out.acc, ref["acc"]),
        ]

    steps: list[Tensor] = []

    def greedy_recorder(logp: Tensor, history: Tensor) -> Tensor:
        steps.append(logp[0].clone())
        return logp.argmax(-1)

    # the reference generator was consumed for its first n tokens: our run stops at that cap and says so
    expected = fixture["output.inference.tokens"]
    generated, capped = _capped(
        lambda: generate(
            model,
            _tokens(fixture, "inference.text"),
            prompt_text=_tokens(fixture, "inference.prompt_text"),
            prompt_speech=_tokens(fixture, "inference.prompt_speech_token"),
            options=VoiceLMStreamOptions(sampler=greedy_recorder),
            max_tokens=expected.numel(),
        )
    )
    results.append(compare_exact("inference.tokens", generated.tokens[0], expected))
    results.append(compare_exact("inference.stopped_at_cap", torch.tensor(capped), torch.tensor(True)))
    results += _compare_finite(
        "inference.step_logp", torch.stack(steps), fixture["output.inference.step_logp"]
    )
    return results + _check_bistream_inference(model, fixture)


def _check_bistream_inference(model: CosyVoice2LM, fixture: Fixture) -> list[Comparison]:
    """Text arriving in pieces: tokens, sampler inputs and the length of every backbone call.

    The reference generator was consumed until it ended or yielded ``inference_bistream.max_tokens`` tokens
    (config.json; a fixture without it was consumed to the end): our run gets the same cap, and stops at it
    (with its warning) exactly when the reference run was cut there.
    """
    steps: list[Tensor] = []
    call_lengths: list[int] = []

    def greedy_recorder(logp: Tensor, history: Tensor) -> Tensor:
        steps.append(logp[0].clone())
        return logp.argmax(-1)

    inputs = fixture.group("input.inference_bistream.")
    chunks = [inputs[f"text_chunk{i}"] for i in range(sum(k.startswith("text_chunk") for k in inputs))]
    max_tokens = fixture.config.get("inference_bistream", {}).get("max_tokens")
    hook = model.llm.register_forward_pre_hook(lambda module, args: call_lengths.append(args[0].shape[1]))
    try:
        options = VoiceLMStreamOptions(sampler=greedy_recorder)
        tokens, capped = _capped(
            lambda: list(
                generate_bistream(
                    model,
                    iter(chunks),
                    inputs["prompt_text"],
                    inputs["prompt_speech_token"],
                    options,
                    max_tokens=max_tokens,
                )
            )
        )
    finally:
        hook.remove()
    ref = fixture.group("output.inference_bistream.")
    lens = "inference_bistream.forward_one_step_input_lens"
    reference_capped = max_tokens is not None and ref["tokens"].numel() == max_tokens
    return [
        compare_exact("inference_bistream.tokens", torch.tensor(tokens), ref["tokens"]),
        compare_exact(
            "inference_bistream.stopped_at_cap", torch.tensor(capped), torch.tensor(reference_capped)
        ),
        compare_exact(lens, torch.tensor(call_lengths), ref["forward_one_step_input_lens"]),
        *_compare_finite(
            "inference_bistream.sampled_step_logp", torch.stack(steps), ref["sampled_step_logp"]
        ),
    ]
