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
- Blocks that run incrementally implement the streaming protocol (``StreamState``): ``init_state(batch_size,
  options=None)`` returns a state; ``step(chunk, state)`` does O(chunk) work and returns the new output;
  ``state.end_input(rows)`` ends rows' input (the next step flushes them); state caches are bounded so
  the cost per chunk stays flat over a long session; ``state.reset(rows)`` restarts selected batch items
  (a new session in that row) without touching the others.
"""

from __future__ import annotations

import copy
import inspect
from abc import abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch
from torch import Tensor, nn

from minmo_lightning.checkpoint_assets import ASSETS_KEY, pack, restore_args
from minmo_lightning.checkpoints import read_checkpoint
from minmo_lightning.contracts import (
    IGNORE_INDEX,
    AudioBatch,
    DecoderLoss,
    DuplexFrames,
    DuplexOutput,
    LLMOutput,
    MixRatio,
    SemanticChunk,
    SequenceBatch,
    TokenBatch,
    VoiceDecoderInput,
)
from minmo_lightning.registry import register
from minmo_lightning.stream_state import StreamState, VoiceDecoderState
from minmo_lightning.windowed import WindowState, windowed_all, windowed_step


class IncompleteBlockError(TypeError):
    """An implementation that lacks a member its slot declares (the composite would fail on it later)."""


class _SlotContract(type):
    """Checks, right after an implementation is constructed, the attributes its slot declares as data.

    Methods and properties are checked earlier, when the class is defined (``Block.__init_subclass__``);
    plain attributes such as ``sample_rate`` are usually set in ``__init__``, so this is their first chance.
    """

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        block = super().__call__(*args, **kwargs)
        missing = [name for name in cls.declared_attributes() if not hasattr(block, name)]
        if missing:
            raise IncompleteBlockError(
                f"{cls.__name__} (a {cls.slot_name()}) does not set {', '.join(missing)}, which the "
                f"{cls.slot_name()} slot declares; set them in __init__ (see {cls.slot_name()}'s docstring)"
            )
        return block


class Block(L.LightningModule, metaclass=_SlotContract):
    """Common base of every slot: presets, pretrained loading, streaming protocol, spec round-trip.

    A slot declares what the composite and the streaming engine call: methods and properties as
    ``abc.abstractmethod`` (an implementation lacking one fails when its class is defined) and data
    attributes as annotations (checked when the implementation is constructed).
    """

    _is_slot: ClassVar[bool] = True
    #: preset name -> constructor arguments (plain data). ``minmo list`` shows them with parameter counts.
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    #: parameter-name prefixes only the block's own recipe trains (no MinMo objective reaches them): MinMo's
    #: stages keep them frozen and say when the rest of the block moved on (``stages.py``)
    standalone_head: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("_is_slot", False):
            return
        missing = sorted(
            name for name in dir(cls) if getattr(getattr(cls, name, None), "__isabstractmethod__", False)
        )
        if missing:
            raise IncompleteBlockError(
                f"{cls.__name__} (a {cls.slot_name()}) does not define {', '.join(missing)}, which the "
                f"{cls.slot_name()} slot declares; implement them (see {cls.slot_name()}'s docstring)"
            )
        register(cls)

    @classmethod
    def declared_attributes(cls) -> list[str]:
        """Data attributes the slots above this class declare (annotated, not ClassVar)."""
        names = []
        for klass in cls.__mro__:
            if klass.__dict__.get("_is_slot", False) and klass is not Block:
                hints = klass.__dict__.get("__annotations__", {})
                names += [n for n, hint in hints.items() if "ClassVar" not in str(hint) and n not in names]
        return names

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
        """``{"class_path", "init_args"}``: enough to rebuild this block (saved in composite checkpoints).

        FSDP2 (``sharding.py``) swaps a sharded block's class for a torch-made subclass (``FSDP<name>``): the
        class named is the block's own."""
        own = next(c for c in type(self).__mro__ if not c.__module__.startswith("torch.distributed."))
        return {
            "class_path": f"{own.__module__}.{own.__qualname__}",
            "init_args": {k: copy.deepcopy(v) for k, v in self.hparams.items() if not k.startswith("_")},
        }

    # ---- portable checkpoints (see checkpoint_assets) -----------------------------------------
    #: constructor arguments naming weights the block reads itself: not read again when a checkpoint holds them
    weight_args: ClassVar[tuple[str, ...]] = ()

    def checkpoint_assets(self) -> dict[str, Path]:
        """Small files (or folders) named by constructor arguments and read when the block is built, by argument
        name: the checkpoints that hold this block carry them."""
        return {}

    @classmethod
    def restore_args(cls, init_args: dict[str, Any], assets: dict[str, Path]) -> dict[str, Any]:
        """Constructor arguments that rebuild this block from a checkpoint holding its weights: asset arguments
        name the unpacked copies, weight arguments are dropped."""
        args = {**init_args, **{name: str(path) for name, path in assets.items()}}
        return {**args, **{name: None for name in cls.weight_args if name in args}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A block trained alone carries its assets too (a composite packs those of its slots)."""
        checkpoint[ASSETS_KEY] = {"": pack(self.checkpoint_assets())}

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any) -> Any:
        """Load a block trained alone from its checkpoint file only (see ``checkpoint_assets``)."""
        checkpoint = read_checkpoint(checkpoint_path, mmap=True)
        saved = dict(checkpoint.get("hyper_parameters") or {})
        packed = (checkpoint.get(ASSETS_KEY) or {}).get("")
        restored = restore_args(cls, {k: v for k, v in saved.items() if not k.startswith("_")}, packed)
        changed = {k: v for k, v in restored.items() if saved.get(k) != v}
        return super().load_from_checkpoint(checkpoint_path, *args, **{**changed, **kwargs})

    # ---- lifecycle hooks ---------------------------------------------------------------------
    def configure_model(self) -> None:
        """Materialise heavy weights (idempotent). Light blocks build everything in ``__init__``."""

    def load_pretrained(self, path: str) -> None:
        """Load the official checkpoint folder of what this block mirrors."""
        raise NotImplementedError(f"{type(self).__name__} has no official checkpoint to load")

    # ---- sharding under FSDP2 (``sharding.py``) ------------------------------------------------
    #: a frozen block under FSDP2: ``replicate`` (whole on every rank: no all-gathers, and its streaming and
    #: inference methods may reach any submodule) or ``shard`` (split across ranks, for a block too large to
    #: copy per GPU). A block that trains is always sharded.
    frozen_sharding: ClassVar[str] = "replicate"
    #: methods besides ``forward`` that the composite's training steps call and that read the block's own
    #: weights: FSDP2 gathers the block around them too
    sharded_methods: ClassVar[tuple[str, ...]] = ()

    def shard_units(self) -> list[nn.Module]:
        """The repeated layers FSDP2 shards one by one (each gathered only while it runs); the block's other
        weights form one more unit. Empty: the whole block is one unit."""
        return []

    # ---- streaming protocol ------------------------------------------------------------------
    def init_state(self, batch_size: int, options: Any = None) -> StreamState:
        """A fresh session per row; ``options`` is the block's ``StreamOptions`` (None: its defaults)."""
        raise NotImplementedError(f"{type(self).__name__} does not stream; use forward()")

    def step(self, chunk: Any, state: StreamState) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not stream; use forward()")


class VoiceEncoder(Block):
    """Audio -> acoustic vectors. ``forward(AudioBatch) -> SequenceBatch`` at ``frame_rate`` Hz.

    ``sample_rate`` (input Hz), ``output_dim``, ``frame_rate`` (output frames per second). Streaming:
    ``step(AudioBatch chunk, state) -> SequenceBatch`` of the frames that became final with this chunk (a
    whole number of frames per row), after ``stream_leading_frames`` extra frames at a session's start.
    The default re-runs ``forward`` on the last ``stream_left_seconds`` of audio plus the chunk
    (``windowed.py``); an encoder with an incremental form of its own overrides it.
    """

    _is_slot = True
    sample_rate: int
    output_dim: int
    frame_rate: float
    stream_left_seconds: ClassVar[float] = 2.0
    #: frames a fresh session emits before the audio's own (e.g. SenseVoice's four query frames)
    stream_leading_frames: ClassVar[int] = 0

    #: the tasks whose sources' batches carry what the block's own head (``standalone_head``) learns from
    head_tasks: ClassVar[frozenset[str]] = frozenset()

    @abstractmethod
    def forward(self, audio: AudioBatch) -> SequenceBatch: ...

    def head_loss(self, encoded: SequenceBatch, batch: Mapping[str, Any]) -> Tensor | None:
        """The loss of the block's own head on frames it encoded (``forward``) for ``batch``: how a MinMo
        stage that moves the body keeps the head true (``MinMo(encoder_head_weight=...)``). ``None``: the
        batch's source is not one of ``head_tasks``."""
        raise NotImplementedError(f"{type(self).__name__} has no head of its own to train")

    @property
    def frame_samples(self) -> int:
        """Audio samples per output frame: streaming chunks hold a whole number of them."""
        return round(self.sample_rate / self.frame_rate)

    def init_state(self, batch_size: int, options: Any = None) -> StreamState:
        window = round(self.stream_left_seconds * self.frame_rate) * self.frame_samples
        return WindowState.empty(batch_size, window, like=next(self.parameters()).new_zeros(0).float())

    def step(self, chunk: AudioBatch, state: StreamState) -> SequenceBatch:
        chunk.require(self.sample_rate, who=f"{type(self).__name__}.step")
        if bool((chunk.lengths % self.frame_samples).any()):
            raise ValueError(
                f"streaming chunks hold whole frames of {self.frame_samples} samples "
                f"({1000 / self.frame_rate:g} ms); got lengths {chunk.lengths.tolist()}"
            )

        def encode(waveform: Tensor, lengths: Tensor) -> SequenceBatch:
            return self(AudioBatch(waveform, lengths, self.sample_rate))

        return windowed_step(
            encode, state, chunk.waveform, chunk.lengths, chunk.lengths // self.frame_samples
        )

    def stream_offline(self, audio: AudioBatch, chunk_samples: int) -> SequenceBatch:
        """All that ``step`` emits for ``audio`` fed in chunks of ``chunk_samples`` (every row a whole number of
        them, its full length), computed in a few batched calls: how stage 4 trains on what a duplex session
        hears, without a Python loop over the chunks."""
        chunks = whole_chunks(audio.waveform.shape[1], audio.lengths, chunk_samples, type(self).__name__)
        window = round(self.stream_left_seconds * self.frame_rate) * self.frame_samples

        def encode(waveform: Tensor, lengths: Tensor) -> SequenceBatch:
            return self(AudioBatch(waveform, lengths, self.sample_rate))

        frames = chunk_samples // self.frame_samples
        values = windowed_all(encode, audio.waveform, [chunk_samples] * chunks, [frames] * chunks, window)
        return SequenceBatch(values, torch.full_like(audio.lengths, values.shape[1]))


def whole_chunks(samples: int, lengths: Tensor, chunk_samples: int, who: str) -> int:
    """How many chunks of ``chunk_samples`` a batch of full-length rows holds; an error if not whole."""
    if samples % chunk_samples or bool((lengths != samples).any()):
        raise ValueError(
            f"{who}.stream_offline: every row must hold a whole number of {chunk_samples}-sample chunks at full "
            f"length (pad with silence); got {samples} samples, lengths {lengths.tolist()}"
        )
    return samples // chunk_samples


class InputProjector(Block):
    """Encoder frames -> LLM-width embeddings, with ``downsample``x fewer frames.

    ``forward(SequenceBatch [B, T, input_dim]) -> SequenceBatch [B, ceil(T / downsample), output_dim]``.
    """

    _is_slot = True
    input_dim: int
    output_dim: int
    downsample: int

    #: encoder frames of left context the default ``step`` re-reads (a multiple of ``downsample``)
    stream_left_frames: ClassVar[int] = 16

    @abstractmethod
    def forward(self, features: SequenceBatch) -> SequenceBatch: ...

    def output_lengths(self, lengths: Tensor) -> Tensor:
        return torch.div(lengths + self.downsample - 1, self.downsample, rounding_mode="floor")

    def init_state(self, batch_size: int, options: Any = None) -> StreamState:
        """Streaming re-runs ``forward`` on the last ``stream_left_frames`` frames plus the chunk."""
        window = -(-self.stream_left_frames // self.downsample) * self.downsample
        return WindowState.empty(
            batch_size, window, self.input_dim, like=next(self.parameters()).new_zeros(0).float()
        )

    def step(self, chunk: SequenceBatch, state: StreamState) -> SequenceBatch:
        """The LLM embeddings of ``chunk`` (a multiple of ``downsample`` frames per row)."""
        if bool((chunk.lengths % self.downsample).any()):
            raise ValueError(
                f"streaming chunks hold a multiple of downsample={self.downsample} frames per row; got lengths "
                f"{chunk.lengths.tolist()}"
            )

        def project(values: Tensor, lengths: Tensor) -> SequenceBatch:
            return self(SequenceBatch(values, lengths))

        return windowed_step(project, state, chunk.values, chunk.lengths, chunk.lengths // self.downsample)

    def stream_offline(self, features: SequenceBatch, sizes: list[int]) -> SequenceBatch:
        """All that ``step`` emits for ``features`` fed in chunks of ``sizes`` frames (the same for every row,
        each a multiple of ``downsample``; full lengths), computed in a few batched calls."""
        if any(size % self.downsample for size in sizes) or bool((features.lengths != sum(sizes)).any()):
            raise ValueError(
                f"{type(self).__name__}.stream_offline: chunks of {sizes} frames must be multiples of "
                f"downsample={self.downsample} and cover every row (lengths {features.lengths.tolist()})"
            )
        window = -(-self.stream_left_frames // self.downsample) * self.downsample

        def project(values: Tensor, lengths: Tensor) -> SequenceBatch:
            return self(SequenceBatch(values, lengths))

        outputs = [size // self.downsample for size in sizes]
        values = windowed_all(project, features.values, sizes, outputs, window)
        return SequenceBatch(values, torch.full_like(features.lengths, values.shape[1]))


class LLMBackbone(Block):
    """Decoder-only LLM reading embeddings; audio embeddings are spliced between the text embeddings.

    LoRA: ``apply_lora()`` wraps the weights with adapters whose parameter names match
    ``lora_parameter_pattern`` (the stage rules train them), ``merge_lora()`` folds them back in.
    """

    _is_slot = True
    lora_parameter_pattern: ClassVar[str] = r"lora_"

    @property
    @abstractmethod
    def hidden_size(self) -> int:
        """Width of the embeddings and the last-layer hidden states."""

    @property
    @abstractmethod
    def max_positions(self) -> int:
        """Longest sequence (prompt + answer) the model takes."""

    @property
    @abstractmethod
    def tokenizer(self) -> Any:
        """The text tokenizer (a transformers tokenizer: ``encode``, ``decode``, special ids)."""

    @property
    @abstractmethod
    def has_lora(self) -> bool:
        """Whether LoRA adapters are applied (and not merged)."""

    @abstractmethod
    def embed(self, token_ids: Tensor) -> Tensor:
        """``[B, T]`` ids -> ``[B, T, hidden_size]`` input embeddings."""

    @abstractmethod
    def forward(
        self,
        inputs_embeds: Tensor,
        attention_mask: Tensor | None = None,
        cache: Any = None,
        position_ids: Tensor | None = None,
        logits_to_keep: int = 0,
    ) -> LLMOutput:
        """Logits of the last ``logits_to_keep`` positions (0: all), last-layer hidden states of every
        position, the updated KV cache (made by ``new_cache()``). Positions default to 0.. after what the
        cache holds; left-padded batches pass ``position_ids``."""

    @abstractmethod
    def new_cache(self) -> Any:
        """An empty KV cache for ``forward(cache=...)``."""

    @abstractmethod
    def decoder_layers(self) -> list[nn.Module]:
        """The repeated layers (activation checkpointing and sharding wrap them)."""

    #: the LLM is most of MinMo: sharded even when frozen; ``embed`` reads its embeddings outside ``forward``
    frozen_sharding: ClassVar[str] = "shard"
    sharded_methods: ClassVar[tuple[str, ...]] = ("embed",)

    def shard_units(self) -> list[nn.Module]:
        return self.decoder_layers()

    @abstractmethod
    def apply_lora(self) -> None: ...

    @abstractmethod
    def merge_lora(self) -> None:
        """Fold the adapters into the weights (a no-op without adapters)."""


class OutputProjector(Block):
    """LLM states -> semantic vectors for the voice token LM: ``forward(VoiceDecoderInput) -> SequenceBatch``.

    The output rows are ``query_length(inputs)`` query rows (the voice LM's per-turn prefix; a row's valid
    ones are its ``inputs.query_lengths``, at most that many) followed by one vector per text token.
    """

    _is_slot = True
    output_dim: int

    @abstractmethod
    def forward(self, inputs: VoiceDecoderInput) -> SequenceBatch: ...

    @abstractmethod
    def query_length(self, inputs: VoiceDecoderInput) -> int:
        """How many leading output rows are the per-turn query (0 when the projector uses none)."""

    def split(self, inputs: VoiceDecoderInput, vectors: SequenceBatch) -> tuple[SequenceBatch, SequenceBatch]:
        """``forward``'s output as the query rows and the text tokens' semantic vectors."""
        rows = self.query_length(inputs)
        valid = inputs.query_lengths
        if valid is None:
            valid = torch.full_like(inputs.lengths, inputs.query.shape[1])
        query = SequenceBatch(vectors.values[:, :rows], valid.to(inputs.lengths.device).clamp(max=rows))
        return query, SequenceBatch(vectors.values[:, rows:], inputs.lengths)


class VoiceTokenLM(Block):
    """Semantic vectors -> speech tokens, autoregressive with a KV cache, ``ratio`` (text:speech) interleaved.

    ``hidden_size`` is the width of the semantic vectors it reads; ``speech_vocab_size`` counts the codec
    codes (6561 for CosyVoice2). Streaming: ``step(SemanticChunk, state) -> TokenBatch`` reads
    ``ratio.text`` vectors per row and writes up to ``ratio.speech`` tokens; after ``state.end_input(rows)``
    the rows get the turn of speech and write speech until end of speech (``state.finished``).
    """

    _is_slot = True
    speech_vocab_size: int
    hidden_size: int
    ratio: MixRatio

    @abstractmethod
    def decoder_forward(
        self, semantic: SequenceBatch, speech: TokenBatch, prefix: SequenceBatch | None = None
    ) -> DecoderLoss:
        """Teacher-forced loss of ``speech`` after ``semantic`` vectors (``prefix``: per-turn query rows)."""

    #: the voice-decoder objectives call ``decoder_forward``, which embeds the speech tokens itself
    sharded_methods: ClassVar[tuple[str, ...]] = ("decoder_forward",)

    @abstractmethod
    def init_state(self, batch_size: int, options: Any = None) -> VoiceDecoderState: ...

    @abstractmethod
    def step(self, chunk: SemanticChunk, state: VoiceDecoderState) -> TokenBatch: ...


class DuplexPredictor(Block):
    """Per-frame turn-taking decision: ``forward(DuplexFrames) -> DuplexOutput`` over ``CLASSES``.

    Streaming: ``step(DuplexFrames chunk, state) -> DuplexOutput`` for the chunk's frames, with bounded
    state, equal to ``forward`` on the whole sequence.
    """

    _is_slot = True
    CLASSES: ClassVar[tuple[str, ...]] = ("keep_listening", "respond", "stop_speaking")

    @abstractmethod
    def forward(self, frames: DuplexFrames) -> DuplexOutput: ...

    @abstractmethod
    def init_state(self, batch_size: int, options: Any = None) -> StreamState: ...

    @abstractmethod
    def step(self, chunk: DuplexFrames, state: StreamState) -> DuplexOutput: ...

    def audio_features(self, audio: AudioBatch, frames: int) -> Tensor | None:
        """[B, frames, F] features the predictor derives from the user audio alone, or None (the default:
        it reads none). They do not change while it trains, so the composite computes them once per
        session and hands them back in ``DuplexFrames.audio_features``."""
        return None

    def frame_loss(self, output: DuplexOutput, labels: Tensor) -> Tensor:
        """Cross-entropy against per-frame labels (``IGNORE_INDEX`` on padding), weighted by the
        predictor's ``class_weights`` buffer where it has one (turn-taking frames are rare)."""
        weights = getattr(self, "class_weights", None)
        return nn.functional.cross_entropy(
            output.logits.flatten(0, 1).float(),
            labels.flatten(),
            weight=None if weights is None else weights.float(),
            ignore_index=IGNORE_INDEX,
        )


class Token2Wav(Block):
    """Speech tokens -> waveform: ``forward(TokenBatch) -> AudioBatch`` at ``sample_rate``.

    Streaming ``step(TokenBatch chunk, state) -> AudioBatch`` emits the audio that became final; rows
    marked with ``state.end_input(rows)`` are flushed.
    """

    _is_slot = True
    sample_rate: int
    token_rate: float

    @abstractmethod
    def forward(self, tokens: TokenBatch) -> AudioBatch: ...

    @abstractmethod
    def init_state(self, batch_size: int, options: Any = None) -> StreamState: ...

    @abstractmethod
    def step(self, chunk: TokenBatch, state: StreamState) -> AudioBatch: ...

    @abstractmethod
    def voice_of(self, prompt_audio: AudioBatch, batch_size: int) -> Any:
        """``init_state`` options that speak ``batch_size`` rows in the voice of ``prompt_audio`` (one clip,
        or one per row)."""


class SpeechTokenizer(Block):
    """Waveform -> discrete speech tokens: ``forward(AudioBatch) -> TokenBatch`` at ``token_rate`` Hz."""

    _is_slot = True
    sample_rate: int
    token_rate: float
    codebook_size: int

    @abstractmethod
    def forward(self, audio: AudioBatch) -> TokenBatch: ...


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
