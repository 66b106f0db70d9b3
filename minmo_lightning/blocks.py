"""Block slots: one base class per kind of MinMo block.

A *slot* (``VoiceEncoder``, ``LLMBackbone``, ...) fixes the typed contract every implementation of
that kind honours, so a recipe can swap ``SenseVoiceEncoder`` for ``WhisperEncoder`` without touching
anything else. An *implementation* is a uniquely named subclass of a slot; it registers itself on
definition and YAML names it by its short class name (``class_path: SenseVoiceEncoder``).

Every block is a ``LightningModule`` so it can also train alone (``training_step`` where it has a
standalone objective). Conventions every implementation follows:

- Constructor arguments are plain data (numbers, strings, lists, dicts), and the constructor calls
  ``self.save_hyperparameters()``. A preset is just a named set of those arguments (``presets``), so a
  recipe can spell every value out: there are no hidden defaults.
- Heavy pretrained weights are not loaded in ``__init__`` (jsonargparse builds objects at parse time,
  on every rank, before the strategy exists). ``__init__`` stores a light spec; ``configure_model()``
  materialises the module once (it must be idempotent).
- ``load_pretrained(path)`` reads the official checkpoint folder of what the block mirrors, strictly
  (see ``checkpoints.load_state_dict_strict``).
- Blocks that run incrementally implement the streaming protocol: ``init_state(batch_size)`` returns a
  ``StreamState``; ``step(chunk, state)`` does O(chunk) work and returns the new output; state caches
  are bounded so the cost per chunk stays flat over a long session; ``state.reset(items)`` restarts
  selected batch items (a new session in that row) without touching the others.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import lightning as L
import torch
from torch import Tensor, nn

from minmo_lightning.contracts import (
    AudioBatch,
    DuplexOutput,
    LLMOutput,
    SequenceBatch,
    TokenBatch,
    VoiceDecoderInput,
)
from minmo_lightning.registry import register


@dataclass
class StreamState:
    """Per-session streaming state of one block, for a batch of independent sessions.

    One shape for every streaming block: ``init_state(batch_size, options=None)`` makes it (``options`` is
    the block's typed ``StreamOptions`` dataclass: sampling, speaker prompt, ...; it stays on the state as
    ``options``), ``step(chunk, state)`` feeds one chunk. End of stream is said the same way everywhere:
    ``end_input(rows)`` marks rows whose input is complete, and the next ``step`` flushes what the block
    still holds back for them (a look-ahead, the voice LM's turn of speech). ``reset(rows)`` restarts rows
    as new sessions.

    Subclasses add batch-first tensor fields (caches, counters). The default ``reset`` zeroes the rows of
    every such field; a state whose "empty" value is not zero (e.g. a cache with a length pointer)
    overrides it.
    """

    batch_size: int
    #: [B] the caller sent the row's last input (``end_input``); ``step`` flushes it
    input_ended: Tensor = field(default=None, kw_only=True)  # type: ignore[assignment]
    options: Any = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        if self.input_ended is None:
            self.input_ended = torch.zeros(self.batch_size, dtype=torch.bool, device=self._device())

    def _device(self) -> torch.device:
        """Where the state's tensors live (the first batch-first tensor field), so flags sit beside them."""
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Tensor) and f.name != "input_ended":
                return value.device
        return torch.device("cpu")

    def rows(self, items: Tensor | list[int]) -> Tensor:
        """``items`` (bool mask [B] or indices) as a bool mask [B] on the state's device."""
        index = torch.as_tensor(items, device=self.input_ended.device)
        if index.dtype == torch.bool:
            if index.shape != (self.batch_size,):
                raise ValueError(f"a row mask must have shape [{self.batch_size}], got {tuple(index.shape)}")
            return index
        mask = torch.zeros(self.batch_size, dtype=torch.bool, device=index.device)
        mask[index.long().flatten()] = True
        return mask

    def end_input(self, items: Tensor | list[int]) -> None:
        """The rows in ``items`` have sent their last input: the next ``step`` flushes them."""
        self.input_ended |= self.rows(items)

    def reset(self, items: Tensor | list[int]) -> None:
        """Restart the sessions in ``items`` (bool mask [B] or indices) as if ``init_state`` had just run."""
        mask = self.rows(items)
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == self.batch_size:
                value[mask.to(value.device)] = 0


class Block(L.LightningModule):
    """Common base of every slot: presets, pretrained loading, streaming protocol, spec round-trip."""

    _is_slot: ClassVar[bool] = True
    #: preset name -> constructor arguments (plain data). ``minmo list`` shows them with parameter counts.
    presets: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("_is_slot", False):
            register(cls)

    def save_hyperparameters(
        self, *args: Any, ignore: Any = None, frame: Any = None, logger: bool = True
    ) -> None:
        """Record this block's own constructor arguments.

        LightningCLI hands every LightningModule it instantiates the *top-level* model's hyperparameters;
        a block nested in ``MinMo`` must keep its own, so the caller's frame is always used.
        """
        from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
        from lightning.pytorch.utilities.parsing import save_hyperparameters

        given = _given_hyperparameters.get()
        if (
            given is not None
            and given.get("_class_path") == f"{type(self).__module__}.{type(self).__qualname__}"
        ):
            # This block is the CLI's top-level model: keep Lightning's record, so `--ckpt_path` round-trips.
            super().save_hyperparameters(*args, ignore=ignore, logger=logger)
            return
        self._log_hyperparams = logger
        save_hyperparameters(self, *args, ignore=ignore, frame=frame or inspect.currentframe().f_back)

    # ---- presets -----------------------------------------------------------------------------
    @classmethod
    def slot_name(cls) -> str:
        for klass in cls.__mro__:
            if klass.__dict__.get("_is_slot", False) and klass is not Block:
                return klass.__name__
        return "Block"

    @classmethod
    def preset_args(cls, name: str) -> dict[str, Any]:
        if name not in cls.presets:
            available = ", ".join(cls.presets) or "none"
            raise KeyError(f"{cls.__name__} has no preset {name!r}; available presets: {available}")
        return copy.deepcopy(cls.presets[name])

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> Block:
        """Build from a named preset; ``overrides`` replace single constructor arguments."""
        return cls(**{**cls.preset_args(name), **overrides})

    def spec(self) -> dict[str, Any]:
        """``{"class_path", "init_args"}``: enough to rebuild this block (saved in composite checkpoints)."""
        return {
            "class_path": f"{type(self).__module__}.{type(self).__qualname__}",
            "init_args": {k: copy.deepcopy(v) for k, v in self.hparams.items() if not k.startswith("_")},
        }

    # ---- lifecycle hooks ---------------------------------------------------------------------
    def configure_model(self) -> None:
        """Materialise heavy weights (idempotent). Light blocks build everything in ``__init__``."""

    def load_pretrained(self, path: str) -> None:
        """Load the official checkpoint folder of what this block mirrors."""
        raise NotImplementedError(f"{type(self).__name__} has no official checkpoint to load")

    # ---- streaming protocol ------------------------------------------------------------------
    def init_state(self, batch_size: int, options: Any = None) -> StreamState:
        """A fresh session per row; ``options`` is the block's ``StreamOptions`` (None: its defaults)."""
        raise NotImplementedError(f"{type(self).__name__} does not stream; use forward()")

    def step(self, chunk: Any, state: StreamState) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not stream; use forward()")


class VoiceEncoder(Block):
    """Audio -> acoustic vectors. ``forward(AudioBatch) -> SequenceBatch`` at ``frame_rate`` Hz.

    Attributes every implementation sets: ``sample_rate`` (input Hz), ``output_dim``, ``frame_rate``
    (output frames per second). Streaming: ``step(AudioBatch chunk, state) -> SequenceBatch`` of the
    frames that became final with this chunk.
    """

    _is_slot = True
    sample_rate: int
    output_dim: int
    frame_rate: float

    def forward(self, audio: AudioBatch) -> SequenceBatch:
        raise NotImplementedError


class InputProjector(Block):
    """Encoder frames -> LLM-width embeddings, with ``downsample``x fewer frames.

    ``forward(SequenceBatch [B, T, input_dim]) -> SequenceBatch [B, ceil(T / downsample), output_dim]``.
    """

    _is_slot = True
    input_dim: int
    output_dim: int
    downsample: int

    def forward(self, features: SequenceBatch) -> SequenceBatch:
        raise NotImplementedError

    def output_lengths(self, lengths: Tensor) -> Tensor:
        return torch.div(lengths + self.downsample - 1, self.downsample, rounding_mode="floor")


class LLMBackbone(Block):
    """Decoder-only LLM reading embeddings.

    ``forward(inputs_embeds [B, T, D], attention_mask [B, T], cache=None, position_ids=None,
    logits_to_keep=0) -> LLMOutput`` with logits (of the last ``logits_to_keep`` positions; 0 keeps all),
    the last-layer hidden states of every position and the updated KV cache (``cache`` is created by
    ``new_cache()``; positions default to 0.. in the cache; left-padded batches pass ``position_ids``). ``embed(token_ids)`` gives input embeddings (audio
    embeddings are spliced between them). ``decoder_layers()`` lists the repeated layers (activation
    checkpointing and sharding wrap them). ``tokenizer`` is the text tokenizer. ``apply_lora(...)`` wraps
    the weights with adapters; ``lora_parameter_pattern`` names them for the stage rules.
    """

    _is_slot = True
    lora_parameter_pattern: ClassVar[str] = r"lora_"

    @property
    def hidden_size(self) -> int:
        raise NotImplementedError

    def embed(self, token_ids: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(
        self,
        inputs_embeds: Tensor,
        attention_mask: Tensor | None = None,
        cache: Any = None,
        position_ids: Tensor | None = None,
        logits_to_keep: int = 0,
    ) -> LLMOutput:
        raise NotImplementedError

    def new_cache(self) -> Any:
        raise NotImplementedError

    def decoder_layers(self) -> list[nn.Module]:
        raise NotImplementedError

    def apply_lora(self) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not support LoRA")


class OutputProjector(Block):
    """LLM states -> semantic vectors for the voice token LM: ``forward(VoiceDecoderInput) -> SequenceBatch``."""

    _is_slot = True
    output_dim: int

    def forward(self, inputs: VoiceDecoderInput) -> SequenceBatch:
        raise NotImplementedError


class VoiceTokenLM(Block):
    """Semantic vectors (or text) -> speech tokens, autoregressive with a KV cache.

    ``speech_vocab_size`` counts the codec codes (6561 for CosyVoice2); implementations document their
    special ids (eos, fill, turn-of-speech). Training layout and generation are implementation specific;
    the streaming step consumes semantic vectors and yields speech tokens.
    """

    _is_slot = True
    speech_vocab_size: int


class DuplexPredictor(Block):
    """LLM hidden states -> per-frame turn-taking decision: ``forward(SequenceBatch) -> DuplexOutput``.

    Classes are ``CLASSES`` in this order; streaming ``step(SequenceBatch chunk, state) -> DuplexOutput``.
    """

    _is_slot = True
    CLASSES: ClassVar[tuple[str, ...]] = ("keep_listening", "respond", "stop_speaking")

    def forward(self, hidden: SequenceBatch) -> DuplexOutput:
        raise NotImplementedError


class Token2Wav(Block):
    """Speech tokens -> waveform: ``forward(TokenBatch) -> AudioBatch`` at ``sample_rate``.

    Streaming ``step(TokenBatch chunk, state) -> AudioBatch`` emits the audio that became final.
    """

    _is_slot = True
    sample_rate: int
    token_rate: float

    def forward(self, tokens: TokenBatch) -> AudioBatch:
        raise NotImplementedError


class SpeechTokenizer(Block):
    """Waveform -> discrete speech tokens: ``forward(AudioBatch) -> TokenBatch`` at ``token_rate`` Hz."""

    _is_slot = True
    sample_rate: int
    token_rate: float
    codebook_size: int

    def forward(self, audio: AudioBatch) -> TokenBatch:
        raise NotImplementedError


SLOTS: tuple[type[Block], ...] = (
    VoiceEncoder,
    InputProjector,
    LLMBackbone,
    OutputProjector,
    VoiceTokenLM,
    DuplexPredictor,
    Token2Wav,
    SpeechTokenizer,
)
