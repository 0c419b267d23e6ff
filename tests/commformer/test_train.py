"""The trainer: bi-level schedule, gate cost, baselines and a continuous-action run."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlab.commformer import train
from jaxlab.commformer.experiment import validate


def _changed(before, after) -> bool:
    return any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)))


@pytest.fixture(scope="module")
def schedule_setup():
    from tests.commformer.conftest import tiny_config

    config = tiny_config()
    config.gating.cost = 50.0  # Large, so that the cost dominates the gate-bias gradient below.
    validate(config)
    trainer = train.make_train(config)
    state = trainer.init(jax.random.key(0))
    options = train.FAST_COMPILE_OPTIONS
    collect = jax.jit(trainer.collect, compiler_options=options)
    _, _, _, batch, advantages, targets, _ = collect(state, jax.random.key(1))
    run_epoch = jax.jit(trainer.run_epoch, compiler_options=options)
    loss = jax.jit(jax.value_and_grad(trainer.loss, has_aux=True), compiler_options=options)
    return config, trainer, state, batch, advantages, targets, run_epoch, loss


def test_bilevel_schedule_updates_one_parameter_set(schedule_setup):
    config, _, state, batch, advantages, targets, run_epoch, _ = schedule_setup
    after_warmup = jnp.asarray(config.graph.warmup_updates, jnp.int32)
    for epoch in range(config.ppo.num_epochs):
        (params, weights_opt, alpha_opt), _ = run_epoch(
            state.params, state.weights_opt_state, state.alpha_opt_state, batch, advantages, targets,
            after_warmup, jnp.asarray(epoch), jax.random.key(2))
        alpha_epoch = (epoch + 1) % config.graph.alpha_period == 0
        assert _changed(state.params["alpha"], params["alpha"]) == alpha_epoch, epoch
        assert _changed(state.params["weights"], params["weights"]) == (not alpha_epoch), epoch
        assert _changed(state.alpha_opt_state, alpha_opt) == alpha_epoch, epoch
        assert _changed(state.weights_opt_state, weights_opt) == (not alpha_epoch), epoch


def test_warmup_epochs_update_weights_only(schedule_setup):
    config, _, state, batch, advantages, targets, run_epoch, _ = schedule_setup
    last_epoch = jnp.asarray(config.graph.alpha_period - 1)
    (params, _, _), _ = run_epoch(state.params, state.weights_opt_state, state.alpha_opt_state, batch, advantages,
                                  targets, jnp.asarray(0, jnp.int32), last_epoch, jax.random.key(2))
    chex.assert_trees_all_equal(params["alpha"], state.params["alpha"])
    assert _changed(state.params["weights"], params["weights"])


def test_gate_cost_enters_loss_and_lowers_gates(schedule_setup):
    config, _, state, batch, advantages, targets, _, loss = schedule_setup
    (value, diagnostics), grads = loss(state.params, batch, advantages, targets, jnp.asarray(5, jnp.int32),
                                       jax.random.key(3))
    expected = (diagnostics["policy_loss"] + config.ppo.value_coef * diagnostics["value_loss"]
                - config.ppo.entropy_coef * diagnostics["entropy"] + config.gating.cost * diagnostics["train_gate_rate"])
    np.testing.assert_allclose(value, expected, rtol=1e-5)
    assert 0.0 < diagnostics["train_gate_rate"] <= 1.0
    # Gradient descent must lower the gate logits, which all share the output bias.
    gate_bias_grad = grads["weights"]["params"]["gate"]["Dense_1"]["bias"]
    assert float(gate_bias_grad[0]) > 0.0
    assert float(jnp.abs(grads["alpha"]).sum()) > 0.0


def test_rollout_gates_are_recomputed_exactly(schedule_setup):
    _, _, state, batch, advantages, targets, _, loss = schedule_setup
    # Before any update, the training forward with the stored gate noise reproduces the rollout gates, so
    # the importance ratio is exactly 1 at the first minibatch of the warm-up (full, noise-free graph).
    (_, diagnostics), _ = loss(state.params, batch, advantages, targets, jnp.asarray(0, jnp.int32),
                               jax.random.key(3))
    expected_rate = np.sum(batch.gates * batch.active) / np.sum(batch.active)
    np.testing.assert_allclose(diagnostics["train_gate_rate"], expected_rate, rtol=1e-6)
    np.testing.assert_allclose(diagnostics["clip_fraction"], 0.0)


@pytest.mark.parametrize("kind, mode", [
    # Fixed graphs run the same network as the learned one, which the experiment test trains.
    pytest.param("commformer", "full", marks=pytest.mark.slow),
    pytest.param("commformer", "none", marks=pytest.mark.slow),
    ("mappo", "learned"),
])
def test_baselines_build_and_run(make_tiny_config, kind, mode):
    config = make_tiny_config()
    config.model.kind, config.graph.mode = kind, mode
    config.ppo.num_epochs, config.graph.alpha_period = 2, 2
    validate(config)
    trainer = train.make_train(config)
    state, metrics = trainer.train_chunk(trainer.init(jax.random.key(0)))
    assert int(state.update) == config.train.updates_per_chunk
    for name, values in metrics.items():
        assert np.all(np.isfinite(values)), name
    # Fixed graphs and MAPPO never train alpha.
    np.testing.assert_array_equal(metrics["alpha_trainable"], 0.0)
    chex.assert_trees_all_equal(state.params["alpha"], jnp.zeros_like(state.params["alpha"]))
    expected = {"full": 1.0 - np.eye(3), "none": np.zeros((3, 3))}[mode if kind == "commformer" else "none"]
    np.testing.assert_array_equal(trainer.graph(state.params, state.update), expected)


@pytest.mark.slow
def test_continuous_actions_train_chunk(make_tiny_config):
    config = make_tiny_config()
    config.env.continuous_actions = True
    config.ppo.num_epochs, config.graph.alpha_period = 2, 2
    validate(config)
    trainer = train.make_train(config)
    state, metrics = trainer.train_chunk(trainer.init(jax.random.key(0)))
    for name, values in metrics.items():
        assert np.all(np.isfinite(values)), name
    # A Normal with std <= 0.5 has entropy <= 0.5 log(2 pi e / 4) in each of the 5 dimensions.
    assert float(metrics["entropy"].max()) <= 5 * 0.5 * np.log(2 * np.pi * np.e / 4)
    result = trainer.evaluate(state.params, state.update, jax.random.key(1))
    assert np.isfinite(float(result["episode_return"]))


@pytest.mark.slow
def test_pure_train_matches_chunked_loop(make_tiny_config):
    config = make_tiny_config()
    trainer = train.make_train(config)
    key = jax.random.key(0)
    state, metrics = jax.jit(trainer.train, compiler_options=train.FAST_COMPILE_OPTIONS)(key)

    chunked_state, chunk_metrics = trainer.init(key), []
    for _ in range(trainer.num_chunks):
        chunked_state, metrics_of_chunk = trainer.train_chunk(chunked_state)
        chunk_metrics.append(metrics_of_chunk)
    assert int(state.update) == trainer.num_updates
    chex.assert_trees_all_close(state.params, chunked_state.params, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(metrics["episode_return"],
                               np.concatenate([m["episode_return"] for m in chunk_metrics]), rtol=1e-5)


def test_active_masks_dead_agent_gradient():
    from tests.commformer.conftest import tiny_config

    config = tiny_config("3m")
    config.gating.enabled = True
    validate(config)
    trainer = train.make_train(config)
    env = trainer.env
    state = trainer.init(jax.random.key(0))
    options = train.FAST_COMPILE_OPTIONS
    _, _, _, batch, advantages, targets, _ = jax.jit(trainer.collect, compiler_options=options)(
        state, jax.random.key(1))

    # Agent 0 is dead in every sample, so SMAX observes zeros for it. Its gate is closed, so its features
    # stay all-zero through every LayerNorm of its own rows.
    env_state = env.reset(jax.random.key(2))
    dead_state = env_state._replace(inner=env_state.inner.replace(state=env_state.inner.state.replace(
        unit_alive=env_state.inner.state.unit_alive.at[0].set(False))))
    np.testing.assert_array_equal(env.active(env_state), np.ones(env.num_agents))
    np.testing.assert_array_equal(env.active(dead_state), [0.0] + [1.0] * (env.num_agents - 1))
    dead = batch._replace(obs=batch.obs.at[:, 0].set(0.0), gate_noise=batch.gate_noise.at[:, 0].set(-20.0),
                          active=batch.active.at[:, 0].set(0.0))

    def loss(params, batch_of_samples):
        return trainer.loss(params, batch_of_samples, advantages, targets, jnp.asarray(5, jnp.int32),
                            jax.random.key(3))

    # One compiled call gives both the gradient and the diagnostics of each batch.
    loss_and_grad = jax.jit(jax.value_and_grad(loss, has_aux=True), compiler_options=options)
    (_, masked_diagnostics), masked_grad = loss_and_grad(state.params, dead)
    # All-ones active masks are the loss without masking.
    unmasked = dead._replace(active=jnp.ones_like(dead.active))
    (_, unmasked_diagnostics), unmasked_grad = loss_and_grad(state.params, unmasked)
    masked_norm = float(optax.tree.norm(masked_grad["weights"]))
    unmasked_norm = float(optax.tree.norm(unmasked_grad["weights"]))
    # Without the mask, the dead agent's value loss passes three LayerNorms of zero vectors, each scaling the
    # gradient by 1 / sqrt(1e-6).
    assert masked_norm < 1e3, masked_norm
    assert unmasked_norm > 1e6, unmasked_norm

    # Under the mask, the gate cost and its logged rate leave the dead agent's closed gate out. At the initial
    # parameters the loss recomputes the rollout's gates of the other agents.
    alive = batch.active[:, 1:]
    np.testing.assert_allclose(masked_diagnostics["train_gate_rate"],
                               np.sum(batch.gates[:, 1:] * alive) / np.sum(alive), rtol=1e-6)
    np.testing.assert_allclose(unmasked_diagnostics["train_gate_rate"], np.mean(batch.gates.at[:, 0].set(0.0)),
                               rtol=1e-6)
