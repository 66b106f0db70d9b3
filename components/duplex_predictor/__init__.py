"""Full-duplex predictors: LLM hidden states -> turn-taking decisions."""
