"""``S3TokenizerV2``: the CosyVoice2 speech tokenizer (6561 FSQ codes at 25 Hz), trainable when tiny.

Waveform (16 kHz) -> 128-bin log-mel -> encoder (two stride-2 convs, FSMN + rotary transformer
layers) -> FSQ (8 dims, 3 levels) -> token ids. The ``speech-tokenizer-v2-25hz`` preset loads the
official weights (``load_pretrained``); ``tiny`` adds a CTC head (``asr_vocab``) so it can be trained
on the built-in corpus (``training_step``), since the official weights are not on a fresh machine.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from minmo_lightning.components.speech_tokenizer.asr_head import CharVocabulary, CodeASRHead
from minmo_lightning.components.speech_tokenizer.encoder import FSQuantizer, S3Encoder
from minmo_lightning.components.speech_tokenizer.frontend import LogMelFrontend
from minmo_lightning.components.speech_tokenizer.prosody_head import ProsodyHead, ProsodyTargets
from minmo_lightning.components.speech_tokenizer.windows import WindowPolicy
from torch import Tensor

from minmo_lightning.blocks import SpeechTokenizer
from minmo_lightning.checkpoints import (
    CheckpointMismatchError,
    checkpoint_file,
    load_state_dict_strict,
    read_state_dict,
)
from minmo_lightning.contracts import AudioBatch, TokenBatch, lengths_to_mask
from minmo_lightning.optim import OptimizerConfig, configure_adamw

#: files ``load_pretrained`` looks for in a folder, in order.
CHECKPOINT_NAMES = ("speech_tokenizer_v2.onnx", "model.safetensors", "speech_tokenizer_v2.pt")

#: the released tokenizer (inference only); ``tiny`` says how the trainable one differs
SPEECH_TOKENIZER_V2 = dict(
    n_mels=128,
    dim=1280,
    n_heads=20,
    n_layers=6,
    fsmn_kernel_size=31,
    code_dim=8,
    fsq_levels=3,
    ln_eps=1e-5,
    rope_theta=10000.0,
    window_seconds=30,
    overlap_seconds=4,
    asr_vocab="",
    asr_layers=0,
    ctc_slots=2,
    saturation_weight=0.0,
    prosody_weight=0.0,
    prosody_hidden=64,
    learning_rate=1e-3,
    warmup_steps=200,
)


class S3TokenizerV2(SpeechTokenizer):
    """S3Tokenizer v2. ``forward(AudioBatch) -> TokenBatch``; ``quantize(mel, lengths)`` from log-mel."""

    sample_rate = 16000
    token_rate = 25.0
    hop_length = 160

    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "speech-tokenizer-v2-25hz": SPEECH_TOKENIZER_V2,
        "tiny": {
            **SPEECH_TOKENIZER_V2,
            "dim": 128,
            "n_heads": 2,
            "n_layers": 2,
            "asr_vocab": " abcdefghijklmnopqrstuvwxyz'",
            "asr_layers": 2,
            "saturation_weight": 0.1,
        },
    }

    def __init__(
        self,
        n_mels: int = SPEECH_TOKENIZER_V2["n_mels"],
        dim: int = SPEECH_TOKENIZER_V2["dim"],
        n_heads: int = SPEECH_TOKENIZER_V2["n_heads"],
        n_layers: int = SPEECH_TOKENIZER_V2["n_layers"],
        fsmn_kernel_size: int = SPEECH_TOKENIZER_V2["fsmn_kernel_size"],
        code_dim: int = SPEECH_TOKENIZER_V2["code_dim"],
        fsq_levels: int = SPEECH_TOKENIZER_V2["fsq_levels"],
        ln_eps: float = SPEECH_TOKENIZER_V2["ln_eps"],
        rope_theta: float = SPEECH_TOKENIZER_V2["rope_theta"],
        window_seconds: int = SPEECH_TOKENIZER_V2["window_seconds"],
        overlap_seconds: int = SPEECH_TOKENIZER_V2["overlap_seconds"],
        asr_vocab: str = SPEECH_TOKENIZER_V2["asr_vocab"],
        asr_layers: int = SPEECH_TOKENIZER_V2["asr_layers"],
        ctc_slots: int = SPEECH_TOKENIZER_V2["ctc_slots"],
        saturation_weight: float = SPEECH_TOKENIZER_V2["saturation_weight"],
        prosody_weight: float = SPEECH_TOKENIZER_V2["prosody_weight"],
        prosody_hidden: int = SPEECH_TOKENIZER_V2["prosody_hidden"],
        learning_rate: float = SPEECH_TOKENIZER_V2["learning_rate"],
        warmup_steps: int = SPEECH_TOKENIZER_V2["warmup_steps"],
    ):
        """``asr_vocab`` empty: inference only, exactly the official parameters. Otherwise a CTC head
        over those characters (``asr_layers`` layers) is added for ``training_step``; ``saturation_weight``
        scales ``FSQuantizer.saturation_penalty`` in the training loss, ``prosody_weight`` (> 0) adds a head
        that reads each code's pitch, voicing and loudness (``prosody_head.py``) and weighs its loss."""
        super().__init__()
        self.save_hyperparameters()
        self.frontend = LogMelFrontend(
            n_mels, n_fft=400, hop_length=self.hop_length, sample_rate=self.sample_rate
        )
        self.encoder = S3Encoder(n_mels, dim, n_heads, n_layers, fsmn_kernel_size, ln_eps, rope_theta)
        self.quantizer = FSQuantizer(dim, code_dim, fsq_levels)
        self.codebook_size = self.quantizer.codebook_size
        frames_per_second = self.sample_rate // self.hop_length
        self.windows = WindowPolicy(
            window_seconds * frames_per_second, overlap_seconds * frames_per_second, 4
        )
        self.vocab = CharVocabulary(asr_vocab) if asr_vocab else None
        self.asr_head = (
            CodeASRHead(
                code_dim, dim, n_heads, asr_layers, len(self.vocab), ctc_slots, fsmn_kernel_size, ln_eps
            )
            if self.vocab
            else None
        )
        self.prosody_head = None
        if prosody_weight > 0:
            self.prosody_targets = ProsodyTargets(1 / self.token_rate)
            self.prosody_head = ProsodyHead(code_dim, prosody_hidden, self.prosody_targets.subframes)
        self._calibrated = False

    # ---- inference -----------------------------------------------------------------------------
    def quantize(self, mel: Tensor, mel_lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Log-mel ``[B, n_mels, T]`` (at most one window) -> tokens ``[B, T']`` and lengths ``[B]``."""
        hidden, lengths = self.encoder(mel, mel_lengths.long())
        return self.quantizer.encode(hidden), lengths

    @torch.no_grad()
    def forward(self, audio: AudioBatch) -> TokenBatch:
        """Tokens of every clip; clips over ``window_seconds`` go through windows (see ``windows.py``).

        Each window is encoded alone (padding never reaches valid frames), so batched results equal
        per-clip results. Windows run in groups of the batch size to bound memory.
        """
        audio.require(self.sample_rate, who=type(self).__name__)
        if int(audio.lengths.min()) < self.frontend.min_samples():
            raise ValueError(
                f"{type(self).__name__} needs at least {self.frontend.min_samples()} samples "
                f"({self.frontend.min_samples() / self.sample_rate * 1000:.1f} ms) per clip, got "
                f"{int(audio.lengths.min())}; drop or pad such clips before tokenizing"
            )
        mel, mel_lengths = self.frontend(audio.waveform.to(self.device), audio.lengths.to(self.device))
        windows = [w for item, n in enumerate(mel_lengths.tolist()) for w in self.windows.split(item, n)]
        pieces: list[list[Tensor]] = [[] for _ in range(mel.shape[0])]
        group = mel.shape[0]
        for first in range(0, len(windows), group):
            chunk = windows[first : first + group]
            lengths = torch.tensor([w.end - w.start for w in chunk], device=mel.device)
            segments = mel.new_zeros(len(chunk), mel.shape[1], int(lengths.max()))
            for row, w in enumerate(chunk):
                segments[row, :, : w.end - w.start] = mel[w.item, :, w.start : w.end]
            tokens, token_lengths = self.quantize(segments, lengths)
            for row, w in enumerate(chunk):
                pieces[w.item].append(tokens[row, : token_lengths[row]][w.keep_from : w.keep_to])
        return TokenBatch.from_list([torch.cat(p) for p in pieces], mel.device)

    @torch.no_grad()
    def transcribe_tokens(self, tokens: TokenBatch) -> list[str]:
        """The text the CTC head reads from speech tokens: checks generated speech without a vocoder."""
        if self.asr_head is None:
            raise RuntimeError(
                f"{type(self).__name__} has no CTC head (asr_vocab unset): only a tokenizer trained with one "
                "(recipes/components/speech_tokenizer.yaml) can read text from tokens"
            )
        tokens.require_range(self.codebook_size, type(self).__name__)
        codes = self.quantizer.decode(tokens.tokens.to(self.device))
        lengths = tokens.lengths.to(self.device)
        log_probs = self.asr_head(codes, lengths)
        return [self.vocab.decode(ids) for ids in self.asr_head.greedy(log_probs, lengths)]

    # ---- loading -------------------------------------------------------------------------------
    def load_pretrained(self, path: str) -> None:
        """Load the official ``speech_tokenizer_v2.onnx`` or a torch/safetensors state dict (file or folder)."""
        path = checkpoint_file(path, CHECKPOINT_NAMES, "speech tokenizer")
        if path.suffix == ".onnx":
            from minmo_lightning.components.speech_tokenizer.onnx_weights import onnx_state_dict

            state, unclaimed = onnx_state_dict(path)
            try:
                load_state_dict_strict(self, state, source=str(path))
            except CheckpointMismatchError as error:
                raise CheckpointMismatchError(
                    f"{error}\n  ONNX initializers no conversion rule claimed ({len(unclaimed)}): {unclaimed[:20]}"
                ) from None
        else:
            load_state_dict_strict(self, read_state_dict(path), source=str(path))
        self._calibrated = True  # fine-tuning starts from these weights as they are

    # ---- training (tiny: CTC on the quantized codes) -------------------------------------------
    def _asr_forward(self, audio: AudioBatch) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """CTC log-probs, token lengths, rounded codes and the saturation penalty."""
        if self.asr_head is None:
            raise RuntimeError(
                f"{type(self).__name__} was built without a training head; set asr_vocab (e.g. preset 'tiny') to train it"
            )
        audio.require(self.sample_rate, who=type(self).__name__)
        with torch.no_grad():
            mel, mel_lengths = self.frontend(audio.waveform, audio.lengths)
        hidden, lengths = self.encoder(mel, mel_lengths)
        valid = hidden[lengths_to_mask(lengths, hidden.shape[1])]
        if self.training and not self._calibrated:
            self.quantizer.calibrate(valid)
            self._calibrated = True
        codes = self.quantizer.quantize(hidden)
        return self.asr_head(codes, lengths), lengths, codes, self.quantizer.saturation_penalty(valid)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._calibrated = True  # resumed weights are already calibrated

    def _step(self, batch: dict[str, Any], split: str) -> Tensor:
        log_probs, lengths, codes, saturation = self._asr_forward(batch["audio"])
        targets = [self.vocab.encode(t) for t in batch["text"]]
        ctc, infeasible = self.asr_head.loss(log_probs, lengths, targets)
        size = len(targets)
        loss = ctc + self.hparams.saturation_weight * saturation
        if self.prosody_head is not None:
            measured = self.prosody_targets(batch["audio"], codes.shape[1])
            for name, term in self.prosody_head.loss(codes, lengths, measured).items():
                self.log(f"{split}/prosody_{name}", term, batch_size=size)
                loss = loss + self.hparams.prosody_weight * term
        self.log(f"{split}/ctc_loss", ctc, prog_bar=True, batch_size=size)
        self.log(f"{split}/fsq_saturation", saturation, batch_size=size)
        self.log(f"{split}/ctc_infeasible", float(infeasible), reduce_fx="sum", batch_size=size)
        self.log(f"{split}/codebook_perplexity", self.codebook_perplexity(codes, lengths), batch_size=size)
        if split != "train":
            from torchmetrics.functional.text import char_error_rate

            hypotheses = [self.vocab.decode(ids) for ids in self.asr_head.greedy(log_probs, lengths)]
            references = [self.vocab.normalize(t) for t in batch["text"]]
            self.log(f"{split}/cer", char_error_rate(hypotheses, references), prog_bar=True, batch_size=size)
        return loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        return self._step(batch, "val")

    def codebook_perplexity(self, codes: Tensor, lengths: Tensor) -> Tensor:
        """exp(entropy) of the code distribution over valid frames (6561 = every code equally used)."""
        digits = (codes.detach().round().long() + 1) * self.quantizer.powers
        tokens = digits.sum(-1)[torch.arange(codes.shape[1], device=codes.device)[None, :] < lengths[:, None]]
        return token_perplexity(tokens, self.codebook_size)

    def configure_optimizers(self) -> dict[str, Any]:
        return configure_adamw(
            self, OptimizerConfig.from_hparams(self.hparams, betas=(0.9, 0.98), floor=0.05)
        )


def token_perplexity(tokens: Tensor, codebook_size: int) -> Tensor:
    """exp(entropy) of a flat tensor of token ids."""
    counts = torch.bincount(tokens.flatten(), minlength=codebook_size).double()
    probs = counts[counts > 0] / counts.sum().clamp(min=1)
    return torch.exp(-(probs * probs.log()).sum()).float()
