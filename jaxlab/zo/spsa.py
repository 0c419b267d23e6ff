"""Zeroth-order fine-tuning with two-point SPSA: MeZO and the layer-wise sparse LeZO.

One step estimates the directional derivative of the loss along a Gaussian direction z from two forward
passes and moves the parameters along z (Malladi et al., "Fine-Tuning Language Models with Just Forward
Passes", NeurIPS 2023):

    l+ = L(θ + εz),  l- = L(θ - εz),  g = (l+ - l-) / (2ε),  θ <- θ - lr·(g·z + wd·θ).

z is never stored. It is regenerated from the step key for each of the three passes over the parameters:
+εz, -2εz, then restore-and-update fused into one pass. Each pass walks every leaf in chunks inside a loop
that updates the donated parameter buffers in place, so memory stays near one copy of the parameters plus
the activations of one forward pass.

LeZO (Wang et al., arXiv 2410.09823) draws K of the G layer groups each step (`active_fraction`) and
perturbs and updates only those. Each group's z comes from fold_in(noise_key, group id), so it does not depend
on which other groups were drawn, and inactive groups sit behind `lax.cond`: no noise is generated for them
and no arithmetic touches them. `active_fraction=1` is MeZO.

Sparse-MeZO (Liu et al., arXiv 2402.15751) perturbs only the entries whose magnitude is at most a per-leaf
threshold. Here the threshold is the `sparse_keep_fraction` quantile of |θ| at initialisation, and the
mask is taken from the parameters at the start of each step and kept as packed bits (1/32 of the float32
parameters), so that all three passes use the same one.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple, Union

import jax
import jax.numpy as jnp
import optax

from jaxlab.zo import groups as groups_lib
from jaxlab.zo.groups import ParameterGroups

LossFn = Callable[[Any, Any], jax.Array]
LearningRate = Union[float, Callable[[jax.Array], jax.Array]]


@dataclasses.dataclass(frozen=True)
class ZOConfig:
    """Hyperparameters of a zeroth-order optimizer.

    Attributes:
      epsilon: perturbation scale ε (MeZO: 1e-3).
      learning_rate: a float or an optax schedule of the step (MeZO: constant 1e-6 or 1e-7 for OPT-13B).
      weight_decay: decoupled L2 coefficient, applied where the decay mask is True.
      active_fraction: fraction of layer groups perturbed and updated per step; K = max(1, round(fraction·G)).
        1.0 is MeZO, 0.25 the LeZO default here.
      sparse_keep_fraction: None, or Sparse-MeZO's fraction in (0, 1] of smallest-magnitude entries of each
        leaf that are perturbed.
    """

    epsilon: float = 1e-3
    learning_rate: LearningRate = 1e-6
    weight_decay: float = 0.0
    active_fraction: float = 1.0
    sparse_keep_fraction: float | None = None

    def __post_init__(self):
        if not (isinstance(self.epsilon, (int, float)) and math.isfinite(self.epsilon) and self.epsilon > 0):
            raise ValueError(f"epsilon={self.epsilon!r} is invalid; expected a finite float > 0 such as 1e-3")
        if not callable(self.learning_rate) and not (
                isinstance(self.learning_rate, (int, float)) and math.isfinite(self.learning_rate)
                and self.learning_rate >= 0):
            raise ValueError(f"learning_rate={self.learning_rate!r} is invalid; expected a float >= 0 or an "
                             "optax schedule")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay={self.weight_decay!r} is invalid; expected a float >= 0")
        if not (isinstance(self.active_fraction, (int, float)) and 0 < self.active_fraction <= 1):
            raise ValueError(f"active_fraction={self.active_fraction!r} is invalid; expected a float in (0, 1] "
                             "(1 for MeZO, 0.25 for LeZO)")
        if self.sparse_keep_fraction is not None and not (
                isinstance(self.sparse_keep_fraction, (int, float)) and 0 < self.sparse_keep_fraction <= 1):
            raise ValueError(f"sparse_keep_fraction={self.sparse_keep_fraction!r} is invalid; expected None or a "
                             "float in (0, 1]")

    def num_active(self, num_groups: int) -> int:
        """Return K, the number of groups drawn per step out of `num_groups`."""
        return max(1, min(num_groups, round(self.active_fraction * num_groups)))


class ZOState(NamedTuple):
    """State of a zeroth-order optimizer.

    Attributes:
      step: int32 scalar, the number of steps taken; step t uses fold_in(key, t).
      key: the optimizer's root PRNG key.
      thresholds: Sparse-MeZO magnitude threshold per leaf (float32 scalars, `jax.tree.leaves` order), or
        an empty tuple without Sparse-MeZO.
    """

    step: jax.Array
    key: jax.Array
    thresholds: tuple


class StepMetrics(NamedTuple):
    """Scalars of one step: both losses, the projected gradient g, the learning rate, and whether g was finite.

    A non-finite g leaves the parameters unchanged (restored, not updated); the training loop should stop.
    """

    loss_plus: jax.Array
    loss_minus: jax.Array
    projected_grad: jax.Array
    learning_rate: jax.Array
    finite: jax.Array


def init(params: Any, key: jax.Array, config: ZOConfig) -> ZOState:
    """Create the optimizer state; with Sparse-MeZO, compute each leaf's magnitude threshold from `params`."""
    thresholds = ()
    if config.sparse_keep_fraction is not None:
        thresholds = tuple(
            jnp.quantile(jnp.abs(leaf.astype(jnp.float32)).ravel(), config.sparse_keep_fraction)
            for leaf in jax.tree.leaves(params))
    return ZOState(step=jnp.zeros((), jnp.int32), key=key, thresholds=thresholds)


def _learning_rate(config: ZOConfig, step: jax.Array) -> jax.Array:
    if callable(config.learning_rate):
        return jnp.asarray(config.learning_rate(step), jnp.float32)
    return jnp.asarray(config.learning_rate, jnp.float32)


# Noise is drawn and applied in chunks of this many entries, in a loop that updates each leaf in place, so
# the random bits and normals of a pass never occupy more than a few chunks of memory at once.
NOISE_CHUNK = 1 << 16


def _chunked_pass(leaf: jax.Array, leaf_key: jax.Array, update: Callable[[jax.Array, jax.Array], jax.Array],
                  chunk: int = NOISE_CHUNK, mask_bits: jax.Array | None = None) -> jax.Array:
    """Return `update(values, z)` applied to the flattened leaf chunk by chunk, z ~ N(0, 1) per chunk.

    Chunk i draws its z from fold_in(leaf_key, i), so z is a fixed function of (leaf_key, leaf size) and
    every pass regenerates the same noise. `mask_bits` (uint8, `jnp.packbits` of a flat bool mask) zeroes z
    where the mask is False.
    """
    flat = leaf.reshape(-1)
    num_full = flat.size // chunk

    def noise(index, start, length):
        z = jax.random.normal(jax.random.fold_in(leaf_key, index), (length,), jnp.float32)
        if mask_bits is None:
            return z
        bits = jax.lax.dynamic_slice(mask_bits, (start // 8,), ((length + 7) // 8,))
        return jnp.where(jnp.unpackbits(bits, count=length).astype(bool), z, 0.0)

    def body(index, values):
        start = index * chunk
        new_chunk = update(jax.lax.dynamic_slice(values, (start,), (chunk,)), noise(index, start, chunk))
        return jax.lax.dynamic_update_slice(values, new_chunk.astype(values.dtype), (start,))

    if num_full:
        flat = jax.lax.fori_loop(0, num_full, body, flat)
    tail = flat.size - num_full * chunk
    if tail:
        start = num_full * chunk
        new_tail = update(flat[start:], noise(num_full, start, tail))
        flat = flat.at[start:].set(new_tail.astype(flat.dtype))
    return flat.reshape(leaf.shape)


def sparse_mask_bits(params: Any, thresholds: tuple) -> tuple:
    """Return Sparse-MeZO's mask per leaf, |θ| <= threshold, as packed bits (uint8, 1/32 of a float32 leaf)."""
    return tuple(jnp.packbits(jnp.abs(leaf.astype(jnp.float32)).reshape(-1) <= threshold)
                 for leaf, threshold in zip(jax.tree.leaves(params), thresholds))


def select_groups(key: jax.Array, num_groups: int, num_active: int) -> jax.Array:
    """Draw `num_active` distinct groups uniformly; return a bool[num_groups] mask."""
    if num_active >= num_groups:
        return jnp.ones((num_groups,), bool)
    chosen = jax.random.permutation(key, num_groups)[:num_active]
    return jnp.zeros((num_groups,), bool).at[chosen].set(True)


def _map_groups(groups: ParameterGroups, active: jax.Array | None, leaves: list[jax.Array],
                update_group: Callable[[int, list[jax.Array]], list[jax.Array]]) -> list[jax.Array]:
    """Apply `update_group(group, leaves_of_group)` to each group, behind `lax.cond` unless all are active."""
    leaves = list(leaves)
    for group in range(groups.num_groups):
        indices = groups.leaves_of(group)
        group_leaves = [leaves[i] for i in indices]

        def apply(values, group=group):
            return update_group(group, values)

        if active is None:
            new_leaves = apply(group_leaves)
        else:
            new_leaves = jax.lax.cond(active[group], apply, lambda values: values, group_leaves)
        for i, value in zip(indices, new_leaves):
            leaves[i] = value
    return leaves


class ZOFunctions(NamedTuple):
    """The pure pieces of a step, for composing or timing them separately.

    perturb(params, noise_key, scale, active, mask_bits=None) -> params + scale·z on the active groups.
    restore_and_update(params, noise_key, active, mask_bits, projected_grad, learning_rate) -> parameters at
      θ - εz moved back to θ and updated, in one pass.
    select(key) -> bool[G] active mask, or None when every group is active (MeZO).
    `mask_bits` is `sparse_mask_bits(params at the step's start, thresholds)` for Sparse-MeZO, else None.
    """

    perturb: Callable
    restore_and_update: Callable
    select: Callable


def make_functions(groups: ParameterGroups, config: ZOConfig, decay_mask: Any = None,
                   chunk: int = NOISE_CHUNK) -> ZOFunctions:
    """Build the step's pieces for parameters partitioned by `groups`.

    Args:
      groups: the layer groups of the parameters (`group_parameters`).
      config: the hyperparameters.
      decay_mask: pytree of Python bools, True where weight decay applies; by default
        `groups_lib.weight_decay_mask` (none on biases and LayerNorm).
      chunk: entries per noise chunk, a multiple of 8 (`NOISE_CHUNK`); z depends on it.
    """
    if chunk < 8 or chunk % 8:
        raise ValueError(f"chunk={chunk} is invalid; expected a positive multiple of 8")
    num_active = config.num_active(groups.num_groups)
    every_group_active = num_active == groups.num_groups
    decay_flags = None if decay_mask is None else tuple(bool(f) for f in jax.tree.leaves(decay_mask))
    epsilon = float(config.epsilon)
    weight_decay = float(config.weight_decay)

    def leaf_key(noise_key, group, leaf_index):
        position = groups.leaves_of(group).index(leaf_index)
        return jax.random.fold_in(jax.random.fold_in(noise_key, group), position)

    def run_pass(params, noise_key, active, mask_bits, make_update):
        leaves = jax.tree.leaves(params)

        def update_group(group, values):
            return [_chunked_pass(value, leaf_key(noise_key, group, i), make_update(i), chunk,
                                  None if mask_bits is None else mask_bits[i])
                    for i, value in zip(groups.leaves_of(group), values)]

        return jax.tree.unflatten(groups.treedef, _map_groups(groups, active, leaves, update_group))

    def perturb(params, noise_key, scale, active, mask_bits=None):
        def make_update(leaf_index):
            return lambda values, z: values.astype(jnp.float32) + scale * z

        return run_pass(params, noise_key, active, mask_bits, make_update)

    def restore_and_update(params, noise_key, active, mask_bits, projected_grad, learning_rate):
        flags = decay_flags
        if flags is None:
            flags = tuple(jax.tree.leaves(groups_lib.weight_decay_mask(params)))

        def make_update(leaf_index):
            decay = weight_decay if flags[leaf_index] else 0.0

            def update(values, z):
                restored = values.astype(jnp.float32) + epsilon * z
                return restored - learning_rate * (projected_grad * z + decay * restored)

            return update

        return run_pass(params, noise_key, active, mask_bits, make_update)

    def select(key):
        if every_group_active:
            return None
        return select_groups(key, groups.num_groups, num_active)

    return ZOFunctions(perturb, restore_and_update, select)


def step_keys(state: ZOState) -> tuple[jax.Array, jax.Array]:
    """Return the (group selection, noise) keys of the current step, from fold_in(root key, step)."""
    key_select, key_noise = jax.random.split(jax.random.fold_in(state.key, state.step))
    return key_select, key_noise


def make_step(loss_fn: LossFn, groups: ParameterGroups, config: ZOConfig, decay_mask: Any = None,
              donate: bool = True, fused: bool = False
              ) -> Callable[[Any, ZOState, Any], tuple[Any, ZOState, StepMetrics]]:
    """Build `step(params, state, batch) -> (params, state, metrics)`.

    Args:
      loss_fn: `loss_fn(params, batch) -> scalar`, deterministic (dropout off), as in MeZO's eval-mode forwards.
      groups: the layer groups of the parameters.
      config: the hyperparameters; `active_fraction` < 1 gives LeZO.
      decay_mask: where weight decay applies (see `make_functions`).
      donate: donate the parameter buffers, so the three passes update them in place. The caller must not
        reuse the `params` it passed in.
      fused: compile the whole step as one program. By default the step dispatches five jitted programs
        (two perturbations, two forward passes, restore-and-update) without waiting on the host, because
        XLA keeps an extra copy of the parameters alive inside a fused step. Separate programs with donated
        buffers keep peak memory at one copy of the parameters plus one forward pass.
    """
    functions = make_functions(groups, config, decay_mask)
    epsilon = float(config.epsilon)

    def prepare(params, state):
        groups.check_matches(params)
        key_select, key_noise = step_keys(state)
        # Sparse-MeZO's mask comes from the start-of-step magnitudes and serves all three passes.
        mask_bits = sparse_mask_bits(params, state.thresholds) if state.thresholds else None
        return key_noise, functions.select(key_select), mask_bits

    def finish(params, state, key_noise, active, mask_bits, loss_plus, loss_minus):
        projected_grad = (loss_plus - loss_minus).astype(jnp.float32) / (2.0 * epsilon)
        finite = jnp.isfinite(projected_grad)
        learning_rate = _learning_rate(config, state.step)
        # A non-finite g restores the parameters without moving them, so one bad batch cannot poison them.
        params = functions.restore_and_update(params, key_noise, active, mask_bits,
                                              jnp.where(finite, projected_grad, 0.0),
                                              jnp.where(finite, learning_rate, 0.0))
        metrics = StepMetrics(loss_plus, loss_minus, projected_grad, learning_rate, finite)
        return params, state._replace(step=state.step + 1), metrics

    def step(params, state, batch, perturb=functions.perturb, forward=loss_fn, finish=finish):
        key_noise, active, mask_bits = prepare(params, state)
        params = perturb(params, key_noise, epsilon, active, mask_bits)
        loss_plus = forward(params, batch)
        params = perturb(params, key_noise, -2.0 * epsilon, active, mask_bits)
        loss_minus = forward(params, batch)
        return finish(params, state, key_noise, active, mask_bits, loss_plus, loss_minus)

    donated = (0,) if donate else ()
    if fused:
        return jax.jit(step, donate_argnums=donated)

    prepare = jax.jit(prepare)
    perturb = jax.jit(functions.perturb, donate_argnums=donated)
    forward = jax.jit(loss_fn)
    finish = jax.jit(finish, donate_argnums=donated)

    def dispatched_step(params, state, batch):
        return step(params, state, batch, perturb=perturb, forward=forward, finish=finish)

    return dispatched_step


def estimate_gradient(loss_fn: LossFn, params: Any, batch: Any, noise_key: jax.Array, groups: ParameterGroups,
                      config: ZOConfig, active: jax.Array | None = None) -> Any:
    """Return the SPSA gradient estimate g·z as a dense pytree (zeros on inactive groups), for analysis.

    The training step never builds this tree; it exists to test the estimator against true gradients.
    `active` is a bool[G] mask (None: every group).
    """
    functions = make_functions(groups, config)
    epsilon = float(config.epsilon)
    loss_plus = loss_fn(functions.perturb(params, noise_key, epsilon, active), batch)
    loss_minus = loss_fn(functions.perturb(params, noise_key, -epsilon, active), batch)
    projected_grad = (loss_plus - loss_minus) / (2.0 * epsilon)
    zeros = jax.tree.map(jnp.zeros_like, params)
    direction = functions.perturb(zeros, noise_key, 1.0, active)
    return jax.tree.map(lambda z: projected_grad * z, direction)


def adamw_step(loss_fn: LossFn, learning_rate: LearningRate, weight_decay: float = 0.0,
               decay_mask: Any = None) -> tuple[optax.GradientTransformation, Callable]:
    """Build the first-order AdamW baseline: (optimizer, jitted `step(params, opt_state, batch)`).

    The step returns (params, opt_state, loss). Weight decay follows `decay_mask` (default: not on biases
    and LayerNorm, as in the zeroth-order optimizers).
    """
    def mask_fn(params):
        return decay_mask if decay_mask is not None else groups_lib.weight_decay_mask(params)

    optimizer = optax.adamw(learning_rate, weight_decay=weight_decay, mask=mask_fn)

    def step(params, opt_state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return optimizer, jax.jit(step, donate_argnums=(0, 1))
