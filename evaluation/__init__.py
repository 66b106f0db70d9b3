"""Metrics (WER/CER, emotion, duplex turn-taking, latency), normalisers, the runner and reports."""
