"""Golden parity of ``S3TokenizerV2`` against the s3tokenizer 0.3.0 fixture (item ``s3tokenizer_v2``)."""

from __future__ import annotations

from minmo_lightning.components.speech_tokenizer.s3tokenizer import S3TokenizerV2

from minmo_lightning.checkpoints import load_state_dict_strict
from minmo_lightning.contracts import AudioBatch, lengths_to_mask
from minmo_lightning.golden import Comparison, Fixture, compare, compare_exact, golden_check


def from_reference_config(config: dict) -> S3TokenizerV2:
    """Build from the reference's ``ModelConfig`` names (and the constants it fixes in code)."""
    model_config, fixed = config["ModelConfig"], config.get("fixed_in_code", {})
    if model_config["n_codebook_size"] != 3**8:
        raise ValueError(f"S3Tokenizer v2 has 3**8 codes, the fixture says {model_config['n_codebook_size']}")
    return S3TokenizerV2.from_preset(
        "speech-tokenizer-v2-25hz",
        n_mels=model_config["n_mels"],
        dim=model_config["n_audio_state"],
        n_heads=model_config["n_audio_head"],
        n_layers=model_config["n_audio_layer"],
        fsmn_kernel_size=fixed.get("fsmn_kernel_size", 31),
        ln_eps=fixed.get("attn_ln_eps", 1e-5),
    )


@golden_check("s3tokenizer_v2")
def check_s3tokenizer_v2(fixture: Fixture) -> list[Comparison]:
    model = from_reference_config(fixture.config).eval()
    load_state_dict_strict(model, fixture.state_dict(), source=str(fixture.folder))
    inputs, outputs = fixture.group("input."), fixture.group("output.")

    mel, mel_lengths = model.frontend(inputs["waveform"], inputs["waveform_lengths"])
    results = [
        compare("mel", mel, outputs["mel"], atol=1e-4, rtol=1e-4),
        compare_exact("mel_lengths", mel_lengths.int(), outputs["mel_lengths"]),
    ]

    hidden, lengths = model.encoder(inputs["mel"], inputs["mel_lengths"].long())
    tokens = model.quantizer.encode(hidden)
    valid = lengths_to_mask(outputs["token_lengths"].long(), tokens.shape[1])
    results += [
        compare_exact("token_lengths", lengths.int(), outputs["token_lengths"]),
        compare_exact("tokens (valid positions)", tokens[valid].int(), outputs["tokens"][valid]),
        compare(
            "encoder_hidden (valid)",
            hidden[valid],
            outputs["intermediate.encoder_hidden"][valid],
            atol=1e-4,
            rtol=1e-4,
        ),
        compare(
            "fsq_project_down (valid)",
            model.quantizer._codebook.project_down(hidden)[valid],
            outputs["intermediate.fsq_project_down"][valid],
            atol=1e-4,
            rtol=1e-4,
        ),
    ]
    # End to end: waveform -> tokens through forward() must give the same tokens.
    batch = model(AudioBatch(inputs["waveform"], inputs["waveform_lengths"], model.sample_rate))
    results.append(
        compare_exact("forward() tokens (valid)", batch.tokens[valid].int(), outputs["tokens"][valid])
    )
    return results
