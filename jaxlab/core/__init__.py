"""Infrastructure shared by every method: pytrees, checkpoints, metrics, sharding, the experiment registry."""
