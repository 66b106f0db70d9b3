"""Output projectors: LLM states -> semantic vectors for the voice token LM."""
