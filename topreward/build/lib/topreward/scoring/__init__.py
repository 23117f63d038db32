"""TOPReward values: the prompt, the streaming scorer (one cached pass per prefix), batches, metrics and curves."""
