"""Voice token LMs: semantic vectors or text -> speech tokens (CosyVoice2 LM)."""
