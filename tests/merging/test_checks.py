"""Error messages for parameter trees that do not match."""

import jax
import jax.numpy as jnp
import pytest

from jaxlab import merging

FC1 = "encoder/layers_0/mlp/fc1/kernel"


def _replace_fc1(tree, value):
    tree = jax.tree.map(lambda x: x, tree)
    tree["encoder"]["layers_0"]["mlp"]["fc1"]["kernel"] = value
    return tree


def test_missing_parameter_named(models):
    pretrained, finetuned = models
    broken = jax.tree.map(lambda x: x, finetuned[1])
    del broken["encoder"]["layers_0"]["mlp"]["fc1"]["kernel"]
    with pytest.raises(ValueError, match=f"'{FC1}' is in pretrained but missing from finetuned\\[1\\]"):
        merging.task_arithmetic(pretrained, [finetuned[0], broken])


def test_extra_parameter_named(models):
    pretrained, finetuned = models
    broken = jax.tree.map(lambda x: x, finetuned[2])
    broken["encoder"]["layers_0"]["mlp"]["fc2"] = {"kernel": jnp.zeros((3, 3))}
    with pytest.raises(ValueError, match="'encoder/layers_0/mlp/fc2/kernel' is in finetuned\\[2\\] but not in"):
        merging.ties_merging(pretrained, [finetuned[0], finetuned[1], broken])


def test_shape_mismatch_named(models):
    pretrained, finetuned = models
    broken = _replace_fc1(finetuned[0], jnp.zeros((3, 4)))
    with pytest.raises(ValueError, match=f"'{FC1}' has shape \\(4, 3\\).*but shape \\(3, 4\\)"):
        merging.weight_average([finetuned[1], broken])


def test_dtype_mismatch_named(models):
    pretrained, finetuned = models
    broken = _replace_fc1(finetuned[0], jnp.zeros((4, 3), jnp.bfloat16))
    with pytest.raises(ValueError, match=f"'{FC1}'.*dtype float32 in pretrained.*dtype bfloat16 in finetuned\\[0\\]"):
        merging.task_arithmetic(pretrained, [broken, finetuned[1]])


def test_nan_named(models):
    pretrained, finetuned = models
    kernel = finetuned[1]["encoder"]["layers_0"]["mlp"]["fc1"]["kernel"]
    broken = _replace_fc1(finetuned[1], kernel.at[0, 0].set(jnp.nan))
    with pytest.raises(ValueError, match=f"finetuned\\[1\\] has 1 NaN and 0 infinite values at '{FC1}'"):
        merging.dare_task_arithmetic(pretrained, [finetuned[0], broken], key=jax.random.key(0))


def test_infinity_named(models):
    pretrained, finetuned = models
    broken = dict(pretrained, head=pretrained["head"].at[1].set(jnp.inf))
    with pytest.raises(ValueError, match="pretrained has 0 NaN and 1 infinite values at 'head'"):
        merging.task_vectors(broken, finetuned)


def test_integer_leaf_rejected(models):
    pretrained, finetuned = models
    with pytest.raises(ValueError, match="'step' of finetuned\\[0\\] has dtype int32"):
        merging.weight_average([dict(model, step=jnp.zeros((), jnp.int32)) for model in finetuned])


def test_empty_model_list_rejected(models):
    pretrained, _ = models
    with pytest.raises(ValueError, match="non-empty list"):
        merging.task_arithmetic(pretrained, [])


def test_structure_checked_under_jit(models):
    pretrained, finetuned = models
    broken = _replace_fc1(finetuned[0], jnp.zeros((3, 4)))
    with pytest.raises(ValueError, match=FC1):
        jax.jit(merging.task_arithmetic)(pretrained, [broken, finetuned[1]])
