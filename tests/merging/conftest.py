"""Small parameter trees shared by the merging tests."""

import jax.numpy as jnp
import numpy as np
import pytest


def random_tree(rng: np.random.Generator, scale: float = 1.0) -> dict:
    """A nested float32 tree with a matrix, a 3-axis kernel and a vector."""

    def normal(*shape: int) -> jnp.ndarray:
        return jnp.asarray(scale * rng.normal(size=shape), dtype=jnp.float32)

    return {
        "encoder": {"layers_0": {"mlp": {"fc1": {"kernel": normal(4, 3), "bias": normal(3)}}}},
        "attention": {"qkv": {"kernel": normal(3, 2, 2)}},
        "head": normal(5),
    }


@pytest.fixture
def models():
    """A pretrained tree and three fine-tuned trees (pretrained + noise)."""
    rng = np.random.default_rng(0)
    pretrained = random_tree(rng)
    finetuned = []
    for _ in range(3):
        noise = random_tree(rng, scale=0.5)
        finetuned.append({
            "encoder": {"layers_0": {"mlp": {"fc1": {
                "kernel": pretrained["encoder"]["layers_0"]["mlp"]["fc1"]["kernel"]
                + noise["encoder"]["layers_0"]["mlp"]["fc1"]["kernel"],
                "bias": pretrained["encoder"]["layers_0"]["mlp"]["fc1"]["bias"]
                + noise["encoder"]["layers_0"]["mlp"]["fc1"]["bias"]}}}},
            "attention": {"qkv": {"kernel": pretrained["attention"]["qkv"]["kernel"]
                                  + noise["attention"]["qkv"]["kernel"]}},
            "head": pretrained["head"] + noise["head"],
        })
    return pretrained, finetuned


def flatten(tree) -> np.ndarray:
    """All leaves of a tree concatenated in leaf order, as float64 numpy."""
    import jax

    return np.concatenate([np.asarray(leaf, np.float64).ravel() for leaf in jax.tree.leaves(tree)])
