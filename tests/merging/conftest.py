"""Small parameter trees shared by the merging tests."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
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
    return np.concatenate([np.asarray(leaf, np.float64).ravel() for leaf in jax.tree.leaves(tree)])


@dataclasses.dataclass
class SyntheticTasks:
    """Three 4-class tasks on 8-dim Gaussian clusters, a shared 2-layer backbone and frozen per-task heads.

    Attributes:
        pretrained: backbone parameters {'fc1', 'fc2'} at random initialisation.
        heads: [T] frozen head kernels [16, 4], one per task.
        experts: backbones fine-tuned on each task alone (heads frozen).
        joint: one backbone trained on all tasks together (multi-task learning).
        train, test: per task, (inputs float32 [256, 8], labels int [256]).
    """

    pretrained: dict
    heads: list
    experts: list
    joint: dict
    train: list
    test: list


def _backbone(params, x):
    h = jax.nn.relu(x @ params["fc1"]["kernel"] + params["fc1"]["bias"])
    return jax.nn.relu(h @ params["fc2"]["kernel"] + params["fc2"]["bias"])


def task_logits(params, heads, task, x):
    """Logits of task `task`: the backbone followed by that task's frozen head."""
    return _backbone(params, x) @ heads[task]


@pytest.fixture(scope="session")
def synthetic_tasks():
    num_tasks, num_classes, dim, width = 3, 4, 8, 16
    rng = np.random.default_rng(0)
    key = jax.random.key(0)

    def make_task():
        centers = rng.normal(scale=1.5, size=(num_classes, dim))
        def sample(n):
            labels = rng.integers(0, num_classes, size=n)
            return jnp.asarray(centers[labels] + rng.normal(size=(n, dim)), jnp.float32), jnp.asarray(labels)
        return sample(256), sample(256)

    splits = [make_task() for _ in range(num_tasks)]
    keys = jax.random.split(key, 5)
    pretrained = {
        "fc1": {"kernel": jax.random.normal(keys[0], (dim, width)) / np.sqrt(dim), "bias": jnp.zeros(width)},
        "fc2": {"kernel": jax.random.normal(keys[1], (width, width)) / np.sqrt(width), "bias": jnp.zeros(width)},
    }
    heads = [jax.random.normal(k, (width, num_classes)) / np.sqrt(width) for k in jax.random.split(keys[2], 3)]

    def loss(params, tasks):
        total = 0.0
        for task in tasks:
            x, y = splits[task][0]
            logits = task_logits(params, heads, task, x)
            total = total + optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return total

    def train(tasks, steps=150):
        optimizer = optax.adam(1e-2)

        def step(carry, _):
            params, state = carry
            grads = jax.grad(loss)(params, tasks)
            updates, state = optimizer.update(grads, state)
            return (optax.apply_updates(params, updates), state), None

        (params, _), _ = jax.lax.scan(step, (pretrained, optimizer.init(pretrained)), None, length=steps)
        return params

    return SyntheticTasks(
        pretrained=pretrained,
        heads=heads,
        experts=[train((t,)) for t in range(num_tasks)],
        joint=train(tuple(range(num_tasks))),
        train=[split[0] for split in splits],
        test=[split[1] for split in splits],
    )
