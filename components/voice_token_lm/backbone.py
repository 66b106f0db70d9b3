"""The Qwen2 backbone of CosyVoice2's speech LM, nested as ``llm.pt`` stores it (``llm.model.model.*``)."""

from __future__ import annotations

from typing import Any

from minmo_lightning.components.llm.captured_step import captured_step, transformer_hidden
from minmo_lightning.components.llm.kv_cache import StaticKVCache, growing_cache
from torch import Tensor, nn

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

    def new_cache(self, mode: str | None = None) -> Any:
        """A cache that grows in place; with a torch.compile ``mode``, a static one whose one-position steps
        ``forward`` runs compiled (``captured_step.py``)."""
        if mode is not None:
            return StaticKVCache(self.config.num_hidden_layers, mode)
        return growing_cache(self.config.num_hidden_layers)

    def forward(
        self, embeds: Tensor, mask: Tensor | None, position_ids: Tensor | None = None, cache: Any = None
    ) -> tuple[Tensor, Any]:
        """``mask`` [B, cached + t] marks real columns (None: all are)."""
        if isinstance(cache, StaticKVCache):
            step = captured_step(self, cache.mode, transformer_hidden(lambda: self.model.model))
            return step(embeds, mask, position_ids, cache), cache
        out = self.model.model(
            inputs_embeds=embeds,
            attention_mask=mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=cache is not None,
        )
        return out.last_hidden_state, out.cache
