"""AdaMerging: merging coefficients learned at test time by entropy minimisation (Yang et al.,
"AdaMerging: Adaptive Model Merging for Multi-Task Learning", ICLR 2024).

The merged model is theta = theta_0 + sum_k lambda_k tau_k (task-wise, T
coefficients) or theta^l = theta_0^l + sum_k lambda_k^l tau_k^l (layer-wise, one
coefficient per task and parameter tensor l). The coefficients minimise
sum_t H(softmax(f_theta(x_t))), the mean Shannon entropy of the predictions on
unlabelled test batches x_t of every task t, with Adam.

`adamerging` returns an optax-style object of pure functions: `init()` gives
the state, `step(state, batches)` does one Adam update and `merge(state)`
builds the merged parameters. `fit` runs `step` in a `lax.scan`. AdaMerging++
is the same on Ties-selected task vectors (`ties_keep_fraction`).

Defaults follow fusion-bench 0.2.33: coefficients start at 0.3 and Adam has
learning rate 1e-3 (`config/method/adamerging/clip.yaml`), and coefficients are
clamped to [0, 1] where they are used, while Adam updates the raw values (the
`clamp_weights=True` default of `LayerWiseMergedModel`). fusion-bench's CLIP
config turns clamping off (`clamp_weights: false`), which `clamp=False`
reproduces.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxlab.merging import checks
from jaxlab.merging import ties

PyTree = Any
GRANULARITIES = ("task", "layer")


class AdaMergingState(NamedTuple):
    """State of AdaMerging.

    Attributes:
        coefficients: float32 [T] (task-wise) or [T, L] (layer-wise, L = number
            of parameter leaves in leaf order), the raw coefficients lambda
            before clamping.
        optimizer_state: the optax state of the coefficients.
        step: int32 [], the number of updates done.
    """

    coefficients: jax.Array
    optimizer_state: optax.OptState
    step: jax.Array


class AdaMerging(NamedTuple):
    """Pure functions of one AdaMerging problem (see `adamerging`).

    Attributes:
        init: () -> AdaMergingState with every coefficient at the initial value.
        step: (state, batches) -> (state, metrics); one optimizer update. `batches`
            is a tuple with one unlabelled batch per task. The metrics are 'loss'
            (summed entropy before the update) and 'entropy' ([T] per task).
        merge: (state) -> merged parameters with the clamped coefficients.
        coefficients: (state) -> the coefficients as used, clamped when clamping is on.
    """

    init: Callable[[], AdaMergingState]
    step: Callable[[AdaMergingState, Sequence[Any]], tuple[AdaMergingState, dict[str, jax.Array]]]
    merge: Callable[[AdaMergingState], PyTree]
    coefficients: Callable[[AdaMergingState], jax.Array]


def prediction_entropy(logits: jax.Array) -> jax.Array:
    """Return the mean over the batch of the Shannon entropy (nats) of softmax(logits) [batch, classes]."""
    log_probabilities = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.sum(jnp.exp(log_probabilities) * log_probabilities, axis=-1))


def adamerging(
    pretrained: PyTree,
    task_vectors: Sequence[PyTree],
    logits_fn: Callable[[PyTree, int, Any], jax.Array],
    *,
    granularity: str = "layer",
    init_value: float = 0.3,
    optimizer: optax.GradientTransformation | None = None,
    clamp: bool = True,
    ties_keep_fraction: float | None = None,
) -> AdaMerging:
    """Set up AdaMerging (or AdaMerging++) for the given task vectors.

    Args:
        pretrained: the base parameters theta_0.
        task_vectors: T task vectors (`task_vectors(pretrained, finetuned)`).
        logits_fn: logits_fn(params, task, batch) -> [batch, classes] logits of
            task `task` (a Python int; use it to pick the task's head).
        granularity: "task" for one coefficient per task, "layer" for one per
            task and parameter leaf.
        init_value: initial coefficient (0.3 in fusion-bench's `adamerging/clip.yaml`).
        optimizer: an optax optimizer for the coefficients; Adam with learning
            rate 1e-3 by default.
        clamp: use clip(lambda, 0, 1) in the merge (fusion-bench's `clamp_weights`).
        ties_keep_fraction: for AdaMerging++, the Ties keep fraction (e.g. 0.2).
            The task vectors are replaced by their Ties-selected entries
            (`ties_selected_task_vectors`).
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity={granularity!r} is invalid; use one of {GRANULARITIES}.")
    checks.check_models(pretrained, task_vectors)
    if ties_keep_fraction is not None:
        task_vectors = ties.ties_selected_task_vectors(task_vectors, ties_keep_fraction)
    optimizer = optimizer if optimizer is not None else optax.adam(1e-3)

    num_tasks = len(task_vectors)
    base_leaves, treedef = jax.tree.flatten(pretrained)
    # [T, ...] per leaf, so one tensordot merges every task.
    stacked_leaves = [jnp.stack(leaves) for leaves in zip(*[jax.tree.leaves(v) for v in task_vectors])]
    shape = (num_tasks,) if granularity == "task" else (num_tasks, len(base_leaves))

    def used_coefficients(state_or_coefficients: AdaMergingState | jax.Array) -> jax.Array:
        raw = (state_or_coefficients.coefficients if isinstance(state_or_coefficients, AdaMergingState)
               else state_or_coefficients)
        return jnp.clip(raw, 0.0, 1.0) if clamp else raw

    def merge_with(raw: jax.Array) -> PyTree:
        weights = used_coefficients(raw)
        merged = []
        for index, (base, stacked) in enumerate(zip(base_leaves, stacked_leaves)):
            leaf_weights = weights if granularity == "task" else weights[:, index]
            merged.append(base + jnp.tensordot(leaf_weights.astype(stacked.dtype), stacked, axes=1))
        return jax.tree.unflatten(treedef, merged)

    def entropies(raw: jax.Array, batches: Sequence[Any]) -> jax.Array:
        params = merge_with(raw)
        return jnp.stack([prediction_entropy(logits_fn(params, task, batches[task])) for task in range(num_tasks)])

    def loss(raw: jax.Array, batches: Sequence[Any]) -> tuple[jax.Array, jax.Array]:
        per_task = entropies(raw, batches)
        return jnp.sum(per_task), per_task

    def init() -> AdaMergingState:
        coefficients = jnp.full(shape, init_value, jnp.float32)
        return AdaMergingState(coefficients, optimizer.init(coefficients), jnp.zeros((), jnp.int32))

    def step(state: AdaMergingState, batches: Sequence[Any]) -> tuple[AdaMergingState, dict[str, jax.Array]]:
        if len(batches) != num_tasks:
            raise ValueError(f"Got {len(batches)} batches for {num_tasks} tasks; pass one batch per task.")
        (total, per_task), grads = jax.value_and_grad(loss, has_aux=True)(state.coefficients, batches)
        updates, optimizer_state = optimizer.update(grads, state.optimizer_state, state.coefficients)
        coefficients = optax.apply_updates(state.coefficients, updates)
        new_state = AdaMergingState(coefficients, optimizer_state, state.step + 1)
        return new_state, {"loss": total, "entropy": per_task}

    return AdaMerging(init=init, step=step, merge=lambda state: merge_with(state.coefficients),
                      coefficients=used_coefficients)


def fit(
    problem: AdaMerging,
    state: AdaMergingState,
    batches: Sequence[Any],
) -> tuple[AdaMergingState, dict[str, jax.Array]]:
    """Run `problem.step` once per leading index of `batches` in a `lax.scan`.

    Args:
        problem: from `adamerging`.
        state: the starting state, e.g. `problem.init()`.
        batches: a tuple with one pytree per task whose leaves have a leading
            [num_steps, ...] axis; step s uses index s of every task.

    Returns:
        The final state and the metrics of every step, stacked on a leading axis.
    """
    return jax.lax.scan(problem.step, state, tuple(batches))
