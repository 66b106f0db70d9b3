"""Token2wav: speech tokens -> waveform (CosyVoice2 flow matching + vocoders)."""
