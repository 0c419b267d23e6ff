"""Tests for jaxlab.core.tree against NumPy computed on the flattened leaves."""

from __future__ import annotations

import collections

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct
from flax.core import FrozenDict

from jaxlab.core import tree as tree_lib


@struct.dataclass
class Layer:
    w: jax.Array
    b: jax.Array


Pair = collections.namedtuple("Pair", ["first", "second"])


def _make_tree(seed: int) -> dict:
    """Build a tiny tree with every container kind the library must handle."""
    rng = np.random.default_rng(seed)

    def normal(*shape: int) -> jax.Array:
        return jnp.asarray(rng.normal(size=shape), dtype=jnp.float32)

    return {
        "encoder": FrozenDict({"dense": {"kernel": normal(3, 2), "bias": normal(2)}}),
        "layer": Layer(w=normal(2, 2), b=normal(2)),
        "blocks": [normal(4), Pair(first=normal(1, 3), second=normal())],
    }


def _flat(tree) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(x, dtype=np.float64)) for x in jax.tree.leaves(tree)])


EXPECTED_PATHS = [
    "blocks/0",
    "blocks/1/first",
    "blocks/1/second",
    "encoder/dense/bias",
    "encoder/dense/kernel",
    "layer/w",
    "layer/b",
]


def test_paths_cover_all_containers():
    assert tree_lib.tree_paths(_make_tree(0)) == EXPECTED_PATHS


def test_flatten_with_paths_pairs_leaves():
    tree = _make_tree(0)
    items, treedef = tree_lib.tree_flatten_with_paths(tree)
    assert [path for path, _ in items] == EXPECTED_PATHS
    chex.assert_trees_all_equal(jax.tree.unflatten(treedef, [leaf for _, leaf in items]), tree)
    chex.assert_trees_all_equal(items[5][1], tree["layer"].w)


def test_paths_of_integer_dict_keys():
    assert tree_lib.tree_paths({0: {"x": 1}, 1: [2, 3]}) == ["0/x", "1/0", "1/1"]


def test_arithmetic_matches_numpy_under_jit():
    a, b, c = _make_tree(0), _make_tree(1), _make_tree(2)
    fa, fb, fc = _flat(a), _flat(b), _flat(c)

    @jax.jit
    def compute(a, b, c):
        return {
            "add": tree_lib.tree_add(a, b),
            "add3": tree_lib.tree_add(a, b, c),
            "sub": tree_lib.tree_sub(a, b),
            "scale": tree_lib.tree_scale(a, -2.5),
            "axpy": tree_lib.tree_axpy(0.5, a, b),
            "dot": tree_lib.tree_dot(a, b),
            "sum": tree_lib.tree_sum(a),
        }

    out = compute(a, b, c)
    np.testing.assert_allclose(_flat(out["add"]), fa + fb, rtol=1e-6)
    np.testing.assert_allclose(_flat(out["add3"]), fa + fb + fc, rtol=1e-6)
    np.testing.assert_allclose(_flat(out["sub"]), fa - fb, rtol=1e-6)
    np.testing.assert_allclose(_flat(out["scale"]), -2.5 * fa, rtol=1e-6)
    np.testing.assert_allclose(_flat(out["axpy"]), 0.5 * fa + fb, rtol=1e-6)
    np.testing.assert_allclose(out["dot"], fa @ fb, rtol=1e-5)
    np.testing.assert_allclose(out["sum"], fa.sum(), rtol=1e-5)
    chex.assert_trees_all_equal_structs(out["add"], a)
    assert isinstance(out["add"]["layer"], Layer)
    assert isinstance(out["add"]["encoder"], FrozenDict)


@pytest.mark.parametrize("ord", [1, 2, np.inf, "inf"])
def test_norm_matches_numpy(ord):
    tree = _make_tree(3)
    numpy_ord = np.inf if ord == "inf" else ord
    expected = np.linalg.norm(_flat(tree), ord=numpy_ord)
    actual = jax.jit(lambda t: tree_lib.tree_norm(t, ord=ord))(tree)
    np.testing.assert_allclose(actual, expected, rtol=1e-5)


def test_norm_of_complex_leaves():
    tree = {"z": jnp.array([3 + 4j, 0 + 0j]), "r": jnp.array([12.0])}
    np.testing.assert_allclose(tree_lib.tree_norm(tree), 13.0, rtol=1e-6)


def test_reductions_of_empty_tree():
    assert float(tree_lib.tree_norm({})) == 0.0
    assert float(tree_lib.tree_norm({}, ord=np.inf)) == 0.0
    assert float(tree_lib.tree_sum([])) == 0.0
    assert float(tree_lib.tree_dot({}, {})) == 0.0


def test_norm_rejects_unknown_ord():
    with pytest.raises(ValueError, match="ord=3"):
        tree_lib.tree_norm(_make_tree(0), ord=3)


def test_zeros_like_size_and_cast():
    tree = {"w": jnp.ones((2, 3), jnp.float32), "step": jnp.array(7, jnp.int32), "flag": True}
    zeros = tree_lib.tree_zeros_like(tree)
    chex.assert_trees_all_equal(zeros["w"], jnp.zeros((2, 3), jnp.float32))
    assert zeros["step"].dtype == jnp.int32
    assert tree_lib.tree_zeros_like(tree, dtype=jnp.bfloat16)["w"].dtype == jnp.bfloat16

    assert tree_lib.tree_size(tree) == 8
    assert tree_lib.tree_size(_make_tree(0)) == 6 + 2 + 4 + 2 + 4 + 3 + 1

    cast = jax.jit(lambda t: tree_lib.tree_cast(t, jnp.bfloat16))(tree)
    assert cast["w"].dtype == jnp.bfloat16
    assert cast["step"].dtype == jnp.int32
    assert cast["flag"].dtype == jnp.bool_


def test_structure_mismatch_names_path():
    a = {"x": jnp.ones(2), "y": {"z": jnp.ones(3)}}
    b = {"x": jnp.ones(2), "y": {"q": jnp.ones(3)}}
    with pytest.raises(ValueError, match="'y/z' is in a but missing from b"):
        tree_lib.tree_sub(a, b)
    with pytest.raises(ValueError, match="'y/q' is in tree 1 but missing from tree 0"):
        tree_lib.tree_add({"x": jnp.ones(2)}, b)


def test_container_type_mismatch_is_reported():
    with pytest.raises(ValueError, match="container types differ"):
        tree_lib.tree_dot({"x": jnp.ones(2)}, FrozenDict({"x": jnp.ones(2)}))


def test_shape_mismatch_names_path_and_shapes():
    a = {"p": [jnp.ones((2, 3)), jnp.ones(4)]}
    b = {"p": [jnp.ones((2, 3)), jnp.ones(5)]}
    with pytest.raises(ValueError, match=r"'p/1': x has \(4,\), y has \(5,\)"):
        jax.jit(lambda a, b: tree_lib.tree_axpy(2.0, a, b))(a, b)


def test_path_mask_include_and_exclude():
    tree = _make_tree(0)
    mask = tree_lib.tree_path_mask(tree, include=[r"^encoder/", r"/w$"], exclude="bias")
    items, _ = tree_lib.tree_flatten_with_paths(mask)
    selected = [path for path, flag in items if flag]
    assert selected == ["encoder/dense/kernel", "layer/w"]
    assert all(isinstance(flag, bool) for _, flag in items)
    assert isinstance(mask["layer"], Layer)

    single = tree_lib.tree_path_mask(tree, include="second")
    assert [p for p, f in tree_lib.tree_flatten_with_paths(single)[0] if f] == ["blocks/1/second"]


def test_select_keeps_only_masked_leaves():
    tree = _make_tree(0)
    mask = tree_lib.tree_path_mask(tree, include="kernel|/b$")

    @jax.jit
    def norm_of_selected(t):
        return tree_lib.tree_norm(tree_lib.tree_select(t, mask))

    selected = tree_lib.tree_select(tree, mask)
    assert tree_lib.tree_paths(selected) == ["encoder/dense/kernel", "layer/b"]
    expected = np.linalg.norm(np.concatenate([np.ravel(tree["encoder"]["dense"]["kernel"]), tree["layer"].b]))
    np.testing.assert_allclose(norm_of_selected(tree), expected, rtol=1e-6)


def test_select_rejects_traced_mask():
    tree = {"a": jnp.ones(2)}
    with pytest.raises(ValueError, match="Python bool per leaf"):
        jax.jit(tree_lib.tree_select)(tree, {"a": True})


def test_where_per_leaf_and_per_element():
    a = {"u": jnp.arange(4.0), "v": jnp.full((2,), 5.0)}
    b = {"u": -jnp.arange(4.0), "v": jnp.zeros(2)}
    element_mask = {"u": jnp.array([True, False, True, False]), "v": False}

    out = jax.jit(tree_lib.tree_where)(element_mask, a, b)
    np.testing.assert_array_equal(out["u"], [0.0, -1.0, 2.0, -3.0])
    np.testing.assert_array_equal(out["v"], [0.0, 0.0])

    out = tree_lib.tree_where({"u": True, "v": jnp.array(True)}, a, b)
    chex.assert_trees_all_equal(out, a)


def test_apply_mask_per_leaf_and_per_element():
    tree = _make_tree(4)
    leaf_mask = tree_lib.tree_path_mask(tree, include="^layer/")
    masked = jax.jit(lambda t: tree_lib.tree_apply_mask(t, leaf_mask))(tree)
    chex.assert_trees_all_equal(masked["layer"], tree["layer"])
    chex.assert_trees_all_equal(masked["blocks"], tree_lib.tree_zeros_like(tree["blocks"]))
    chex.assert_trees_all_equal_dtypes(masked, tree)

    sparsity = jax.tree.map(lambda x: jnp.abs(x) > 0.5, tree)
    sparse = jax.jit(tree_lib.tree_apply_mask)(tree, sparsity)
    np.testing.assert_array_equal(_flat(sparse), np.where(np.abs(_flat(tree)) > 0.5, _flat(tree), 0.0))


def test_apply_mask_rejects_bad_masks():
    tree = {"w": jnp.ones((2, 2))}
    with pytest.raises(ValueError, match=r"'w': tree has \(2, 2\), mask has \(2,\)"):
        tree_lib.tree_apply_mask(tree, {"w": jnp.array([True, False])})
    with pytest.raises(ValueError, match="'w' has dtype float32, but masks must be boolean"):
        tree_lib.tree_apply_mask(tree, {"w": jnp.ones((2, 2))})
    with pytest.raises(ValueError, match="'v' is in tree but missing from mask"):
        tree_lib.tree_apply_mask({"w": jnp.ones(1), "v": jnp.ones(1)}, {"w": True})
