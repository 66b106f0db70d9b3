"""CosyVoice2's flow: speech tokens (25 Hz) -> 80-bin mel (50 Hz) by conditional flow matching.

``CausalMaskedDiffWithXvec`` of the reference: token embedding -> ``UpsampleConformerEncoder`` -> linear to
80 (``mu``); the CFM estimator (``CausalConditionalDecoder``) integrates 10 Euler steps on a cosine time
schedule from a fixed noise buffer, with classifier-free guidance 0.7, conditioned on ``mu``, an affine
map of the L2-normalised x-vector, and the prompt's mel in the prompt frames. Keys follow ``flow.pt``.

Three ways to run it: ``inference`` (offline; full context or chunk masks, as the reference),
``init_state``/``step`` (streaming, one attention chunk at a time with bounded caches, ``flow_streaming.py``;
equal to offline with the same chunk mask, see ``chunk_size`` / ``num_left_chunks``), and ``training_step``
(the conditional flow-matching loss of ``cfm.py`` with random prompt prefixes and random chunk masks).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from minmo_lightning.components.token2wav.cfm import CFMDraws, ConditionalCFM
from minmo_lightning.components.token2wav.conformer import UpsampleConformerEncoder
from minmo_lightning.components.token2wav.flow_cache import chunk_attention_mask, chunk_ids
from minmo_lightning.components.token2wav.flow_features import log_mel, speaker_embedding
from minmo_lightning.components.token2wav.flow_streaming import FlowStreamState, advance
from torch import Tensor, nn

from minmo_lightning.blocks import Block
from minmo_lightning.checkpoints import load_state_dict_strict, read_state_dict, require_files
from minmo_lightning.contracts import TokenBatch, lengths_to_mask
from minmo_lightning.optim import OptimizerConfig, configure_adamw

_COSYVOICE2_ENCODER = {
    "output_size": 512,
    "attention_heads": 8,
    "linear_units": 2048,
    "num_layers": 6,
    "num_up_layers": 4,
    "dropout_rate": 0.1,
    "positional_dropout_rate": 0.1,
    "attention_dropout_rate": 0.1,
}
_COSYVOICE2_ESTIMATOR = {
    "channels": [256],
    "attention_head_dim": 64,
    "n_blocks": 4,
    "num_mid_blocks": 12,
    "num_heads": 8,
    "dropout": 0.0,
}
#: CosyVoice2-0.5B's flow (``flow.pt``); the other presets state what they change
COSYVOICE2_FLOW = {
    "vocab_size": 6561,
    "input_size": 512,
    "output_size": 80,
    "spk_embed_dim": 192,
    "token_mel_ratio": 2,
    "pre_lookahead_len": 3,
    "encoder": _COSYVOICE2_ENCODER,
    "estimator": _COSYVOICE2_ESTIMATOR,
    "n_timesteps": 10,
    "inference_cfg_rate": 0.7,
    "training_cfg_rate": 0.2,
    "sigma_min": 1e-6,
    "chunk_size": 15,
    "num_left_chunks": 2,
    "streaming_prob": 0.5,
    "prompt_prob": 0.5,
    "prompt_max_ratio": 0.3,
    "learning_rate": 1e-5,
}
TINY_FLOW = {
    **COSYVOICE2_FLOW,
    "input_size": 64,
    "encoder": {
        **_COSYVOICE2_ENCODER,
        "output_size": 64,
        "attention_heads": 4,
        "linear_units": 128,
        "num_layers": 2,
        "num_up_layers": 2,
    },
    "estimator": {
        **_COSYVOICE2_ESTIMATOR,
        "channels": [64],
        "attention_head_dim": 16,
        "n_blocks": 1,
        "num_mid_blocks": 2,
        "num_heads": 2,
    },
    "learning_rate": 1e-3,
}


@dataclass
class SpeakerPrompt:
    """Who speaks: the CAM++ x-vector ``embedding`` [B, spk_embed_dim] and, optionally, a prompt utterance.

    ``tokens`` are the prompt's speech tokens and ``mel`` [B, ratio * T_prompt, 80] its mel (24 kHz, hop
    480: the reference frontend); the flow continues the prompt's voice. Items without a prompt have
    token length 0.
    """

    embedding: Tensor
    tokens: TokenBatch | None = None
    mel: Tensor | None = None


@dataclass
class Token2WavStreamOptions:
    """Per-session options of a token2wav stream (the flow's and ``CosyVoice2Token2Wav``'s ``init_state``):
    the speaker ``prompt``; None speaks with the zero x-vector and no prompt utterance."""

    prompt: SpeakerPrompt | None = None


class CosyVoice2Flow(Block):
    """Chunk-aware causal flow matching of CosyVoice2 (tokens -> mel), streaming with bounded left context."""

    presets: ClassVar[dict[str, dict[str, Any]]] = {"cosyvoice2-0.5b": COSYVOICE2_FLOW, "tiny": TINY_FLOW}

    def __init__(
        self,
        vocab_size: int = 6561,
        input_size: int = 512,
        output_size: int = 80,
        spk_embed_dim: int = 192,
        token_mel_ratio: int = 2,
        pre_lookahead_len: int = 3,
        encoder: dict[str, Any] | None = None,
        estimator: dict[str, Any] | None = None,
        n_timesteps: int = 10,
        inference_cfg_rate: float = 0.7,
        training_cfg_rate: float = 0.2,
        sigma_min: float = 1e-6,
        chunk_size: int = 15,
        num_left_chunks: int = 2,
        streaming_prob: float = 0.5,
        prompt_prob: float = 0.5,
        prompt_max_ratio: float = 0.3,
        learning_rate: float = 1e-5,
        noise_frames: int = 15000,
        inference_temperature: float = 1.0,
    ) -> None:
        """``encoder``/``estimator``: the reference's ``UpsampleConformerEncoder`` / ``CausalConditionalDecoder``
        arguments (defaults: CosyVoice2-0.5B). ``chunk_size`` tokens per attention chunk (streaming step unit;
        CosyVoice2 was trained with 25, MinMo streams 15); ``num_left_chunks`` chunks of left context (-1:
        all, offline only). ``streaming_prob``/``prompt_prob``/``prompt_max_ratio``: training draws.
        ``inference_temperature`` scales the sampling noise: 1.0 as CosyVoice2 samples; a small flow trained
        briefly says its words more clearly nearer its mean (the tiny recipes use less, README)."""
        super().__init__()
        self.save_hyperparameters()
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1 token, got {chunk_size}")
        encoder = {**_COSYVOICE2_ENCODER, **(encoder or {})}
        estimator = {**_COSYVOICE2_ESTIMATOR, **(estimator or {})}
        self.vocab_size, self.mel_dim, self.ratio = vocab_size, output_size, token_mel_ratio
        self.chunk_size, self.num_left_chunks = chunk_size, num_left_chunks
        self.input_embedding = nn.Embedding(vocab_size, input_size)
        self.spk_embed_affine_layer = nn.Linear(spk_embed_dim, output_size)
        self.encoder = UpsampleConformerEncoder(
            input_size=input_size,
            pre_lookahead_len=pre_lookahead_len,
            upsample_stride=token_mel_ratio,
            **encoder,
        )
        self.encoder_proj = nn.Linear(encoder["output_size"], output_size)
        self.decoder = ConditionalCFM(
            estimator,
            output_size,
            n_timesteps,
            inference_cfg_rate,
            training_cfg_rate,
            sigma_min,
            noise_frames,
            inference_temperature,
        )

    # ---- pieces shared by every path -------------------------------------------------------------
    @property
    def lookahead(self) -> int:
        return self.encoder.lookahead

    def speaker(self, embedding: Tensor) -> Tensor:
        """x-vector [B, spk_embed_dim] -> [B, 80] (L2-normalised, then the affine layer)."""
        return self.spk_embed_affine_layer(F.normalize(embedding, dim=1))

    def embed_tokens(self, tokens: Tensor) -> Tensor:
        return self.input_embedding(tokens.clamp(min=0))

    def check_tokens(self, tokens: TokenBatch, who: str = "CosyVoice2Flow") -> None:
        tokens.require_range(self.vocab_size, who)

    def _masks(self, lengths: Tensor, length: int, chunk: int | None, left: int, prompt: Tensor | None):
        """Token- and frame-level attention masks for a whole sequence (``chunk`` None: full context)."""
        valid = lengths_to_mask(lengths, length)
        frame_valid = valid.repeat_interleave(self.ratio, dim=1)
        if chunk is None:
            return chunk_attention_mask(None, valid, -1), chunk_attention_mask(None, frame_valid, -1)
        ids = chunk_ids(lengths, length, chunk, prompt, self.lookahead)
        window = left * chunk if left >= 0 else -1
        token_mask = chunk_attention_mask(ids, valid, window)
        frame_window = window * self.ratio if left >= 0 else -1
        frame_mask = chunk_attention_mask(ids.repeat_interleave(self.ratio, dim=1), frame_valid, frame_window)
        return token_mask, frame_mask

    # ---- offline -------------------------------------------------------------------------------
    def inference(
        self,
        tokens: TokenBatch,
        prompt: SpeakerPrompt,
        chunk_size: int | None = None,
        num_left_chunks: int = -1,
        align_chunks_to_prompt: bool = True,
        finalize: bool = True,
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """Tokens -> (mel [B, 80, T], frame lengths [B], the estimator's conditioning ``{mu, mask, spks, cond}``).

        ``chunk_size`` None runs full context (the reference's ``streaming=False``); otherwise chunk masks with
        ``num_left_chunks`` of left context, chunks laid out as a streaming session lays them out after the prompt
        (``align_chunks_to_prompt``: ``flow_cache.chunk_ids``) or from position 0 (the reference). ``finalize``
        False treats the last ``pre_lookahead_len`` tokens as look-ahead only (they produce no frames).
        """
        self.check_tokens(tokens)
        batch = tokens.tokens.shape[0]
        prompt_tokens, prompt_lengths, prompt_mel = self._prompt_parts(prompt, batch)
        device = tokens.tokens.device
        lengths = prompt_lengths + tokens.lengths
        sequence = TokenBatch(prompt_tokens, prompt_lengths).concat(tokens).tokens
        if not finalize:
            if int(tokens.lengths.min()) <= self.lookahead:
                raise ValueError(
                    f"finalize=False needs more than {self.lookahead} new tokens per item (the last ones are look-ahead)"
                )
            lengths = lengths - self.lookahead
        length = int(lengths.max())
        full_valid = lengths_to_mask(prompt_lengths + tokens.lengths, sequence.shape[1])
        embedded = self.embed_tokens(sequence) * full_valid[:, :, None]
        present = torch.cat([full_valid, full_valid.new_zeros(batch, self.lookahead)], dim=1)
        embedded = F.pad(embedded, (0, 0, 0, self.lookahead))
        # keep the first `length` positions and their look-ahead
        embedded, present = embedded[:, : length + self.lookahead], present[:, : length + self.lookahead]
        token_mask, frame_mask = self._masks(
            lengths, length, chunk_size, num_left_chunks, prompt_lengths if align_chunks_to_prompt else None
        )
        mu = self.encoder_proj(self.encoder(embedded, present, token_mask, frame_mask)).transpose(1, 2)
        frames = self.ratio * length
        frame_valid = lengths_to_mask(self.ratio * lengths, frames)
        mask = frame_valid[:, None].to(mu)
        cond = torch.zeros_like(mu)
        prompt_frames = self.ratio * prompt_lengths
        for row, count in enumerate(prompt_frames.tolist()):
            cond[row, :, :count] = prompt_mel[row, :count].transpose(0, 1)
        spks = self.speaker(prompt.embedding.to(mu))
        z = self.decoder.noise(torch.zeros(batch, dtype=torch.long), frames, device, mu.dtype)
        mel = self.decoder.sample(z, mask, mu * mask, spks, cond, frame_mask)
        out_lengths = self.ratio * lengths - prompt_frames
        index = (prompt_frames[:, None] + torch.arange(int(out_lengths.max()), device=device)[None, :]).clamp(
            max=frames - 1
        )
        out = torch.gather(mel, 2, index[:, None, :].expand(-1, self.mel_dim, -1))
        out = out * lengths_to_mask(out_lengths, out.shape[2])[:, None]
        return out, out_lengths, {"mu": mu, "mask": mask, "spks": spks, "cond": cond}

    def _prompt_parts(self, prompt: SpeakerPrompt, batch: int) -> tuple[Tensor, Tensor, Tensor]:
        """(prompt tokens [B, P], lengths [B], prompt mel [B, ratio*P, 80]), empty when there is no prompt."""
        embedding = prompt.embedding
        if embedding.dim() != 2 or embedding.shape[0] != batch:
            raise ValueError(
                f"SpeakerPrompt.embedding must be [batch={batch}, {self.hparams.spk_embed_dim}], got {tuple(embedding.shape)}"
            )
        device = embedding.device
        if prompt.tokens is None:
            empty = torch.zeros(batch, 0, dtype=torch.long, device=device)
            return (
                empty,
                torch.zeros(batch, dtype=torch.long, device=device),
                torch.zeros(batch, 0, self.mel_dim, device=device),
            )
        tokens = prompt.tokens
        if tokens.tokens.shape[0] != batch:
            raise ValueError(f"prompt tokens have batch {tokens.tokens.shape[0]}, the request has {batch}")
        if int(tokens.lengths.max()) > 0:
            tokens.require_range(self.vocab_size, "CosyVoice2Flow prompt")
        mel = prompt.mel
        needed = self.ratio * int(tokens.lengths.max())
        if mel is None or mel.dim() != 3 or mel.shape[2] != self.mel_dim or mel.shape[1] < needed:
            shape = None if mel is None else tuple(mel.shape)
            raise ValueError(
                f"SpeakerPrompt.mel must be [batch, >= {self.ratio} x prompt tokens = {needed}, {self.mel_dim}] "
                f"(the prompt's mel, {self.ratio} frames per prompt token), got {shape}; trim the prompt tokens "
                "or the mel so that frames = ratio x tokens"
            )
        return tokens.tokens, tokens.lengths.to(device), mel

    # ---- streaming -----------------------------------------------------------------------------
    def init_state(self, batch_size: int, options: Token2WavStreamOptions | None = None) -> FlowStreamState:
        """A fresh session per row, the prompt already encoded but for its last ``pre_lookahead_len`` tokens.

        Without a prompt in ``options`` the speaker is the zero x-vector and there is no prompt utterance.
        """
        if self.num_left_chunks < 0:
            raise ValueError(
                "streaming keeps a bounded left context: set num_left_chunks >= 0 (num_left_chunks=-1, all of "
                "the left context, is for offline inference, whose cost grows with the length)"
            )
        options = options if options is not None else Token2WavStreamOptions()
        device = self.input_embedding.weight.device
        prompt = options.prompt
        if prompt is None:
            prompt = SpeakerPrompt(torch.zeros(batch_size, self.hparams.spk_embed_dim, device=device))
        tokens, lengths, mel = self._prompt_parts(prompt, batch_size)
        prompt_tokens = [row[:n].to(device) for row, n in zip(tokens, lengths.tolist())]
        state = FlowStreamState(
            batch_size=batch_size,
            options=options,
            spks=self.speaker(prompt.embedding.to(device)),
            prompt_lengths=lengths.to(device),
            prompt_mel=[row[: self.ratio * n].to(device) for row, n in zip(mel, lengths.tolist())],
            prompt_tokens=prompt_tokens,
            stream=[row.clone() for row in prompt_tokens],
            consumed=torch.zeros(batch_size, dtype=torch.long, device=device),
            flushed=torch.zeros(batch_size, dtype=torch.bool, device=device),
            step_caches=[{} for _ in range(self.decoder.n_timesteps)],
        )
        advance(self, state)  # the prompt (all but its look-ahead tail) is encoded before the first token
        return state

    def step(self, chunk: TokenBatch, state: FlowStreamState) -> tuple[Tensor, Tensor]:
        """Append ``chunk`` to each session and return the mel that became final: ([B, 80, T], lengths [B]).

        A chunk of ``chunk_size`` tokens becomes final once its look-ahead (the next ``pre_lookahead_len``
        tokens) has arrived, or when the session's input ended (``state.end_input(rows)`` before this step:
        its last tokens may come with it); rows may receive any number of tokens per call (0 included). Work
        per chunk is bounded by ``num_left_chunks`` (``flow_streaming.py``).
        """
        batch = state.batch_size
        if chunk.tokens.shape[0] != batch:
            raise ValueError(f"chunk has batch {chunk.tokens.shape[0]}, the stream state has {batch}")
        if int(chunk.lengths.max()) > 0:
            valid = chunk.tokens[chunk.mask]
            if int(valid.min()) < 0 or int(valid.max()) >= self.vocab_size:
                raise ValueError(
                    f"CosyVoice2Flow accepts token ids in [0, {self.vocab_size}), got ids in "
                    f"[{int(valid.min())}, {int(valid.max())}]"
                )
        for row, n in enumerate(chunk.lengths.tolist()):
            if state.flushed[row] and n:
                raise ValueError(f"session {row} was finalized; reset it before sending new tokens")
            state.stream[row] = torch.cat(
                [state.stream[row], chunk.tokens[row, :n].to(state.stream[row].device)]
            )
        empty = [
            row
            for row in range(batch)
            if state.input_ended[row] and len(state.stream[row]) == state.prompt_lengths[row]
        ]
        if empty:
            raise ValueError(
                f"sessions {empty} ended without any speech token; every item needs at least one token"
            )
        mel = advance(self, state)
        state.flushed |= state.input_ended
        return mel

    # ---- training ------------------------------------------------------------------------------
    def flow_matching_loss(
        self,
        tokens: TokenBatch,
        mel: Tensor,
        embedding: Tensor,
        streaming: bool,
        prompt_frames: Tensor,
        draws: CFMDraws | None = None,
    ) -> dict[str, Tensor]:
        """The reference's training forward: mel [B, T_mel >= ratio*T, 80]; ``prompt_frames`` [B] frames of
        ground-truth mel given as condition; ``streaming`` uses chunk masks. Returns the loss and what the
        estimator saw (``h`` = encoder_proj output [B, ratio*T, 80], ``x``, ``mu``, ``spks``, ``cond``, ``t``,
        ``pred``, ``mask``)."""
        batch, length = tokens.tokens.shape
        frames = self.ratio * length
        if mel.dim() != 3 or mel.shape[2] != self.mel_dim or mel.shape[1] < frames:
            raise ValueError(
                f"mel must be [batch, >= {self.ratio} x tokens = {frames}, {self.mel_dim}], got {tuple(mel.shape)}"
            )
        spks = self.speaker(embedding)
        valid = tokens.mask
        embedded = self.embed_tokens(tokens.tokens) * valid[:, :, None]
        # As the reference: padded tokens enter the look-ahead conv as embedded padding, only the end is zeros.
        present = torch.cat([torch.ones_like(valid), valid.new_zeros(batch, self.lookahead)], dim=1)
        embedded = F.pad(embedded, (0, 0, 0, self.lookahead))
        chunk = self.chunk_size if streaming else None
        token_mask, frame_mask = self._masks(tokens.lengths, length, chunk, self.num_left_chunks, None)
        h = self.encoder_proj(self.encoder(embedded, present, token_mask, frame_mask))
        x1 = mel[:, :frames].transpose(1, 2)
        mask = lengths_to_mask(self.ratio * tokens.lengths, frames)[:, None].to(x1)
        cond = x1 * (
            torch.arange(frames, device=x1.device)[None, None, :] < prompt_frames.to(x1.device)[:, None, None]
        )
        draws = draws if draws is not None else self.decoder.draw(x1)
        out = self.decoder.loss(x1, mask, h.transpose(1, 2), spks, cond, frame_mask, draws)
        return {**out, "h": h, "mask": mask}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        loss = self._batch_loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["speech_tokens"].tokens.shape[0])
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        loss = self._batch_loss(batch)
        self.log("val/loss", loss, prog_bar=True, batch_size=batch["speech_tokens"].tokens.shape[0])
        return loss

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW at a constant ``learning_rate``."""
        return configure_adamw(self, OptimizerConfig.from_hparams(self.hparams, cosine=False))

    def _batch_loss(self, batch: dict[str, Any]) -> Tensor:
        if "speech_tokens" not in batch:
            raise KeyError(
                "CosyVoice2Flow trains on (speech tokens, mel) pairs: the batch has no 'speech_tokens'; add the "
                "column with `minmo prepare` (speech tokenizer) before training"
            )
        tokens: TokenBatch = batch["speech_tokens"]
        self.check_tokens(tokens, "CosyVoice2Flow training")
        mel, mel_lengths = log_mel(batch["audio"], self.mel_dim)
        tokens = _fit_tokens_to_mel(tokens, mel_lengths, self.ratio)
        embedding = speaker_embedding(batch, tokens.tokens.shape[0], self.hparams.spk_embed_dim, mel.device)
        hp = self.hparams
        streaming = random.random() < hp.streaming_prob
        prompt_frames = torch.tensor(
            [
                random.randint(0, int(hp.prompt_max_ratio * self.ratio * n))
                if random.random() < hp.prompt_prob
                else 0
                for n in tokens.lengths.tolist()
            ]
        )
        mel = F.pad(mel, (0, 0, 0, max(0, self.ratio * tokens.tokens.shape[1] - mel.shape[1])))
        return self.flow_matching_loss(tokens, mel, embedding, streaming, prompt_frames)["loss"]

    # ---- checkpoints ---------------------------------------------------------------------------
    def load_pretrained(self, path: str) -> None:
        """Load the official ``flow.pt`` (a file, or a CosyVoice2 model folder holding it) strictly."""
        file = Path(path)
        if file.is_dir():
            file = require_files(file, ["flow.pt"], "CosyVoice2 model") / "flow.pt"
        load_state_dict_strict(self, read_state_dict(file), source=str(file))


def _fit_tokens_to_mel(tokens: TokenBatch, mel_lengths: Tensor, ratio: int) -> TokenBatch:
    """Trim each item to ``min(tokens, mel frames // ratio)`` as the reference frontend does (they differ by a frame or two)."""
    lengths = torch.minimum(tokens.lengths, torch.div(mel_lengths, ratio, rounding_mode="floor"))
    if int(lengths.min()) < 1:
        raise ValueError(
            "an item has no mel frame per speech token; check that audio and speech tokens belong together"
        )
    return TokenBatch(tokens.tokens[:, : int(lengths.max())], lengths)
