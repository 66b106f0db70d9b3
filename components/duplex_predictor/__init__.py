"""Full-duplex predictors: LLM hidden states (or, for the VAD baseline, the user audio) -> turn-taking decisions."""
