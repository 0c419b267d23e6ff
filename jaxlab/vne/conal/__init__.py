"""CONAL: constraint-aware learning for online virtual network embedding (arXiv:2410.22999).

A heterogeneous graph attention encoder over substrate and virtual nodes, trained with reachability-guided
Lagrangian PPO in a violation-tolerant environment, on top of the jitted simulator of `jaxlab.vne`.
"""
