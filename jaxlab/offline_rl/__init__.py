"""Offline RL: trajectory datasets and their collectors, Decision Transformer and Prompt-DT."""
