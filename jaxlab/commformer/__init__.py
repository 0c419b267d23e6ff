"""CommFormer: a MAT-style transformer policy with a learned, sparse communication graph and temporal gating.

Modules: `graph` (top-k graphs, Gumbel relaxations, gates), `networks` (the Flax policies), `envs` (JaxMARL
SMAX and MPE behind one array interface), `ppo` (GAE, value normalisation, losses), `train`
(`make_train(config)`, the jitted training chunks and evaluation) and `experiment` (`validate`/`run`).
"""
