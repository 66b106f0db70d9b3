"""Parity checks against the reference fixtures ``cosyvoice2_flow_estimator`` and ``cosyvoice2_flow``.

Each check builds our modules from the reference hyperparameters in the fixture's ``config.json``, loads the
reference state dict strictly and compares with the README's tolerances (1e-4 for mel-like outputs, 1e-6 for
spks/cond/mask, 1e-5 for the loss).
"""

from __future__ import annotations

from typing import Any

import torch
from minmo_lightning.components.token2wav.cfm import CFMDraws
from minmo_lightning.components.token2wav.decoder import CausalConditionalDecoder
from minmo_lightning.components.token2wav.flow import CosyVoice2Flow, SpeakerPrompt
from minmo_lightning.components.token2wav.flow_cache import chunk_attention_mask, chunk_ids

from minmo_lightning.checkpoints import load_state_dict_strict
from minmo_lightning.contracts import TokenBatch
from minmo_lightning.golden import Comparison, Fixture, compare, golden_check

_ESTIMATOR_ARGS = (
    "channels",
    "attention_head_dim",
    "n_blocks",
    "num_mid_blocks",
    "num_heads",
    "dropout",
    "act_fn",
)


def _estimator_args(config: dict[str, Any]) -> dict[str, Any]:
    return {name: config[name] for name in _ESTIMATOR_ARGS if name in config}


@golden_check("cosyvoice2_flow_estimator")
def check_estimator(fixture: Fixture) -> list[Comparison]:
    config = fixture.config["CausalConditionalDecoder"]
    estimator = CausalConditionalDecoder(
        in_channels=config["in_channels"], out_channels=config["out_channels"], **_estimator_args(config)
    ).eval()
    load_state_dict_strict(estimator, fixture.state_dict(), source=str(fixture.folder))
    inputs = fixture.group("input.")
    valid = inputs["mask"][:, 0].bool()
    lengths, length = valid.sum(1), valid.shape[1]
    results = []
    for streaming in (False, True):
        ids = chunk_ids(lengths, length, config["static_chunk_size"]) if streaming else None
        left = config["num_decoding_left_chunks"]
        attn_mask = chunk_attention_mask(ids, valid, left * config["static_chunk_size"] if left >= 0 else -1)
        out = estimator(
            inputs["x"], inputs["mask"], inputs["mu"], inputs["t"], inputs["spks"], inputs["cond"], attn_mask
        )
        name = f"streaming_{streaming}"
        results.append(compare(name, out, fixture[f"output.{name}"], atol=1e-4, rtol=1e-4))
        padded = out * (1 - inputs["mask"])
        results.append(compare(f"{name} padded frames", padded, torch.zeros_like(padded), atol=0.0))
    return results


def build_flow(fixture: Fixture) -> tuple[CosyVoice2Flow, int]:
    """Our flow from the reference config; returns it with the encoder's static chunk size (tokens)."""
    top = fixture.config["CausalMaskedDiffWithXvec"]
    enc = fixture.config["encoder: UpsampleConformerEncoder"]
    cfm = fixture.config["decoder: CausalConditionalCFM"]
    est = fixture.config["decoder.estimator: CausalConditionalDecoder"]
    for name, expected in (("input_layer", "linear"), ("pos_enc_layer_type", "rel_pos_espnet"),
                           ("selfattention_layer_type", "rel_selfattn"), ("use_cnn_module", False),
                           ("macaron_style", False), ("normalize_before", True)):  # fmt: skip
        if enc.get(name, expected) != expected:
            raise ValueError(
                f"our UpsampleConformerEncoder implements {name}={expected!r}, fixture has {enc[name]!r}"
            )
    chunk = enc["static_chunk_size"]
    if est["static_chunk_size"] != chunk * top["token_mel_ratio"]:
        raise ValueError("estimator chunk must be the encoder chunk x token_mel_ratio (as in CosyVoice2)")
    params = cfm["cfm_params"]
    flow = CosyVoice2Flow(
        vocab_size=top["vocab_size"],
        input_size=top["input_size"],
        output_size=top["output_size"],
        spk_embed_dim=top["spk_embed_dim"],
        token_mel_ratio=top["token_mel_ratio"],
        pre_lookahead_len=top["pre_lookahead_len"],
        encoder={
            "output_size": enc["output_size"],
            "attention_heads": enc["attention_heads"],
            "linear_units": enc["linear_units"],
            "num_layers": enc["num_blocks"],
            "dropout_rate": enc["dropout_rate"],
            "positional_dropout_rate": enc["positional_dropout_rate"],
            "attention_dropout_rate": enc["attention_dropout_rate"],
        },
        estimator=_estimator_args(est),
        inference_cfg_rate=params["inference_cfg_rate"],
        training_cfg_rate=params["training_cfg_rate"],
        sigma_min=params["sigma_min"],
        chunk_size=chunk,
        num_left_chunks=est["num_decoding_left_chunks"],
    ).eval()
    load_state_dict_strict(flow, fixture.state_dict(), source=str(fixture.folder))
    return flow, chunk


@golden_check("cosyvoice2_flow")
def check_flow(fixture: Fixture) -> list[Comparison]:
    flow, chunk = build_flow(fixture)
    results = []
    noise = flow.decoder.noise(torch.zeros(1, dtype=torch.long), 64, torch.device("cpu"), torch.float32)
    results.append(
        compare("cfm noise (first frames)", noise, fixture["input.cfm_rand_noise_first_frames"], atol=0.0)
    )

    inputs = fixture.group("input.inference.")
    tokens = TokenBatch(inputs["token"], inputs["token_len"].long())
    prompt = SpeakerPrompt(
        embedding=inputs["embedding"],
        tokens=TokenBatch(inputs["prompt_token"], inputs["prompt_token_len"].long()),
        mel=inputs["prompt_feat"],
    )
    for mode, streaming, finalize in (
        ("nonstream_final", False, True),
        ("stream_final", True, True),
        ("stream_nonfinal", True, False),
    ):
        mel, _, given = flow.inference(
            tokens,
            prompt,
            chunk_size=chunk if streaming else None,
            num_left_chunks=-1,
            align_chunks_to_prompt=False,
            finalize=finalize,
        )
        ref = f"output.inference.{mode}."
        results.append(compare(f"{mode}.mel", mel, fixture[ref + "mel"], atol=1e-4, rtol=1e-4))
        results.append(
            compare(f"{mode}.mu", given["mu"], fixture[ref + "decoder_in.mu"], atol=1e-4, rtol=1e-4)
        )
        for name in ("mask", "spks", "cond"):
            results.append(
                compare(f"{mode}.{name}", given[name], fixture[ref + f"decoder_in.{name}"], atol=1e-6)
            )

    train = fixture.group("input.train.")
    draws = fixture.config["train_draws"]
    prompt_frames = _scripted_prompt_frames(draws, train["speech_feat_len"])
    out = flow.flow_matching_loss(
        TokenBatch(train["speech_token"], train["speech_token_len"].long()),
        train["speech_feat"],
        train["embedding"],
        streaming=draws["streaming"],
        prompt_frames=prompt_frames,
        draws=CFMDraws(
            t=train["draw.t"].view(-1),
            z=train["draw.z"],
            keep_condition=train["draw.cfg_rand"] > flow.decoder.training_cfg_rate,
        ),
    )
    results.append(compare("train.h", out["h"], fixture["output.train.h"], atol=1e-4, rtol=1e-4))
    for name in ("x", "mu", "t"):
        results.append(
            compare(
                f"train.{name}", out[name], fixture[f"output.train.estimator_in.{name}"], atol=1e-4, rtol=1e-4
            )
        )
    for name in ("mask", "spks", "cond"):
        results.append(
            compare(f"train.{name}", out[name], fixture[f"output.train.estimator_in.{name}"], atol=1e-6)
        )
    results.append(
        compare("train.pred", out["pred"], fixture["output.train.estimator_pred"], atol=1e-4, rtol=1e-4)
    )
    results.append(compare("train.loss", out["loss"], fixture["output.train.loss"], atol=1e-5))
    return results


def _scripted_prompt_frames(draws: dict[str, Any], feat_lengths: torch.Tensor) -> torch.Tensor:
    """Replay the reference's python draws: one ``random()`` per sample (< 0.5: no prompt), then ``randint``."""
    per_sample = draws["random.random"][1:]
    randints = iter(value for _, _, value in draws["random.randint"])
    frames = [0 if r < 0.5 else next(randints) for r in per_sample[: len(feat_lengths)]]
    return torch.tensor(frames)
