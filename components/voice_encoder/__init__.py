"""Voice encoders: audio -> acoustic vectors (SenseVoice, Whisper)."""
