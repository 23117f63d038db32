"""Live episodes: causal progress, reward and success, the episode buffer, the inference worker and the records."""
