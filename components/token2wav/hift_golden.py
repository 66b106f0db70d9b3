"""Parity with the official CosyVoice2 ``HiFTGenerator`` (golden item ``hift``, see its README)."""

from __future__ import annotations

import torch
from minmo_lightning.components.token2wav.hift import HiFTVocoder
from minmo_lightning.components.token2wav.weight_norm import upgrade_weight_norm_keys

from minmo_lightning.checkpoints import load_state_dict_strict
from minmo_lightning.golden import Comparison, Fixture, compare, compare_exact, golden_check


@golden_check("hift")
def check_hift(fixture: Fixture) -> list[Comparison]:
    ref = fixture.config["HiFTGenerator"]
    if ref["f0_predictor"].get("num_class", 1) != 1:
        raise ValueError(
            f"HiFT f0 predictor with num_class {ref['f0_predictor']['num_class']} is not supported"
        )
    model = HiFTVocoder(
        in_channels=ref["in_channels"],
        base_channels=ref["base_channels"],
        nb_harmonics=ref["nb_harmonics"],
        sampling_rate=ref["sampling_rate"],
        nsf_alpha=ref["nsf_alpha"],
        nsf_sigma=ref["nsf_sigma"],
        nsf_voiced_threshold=ref["nsf_voiced_threshold"],
        upsample_rates=ref["upsample_rates"],
        upsample_kernel_sizes=ref["upsample_kernel_sizes"],
        istft_n_fft=ref["istft_params"]["n_fft"],
        istft_hop_len=ref["istft_params"]["hop_len"],
        resblock_kernel_sizes=ref["resblock_kernel_sizes"],
        resblock_dilation_sizes=ref["resblock_dilation_sizes"],
        source_resblock_kernel_sizes=ref["source_resblock_kernel_sizes"],
        source_resblock_dilation_sizes=ref["source_resblock_dilation_sizes"],
        lrelu_slope=ref["lrelu_slope"],
        audio_limit=ref["audio_limit"],
        f0_cond_channels=ref["f0_predictor"]["cond_channels"],
    ).eval()
    load_state_dict_strict(model, upgrade_weight_norm_keys(fixture.state_dict()), source=str(fixture.folder))
    inp = fixture.group("input.")
    out = fixture.group("output.")
    wave = dict(atol=1e-5, rtol=1e-4)
    results = [compare("f0", model.f0_predictor(inp["mel"]), out["f0"], atol=1e-4, rtol=1e-4)]

    source = inp["source"]
    spec = torch.view_as_real(
        torch.stft(
            source.squeeze(1),
            model.n_fft,
            model.hop,
            model.n_fft,
            window=model.stft_window,
            return_complex=True,
        )
    )
    results.append(
        compare(
            "decode_source_stft",
            torch.cat([spec[..., 0], spec[..., 1]], 1),
            out["decode_source_stft"],
            **wave,
        )
    )
    results.append(compare("decode_wav", model.decode(inp["mel"], source), out["decode_wav"], **wave))

    f0 = inp["m_source.f0"]
    scale = model.samples_per_frame
    results.append(
        compare_exact(
            "m_source.f0_upsampled", f0.repeat_interleave(scale, 1)[..., None], out["m_source.f0_upsampled"]
        )
    )
    merged, uv, _ = model.m_source(f0, inp["m_source.draw.sine_noise"])
    results.append(compare("m_source.sine_merge", merged.transpose(1, 2), out["m_source.sine_merge"], **wave))
    results.append(compare_exact("m_source.uv", uv, out["m_source.uv"]))

    inference_source = model.excitation(model.f0_predictor(inp["mel"]), inp["inference.draw.sine_noise"])
    results.append(compare("inference.source", inference_source, out["inference.source"], **wave))
    wav = model(inp["mel"], draws=inp["inference.draw.sine_noise"])
    results.append(compare("inference.wav", wav, out["inference.wav"], **wave))
    return results
