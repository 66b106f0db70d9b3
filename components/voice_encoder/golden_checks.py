"""Parity checks against funasr fixtures (``minmo check-golden``): frontend, SAN-M encoder, full model.

Each check maps the reference's own hyperparameter names (``config.json``) onto ``SenseVoiceEncoder``'s
constructor, loads the fixture's state dict strictly and compares on valid frames with the README's
tolerances.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from minmo_lightning.components.voice_encoder.ctc import greedy_ctc
from minmo_lightning.components.voice_encoder.frontend import SenseVoiceFrontend, load_cmvn
from minmo_lightning.components.voice_encoder.sensevoice import SenseVoiceEncoder
from minmo_lightning.components.voice_encoder.sensevoice_loading import ENCODER_CONF_KEYS
from minmo_lightning.components.voice_encoder.sensevoice_queries import (
    EVENT_EMOTION_ROWS,
    LID_ROWS,
    NUM_QUERY_ROWS,
    TEXTNORM_ROWS,
)
from minmo_lightning.components.voice_encoder.tokenizer import BLANK_ID
from torch import Tensor

from minmo_lightning.checkpoints import load_state_dict_strict
from minmo_lightning.contracts import TokenBatch, lengths_to_mask
from minmo_lightning.golden import Comparison, Fixture, compare, compare_exact, golden_check

ATOL = RTOL = 1e-4
#: token ids of the rich tags in the official 25055-piece sentencepiece vocabulary
OFFICIAL_TAG_IDS = {
    "<|zh|>": 24884,
    "<|en|>": 24885,
    "<|yue|>": 24888,
    "<|ja|>": 24892,
    "<|ko|>": 24896,
    "<|nospeech|>": 24992,
    "<|withitn|>": 25016,
    "<|woitn|>": 25017,
    "<|HAPPY|>": 25001,
    "<|SAD|>": 25002,
    "<|ANGRY|>": 25003,
    "<|NEUTRAL|>": 25004,
    "<|EMO_UNKNOWN|>": 25009,
}


def _valid(values: Tensor, lengths: Tensor) -> Tensor:
    return values[lengths_to_mask(lengths.long(), values.shape[1])]


def block_from_reference(encoder_conf: dict[str, Any], input_size: int, vocab_size: int) -> SenseVoiceEncoder:
    """Our block with the reference's SAN-M hyperparameters (``encoder_conf`` names), eval mode."""
    if encoder_conf.get("selfattention_layer_type", "sanm") != "sanm" or not encoder_conf.get(
        "normalize_before", True
    ):
        raise ValueError("only pre-norm SAN-M encoders (SenseVoiceEncoderSmall) are implemented")
    lfr_m = 7 if input_size % 7 == 0 else 1
    return SenseVoiceEncoder(
        **{ours: encoder_conf[theirs] for theirs, ours in ENCODER_CONF_KEYS.items()},
        sanm_shift=encoder_conf.get("sanm_shfit", 0),
        dropout_rate=encoder_conf.get("dropout_rate", 0.1),
        attention_dropout_rate=encoder_conf.get("attention_dropout_rate", 0.1),
        vocab_size=vocab_size,
        n_mels=input_size // lfr_m,
        lfr_m=lfr_m,
    ).eval()


@golden_check("sensevoice_frontend")
def check_frontend(fixture: Fixture) -> list[Comparison]:
    conf = fixture.config["frontend_conf"]
    cmvn = fixture["input.cmvn"]
    results = []
    if (fixture.folder / "am.mvn").is_file():
        results.append(compare("cmvn parsed from am.mvn", load_cmvn(fixture.folder / "am.mvn"), cmvn, 0.0))
    wave, lengths = fixture["input.waveform"], fixture["input.waveform_lengths"]
    for name, m, n, use_cmvn in (
        ("fbank", 1, 1, False),
        ("lfr", conf["lfr_m"], conf["lfr_n"], False),
        ("feats", conf["lfr_m"], conf["lfr_n"], True),
    ):
        frontend = SenseVoiceFrontend(
            conf["fs"], conf["n_mels"], conf["frame_length"], conf["frame_shift"], m, n, conf["dither"]
        ).eval()
        frontend.set_cmvn(cmvn if use_cmvn else None)
        feats, feat_lengths = frontend(wave, lengths)
        ref_lengths = fixture[f"output.{name}_lengths"]
        results.append(compare_exact(f"{name}_lengths", feat_lengths, ref_lengths))
        results.append(
            compare(
                name, _valid(feats, ref_lengths), _valid(fixture[f"output.{name}"], ref_lengths), 1e-3, 1e-4
            )
        )
    return results


@golden_check("sensevoice_encoder")
def check_encoder(fixture: Fixture) -> list[Comparison]:
    config = fixture.config
    block = block_from_reference(config["encoder_conf"], config["input_size"], vocab_size=1)
    load_state_dict_strict(block.encoder, fixture.state_dict(), source=str(fixture.folder))
    x, lengths = fixture["input.xs_pad"], fixture["input.ilens"].long()
    hooks = {}
    handles = [
        block.encoder.encoders0[0].register_forward_hook(
            lambda module, inputs, output: hooks.setdefault("encoders0_out", output)
        ),
        block.encoder.after_norm.register_forward_hook(
            lambda module, inputs, output: hooks.setdefault("after_norm_out", output)
        ),
    ]
    out = block.encoder(x.clone(), lengths)
    for handle in handles:
        handle.remove()
    results = [compare_exact("encoder_out_lens", lengths.int(), fixture["output.encoder_out_lens"])]
    results.append(
        compare(
            "encoder_out", _valid(out, lengths), _valid(fixture["output.encoder_out"], lengths), ATOL, RTOL
        )
    )
    for name, value in hooks.items():
        ref = fixture[f"output.intermediate.{name}"]
        results.append(
            compare(f"intermediate.{name}", _valid(value, lengths), _valid(ref, lengths), ATOL, RTOL)
        )
    return results


def _check_constants(ids: dict[str, Any]) -> list[Comparison]:
    def exact(name: str, ours: list[int], ref: list[int]) -> Comparison:
        return compare_exact(name, torch.tensor(ours), torch.tensor(ref))

    tag_rows = {int(k): v for k, v in {**ids["lid_int_dict"], **ids["textnorm_int_dict"]}.items()}
    our_rows = {
        OFFICIAL_TAG_IDS[tag]: row
        for tag, row in ((f"<|{k}|>", v) for k, v in {**LID_ROWS, **TEXTNORM_ROWS}.items())
        if tag in OFFICIAL_TAG_IDS
    }
    emotions = {
        k: OFFICIAL_TAG_IDS[{"unk": "<|EMO_UNKNOWN|>"}.get(k, f"<|{k.upper()}|>")] for k in ids["emo_dict"]
    }
    return [
        exact("ids.lid_dict", [LID_ROWS.get(k, -1) for k in ids["lid_dict"]], list(ids["lid_dict"].values())),
        exact(
            "ids.textnorm_dict",
            [TEXTNORM_ROWS.get(k, -1) for k in ids["textnorm_dict"]],
            list(ids["textnorm_dict"].values()),
        ),
        exact("ids.event_emo_rows", list(EVENT_EMOTION_ROWS), ids["event_emo_query_embed_rows"]),
        exact("ids.embed_rows", [NUM_QUERY_ROWS], [ids["embed_num_embeddings"]]),
        exact("ids.blank", [BLANK_ID], [ids["blank_id"]]),
        exact("ids.tag_token_rows", sorted(our_rows.items()), sorted(tag_rows.items())),
        exact("ids.emo_dict", list(emotions.values()), list(ids["emo_dict"].values())),
    ]


@golden_check("sensevoice_model")
def check_model(fixture: Fixture) -> list[Comparison]:
    config = fixture.config
    conf = config["model_conf"]
    block = block_from_reference(config["encoder_conf"], conf["input_size"], conf["vocab_size"])
    load_state_dict_strict(block, fixture.state_dict(), source=str(fixture.folder))
    speech, lengths = fixture["input.speech"], fixture["input.speech_lengths"].long()
    results = _check_constants(config["ids"])
    for case in config["cases"]:
        prefix = f"output.case{case['case']}."
        rows = block.query_rows(speech.shape[0], case["language"], case["use_itn"])
        results.append(compare_exact(f"case{case['case']}.query_ids", rows[0], fixture[prefix + "query_ids"]))
        encoder_in, in_lengths = block.with_queries(speech, lengths, rows)
        out, out_lengths = block.encode(speech, lengths, rows)
        logits = block.ctc(out)
        log_probs = logits.log_softmax(-1)
        greedy = TokenBatch.from_list(greedy_ctc(log_probs, out_lengths, BLANK_ID))
        ref_ids = fixture[prefix + "greedy_ids"]
        ids = greedy.tokens.masked_fill(~greedy.mask, -1)  # the reference pads its id rows with -1
        ids = F.pad(ids, (0, max(ref_ids.shape[1] - ids.shape[1], 0)), value=-1)
        checks = [
            ("encoder_in_lengths", in_lengths.int(), None),
            ("encoder_out_lens", out_lengths.int(), None),
            ("greedy_ids", ids, None),
            ("greedy_ids_lengths", greedy.lengths, None),
            ("encoder_in", encoder_in, in_lengths),
            ("encoder_out", out, out_lengths),
            ("ctc_logits", logits, out_lengths),
            ("ctc_log_probs", log_probs, out_lengths),
        ]
        for name, ours, valid in checks:
            ref = fixture[prefix + name]
            label = f"case{case['case']}.{name}"
            if valid is None:
                results.append(compare_exact(label, ours, ref))
            else:
                results.append(compare(label, _valid(ours, valid), _valid(ref, valid), ATOL, RTOL))
    return results
