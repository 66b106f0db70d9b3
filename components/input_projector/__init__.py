"""Input projectors: encoder frames -> LLM-width embeddings."""
