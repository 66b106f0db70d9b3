"""Speech tokenizers: waveform -> discrete speech tokens (S3Tokenizer v2)."""
