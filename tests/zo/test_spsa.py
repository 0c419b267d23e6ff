"""MeZO and LeZO: estimator statistics against true gradients, layer sparsity, and the update rule."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.zo import groups as groups_lib
from jaxlab.zo import spsa


def _mlp_params(key, widths=(6, 8, 8, 8, 3)):
    """A small MLP whose layers are named like transformer blocks, plus embeddings and a head."""
    keys = jax.random.split(key, len(widths) + 1)
    params = {"embed": {"embedding": 0.3 * jax.random.normal(keys[0], (5, widths[0]))}, "encoder": {}}
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-2], widths[1:-1])):
        params["encoder"][f"layers_{i}"] = {
            "dense": {"kernel": jax.random.normal(keys[i + 1], (fan_in, fan_out)) / np.sqrt(fan_in),
                      "bias": jnp.zeros((fan_out,))},
            "layer_norm": {"scale": jnp.ones((fan_out,))},
        }
    params["head"] = {"kernel": jax.random.normal(keys[-1], (widths[-2], widths[-1])) / np.sqrt(widths[-2])}
    return params


def _loss(params, batch):
    tokens, targets = batch
    hidden = params["embed"]["embedding"][tokens]
    for i in range(len(params["encoder"])):
        layer = params["encoder"][f"layers_{i}"]
        hidden = jnp.tanh(hidden @ layer["dense"]["kernel"] + layer["dense"]["bias"]) * layer["layer_norm"]["scale"]
    logits = hidden @ params["head"]["kernel"]
    return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(len(targets)), targets])


def _batch(seed=0, size=32):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.integers(0, 5, size)), jnp.asarray(rng.integers(0, 3, size))


def _flat(tree):
    return np.concatenate([np.ravel(leaf) for leaf in jax.tree.leaves(tree)])


def _cosine(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_groups_follow_block_index():
    params = _mlp_params(jax.random.key(0), widths=(6,) + (4,) * 12 + (3,))
    groups = groups_lib.group_parameters(params)
    assert groups.names[:3] == ("block_0", "block_1", "block_2")
    assert groups.names[-3:] == ("block_11", "embeddings", "head")
    assert groups.num_groups == 14
    assert sum(groups.group_sizes()) == sum(leaf.size for leaf in jax.tree.leaves(params))


def test_invalid_group_pattern_is_rejected():
    with pytest.raises(ValueError, match="invalid group rule pattern"):
        groups_lib.group_parameters({"w": jnp.ones(2)}, rules=(("(", "x"),))


def test_weight_decay_mask_skips_bias_and_norm():
    mask = groups_lib.weight_decay_mask(_mlp_params(jax.random.key(0)))
    layer = mask["encoder"]["layers_0"]
    assert layer["dense"]["kernel"] is True
    assert layer["dense"]["bias"] is False
    assert layer["layer_norm"]["scale"] is False


@pytest.mark.parametrize("kwargs,message", [
    ({"epsilon": 0.0}, "epsilon"),
    ({"learning_rate": float("nan")}, "learning_rate"),
    ({"active_fraction": 0.0}, "active_fraction"),
    ({"active_fraction": 1.5}, "active_fraction"),
    ({"sparse_keep_fraction": 0.0}, "sparse_keep_fraction"),
    ({"weight_decay": -1.0}, "weight_decay"),
])
def test_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        spsa.ZOConfig(**kwargs)


def _mean_estimate(params, batch, groups, config, num_samples, active=None, seed=0):
    def flat_estimate(key):
        estimate = spsa.estimate_gradient(_loss, params, batch, key, groups, config, active)
        return jnp.concatenate([jnp.ravel(leaf) for leaf in jax.tree.leaves(estimate)])

    keys = jax.random.split(jax.random.key(seed), num_samples)
    return np.asarray(jax.jit(jax.vmap(flat_estimate))(keys)).mean(axis=0)


def test_mezo_estimate_approaches_true_gradient():
    params, batch = _mlp_params(jax.random.key(1)), _batch()
    groups = groups_lib.group_parameters(params)
    config = spsa.ZOConfig(epsilon=1e-3)
    true_grad = _flat(jax.grad(_loss)(params, batch))

    cosines = [_cosine(_mean_estimate(params, batch, groups, config, n), true_grad) for n in (16, 256, 2048)]
    assert cosines[0] < cosines[1] < cosines[2], cosines
    assert cosines[2] > 0.9, cosines


def test_lezo_estimate_is_unbiased_on_active_groups():
    params, batch = _mlp_params(jax.random.key(2)), _batch(1)
    groups = groups_lib.group_parameters(params)
    config = spsa.ZOConfig(epsilon=1e-3, active_fraction=0.4)
    active = np.zeros(groups.num_groups, bool)
    active[[groups.names.index("block_1"), groups.names.index("head")]] = True
    leaf_active = np.concatenate([np.full(size, active[g]) for g, size in zip(groups.leaf_group, groups.leaf_sizes)])

    mean = _mean_estimate(params, batch, groups, config, 8192, jnp.asarray(active), seed=3)
    true_grad = _flat(jax.grad(_loss)(params, batch))
    assert np.all(mean[~leaf_active] == 0.0)
    assert _cosine(mean[leaf_active], true_grad[leaf_active]) > 0.95
    # Unbiased, not rescaled: the mean matches the gradient's norm on the active groups.
    ratio = np.linalg.norm(mean[leaf_active]) / np.linalg.norm(true_grad[leaf_active])
    assert 0.9 < ratio < 1.15, ratio


def test_group_noise_does_not_depend_on_other_groups():
    params = _mlp_params(jax.random.key(3))
    groups = groups_lib.group_parameters(params)
    functions = spsa.make_functions(groups, spsa.ZOConfig(active_fraction=0.5))
    zeros = jax.tree.map(jnp.zeros_like, params)
    block_1 = groups.names.index("block_1")
    first, second = np.zeros(groups.num_groups, bool), np.zeros(groups.num_groups, bool)
    first[[block_1, 0]] = True
    second[[block_1, groups.num_groups - 1]] = True
    key = jax.random.key(4)
    z_first = functions.perturb(zeros, key, 1.0, jnp.asarray(first))
    z_second = functions.perturb(zeros, key, 1.0, jnp.asarray(second))
    np.testing.assert_array_equal(z_first["encoder"]["layers_1"]["dense"]["kernel"],
                                  z_second["encoder"]["layers_1"]["dense"]["kernel"])


def test_step_matches_update_rule():
    params, batch = _mlp_params(jax.random.key(5)), _batch(2)
    groups = groups_lib.group_parameters(params)
    config = spsa.ZOConfig(epsilon=1e-3, learning_rate=0.05, weight_decay=0.1)
    state = spsa.init(params, jax.random.key(6), config)

    _, key_noise = spsa.step_keys(state)
    functions = spsa.make_functions(groups, config)
    z = functions.perturb(jax.tree.map(jnp.zeros_like, params), key_noise, 1.0, None)
    loss_plus = _loss(jax.tree.map(lambda p, d: p + 1e-3 * d, params, z), batch)
    loss_minus = _loss(jax.tree.map(lambda p, d: p - 1e-3 * d, params, z), batch)
    grad = (loss_plus - loss_minus) / 2e-3
    decay = groups_lib.weight_decay_mask(params)
    expected = jax.tree.map(lambda p, d, m: p - 0.05 * (grad * d + (0.1 * p if m else 0.0)), params, z, decay)

    step = spsa.make_step(_loss, groups, config, donate=False)
    new_params, new_state, metrics = step(params, state, batch)
    assert int(new_state.step) == 1
    assert bool(metrics.finite)
    np.testing.assert_allclose(float(metrics.projected_grad), float(grad), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(_flat(new_params), _flat(expected), rtol=1e-4, atol=1e-5)


def test_lezo_step_leaves_inactive_groups_untouched():
    params, batch = _mlp_params(jax.random.key(7)), _batch(3)
    groups = groups_lib.group_parameters(params)
    config = spsa.ZOConfig(epsilon=1e-2, learning_rate=0.1, active_fraction=0.4)
    state = spsa.init(params, jax.random.key(8), config)
    key_select, _ = spsa.step_keys(state)
    active = np.asarray(spsa.make_functions(groups, config).select(key_select))
    assert active.sum() == config.num_active(groups.num_groups) == 2

    new_params, _, _ = spsa.make_step(_loss, groups, config, donate=False)(params, state, batch)
    for group, (old, new) in zip(groups.leaf_group, zip(jax.tree.leaves(params), jax.tree.leaves(new_params))):
        if active[group]:
            assert not np.array_equal(old, new)
        else:
            np.testing.assert_array_equal(old, new)


def test_nonfinite_loss_keeps_parameters():
    params, batch = _mlp_params(jax.random.key(9)), _batch(4)
    groups = groups_lib.group_parameters(params)
    config = spsa.ZOConfig(learning_rate=0.1)

    def nan_loss(p, b):
        return _loss(p, b) * jnp.nan

    new_params, _, metrics = spsa.make_step(nan_loss, groups, config, donate=False)(
        params, spsa.init(params, jax.random.key(0), config), batch)
    assert not bool(metrics.finite)
    np.testing.assert_allclose(_flat(new_params), _flat(params), atol=1e-6)


def test_sparse_mezo_moves_only_small_entries():
    params, batch = _mlp_params(jax.random.key(10)), _batch(5)
    groups = groups_lib.group_parameters(params)
    config = spsa.ZOConfig(epsilon=1e-2, learning_rate=0.1, sparse_keep_fraction=0.5)
    state = spsa.init(params, jax.random.key(11), config)
    new_params, _, _ = spsa.make_step(_loss, groups, config, donate=False)(params, state, batch)
    for old, new, threshold in zip(jax.tree.leaves(params), jax.tree.leaves(new_params), state.thresholds):
        large = np.abs(np.asarray(old)) > float(threshold)
        np.testing.assert_array_equal(np.asarray(new)[large], np.asarray(old)[large])


@pytest.mark.parametrize("active_fraction", [1.0, 0.25])
def test_training_reduces_loss(active_fraction):
    params, batch = _mlp_params(jax.random.key(12)), _batch(6, size=64)
    groups = groups_lib.group_parameters(params)
    config = spsa.ZOConfig(epsilon=1e-3, learning_rate=0.05, active_fraction=active_fraction)
    state = spsa.init(params, jax.random.key(13), config)
    step = spsa.make_step(_loss, groups, config)
    initial = float(_loss(params, batch))
    for _ in range(400):
        params, state, metrics = step(params, state, batch)
    assert bool(metrics.finite)
    assert float(_loss(params, batch)) < initial - 0.05


def test_adamw_baseline_reduces_loss():
    params, batch = _mlp_params(jax.random.key(14)), _batch(7)
    optimizer, step = spsa.adamw_step(_loss, 3e-2, weight_decay=0.01)
    opt_state = optimizer.init(params)
    initial = float(_loss(params, batch))
    for _ in range(50):
        params, opt_state, _ = step(params, opt_state, batch)
    # Random labels over five token types: the loss floor is the conditional entropy, about 0.94 here.
    assert float(_loss(params, batch)) < initial - 0.15


def test_fused_step_equals_dispatched_step():
    params, batch = _mlp_params(jax.random.key(15)), _batch(8)
    groups = groups_lib.group_parameters(params)
    config = spsa.ZOConfig(epsilon=1e-3, learning_rate=0.05, active_fraction=0.4, weight_decay=0.01)
    state = spsa.init(params, jax.random.key(16), config)
    dispatched = spsa.make_step(_loss, groups, config, donate=False)(params, state, batch)
    fused = spsa.make_step(_loss, groups, config, donate=False, fused=True)(params, state, batch)
    np.testing.assert_allclose(_flat(dispatched[0]), _flat(fused[0]), rtol=1e-6, atol=1e-7)
    assert float(dispatched[2].loss_plus) == pytest.approx(float(fused[2].loss_plus), rel=1e-6)


def test_perturbation_memory_stays_small():
    # Noise is drawn chunk by chunk inside a loop over the donated buffer, so a pass over a 4M-entry leaf
    # needs scratch memory for a few chunks, independent of the leaf's size.
    params = {"embed": {"embedding": jnp.zeros((4096, 1024))}, "head": {"kernel": jnp.zeros((1024, 4))}}
    groups = groups_lib.group_parameters(params)
    functions = spsa.make_functions(groups, spsa.ZOConfig())
    compiled = jax.jit(functions.perturb, donate_argnums=0).lower(params, jax.random.key(0), 1e-3, None).compile()
    analysis = compiled.memory_analysis()
    param_bytes = 4 * (4096 * 1024 + 1024 * 4)
    assert analysis.alias_size_in_bytes >= param_bytes - 64  # Updated in place.
    assert analysis.temp_size_in_bytes < 8 * 4 * spsa.NOISE_CHUNK
