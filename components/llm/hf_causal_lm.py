"""``HFCausalLM``: any decoder-only transformers model (Qwen2 family first) as MinMo's LLM slot.

The constructor only records a light spec (local folder or config dict, dtype, LoRA settings); the model
is built in ``configure_model()`` so a 7B checkpoint is never loaded at recipe-parse time or in fp32 on
every rank. Real presets carry the published config so parameter counts work on the meta device; their
weights come from a user's local folder (``path``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from minmo_lightning.components.llm.captured_step import captured_step, causal_lm_step
from minmo_lightning.components.llm.kv_cache import GrowingKVCache, StaticKVCache
from minmo_lightning.components.llm.text_training import CausalLMTraining
from torch import Tensor, nn

from minmo_lightning.blocks import LLMBackbone
from minmo_lightning.checkpoints import require_files
from minmo_lightning.contracts import LLMOutput

TINY_TOKENIZER = "builtin:tiny-tokenizer"


def _qwen2_config(
    hidden: int,
    layers: int,
    heads: int,
    kv_heads: int,
    ffn: int,
    vocab: int,
    tied: bool,
    max_pos: int = 32768,
) -> dict[str, Any]:
    return {
        "model_type": "qwen2",
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "intermediate_size": ffn,
        "vocab_size": vocab,
        "tie_word_embeddings": tied,
        "max_position_embeddings": max_pos,
        "rope_theta": 1000000.0,
        "rms_norm_eps": 1e-6,
        "hidden_act": "silu",
    }


_LORA = {
    "lora_rank": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.05,
    "lora_target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
}


def resolve_tokenizer_path(path: str) -> Path:
    """``builtin:tiny-tokenizer`` -> the tokenizer folder shipped in the package; anything else is a path."""
    if path == TINY_TOKENIZER:
        return Path(__file__).resolve().parent / "assets" / "tiny_tokenizer"
    return Path(path)


def load_tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    folder = resolve_tokenizer_path(path)
    if not folder.is_dir() or not any((folder / n).exists() for n in ("tokenizer.json", "vocab.json")):
        raise FileNotFoundError(
            f"no tokenizer in {folder}: expected tokenizer.json (or vocab.json + merges.txt) and tokenizer_config.json "
            "from the model folder; set llm.init_args.tokenizer_path to the folder that holds them"
        )
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    if tokenizer.chat_template is None:
        raise ValueError(
            f"the tokenizer in {folder} has no chat template (tokenizer_config.json 'chat_template')"
        )
    return tokenizer


class HFCausalLM(CausalLMTraining, LLMBackbone):
    """Decoder-only LLM from transformers; exposes embeddings, last hidden states and a KV cache. Trained alone
    it learns next-token prediction on text (``CausalLMTraining``: the tiny chain's stage 0)."""

    #: a local Qwen2.5 folder in bf16 with LoRA on the attention projections; presets change only the config
    _BASE = {"path": None, "tokenizer_path": None, "dtype": "bfloat16", **_LORA}
    decode_mode: str | None = None  # compile_decoding
    presets = {
        "qwen2.5-7b-instruct": {**_BASE, "config": _qwen2_config(3584, 28, 28, 4, 18944, 152064, tied=False)},
        "qwen2.5-0.5b-instruct": {**_BASE, "config": _qwen2_config(896, 24, 14, 2, 4864, 151936, tied=True)},
        "tiny": {
            **_BASE,
            "config": _qwen2_config(64, 2, 4, 2, 128, 512, tied=True, max_pos=2048),
            "tokenizer_path": TINY_TOKENIZER,
            "dtype": "float32",
            "lora_rank": 4,
            "lora_alpha": 8,
            "lora_dropout": 0.0,
        },
    }

    def __init__(
        self,
        path: str | None = None,
        config: dict[str, Any] | None = None,
        tokenizer_path: str | None = None,
        dtype: str = "bfloat16",
        attn_implementation: str = "sdpa",
        lora_rank: int = 16,
        lora_alpha: int = 32,
        lora_dropout: float = 0.05,
        lora_target_modules: list[str] | None = None,
        gradient_checkpointing: bool = False,
        learning_rate: float = 1e-3,
        weight_decay: float = 0.01,
        warmup_steps: int = 100,
    ) -> None:
        """``learning_rate``, ``weight_decay``, ``warmup_steps``: training alone on text (a composite such as
        ``MinMo`` sets its own)."""
        super().__init__()
        self.save_hyperparameters()
        if path is None and config is None:
            raise ValueError(
                "HFCausalLM needs `path` (a local model folder) or `config` (to build random weights)"
            )
        if path is not None:
            require_files(path, ["config.json"], "transformers causal LM")
        self.model: nn.Module | None = None
        self._tokenizer: Any = None
        self._lora_applied = False

    # ---- construction -----------------------------------------------------------------------
    def _transformers_config(self, from_folder: bool = False) -> Any:
        """The built model's, else the recipe's ``config`` (no disk access), else the folder's; ``from_folder``
        checks the recipe's and the folder's agree."""
        from transformers import AutoConfig

        if self.model is not None and not from_folder:
            return self.base_model.config
        if self.hparams.config is not None and not from_folder:
            values = dict(self.hparams.config)
            return AutoConfig.for_model(values.pop("model_type"), **values)
        require_files(self.hparams.path, ["config.json"], "transformers causal LM")
        config = AutoConfig.from_pretrained(self.hparams.path)
        for key, value in (self.hparams.config or {}).items():
            if key != "model_type" and getattr(config, key, value) != value:
                raise ValueError(
                    f"{self.hparams.path}/config.json has {key}={getattr(config, key)} but the recipe says {value}; "
                    "pick the preset that matches the checkpoint or drop `config`"
                )
        return config

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.hparams.dtype)

    def configure_model(self) -> None:
        if self.model is not None:
            return
        from transformers import AutoModelForCausalLM

        on_meta = torch.empty(0).device.type == "meta"
        from_folder = self.hparams.path is not None and not on_meta
        config = self._transformers_config(from_folder=from_folder)
        config._attn_implementation = self.hparams.attn_implementation
        if from_folder:
            model = AutoModelForCausalLM.from_pretrained(
                self.hparams.path,
                dtype=self.torch_dtype,
                attn_implementation=self.hparams.attn_implementation,
            )
        else:
            model = AutoModelForCausalLM.from_config(config, dtype=self.torch_dtype)
        if self.hparams.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.model = model

    def _require_model(self) -> nn.Module:
        if self.model is None:
            raise RuntimeError("HFCausalLM is not materialised yet: call configure_model() first")
        return self.model

    def load_pretrained(self, path: str) -> None:
        """Point at a local transformers folder (config.json + safetensors) and load it."""
        self.hparams.path = path
        self.hparams.config = None
        self.model = None
        self.configure_model()

    # ---- portable checkpoints ---------------------------------------------------------------
    def checkpoint_assets(self) -> dict[str, Path]:
        """The model folder's config and tokenizer (its weights are in the state dict), and a separate
        tokenizer folder; the builtin tokenizer ships with the package."""
        folders = {"path": self.hparams.path, "tokenizer_path": self.hparams.tokenizer_path}
        return {k: Path(v) for k, v in folders.items() if v is not None and v != TINY_TOKENIZER}

    @classmethod
    def restore_args(cls, init_args: dict[str, Any], assets: dict[str, Path]) -> dict[str, Any]:
        """Build the architecture from the folder's ``config.json`` instead of loading its weights again."""
        args = super().restore_args(init_args, assets)
        if args.get("path") is not None:
            folder = Path(args["path"])
            args["config"] = json.loads((folder / "config.json").read_text())
            args["tokenizer_path"] = args.get("tokenizer_path") or str(folder)
            args["path"] = None
        return args

    # ---- the slot contract ------------------------------------------------------------------
    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            source = self.hparams.tokenizer_path or self.hparams.path
            if source is None:
                raise ValueError(
                    "HFCausalLM has no tokenizer: set `tokenizer_path` (or `path` to a model folder)"
                )
            self._tokenizer = load_tokenizer(source)
        return self._tokenizer

    @property
    def hidden_size(self) -> int:
        return int(self._transformers_config().hidden_size)

    @property
    def vocab_size(self) -> int:
        return int(self._transformers_config().vocab_size)

    @property
    def base_model(self) -> nn.Module:
        """The transformers model underneath any peft wrapper."""
        model = self._require_model()
        return model.get_base_model() if self._lora_applied else model

    def embed(self, token_ids: Tensor) -> Tensor:
        return self.base_model.get_input_embeddings()(token_ids)

    def forward(
        self,
        inputs_embeds: Tensor,
        attention_mask: Tensor | None = None,
        cache: Any = None,
        position_ids: Tensor | None = None,
        logits_to_keep: int = 0,
    ) -> LLMOutput:
        """``logits_to_keep=1`` when only the next token matters: a 2048-token prefill of Qwen's 152k vocab
        would otherwise materialise 1.2 GB of fp32 logits per sequence."""
        model = self._require_model()
        if isinstance(cache, StaticKVCache):  # the compiled decode path (compile_decoding)
            step = captured_step(self, cache.mode, causal_lm_step(lambda: self.base_model))
            logits, hidden = step(inputs_embeds, attention_mask, position_ids, cache)
            return LLMOutput(logits=logits, hidden_states=hidden, cache=cache)
        with self._recompute_when_frozen(model, cache is None and inputs_embeds.requires_grad):
            out = model(
                inputs_embeds=inputs_embeds,
                attention_mask=attention_mask,
                position_ids=position_ids,
                cache=cache,
                use_cache=cache is not None,
                output_hidden_states=True,
                logits_to_keep=logits_to_keep,
            )
        return LLMOutput(logits=out.logits, hidden_states=out.hidden_states[-1], cache=out.cache)

    @contextmanager
    def _recompute_when_frozen(self, model: nn.Module, needs_backward: bool) -> Iterator[None]:
        """transformers recomputes a decoder layer only in train mode, but a frozen LLM stays in eval mode
        while gradients still flow through it to the projector (stage 1a): its activations for minutes of
        audio would all be kept. Flip only the decoder layers' own flag, which gates recomputation; their
        attention and MLP submodules keep eval behaviour (no dropout)."""
        layers = self.decoder_layers()
        flip = self.hparams.gradient_checkpointing and needs_backward and not model.training
        for layer in layers if flip else []:
            layer.training = True
        try:
            yield
        finally:
            for layer in layers if flip else []:
                layer.training = False

    def new_cache(self) -> Any:
        """Grows in place (no per-token copy); transformers' own cache where layers use sliding windows."""
        config = self.base_model.config
        if self.decode_mode is not None:
            return StaticKVCache(config.num_hidden_layers, self.decode_mode)
        if getattr(config, "use_sliding_window", False) or "sliding_attention" in (
            getattr(config, "layer_types", None) or []
        ):
            from transformers import DynamicCache

            return DynamicCache(config=config)
        from minmo_lightning.components.llm.kv_cache import growing_cache

        return growing_cache(config.num_hidden_layers)

    def compile_decoding(self, mode: str | None) -> None:
        """``mode`` (a torch.compile mode): caches made by ``new_cache`` from now on are static and ``forward``
        runs their one-position steps compiled (``captured_step.py``; logits of the last position only).
        None: eager, the default. ``MinMo.respond(compile=True)`` sets it."""
        self.decode_mode = None
        if mode is not None and not isinstance(self.new_cache(), GrowingKVCache):
            raise ValueError(
                "compiled decoding needs full attention in every layer; this config slides windows"
            )
        self.decode_mode = mode

    @property
    def max_positions(self) -> int:
        return int(self._transformers_config().max_position_embeddings)

    def decoder_layers(self) -> list[nn.Module]:
        return list(self.base_model.model.layers)

    # ---- LoRA ---------------------------------------------------------------------------------
    def apply_lora(self) -> None:
        """Wrap the target modules with peft LoRA adapters (idempotent)."""
        if self._lora_applied:
            return
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=self.hparams.lora_rank,
            lora_alpha=self.hparams.lora_alpha,
            lora_dropout=self.hparams.lora_dropout,
            target_modules=list(self.hparams.lora_target_modules or _LORA["lora_target_modules"]),
            bias="none",
        )
        self.model = get_peft_model(self._require_model(), config)
        self._lora_applied = True

    def merge_lora(self) -> None:
        """Fold the adapters into the base weights and drop the peft wrapper."""
        if self._lora_applied:
            self.model = self._require_model().merge_and_unload()
            self._lora_applied = False

    @property
    def has_lora(self) -> bool:
        return self._lora_applied

    def save_adapters(self, folder: str | Path) -> None:
        if not self._lora_applied:
            raise ValueError("no LoRA adapters to save: this LLM was not trained with `lora`")
        self._require_model().save_pretrained(str(folder))
