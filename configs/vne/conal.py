"""CONAL (constraint-aware learning for online VNE) trained on WX100 and evaluated against GRC and NRM.

Run:
  python -m launch.main --config=configs/vne/conal.py --workdir=runs/vne_conal             # accelerator
  python -m launch.main --config=configs/vne/conal.py:cpu --workdir=runs/vne_conal_cpu     # 2 CPU cores
  python -m launch.main --config=configs/vne/conal.py:quick --workdir=runs/vne_conal_quick

A variant is a size (empty for the default, `cpu` or `quick`). Ablations may follow, separated by
commas: `wo_ha` (no heterogeneous mapping and imaginary edges), `wo_pc` (no path-bandwidth contrast),
`wo_reach` (cumulative instead of reachability cost), `wo_arb` (no adaptive reachability budget), or
`ppo_gat` (plain PPO with the same encoder, strict training, no cost). Example: `conal.py:cpu,wo_reach`.

The default variant is CONAL's reference setting: 50 epochs of 1000 requests on WX100 at rate 0.14,
hidden size 128, then five test traces of 1000 requests per topology. `cpu` trains a smaller network
(hidden 32) on 6,000 requests, sized to finish within an hour on 2 CPU cores; `quick` trains hidden 16
on 600 requests and evaluates 200 requests on WX100 and GEANT, a few minutes on 2 cores (most of it
compilation). Measured runtimes and results are in docs/conal.md.
"""

import ml_collections

SIZES = ("", "cpu", "quick")
ABLATIONS = ("wo_ha", "wo_pc", "wo_reach", "wo_arb", "ppo_gat")


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.experiment = "vne_conal"
    config.seed = 0  # Draws the substrate resources, the initial parameters and the training requests.
    config.method = "conal"  # "conal" or "ppo_gat" (PPO with the same encoder, strict steps, no cost terms).

    # Ablations of CONAL: each flag switches one component off when False.
    config.ablation = ml_collections.ConfigDict()
    config.ablation.hetero_graph = True  # Mapping and imaginary edges between virtual and substrate nodes.
    config.ablation.path_contrast = True  # Barlow Twins loss on path-bandwidth augmented views.
    config.ablation.reachability = True  # Cost return max(c_t, C_{t+1}); False sums the positive costs.
    config.ablation.adaptive_budget = True  # Greedy-copy feasibility flags and budgets in the multiplier loss.

    # Training substrate and request distribution (Virne's settings): Erdos-Renyi requests of 2 to 10
    # nodes, CPU U[0, 20], bandwidth U[0, 50], integer Poisson inter-arrival gaps, exponential lifetimes.
    config.train_topology = "wx100"
    config.train_arrival_rate = 0.14  # Requests per time unit.
    config.min_nodes = 2
    config.max_nodes = 10
    config.mean_lifetime = 500.0
    # Link mapping: first fitting path among the k_paths shortest by hops; max_hops = 0 sets no limit
    # (CONAL's reference code uses 4 hops, which leaves some GEANT node pairs, diameter 8, unroutable).
    config.k_paths = 5
    config.max_hops = 0

    config.model = ml_collections.ConfigDict()
    config.model.hidden = 128  # Embedding width of every layer and head.
    config.model.num_layers = 3  # Relational GAT layers.

    config.train = ml_collections.ConfigDict()
    config.train.epochs = 50  # Training length: epochs * requests_per_epoch requests over all streams.
    config.train.requests_per_epoch = 1000  # Each stream empties its substrate after this many requests.
    config.train.num_envs = 16  # Vmapped online streams.
    config.train.rollout_steps = 16  # Steps per stream and update (16 x 16 = 256, the reference's buffer).
    config.train.num_minibatches = 10  # PPO minibatches per update, drawn with replacement.
    config.train.minibatch_size = 128
    config.train.contrast_states = 32  # States of each minibatch that get two augmented views.
    config.train.greedy_capacity = 128  # Episode starts per update checked by the greedy copy.
    config.train.greedy_sync_every = 100  # Updates between copies of the policy into the greedy copy.
    config.train.max_active = 256  # Table size for embedded requests that have not departed.
    config.train.gamma = 0.99
    config.train.gae_lambda = 1.0  # 1: Monte Carlo returns minus the value, as the reference code.
    config.train.clip_epsilon = 0.2
    config.train.learning_rate = 1e-3  # Actor, critics and encoder.
    config.train.multiplier_learning_rate = 1e-4
    config.train.contrast_learning_rate = 1e-3  # Own Adam on the encoder for the contrastive loss.
    config.train.max_grad_norm = 0.5
    config.train.weight_decay = 1e-5
    config.train.value_coef = 0.5
    config.train.cost_value_coef = 0.01
    config.train.entropy_coef = 0.01
    config.train.contrast_coef = 0.001
    config.train.log_every = 10  # Updates between metrics lines.
    config.train.checkpoint_every = 50  # Updates between checkpoints.

    config.eval = ml_collections.ConfigDict()
    config.eval.topologies = ("wx100", "geant", "brain")
    # Arrival rates of the Virne benchmark paper for GEANT and BRAIN (CONAL's scripts use 0.0005 and 0.001).
    config.eval.arrival_rates = ml_collections.ConfigDict({"wx100": 0.14, "geant": 0.016, "brain": 0.004})
    config.eval.test_seeds = (0, 1111, 2222, 3333, 4444)
    config.eval.num_requests = 1000
    config.eval.arrival_process = "poisson_gaps"
    config.eval.baselines = ("grc_rank", "nrm_rank")

    size, *ablations = variant.split(",") if variant else [""]
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r} in variant {variant!r} of configs/vne/conal.py; expected one of "
                         f"{SIZES} followed by optional ablations {ABLATIONS}, e.g. 'cpu,wo_reach'")
    if size == "cpu":
        config.model.hidden = 32
        config.train.epochs = 6
        config.train.num_envs = 8
        config.train.rollout_steps = 16
        config.train.num_minibatches = 4
        config.train.minibatch_size = 64
        config.train.contrast_states = 4
        config.train.greedy_capacity = 48
        config.train.greedy_sync_every = 20
    elif size == "quick":
        config.model.hidden = 16
        config.model.num_layers = 2
        config.train.epochs = 2
        config.train.requests_per_epoch = 300
        config.train.num_envs = 4
        config.train.rollout_steps = 16
        config.train.minibatch_size = 32
        config.train.contrast_states = 4
        config.train.greedy_capacity = 32
        config.train.num_minibatches = 4
        config.train.greedy_sync_every = 10
        config.eval.topologies = ("wx100", "geant")
        config.eval.test_seeds = (0, 1111)
        config.eval.num_requests = 200
    for ablation in ablations:
        if ablation == "wo_ha":
            config.ablation.hetero_graph = False
        elif ablation == "wo_pc":
            config.ablation.path_contrast = False
        elif ablation == "wo_reach":
            config.ablation.reachability = False
        elif ablation == "wo_arb":
            config.ablation.adaptive_budget = False
        elif ablation == "ppo_gat":
            config.method = "ppo_gat"
        else:
            raise ValueError(f"unknown ablation {ablation!r} in variant {variant!r} of configs/vne/conal.py; "
                             f"expected one of {ABLATIONS}")
    return config
