"""Tests of the Flax Decision Transformer: shapes, causality, padding, the prompt, the loss, overfitting."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlab.offline_rl import decision_transformer as dt

OBS_DIM, ACT_DIM, K, P = 3, 2, 6, 3


def _config(**overrides):
    fields = dict(obs_dim=OBS_DIM, act_dim=ACT_DIM, hidden_size=16, num_layers=2, num_heads=2, context_length=K,
                  prompt_length=P, max_timestep=50, dropout=0.1)
    fields.update(overrides)
    return dt.DTConfig(**fields)


def _segment(key, batch, length, valid=None):
    keys = jax.random.split(key, 4)
    mask = jnp.ones((batch, length), bool) if valid is None else jnp.arange(length)[None, :] >= length - valid
    return dt.Segment(observations=jax.random.normal(keys[0], (batch, length, OBS_DIM)),
                      actions=jnp.tanh(jax.random.normal(keys[1], (batch, length, ACT_DIM))),
                      returns_to_go=jax.random.normal(keys[2], (batch, length)),
                      timesteps=jax.random.randint(keys[3], (batch, length), 0, 50),
                      mask=jnp.broadcast_to(mask, (batch, length)))


class _JittedModel:
    """The model with `apply` jitted, since op-by-op execution of a transformer is slow on CPU."""

    def __init__(self, config):
        self.module = dt.DecisionTransformer(config)
        self.apply = jax.jit(self.module.apply, static_argnames=("deterministic",))


@pytest.fixture(scope="module")
def model_and_params():
    config = _config()
    return _JittedModel(config), dt.init_params(config, jax.random.key(0))


def test_forward_shape_and_range(model_and_params):
    model, params = model_and_params
    actions = model.apply({"params": params}, _segment(jax.random.key(1), 4, K), _segment(jax.random.key(2), 4, P))
    assert actions.shape == (4, K, ACT_DIM)
    assert bool(jnp.all(jnp.abs(actions) <= 1.0))


def test_future_tokens_do_not_change_past(model_and_params):
    model, params = model_and_params
    segment = _segment(jax.random.key(3), 2, K)
    prompt = _segment(jax.random.key(4), 2, P)
    before = model.apply({"params": params}, segment, prompt)
    changed = segment._replace(observations=segment.observations.at[:, 3].add(5.0),
                               actions=segment.actions.at[:, 2].add(-1.0),
                               returns_to_go=segment.returns_to_go.at[:, 3].add(2.0))
    after = model.apply({"params": params}, changed, prompt)
    # Step 2's action token comes after its state token, so steps 0-2 must be unchanged.
    np.testing.assert_allclose(after[:, :3], before[:, :3], atol=1e-6)
    assert float(jnp.max(jnp.abs(after[:, 3] - before[:, 3]))) > 1e-4


def test_padding_does_not_affect_valid_steps(model_and_params):
    model, params = model_and_params
    segment = _segment(jax.random.key(5), 2, K, valid=4)
    prompt = _segment(jax.random.key(6), 2, P, valid=2)
    before = model.apply({"params": params}, segment, prompt)
    noise = _segment(jax.random.key(7), 2, K)
    pad = ~segment.mask
    changed = segment._replace(
        observations=jnp.where(pad[..., None], noise.observations, segment.observations),
        actions=jnp.where(pad[..., None], noise.actions, segment.actions),
        returns_to_go=jnp.where(pad, noise.returns_to_go, segment.returns_to_go),
        timesteps=jnp.where(pad, noise.timesteps, segment.timesteps))
    prompt_noise = _segment(jax.random.key(8), 2, P)
    changed_prompt = prompt._replace(observations=jnp.where(~prompt.mask[..., None], prompt_noise.observations,
                                                            prompt.observations))
    after = model.apply({"params": params}, changed, changed_prompt)
    np.testing.assert_allclose(after[:, 2:], before[:, 2:], atol=1e-6)


def test_prompt_changes_predictions(model_and_params):
    model, params = model_and_params
    segment = _segment(jax.random.key(9), 2, K)
    first = model.apply({"params": params}, segment, _segment(jax.random.key(10), 2, P))
    second = model.apply({"params": params}, segment, _segment(jax.random.key(11), 2, P))
    assert float(jnp.max(jnp.abs(first - second))) > 1e-4


def test_without_prompt_ignores_prompt():
    config = _config(use_prompt=False)
    params = dt.init_params(config, jax.random.key(0))
    assert "prompt_embed" not in params
    model = _JittedModel(config)
    segment = _segment(jax.random.key(12), 2, K)
    first = model.apply({"params": params}, segment, _segment(jax.random.key(13), 2, P))
    second = model.apply({"params": params}, segment, None)
    np.testing.assert_array_equal(first, second)


def test_missing_prompt_is_rejected(model_and_params):
    model, params = model_and_params
    with pytest.raises(ValueError, match="use_prompt=True"):
        model.module.apply({"params": params}, _segment(jax.random.key(14), 1, K), None)


def test_dropout_is_active_only_in_training(model_and_params):
    model, params = model_and_params
    segment, prompt = _segment(jax.random.key(15), 2, K), _segment(jax.random.key(16), 2, P)
    evaluation = model.apply({"params": params}, segment, prompt)
    training = model.apply({"params": params}, segment, prompt, deterministic=False,
                           rngs={"dropout": jax.random.key(17)})
    assert float(jnp.max(jnp.abs(training - evaluation))) > 1e-5


def test_loss_ignores_padded_steps():
    predicted = jnp.array([[[0.5, 0.5], [0.0, 1.0], [9.0, 9.0]]])
    target = jnp.array([[[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]])
    mask = jnp.array([[True, True, False]])
    # (0.25 + 0.25 + 0 + 1) / 4 entries.
    np.testing.assert_allclose(dt.action_loss(predicted, target, mask), 0.375, rtol=1e-6)


def test_loss_of_empty_mask_is_zero():
    zeros = jnp.zeros((1, 2, ACT_DIM))
    assert float(dt.action_loss(zeros + 1.0, zeros, jnp.zeros((1, 2), bool))) == 0.0


def test_config_rejects_bad_sizes():
    with pytest.raises(ValueError, match="num_heads"):
        _config(hidden_size=10, num_heads=3)
    with pytest.raises(ValueError, match="dropout"):
        _config(dropout=1.0)
    with pytest.raises(ValueError, match="activation"):
        _config(activation="swish")
    with pytest.raises(ValueError, match="context_length"):
        _config(context_length=0)


def test_overfits_one_batch():
    config = _config(dropout=0.0, num_layers=1)
    model = dt.DecisionTransformer(config)
    params = dt.init_params(config, jax.random.key(0))
    segment = _segment(jax.random.key(18), 4, K, valid=5)
    prompt = _segment(jax.random.key(19), 4, P)
    optimizer = optax.adam(1e-2)

    def loss_fn(p):
        return dt.action_loss(model.apply({"params": p}, segment, prompt), segment.actions, segment.mask)

    @jax.jit
    def train(params):
        def step(carry, _):
            params, opt_state = carry
            loss, grads = jax.value_and_grad(loss_fn)(params)
            updates, opt_state = optimizer.update(grads, opt_state)
            return (optax.apply_updates(params, updates), opt_state), loss
        (params, _), losses = jax.lax.scan(step, (params, optimizer.init(params)), None, length=300)
        return losses

    losses = train(params)
    assert float(losses[0]) > 0.1
    assert float(losses[-1]) < 0.01 * float(losses[0])
