"""The one resolver: short names, dotted paths and aliases to classes, with a near-miss message."""

from __future__ import annotations

import gc

import lightning as L
import pytest

from minmo_lightning.blocks import LLMBackbone, VoiceEncoder
from minmo_lightning.registry import RegistryError, resolve_class


class Vocoderish:
    """A throw-away hierarchy, so these tests neither see nor add real implementations."""


class FancyVocoder(Vocoderish):
    alias = "fancy"


class FancierVocoder(FancyVocoder):
    """Inherits ``alias`` but does not declare it: only FancyVocoder answers to "fancy"."""


class _HiddenVocoder(Vocoderish):
    pass


class DeepVocoder(_HiddenVocoder):
    """Below a private class: still found."""


def test_short_name_finds_subclasses_at_any_depth_in_every_searched_package() -> None:
    from minmo_lightning.components.llm.hf_causal_lm import HFCausalLM
    from minmo_lightning.datamodules.tasks import EmotionDataModule

    from minmo_lightning.model import MinMo

    assert resolve_class("HFCausalLM", LLMBackbone) is HFCausalLM
    assert resolve_class("EmotionDataModule", L.LightningDataModule) is EmotionDataModule
    assert resolve_class("MinMo", L.LightningModule) is MinMo
    assert resolve_class("DeepVocoder", Vocoderish) is DeepVocoder


def test_dotted_path() -> None:
    from minmo_lightning.components.llm.hf_causal_lm import HFCausalLM

    assert resolve_class("minmo_lightning.components.llm.hf_causal_lm.HFCausalLM", LLMBackbone) is HFCausalLM
    with pytest.raises(RegistryError, match="there is no module 'minmo_lightning.nowhere'"):
        resolve_class("minmo_lightning.nowhere.HFCausalLM", LLMBackbone)
    with pytest.raises(RegistryError, match="module 'minmo_lightning.registry' has no 'Nothing'"):
        resolve_class("minmo_lightning.registry.Nothing", LLMBackbone)


def test_alias_is_the_class_own_declaration() -> None:
    assert resolve_class("fancy", Vocoderish) is FancyVocoder
    assert resolve_class("FancierVocoder", Vocoderish) is FancierVocoder


def test_unknown_name_suggests_the_near_miss_and_lists_the_choices() -> None:
    with pytest.raises(RegistryError) as error:
        resolve_class("HFCausalLN", LLMBackbone, what="model.init_args.llm.class_path")
    message = str(error.value)
    assert message.startswith(
        "model.init_args.llm.class_path 'HFCausalLN' is not a known LLMBackbone (did you mean HFCausalLM?); "
        "valid choices: "
    )
    assert "HFCausalLM" in message.split("valid choices: ")[1]

    with pytest.raises(RegistryError) as error:
        resolve_class("fancyy", Vocoderish, what="vocoder")
    assert str(error.value) == (
        "vocoder 'fancyy' is not a known Vocoderish (did you mean fancy?); "
        "valid choices: DeepVocoder, FancierVocoder, FancyVocoder, fancy"
    )


def test_private_classes_are_not_choices() -> None:
    with pytest.raises(RegistryError, match="not a known Vocoderish"):
        resolve_class("_HiddenVocoder", Vocoderish)


def test_class_of_another_base_is_refused() -> None:
    with pytest.raises(
        RegistryError,
        match="'minmo_lightning.components.llm.hf_causal_lm.HFCausalLM' is not a VoiceEncoder subclass",
    ):
        resolve_class("minmo_lightning.components.llm.hf_causal_lm.HFCausalLM", VoiceEncoder)
    with pytest.raises(RegistryError, match="is not a VoiceEncoder subclass"):
        resolve_class("minmo_lightning.registry.resolve_class", VoiceEncoder)
    with pytest.raises(RegistryError, match="'HFCausalLM' is not a known VoiceEncoder"):
        resolve_class("HFCausalLM", VoiceEncoder)


def test_one_name_for_two_classes_asks_for_the_dotted_path() -> None:
    twin = type("FancyVocoder", (Vocoderish,), {"__module__": "elsewhere"})
    try:
        with pytest.raises(
            RegistryError, match=r"names several Vocoderish classes \(.*elsewhere.FancyVocoder"
        ):
            resolve_class("FancyVocoder", Vocoderish)
    finally:
        del twin
        gc.collect()  # a class lives in its base's __subclasses__ until collected
    assert resolve_class("FancyVocoder", Vocoderish) is FancyVocoder


def test_list_has_every_slot_and_groups_token2wav_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    from minmo_lightning import model
    from minmo_lightning.registry import NONE_REGISTERED, list_presets

    class Unimplemented:
        """A slot nothing implements."""

    monkeypatch.setitem(model.SLOT_TYPES, "vision_encoder", Unimplemented)
    rows = list_presets(count=False)
    slots = {row.slot for row in rows}
    assert set(model.SLOT_TYPES) <= slots and "Block" not in slots
    assert [(r.implementation, r.preset) for r in rows if r.slot == "vision_encoder"] == [
        (NONE_REGISTERED, "-")
    ]
    by_slot = {slot: {r.implementation for r in rows if r.slot == slot} for slot in slots}
    assert by_slot["token2wav"] == {"CosyVoice2Token2Wav"}
    assert by_slot["token2wav (flow)"] == {"CosyVoice2Flow"}
    assert by_slot["token2wav (vocoder)"] == {"HiFTVocoder", "GriffinLimVocoder"}
    assert by_slot["speech_tokenizer"] == {"S3TokenizerV2"}
