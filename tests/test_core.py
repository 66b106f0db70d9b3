"""Foundation: imports, registry, stage rules, the composite, checkpoints, the golden harness."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import lightning as L
import pytest
import torch
from builders import FramingTestEncoder, tiny_batch, tiny_minmo
from jsonargparse import ArgumentParser
from minmo_lightning.components.input_projector.projectors import TransformerConvProjector
from minmo_lightning.components.llm.hf_causal_lm import HFCausalLM

from minmo_lightning import blocks, registry
from minmo_lightning.golden import UnknownGoldenItem, run_golden
from minmo_lightning.model import MinMo
from minmo_lightning.stages import StageError, compile_stage, expected_trainable


def test_every_module_imports() -> None:
    roots = ["minmo_lightning"]
    for root in roots:
        package = importlib.import_module(root)
        for info in pkgutil.walk_packages(package.__path__, prefix=root + "."):
            importlib.import_module(info.name)


def test_namespace_maps_top_level_folders() -> None:
    import minmo_lightning.components
    import minmo_lightning.datamodules
    import minmo_lightning.evaluation
    import minmo_lightning.recipes

    repo = Path(minmo_lightning.__file__).resolve().parents[1]
    assert Path(minmo_lightning.components.__file__).resolve().parent == repo / "components"
    assert Path(minmo_lightning.recipes.__file__).resolve().parent == repo / "recipes"


def _forward(self, audio):  # a complete VoiceEncoder needs only forward beyond its attributes
    raise NotImplementedError


def test_duplicate_implementation_name_is_rejected() -> None:
    members = {"forward": _forward}
    type("SomeDuplicateEncoder", (blocks.VoiceEncoder,), {**members, "__module__": __name__})
    try:
        with pytest.raises(registry.RegistryError, match="already registered"):
            type("SomeDuplicateEncoder", (blocks.VoiceEncoder,), {**members, "__module__": "elsewhere"})
    finally:
        registry.unregister("SomeDuplicateEncoder")


def test_incomplete_implementation_fails_at_class_definition() -> None:
    """A voice LM without the streaming step: the slot names what is missing, and nothing registers."""
    with pytest.raises(
        blocks.IncompleteBlockError, match=r"HalfVoiceLM \(a VoiceTokenLM\).* init_state, step"
    ):

        class HalfVoiceLM(blocks.VoiceTokenLM):
            def decoder_forward(self, semantic, speech, prefix=None):
                raise NotImplementedError

    assert "HalfVoiceLM" not in registry.implementations()


def test_every_slot_member_the_composite_calls_is_declared() -> None:
    """LLM properties the composite reads are abstract on the slot, so a backbone without them cannot exist."""
    abstract = {
        n
        for n in dir(blocks.LLMBackbone)
        if getattr(getattr(blocks.LLMBackbone, n), "__isabstractmethod__", False)
    }
    assert {"max_positions", "tokenizer", "has_lora", "merge_lora", "apply_lora", "hidden_size"} <= abstract
    assert {"query_length", "forward"} <= {
        n
        for n in dir(blocks.OutputProjector)
        if getattr(getattr(blocks.OutputProjector, n), "__isabstractmethod__", False)
    }


def test_missing_data_attribute_fails_at_construction() -> None:
    """``frame_rate`` is declared by the VoiceEncoder slot: an encoder that never sets it cannot be built."""

    class NoFrameRateEncoder(blocks.VoiceEncoder):
        def __init__(self) -> None:
            super().__init__()
            self.sample_rate, self.output_dim = 16000, 8

        forward = _forward

    try:
        with pytest.raises(blocks.IncompleteBlockError, match="NoFrameRateEncoder .*does not set frame_rate"):
            NoFrameRateEncoder()
    finally:
        registry.unregister("NoFrameRateEncoder")


def test_every_implementation_resolves_by_short_class_name() -> None:
    """What a recipe does: ``class_path: ShortName`` against the slot type, with a preset's args."""
    for name, cls in registry.implementations().items():
        slot = next((s for s in blocks.SLOTS if issubclass(cls, s)), blocks.Block)
        parser = ArgumentParser(exit_on_error=False)
        parser.add_argument("--block", type=slot)
        preset = "tiny" if "tiny" in cls.presets else None
        init_args = cls.preset_args(preset) if preset else {}
        config = parser.parse_object({"block": {"class_path": name, "init_args": init_args}})
        assert config.block.class_path.endswith("." + name)
        if preset:
            block = parser.instantiate_classes(config).block
            assert isinstance(block, cls)


def test_every_block_that_validates_alone_validates_on_a_mixture() -> None:
    """A ``MixtureDataModule`` hands Lightning one validation loader per source, and Lightning then passes
    ``dataloader_idx``: a block trained alone on a mixture (a flow on plain and styled speech) takes it."""
    import inspect

    validating = {
        name: cls
        for name, cls in registry.implementations().items()
        if cls.validation_step is not L.LightningModule.validation_step
    }
    assert "CosyVoice2Flow" in validating and "CosyVoice2LM" in validating
    for name, cls in validating.items():
        assert "dataloader_idx" in inspect.signature(cls.validation_step).parameters, name


def test_presets_count_on_meta_device() -> None:
    assert registry.count_preset_parameters(HFCausalLM, "qwen2.5-7b-instruct") == 7_615_616_512
    assert (
        160e6
        < registry.count_preset_parameters(TransformerConvProjector, "whisper-large-v3-to-qwen2.5-7b")
        < 180e6
    )


def test_every_preset_builds_on_the_meta_device() -> None:
    """What `minmo list` does; also proves real-size presets need no memory to describe."""
    rows = registry.list_presets(count=True)
    parameter_free = {"GriffinLimVocoder"}
    assert rows and all(
        r.parameters is None or r.parameters > 0 or r.implementation in parameter_free for r in rows
    )


def test_unknown_preset_lists_available() -> None:
    with pytest.raises(KeyError, match="available presets: .*tiny"):
        HFCausalLM.from_preset("huge")


def test_stage_rules() -> None:
    slots = ["voice_encoder", "input_projector", "llm"]
    with pytest.raises(StageError, match="does not say whether these slots train: llm"):
        compile_stage({"voice_encoder": "frozen", "input_projector": "full"}, slots)
    with pytest.raises(StageError, match="does not have"):
        compile_stage(
            {"voice_encoder": "frozen", "input_projector": "full", "llm": "full", "token2wav": "full"}, slots
        )
    with pytest.raises(StageError, match="choose one of"):
        compile_stage({"voice_encoder": "frozen", "input_projector": "half", "llm": "full"}, slots)

    model = tiny_minmo()
    bad = compile_stage(model.hparams.trainable, model.slots, freeze_patterns=["^llm\\.no_such_layer"])
    with pytest.raises(StageError, match="matches no parameter"):
        expected_trainable(model, bad)


def test_trainable_table_and_lora_freezes_base_weights() -> None:
    model = tiny_minmo()
    rows = {r.slot: r for r in model.trainable_summary()}
    assert rows["voice_encoder"].trainable == 0
    assert rows["input_projector"].trainable == rows["input_projector"].total > 0
    assert 0 < rows["llm"].trainable < rows["llm"].total
    for name, param in model.llm.named_parameters():
        assert param.requires_grad == ("lora_" in name), name


def test_lora_stage_without_lora_support_fails_clearly() -> None:
    with pytest.raises(StageError, match="matches no parameter"):
        tiny_minmo(trainable={"voice_encoder": "lora", "input_projector": "full", "llm": "frozen"})


def test_frozen_slots_stay_in_eval_mode() -> None:
    model = tiny_minmo()
    model.train()
    assert not model.voice_encoder.training and model.input_projector.training


def test_wiring_mismatch_names_the_fix() -> None:
    with pytest.raises(ValueError, match="set the projector's output_dim to the LLM width"):
        MinMo(
            llm=HFCausalLM.from_preset("tiny"),
            voice_encoder=FramingTestEncoder.from_preset("tiny"),
            input_projector=TransformerConvProjector.from_preset("tiny", output_dim=48),
            trainable={"voice_encoder": "frozen", "input_projector": "full", "llm": "frozen"},
        )


class _ListData(L.LightningDataModule):
    """Pre-collated batches (the real datamodules are tested with the data issue)."""

    def _loader(self, n: int) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader([tiny_batch()] * n, batch_size=None)

    def train_dataloader(self):
        return self._loader(3)

    def val_dataloader(self):
        return self._loader(1)


def test_fit_checkpoint_round_trip(tmp_path: Path) -> None:
    model = tiny_minmo(tasks=["asr"])
    trainer = L.Trainer(
        max_steps=3,
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer.fit(model, datamodule=_ListData())
    after = model.state_dict()
    changed = {k for k in after if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("input_projector.") or "lora_" in k for k in changed), changed

    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    restored = MinMo.load_from_checkpoint(path)
    restored.eval(), model.eval()
    batch = tiny_batch()
    with torch.no_grad():
        assert torch.allclose(restored.speech_to_text_loss(batch), model.speech_to_text_loss(batch))
    assert restored.hparams.trainable == model.hparams.trainable


def test_next_stage_initialises_from_previous_checkpoint(tmp_path: Path) -> None:
    first = tiny_minmo(trainable={"voice_encoder": "frozen", "input_projector": "full", "llm": "frozen"})
    with torch.no_grad():
        first.input_projector.conv.bias.fill_(0.5)
    trainer = L.Trainer(max_steps=0, default_root_dir=tmp_path, logger=False, enable_progress_bar=False)
    trainer.strategy.connect(first)
    path = tmp_path / "stage1a.ckpt"
    trainer.save_checkpoint(path)
    second = tiny_minmo(init_checkpoint=str(path))
    assert torch.equal(second.input_projector.conv.bias, first.input_projector.conv.bias)
    assert second.llm.has_lora


def test_golden_harness_rejects_unknown_item(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"item": "no_such_block"}')
    from safetensors.torch import save_file

    save_file({"input.x": torch.zeros(1)}, str(tmp_path / "tensors.safetensors"))
    with pytest.raises(UnknownGoldenItem, match="no_such_block"):
        run_golden(tmp_path)


def test_export_writes_loadable_block_folders(tmp_path: Path) -> None:
    from minmo_lightning.export import export_blocks

    model = tiny_minmo(tasks=["asr"])
    with torch.no_grad():
        for name, p in model.llm.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    model.eval()
    batch = tiny_batch()
    with torch.no_grad():
        expected = model.speech_to_text_loss(batch)
    folders = export_blocks(model, tmp_path)
    assert (folders["llm"] / "adapter" / "adapter_config.json").is_file()

    rebuilt = tiny_minmo(
        tasks=["asr"],
        llm=HFCausalLM(path=str(folders["llm"]), dtype="float32"),
        trainable={"voice_encoder": "frozen", "input_projector": "full", "llm": "frozen"},
        init_blocks={
            slot: str(folders[slot] / "model.safetensors") for slot in ("voice_encoder", "input_projector")
        },
    ).eval()
    with torch.no_grad():
        assert torch.allclose(rebuilt.speech_to_text_loss(batch), expected, atol=1e-5)


def test_every_dev_fixture_has_a_golden_check(golden_dir: Path) -> None:
    """Parity itself runs in each block's tests; this catches a fixture nobody checks."""
    import json

    from minmo_lightning.golden import registered_items

    items = {
        json.loads(p.read_text())["item"]
        for p in golden_dir.glob("*/config.json")
        if (p.parent / "tensors.safetensors").exists()
    }
    assert items and items <= set(registered_items()), items - set(registered_items())


def test_token_batch_from_list_pads_and_masked_mean_skips_padding() -> None:
    from minmo_lightning.contracts import TokenBatch, masked_mean

    batch = TokenBatch.from_list([[5, 6, 7], [], [9]])
    assert batch.tokens.tolist() == [[5, 6, 7], [0, 0, 0], [9, 0, 0]] and batch.lengths.tolist() == [3, 0, 1]
    values = torch.tensor([[[1.0], [3.0], [100.0]], [[2.0], [4.0], [6.0]]])
    mask = torch.tensor([[True, True, False], [False, False, False]])
    assert masked_mean(values, mask).flatten().tolist() == [2.0, 0.0]


def test_every_objective_names_a_loss_method_and_known_slots() -> None:
    from minmo_lightning.model import OBJECTIVES, PREDICTIONS, SLOT_TYPES

    for name, objective in OBJECTIVES.items():
        assert callable(getattr(MinMo, objective.loss)), name
        assert set(objective.slots) <= set(SLOT_TYPES), name
    for field, method in PREDICTIONS:
        assert callable(getattr(MinMo, method)), field


def test_init_blocks_initialises_a_part_of_a_slot(tmp_path: Path) -> None:
    """A part trained alone (the flow of token2wav) starts its slot: ``init_blocks: {token2wav.flow: ...}``."""
    from builders import speaking_minmo
    from safetensors.torch import save_file

    trained = speaking_minmo(token2wav=True).token2wav.flow
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(0.5)
    path = tmp_path / "flow.safetensors"
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, str(path))
    model = speaking_minmo(token2wav=True, init_blocks={"token2wav.flow": str(path)})
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.token2wav.flow.state_dict().values(), trained.state_dict().values())
    )
    with pytest.raises(ValueError, match="token2wav has no part 'flwo' \\(its parts: flow, vocoder"):
        speaking_minmo(token2wav=True, init_blocks={"token2wav.flwo": str(path)})
