"""Tiny CommFormer configs shared by the tests."""

import os

import pytest

from jaxlab.core.config import load_config_file

CONFIG_PATH = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "commformer", "smax.py")


def tiny_config(env_name: str = "MPE_simple_spread_v3"):
    """The `quick` variant shrunk further: 2 environments x 8 steps, 2 updates per chunk, 2 chunks."""
    config = load_config_file(CONFIG_PATH, "quick")
    config.env.name = env_name
    config.model.embed_dim = 16
    config.ppo.num_envs = 2
    config.ppo.rollout_length = 8
    config.ppo.num_epochs = 5
    config.graph.warmup_updates = 1
    config.train.updates_per_chunk = 2
    config.train.total_env_steps = 2 * 8 * 2 * 2
    config.train.eval_episodes = 2
    return config


@pytest.fixture
def make_tiny_config():
    return tiny_config
