"""Small substrates, traces and a tiny training setup shared by the CONAL tests."""

import jax
import numpy as np
import pytest

from jaxlab.vne import embedding, env, requests, substrate
from jaxlab.vne.conal import cmdp, train

MAX_NODES = 5


@pytest.fixture(scope="session")
def tiny_setup():
    """A 12-node Waxman substrate with scarce resources, its env params and a busy 40-request trace."""
    network = substrate.waxman(12, np.random.default_rng(3), resource_range=(20, 40))
    paths = substrate.candidate_paths(network, k=3, max_hops=4)
    arrays = embedding.substrate_arrays(network, paths)
    params = env.make_params(arrays, max_nodes=MAX_NODES)
    trace = requests.generate_trace(5, arrival_rate=0.5, num_requests=40, max_nodes=MAX_NODES, mean_lifetime=30.0)
    return network, paths, params, trace


def tiny_train_config(**overrides) -> train.TrainConfig:
    stream = cmdp.StreamConfig(arrival_rate=0.5, mean_lifetime=20.0, requests_per_epoch=60, max_active=32,
                               max_nodes=MAX_NODES, tolerant=overrides.pop("tolerant", True))
    settings = dict(hidden=16, num_layers=2, num_envs=4, rollout_steps=16, num_minibatches=2, minibatch_size=16,
                    contrast_states=4, greedy_capacity=32, greedy_sync_every=5, gamma=0.99, gae_lambda=1.0,
                    clip_epsilon=0.2, learning_rate=3e-3, multiplier_learning_rate=1e-3, contrast_learning_rate=1e-3,
                    max_grad_norm=0.5, weight_decay=1e-5, value_coef=0.5, cost_value_coef=0.01, entropy_coef=0.01,
                    contrast_coef=0.001, hetero_graph=True, path_contrast=True, constrained=True, reachability=True,
                    adaptive_budget=True, stream=stream)
    settings.update(overrides)
    return train.TrainConfig(**settings)


@pytest.fixture(scope="session")
def tiny_training(tiny_setup):
    """The tiny config, its jitted train step (compiled once for all tests) and its initial state."""
    _, _, params, _ = tiny_setup
    config = tiny_train_config()
    key = jax.random.key(0)
    return config, train.make_train_step(config, key), train.init_train_state(key, config, params), key
