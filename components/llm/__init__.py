"""LLM backbones: decoder-only causal LMs over transformers."""
