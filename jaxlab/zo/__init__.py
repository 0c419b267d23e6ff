"""Zeroth-order fine-tuning: MeZO, LeZO and Sparse-MeZO on any parameter pytree."""
