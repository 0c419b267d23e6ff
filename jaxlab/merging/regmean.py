"""RegMean: merge linear layers by regression on their inputs (Jin et al., "Dataless Knowledge
Fusion by Merging Weights of Language Models", ICLR 2023).

For a linear layer y = x W with kernel W_i in model i and inputs X_i, the merge
W* = argmin_W sum_i ||X_i W - X_i W_i||^2 is W* = (sum_i G_i)^-1 sum_i G_i W_i with
Gram matrices G_i = X_i^T X_i. Off-diagonal entries of every G_i are multiplied
by alpha (alpha = 1 is plain regression; smaller alpha pulls W* toward the
average). Parameters that are not linear kernels (biases, norms, embeddings)
are averaged.

Conventions of fusion-bench 0.2.33 (`method/regmean/regmean.py`): G_i is the
mean X_i^T X_i / n_i over the n_i input rows (tokens of all examples), the
off-diagonals are scaled by `reduce_non_diagonal_ratio` (alpha; 0.95 in
`clip_regmean.yaml`) and all other parameters are averaged.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxlab.core import tree as tree_lib
from jaxlab.merging import checks

PyTree = Any
KERNEL_LAYOUTS = ("in_out", "out_in")


@functools.partial(jax.jit, static_argnames=("inputs_fn",))
def _gram_matrices(inputs_fn, params, batches) -> dict[str, jax.Array]:
    first_batch = jax.tree.map(lambda leaf: leaf[0], batches)
    shapes = jax.eval_shape(inputs_fn, params, first_batch)

    def accumulate(carry, batch):
        sums, counts = carry
        inputs = inputs_fn(params, batch)
        new_sums, new_counts = {}, {}
        for path, x in inputs.items():
            rows = x.reshape(-1, x.shape[-1])
            new_sums[path] = sums[path] + rows.T @ rows
            new_counts[path] = counts[path] + rows.shape[0]
        return (new_sums, new_counts), None

    sums = {path: jnp.zeros((s.shape[-1], s.shape[-1]), s.dtype) for path, s in shapes.items()}
    counts = {path: jnp.zeros((), jnp.int32) for path in shapes}
    (sums, counts), _ = jax.lax.scan(accumulate, (sums, counts), batches)
    return {path: sums[path] / counts[path].astype(sums[path].dtype) for path in sums}


def gram_matrices(
    inputs_fn: Callable[[PyTree, Any], Mapping[str, jax.Array]],
    params: PyTree,
    batches: PyTree,
) -> dict[str, jax.Array]:
    """Compute the mean input Gram matrix X^T X / n of every linear layer.

    Args:
        inputs_fn: inputs_fn(params, batch) -> {kernel path: inputs [..., d_in]},
            the inputs of each linear layer on one batch, keyed by the '/'-joined
            path of that layer's kernel in `params` (e.g. 'encoder/fc1/kernel').
            `flax_dense_inputs` builds one for flax modules.
        params: the model's parameter tree.
        batches: a pytree with a leading [num_batches, ...] axis; batches are
            scanned one at a time.

    Returns:
        {kernel path: [d_in, d_in] Gram matrix}, averaged over all input rows
        (every leading axis of the inputs counts as rows, e.g. batch and tokens).
    """
    checks.check_parameter_trees([params], ["params"])
    return _gram_matrices(inputs_fn, params, batches)


def flax_dense_inputs(module: Any, method: Any = None, **apply_kwargs: Any) -> Callable[[PyTree, Any], dict[str, jax.Array]]:
    """Build an `inputs_fn` for `gram_matrices` that records the inputs of every flax Dense layer.

    The function runs module.apply({'params': params}, batch) with a method
    interceptor, so each `nn.Dense` call reports its input under the path of its
    kernel in `params` (e.g. 'Dense_0/kernel'). A layer called several times
    contributes the inputs of every call.

    Args:
        module: a flax.linen module.
        method: the module method to apply (default `__call__`).
        **apply_kwargs: passed to `module.apply` (e.g. train=False).
    """
    import flax.linen as nn

    def inputs_fn(params: PyTree, batch: Any) -> dict[str, jax.Array]:
        captured: dict[str, list[jax.Array]] = {}

        def record_dense_inputs(next_fun, args, kwargs, context):
            if isinstance(context.module, nn.Dense) and context.method_name == "__call__":
                path = "/".join(context.module.path) + "/kernel"
                x = args[0] if args else kwargs["inputs"]
                captured.setdefault(path, []).append(x.reshape(-1, x.shape[-1]))
            return next_fun(*args, **kwargs)

        with nn.intercept_methods(record_dense_inputs):
            module.apply({"params": params}, batch, method=method, **apply_kwargs)
        return {path: jnp.concatenate(xs) for path, xs in captured.items()}

    return inputs_fn


def _scale_off_diagonal(gram: jax.Array, alpha: Any) -> jax.Array:
    diagonal = jnp.eye(gram.shape[0], dtype=bool)
    return jnp.where(diagonal, gram, alpha * gram)


@functools.partial(jax.jit, static_argnames=("linear_flags", "kernel_layout"))
def _regmean_merge(models, grams, alpha, linear_flags, kernel_layout) -> PyTree:
    paths_and_leaves, treedef = tree_lib.tree_flatten_with_paths(models[0])
    per_model_leaves = [jax.tree.leaves(model) for model in models]
    merged = []
    for index, ((path, _), is_linear) in enumerate(zip(paths_and_leaves, linear_flags)):
        leaves = [model_leaves[index] for model_leaves in per_model_leaves]
        if not is_linear:
            merged.append(sum(leaves[1:], leaves[0]) / len(leaves))
            continue
        shape = leaves[0].shape
        if kernel_layout == "in_out":
            kernels = [leaf.reshape(shape[0], -1) for leaf in leaves]
        else:
            kernels = [leaf.T for leaf in leaves]
        scaled = [_scale_off_diagonal(model_grams[path].astype(kernels[0].dtype), alpha) for model_grams in grams]
        gram_sum = sum(scaled[1:], scaled[0])
        weighted = sum(g @ w for g, w in zip(scaled, kernels))
        solution = jnp.linalg.solve(gram_sum, weighted)
        merged.append(solution.reshape(shape) if kernel_layout == "in_out" else solution.T)
    return jax.tree.unflatten(treedef, merged)


def regmean_merging(
    finetuned: Sequence[PyTree],
    grams: Sequence[Mapping[str, jax.Array]],
    *,
    alpha: Any = 0.95,
    linear: str | Sequence[str] | None = None,
    kernel_layout: str = "in_out",
) -> PyTree:
    """Merge by RegMean: W* = (sum_i G~_i)^-1 sum_i G~_i W_i per linear kernel, averages elsewhere.

    Args:
        finetuned: T parameter trees.
        grams: per model, {kernel path: [d_in, d_in] Gram matrix} (`gram_matrices`).
        alpha: off-diagonal scale of every Gram matrix, in [0, 1] (fusion-bench
            `reduce_non_diagonal_ratio`; 0.95 for CLIP, 0.6 for GPT-2).
        linear: regular expressions on leaf paths selecting the linear kernels.
            A selected leaf without a Gram matrix is an error. None selects
            exactly the leaves that have Gram matrices.
        kernel_layout: "in_out" for kernels [d_in, ...] as in flax (trailing
            axes are flattened, so DenseGeneral kernels work), "out_in" for
            [d_out, d_in] matrices as in torch.nn.Linear.
    """
    if kernel_layout not in KERNEL_LAYOUTS:
        raise ValueError(f"kernel_layout={kernel_layout!r} is invalid; use one of {KERNEL_LAYOUTS}.")
    if not isinstance(alpha, jax.core.Tracer) and not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha={alpha!r} is invalid; pass the off-diagonal scale, in [0, 1].")
    checks.check_models(None, finetuned)
    if len(grams) != len(finetuned):
        raise ValueError(f"Got {len(finetuned)} models but {len(grams)} Gram dicts; pass one per model.")

    items = tree_lib.tree_flatten_with_paths(finetuned[0])[0]
    leaf_shapes = {path: jnp.shape(leaf) for path, leaf in items}
    gram_paths = set(grams[0])
    for index, model_grams in enumerate(grams):
        if set(model_grams) != gram_paths:
            difference = sorted(set(model_grams) ^ gram_paths)
            raise ValueError(f"grams[{index}] and grams[0] cover different layers: {difference}. "
                             "Collect Gram matrices of the same layers for every model.")
    for path in sorted(gram_paths):
        if path not in leaf_shapes:
            raise ValueError(f"grams has a matrix for '{path}', which is not a parameter path of the models. "
                             f"Parameter paths look like '{items[0][0]}'.")

    if linear is None:
        linear_flags = tuple(path in gram_paths for path, _ in items)
    else:
        linear_flags = tuple(jax.tree.leaves(tree_lib.tree_path_mask(finetuned[0], linear)))
    for (path, _), is_linear in zip(items, linear_flags):
        if not is_linear:
            continue
        if path not in gram_paths:
            raise ValueError(f"Parameter '{path}' is selected as a linear kernel but has no Gram matrix. "
                             "Collect its inputs or narrow `linear`.")
        shape = leaf_shapes[path]
        if kernel_layout == "out_in" and len(shape) != 2:
            raise ValueError(f"Parameter '{path}' has shape {shape}; kernel_layout='out_in' needs a matrix.")
        if len(shape) < 2:
            raise ValueError(f"Parameter '{path}' has shape {shape}; a linear kernel has at least 2 axes.")
        d_in = shape[0] if kernel_layout == "in_out" else shape[1]
        for index, model_grams in enumerate(grams):
            gram = model_grams[path]
            if jnp.shape(gram) != (d_in, d_in):
                raise ValueError(f"grams[{index}]['{path}'] has shape {jnp.shape(gram)}; the kernel {shape} "
                                 f"({kernel_layout}) needs ({d_in}, {d_in}).")
            checks.check_finite(gram, f"grams[{index}]['{path}']")
    return _regmean_merge(list(finetuned), [dict(g) for g in grams], alpha, linear_flags, kernel_layout)
