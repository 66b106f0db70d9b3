"""``MinMo``: the composite LightningModule that wires blocks into the full model or an ablation.

Blocks arrive as constructor arguments (dependency injection, so a recipe swaps one entry to make an
ablation). ``trainable`` says per slot ``frozen | full | lora`` (see ``stages.py``); ``objective``
picks what a training step optimises:

- ``speech_to_text`` (stage 1): voice encoder -> input projector -> LLM, loss on the response text.
- ``text_to_speech`` (stage 2): a text prompt and its answer run through the LLM (teacher forced); the
  output projector turns [query ; answer tokens] into semantic vectors; the voice token LM learns the
  answer's speech tokens (5:15 interleave). Loss on speech tokens only.
- ``speech_to_speech`` (stage 3): as stage 2, with the user turn spoken (encoder -> projector -> LLM).
- ``duplex`` (stage 4): a two-channel session laid out in time order (``duplex_context.py``) through the
  listen path and the LLM; the duplex predictor learns the turn-taking label of every user-audio frame.

``OBJECTIVES`` maps each name to its ``Objective``: the slots it needs, the batch fields it reads and the
method that computes its loss.

Heavy blocks materialise in ``configure_model()`` (once); stage rules are applied right after, before
any sharding, and re-checked when the optimizer is built. The hyperparameters hold each block's spec,
so ``MinMo.load_from_checkpoint`` rebuilds the same model.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from minmo_lightning.blocks import (
    Block,
    DuplexPredictor,
    InputProjector,
    LLMBackbone,
    OutputProjector,
    Token2Wav,
    VoiceEncoder,
    VoiceTokenLM,
)
from minmo_lightning.checkpoint_assets import ASSETS_KEY, pack, restore_args
from minmo_lightning.checkpoints import (
    CheckpointMismatchError,
    load_state_dict_strict,
    read_checkpoint,
    read_state_dict,
)
from minmo_lightning.contracts import (
    IGNORE_INDEX,
    AudioBatch,
    DecoderLoss,
    LLMOutput,
    SequenceBatch,
    TokenBatch,
    VoiceDecoderInput,
)
from minmo_lightning.distributed_checkpoint import consolidate, is_sharded_checkpoint
from minmo_lightning.duplex_training import DuplexTraining
from minmo_lightning.generation import TextSamplingConfig, generate
from minmo_lightning.listening import DEFAULT_CHUNK_SECONDS
from minmo_lightning.optim import OptimizerConfig, configure_adamw
from minmo_lightning.prompts import (
    SPEECH_TASKS,
    TTS_INSTRUCTION,
    PromptBatch,
    SpeechPromptBuilder,
    Turn,
    splice_audio,
    with_style,
)
from minmo_lightning.registry import resolve_class
from minmo_lightning.sharding import builds_elsewhere, full_weights, shard_model, weights_from_rank0
from minmo_lightning.stages import (
    adopt_stale_heads,
    apply_stage,
    compile_stage,
    format_summary,
    mark_stale_heads,
    recorded_stale_heads,
    starting_point_stale_heads,
    summarize,
    verify_stage,
)
from minmo_lightning.streaming import ResponseChunk, SpeechResponder, turn_query

SLOT_TYPES: dict[str, type[Block]] = {
    "voice_encoder": VoiceEncoder,
    "input_projector": InputProjector,
    "llm": LLMBackbone,
    "output_projector": OutputProjector,
    "voice_token_lm": VoiceTokenLM,
    "duplex_predictor": DuplexPredictor,
    "token2wav": Token2Wav,
}


@dataclass(frozen=True)
class Objective:
    """One training objective: the slots it needs beyond the LLM and the ``MinMo`` method that returns
    its loss and the metrics logged beside it.

    The voice-decoder objectives also name the batch fields of the text the model speaks, its speech-token
    targets and the user's audio (None: the user turn is text), and the instruction the LLM is given.
    """

    slots: tuple[str, ...]
    loss: str
    answer_text: str | None = None
    answer_speech: str | None = None
    user_audio: str | None = None
    instruction: str | None = None
    #: its items are speech-to-text items of the model's ``tasks`` (which the data's sources must supervise)
    trains_tasks: bool = False


VOICE_DECODER = ("output_projector", "voice_token_lm")
OBJECTIVES: dict[str, Objective] = {
    "speech_to_text": Objective(
        slots=("voice_encoder", "input_projector"), loss="speech_to_text_objective", trains_tasks=True
    ),
    "text_to_speech": Objective(
        slots=VOICE_DECODER,
        loss="voice_decoder_objective",
        answer_text="text",
        answer_speech="speech_tokens",
        instruction=TTS_INSTRUCTION,
    ),
    "speech_to_speech": Objective(
        slots=("voice_encoder", "input_projector", *VOICE_DECODER),
        loss="voice_decoder_objective",
        answer_text="answer_text",
        answer_speech="answer_speech_tokens",
        user_audio="user_audio",
        instruction=SPEECH_TASKS["chat"].instruction,
    ),
    "duplex": Objective(
        slots=("voice_encoder", "input_projector", "duplex_predictor"), loss="duplex_objective"
    ),
}
#: a speech-to-text source's first task -> the ``MinMo`` method predicting it (others: ``predict_answer``)
TASK_PREDICTIONS: dict[str, str] = {"asr": "predict_transcript", "ser": "predict_emotion"}
#: otherwise, a batch field that tells what the data is -> the method (the first match wins)
PREDICTIONS: tuple[tuple[str, str], ...] = (
    ("frame_labels", "predict_turn_taking"),
    ("user_audio", "predict_spoken_answer"),
    ("instruction", "predict_voice_control"),
    ("speech_tokens", "predict_speech"),
    ("emotion", "predict_emotion"),
    ("audio", "predict_transcript"),
)


def build_block(spec: Block | Mapping[str, Any] | None, slot: str) -> Block | None:
    """Accept a block, or the ``{"class_path", "init_args"}`` spec saved in a checkpoint."""
    if spec is None or isinstance(spec, Block):
        return spec
    if not isinstance(spec, Mapping) or "class_path" not in spec:
        raise TypeError(f"{slot} must be a {SLOT_TYPES[slot].__name__} or a class_path/init_args mapping")
    cls = resolve_class(spec["class_path"], SLOT_TYPES[slot], what=slot)
    return cls(**dict(spec.get("init_args", {})))


class MinMo(DuplexTraining, L.LightningModule):
    def __init__(
        self,
        llm: LLMBackbone,
        trainable: dict[str, str],
        voice_encoder: VoiceEncoder | None = None,
        input_projector: InputProjector | None = None,
        output_projector: OutputProjector | None = None,
        voice_token_lm: VoiceTokenLM | None = None,
        duplex_predictor: DuplexPredictor | None = None,
        token2wav: Token2Wav | None = None,
        objective: str = "speech_to_text",
        tasks: list[str] | None = None,
        emotion_labels: list[str] | None = None,
        user_template: str = "{instruction}\n<|audio|>",
        train_patterns: list[str] | None = None,
        freeze_patterns: list[str] | None = None,
        init_checkpoint: str | None = None,
        init_blocks: dict[str, str] | None = None,
        learning_rate: float = 1e-4,
        weight_decay: float = 0.01,
        warmup_steps: int = 0,
        max_new_tokens: int = 64,
        encoder_head_weight: float = 0.0,
        duplex_chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
        cache_duplex_states: bool = False,
    ) -> None:
        """
        Args:
            trainable: per present slot, ``frozen``, ``full`` or ``lora`` (LLM only).
            objective: what ``training_step`` optimises; one of ``OBJECTIVES``.
            tasks: speech-to-text tasks to train, cycled over the items of the sources that supervise them
                (each datamodule's ``tasks``); see ``prompts.SPEECH_TASKS``.
            emotion_labels: names of the emotion classes, in the datamodule's index order.
            init_checkpoint: a previous stage's ``.ckpt``; its block weights initialise this stage.
            init_blocks: per slot (or a part of one: ``token2wav.flow``), a checkpoint of that block trained
                alone (its Lightning ``.ckpt`` or a ``.safetensors`` export), loaded strictly after
                ``init_checkpoint``.
            encoder_head_weight: the weight of the voice encoder's own head loss (its CTC and tags,
                ``VoiceEncoder.head_loss``) beside the LLM's, where the objective trains speech to text and the
                encoder trains: the head then trains with the body and stays true. 0: the head is left
                frozen and marked stale (``stages.py``).
            duplex_chunk_seconds: the listen path's chunk (rounded to whole LLM audio frames).
            cache_duplex_states: stage 4 keeps each session's LLM states at the audio frames after their first
                pass (only valid while the encoder, projector and LLM are frozen; memory grows with the data).
        """
        super().__init__()
        blocks = {
            "llm": llm,
            "voice_encoder": voice_encoder,
            "input_projector": input_projector,
            "output_projector": output_projector,
            "voice_token_lm": voice_token_lm,
            "duplex_predictor": duplex_predictor,
            "token2wav": token2wav,
        }
        self.save_hyperparameters(ignore=list(blocks))
        self.slots: list[str] = []
        for slot, value in blocks.items():
            block = build_block(value, slot)
            setattr(self, slot, block)
            if block is not None:
                self.slots.append(slot)
                self.hparams[slot] = block.spec()
        if objective not in OBJECTIVES:
            raise ValueError(f"objective {objective!r} is not one of {', '.join(OBJECTIVES)}")
        self.objective = OBJECTIVES[objective]
        self._check_encoder_head(encoder_head_weight)
        heads = {slot: getattr(self, slot).standalone_head for slot in self.slots}
        if encoder_head_weight > 0:
            heads["voice_encoder"] = ()  # it trains with the body
        self._rules = compile_stage(
            trainable,
            self.slots,
            train_patterns or (),
            freeze_patterns or (),
            lora_pattern=self.llm.lora_parameter_pattern,
            standalone_heads=heads,
        )
        self.tasks = list(tasks or ["asr"])
        self.emotion_labels = list(emotion_labels or ["neutral", "happy", "sad", "angry"])
        self._check_wiring()
        self._configured = False
        self._init_weights = True
        self._prompts: Any = None
        self._duplex_states: dict[str, tuple[Tensor, Tensor | None]] = {}  # id -> (states, audio features)

    # ---- wiring -------------------------------------------------------------------------------
    def _check_wiring(self) -> None:
        for slot in self.objective.slots:
            if getattr(self, slot) is None:
                raise ValueError(
                    f"objective {self.hparams.objective} needs a {slot}; add it under model.init_args.{slot}"
                )
        if self.voice_encoder is not None and self.input_projector is not None:
            if self.voice_encoder.output_dim != self.input_projector.input_dim:
                raise ValueError(
                    f"voice_encoder.output_dim ({self.voice_encoder.output_dim}) != input_projector.input_dim "
                    f"({self.input_projector.input_dim}); set the projector's input_dim to the encoder's width"
                )
            if self.input_projector.output_dim != self.llm.hidden_size:
                raise ValueError(
                    f"input_projector.output_dim ({self.input_projector.output_dim}) != llm hidden size "
                    f"({self.llm.hidden_size}); set the projector's output_dim to the LLM width"
                )
        if self.output_projector is not None and self.voice_token_lm is not None:
            width = self.voice_token_lm.hidden_size
            if self.output_projector.output_dim != width:
                raise ValueError(
                    f"output_projector.output_dim ({self.output_projector.output_dim}) != the voice token LM "
                    f"width ({width}); set the output projector's output_dim to it"
                )
        unknown = [t for t in self.tasks if t not in SPEECH_TASKS]
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; choose from {', '.join(SPEECH_TASKS)}")

    def _check_encoder_head(self, weight: float) -> None:
        if weight < 0:
            raise ValueError(f"encoder_head_weight is {weight}; it is a loss weight: 0 (off) or more")
        if weight == 0:
            return
        if not self.objective.trains_tasks:
            raise ValueError(
                f"encoder_head_weight applies to speech-to-text stages; objective {self.hparams.objective} "
                "never computes it: set it to 0"
            )
        if self.voice_encoder is None:
            return  # the objective's own wiring check names the missing slot
        if not self.voice_encoder.standalone_head:
            raise ValueError(
                f"encoder_head_weight is {weight} but the voice encoder "
                f"({type(self.voice_encoder).__name__}) has no head of its own to train: set it to 0"
            )

    def skip_init_weights(self) -> None:
        """The trainer restores every weight from a checkpoint (``--ckpt_path``): do not first read the
        stage's starting point (``init_checkpoint``, ``init_blocks``), which may be gone by then."""
        self._init_weights = False

    def configure_model(self) -> None:
        if self._configured:
            return
        # FSDP2 over several processes: rank 0 builds the weights, the others only the shapes (sharding.py)
        elsewhere = builds_elsewhere(self.device_mesh)
        with torch.device("meta") if elsewhere else contextlib.nullcontext():
            for slot in self.slots:
                getattr(self, slot).configure_model()
            if self._init_weights:
                if not elsewhere:
                    self._load_starting_point()
                init = self.hparams.init_checkpoint, self.hparams.init_blocks
                adopt_stale_heads(self, starting_point_stale_heads(*init))
            if self.hparams.trainable.get("llm") == "lora":
                self.llm.apply_lora()
        apply_stage(self, self._rules)
        mark_stale_heads(self, self._rules)  # a head this stage leaves behind says so (stages.py)
        if self.device_mesh is not None:  # ModelParallelStrategy: FSDP2, once the stage says what trains
            full = full_weights(self, self.slots, self.device_mesh)
            shard_model(self, self.slots, self.device_mesh)
            if self.device_mesh.size() > 1:
                weights_from_rank0(self, self.slots, full)
        self._configured = True

    def _load_starting_point(self) -> None:
        if self.hparams.init_checkpoint:
            self._load_init_checkpoint(self.hparams.init_checkpoint)
        for target, path in (self.hparams.init_blocks or {}).items():
            load_state_dict_strict(
                self._init_target(target), read_state_dict(path), source=f"init_blocks.{target} ({path})"
            )
            rank_zero_info(f"initialised {target} from {path}")

    def _init_target(self, target: str) -> nn.Module:
        """A slot (``voice_encoder``) or a part of one trained alone (``token2wav.flow``)."""
        slot, _, part = target.partition(".")
        if slot not in self.slots:
            raise ValueError(
                f"init_blocks names {target!r}, but this model has no {slot} ({', '.join(self.slots)})"
            )
        try:
            return getattr(self, slot).get_submodule(part) if part else getattr(self, slot)
        except AttributeError:
            parts = sorted({name.split(".")[0] for name, _ in getattr(self, slot).named_children()})
            raise ValueError(
                f"init_blocks names {target!r}, but {slot} has no part {part!r} (its parts: {', '.join(parts)})"
            ) from None

    def _load_init_checkpoint(self, path: str) -> None:
        """Initialise from a previous stage: every block it holds must load fully; new blocks keep theirs."""
        state = read_state_dict(path)
        if any(re.search(self.llm.lora_parameter_pattern, k) for k in state) and not self.llm.has_lora:
            self.llm.apply_lora()  # the previous stage trained adapters: load them, then fold them in below
        own = self.state_dict()
        unexpected = sorted(state.keys() - own.keys())
        loaded_slots = {k.split(".", 1)[0] for k in state}
        missing = sorted(k for k in own.keys() - state.keys() if k.split(".", 1)[0] in loaded_slots)
        if unexpected or missing:
            raise CheckpointMismatchError(
                f"init_checkpoint {path} does not fit this model: missing {missing[:8]}, unexpected {unexpected[:8]}; "
                "check that the blocks match the previous stage's recipe"
            )
        self.load_state_dict(state, strict=False)
        if self.hparams.trainable.get("llm") != "lora":
            self.llm.merge_lora()
        rank_zero_info(f"initialised {', '.join(sorted(loaded_slots))} from {path}")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[ASSETS_KEY] = {slot: pack(getattr(self, slot).checkpoint_assets()) for slot in self.slots}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Weights restored from a checkpoint (resume, ``load_from_checkpoint``) keep its stale-head marks."""
        adopt_stale_heads(self, recorded_stale_heads(checkpoint.get("hyper_parameters") or {}))

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any) -> MinMo:
        """Load from the checkpoint file alone, from any directory: it holds every weight, so the stage's
        starting points (``init_checkpoint``, ``init_blocks``) and the blocks' pretrained weights are not read
        again, and it carries the small files its blocks are built from (``checkpoint_assets``)."""
        checkpoint = read_checkpoint(checkpoint_path, mmap=True)
        saved = checkpoint.get("hyper_parameters") or {}
        assets = checkpoint.get(ASSETS_KEY) or {}
        for slot, base in SLOT_TYPES.items():
            spec, given = saved.get(slot), kwargs.get(slot)
            if not isinstance(spec, Mapping) or "class_path" not in spec:
                continue
            if given is not None and (
                not isinstance(given, Mapping)
                or given.get("class_path", spec["class_path"]) != spec["class_path"]
            ):
                continue  # the caller replaces the block
            saved_args = spec.get("init_args") or {}
            block_class = resolve_class(spec["class_path"], base, what=slot)
            init_args = restore_args(block_class, saved_args, assets.get(slot))
            # the caller's changes (a whole spec or only the changed arguments) go over the restored arguments
            changed = {
                k: v for k, v in ((given or {}).get("init_args") or {}).items() if saved_args.get(k) != v
            }
            kwargs[slot] = {"class_path": spec["class_path"], "init_args": {**init_args, **changed}}
        kwargs.setdefault("init_checkpoint", None)
        kwargs.setdefault("init_blocks", None)
        if is_sharded_checkpoint(checkpoint_path):  # FSDP2's folder: assembled into one file for Lightning
            with tempfile.TemporaryDirectory() as scratch:
                whole = consolidate(checkpoint_path, Path(scratch) / "model.ckpt")
                return super().load_from_checkpoint(whole, *args, **kwargs)
        return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)

    def train(self, mode: bool = True) -> MinMo:
        """Frozen slots stay in eval mode (no dropout, fixed norm statistics) while the rest trains."""
        super().train(mode)
        for slot in self.slots:
            if self.hparams.trainable.get(slot) == "frozen":
                getattr(self, slot).eval()
        return self

    def on_fit_start(self) -> None:
        self._check_supervision(getattr(self.trainer, "datamodule", None))
        rank_zero_info("trainable parameters per slot:\n" + format_summary(self.trainable_summary()))

    def _check_supervision(self, datamodule: Any) -> None:
        """Every task this model trains is supervised by some source of the data (their ``tasks``)."""
        offered = getattr(datamodule, "supervised_tasks", None)
        if not self.objective.trains_tasks or offered is None:
            return
        unsupervised = [t for t in self.tasks if t not in offered]
        if unsupervised:
            raise ValueError(
                f"the model trains task(s) {unsupervised}, which no source of the data supervises (the sources "
                f"supervise {offered}); add a source for them or drop them from model.init_args.tasks"
            )
        if self._trains_encoder_head and not self.voice_encoder.head_tasks & set(self.tasks) & set(offered):
            raise ValueError(
                f"encoder_head_weight is {self.hparams.encoder_head_weight}, but no source of a task this model "
                f"trains carries what the encoder's head learns from (tasks {sorted(self.voice_encoder.head_tasks)}):"
                " add such a source or set encoder_head_weight to 0"
            )

    def trainable_summary(self) -> list:
        return summarize(self, self.hparams.trainable, self.slots)

    # ---- speech to text -------------------------------------------------------------------------
    @property
    def prompts(self) -> SpeechPromptBuilder:
        if self._prompts is None:
            self._prompts = SpeechPromptBuilder(self.llm.tokenizer, self.hparams.user_template)
        return self._prompts

    def encode_audio(self, audio: AudioBatch) -> SequenceBatch:
        """Voice encoder then input projector: LLM-width embeddings, one per projected frame."""
        return self.input_projector(self.voice_encoder(audio))

    def _item_tasks(self, batch: Mapping[str, Any]) -> tuple[list[str], list[str]]:
        """Per item (instruction, response): each utterance gets one of the tasks this model trains that its
        source supervises (``batch["supervises"]``), chosen from its id and the epoch (deterministic, and the
        task rotates from epoch to epoch)."""
        offered = batch.get("supervises")
        if offered is None:
            raise ValueError(
                f"the batch (keys {sorted(batch)}) does not say which tasks it supervises: a speech-to-text "
                "datamodule sets batch['supervises'] (its `tasks`)"
            )
        supported = [t for t in self.tasks if t in offered]
        if not supported:
            raise ValueError(
                f"a batch of a source that supervises {list(offered)} reached a model that trains "
                f"{self.tasks}; give the model one of them (model.init_args.tasks) or the source one of the "
                "model's (its `tasks`)"
            )
        instructions, responses = [], []
        for i, item_id in enumerate(batch["ids"]):
            task = SPEECH_TASKS[
                supported[(zlib.crc32(str(item_id).encode()) + self.current_epoch) % len(supported)]
            ]
            instructions.append(task.prompt(batch, i, self.emotion_labels))
            responses.append(task.answer(batch, i, self.emotion_labels))
        return instructions, responses

    def encode_conversation(
        self, batch: Mapping[str, Any], heard: SequenceBatch | None = None
    ) -> tuple[SequenceBatch, list[list[Turn]] | None]:
        """``encode_audio`` of the current turn (``heard``: its voice-encoder frames, if computed already),
        preceded per item by the speech of its earlier turns (``batch["history"]``, whose user turns point into
        ``batch["history_audio"]``): the frames in the order the prompt's audio spans take them, and the
        history as prompt turns (``None``: no history)."""
        current = self.encode_audio(batch["audio"]) if heard is None else self.input_projector(heard)
        if batch.get("history") is None:
            return current, None
        clips = batch.get("history_audio")
        past = self.encode_audio(clips) if clips is not None else None
        histories, rows = [], []
        for i, turns in enumerate(batch["history"]):
            history, spans = [], []
            for turn in turns:
                clip = turn.get("audio")
                if clip is None:
                    history.append(Turn(turn["role"], turn.get("text", "")))
                    continue
                frames = int(past.lengths[clip])
                history.append(Turn(turn["role"], audio_frames=frames))
                spans.append(past.values[clip, :frames])
            spans.append(current.values[i, : int(current.lengths[i])])
            histories.append(history)
            rows.append(torch.cat(spans))
        lengths = torch.tensor([len(r) for r in rows], device=current.lengths.device)
        return SequenceBatch(nn.utils.rnn.pad_sequence(rows, batch_first=True), lengths), histories

    def _prompt_batch(
        self,
        instructions: list[str],
        audio: SequenceBatch | None,
        histories: list[list[Turn]] | None,
        responses: list[str] | None = None,
        padding_side: str = "right",
    ) -> PromptBatch:
        """The prompts for ``audio`` frames of whole conversations (``encode_conversation``)."""
        if audio is None:
            lengths = torch.zeros(len(instructions), dtype=torch.long)
        else:
            lengths = audio.lengths.cpu()
            if histories is not None:
                earlier = [sum(t.audio_frames or 0 for t in history) for history in histories]
                lengths = lengths - torch.tensor(earlier, dtype=torch.long)
        return self.prompts.build(instructions, lengths, responses, padding_side, histories).to_device(
            self.device
        )

    def _prompted_llm(
        self,
        instructions: list[str],
        responses: list[str],
        audio: SequenceBatch | None,
        histories: list[list[Turn]] | None = None,
    ) -> tuple[PromptBatch, Tensor, LLMOutput]:
        """Build the prompts (audio spliced in where given), run the LLM teacher forced."""
        prompt = self._prompt_batch(instructions, audio, histories, responses)
        if prompt.token_ids.shape[1] > self.llm.max_positions:
            raise ValueError(
                f"prompt of {prompt.token_ids.shape[1]} positions exceeds the LLM context ({self.llm.max_positions}); "
                "shorten the audio (data.max_seconds) or use an LLM with a longer context"
            )
        embeds = self.llm.embed(prompt.token_ids)
        if audio is not None:
            embeds = splice_audio(embeds, prompt.audio_mask, audio)
        return prompt, embeds, self.llm(embeds, attention_mask=prompt.attention_mask)

    @property
    def _trains_encoder_head(self) -> bool:
        return (
            self.hparams.encoder_head_weight > 0 and self.hparams.trainable.get("voice_encoder") != "frozen"
        )

    def speech_to_text_loss(self, batch: Mapping[str, Any], heard: SequenceBatch | None = None) -> Tensor:
        """The answers' cross-entropy; ``heard``: the voice encoder's frames of ``batch["audio"]``, if
        computed already."""
        audio, histories = self.encode_conversation(batch, heard)
        instructions, responses = self._item_tasks(batch)
        prompt, _, out = self._prompted_llm(instructions, responses, audio, histories)
        return nn.functional.cross_entropy(
            out.logits[:, :-1].flatten(0, 1).float(),
            prompt.labels[:, 1:].flatten(),
            ignore_index=IGNORE_INDEX,
        )

    def speech_to_text_objective(self, batch: Mapping[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        """The answers' loss, plus the voice encoder's own head loss where it trains (``encoder_head_weight``)."""
        if not self._trains_encoder_head:
            return self.speech_to_text_loss(batch), {}
        heard = self.voice_encoder(batch["audio"])
        answers = self.speech_to_text_loss(batch, heard)
        head = self.voice_encoder.head_loss(heard, batch)
        if head is None:  # nothing for the head here: a zero through its weights (DDP wants each one's grad)
            prefixes = self.voice_encoder.standalone_head
            weights = [p for n, p in self.voice_encoder.named_parameters() if n.startswith(prefixes)]
            return answers + 0.0 * sum(p.sum() for p in weights), {"answer_loss": answers}
        return answers + self.hparams.encoder_head_weight * head, {
            "answer_loss": answers,
            "encoder_head": head,
        }

    # ---- voice decoder (stages 2 and 3) ----------------------------------------------------------
    def voice_decoder_input(self, prompt: PromptBatch, embeds: Tensor, hidden: Tensor) -> VoiceDecoderInput:
        """MinMo §3.2: the query is [input embedding ; LLM last hidden] at each position of the current user
        turn (``prompt.turn_mask``), then [embedding ; hidden] per answer token."""
        answer = (prompt.labels != IGNORE_INDEX) & (prompt.token_ids != self.prompts.end_id)
        token_embeddings = SequenceBatch.packed(embeds, answer)
        token_hidden = SequenceBatch.packed(hidden, answer).values
        query = turn_query(embeds, hidden, prompt.turn_mask)
        return VoiceDecoderInput(
            query.values, token_embeddings.values, token_hidden, token_embeddings.lengths, query.lengths
        )

    def voice_decoder_forward(self, batch: Mapping[str, Any]) -> DecoderLoss:
        objective = self.objective
        texts, speech = batch[objective.answer_text], batch.get(objective.answer_speech)
        if speech is None:
            raise KeyError(
                f"objective {self.hparams.objective} needs speech-token targets ({objective.answer_speech}) in the "
                "batch; add them to the dataset with `minmo prepare` (speech tokenizer) first"
            )
        styles = batch.get("instruction") or [None] * len(texts)
        instructions = [with_style(objective.instruction.format(text=t), s) for t, s in zip(texts, styles)]
        llm_trains = self.hparams.trainable.get("llm") != "frozen"
        with torch.set_grad_enabled(torch.is_grad_enabled() and llm_trains):
            audio = self.encode_audio(batch[objective.user_audio]) if objective.user_audio else None
            prompt, embeds, out = self._prompted_llm(instructions, list(texts), audio)
        decoder_input = self.voice_decoder_input(prompt, embeds, out.hidden_states)
        query_rows, semantic = self.output_projector.split(
            decoder_input, self.output_projector(decoder_input)
        )
        prefix = query_rows if query_rows.values.shape[1] else None
        return self.voice_token_lm.decoder_forward(semantic, speech, prefix)

    def voice_decoder_objective(self, batch: Mapping[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        out = self.voice_decoder_forward(batch)
        return out.loss, {"speech_token_acc": out.acc}

    def objective_loss(self, batch: Mapping[str, Any], split: str) -> Tensor:
        """The objective's loss on ``batch``, logged with its metrics under ``split`` (train / val)."""
        loss, metrics = getattr(self, self.objective.loss)(batch)
        size = len(batch["ids"])
        for name, value in {**metrics, "loss": loss}.items():
            self.log(f"{split}/{name}", value, prog_bar=True, batch_size=size, sync_dist=split != "train")
        return loss

    def generation_prompt(
        self,
        instructions: list[str],
        frames: SequenceBatch | None = None,
        histories: list[list[Turn]] | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Left-padded prompt embeddings, attention mask and the current user turn's positions (what the
        voice decoder's query reads), the user's encoded audio (``encode_audio``, or ``encode_conversation``
        with its ``histories``) spliced in where given."""
        prompt = self._prompt_batch(instructions, frames, histories, padding_side="left")
        embeds = self.llm.embed(prompt.token_ids)
        if frames is not None:
            embeds = splice_audio(embeds, prompt.audio_mask, frames)
        return embeds, prompt.attention_mask, prompt.turn_mask

    def respond(
        self,
        audio: AudioBatch | None = None,
        texts: list[str] | None = None,
        verbatim: bool = False,
        prompt_audio: AudioBatch | None = None,
        styles: list[str | None] | None = None,
        history: list[list[dict[str, Any]]] | None = None,
        history_audio: AudioBatch | None = None,
        **options: Any,
    ) -> Iterator[ResponseChunk]:
        """Stream a spoken answer to the user's ``audio`` (chat), or read ``texts`` aloud (TTS prompt).

        ``verbatim`` (with ``texts``) teacher-forces the LLM's answer to be exactly the text, so only the
        voice decoder is judged. ``prompt_audio`` (16 kHz, one clip or one per row) gives the voice: token2wav
        speaks in its speaker's voice (``Token2Wav.voice_of``). ``styles`` (with ``texts``): per row an
        instruction on how to speak (``"Say it slowly."``, None: plain). ``history`` (with ``audio``): per row
        the earlier turns, ``{"role", "text", "audio": row of history_audio or None}`` (a dialogue
        datamodule's batch layout). ``options`` go to ``SpeechResponder`` (text sampling, speech sampler,
        ``synthesize``, ``compile=True``: compiled decode steps, CUDA graphs on a GPU; ``compiled.py``).
        """
        if (audio is None) == (texts is None):
            raise ValueError(
                "respond() takes either the user's audio (a spoken question) or texts to read aloud"
            )
        if verbatim and texts is None:
            raise ValueError("verbatim=True reads given texts aloud: pass texts=[...]")
        with torch.no_grad():
            if texts is not None:
                styles = styles or [None] * len(texts)
                embeds, mask, turn = self.generation_prompt(
                    [with_style(TTS_INSTRUCTION.format(text=t), s) for t, s in zip(texts, styles)]
                )
            else:
                conversation = {"audio": audio, "history": history, "history_audio": history_audio}
                frames, histories = self.encode_conversation(conversation)
                embeds, mask, turn = self.generation_prompt(
                    [SPEECH_TASKS["chat"].instruction] * audio.waveform.shape[0], frames, histories
                )
        if prompt_audio is not None:
            self._require_token2wav()
            options["voice"] = self.token2wav.voice_of(prompt_audio, embeds.shape[0])
        forced = None
        if verbatim:
            forced = TokenBatch.from_list([self.prompts.encode(t) for t in texts], self.device)
        return SpeechResponder(self, **options).stream(embeds, mask, forced, turn)

    @torch.no_grad()
    def transcribe(self, audio: AudioBatch, instruction: str | None = None) -> list[str]:
        """Greedy speech-to-text with the KV cache (``instruction`` defaults to ASR)."""
        return self.generate_text(self.encode_audio(audio), instruction)

    @torch.no_grad()
    def generate_text(
        self,
        frames: SequenceBatch,
        instruction: str | list[str] | None = None,
        histories: list[list[Turn]] | None = None,
    ) -> list[str]:
        """Greedy answers to already encoded audio (``encode_audio`` / ``encode_conversation``), so one encoding
        serves several prompts; ``instruction``: one for every item or one per item (default: ASR)."""
        instruction = instruction or SPEECH_TASKS["asr"].instruction
        instructions = [instruction] * frames.values.shape[0] if isinstance(instruction, str) else instruction
        embeds, attention_mask, _ = self.generation_prompt(instructions, frames, histories)
        tokenizer = self.llm.tokenizer
        result = generate(
            self.llm,
            embeds,
            attention_mask,
            eos_token_id=self.prompts.end_id,
            pad_token_id=self.prompts.pad_id,
            config=TextSamplingConfig(max_new_tokens=self.hparams.max_new_tokens),
        )
        texts = []
        for row, length in zip(result.tokens, result.lengths):
            ids = [t for t in row[: int(length)].tolist() if t != self.prompts.end_id]
            texts.append(tokenizer.decode(ids, skip_special_tokens=True).strip())
        return texts

    # ---- Lightning hooks ----------------------------------------------------------------------
    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        return self.objective_loss(batch, "train")

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        self.objective_loss(batch, "val")

    @torch.no_grad()
    def score_answers(self, frames: SequenceBatch, instruction: str, answers: list[str]) -> Tensor:
        """``[B, K]`` log-probability of each closed-set answer (its tokens and the end of turn) after the
        prompt, for encoded audio (``encode_audio``): rank classification, which judges what the model tells
        apart, not how well it spells."""
        size, count = frames.values.shape[0], len(answers)
        repeated = SequenceBatch(
            frames.values.repeat_interleave(count, 0), frames.lengths.repeat_interleave(count)
        )
        prompt, _, out = self._prompted_llm([instruction] * (size * count), answers * size, repeated)
        targets = prompt.labels[:, 1:]
        answer = targets != IGNORE_INDEX
        logp = out.logits[:, :-1][answer].float().log_softmax(-1)
        picked = logp.gather(-1, targets[answer][:, None]).squeeze(-1)
        rows = torch.arange(size * count, device=targets.device)[:, None].expand_as(targets)[answer]
        return torch.zeros(size * count, device=picked.device).index_add_(0, rows, picked).view(size, count)

    def predict_step(self, batch: Mapping[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        """One record per item (the ``minmo evaluate`` protocol): a speech-to-text source's first task
        (``TASK_PREDICTIONS``), else by what the batch holds (``PREDICTIONS``)."""
        if batch.get("supervises"):
            return getattr(self, TASK_PREDICTIONS.get(batch["supervises"][0], "predict_answer"))(batch)
        for field, method in PREDICTIONS:
            if field in batch:
                return getattr(self, method)(batch)
        raise ValueError(
            f"nothing to predict in a batch with keys {sorted(batch)}; it needs one of "
            f"{', '.join(f for f, _ in PREDICTIONS)}"
        )

    def predict_emotion(self, batch: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The generated SER answer and the closed-set pick (``scored_prediction``, from ``score_answers``)."""
        frames = self.encode_audio(batch["audio"])  # once, for both prompts
        instruction = SPEECH_TASKS["ser"].instruction.format(labels=", ".join(self.emotion_labels))
        texts = self.generate_text(frames, instruction)
        scores = self.score_answers(frames, instruction, self.emotion_labels)
        return [
            {
                "id": i,
                "task": "ser",
                "prediction_text": t,
                "scored_prediction": self.emotion_labels[int(row.argmax())],
                "answer_logprobs": dict(zip(self.emotion_labels, row.tolist())),
            }
            for i, t, row in zip(batch["ids"], texts, scores)
        ]

    def predict_speech(self, batch: Mapping[str, Any]) -> list[dict[str, Any]]:
        """TTS: each text read aloud (the LLM teacher forced on it, so the speech side is judged) and, as the
        ceiling, the reference speech tokens through the same token2wav. Audio goes in records as
        ``{"waveform", "sample_rate"}`` (the evaluation runner writes WAVs)."""
        spoken = self.speak(
            texts=list(batch["text"]), verbatim=True, seed=zlib.crc32(batch["ids"][0].encode())
        )
        ceiling = self._synthesize(batch["speech_tokens"])
        return [
            {"id": i, "task": "tts", **row, "ceiling_audio": ceiling[k]}
            for k, (i, row) in enumerate(zip(batch["ids"], spoken))
        ]

    def predict_voice_control(self, batch: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Each text read aloud as its instruction asks, and the same text read plainly: the change between
        the two is what voice-control evaluation measures (the LLM teacher forced on the text). With the
        dataset's styled and neutral speech tokens, both through the same token2wav as the ceiling."""
        seed = zlib.crc32(batch["ids"][0].encode())
        texts = list(batch["text"])
        styled = self.speak(texts=texts, verbatim=True, seed=seed, styles=list(batch["instruction"]))
        plain = self.speak(texts=texts, verbatim=True, seed=seed)
        ceiling: dict[str, list] = {}
        if "speech_tokens" in batch and "neutral_speech_tokens" in batch:  # the dataset's two readings
            ceiling["ceiling_audio"] = self._synthesize(batch["speech_tokens"])
            ceiling["ceiling_neutral_audio"] = self._synthesize(batch["neutral_speech_tokens"])
        return [
            {
                "id": i,
                "task": "voice_control",
                "instruction": instruction,
                "output_audio": row["output_audio"],
                "neutral_audio": neutral["output_audio"],
                **{field: clips[k] for field, clips in ceiling.items()},
            }
            for k, (i, instruction, row, neutral) in enumerate(
                zip(batch["ids"], batch["instruction"], styled, plain)
            )
        ]

    def predict_spoken_answer(self, batch: Mapping[str, Any]) -> list[dict[str, Any]]:
        """S2S: the spoken answer to each spoken question, judged against the model's own text answer; the
        ceiling is the dataset's answer speech tokens through the same token2wav, against the answer text."""
        spoken = self.speak(audio=batch["user_audio"], seed=zlib.crc32(batch["ids"][0].encode()))
        tokens = batch.get("answer_speech_tokens")
        ceiling = self._synthesize(tokens) if tokens is not None else [None] * len(spoken)
        return [
            {
                "id": i,
                "task": "s2s",
                "reference": row.pop("text"),
                "answer_text": answer,
                **row,
                **(
                    {"ceiling_audio": ceiling[k], "ceiling_reference": answer}
                    if ceiling[k] is not None
                    else {}
                ),
            }
            for k, (i, answer, row) in enumerate(zip(batch["ids"], batch["answer_text"], spoken))
        ]

    @torch.no_grad()
    def speak(
        self,
        audio: AudioBatch | None = None,
        texts: list[str] | None = None,
        verbatim: bool = False,
        seed: int = 0,
        styles: list[str | None] | None = None,
    ) -> list[dict[str, Any]]:
        """``respond`` run to the end: per row the answer ``text``, its ``speech_tokens`` count and
        ``output_audio`` (``{"waveform", "sample_rate"}``); speech sampled with a generator seeded by ``seed``."""
        self._require_token2wav()
        generator = torch.Generator(device=self.device).manual_seed(seed)
        rows = len(texts) if texts is not None else audio.waveform.shape[0]
        text_ids: list[list[int]] = [[] for _ in range(rows)]
        speech = [0] * rows
        waves: list[list[Tensor]] = [[] for _ in range(rows)]
        for chunk in self.respond(
            audio=audio, texts=texts, verbatim=verbatim, styles=styles, generator=generator
        ):
            for r in range(rows):
                text_ids[r] += chunk.text.tokens[r, : chunk.text.lengths[r]].tolist()
                speech[r] += int(chunk.speech.lengths[r])
                waves[r].append(chunk.audio.waveform[r, : chunk.audio.lengths[r]].float().cpu())
        rate = self.token2wav.sample_rate
        tokenizer = self.llm.tokenizer
        return [
            {
                "text": tokenizer.decode(
                    [t for t in ids if t != self.prompts.end_id], skip_special_tokens=True
                ).strip(),
                "speech_tokens": count,
                "output_audio": {
                    "waveform": torch.cat([torch.zeros(0), *parts]).numpy(),
                    "sample_rate": rate,
                },
            }
            for ids, count, parts in zip(text_ids, speech, waves)
        ]

    def _synthesize(self, tokens: TokenBatch) -> list[dict[str, Any]]:
        self._require_token2wav()
        with torch.no_grad():
            audio = self.token2wav(TokenBatch(tokens.tokens.to(self.device), tokens.lengths.to(self.device)))
        return [
            {
                "waveform": audio.waveform[r, : audio.lengths[r]].float().cpu().numpy(),
                "sample_rate": audio.sample_rate,
            }
            for r in range(audio.waveform.shape[0])
        ]

    def _require_token2wav(self) -> None:
        if self.token2wav is None:
            raise ValueError(
                "this model has no token2wav block, so it cannot produce audio: use a stage-2b/3 checkpoint "
                "whose recipe names model.init_args.token2wav"
            )

    def predict_answer(self, batch: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The generated answer to the source's first task (its references come from the batch through the
        evaluation task's ``batch_references``)."""
        name = batch["supervises"][0]
        task = SPEECH_TASKS[name]
        frames, histories = self.encode_conversation(batch)
        instructions = [task.prompt(batch, i, self.emotion_labels) for i in range(len(batch["ids"]))]
        texts = self.generate_text(frames, instructions, histories)
        return [{"id": i, "task": name, "prediction_text": t} for i, t in zip(batch["ids"], texts)]

    def predict_transcript(self, batch: Mapping[str, Any]) -> list[dict[str, Any]]:
        texts = self.generate_text(self.encode_audio(batch["audio"]))
        references = batch.get("text", [None] * len(texts))
        return [
            {"id": i, "task": "asr", "prediction": t, "reference": r}
            for i, t, r in zip(batch["ids"], texts, references)
        ]

    def configure_optimizers(self) -> Any:
        verify_stage(self, self._rules)
        return configure_adamw(self, OptimizerConfig.from_hparams(self.hparams, floor=0.1))
