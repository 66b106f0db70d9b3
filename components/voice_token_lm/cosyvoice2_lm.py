"""``CosyVoice2LM``: CosyVoice2's text-speech LM (``Qwen2LM``) as MinMo's voice token LM.

A Qwen2 backbone (``backbone.py``) reads embeddings; three small parts make it a speech LM:
``llm_embedding`` (2 rows: sos, task_id = "turn of speech"), ``speech_embedding`` (6561 codes + eos,
an unused id, fill) and ``llm_decoder`` (hidden -> those 6564 ids). Module names and the Qwen2 nesting
(``llm.model.model.*``, tied ``llm.model.lm_head``) are the official ``llm.pt`` keys, so the released
CosyVoice2-0.5B weights load as they are.

Two ways in:
- TTS mode (CosyVoice2, trains alone): text tokens are embedded with the Qwen2 table; the training row
  is unistream or 5:15 bistream (``layout.py``); ``generation.py`` decodes like CosyVoice2's ``inference``.
- MinMo voice-decoder mode: semantic vectors from the output projector take the place of text
  embeddings (optional per-turn prefix = the query); ``decoder_forward`` is the teacher-forced loss on
  speech tokens only; ``init_state``/``step`` stream (``streaming.py``): every 5 vectors -> 15 speech
  tokens, ``state.end_input(rows)`` ends a row's text (task_id), then speech until eos, with one KV cache
  kept across chunks.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from minmo_lightning.components.llm.hf_causal_lm import TINY_TOKENIZER
from torch import Tensor, nn

from minmo_lightning.blocks import VoiceTokenLM
from minmo_lightning.checkpoints import load_state_dict_strict, read_state_dict, require_files
from minmo_lightning.contracts import (
    IGNORE_INDEX,
    DecoderLoss,
    MixRatio,
    SemanticChunk,
    SequenceBatch,
    SpeechSampler,
    TokenBatch,
    VoiceLMStreamOptions,
)
from minmo_lightning.optim import OptimizerConfig, configure_adamw
from minmo_lightning.prompts import with_style

from .backbone import QWEN25_05B, Qwen2Stack
from .layout import SOS_ROW, TASK_ROW, Layout, SpecialIds, assemble
from .loss import label_smoothed_kl
from .sampling import SpeechSamplingConfig, sample_tokens
from .state import VoiceLMState
from .streaming import read_chunk
from .tokenizer import END_OF_PROMPT, TOKENIZER_FOLDER, load_cosyvoice2_tokenizer

CHECKPOINT_FILE = "llm.pt"

#: CosyVoice2-0.5B as released; the other presets state what they change
COSYVOICE2_05B = {
    "qwen2_config": QWEN25_05B,
    "speech_vocab_size": 6561,
    "mix_ratio": [5, 15],
    "lsm_weight": 0.0,
    "speech_input_noise": 0.0,
    "length_normalized_loss": True,
    "bistream_probability": 0.5,
    "sampling": {"top_p": 0.8, "top_k": 25, "win_size": 10, "tau_r": 0.1},
    "min_token_text_ratio": 2.0,
    "max_token_text_ratio": 20.0,
    "pretrained_path": None,
    "tokenizer_path": None,
    "dtype": "float32",
    "attn_implementation": "sdpa",
    "learning_rate": 1e-5,
    "warmup_steps": 2500,
    "lr_schedule": "constant",
}
TINY = {
    **COSYVOICE2_05B,
    "qwen2_config": {
        **QWEN25_05B,
        "vocab_size": 1024,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
    },
    "tokenizer_path": TINY_TOKENIZER,
    "learning_rate": 1e-3,
    "warmup_steps": 0,
}


@dataclass
class VoiceLMOutput(DecoderLoss):
    """Teacher-forced pass: token-averaged ``loss`` and ``acc``, with the ``layout`` it ran on, ``hidden``
    [B, T, D] and ``logits`` [B, T, 6564]."""

    layout: Layout
    hidden: Tensor
    logits: Tensor


LR_SCHEDULES = ("constant", "cosine")


class MixRatioMismatch(UserWarning):
    """The training data has fewer speech tokens per text token than the mix ratio interleaves."""


def instructed(texts: list[str], instructions: list[str | None] | None) -> list[str]:
    """CosyVoice2's instruct format (``frontend_instruct2``): the instruction, ``<|endofprompt|>``, then the
    text to speak, as one text stream; items without an instruction are the text alone."""
    if instructions is None:
        return list(texts)
    return [with_style(text, instruction, END_OF_PROMPT) for text, instruction in zip(texts, instructions)]


class CosyVoice2LM(VoiceTokenLM):
    """CosyVoice2 ``Qwen2LM``: Qwen2 backbone + sos/task_id, speech embedding and decoder (llm.pt layout)."""

    presets = {"cosyvoice2-0.5b": COSYVOICE2_05B, "tiny": TINY}
    weight_args = ("pretrained_path",)
    #: the text-token embeddings: trained when the block reads text alone (TTS); inside MinMo the output
    #: projector's semantic vectors take their place
    standalone_head = ("llm.model.model.embed_tokens.",)
    decode_mode: str | None = None  # compile_decoding

    def __init__(
        self,
        qwen2_config: dict[str, Any],
        speech_vocab_size: int = 6561,
        mix_ratio: list[int] | None = None,
        lsm_weight: float = 0.0,
        speech_input_noise: float = 0.0,
        length_normalized_loss: bool = True,
        bistream_probability: float = 0.5,
        sampling: dict[str, Any] | None = None,
        min_token_text_ratio: float = 2.0,
        max_token_text_ratio: float = 20.0,
        pretrained_path: str | None = None,
        tokenizer_path: str | None = None,
        dtype: str = "float32",
        attn_implementation: str = "sdpa",
        learning_rate: float = 1e-5,
        warmup_steps: int = 0,
        lr_schedule: str = "constant",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {lr_schedule!r}")
        mix_ratio = [5, 15] if mix_ratio is None else list(mix_ratio)
        if len(mix_ratio) != 2:
            raise ValueError(f"mix_ratio must be [text, speech] (CosyVoice2: [5, 15]), got {mix_ratio}")
        self.ratio = MixRatio(*mix_ratio)
        self.ids = SpecialIds(speech_vocab_size)
        self.speech_vocab_size = speech_vocab_size
        self.sampling = SpeechSamplingConfig(**(sampling or {}))
        if not 0.0 <= speech_input_noise < 1.0:
            raise ValueError(f"speech_input_noise must lie in [0, 1), got {speech_input_noise}")
        if not 0.0 <= bistream_probability <= 1.0:
            raise ValueError(f"bistream_probability must lie in [0, 1], got {bistream_probability}")
        if pretrained_path is not None:
            self._require_checkpoint_folder(pretrained_path)
        self.hidden_size = int(qwen2_config["hidden_size"])
        self.llm: Qwen2Stack | None = None
        self._tokenizer: Any = None
        self._mix_ratio_checked = False

    # ---- construction ------------------------------------------------------------------------
    def configure_model(self) -> None:
        """Build the modules (in llm.pt's key order) and load ``pretrained_path`` if set. Idempotent."""
        if self.llm is not None:
            return
        dim, outputs = self.hidden_size, self.ids.num_outputs
        dtype = getattr(torch, self.hparams.dtype)
        self.llm_embedding = nn.Embedding(2, dim, dtype=dtype)
        self.llm = Qwen2Stack(self.hparams.qwen2_config, self.hparams.attn_implementation).to(dtype)
        self.llm_decoder = nn.Linear(dim, outputs, dtype=dtype)
        self.speech_embedding = nn.Embedding(outputs, dim, dtype=dtype)
        on_meta = self.llm_decoder.weight.is_meta
        if self.hparams.pretrained_path is not None and not on_meta:
            self._load_checkpoint(self.hparams.pretrained_path)

    def built_backbone(self) -> Qwen2Stack:
        """The Qwen2 stack (``llm``), once ``configure_model`` has built it."""
        if self.llm is None:
            raise RuntimeError(
                "CosyVoice2LM is not built yet: call configure_model() first (Lightning does it in fit)"
            )
        return self.llm

    def shard_units(self) -> list[nn.Module]:
        """Each Qwen2 decoder layer is an FSDP2 unit (``sharding.py``)."""
        return list(self.built_backbone().model.model.layers)

    @staticmethod
    def _require_checkpoint_folder(path: str) -> Path:
        return require_files(path, [CHECKPOINT_FILE, f"{TOKENIZER_FOLDER}/config.json"], "CosyVoice2-0.5B")

    def load_pretrained(self, path: str) -> None:
        """Load ``llm.pt`` from a local CosyVoice2-0.5B folder; its ``CosyVoice-BlankEN/`` gives the tokenizer."""
        self._require_checkpoint_folder(path)
        self.hparams.pretrained_path = str(path)
        if self.llm is None:
            self.configure_model()
        else:
            self._load_checkpoint(str(path))

    def _load_checkpoint(self, path: str) -> None:
        folder = self._require_checkpoint_folder(path)
        config = json.loads((folder / TOKENIZER_FOLDER / "config.json").read_text())
        for key in (
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "vocab_size",
        ):
            if key in config and config[key] != self.hparams.qwen2_config.get(key):
                raise ValueError(
                    f"{folder / TOKENIZER_FOLDER / 'config.json'} has {key}={config[key]} but this CosyVoice2LM has "
                    f"{self.hparams.qwen2_config.get(key)}; build it with the preset that matches (cosyvoice2-0.5b)"
                )
        state = read_state_dict(folder / CHECKPOINT_FILE)
        load_state_dict_strict(self, state, source=str(folder / CHECKPOINT_FILE))
        if self.hparams.tokenizer_path is None:
            self.hparams.tokenizer_path = str(folder / TOKENIZER_FOLDER)
            self._tokenizer = None

    def checkpoint_assets(self) -> dict[str, Path]:
        """The Qwen tokenizer folder (the builtin tokenizer ships with the package)."""
        path = self.hparams.tokenizer_path
        return {} if path in (None, TINY_TOKENIZER) else {"tokenizer_path": Path(path)}

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            if self.hparams.tokenizer_path is None:
                raise ValueError(
                    "CosyVoice2LM has no tokenizer: set `tokenizer_path` (a Qwen tokenizer folder) or `pretrained_path`"
                )
            vocab = int(self.hparams.qwen2_config["vocab_size"])
            self._tokenizer = load_cosyvoice2_tokenizer(self.hparams.tokenizer_path, vocab)
        return self._tokenizer

    def tokenize(self, texts: list[str]) -> TokenBatch:
        """Strings -> text token ids (no BOS, as CosyVoice2's frontend); empty texts are an error."""
        ids = [self.tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
        empty = [i for i, row in enumerate(ids) if not row]
        if empty:
            raise ValueError(f"empty text at batch positions {empty}: every item needs text to speak")
        return TokenBatch.from_list(ids, self.device)

    # ---- teacher-forced passes ---------------------------------------------------------------
    def check_speech(self, speech: TokenBatch, allow_empty: bool = False) -> None:
        if not allow_empty or bool((speech.lengths > 0).any()):
            speech.require_range(self.speech_vocab_size, f"{type(self).__name__} speech tokens")

    @staticmethod
    def check_text(lengths: Tensor, what: str) -> None:
        if lengths.numel() == 0 or int(lengths.min()) < 1:
            raise ValueError(f"empty {what}: every item needs at least one, got lengths {lengths.tolist()}")

    def build_layout(
        self,
        text_vectors: Tensor,
        text_lengths: Tensor,
        speech: TokenBatch,
        interleave: Tensor,
        prefix: SequenceBatch | None = None,
    ) -> Layout:
        """Assemble the rows (see ``layout.py``) from text embeddings or semantic vectors and speech ids."""
        self.built_backbone()
        dtype = self.llm_embedding.weight.dtype  # semantic vectors may come in another precision
        return assemble(
            self.llm_embedding.weight[[SOS_ROW, TASK_ROW]],
            text_vectors.to(dtype),
            text_lengths,
            self.speech_embedding(self.teacher_tokens(speech.tokens)),
            speech.tokens,
            speech.lengths,
            interleave,
            self.ratio,
            self.ids,
            prefix=None if prefix is None else prefix.values.to(dtype),
            prefix_lengths=None if prefix is None else prefix.lengths,
        )

    def teacher_tokens(self, tokens: Tensor) -> Tensor:
        """The speech ids the decoder reads while it trains: a ``speech_input_noise`` share of them swapped
        for random ids (the targets stay true), so it learns to continue after its own wrong tokens instead of
        drifting into a memorised sentence at inference (exposure bias). The identity when evaluating."""
        share = self.hparams.speech_input_noise
        if not self.training or share == 0.0:
            return tokens
        swap = torch.rand(tokens.shape, device=tokens.device) < share
        return torch.where(swap, torch.randint_like(tokens, self.speech_vocab_size), tokens)

    def check_mix_ratio(self, text_lengths: Tensor, speech_lengths: Tensor) -> None:
        """Warn once per run when most training rows hold fewer speech tokens per text token than the mix
        ratio asks for: their interleaved speech runs ahead of the text read so far (a corpus/tokenizer
        mismatch that no amount of training repairs)."""
        if self._mix_ratio_checked:
            return
        self._mix_ratio_checked = True
        short = self.ratio.outruns_text(text_lengths, speech_lengths)
        if float(short.float().mean()) <= 0.5:
            return
        per_token = speech_lengths.float().to(text_lengths.device) / text_lengths.clamp(min=1).float()
        ratio, fitting = per_token.median(), int(per_token.quantile(0.1) * self.ratio.text - 1e-6)
        text_size, speech_size = self.ratio.text, self.ratio.speech
        warnings.warn(
            f"mix_ratio {text_size}:{speech_size} asks for {speech_size / text_size:g} speech tokens per text "
            f"token, but {int(short.sum())} of these {short.numel()} training rows have fewer (median "
            f"{float(ratio):.2f}): interleaved, their speech outruns the text it has read. Lower the speech "
            f"share (mix_ratio [{text_size}, {max(1, fitting)}] fits 90 % of them) or use a text tokenizer with "
            "fewer tokens per word",
            MixRatioMismatch,
            stacklevel=2,
        )

    def choose_interleave(self, text_lengths: Tensor, speech_lengths: Tensor) -> Tensor:
        """Per item: bistream with ``bistream_probability`` when the speech is long enough (as CosyVoice2)."""
        long_enough = ~self.ratio.outruns_text(text_lengths, speech_lengths)
        draw = torch.rand(text_lengths.shape, device=text_lengths.device) < self.hparams.bistream_probability
        return draw & long_enough

    def forward(self, layout: Layout) -> VoiceLMOutput:
        hidden, _ = self.built_backbone()(layout.inputs, layout.mask)
        logits = self.llm_decoder(hidden)
        loss = label_smoothed_kl(
            logits, layout.targets, self.hparams.lsm_weight, self.hparams.length_normalized_loss
        )
        scored = layout.targets != IGNORE_INDEX
        acc = (logits.argmax(-1)[scored] == layout.targets[scored]).float().mean()
        return VoiceLMOutput(loss=loss, acc=acc.detach(), layout=layout, hidden=hidden, logits=logits)

    def tts_forward(
        self, text: TokenBatch, speech: TokenBatch, interleave: Tensor | None = None
    ) -> VoiceLMOutput:
        """CosyVoice2 training pass: text ids + speech ids -> loss on speech tokens, fill and eos."""
        self.check_text(text.lengths, "text")
        self.check_speech(speech)
        if interleave is None:
            interleave = self.choose_interleave(text.lengths, speech.lengths)
        text_vectors = self.built_backbone().embed_text(text.tokens)
        return self(self.build_layout(text_vectors, text.lengths, speech, interleave))

    def decoder_forward(
        self,
        semantic: SequenceBatch,
        speech: TokenBatch,
        prefix: SequenceBatch | None = None,
        interleave: Tensor | None = None,
    ) -> VoiceLMOutput:
        """MinMo voice decoder, teacher forced: semantic vectors in place of text embeddings.

        ``semantic`` [B, N, D] are the output projector's vectors of the text tokens, ``prefix`` its
        per-turn query vectors. Default layout: 5:15 interleave (what ``step`` streams) for every item
        whose speech fills its full chunks, unistream for the rare rest (``layout.interleaved`` tells which;
        pass ``interleave`` to force one, an impossible interleave raises). Loss covers speech tokens, fill
        and eos only.
        """
        if semantic.values.shape[-1] != self.hidden_size:
            raise ValueError(
                f"semantic vectors must have the voice LM width {self.hidden_size}, got {semantic.values.shape[-1]}; "
                "set the output projector's output_dim to it"
            )
        self.check_text(semantic.lengths, "semantic vector sequence")
        self.check_speech(speech)
        if self.training:
            self.check_mix_ratio(semantic.lengths, speech.lengths)
        if interleave is None:
            interleave = self.ratio.can_interleave(semantic.lengths, speech.lengths)
        return self(self.build_layout(semantic.values, semantic.lengths, speech, interleave, prefix))

    # ---- standalone training (TTS) -----------------------------------------------------------
    def _tts_batch_loss(self, batch: dict[str, Any], split: str) -> Tensor:
        if "speech_tokens" not in batch:
            raise KeyError(
                "the TTS batch has no 'speech_tokens': add the column with `minmo prepare` (speech tokenizer) first"
            )
        text = self.tokenize(instructed(batch["text"], batch.get("instruction")))
        if split == "train":
            self.check_mix_ratio(text.lengths, batch["speech_tokens"].lengths)
        out = self.tts_forward(text, batch["speech_tokens"])
        size = len(batch["text"])
        self.log(f"{split}/loss", out.loss, prog_bar=True, batch_size=size)
        self.log(f"{split}/acc", out.acc, prog_bar=True, batch_size=size)
        return out.loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self._tts_batch_loss(batch, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        return self._tts_batch_loss(batch, "val")

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW: a linear warmup over ``warmup_steps``, then a constant rate (CosyVoice2's fine-tuning) or a
        cosine to a tenth of it over the run, following the wall clock under ``max_time`` (a run on a time
        budget ends annealed)."""
        cosine = self.hparams.get("lr_schedule", "constant") == "cosine"
        config = OptimizerConfig.from_hparams(self.hparams, cosine=cosine, follow_timer=cosine)
        return configure_adamw(self, config)

    # ---- incremental decoding ----------------------------------------------------------------
    def init_state(self, batch_size: int, options: VoiceLMStreamOptions | None = None) -> VoiceLMState:
        """A fresh decoding session per row; ``options`` choose the speech sampler (default: ``sampling``)."""
        self.built_backbone()
        device = self.llm_decoder.weight.device
        zeros = lambda dtype: torch.zeros(batch_size, dtype=dtype, device=device)  # noqa: E731
        return VoiceLMState(
            batch_size=batch_size,
            options=options if options is not None else VoiceLMStreamOptions(),
            mask=torch.zeros(batch_size, 0, dtype=torch.long, device=device),
            position=zeros(torch.long),
            pending=zeros(torch.long),
            has_pending=zeros(torch.bool),
            started=zeros(torch.bool),
            turn_of_speech_fed=zeros(torch.bool),
            finished=zeros(torch.bool),
            text_count=zeros(torch.long),
            speech_count=zeros(torch.long),
            history=torch.zeros(batch_size, max(self.sampling.win_size, 1), dtype=torch.long, device=device),
        )

    def step(self, chunk: SemanticChunk, state: VoiceLMState) -> TokenBatch:
        """Read ``ratio.text`` semantic vectors per row, write up to ``ratio.speech`` speech tokens (``streaming.py``)."""
        return read_chunk(self, chunk, state)

    def feed(self, state: VoiceLMState, inputs: Tensor, valid: Tensor) -> Tensor:
        """Append ``inputs`` [B, t, D] (row-wise left-aligned, ``valid`` [B, t]) to the cache.

        Returns the final hidden state at each row's last valid input ([B, D]; undefined for rows that fed
        nothing). Positions continue per row, so rows of different lengths decode exactly as alone.
        """
        backbone = self.built_backbone()
        if state.cache is None:
            state.cache = backbone.new_cache(self.decode_mode)
        steps = valid.long().cumsum(1)
        positions = (state.position[:, None] + steps - 1).clamp(min=0)
        mask = torch.cat([state.mask, valid.long()], 1)
        # without holes a plain causal mask is implied: passing none lets sdpa use its fast GQA kernels
        holes = None if bool(mask.all()) else mask
        hidden, state.cache = backbone(
            inputs.to(self.llm_decoder.weight.dtype), holes, positions, state.cache
        )
        state.mask = mask
        state.position = state.position + steps[:, -1]
        last = (steps[:, -1] - 1).clamp(min=0)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]

    def compile_decoding(self, mode: str | None) -> None:
        """``mode`` (a torch.compile mode): sessions whose cache is made from now on decode over a static KV
        cache, one speech token per compiled step (``captured_step.py``); None: eager, the default."""
        self.decode_mode = mode

    def log_probs(self, hidden: Tensor) -> Tensor:
        """Final hidden states [B, D] -> log-probabilities over the speech ids [B, 6564] (float32)."""
        return self.llm_decoder(hidden).float().log_softmax(-1)

    def sampler(self, options: VoiceLMStreamOptions) -> SpeechSampler:
        """``options.sampler``, else RAS with this block's ``sampling`` settings drawing from ``options.generator``."""
        if options.sampler is not None:
            return options.sampler
        return lambda logp, history: sample_tokens(logp, history, self.sampling, options.generator)
