"""Pytree arithmetic, norms, leaf paths and masks.

Every function works on any pytree that `jax.tree_util` can flatten (dicts,
lists, tuples, namedtuples, flax `FrozenDict` and `flax.struct` dataclasses)
and can be called inside `jax.jit`. Functions that combine several trees check
that they have the same structure and leaf shapes and raise a `ValueError`
naming the first leaf path that differs.

A leaf path is the '/'-joined list of dict keys, attribute names and sequence
indices from the root to the leaf, e.g. 'params/dense_0/kernel' or 'layers/3/w'.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any
KeyPath = tuple[Any, ...]


def _key_to_str(key: Any) -> str:
    if isinstance(key, jax.tree_util.DictKey):
        return str(key.key)
    if isinstance(key, jax.tree_util.GetAttrKey):
        return key.name
    if isinstance(key, jax.tree_util.SequenceKey):
        return str(key.idx)
    if isinstance(key, jax.tree_util.FlattenedIndexKey):
        return str(key.key)
    return str(key)


def path_to_str(path: KeyPath) -> str:
    """Join a `jax.tree_util` key path into a '/'-separated string."""
    return "/".join(_key_to_str(key) for key in path)


def tree_flatten_with_paths(
    tree: PyTree,
) -> tuple[list[tuple[str, Any]], jax.tree_util.PyTreeDef]:
    """Flatten `tree` into `[(path, leaf), ...]` in leaf order, plus its treedef."""
    leaves_with_keys, treedef = jax.tree_util.tree_flatten_with_path(tree)
    return [(path_to_str(path), leaf) for path, leaf in leaves_with_keys], treedef


def tree_paths(tree: PyTree) -> list[str]:
    """Return the '/'-joined path of every leaf, in leaf order."""
    return [path for path, _ in tree_flatten_with_paths(tree)[0]]


def _structure_mismatch(
    reference: PyTree, other: PyTree, names: tuple[str, str]
) -> ValueError:
    """Build an error that names the first path present in only one tree."""
    reference_paths = tree_paths(reference)
    other_paths = tree_paths(other)
    other_set = set(other_paths)
    reference_set = set(reference_paths)
    for path in reference_paths:
        if path not in other_set:
            return ValueError(
                f"Pytree structures differ: leaf '{path}' is in {names[0]} but "
                f"missing from {names[1]}. Pass trees with the same keys and nesting."
            )
    for path in other_paths:
        if path not in reference_set:
            return ValueError(
                f"Pytree structures differ: leaf '{path}' is in {names[1]} but "
                f"missing from {names[0]}. Pass trees with the same keys and nesting."
            )
    return ValueError(
        f"Pytree structures differ although the leaf paths agree (container "
        f"types differ, e.g. dict vs FrozenDict): {names[0]} is "
        f"{jax.tree.structure(reference)}, {names[1]} is "
        f"{jax.tree.structure(other)}. Convert one tree to the other's types."
    )


def _checked_leaves(
    trees: Sequence[PyTree],
    names: Sequence[str],
    allow_scalar: Sequence[bool] | None = None,
) -> tuple[list[str], list[list[Any]], jax.tree_util.PyTreeDef]:
    """Flatten trees that must share structure and leaf shapes.

    Args:
        trees: the trees; the first one is the reference.
        names: how each tree is called in error messages.
        allow_scalar: per tree, whether a shape-() leaf may stand for any shape
            (used for per-leaf boolean masks).

    Returns:
        The reference paths, one list of leaves per tree, and the treedef.
    """
    allow_scalar = allow_scalar or [False] * len(trees)
    reference_items, treedef = tree_flatten_with_paths(trees[0])
    paths = [path for path, _ in reference_items]
    all_leaves = [[leaf for _, leaf in reference_items]]
    for tree, name, scalar_ok in zip(trees[1:], names[1:], allow_scalar[1:]):
        leaves, other_treedef = jax.tree.flatten(tree)
        if other_treedef != treedef:
            raise _structure_mismatch(trees[0], tree, (names[0], name))
        for path, reference_leaf, leaf in zip(paths, all_leaves[0], leaves):
            shape = np.shape(leaf)
            if scalar_ok and shape == ():
                continue
            if shape != np.shape(reference_leaf):
                raise ValueError(
                    f"Leaf shapes differ at '{path}': {names[0]} has "
                    f"{np.shape(reference_leaf)}, {name} has {shape}. Pass leaves of "
                    "the same shape."
                )
        all_leaves.append(leaves)
    return paths, all_leaves, treedef


def _checked_map(
    fn: Callable[..., Any], *trees: PyTree, names: Sequence[str]
) -> PyTree:
    _, all_leaves, treedef = _checked_leaves(trees, names)
    return jax.tree.unflatten(treedef, [fn(*leaves) for leaves in zip(*all_leaves)])


def tree_add(a: PyTree, b: PyTree, *more: PyTree) -> PyTree:
    """Return the leafwise sum a + b (+ more...)."""
    trees = (a, b, *more)
    names = [f"tree {i}" for i in range(len(trees))]
    return _checked_map(lambda *xs: sum(xs[1:], xs[0]), *trees, names=names)


def tree_sub(a: PyTree, b: PyTree) -> PyTree:
    """Return the leafwise difference a - b."""
    return _checked_map(jnp.subtract, a, b, names=("a", "b"))


def tree_scale(tree: PyTree, scalar: Any) -> PyTree:
    """Multiply every leaf by `scalar` (standard JAX dtype promotion applies)."""
    return jax.tree.map(lambda x: scalar * x, tree)


def tree_axpy(a: Any, x: PyTree, y: PyTree) -> PyTree:
    """Return a * x + y leafwise, for a scalar `a` and same-shaped trees."""
    return _checked_map(lambda xi, yi: a * xi + yi, x, y, names=("x", "y"))


def tree_dot(a: PyTree, b: PyTree) -> jax.Array:
    """Return the inner product sum_leaves sum(a * b) as a scalar array.

    Complex leaves of `a` are conjugated, as in `jnp.vdot`.
    """
    _, (leaves_a, leaves_b), _ = _checked_leaves((a, b), ("a", "b"))
    products = [jnp.vdot(x, y) for x, y in zip(leaves_a, leaves_b)]
    return sum(products[1:], products[0]) if products else jnp.zeros(())


def tree_sum(tree: PyTree) -> jax.Array:
    """Return the sum of every element of every leaf as a scalar array."""
    sums = [jnp.sum(x) for x in jax.tree.leaves(tree)]
    return sum(sums[1:], sums[0]) if sums else jnp.zeros(())


def tree_norm(tree: PyTree, ord: int | float | str = 2) -> jax.Array:
    """Return the norm of all elements of `tree` taken as one flat vector.

    Args:
        tree: a pytree of numeric arrays.
        ord: 2 (Euclidean, default), 1 (sum of absolute values) or `jnp.inf` /
            'inf' (largest absolute value).

    Returns:
        A scalar array; 0 for a tree without leaves.
    """
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.zeros(())
    if ord == 2:
        squares = [jnp.sum(jnp.real(x * jnp.conj(x))) for x in leaves]
        return jnp.sqrt(sum(squares[1:], squares[0]))
    if ord == 1:
        sums = [jnp.sum(jnp.abs(x)) for x in leaves]
        return sum(sums[1:], sums[0])
    if ord in (np.inf, "inf"):
        # An empty leaf has no maximum, so it contributes 0 like in the other norms.
        maxima = [jnp.max(jnp.abs(x), initial=0) for x in leaves]
        return jnp.max(jnp.stack(maxima))
    raise ValueError(f"Invalid ord={ord!r}. Use 1, 2 or jnp.inf.")


def tree_zeros_like(tree: PyTree, dtype: Any = None) -> PyTree:
    """Return a tree of zeros shaped like `tree`, with its dtypes unless `dtype` is given."""
    return jax.tree.map(lambda x: jnp.zeros_like(x, dtype=dtype), tree)


def tree_cast(tree: PyTree, dtype: Any) -> PyTree:
    """Cast floating-point leaves to `dtype`.

    Integer, boolean and PRNG-key leaves (step counters, masks, keys) keep their
    dtype, so a whole train state can be cast to e.g. bfloat16 safely.
    """

    def cast(x: Any) -> Any:
        x = jnp.asarray(x)
        if jnp.issubdtype(x.dtype, jnp.floating):
            return x.astype(dtype)
        return x

    return jax.tree.map(cast, tree)


def tree_size(tree: PyTree) -> int:
    """Return the number of scalars in all leaves (a Python int, static under jit)."""
    return sum(int(np.size(x)) for x in jax.tree.leaves(tree))


def _compile_patterns(patterns: str | Sequence[str] | None) -> list[re.Pattern[str]]:
    if patterns is None:
        return []
    if isinstance(patterns, str):
        patterns = [patterns]
    return [re.compile(pattern) for pattern in patterns]


def tree_path_mask(
    tree: PyTree,
    include: str | Sequence[str],
    exclude: str | Sequence[str] | None = None,
) -> PyTree:
    """Select leaves by regular expressions on their paths.

    A leaf is selected when `re.search` finds any `include` pattern in its
    '/'-joined path and no `exclude` pattern.

    Args:
        tree: the pytree whose leaves are selected.
        include: one pattern or a sequence of patterns.
        exclude: patterns that deselect a leaf even when `include` matches.

    Returns:
        A pytree with the structure of `tree` and a Python bool per leaf.
    """
    include_res = _compile_patterns(include)
    exclude_res = _compile_patterns(exclude)
    items, treedef = tree_flatten_with_paths(tree)
    flags = [
        any(r.search(path) for r in include_res)
        and not any(r.search(path) for r in exclude_res)
        for path, _ in items
    ]
    return jax.tree.unflatten(treedef, flags)


def _static_flag(flag: Any, path: str, function: str) -> bool:
    if isinstance(flag, (bool, np.bool_)):
        return bool(flag)
    raise ValueError(
        f"{function} needs a Python bool per leaf, but the mask at '{path}' is "
        f"{type(flag).__name__}. Build the mask with tree_path_mask and keep it "
        "out of jit arguments (close over it or mark it static), or use "
        "tree_where for array masks."
    )


def tree_select(tree: PyTree, mask: PyTree) -> PyTree:
    """Keep the leaves whose mask is True and replace the others by None.

    JAX treats None as an empty subtree, so `jax.tree.leaves` and `jax.tree.map`
    on the result visit only the selected leaves.

    Args:
        tree: any pytree.
        mask: a pytree of the same structure with a Python bool per leaf, e.g.
            from `tree_path_mask`.
    """
    paths, (leaves, flags), treedef = _checked_leaves(
        (tree, mask), ("tree", "mask"), allow_scalar=(False, True)
    )
    selected = [
        leaf if _static_flag(flag, path, "tree_select") else None
        for path, leaf, flag in zip(paths, leaves, flags)
    ]
    return jax.tree.unflatten(treedef, selected)


def _check_bool_mask(flag: Any, path: str) -> None:
    dtype = jnp.result_type(flag)
    if dtype != np.bool_:
        raise ValueError(
            f"Mask at '{path}' has dtype {dtype}, but masks must be boolean. Compare "
            "the values to build one, e.g. `weights != 0`."
        )


def _where(mask: PyTree, a: PyTree, b: PyTree, names: tuple[str, str, str]) -> PyTree:
    paths, (leaves_a, leaves_b, flags), treedef = _checked_leaves(
        (a, b, mask), names, allow_scalar=(False, False, True)
    )
    out = []
    for path, x, y, flag in zip(paths, leaves_a, leaves_b, flags):
        _check_bool_mask(flag, path)
        if isinstance(flag, (bool, np.bool_)):
            out.append(x if flag else y)
        else:
            out.append(jnp.where(flag, x, y))
    return jax.tree.unflatten(treedef, out)


def tree_where(mask: PyTree, a: PyTree, b: PyTree) -> PyTree:
    """Take elements of `a` where `mask` is True and of `b` elsewhere.

    Args:
        mask: a pytree with the structure of `a`. A Python bool leaf chooses a
            whole leaf. A boolean array leaf of the leaf's shape, or of shape (),
            chooses per element and may be traced under jit.
        a: the tree chosen where the mask is True.
        b: the tree chosen elsewhere, same structure and shapes as `a`.
    """
    return _where(mask, a, b, ("a", "b", "mask"))


def tree_apply_mask(tree: PyTree, mask: PyTree) -> PyTree:
    """Zero the leaves, or the elements, that `mask` does not select.

    Args:
        tree: a pytree of numeric arrays.
        mask: a pytree with the structure of `tree`. A Python bool leaf keeps or
            zeros a whole leaf. A boolean array leaf of the leaf's shape, or of
            shape (), keeps or zeros each element, as a sparsity mask does.

    Returns:
        A tree with the structure, shapes and dtypes of `tree`.
    """
    return _where(mask, tree, tree_zeros_like(tree), ("tree", "zeros", "mask"))
