"""Training an LLM block alone on text (the tiny chain's stage 0): next-token prediction on the corpus's
sentences, so the miniature starts from a pretrained LLM and freezes it where MinMo freezes Qwen2.5."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from minmo_lightning.contracts import IGNORE_INDEX
from minmo_lightning.optim import OptimizerConfig, configure_adamw


class CausalLMTraining:
    """``training_step`` / ``validation_step`` / ``configure_optimizers`` of an LLM block trained alone on
    ``batch["text"]`` (each text one sequence ending with the tokenizer's end of sequence); the block's
    ``learning_rate``, ``weight_decay`` and ``warmup_steps`` set the optimizer."""

    def text_batch(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        """Right-padded token ids and their targets (padding ignored)."""
        tokenizer = self.tokenizer
        end = tokenizer.eos_token_id
        rows = [
            tokenizer(t, add_special_tokens=False).input_ids[: self.max_positions - 1] + [end] for t in texts
        ]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), end, dtype=torch.long)
        targets = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            targets[i, : len(row)] = torch.tensor(row)
        return ids.to(self.device), targets.to(self.device)

    def text_loss(self, batch: dict[str, Any], split: str) -> Tensor:
        ids, targets = self.text_batch(list(batch["text"]))
        out = self(self.embed(ids), attention_mask=(targets != IGNORE_INDEX).long())
        loss = nn.functional.cross_entropy(
            out.logits[:, :-1].flatten(0, 1).float(), targets[:, 1:].flatten(), ignore_index=IGNORE_INDEX
        )
        self.log(f"{split}/loss", loss, prog_bar=True, batch_size=len(batch["text"]))
        return loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self.text_loss(batch, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        return self.text_loss(batch, "val")

    def configure_optimizers(self) -> Any:
        return configure_adamw(self, OptimizerConfig.from_hparams(self.hparams, floor=0.1))
