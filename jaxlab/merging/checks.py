"""Input checks shared by the merging methods.

Every merge combines several parameter trees leaf by leaf, so a tree with a
missing key, a transposed kernel or a NaN would otherwise give a silently wrong
model. `check_parameter_trees` rejects such inputs with a `ValueError` that names
the first parameter path (in the leaf order of the reference tree) where the
trees differ, e.g. `encoder/layers_3/mlp/fc1/kernel`, and what differs there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.core import tree as tree_lib

PyTree = Any


def _is_traced(leaf: Any) -> bool:
    return isinstance(leaf, jax.core.Tracer)


@jax.jit
def _leaf_finite_flags(leaves: list[jax.Array]) -> list[jax.Array]:
    return [jnp.all(jnp.isfinite(leaf)) for leaf in leaves]


def check_finite(tree: PyTree, name: str) -> None:
    """Raise ValueError naming the first leaf of `tree` that holds a NaN or an infinity.

    Traced leaves (inside `jax.jit`) have no values yet and are skipped, so the
    check only runs on concrete arrays.
    """
    items, _ = tree_lib.tree_flatten_with_paths(tree)
    concrete = [(path, leaf) for path, leaf in items if not _is_traced(leaf)]
    if not concrete:
        return
    flags = _leaf_finite_flags([jnp.asarray(leaf) for _, leaf in concrete])
    for (path, leaf), finite in zip(concrete, flags):
        if bool(finite):
            continue
        values = np.asarray(leaf)
        num_nan = int(np.isnan(values).sum())
        num_inf = int(np.isinf(values).sum())
        raise ValueError(
            f"{name} has {num_nan} NaN and {num_inf} infinite values at '{path}'. "
            "Merging would spread them into the merged model; fix or drop that checkpoint."
        )


def _describe_leaf(leaf: Any) -> str:
    return f"shape {tuple(np.shape(leaf))} and dtype {jnp.result_type(leaf)}"


def check_parameter_trees(
    trees: Sequence[PyTree],
    names: Sequence[str],
    *,
    finite: bool = True,
) -> None:
    """Check that parameter trees have the same paths, shapes and float dtypes.

    Args:
        trees: the trees to compare; the first one is the reference.
        names: how each tree is called in error messages, e.g. 'pretrained',
            'finetuned[2]'.
        finite: also reject NaN and infinite values (concrete leaves only).

    Raises:
        ValueError: naming the first differing leaf path and the difference: a
            parameter missing from or extra in a tree, a shape or dtype mismatch,
            a non-floating-point leaf, or a NaN/infinite value.
    """
    if len(trees) != len(names):
        raise ValueError(f"Got {len(trees)} trees but {len(names)} names; pass one name per tree.")
    if not trees:
        raise ValueError("No parameter trees to check; pass at least one tree.")

    reference_items, _ = tree_lib.tree_flatten_with_paths(trees[0])
    if not reference_items:
        raise ValueError(f"{names[0]} has no array leaves; pass a tree of parameter arrays.")
    other_items = [dict(tree_lib.tree_flatten_with_paths(tree)[0]) for tree in trees[1:]]

    for path, reference_leaf in reference_items:
        dtype = jnp.result_type(reference_leaf)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise ValueError(
                f"Parameter '{path}' of {names[0]} has dtype {dtype}; merging needs "
                "floating-point leaves. Remove integer state (step counters, masks) from the tree."
            )
        for name, items in zip(names[1:], other_items):
            if path not in items:
                raise ValueError(
                    f"Parameter '{path}' is in {names[0]} but missing from {name}. "
                    "Merge checkpoints of the same architecture."
                )
            leaf = items[path]
            if np.shape(leaf) != np.shape(reference_leaf) or jnp.result_type(leaf) != dtype:
                raise ValueError(
                    f"Parameter '{path}' has {_describe_leaf(reference_leaf)} in {names[0]} but "
                    f"{_describe_leaf(leaf)} in {name}. Convert the checkpoints to the same "
                    "layout and dtype before merging."
                )

    reference_paths = {path for path, _ in reference_items}
    for name, items in zip(names[1:], other_items):
        for path in items:
            if path not in reference_paths:
                raise ValueError(
                    f"Parameter '{path}' is in {name} but not in {names[0]}. "
                    "Merge checkpoints of the same architecture."
                )

    # Same paths can still hide different containers (dict vs FrozenDict).
    treedef = jax.tree.structure(trees[0])
    for tree, name in zip(trees[1:], names[1:]):
        if jax.tree.structure(tree) != treedef:
            raise ValueError(
                f"{name} has the same parameter paths as {names[0]} but other container "
                f"types ({jax.tree.structure(tree)} vs {treedef}). Convert one to the other's types."
            )

    if finite:
        for tree, name in zip(trees, names):
            check_finite(tree, name)


def check_models(pretrained: PyTree | None, finetuned: Sequence[PyTree], *, finite: bool = True) -> None:
    """Check a pretrained tree (optional) and the fine-tuned trees against each other."""
    if isinstance(finetuned, dict) or not isinstance(finetuned, Sequence) or not finetuned:
        raise ValueError(
            f"finetuned must be a non-empty list of parameter trees, got {type(finetuned).__name__}. "
            "Pass one tree per fine-tuned model."
        )
    trees = list(finetuned)
    names = [f"finetuned[{i}]" for i in range(len(trees))]
    if pretrained is not None:
        trees = [pretrained, *trees]
        names = ["pretrained", *names]
    check_parameter_trees(trees, names, finite=finite)
