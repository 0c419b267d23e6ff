"""Tests for the denoiser networks in jaxlab.core.nn: shapes, jit, gradients and input checks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.core.nn import (CONV_KERNEL_PATTERN, MLPDenoiser, TemporalUnet, TransformerDenoiser,
                            conv_kernel_paths)
from jaxlab.core.nn.unet1d import batch_timesteps, condition_input, sinusoidal_embedding

BATCH, HORIZON, CHANNELS = 3, 8, 5

SMALL_MODELS = {
    "unet": lambda condition_dim: TemporalUnet(dim=8, dim_mults=(1, 2, 2),
                                               condition_dim=condition_dim),
    "mlp": lambda condition_dim: MLPDenoiser(hidden_dims=(32, 32), embedding_dim=8,
                                             condition_dim=condition_dim),
    "transformer": lambda condition_dim: TransformerDenoiser(width=16, num_heads=2, num_layers=2,
                                                             condition_dim=condition_dim),
}


def _inputs():
    keys = jax.random.split(jax.random.key(0), 2)
    x = jax.random.normal(keys[0], (BATCH, HORIZON, CHANNELS))
    t = jnp.array([0, 57, 199], jnp.int32)
    condition = jax.random.normal(keys[1], (BATCH, 2))
    return x, t, condition


def _random_params(model, x, t, condition):
    """Draw N(0, 0.1^2) parameters in the shapes `model.init` gives, without compiling init.

    Compiling a U-Net's init costs as much CPU time as compiling its forward pass, and these
    tests only need finite, nonzero weights.
    """
    shapes = jax.eval_shape(model.init, jax.random.key(0), x, t, condition)
    rng = np.random.default_rng(0)
    return jax.tree.map(lambda s: jnp.asarray(0.1 * rng.normal(size=s.shape), s.dtype), shapes)


@pytest.fixture(scope="module")
def conditional_models():
    """Each small model with a 2-feature condition: params and a jitted (loss, output), grads."""
    x, t, condition = _inputs()
    built = {}
    for name, make in SMALL_MODELS.items():
        model = make(2)

        def loss(params, t, condition, model=model):
            out = model.apply(params, x, t, condition, train=True)
            return jnp.mean(out**2), out

        built[name] = (_random_params(model, x, t, condition),
                       jax.jit(jax.value_and_grad(loss, has_aux=True)))
    return built


@pytest.mark.parametrize("name", sorted(SMALL_MODELS))
def test_output_shape_and_finite_gradient(conditional_models, name):
    params, loss_and_grad = conditional_models[name]
    x, t, condition = _inputs()
    (_, out), grads = loss_and_grad(params, t, condition)
    assert out.shape == x.shape
    assert np.all(np.isfinite(out))
    leaves = jax.tree.leaves(grads)
    assert all(np.all(np.isfinite(leaf)) for leaf in leaves)
    assert sum(float(jnp.sum(jnp.abs(leaf))) for leaf in leaves) > 0


@pytest.mark.parametrize("name", sorted(SMALL_MODELS))
def test_output_depends_on_time_and_condition(conditional_models, name):
    params, loss_and_grad = conditional_models[name]
    _, t, condition = _inputs()
    (_, base), _ = loss_and_grad(params, t, condition)
    (_, later), _ = loss_and_grad(params, t + 1, condition)
    (_, shifted), _ = loss_and_grad(params, t, condition + 1.0)
    assert not np.allclose(base, later)
    assert not np.allclose(base, shifted)


@pytest.mark.parametrize("name", sorted(SMALL_MODELS))
def test_unconditional_output_shape(name):
    model = SMALL_MODELS[name](0)
    x, t, _ = _inputs()
    params = jax.eval_shape(model.init, jax.random.key(0), x, t)
    assert jax.eval_shape(model.apply, params, x, t).shape == x.shape
    assert jax.eval_shape(model.apply, params, x, 5).shape == x.shape


def test_condition_input_and_timesteps():
    np.testing.assert_array_equal(condition_input(None, 3, 2), np.zeros((2, 3)))
    assert condition_input(None, 0, 2) is None
    assert condition_input(jnp.ones((2, 3, 2)), 6, 2).shape == (2, 6)
    with pytest.raises(ValueError, match=r"expected \[batch=2, ...\]"):
        condition_input(jnp.ones((3, 6)), 6, 2)
    np.testing.assert_array_equal(batch_timesteps(jnp.int32(4), 3), [4, 4, 4])


@pytest.mark.parametrize("name", sorted(SMALL_MODELS))
def test_input_checks(name):
    x, t, condition = _inputs()
    unconditional = SMALL_MODELS[name](0)
    params = jax.eval_shape(unconditional.init, jax.random.key(3), x, t)
    with pytest.raises(ValueError, match="condition_dim=0"):
        jax.eval_shape(unconditional.apply, params, x, t, condition)
    with pytest.raises(ValueError, match=r"\[batch, horizon, channels\]"):
        jax.eval_shape(unconditional.apply, params, x[0], t)
    with pytest.raises(ValueError, match=r"t has shape \(2,\)"):
        jax.eval_shape(unconditional.apply, params, x, t[:2])
    conditional = SMALL_MODELS[name](3)
    with pytest.raises(ValueError, match="condition_dim=3"):
        jax.eval_shape(conditional.init, jax.random.key(3), x, t, condition)


def test_unet_horizon_error():
    model = TemporalUnet(dim=8, dim_mults=(1, 2, 4))
    x = jnp.zeros((1, 10, 2))
    t = jnp.zeros((1,), jnp.int32)
    with pytest.raises(ValueError, match=r"horizon=10 is not divisible by 2\*\*\(len\(dim_mults\)-1\)=4"):
        jax.eval_shape(model.init, jax.random.key(0), x, t)
    with pytest.raises(ValueError, match="such as 8 or 12"):
        jax.eval_shape(model.init, jax.random.key(0), x, t)
    with pytest.raises(ValueError, match="num_groups=8"):
        jax.eval_shape(TemporalUnet(dim=12).init, jax.random.key(0), jnp.zeros((1, 8, 2)), t)


def test_unet_default_matches_decision_diffuser_size():
    # Decision Diffuser's TemporalUnet (horizon 100, 11 channels, dim 128, dim_mults (1, 4, 8)),
    # built in PyTorch from its temporal.py layout, has 58,748,555 parameters, and 59,732,491
    # with the scalar returns condition.
    for condition_dim, expected in [(0, 58_748_555), (1, 59_732_491)]:
        model = TemporalUnet(condition_dim=condition_dim)
        condition = jnp.zeros((1, 1)) if condition_dim else None
        shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 100, 11)),
                                jnp.zeros((1,), jnp.int32), condition)
        assert sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(shapes)) == expected


def test_unet_conv_kernel_paths():
    model = TemporalUnet(dim=8, dim_mults=(1, 2, 4))
    params = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8, 3)),
                            jnp.zeros((1,), jnp.int32))
    paths = conv_kernel_paths(params)
    # 2 conv blocks per residual block (2 per down level x 3, 2 mid, 2 per up level x 2 = 12
    # blocks), 5 residual convs where the channel count changes, 2 downsampling, 2 upsampling,
    # the final block and the output convolution.
    assert len(paths) == 12 * 2 + 5 + 2 + 2 + 2
    assert "params/down_0_downsample_conv/kernel" in paths
    assert "params/up_1_upsample_conv/kernel" in paths
    assert "params/final_conv/kernel" in paths
    assert all(path.endswith("conv/kernel") for path in paths)
    flat = {"/".join(str(k.key) for k in path): leaf
            for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}
    # Every 3-D leaf (kernel width, in, out) is a convolution kernel, and the list has them all.
    assert sorted(path for path, leaf in flat.items() if leaf.ndim == 3) == sorted(paths)
    assert CONV_KERNEL_PATTERN.endswith("$")


def test_unet_resamples_horizon():
    model = TemporalUnet(dim=8, dim_mults=(1, 2, 2, 2))
    x = jnp.zeros((2, 16, 3))
    t = jnp.zeros((2,), jnp.int32)
    params = jax.eval_shape(model.init, jax.random.key(0), x, t)
    _, state = jax.eval_shape(
        lambda p: model.apply(p, x, t, capture_intermediates=True, mutable=["intermediates"]), params)
    horizons = {name: value["__call__"][0].shape[1]
                for name, value in state["intermediates"].items() if name.endswith("sample_conv")}
    assert horizons == {"down_0_downsample_conv": 8, "down_1_downsample_conv": 4,
                        "down_2_downsample_conv": 2, "up_0_upsample_conv": 4,
                        "up_1_upsample_conv": 8, "up_2_upsample_conv": 16}


def test_dropout_only_in_training():
    model = MLPDenoiser(hidden_dims=(64, 64), embedding_dim=8, dropout_rate=0.5)
    x, t, _ = _inputs()
    params = model.init(jax.random.key(4), x, t)
    eval_a = model.apply(params, x, t)
    eval_b = model.apply(params, x, t, train=False)
    np.testing.assert_array_equal(eval_a, eval_b)
    train_a = model.apply(params, x, t, train=True, rngs={"dropout": jax.random.key(5)})
    train_b = model.apply(params, x, t, train=True, rngs={"dropout": jax.random.key(6)})
    assert not np.allclose(train_a, train_b)
    with pytest.raises(ValueError, match="dropout_rate=1.0"):
        MLPDenoiser(dropout_rate=1.0).init(jax.random.key(0), x, t)


def test_transformer_checks():
    x, t, _ = _inputs()
    model = TransformerDenoiser(width=16, num_heads=2, num_layers=1)
    params = jax.eval_shape(model.init, jax.random.key(7), x, t)
    with pytest.raises(ValueError, match=f"initialised for {HORIZON} horizon steps but received 4"):
        jax.eval_shape(model.apply, params, x[:, :4], t)
    with pytest.raises(ValueError, match="width=18 is not divisible by num_heads=4"):
        jax.eval_shape(TransformerDenoiser(width=18, num_heads=4).init, jax.random.key(0), x, t)


def test_sinusoidal_embedding_values():
    embedding = sinusoidal_embedding(jnp.array([0.0, 3.0]), 8)
    frequencies = 10000.0 ** (-np.arange(4) / 3)
    expected = np.concatenate([np.sin(3.0 * frequencies), np.cos(3.0 * frequencies)])
    np.testing.assert_allclose(embedding[1], expected, rtol=1e-5)
    np.testing.assert_allclose(embedding[0], [0, 0, 0, 0, 1, 1, 1, 1])
    with pytest.raises(ValueError, match="dim=5"):
        sinusoidal_embedding(jnp.zeros(1), 5)
