"""Small substrates and traces shared by the VNE tests."""

import numpy as np
import pytest

from jaxlab.vne import embedding, requests, substrate


@pytest.fixture(scope="session")
def small_setup():
    """A 12-node Waxman substrate with scarce resources, its candidate paths and a busy 60-request trace."""
    network = substrate.waxman(12, np.random.default_rng(3), resource_range=(20, 40))
    paths = substrate.candidate_paths(network, k=3, max_hops=4)
    trace = requests.generate_trace(5, arrival_rate=0.5, num_requests=60, max_nodes=5, mean_lifetime=30.0)
    return network, paths, embedding.substrate_arrays(network, paths), trace
