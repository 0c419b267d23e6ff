"""Activation functions by their Hugging Face `hidden_act` names.

Each function computes what `transformers.activations.ACT2FN[name]` computes
in float32, so that checkpoints converted from PyTorch give the same outputs.
"""

from __future__ import annotations

from typing import Callable

import jax


def quick_gelu(x: jax.Array) -> jax.Array:
    """Sigmoid approximation of GELU used by OpenAI CLIP: x * sigmoid(1.702 x)."""
    return x * jax.nn.sigmoid(1.702 * x)


def gelu_exact(x: jax.Array) -> jax.Array:
    """GELU with the exact erf form (PyTorch `nn.GELU()`, BERT's "gelu")."""
    return jax.nn.gelu(x, approximate=False)


def gelu_tanh(x: jax.Array) -> jax.Array:
    """GELU with the tanh approximation (GPT-2's "gelu_new")."""
    return jax.nn.gelu(x, approximate=True)


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "quick_gelu": quick_gelu,
    "gelu": gelu_exact,
    "gelu_new": gelu_tanh,
    "gelu_pytorch_tanh": gelu_tanh,
    "relu": jax.nn.relu,
}


def get_activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """Look up an activation by its `hidden_act` name, raising ValueError for unknown names."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(
            f"unsupported hidden_act {name!r}; expected one of {sorted(ACTIVATIONS)}") from None
