"""Hypothesis-driven fuzzing of xenstore daemons: strategies, a reference model,
live and differential campaigns (``python -m fuzz``)."""
