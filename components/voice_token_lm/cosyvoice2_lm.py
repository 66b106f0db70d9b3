"""``CosyVoice2LM``: CosyVoice2's text-speech LM (``Qwen2LM``) as MinMo's voice token LM.

A Qwen2 backbone (transformers) reads embeddings; three small parts make it a speech LM:
``llm_embedding`` (2 rows: sos, task_id = "turn of speech"), ``speech_embedding`` (6561 codes + eos,
an unused id, fill) and ``llm_decoder`` (hidden -> those 6564 ids). Module names and the Qwen2 nesting
(``llm.model.model.*``, tied ``llm.model.lm_head``) are the official ``llm.pt`` keys, so the released
CosyVoice2-0.5B weights load as they are.

Two ways in:
- TTS mode (CosyVoice2, trains alone): text tokens are embedded with the Qwen2 table; the training row
  is unistream or 5:15 bistream (``layout.py``); ``generate`` decodes like CosyVoice2's ``inference``.
- MinMo voice-decoder mode: semantic vectors from the output projector take the place of text
  embeddings (optional per-turn prefix = the query); ``decoder_forward`` is the teacher-forced loss on
  speech tokens only; ``init_state``/``step`` stream: every 5 vectors -> 15 speech tokens, a short last
  chunk ends the text (task_id), then speech until eos, with one KV cache kept across chunks.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from minmo_lightning.components.llm.kv_cache import growing_cache
from torch import Tensor, nn

from minmo_lightning.blocks import StreamState, VoiceTokenLM
from minmo_lightning.checkpoints import load_state_dict_strict, read_state_dict, require_files
from minmo_lightning.contracts import SequenceBatch, TokenBatch

from .layout import IGNORE_ID, SOS_ROW, TASK_ROW, Layout, MixRatio, SpecialIds, assemble
from .sampling import SamplingConfig, sample_tokens

#: Qwen2.5-0.5B, the backbone of CosyVoice2-0.5B (reference ``Qwen2Config`` names).
QWEN25_05B = {
    "vocab_size": 151936,
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "max_position_embeddings": 32768,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-06,
    "tie_word_embeddings": True,
    "hidden_act": "silu",
    "use_sliding_window": False,
}
#: Special tokens CosyVoice2's tokenizer adds to the Qwen tokenizer, in its order (ids follow the base vocab).
COSYVOICE2_SPECIAL_TOKENS = [
    "<|im_start|>", "<|im_end|>", "<|endofprompt|>", "[breath]", "<strong>", "</strong>", "[noise]",
    "[laughter]", "[cough]", "[clucking]", "[accent]", "[quick_breath]", "<laughter>", "</laughter>",
    "[hissing]", "[sigh]", "[vocalized-noise]", "[lipsmack]", "[mn]",
]  # fmt: skip
CHECKPOINT_FILE, TOKENIZER_FOLDER = "llm.pt", "CosyVoice-BlankEN"
SpeechSampler = Callable[[Tensor, Tensor], Tensor]


def load_cosyvoice2_tokenizer(folder: str | Path, vocab_size: int) -> Any:
    """The Qwen tokenizer in ``folder`` plus CosyVoice2's special tokens (as ``CosyVoice2Tokenizer`` does).

    ``builtin:tiny-tokenizer`` names the small byte-level BPE shipped with the LLM component (tiny recipes).
    """
    from minmo_lightning.components.llm.hf_causal_lm import resolve_tokenizer_path
    from transformers import AutoTokenizer

    folder = resolve_tokenizer_path(str(folder))
    if not folder.is_dir() or not any((folder / n).is_file() for n in ("tokenizer.json", "vocab.json")):
        raise FileNotFoundError(
            f"no tokenizer in {folder}: expected tokenizer.json (or vocab.json + merges.txt); for the official model "
            f"this is the {TOKENIZER_FOLDER}/ folder inside CosyVoice2-0.5B"
        )
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    tokenizer.add_special_tokens(
        {
            "eos_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>",
            "additional_special_tokens": COSYVOICE2_SPECIAL_TOKENS,
        }
    )
    if len(tokenizer) > vocab_size:
        raise ValueError(
            f"the tokenizer in {folder} has {len(tokenizer)} ids (with CosyVoice2's special tokens) but the text "
            f"embedding has only {vocab_size} rows; use the tokenizer that belongs to this model"
        )
    return tokenizer


class Qwen2Stack(nn.Module):
    """transformers' ``Qwen2ForCausalLM`` under ``model`` (the ``llm.model.`` key prefix of llm.pt).

    Only the inner ``Qwen2Model`` runs: CosyVoice2 reads the final-norm hidden states and never the
    151936-way ``lm_head`` (kept, tied, because the checkpoint stores it).
    """

    def __init__(self, config: dict[str, Any], attn_implementation: str) -> None:
        super().__init__()
        from transformers import Qwen2Config, Qwen2ForCausalLM

        self.config = Qwen2Config(**config, attn_implementation=attn_implementation)
        self.model = Qwen2ForCausalLM(self.config)

    def embed_text(self, token_ids: Tensor) -> Tensor:
        return self.model.model.embed_tokens(token_ids)

    def new_cache(self) -> Any:
        return growing_cache(self.config.num_hidden_layers)

    def forward(
        self, embeds: Tensor, mask: Tensor, position_ids: Tensor | None = None, cache: Any = None
    ) -> tuple[Tensor, Any]:
        out = self.model.model(
            inputs_embeds=embeds,
            attention_mask=mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=cache is not None,
        )
        return out.last_hidden_state, out.cache


@dataclass
class VoiceLMOutput:
    """Teacher-forced pass: ``hidden`` [B, T, D], ``logits`` [B, T, 6564], token-averaged ``loss``, ``acc``."""

    layout: Layout
    hidden: Tensor
    logits: Tensor
    loss: Tensor
    acc: Tensor


@dataclass
class VoiceLMState(StreamState):
    """Per-session decoding state. Zero means "fresh" in every field, so the default ``reset`` restarts rows.

    ``mask`` [B, L] marks the KV-cache columns that belong to each row's live session (a reset row's old
    columns stay in the shared cache but are masked out; columns no row uses are trimmed).
    """

    mask: Tensor  # [B, L]
    position: Tensor  # [B] next rotary position
    pending: Tensor  # [B] last sampled token, fed with the next call
    has_pending: Tensor  # [B]
    started: Tensor  # [B] sos (+ prefix) fed
    ended: Tensor  # [B] task_id ("turn of speech") fed
    finished: Tensor  # [B] eos sampled (or the length cap reached)
    text_count: Tensor  # [B] semantic vectors read
    speech_count: Tensor  # [B] speech tokens written
    history: Tensor  # [B, W] most recent speech tokens (repetition-aware sampling)
    cache: Any = None

    def reset(self, items: Tensor | list[int]) -> None:
        super().reset(items)
        trim_cache(self)

    def recent_tokens(self) -> Tensor:
        """``history`` with slots before the row's first token set to -1 (not a token)."""
        width = self.history.shape[1]
        valid = torch.arange(width, device=self.history.device)[None] >= width - self.speech_count[:, None]
        return torch.where(valid, self.history, -1)


def trim_cache(state: VoiceLMState) -> None:
    """Drop leading cache columns that no row uses any more (keeps the cache bounded across sessions)."""
    if state.cache is None or state.mask.numel() == 0:
        return
    used = state.mask.any(0)
    start = int(used.float().argmax()) if bool(used.any()) else state.mask.shape[1]
    if start == 0:
        return
    state.mask = state.mask[:, start:]
    if state.mask.shape[1] == 0:
        state.cache = None
        return
    for layer in state.cache.layers:
        layer.drop_front(start)


def label_smoothed_kl(logits: Tensor, targets: Tensor, smoothing: float, normalize_length: bool) -> Tensor:
    """CosyVoice2's ``LabelSmoothingLoss``: KL(smoothed one-hot || softmax), summed over scored positions.

    Divided by the number of scored positions (``normalize_length``) or by the batch size.
    """
    size = logits.shape[-1]
    logp = logits.float().log_softmax(-1).reshape(-1, size)
    target = targets.reshape(-1)
    scored = target != IGNORE_ID
    logp, target = logp[scored], target[scored]
    confidence, low = 1.0 - smoothing, smoothing / (size - 1)
    entropy_term = (size - 1) * low * math.log(low) if low > 0 else 0.0
    entropy_term += confidence * math.log(confidence) if confidence > 0 else 0.0
    cross = low * logp.sum(-1) + (confidence - low) * logp.gather(-1, target[:, None]).squeeze(-1)
    total = (entropy_term - cross).sum()
    return total / (scored.sum().clamp(min=1) if normalize_length else targets.shape[0])


def concat_tokens(first: TokenBatch, second: TokenBatch) -> TokenBatch:
    """Row-wise ``first ++ second`` (e.g. prompt text before the text to speak)."""
    rows = [
        torch.cat([first.tokens[i, : first.lengths[i]], second.tokens[i, : second.lengths[i]]])
        for i in range(first.tokens.shape[0])
    ]
    return TokenBatch(nn.utils.rnn.pad_sequence(rows, batch_first=True), first.lengths + second.lengths)


def _scatter_parts(parts: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """Concatenate per-row variable-length parts ``(values [B, n, D], counts [B])`` left-aligned.

    Returns ``inputs`` [B, T, D] (zeros after each row's end) and ``valid`` [B, T]. One scatter per part.
    """
    counts = torch.stack([c for _, c in parts], 1)
    starts = counts.cumsum(1) - counts
    total = counts.sum(1)
    values0 = parts[0][0]
    batch, dim = values0.shape[0], values0.shape[-1]
    out = values0.new_zeros(batch, max(int(total.max()), 1), dim)
    for p, (values, count) in enumerate(parts):
        slot = torch.arange(values.shape[1], device=out.device)[None]
        take = slot < count[:, None]
        rows = torch.arange(batch, device=out.device)[:, None].expand_as(take)
        out[rows[take], (starts[:, p : p + 1] + slot).expand_as(take)[take]] = values[take].to(out.dtype)
    valid = torch.arange(out.shape[1], device=out.device)[None] < total[:, None]
    return out, valid


class CosyVoice2LM(VoiceTokenLM):
    """CosyVoice2 ``Qwen2LM``: Qwen2 backbone + sos/task_id, speech embedding and decoder (llm.pt layout)."""

    presets = {
        "cosyvoice2-0.5b": {
            "qwen2_config": QWEN25_05B,
            "speech_vocab_size": 6561,
            "mix_ratio": [5, 15],
            "lsm_weight": 0.0,
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
        },
        "tiny": {
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
            "speech_vocab_size": 6561,
            "mix_ratio": [5, 15],
            "lsm_weight": 0.0,
            "length_normalized_loss": True,
            "bistream_probability": 0.5,
            "sampling": {"top_p": 0.8, "top_k": 25, "win_size": 10, "tau_r": 0.1},
            "min_token_text_ratio": 2.0,
            "max_token_text_ratio": 20.0,
            "pretrained_path": None,
            "tokenizer_path": "builtin:tiny-tokenizer",
            "dtype": "float32",
            "attn_implementation": "sdpa",
            "learning_rate": 1e-3,
            "warmup_steps": 0,
        },
    }

    def __init__(
        self,
        qwen2_config: dict[str, Any],
        speech_vocab_size: int = 6561,
        mix_ratio: list[int] | None = None,
        lsm_weight: float = 0.0,
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
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        mix_ratio = [5, 15] if mix_ratio is None else list(mix_ratio)
        if len(mix_ratio) != 2:
            raise ValueError(f"mix_ratio must be [text, speech] (CosyVoice2: [5, 15]), got {mix_ratio}")
        self.ratio = MixRatio(*mix_ratio)
        self.ids = SpecialIds(speech_vocab_size)
        self.speech_vocab_size = speech_vocab_size
        self.sampling = SamplingConfig(**(sampling or {}))
        if not 0.0 <= bistream_probability <= 1.0:
            raise ValueError(f"bistream_probability must lie in [0, 1], got {bistream_probability}")
        if pretrained_path is not None:
            self._require_checkpoint_folder(pretrained_path)
        self.hidden_size = int(qwen2_config["hidden_size"])
        self.llm: Qwen2Stack | None = None
        self._tokenizer: Any = None

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

    def _require_model(self) -> Qwen2Stack:
        if self.llm is None:
            raise RuntimeError(
                "CosyVoice2LM is not built yet: call configure_model() first (Lightning does it in fit)"
            )
        return self.llm

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
        backbone = json.loads((folder / TOKENIZER_FOLDER / "config.json").read_text())
        for key in (
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "vocab_size",
        ):
            if key in backbone and backbone[key] != self.hparams.qwen2_config.get(key):
                raise ValueError(
                    f"{folder / TOKENIZER_FOLDER / 'config.json'} has {key}={backbone[key]} but this CosyVoice2LM has "
                    f"{self.hparams.qwen2_config.get(key)}; build it with the preset that matches (cosyvoice2-0.5b)"
                )
        state = read_state_dict(folder / CHECKPOINT_FILE)
        load_state_dict_strict(self, state, source=str(folder / CHECKPOINT_FILE))
        if self.hparams.tokenizer_path is None:
            self.hparams.tokenizer_path = str(folder / TOKENIZER_FOLDER)
            self._tokenizer = None

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
        rows = [torch.tensor(row, dtype=torch.long) for row in ids]
        lengths = torch.tensor([len(row) for row in ids])
        return TokenBatch(
            nn.utils.rnn.pad_sequence(rows, batch_first=True).to(self.device), lengths.to(self.device)
        )

    # ---- teacher-forced passes ---------------------------------------------------------------
    def _check_speech(self, speech: TokenBatch, allow_empty: bool = False) -> None:
        if not allow_empty or bool((speech.lengths > 0).any()):
            speech.require_range(self.speech_vocab_size, f"{type(self).__name__} speech tokens")

    @staticmethod
    def _check_text(lengths: Tensor, what: str) -> None:
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
        self._require_model()
        dtype = self.llm_embedding.weight.dtype  # semantic vectors may come in another precision
        return assemble(
            self.llm_embedding.weight[[SOS_ROW, TASK_ROW]],
            text_vectors.to(dtype),
            text_lengths,
            self.speech_embedding(speech.tokens),
            speech.tokens,
            speech.lengths,
            interleave,
            self.ratio,
            self.ids,
            prefix=None if prefix is None else prefix.values.to(dtype),
            prefix_lengths=None if prefix is None else prefix.lengths,
        )

    def choose_interleave(self, text_lengths: Tensor, speech_lengths: Tensor) -> Tensor:
        """Per item: bistream with ``bistream_probability`` when the speech is long enough (as CosyVoice2)."""
        long_enough = speech_lengths * self.ratio.text > text_lengths * self.ratio.speech
        draw = torch.rand(text_lengths.shape, device=text_lengths.device) < self.hparams.bistream_probability
        return draw & long_enough

    def forward(self, layout: Layout) -> VoiceLMOutput:
        hidden, _ = self._require_model()(layout.inputs, layout.mask)
        logits = self.llm_decoder(hidden)
        loss = label_smoothed_kl(
            logits, layout.targets, self.hparams.lsm_weight, self.hparams.length_normalized_loss
        )
        scored = layout.targets != IGNORE_ID
        acc = (logits.argmax(-1)[scored] == layout.targets[scored]).float().mean()
        return VoiceLMOutput(layout, hidden, logits, loss, acc.detach())

    def tts_forward(
        self, text: TokenBatch, speech: TokenBatch, interleave: Tensor | None = None
    ) -> VoiceLMOutput:
        """CosyVoice2 training pass: text ids + speech ids -> loss on speech tokens, fill and eos."""
        self._check_text(text.lengths, "text")
        self._check_speech(speech)
        if interleave is None:
            interleave = self.choose_interleave(text.lengths, speech.lengths)
        text_vectors = self._require_model().embed_text(text.tokens)
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
        self._check_text(semantic.lengths, "semantic vector sequence")
        self._check_speech(speech)
        if interleave is None:
            interleave = self.ratio.can_interleave(semantic.lengths, speech.lengths)
        return self(self.build_layout(semantic.values, semantic.lengths, speech, interleave, prefix))

    # ---- standalone training (TTS) -----------------------------------------------------------
    def _tts_batch_loss(self, batch: dict[str, Any], stage: str) -> Tensor:
        if "speech_tokens" not in batch:
            raise KeyError(
                "the TTS batch has no 'speech_tokens': add the column with `minmo prepare` (speech tokenizer) first"
            )
        out = self.tts_forward(self.tokenize(batch["text"]), batch["speech_tokens"])
        size = len(batch["text"])
        self.log(f"{stage}/loss", out.loss, prog_bar=True, batch_size=size)
        self.log(f"{stage}/acc", out.acc, prog_bar=True, batch_size=size)
        return out.loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self._tts_batch_loss(batch, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self._tts_batch_loss(batch, "val")

    def configure_optimizers(self) -> Any:
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.hparams.learning_rate)
        warmup = max(int(self.hparams.warmup_steps), 0)
        if warmup == 0:
            return optimizer
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    # ---- incremental decoding ----------------------------------------------------------------
    def init_state(self, batch_size: int) -> VoiceLMState:
        self._require_model()
        device = self.llm_decoder.weight.device
        zeros = lambda dtype: torch.zeros(batch_size, dtype=dtype, device=device)  # noqa: E731
        return VoiceLMState(
            batch_size=batch_size,
            mask=torch.zeros(batch_size, 0, dtype=torch.long, device=device),
            position=zeros(torch.long),
            pending=zeros(torch.long),
            has_pending=zeros(torch.bool),
            started=zeros(torch.bool),
            ended=zeros(torch.bool),
            finished=zeros(torch.bool),
            text_count=zeros(torch.long),
            speech_count=zeros(torch.long),
            history=torch.zeros(batch_size, max(self.sampling.win_size, 1), dtype=torch.long, device=device),
        )

    def feed(self, state: VoiceLMState, inputs: Tensor, valid: Tensor) -> Tensor:
        """Append ``inputs`` [B, t, D] (row-wise left-aligned, ``valid`` [B, t]) to the cache.

        Returns the final hidden state at each row's last valid input ([B, D]; undefined for rows that fed
        nothing). Positions continue per row, so rows of different lengths decode exactly as alone.
        """
        model = self._require_model()
        if state.cache is None:
            state.cache = model.new_cache()
        steps = valid.long().cumsum(1)
        positions = (state.position[:, None] + steps - 1).clamp(min=0)
        mask = torch.cat([state.mask, valid.long()], 1)
        # without holes a plain causal mask is implied: passing none lets sdpa use its fast GQA kernels
        holes = None if bool(mask.all()) else mask
        hidden, state.cache = model(inputs.to(self.llm_decoder.weight.dtype), holes, positions, state.cache)
        state.mask = mask
        state.position = state.position + steps[:, -1]
        last = (steps[:, -1] - 1).clamp(min=0)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]

    def _remember(self, state: VoiceLMState, token: Tensor, rows: Tensor) -> None:
        """Count ``token`` as generated for ``rows`` (RAS history, speech counter)."""
        shifted = torch.cat([state.history[:, 1:], token[:, None]], 1)
        state.history = torch.where(rows[:, None], shifted, state.history)
        state.speech_count = state.speech_count + rows.long()

    def _default_sampler(self, generator: torch.Generator | None) -> SpeechSampler:
        return lambda logp, history: sample_tokens(logp, history, self.sampling, generator)

    def _log_probs(self, hidden: Tensor) -> Tensor:
        return self.llm_decoder(hidden).float().log_softmax(-1)

    @torch.no_grad()
    def generate(
        self,
        text: TokenBatch,
        prompt_text: TokenBatch | None = None,
        prompt_speech: TokenBatch | None = None,
        sampler: SpeechSampler | None = None,
        generator: torch.Generator | None = None,
        max_tokens: int | None = None,
    ) -> TokenBatch:
        """CosyVoice2 unistream inference, batched: [sos, prompt text + text, task_id, prompt speech] -> speech.

        eos is banned for the first ``min_token_text_ratio * len(text)`` tokens; a row stops at any stop id
        (eos, the unused id, fill) or after ``max_token_text_ratio * len(text)`` tokens. ``sampler(logp,
        history)`` defaults to RAS with the block's ``sampling`` settings; ``max_tokens`` caps every row.
        """
        self._check_text(text.lengths, "text")
        sampler = sampler or self._default_sampler(generator)
        batch = text.tokens.shape[0]
        full_text = text if prompt_text is None else concat_tokens(prompt_text, text)
        if prompt_speech is None:
            prompt_speech = TokenBatch(text.tokens.new_zeros(batch, 0), torch.zeros_like(text.lengths))
        self._check_speech(prompt_speech, allow_empty=True)
        layout = self.build_layout(
            self._require_model().embed_text(full_text.tokens),
            full_text.lengths,
            prompt_speech,
            torch.zeros(batch, dtype=torch.bool, device=text.lengths.device),
        )
        # the layout ends with an eos target slot but no input for it: inputs are exactly the prompt
        state = self.init_state(batch)
        hidden = self.feed(state, layout.inputs, layout.mask)
        min_len = (text.lengths * self.hparams.min_token_text_ratio).long()
        max_len = (text.lengths * self.hparams.max_token_text_ratio).long()
        if max_tokens is not None:
            max_len = max_len.clamp(max=max_tokens)
        tokens = text.tokens.new_zeros(batch, int(max_len.max()))
        active = max_len > 0
        for i in range(tokens.shape[1]):
            logp = self._log_probs(hidden)
            logp[:, self.ids.eos] = torch.where(i < min_len, float("-inf"), logp[:, self.ids.eos])
            token = sampler(logp, state.recent_tokens())
            active = active & (token < self.speech_vocab_size)
            tokens[:, i] = torch.where(active, token, 0)
            self._remember(state, token, active)
            active = active & (state.speech_count < max_len)
            if not bool(active.any()):
                break
            hidden = self.feed(state, self.speech_embedding(token)[:, None], active[:, None])
        return TokenBatch(tokens[:, : int(state.speech_count.max())], state.speech_count.clone())

    @torch.no_grad()
    def generate_bistream(
        self,
        text_chunks: Iterable[Tensor],
        prompt_text: Tensor | None = None,
        prompt_speech: Tensor | None = None,
        sampler: SpeechSampler | None = None,
        generator: torch.Generator | None = None,
    ) -> Iterator[int]:
        """CosyVoice2's ``inference_bistream`` for one utterance: text arrives in pieces, speech streams out.

        Text ids (1-D tensors) are buffered and fed 5 at a time; after each 15 speech tokens the LM gives
        fill (forced on schedule) and waits for the next 5 text tokens. When the text iterator ends, the
        rest of the text and task_id follow and speech runs to eos. Prompt speech tokens are interleaved
        with the first text chunks. This reproduces the released schedule exactly, including its quirk: when
        the text ends right after a fill, the last speech token is fed a second time before the final text.
        """
        a, b = self.ratio.text, self.ratio.speech
        sampler = sampler or self._default_sampler(generator)
        model, special = self._require_model(), self.llm_embedding.weight
        device = special.device
        empty = torch.zeros(0, dtype=torch.long, device=device)
        prompt_text = empty if prompt_text is None else prompt_text.reshape(-1).to(device)
        prompt_speech = empty if prompt_speech is None else prompt_speech.reshape(-1).to(device)
        self._check_speech(
            TokenBatch(prompt_speech[None], torch.tensor([prompt_speech.numel()], device=device)),
            allow_empty=True,
        )
        text_cache = model.embed_text(prompt_text)[None]
        prompt_emb = self.speech_embedding(prompt_speech)[None]
        lm_input = special[SOS_ROW].reshape(1, 1, -1)
        state = self.init_state(1)
        out: list[int] = []  # every id the LM gave, fills included (RAS looks back over them)
        next_fill = (prompt_speech.numel() // b + 1) * b - prompt_speech.numel()
        text_total = 0

        def decode(final: bool) -> Iterator[int]:
            nonlocal lm_input, next_fill
            while not final or len(out) < max(1, int(text_total * self.hparams.max_token_text_ratio)):
                logp = self._log_probs(
                    self.feed(
                        state, lm_input, torch.ones(lm_input.shape[:2], dtype=torch.bool, device=device)
                    )
                )
                if not final and len(out) == next_fill:
                    token = self.ids.fill
                else:
                    if not final:
                        logp[:, self.ids.eos] = float("-inf")
                    history = torch.tensor(out[-state.history.shape[1] :] or [-1], device=device)[None]
                    token = int(sampler(logp, history)[0])
                if token == self.ids.fill:
                    next_fill = len(out) + b + 1
                out.append(token)
                if token == (self.ids.fill if not final else self.ids.eos):
                    return
                if token >= self.speech_vocab_size:
                    raise ValueError(
                        f"CosyVoice2LM produced special id {token} mid-speech; check the weights"
                    )
                yield token
                lm_input = self.speech_embedding.weight[token].reshape(1, 1, -1)

        for piece in text_chunks:
            piece = piece.reshape(-1).to(device)
            text_total += piece.numel()
            text_cache = torch.cat([text_cache, model.embed_text(piece)[None]], 1)
            while prompt_emb.shape[1] and text_cache.shape[1] >= a:
                lm_input = torch.cat([lm_input, text_cache[:, :a], prompt_emb[:, :b]], 1)
                text_cache, prompt_emb = text_cache[:, a:], prompt_emb[:, b:]
            if prompt_emb.shape[1]:
                continue  # prompt speech still waits for text
            after_fill = bool(out) and out[-1] == self.ids.fill
            if after_fill or (not out and lm_input.shape[1] == 1):
                if text_cache.shape[1] < a:
                    continue  # wait for 5 text tokens
                lm_input = text_cache[:, :a] if after_fill else torch.cat([lm_input, text_cache[:, :a]], 1)
                text_cache = text_cache[:, a:]
            yield from decode(final=False)
        if text_total == 0:
            raise ValueError("empty text: the text stream gave no tokens")
        lm_input = torch.cat([lm_input, text_cache, special[TASK_ROW].reshape(1, 1, -1)], 1)
        yield from decode(final=True)

    @torch.no_grad()
    def step(
        self,
        chunk: SequenceBatch,
        state: VoiceLMState,
        prefix: SequenceBatch | None = None,
        sampler: SpeechSampler | None = None,
        generator: torch.Generator | None = None,
    ) -> TokenBatch:
        """MinMo streaming: read up to ``mix_ratio[0]`` semantic vectors per row, write up to ``mix_ratio[1]`` tokens.

        A row with a full chunk (5 vectors) gets 15 speech tokens. A shorter chunk (0-4 vectors) is the end of
        that row's text: "turn of speech" (task_id) follows and the row writes speech until eos, 15 tokens per
        call (send empty chunks to continue). ``prefix`` (the per-turn query vectors) is read once, before a
        row's first chunk. Returns this call's tokens; ``state.finished`` marks rows that reached eos.
        """
        a, b = self.ratio.text, self.ratio.speech
        lengths = chunk.lengths.to(state.position.device)
        if chunk.values.shape[0] != state.batch_size:
            raise ValueError(
                f"chunk has batch {chunk.values.shape[0]} but the state was made for {state.batch_size}"
            )
        if bool((lengths > a).any()):
            raise ValueError(
                f"a chunk holds at most {a} semantic vectors per row (mix ratio {a}:{b}), got {lengths.tolist()}"
            )
        late = state.ended & (lengths > 0)
        if bool(late.any()):
            raise ValueError(
                f"rows {late.nonzero().flatten().tolist()} already ended their text (a chunk shorter than {a}); "
                "send empty chunks until they finish, or reset them to start a new turn"
            )
        if prefix is not None and bool((state.started & (prefix.lengths.to(lengths.device) > 0)).any()):
            raise ValueError(
                "a prefix is read once per turn, before the first chunk; these rows already started"
            )
        sampler = sampler or self._default_sampler(generator)
        live = ~state.finished
        if not bool(live.any()):
            return TokenBatch(lengths.new_zeros(state.batch_size, 0), torch.zeros_like(lengths))
        fresh, ending = live & ~state.started, live & ~state.ended & (lengths < a)
        if bool((fresh & (lengths == 0)).any()):
            raise ValueError(
                f"empty text: rows {(fresh & (lengths == 0)).nonzero().flatten().tolist()} start a turn with no "
                "semantic vectors; a turn needs at least one text token"
            )
        special = self.llm_embedding.weight
        batch, dim = state.batch_size, self.hidden_size
        parts = [(special[SOS_ROW].expand(batch, 1, dim), fresh.long())]
        if prefix is not None:
            parts.append((prefix.values, torch.where(fresh, prefix.lengths.to(lengths.device), 0)))
        parts += [
            (self.speech_embedding(state.pending)[:, None], (live & state.has_pending).long()),
            (chunk.values, torch.where(live, lengths, 0)),
            (special[TASK_ROW].expand(batch, 1, dim), ending.long()),
        ]
        inputs, valid = _scatter_parts(parts)
        state.started |= live
        state.ended |= ending
        state.text_count = state.text_count + torch.where(live, lengths, 0)
        state.has_pending &= ~live
        max_len = (state.text_count.clamp(min=1) * self.hparams.max_token_text_ratio).long()

        # speech ids only while text is coming; eos too once the turn of speech was given; never fill
        ids = torch.arange(self.ids.num_outputs, device=lengths.device)[None]
        banned = ~((ids < self.speech_vocab_size) | ((ids == self.ids.eos) & state.ended[:, None]))
        tokens = lengths.new_zeros(batch, b)
        produced = torch.zeros_like(lengths)
        active = live.clone()
        hidden = self.feed(state, inputs, valid)
        for g in range(b):
            logp = self._log_probs(hidden).masked_fill(banned, float("-inf"))
            token = sampler(logp, state.recent_tokens())
            stop = token == self.ids.eos
            state.finished |= active & stop
            emit = active & ~stop
            tokens[:, g] = torch.where(emit, token, 0)
            produced += emit.long()
            self._remember(state, token, emit)
            state.finished |= emit & state.ended & (state.speech_count >= max_len)
            active = emit & ~state.finished
            state.pending = torch.where(emit, token, state.pending)
            if g == b - 1 or not bool(active.any()):
                state.has_pending |= active
                break
            hidden = self.feed(state, self.speech_embedding(token)[:, None], active[:, None])
        trim_cache(state)
        return TokenBatch(tokens[:, : int(produced.max())], produced)
