"""The adaptive reachability budget, checkpoint resume and a short learning run.

Tests marked slow compile the whole training update, which takes one to two minutes on 2 CPU cores.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.core import checkpoint
from jaxlab.vne import embedding, env
from jaxlab.vne.conal import cmdp, train

from tests.vne.conal.conftest import tiny_train_config

reset = jax.jit(env.reset, static_argnames="max_nodes")
cmdp_step = jax.jit(cmdp.step, static_argnames="tolerant")


def _start_states(tiny_setup):
    """Two episode starts of one 4- or 5-node request: on a starved substrate (bandwidth 1) and on a full one."""
    _, _, params, trace = tiny_setup
    requests = embedding.trace_requests(trace)
    index = int(np.flatnonzero(np.asarray(trace.num_nodes) >= 4)[0])
    request = jax.tree.map(lambda leaf: leaf[index], requests)
    request = request._replace(cpu=jnp.minimum(request.cpu, 2), link_bw=jnp.minimum(request.link_bw, 2))
    full = embedding.full_resources(params.substrate)
    starved = full._replace(bw=jnp.ones_like(full.bw))
    solvable = reset(jax.random.key(0), params, request=request, resources=full)
    unsolvable = reset(jax.random.key(0), params, request=request._replace(link_bw=request.link_bw + 30),
                       resources=starved)
    return params, jax.tree.map(lambda *leaves: jnp.stack(leaves), unsolvable, solvable)


def _greedy_loop(network, weights, params, state):
    """The greedy copy's run written as a Python loop; returns (feasible, largest positive step cost)."""
    episode = cmdp.start_episode(state)
    evaluate = jax.jit(lambda state: train.evaluate_state(network, weights, params.substrate, state, True)[1])
    largest = 0.0
    while not bool(episode.env.done):
        action = int(np.argmax(np.asarray(evaluate(episode.env))))
        episode, _, _, cost = cmdp_step(params, episode, jnp.int32(action), tolerant=True)
        largest = max(largest, float(cost))
    return bool(episode.env.success) and not bool(episode.violated), largest


def test_adaptive_budget_gates_multiplier_gradient(tiny_setup, tiny_training):
    config, _, state, _ = tiny_training
    params, starts = _start_states(tiny_setup)
    network = train.make_network(config)
    weights = state.params
    flags, budgets = jax.jit(lambda s: train.greedy_verdicts(network, weights, params, s, True))(starts)
    flags, budgets = np.asarray(flags), np.asarray(budgets)
    assert flags.tolist() == [0.0, 1.0]
    for index in range(2):
        feasible, largest = _greedy_loop(network, weights, params, jax.tree.map(lambda leaf: leaf[index], starts))
        assert float(feasible) == flags[index]
        np.testing.assert_allclose(budgets[index], largest, rtol=1e-6)
    assert budgets[0] > 0.0
    assert budgets[1] == 0.0

    def gradient(index):
        one = jax.tree.map(lambda leaf: leaf[index:index + 1], starts)
        return jax.grad(train.multiplier_loss, argnums=1)(network, weights, params.substrate, one,
                                                          jnp.asarray(flags[index:index + 1]),
                                                          jnp.asarray(budgets[index:index + 1]), True)

    unsolvable, solvable = gradient(0), gradient(1)
    assert all(float(jnp.abs(leaf).max()) == 0.0 for leaf in jax.tree.leaves(unsolvable))
    multiplier_grads = solvable["params"]["multiplier_head"]
    assert max(float(jnp.abs(leaf).max()) for leaf in jax.tree.leaves(multiplier_grads)) > 0.0
    others = {name: sub for name, sub in solvable["params"].items() if name != "multiplier_head"}
    assert all(float(jnp.abs(leaf).max()) == 0.0 for leaf in jax.tree.leaves(others))


def test_verdicts_follow_episode_starts():
    is_start = np.array([[0, 1], [1, 0], [0, 0], [1, 1]], bool)
    flags_at = np.arange(8, dtype=np.float32).reshape(4, 2) / 10
    budgets_at = flags_at + 1
    carry_flag, carry_budget = np.array([7.0, 8.0], np.float32), np.array([9.0, 10.0], np.float32)
    flags, budgets = train._assign_verdicts(jnp.asarray(is_start), jnp.asarray(flags_at), jnp.asarray(budgets_at),
                                            jnp.asarray(carry_flag), jnp.asarray(carry_budget))
    expected = np.zeros((4, 2), np.float32)
    for column in range(2):
        current = carry_flag[column]
        for t in range(4):
            if is_start[t, column]:
                current = flags_at[t, column]
            expected[t, column] = current
    np.testing.assert_array_equal(np.asarray(flags), expected)
    np.testing.assert_allclose(np.asarray(budgets)[0], [9.0, 1.1], rtol=1e-6)


@pytest.mark.slow
def test_train_step_uses_adaptive_budget(tiny_setup, tiny_training):
    _, _, params, _ = tiny_setup
    _, train_step, state, _ = tiny_training
    flags = []
    for _ in range(3):
        state, metrics = train_step(state, params)
        flags.append(float(metrics["feasible_flag"]))
        assert int(metrics["unchecked_starts"]) == 0
        assert np.isfinite(float(metrics["multiplier_loss"]))
    assert min(flags) < 1.0, "the greedy copy should fail some instances on this scarce substrate"


@pytest.mark.slow
def test_resume_from_checkpoint_is_identical(tiny_setup, tiny_training, tmp_path):
    _, _, params, _ = tiny_setup
    config, train_step, initial, key = tiny_training
    state = initial
    for _ in range(2):
        state, _ = train_step(state, params)
    with checkpoint.Checkpointer(tmp_path) as saver:
        saver.save(2, state)
    for _ in range(2):
        state, metrics = train_step(state, params)

    fresh = train.init_train_state(key, config, params)
    with checkpoint.Checkpointer(tmp_path) as loader:
        resumed = loader.restore(fresh)
    for _ in range(2):
        resumed, resumed_metrics = train_step(resumed, params)
    for path_leaf, other in zip(jax.tree_util.tree_leaves_with_path(state), jax.tree.leaves(resumed)):
        np.testing.assert_array_equal(np.asarray(path_leaf[1]), np.asarray(other), err_msg=str(path_leaf[0]))
    assert float(metrics["reward_loss"]) == float(resumed_metrics["reward_loss"])


@pytest.mark.slow
def test_short_training_improves_episode_reward(tiny_setup, tiny_training):
    _, _, params, _ = tiny_setup
    _, train_step, state, _ = tiny_training
    rewards = []
    for _ in range(60):
        state, metrics = train_step(state, params)
        rewards.append(float(metrics["episode_reward"]))
    early, late = np.mean(rewards[:15]), np.mean(rewards[-15:])
    assert late > early + 0.02, (early, late)
