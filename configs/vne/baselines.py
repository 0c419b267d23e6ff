"""Online VNE with the random, NRM and GRC ranking heuristics on WX100, GEANT and BRAIN.

Run:
  python -m launch.main --config=configs/vne/baselines.py --workdir=runs/vne_baselines
  python -m launch.main --config=configs/vne/baselines.py:quick --workdir=runs/vne_quick

The default variant runs 1000 requests per trace on WX100 at seven arrival rates, GEANT and BRAIN with the
three solvers. It took 92 seconds on 2 CPU cores shared with other processes (load average about 5), and a
third of that went to enumerating candidate paths. `quick` runs 300 requests on WX100 at three rates and on
GEANT; it took 23 seconds on the same machine. Expected at WX100, rate 0.14, seed 0: NRM and GRC accept
about 60% of the requests with a long-term revenue-to-cost ratio of 0.52 to 0.56; the Virne benchmark paper
reports 60.7% and 58.9%.
"""

import ml_collections


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.experiment = "vne_baselines"
    config.seed = 0  # Draws the substrate resources and the request traces.

    # Substrates shipped in jaxlab/vne/data: "wx100", "geant", "brain". Node CPU and link bandwidth are
    # integers drawn from U[50, 100].
    config.topologies = ("wx100", "geant", "brain")
    # Arrival rates (requests per time unit) per topology. GEANT and BRAIN use the rates of the Virne
    # benchmark paper (0.016 and 0.004), because larger ones leave almost no request accepted.
    config.arrival_rates = ml_collections.ConfigDict()
    config.arrival_rates.wx100 = (0.08, 0.10, 0.12, 0.14, 0.16, 0.18, 0.20)
    config.arrival_rates.geant = (0.016,)
    config.arrival_rates.brain = (0.004,)
    config.solvers = ("random_rank", "nrm_rank", "grc_rank")

    # Request streams: Erdos-Renyi graphs (link probability 0.5) of min_nodes..max_nodes nodes, CPU
    # demands U[0, 20], bandwidth demands U[0, 50], exponential lifetimes. "poisson_gaps" draws integer
    # Poisson inter-arrival gaps as Virne 0.5.0 does; "exponential_gaps" gives a Poisson process.
    config.num_requests = 1000
    config.min_nodes = 2
    config.max_nodes = 10
    config.arrival_process = "poisson_gaps"
    config.mean_lifetime = 500.0

    # Link mapping: the first of the k_paths shortest paths (by hops) with enough bandwidth; max_hops = 0
    # sets no hop limit. Virne 0.5.0 uses k = 10 without a limit; CONAL's reference code uses k = 5, 4 hops.
    config.k_paths = 10
    config.max_hops = 0

    if variant == "quick":
        config.topologies = ("wx100", "geant")
        config.arrival_rates.wx100 = (0.08, 0.14, 0.20)
        config.num_requests = 300
    elif variant:
        raise ValueError(f"unknown variant {variant!r} of configs/vne/baselines.py; expected '' or 'quick'")
    return config
