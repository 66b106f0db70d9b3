"""The distributed path on this CPU (gloo): strategy pieces compose with every stage recipe; DDP and FSDP2
(``FSDP2Strategy``, Lightning's ``ModelParallelStrategy``) train the tiny stage-1c composite on 2 processes
with the losses of 1 process; a sharded checkpoint saved at 2 ranks resumes at 1 and exports; DeepSpeed
without its package or CUDA fails in one line; the memory plan shards what it should.

The ``slow`` tests launch ``minmo fit`` as users do (Lightning starts the second process); on identical
items every rank's batch is the same, so 1 and 2 processes must give the same loss at every step.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
import subprocess
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import datasets
import lightning as L
import numpy as np
import pytest
import torch
import yaml
from builders import stage2b_minmo, tiny_minmo
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy
from minmo_lightning.components.llm.hf_causal_lm import HFCausalLM
from minmo_lightning.components.voice_encoder.cmvn import write_cmvn
from minmo_lightning.datamodules.synth import wav_bytes
from safetensors.torch import load_file
from torch.distributed.device_mesh import init_device_mesh

from minmo_lightning.checkpoints import read_checkpoint, read_state_dict
from minmo_lightning.cli import lightning_main
from minmo_lightning.contracts import TokenBatch
from minmo_lightning.distributed_checkpoint import is_sharded_checkpoint, read_sharded_checkpoint
from minmo_lightning.distributed_memory import memory_plan
from minmo_lightning.distributed_strategy import FSDP2Strategy
from minmo_lightning.export import main as export_main
from minmo_lightning.model import MinMo
from minmo_lightning.sharding import data_parallel_mesh, shard_model

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"
PIECES = sorted((RECIPES / "trainer").glob("*.yaml"))
STAGES = sorted((RECIPES / "minmo").glob("stage*.yaml")) + sorted((RECIPES / "tiny").glob("stage*.yaml"))
TINY_SFT = RECIPES / "tiny" / "stage1c_sft.yaml"


# ---- composition ------------------------------------------------------------------------------
def _without_local_files(node: object) -> object:
    """The full-size recipes name the user's model folders and earlier stages' checkpoints."""
    if isinstance(node, dict):
        return {
            k: None
            if k in ("path", "pretrained_path", "init_checkpoint") and isinstance(v, str)
            else _without_local_files(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_without_local_files(v) for v in node]
    return node


def _build_on_meta(piece: str, folder: Path) -> object:
    """Full-size stage 1c composed with ``recipes/trainer/<piece>.yaml``, built on the meta device."""
    stage = folder / "stage1c.yaml"
    full = yaml.safe_load((RECIPES / "minmo" / "stage1c_sft.yaml").read_text())
    stage.write_text(yaml.safe_dump(_without_local_files(full)))
    args = ["--config", str(stage), "--config", str(RECIPES / "trainer" / f"{piece}.yaml")]
    args += [
        "--trainer.accelerator",
        "cpu",
        "--trainer.devices",
        "1",
        "--trainer.default_root_dir",
        str(folder),
    ]
    with torch.device("meta"):
        cli = lightning_main(args, run=False)
        cli.model.configure_model()
    return cli


@pytest.fixture(scope="module")
def meta_cli(tmp_path_factory: pytest.TempPathFactory) -> object:
    return _build_on_meta("fsdp2", tmp_path_factory.mktemp("meta"))


@pytest.mark.parametrize("piece", PIECES, ids=lambda p: p.stem)
@pytest.mark.parametrize("stage", STAGES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_piece_composes_with_stage(stage: Path, piece: Path, meta_cli: object) -> None:
    """``--config STAGE --config PIECE`` (the parser of ``minmo fit``): the piece's strategy and precision
    replace the stage's; the stage keeps its model, data and schedule."""
    config = meta_cli.parser.parse_args(["--config", str(stage), "--config", str(piece)])
    wanted, own = yaml.safe_load(piece.read_text())["trainer"], yaml.safe_load(stage.read_text())
    strategy = config.trainer.strategy
    if isinstance(wanted["strategy"], str):
        assert strategy == wanted["strategy"]
    else:
        assert strategy.class_path == wanted["strategy"]["class_path"]
        for key, value in wanted["strategy"]["init_args"].items():
            assert strategy.init_args[key] == value, key
    assert config.trainer.precision == wanted["precision"]
    assert config.model.init_args.trainable == own["model"]["init_args"]["trainable"]
    assert config.trainer.max_steps == own["trainer"]["max_steps"]


@pytest.mark.parametrize(
    ("piece", "strategy"),
    [("cpu", SingleDeviceStrategy), ("ddp", DDPStrategy), ("fsdp2", FSDP2Strategy)],
)
def test_full_size_stage_builds_on_meta_with_piece(
    piece: str, strategy: type, meta_cli: object, tmp_path: Path
) -> None:
    cli = meta_cli if piece == "fsdp2" else _build_on_meta(piece, tmp_path)
    assert isinstance(cli.trainer.strategy, strategy)
    assert sum(p.numel() for p in cli.model.parameters()) > 7e9


# ---- strategies that cannot run here ---------------------------------------------------------------
def test_deepspeed_without_its_package_says_so(capsys: pytest.CaptureFixture) -> None:
    if importlib.util.find_spec("deepspeed") is not None:
        pytest.skip("deepspeed is installed here")
    args = ["--config", str(TINY_SFT), "--config", str(RECIPES / "trainer" / "deepspeed_zero3.yaml")]
    with pytest.raises(SystemExit) as exit_:
        lightning_main(args, run=False)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if line.startswith("minmo: error:")]
    assert "trainer.strategy" in line and "DeepSpeed installed" in line and "pip install" in line


def test_deepspeed_without_cuda_says_so(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With the package present (faked here) a CPU-only machine still cannot run it: one line, no traceback."""
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    import lightning.pytorch.strategies.deepspeed as lightning_deepspeed

    monkeypatch.setattr(lightning_deepspeed, "_DEEPSPEED_AVAILABLE", True)
    monkeypatch.setattr(lightning_deepspeed, "_DEEPSPEED_GREATER_EQUAL_0_16", True)
    stub = types.ModuleType("deepspeed")  # all the strategy's constructor reads of the package
    stub.utils = SimpleNamespace(logging=SimpleNamespace(logger=logging.getLogger("deepspeed")))
    monkeypatch.setitem(sys.modules, "deepspeed", stub)
    args = ["--config", str(TINY_SFT), "--config", str(RECIPES / "trainer" / "deepspeed_zero3.yaml")]
    write_cmvn(tmp_path / "am.mvn", torch.stack([torch.zeros(560), torch.ones(560)]))  # no corpus needed here
    args += ["--model.init_args.voice_encoder.init_args.cmvn_file", str(tmp_path / "am.mvn")]
    with pytest.raises(SystemExit) as exit_:
        lightning_main(args, run=False)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if line.startswith("minmo: error:")]
    assert "CUDAAccelerator" in line and "not available" in line, line


def test_mesh_with_tensor_parallelism_is_refused() -> None:
    """ModelParallelStrategy's own defaults (data parallel = nodes, tensor parallel = GPUs per node) would
    neither shard within a node nor give its GPUs different batches."""

    class Mesh:
        mesh_dim_names = ("data_parallel", "tensor_parallel")

        def __init__(self, sizes: dict[str, int]) -> None:
            self.sizes = sizes

        def __getitem__(self, name: str) -> SimpleNamespace:
            return SimpleNamespace(size=lambda: self.sizes[name], name=name)

        def size(self) -> int:
            return self.sizes["data_parallel"] * self.sizes["tensor_parallel"]

    with pytest.raises(ValueError, match=r"data_parallel_size: 8 .*tensor_parallel_size: 1"):
        data_parallel_mesh(Mesh({"data_parallel": 1, "tensor_parallel": 8}))
    assert data_parallel_mesh(Mesh({"data_parallel": 8, "tensor_parallel": 1})).name == "data_parallel"


# ---- memory plan ------------------------------------------------------------------------------------
def test_memory_plan_shards_what_trains_and_the_llm() -> None:
    """Tiny composite, LoRA on a bf16 LLM, frozen encoder: FSDP2 at 4 splits the LLM and the projector, keeps the
    frozen encoder whole, and gives only the LoRA adapters (fp32) gradients and AdamW state."""
    model = tiny_minmo(llm=HFCausalLM.from_preset("tiny", dtype="bfloat16"))
    ddp = {s.slot: s for s in memory_plan(model, model.slots, "ddp", 4, "bf16-mixed").slots}
    fsdp = {s.slot: s for s in memory_plan(model, model.slots, "fsdp2", 4, "bf16-mixed").slots}
    zero = {s.slot: s for s in memory_plan(model, model.slots, "deepspeed_zero3", 4, "bf16-mixed").slots}
    llm = model.llm
    frozen = sum(p.numel() for p in llm.parameters() if not p.requires_grad)
    lora = sum(p.numel() for p in llm.parameters() if p.requires_grad)
    assert ddp["llm"].weights == 2 * frozen + 4 * lora  # frozen weights stay bf16: no fp32 copy
    assert ddp["llm"].gradients == 4 * lora and ddp["llm"].optimizer == 8 * lora
    assert fsdp["llm"].weights == ddp["llm"].weights / 4 and fsdp["llm"].placement == "sharded"
    assert fsdp["input_projector"].total == ddp["input_projector"].total / 4
    assert fsdp["voice_encoder"] == ddp["voice_encoder"]  # frozen, replicated
    assert zero["voice_encoder"].weights < ddp["voice_encoder"].weights / 4  # ZeRO-3 splits (and casts) all
    true_bf16 = {s.slot: s for s in memory_plan(model, model.slots, "ddp", 1, "bf16-true").slots}
    assert true_bf16["input_projector"].total == ddp["input_projector"].total / 2


# ---- each block's declaration under FSDP2, in 2 processes -----------------------------------------------
def _voice_decoder_case() -> tuple[torch.nn.Module, dict, str]:
    """Stage-2b-like: the voice token LM trains, reached through ``decoder_forward`` (its sharded_methods)."""
    model = stage2b_minmo()
    speech = [list(range(1, 17)), list(range(3, 19))]
    batch = {
        "ids": ["a", "b"],
        "text": ["hello there", "stop now"],
        "speech_tokens": TokenBatch.from_list(speech, "cpu"),
    }
    return model, batch, "voice_decoder_objective"


def _duplex_case() -> tuple[torch.nn.Module, dict, str]:
    """Stage 4: the listen path streams through the frozen (replicated) encoder and projector, the frozen
    sharded LLM embeds through ``embed`` (its sharded_methods), the predictor trains."""
    from test_duplex_stage4 import _duplex_batch, _stage4

    model = _stage4()
    return model, _duplex_batch(model.listener.frame_seconds), "duplex_objective"


CASES = {"voice_decoder": _voice_decoder_case, "duplex": _duplex_case}


def _case_loss(name: str, mesh: object = None) -> tuple[float, dict[str, str]]:
    """The case's loss after one backward (sharded over ``mesh`` when given) and where each slot went."""
    torch.manual_seed(0)
    model, batch, objective = CASES[name]()
    placements = {}
    if mesh is not None:
        placements = {row.slot: row.placement for row in shard_model(model, model.slots, mesh)}
    torch.manual_seed(1)
    loss, _ = getattr(model, objective)(batch)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []  # every trained weight has its gradient (standalone heads stay frozen: stages.py)
    return float(loss), placements


def _sharded_case_losses(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        mesh = init_device_mesh("cpu", (world, 1), mesh_dim_names=("data_parallel", "tensor_parallel"))
        results = {name: _case_loss(name, mesh) for name in CASES}
        if rank == 0:
            torch.save(results, out)
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_sharded_blocks_compute_the_unsharded_losses(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = tmp_path / "losses.pt"
    torch.multiprocessing.spawn(_sharded_case_losses, args=(2, port, str(out)), nprocs=2)
    sharded = torch.load(out)
    for name in CASES:
        loss, placements = sharded[name]
        assert loss == pytest.approx(_case_loss(name)[0], rel=1e-5), name
        assert placements["llm"] == "sharded" and placements["voice_encoder"] == "replicated", placements
    assert sharded["voice_decoder"][1]["voice_token_lm"] == "sharded"
    assert sharded["duplex"][1]["duplex_predictor"] == "sharded"


# ---- only rank 0 builds the weights ----------------------------------------------------------------------
def _stage1c_like(init_checkpoint: str) -> MinMo:
    """A tiny MinMo starting from a checkpoint with LoRA adapters (merged: the LLM trains in full here)."""
    from builders import FramingTestEncoder
    from minmo_lightning.components.input_projector.projectors import TransformerConvProjector

    return MinMo(
        llm=HFCausalLM.from_preset("tiny"),
        voice_encoder=FramingTestEncoder.from_preset("tiny"),
        input_projector=TransformerConvProjector.from_preset("tiny"),
        trainable={"voice_encoder": "frozen", "input_projector": "full", "llm": "full"},
        tasks=["asr"],
        init_checkpoint=init_checkpoint,
    )


def _built_on_rank0(rank: int, world: int, port: int, out: str, init_checkpoint: str) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(100 + rank)  # each rank would initialise otherwise: equal weights come from rank 0
        model = _stage1c_like(init_checkpoint)
        model._device_mesh = init_device_mesh("cpu", (world,), mesh_dim_names=("data_parallel",))
        if rank:
            model._load_starting_point = lambda: pytest.fail("a rank other than 0 read the starting point")
        built_on = []
        build_llm = model.llm.configure_model
        model.llm.configure_model = lambda: (built_on.append(torch.empty(0).device.type), build_llm())
        model.configure_model()
        whole = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
        buffers = {name: buffer.clone() for name, buffer in model.named_buffers()}
        torch.save({"weights": whole, "buffers": buffers, "built_on": built_on}, f"{out}.{rank}")
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_only_rank0_builds_the_weights_and_every_rank_gets_its_share(tmp_path: Path) -> None:
    torch.manual_seed(0)
    start = tiny_minmo()  # LoRA adapters: the next stage merges them
    torch.save({"state_dict": start.state_dict(), "hyper_parameters": {}}, tmp_path / "start.ckpt")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = str(tmp_path / "built")
    torch.multiprocessing.spawn(_built_on_rank0, args=(2, port, out, str(tmp_path / "start.ckpt")), nprocs=2)
    first, second = torch.load(f"{out}.0"), torch.load(f"{out}.1")
    torch.manual_seed(100)
    alone = _stage1c_like(str(tmp_path / "start.ckpt"))
    alone.configure_model()
    expected = alone.state_dict()
    assert first["weights"].keys() == second["weights"].keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(first["weights"][key], value) and torch.equal(second["weights"][key], value), key
    for name, buffer in dict(alone.named_buffers()).items():  # non-persistent ones (rotary frequencies) too
        assert torch.equal(second["buffers"][name], buffer), name
    assert first["built_on"] == ["cpu"] and second["built_on"] == ["meta"]  # one full copy, on rank 0


# ---- 2 processes on the CPU -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A corpus of identical clips and the overrides that run tiny stage 1c on it for a few steps."""
    root = tmp_path_factory.mktemp("distributed")
    wave = (0.1 * np.random.default_rng(0).standard_normal(12000)).astype(np.float32)
    count = 16
    split = datasets.Dataset.from_dict(
        {
            "id": [f"u{i}" for i in range(count)],
            "audio": [{"bytes": wav_bytes(wave, 16000), "path": None}] * count,
            "text": ["turn on the lights"] * count,
            "duration": [0.75] * count,
        }
    ).cast_column("audio", datasets.Audio(decode=False))
    datasets.DatasetDict({"train": split, "validation": split, "test": split}).save_to_disk(str(root / "asr"))
    write_cmvn(root / "am.mvn", torch.stack([torch.zeros(560), torch.ones(560)]))
    overrides = {
        "trainer": {
            "accelerator": "cpu",
            "precision": "32-true",  # exact comparisons; bf16 autocast is slow on this CPU
            "limit_val_batches": 0,
            "val_check_interval": None,
            "log_every_n_steps": 1,
        },
        "model": {
            "init_args": {
                "tasks": ["asr"],
                "init_checkpoint": None,
                # LoRA under FSDP2 (the tiny recipe trains its LLM in full; MinMo's stage 1c uses LoRA)
                "trainable": {"voice_encoder": "full", "input_projector": "full", "llm": "lora"},
                "voice_encoder": {"init_args": {"cmvn_file": str(root / "am.mvn"), "dropout_rate": 0.0}},
                "input_projector": {"init_args": {"dropout": 0.0}},
            }
        },
        # 4 identical clips per batch: every rank's batch is the same
        "data": {
            "class_path": "ASRDataModule",
            "init_args": {"path": str(root / "asr"), "max_seconds_per_batch": 3.0},
        },
    }
    (root / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    return SimpleNamespace(root=root, overrides=root / "overrides.yaml")


def _fit(
    run: SimpleNamespace, name: str, piece: str, devices: int, steps: int, *extra: str
) -> SimpleNamespace:
    """``minmo fit`` of tiny stage 1c with a trainer piece, as a user launches it; its losses and its log."""
    out = run.root / name
    command = [sys.executable, "-m", "minmo_lightning", "fit", "--config", str(TINY_SFT)]
    command += ["--config", str(RECIPES / "trainer" / f"{piece}.yaml"), "--config", str(run.overrides)]
    command += ["--trainer.devices", str(devices), "--trainer.max_steps", str(steps)]
    command += [
        "--trainer.default_root_dir",
        str(out),
        "--trainer.callbacks.dirpath",
        str(out / "checkpoints"),
    ]
    command += ["--trainer.callbacks.every_n_train_steps", str(steps), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=run.root, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = sorted(out.glob("lightning_logs/version_*/metrics.csv"))[-1].read_text().splitlines()
    losses = [float(line.split(",")[-1]) for line in metrics[1:]]
    return SimpleNamespace(
        log=done.stdout + done.stderr, losses=losses, checkpoint=out / "checkpoints" / "last.ckpt"
    )


def _rank_mib(log: str) -> dict[str, float]:
    """Per slot, the parameter MiB one rank holds, from the table FSDP2 sharding logs."""
    table = log[log.index("FSDP2 over") :].splitlines()[3:]
    rows = [
        line.split() for line in table[: next(i for i, line in enumerate(table) if line.startswith("all"))]
    ]
    return {row[0]: float(row[4]) for row in rows}


@pytest.fixture(scope="module")
def one_rank(tiny_run: SimpleNamespace) -> SimpleNamespace:
    return _fit(tiny_run, "fsdp2_1", "fsdp2", devices=1, steps=3)


@pytest.fixture(scope="module")
def two_ranks(tiny_run: SimpleNamespace) -> SimpleNamespace:
    return _fit(tiny_run, "fsdp2_2", "fsdp2", devices=2, steps=2)


@pytest.mark.slow
def test_ddp_two_processes_train_as_one(tiny_run: SimpleNamespace, one_rank: SimpleNamespace) -> None:
    ddp = _fit(tiny_run, "ddp_2", "ddp", devices=2, steps=2)
    assert "Starting with 2 processes" in ddp.log
    assert ddp.losses == pytest.approx(one_rank.losses[:2], rel=1e-4)
    assert ddp.checkpoint.is_file()


@pytest.mark.slow
def test_fsdp2_shards_across_two_ranks_and_trains_as_one(
    one_rank: SimpleNamespace, two_ranks: SimpleNamespace
) -> None:
    assert "Starting with 2 processes" in two_ranks.log
    assert two_ranks.losses == pytest.approx(one_rank.losses[:2], rel=1e-4)
    whole, half = _rank_mib(one_rank.log), _rank_mib(two_ranks.log)
    for slot in ("llm", "voice_encoder", "input_projector"):
        assert half[slot] == pytest.approx(whole[slot] / 2, rel=0.05), slot
    llm_row = next(
        line for line in one_rank.log.splitlines() if line.startswith("llm ") and "sharded" in line
    )
    assert llm_row.endswith("float32 / float32")  # frozen / trained dtypes (the tiny LLM is fp32)
    assert is_sharded_checkpoint(two_ranks.checkpoint)
    assert sorted(p.name for p in two_ranks.checkpoint.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]


@pytest.mark.slow
def test_sharded_checkpoint_resumes_at_one_rank_and_exports(
    tiny_run: SimpleNamespace, one_rank: SimpleNamespace, two_ranks: SimpleNamespace, tmp_path: Path
) -> None:
    resumed = _fit(tiny_run, "resumed_1", "fsdp2", 1, 3, "--ckpt_path", str(two_ranks.checkpoint))
    assert resumed.losses == pytest.approx(one_rank.losses[2:], rel=1e-4)  # step 3 of the 1-rank run

    assert export_main(["--ckpt", str(two_ranks.checkpoint), "--out", str(tmp_path / "blocks")]) == 0
    state = read_sharded_checkpoint(two_ranks.checkpoint)["state_dict"]
    assert (
        read_state_dict(two_ranks.checkpoint).keys() == state.keys()
    )  # what a next stage's init_checkpoint reads
    metadata = read_checkpoint(
        two_ranks.checkpoint, mmap=True
    )  # hyperparameters only: the weights stay sharded
    assert "state_dict" not in metadata and metadata["global_step"] == 2
    exported = load_file(str(tmp_path / "blocks" / "input_projector" / "model.safetensors"))
    assert exported.keys() == {
        k.removeprefix("input_projector.") for k in state if k.startswith("input_projector.")
    }
    for key, value in exported.items():
        assert torch.equal(value, state[f"input_projector.{key}"]), key
    assert (tmp_path / "blocks" / "llm" / "adapter" / "adapter_config.json").is_file()
    assert not list((tmp_path / "blocks").glob(".consolidating-*"))  # the temporary single file is gone
    # the sharded folder loads as a model (what minmo evaluate --ckpt does)
    loaded = MinMo.load_from_checkpoint(two_ranks.checkpoint).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items() if k.startswith("input_projector."))


def test_bf16_true_trains_a_stage_whose_encoder_frontend_stays_float32():
    """``precision: bf16-true`` casts the whole model; the encoder's frontend constants stay float32."""
    from test_stale_head import AUDIO, stage

    model = stage("full", tasks=["asr"]).train()
    batch = {"ids": ["a"], "audio": AUDIO, "text": ["hello"], "supervises": ("asr",)}
    loader = torch.utils.data.DataLoader([0, 1], batch_size=None, collate_fn=lambda _: batch)
    trainer = L.Trainer(
        max_steps=2,
        precision="bf16-true",
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
    )
    trainer.fit(model, train_dataloaders=loader)
    assert trainer.global_step == 2 and next(model.llm.parameters()).dtype == torch.bfloat16
    assert model.voice_encoder.frontend.fbank.banks.dtype == torch.float32
