"""Compare jaxlab.merging with fusion-bench 0.2.33: agreement of every merge, and merging time.

Parity (`--mode=parity`): a small float64 torch classifier (two hidden Linear
layers, a LayerNorm and a Linear head) gives a pretrained state dict and
`--parity_experts` fine-tuned ones (pretrained + Gaussian noise). fusion-bench's
own functions and algorithm classes merge them, jaxlab merges the same weights
converted to nested numpy trees with 64-bit JAX, and the script reports the
maximum absolute difference per method:
  - WA: `simple_average`; TA: `TaskArithmeticAlgorithm` (lambda 0.3);
  - Ties: `TiesMergingAlgorithm` (lambda 0.3, threshold 20, merge sum/mean/max);
  - DARE: `DareTaskArithmetic` and `DareTiesMerging` (p 0.5, rescale). The
    drop masks are fixed by seeding torch and replaying fusion-bench's
    `torch.rand_like` draws in its order, then passed to jaxlab as masks;
  - Fisher: `fisher_merging` with one example per batch (fusion-bench squares
    the gradient of a batch sum, so only batch size 1 is a per-example
    Fisher), against `diagonal_fisher` with `fusion_bench_fisher_objective`;
  - RegMean: `regmean_merging` (alpha 0.95) with forward hooks on the Linear
    inputs, against `gram_matrices` on the same inputs.

Timing (`--mode=timing`): 8 experts (3 for Ties, see `--ties_experts`) plus a
pretrained model with the parameter shapes of the CLIP ViT-B/32 vision tower
(87.5M float32 parameters each, random weights). Each (library, method) pair
runs in its own subprocess, so peak memory stays one method's and the numbers
do not disturb each other. A job whose estimated memory exceeds what the
machine has available is not started. fusion-bench
runs its algorithm classes on a `BaseModelPool` of torch modules; jaxlab runs
its public functions on JAX arrays (input checks included), after one untimed
call that compiles them.

fusion-bench and torch are not jaxlab dependencies; install them into a separate venv:

  python3 -m venv /tmp/fbvenv
  /tmp/fbvenv/bin/pip install torch==2.13.0 fusion-bench==0.2.33
  /tmp/fbvenv/bin/pip install jax==0.10.2 flax==0.12.8 optax==0.2.8 chex ml_collections tensorboardX
  /tmp/fbvenv/bin/pip install -e . --no-deps
  /tmp/fbvenv/bin/python benchmarks/merging_fusion_bench.py --mode=parity --output=docs/merging.md
  nice -n 10 /tmp/fbvenv/bin/python benchmarks/merging_fusion_bench.py --mode=timing --output=docs/merging.md
"""

from __future__ import annotations

import copy
import datetime
import json
import os
import re
import resource
import shlex
import subprocess
import sys
import time
import types
from collections.abc import Callable, Iterator
from typing import Any

from absl import app
from absl import flags
from absl import logging
import numpy as np

FUSION_BENCH_VERSION = "0.2.33"
PARITY_TITLE = "Parity with fusion-bench"
TIMING_TITLE = "Merging time against fusion-bench"
TIMING_METHODS = ("wa", "ta", "ties", "dare")
METHOD_NAMES = {"wa": "Weight Averaging", "ta": "Task Arithmetic (lambda 0.3)",
                "ties": "Ties-Merging (keep 20 %, sum)", "dare": "DARE + Task Arithmetic (p 0.5)"}

_MODE = flags.DEFINE_enum("mode", "parity", ["parity", "timing"], "What to run.")
_OUTPUT = flags.DEFINE_string("output", None, "Markdown file in which to add or replace this run's section; "
                              "print only if unset.")
_PARITY_EXPERTS = flags.DEFINE_integer("parity_experts", 4, "Fine-tuned models in the parity run.")
_TIMING_EXPERTS = flags.DEFINE_integer("timing_experts", 8, "Fine-tuned models in the timing run.")
_TIES_EXPERTS = flags.DEFINE_integer(
    "ties_experts", 3, "Fine-tuned models in the Ties timing. fusion-bench's Ties needs about 2.6 GiB per ViT-B/32 "
    "expert, so 8 experts need about 20 GiB.")
_REPEATS = flags.DEFINE_integer("repeats", 2, "Timed runs per method and library; the fastest is reported.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of all random weights, inputs and DARE masks.")
_WORKER = flags.DEFINE_string("worker", None, "Internal: run one timing job 'library:method' and print JSON.")


# ----------------------------------------------------------------------------- conversion


def state_dict_to_tree(state_dict: dict[str, Any]) -> dict[str, Any]:
    """Convert {'a.b.weight': tensor} into the nested numpy tree {'a': {'b': {'weight': array}}}."""
    tree: dict[str, Any] = {}
    for name, tensor in state_dict.items():
        node = tree
        *parents, leaf = name.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = tensor.detach().cpu().numpy()
    return tree


def tree_to_flat(tree: dict[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
    """Invert `state_dict_to_tree` into {'a.b.weight': array}."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            flat.update(tree_to_flat(value, name))
        else:
            flat[name] = np.asarray(value)
    return flat


def max_abs_difference(reference: dict[str, Any], tree: dict[str, Any]) -> tuple[float, float]:
    """Return max |reference - tree| and max |reference| over all parameters (torch tensors vs a jaxlab tree)."""
    flat = tree_to_flat(tree)
    if set(flat) != set(reference):
        raise ValueError(f"Parameter names differ: {sorted(set(flat) ^ set(reference))}")
    reference = {name: reference[name].detach().cpu().numpy() for name in flat}
    difference = max(float(np.max(np.abs(reference[name] - flat[name]))) for name in flat)
    magnitude = max(float(np.max(np.abs(reference[name]))) for name in flat)
    return difference, magnitude


# ----------------------------------------------------------------------------- parity


def _classifier_class():
    import torch
    from torch import nn

    class Classifier(nn.Module):
        """Linear-ReLU-LayerNorm-Linear-ReLU-Linear; returns an object with `.logits` like HF models."""

        def __init__(self, num_inputs: int = 6, width: int = 12, num_classes: int = 4):
            super().__init__()
            self.fc1 = nn.Linear(num_inputs, width)
            self.norm = nn.LayerNorm(width)
            self.fc2 = nn.Linear(width, width)
            self.head = nn.Linear(width, num_classes)

        def forward(self, x):
            h = self.norm(torch.relu(self.fc1(x)))
            h = torch.relu(self.fc2(h))
            return types.SimpleNamespace(logits=self.head(h))

    return Classifier


def classifier_logits(params: dict[str, Any], x):
    """Compute the Classifier's logits in JAX from a tree made by `state_dict_to_tree` (torch layouts)."""
    import jax
    import jax.numpy as jnp

    def linear(layer, inputs):
        return inputs @ layer["weight"].T + layer["bias"]

    h = jax.nn.relu(linear(params["fc1"], x))
    mean = jnp.mean(h, axis=-1, keepdims=True)
    variance = jnp.mean(jnp.square(h - mean), axis=-1, keepdims=True)
    h = (h - mean) / jnp.sqrt(variance + 1e-5) * params["norm"]["weight"] + params["norm"]["bias"]
    h = jax.nn.relu(linear(params["fc2"], h))
    return linear(params["head"], h)


def classifier_linear_inputs(params: dict[str, Any], x) -> dict[str, Any]:
    """Return the inputs of the three Linear layers, keyed by the jaxlab path of their weight."""
    import jax
    import jax.numpy as jnp

    h1 = jax.nn.relu(x @ params["fc1"]["weight"].T + params["fc1"]["bias"])
    mean = jnp.mean(h1, axis=-1, keepdims=True)
    variance = jnp.mean(jnp.square(h1 - mean), axis=-1, keepdims=True)
    normed = (h1 - mean) / jnp.sqrt(variance + 1e-5) * params["norm"]["weight"] + params["norm"]["bias"]
    h2 = jax.nn.relu(normed @ params["fc2"]["weight"].T + params["fc2"]["bias"])
    return {"fc1/weight": x, "fc2/weight": normed, "head/weight": h2}


class _ListTrainer:
    """The parts of a transformers Trainer that fusion-bench's fisher/regmean functions call."""

    def __init__(self, batches, batch_size: int):
        self._batches = batches
        self._train_batch_size = batch_size

    def get_train_dataloader(self):
        return list(self._batches)

    def _prepare_inputs(self, inputs):
        return inputs


def _replay_dare_masks(models, sparsity: float, seed: int):
    """Redraw fusion-bench's DARE masks: torch.rand_like(param) > p per model, per parameter, in order."""
    import torch

    torch.manual_seed(seed)
    masks = []
    for model in models:
        masks.append({name: (torch.rand_like(param) > sparsity) for name, param in model.named_parameters()})
    return masks


def run_parity(num_experts: int, seed: int) -> dict[str, tuple[float, float]]:
    """Merge the same float64 checkpoints with both libraries; return (max |difference|, max |merged|) per method."""
    import jax
    import torch

    default_dtype = torch.get_default_dtype()
    try:
        with jax.enable_x64(True):
            return _run_parity_float64(num_experts, seed)
    finally:
        torch.set_default_dtype(default_dtype)


def _run_parity_float64(num_experts: int, seed: int) -> dict[str, tuple[float, float]]:
    import jax
    import jax.numpy as jnp
    import torch

    from fusion_bench.method.dare.task_arithmetic import DareTaskArithmetic
    from fusion_bench.method.dare.ties_merging import DareTiesMerging
    from fusion_bench.method.fisher_merging.fisher_merging import fisher_merging as fb_fisher_merging
    from fusion_bench.method.regmean.regmean import regmean_merging as fb_regmean_merging
    from fusion_bench.method.simple_average import simple_average
    from fusion_bench.method.task_arithmetic.task_arithmetic import TaskArithmeticAlgorithm
    from fusion_bench.method.ties_merging.ties_merging import TiesMergingAlgorithm
    from fusion_bench.modelpool import BaseModelPool

    from jaxlab import merging

    torch.set_default_dtype(torch.float64)
    torch.manual_seed(seed)
    classifier = _classifier_class()
    pretrained = classifier()
    experts = []
    for _ in range(num_experts):
        expert = copy.deepcopy(pretrained)
        with torch.no_grad():
            for param in expert.parameters():
                param.add_(0.1 * torch.randn_like(param))
        experts.append(expert)
    pretrained_tree = state_dict_to_tree(pretrained.state_dict())
    expert_trees = [state_dict_to_tree(expert.state_dict()) for expert in experts]

    def pool():
        models = {"_pretrained_": copy.deepcopy(pretrained)}
        models.update({f"expert_{i}": copy.deepcopy(expert) for i, expert in enumerate(experts)})
        return BaseModelPool(models)

    differences = {}
    reference = simple_average([expert.state_dict() for expert in experts])
    differences["Weight Averaging"] = max_abs_difference(reference, merging.weight_average(expert_trees))

    # fusion-bench 0.2.33's `task_arithmetic_merge` function raises a TypeError (Parameter vs Tensor in
    # `state_dict_add`), so the algorithm class is used.
    with _quiet_stdout():
        reference = TaskArithmeticAlgorithm(scaling_factor=0.3).run(pool())
    differences["Task Arithmetic"] = max_abs_difference(
        reference.state_dict(), merging.task_arithmetic(pretrained_tree, expert_trees, 0.3))

    for merge in ("sum", "mean", "max"):
        algorithm = TiesMergingAlgorithm(scaling_factor=0.3, threshold=20, remove_keys=[], merge_func=merge)
        with _quiet_stdout():
            reference = algorithm.run(pool())
        ours = merging.ties_merging(pretrained_tree, expert_trees, scaling=0.3, keep_fraction=0.2, merge=merge)
        differences[f"Ties-Merging ({merge})"] = max_abs_difference(reference.state_dict(), ours)

    dare_seed = seed + 1
    masks = [state_dict_to_tree(mask) for mask in _replay_dare_masks(experts, 0.5, dare_seed)]
    masks = jax.tree.map(jnp.asarray, masks)
    torch.manual_seed(dare_seed)
    with _quiet_stdout():
        reference = DareTaskArithmetic(scaling_factor=0.3, sparsity_ratio=0.5, only_on_linear_weights=False,
                                       rescale=True).run(pool())
    ours = merging.dare_task_arithmetic(pretrained_tree, expert_trees, masks=masks, drop_rate=0.5, scaling=0.3)
    differences["DARE + Task Arithmetic"] = max_abs_difference(reference.state_dict(), ours)
    torch.manual_seed(dare_seed)
    with _quiet_stdout():
        reference = DareTiesMerging(sparsity_ratio=0.5, only_on_linear_weights=False, rescale=True,
                                    scaling_factor=0.5, threshold=20, remove_keys=[], merge_func="sum").run(pool())
    ours = merging.dare_ties_merging(pretrained_tree, expert_trees, masks=masks, drop_rate=0.5, scaling=0.5,
                                     keep_fraction=0.2, merge="sum")
    differences["DARE + Ties-Merging"] = max_abs_difference(reference.state_dict(), ours)

    # Per-task inputs: 24 examples of 6 features with a task-specific mean.
    rng = np.random.default_rng(seed)
    task_inputs = [rng.normal(loc=rng.normal(size=6), size=(24, 6)) for _ in experts]

    fisher_trainers = [_ListTrainer([{"x": torch.from_numpy(x[i:i + 1])} for i in range(len(x))], 1)
                       for x in task_inputs]
    with _quiet_stdout():
        reference = fb_fisher_merging([copy.deepcopy(e) for e in experts], fisher_trainers, [],
                                      [len(x) for x in task_inputs], normalize_fisher_weight=True,
                                      minimal_fisher_weight=1e-6)
    objective = merging.fusion_bench_fisher_objective(classifier_logits)
    fishers = [merging.diagonal_fisher(objective, tree, jnp.asarray(x), batch_size=8)
               for tree, x in zip(expert_trees, task_inputs)]
    ours = merging.fisher_merging(expert_trees, fishers, normalize=True, min_fisher=1e-6)
    differences["Fisher Merging"] = max_abs_difference(reference, ours)

    regmean_batch = 8
    regmean_trainers = [
        _ListTrainer([{"x": torch.from_numpy(x[i:i + regmean_batch])} for i in range(0, len(x), regmean_batch)],
                     regmean_batch)
        for x in task_inputs]
    with _quiet_stdout():
        reference = fb_regmean_merging([copy.deepcopy(e) for e in experts], regmean_trainers, [],
                                       [len(x) for x in task_inputs], reduce_non_diagonal_ratio=0.95)
    grams = [merging.gram_matrices(classifier_linear_inputs, tree,
                                   jnp.asarray(x).reshape(-1, regmean_batch, x.shape[-1]))
             for tree, x in zip(expert_trees, task_inputs)]
    ours = merging.regmean_merging(expert_trees, grams, alpha=0.95, kernel_layout="out_in")
    differences["RegMean"] = max_abs_difference(reference, ours)
    return differences


class _quiet_stdout:
    """Silence fusion-bench's progress prints for the duration of a `with` block."""

    def __enter__(self):
        self._stdout = sys.stdout
        sys.stdout = open(os.devnull, "w")

    def __exit__(self, *exc):
        sys.stdout.close()
        sys.stdout = self._stdout


# ----------------------------------------------------------------------------- timing


def vit_b32_shapes() -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of the CLIP ViT-B/32 vision tower (width 768, 12 blocks, MLP 3072, 50 tokens)."""
    width, mlp_width, num_layers = 768, 3072, 12
    shapes = {
        "embeddings.class_embedding": (width,),
        "embeddings.patch_embedding.weight": (width, 3, 32, 32),
        "embeddings.position_embedding.weight": (50, width),
        "pre_layrnorm.weight": (width,), "pre_layrnorm.bias": (width,),
        "post_layernorm.weight": (width,), "post_layernorm.bias": (width,),
    }
    for layer in range(num_layers):
        prefix = f"encoder.layers.{layer}"
        for projection in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes[f"{prefix}.self_attn.{projection}.weight"] = (width, width)
            shapes[f"{prefix}.self_attn.{projection}.bias"] = (width,)
        for norm in ("layer_norm1", "layer_norm2"):
            shapes[f"{prefix}.{norm}.weight"] = (width,)
            shapes[f"{prefix}.{norm}.bias"] = (width,)
        shapes[f"{prefix}.mlp.fc1.weight"] = (mlp_width, width)
        shapes[f"{prefix}.mlp.fc1.bias"] = (mlp_width,)
        shapes[f"{prefix}.mlp.fc2.weight"] = (width, mlp_width)
        shapes[f"{prefix}.mlp.fc2.bias"] = (width,)
    return shapes


def _random_state_dicts(num_experts: int, seed: int) -> Iterator[dict[str, np.ndarray]]:
    """Yield a pretrained state dict, then `num_experts` fine-tuned ones (pretrained + small noise), float32.

    A generator, so that a caller converting each model to another array type holds one numpy copy at a time.
    """
    rng = np.random.default_rng(seed)
    shapes = vit_b32_shapes()
    pretrained = {name: rng.standard_normal(shape, dtype=np.float32) * 0.02 for name, shape in shapes.items()}
    yield pretrained
    for _ in range(num_experts):
        yield {name: value + rng.standard_normal(value.shape, dtype=np.float32) * 1e-3
               for name, value in pretrained.items()}


def _torch_module(state_dict: dict[str, np.ndarray]):
    """Wrap a flat state dict into an nn.Module tree with those parameter names (no forward)."""
    import torch
    from torch import nn

    root = nn.Module()
    for name, value in state_dict.items():
        *parents, leaf = name.split(".")
        module = root
        for part in parents:
            if not hasattr(module, part):
                module.add_module(part, nn.Module())
            module = getattr(module, part)
        module.register_parameter(leaf, nn.Parameter(torch.from_numpy(value), requires_grad=True))
    return root


def _fusion_bench_job(method: str, models: Iterator[dict[str, np.ndarray]]) -> Callable[[], Any]:
    from fusion_bench.method.dare.task_arithmetic import DareTaskArithmetic
    from fusion_bench.method.simple_average import SimpleAverageAlgorithm
    from fusion_bench.method.task_arithmetic.task_arithmetic import TaskArithmeticAlgorithm
    from fusion_bench.method.ties_merging.ties_merging import TiesMergingAlgorithm
    from fusion_bench.modelpool import BaseModelPool

    # torch.from_numpy shares the numpy memory, so the modules add no copy.
    modules = [_torch_module(state_dict) for state_dict in models]
    pool = BaseModelPool({"_pretrained_": modules[0], **{f"expert_{i}": m for i, m in enumerate(modules[1:])}})
    algorithm = {
        "wa": lambda: SimpleAverageAlgorithm(),
        "ta": lambda: TaskArithmeticAlgorithm(scaling_factor=0.3),
        "ties": lambda: TiesMergingAlgorithm(scaling_factor=0.3, threshold=20, remove_keys=[], merge_func="sum"),
        "dare": lambda: DareTaskArithmetic(scaling_factor=0.3, sparsity_ratio=0.5, only_on_linear_weights=False,
                                           rescale=True),
    }[method]()
    # The algorithms overwrite the pool's models in place, which keeps every repeat the same size of work.
    return lambda: algorithm.run(pool)


def _jaxlab_job(method: str, models: Iterator[dict[str, np.ndarray]]) -> Callable[[], Any]:
    import jax
    import jax.numpy as jnp

    from jaxlab import merging

    # One model at a time: its numpy arrays are freed once the JAX copy exists.
    trees = [jax.tree.map(jnp.asarray, state_dict_to_tree_numpy(state_dict)) for state_dict in models]
    pretrained, experts = trees[0], trees[1:]
    key = jax.random.key(0)
    run = {
        "wa": lambda: merging.weight_average(experts),
        "ta": lambda: merging.task_arithmetic(pretrained, experts, 0.3),
        "ties": lambda: merging.ties_merging(pretrained, experts, scaling=0.3, keep_fraction=0.2, merge="sum"),
        "dare": lambda: merging.dare_task_arithmetic(pretrained, experts, key=key, drop_rate=0.5, scaling=0.3),
    }[method]
    return lambda: jax.block_until_ready(run())


def state_dict_to_tree_numpy(state_dict: dict[str, np.ndarray]) -> dict[str, Any]:
    """`state_dict_to_tree` for numpy values."""
    tree: dict[str, Any] = {}
    for name, value in state_dict.items():
        node = tree
        *parents, leaf = name.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def run_timing_job(spec: str, num_experts: int, repeats: int, seed: int) -> dict[str, Any]:
    """Time one 'library:method' pair; return seconds per run (and jaxlab's first call) and peak RSS."""
    library, method = spec.split(":")
    models = _random_state_dicts(num_experts, seed)
    job = (_fusion_bench_job if library == "fusion_bench" else _jaxlab_job)(method, models)
    result: dict[str, Any] = {"library": library, "method": method}
    if library == "jaxlab":
        start = time.perf_counter()
        job()
        result["first_call_s"] = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        with _quiet_stdout():
            start = time.perf_counter()
            job()
            times.append(time.perf_counter() - start)
    result["seconds"] = min(times)
    result["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return result


# Estimated peak memory per job: 1.5 GiB, the models, and model-sized copies per expert (0.33 GiB
# each for ViT-B/32 in float32), rounded up from earlier runs of this script: about 8 copies per
# expert for fusion-bench's Ties, 2 for jaxlab's Ties and at most 1 for the other jobs.
_GIB_PER_MODEL = 87_456_000 * 4 / 2**30
_COPIES_PER_EXPERT = {("fusion_bench", "ties"): 8.0, ("jaxlab", "ties"): 2.0}


def _estimated_peak_gib(library: str, method: str, num_experts: int) -> float:
    copies_per_expert = _COPIES_PER_EXPERT.get((library, method), 1.0)
    return 1.5 + (num_experts + 1) * _GIB_PER_MODEL + num_experts * copies_per_expert * _GIB_PER_MODEL


def _available_gib() -> float:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    raise RuntimeError("MemAvailable is missing from /proc/meminfo.")


def run_timing(num_experts: int, ties_experts: int, repeats: int, seed: int) -> list[dict[str, Any]]:
    """Run every (library, method) job in a fresh subprocess and collect their JSON results.

    A job whose estimated peak memory exceeds the available memory minus 2 GiB is not started. Its result
    records the reason in 'skipped'.
    """
    results = []
    for method in TIMING_METHODS:
        experts = ties_experts if method == "ties" else num_experts
        for library in ("fusion_bench", "jaxlab"):
            needed, available = _estimated_peak_gib(library, method, experts), _available_gib()
            if needed > available - 2.0:
                reason = f"needs about {needed:.1f} GiB, {available:.1f} GiB was available"
                logging.warning("Skipping %s:%s with %d experts: %s.", library, method, experts, reason)
                results.append({"library": library, "method": method, "experts": experts, "skipped": reason})
                continue
            command = [sys.executable, os.path.abspath(__file__), f"--worker={library}:{method}",
                       f"--timing_experts={experts}", f"--repeats={repeats}", f"--seed={seed}"]
            completed = subprocess.run(command, check=True, capture_output=True, text=True)
            line = [line for line in completed.stdout.splitlines() if line.startswith("{")][-1]
            results.append(dict(json.loads(line), experts=experts))
            print(results[-1], flush=True)
    return results


# ----------------------------------------------------------------------------- report


def _replace_section(path: str, title: str, body: str) -> None:
    text = open(path).read() if os.path.exists(path) else ""
    section = f"## {title}\n\n{body.rstrip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + section
    with open(path, "w") as f:
        f.write(text)


def _header(command: str) -> str:
    from jaxlab.core.machine import describe_machine
    import torch

    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f"Command: `{command}`  \nMachine: {describe_machine()}, torch {torch.__version__}, "
            f"fusion-bench {FUSION_BENCH_VERSION}  \nDate: {date}\n")


def parity_report(differences: dict[str, tuple[float, float]], command: str, num_experts: int) -> str:
    lines = [_header(command), "",
             f"A float64 classifier (Linear 6-12, LayerNorm, Linear 12-12, Linear 12-4), {num_experts} experts; "
             "Fisher and RegMean on 24 inputs per task.", "",
             "| Method | max abs difference | max abs merged parameter |", "| --- | --- | --- |"]
    lines += [f"| {name} | {difference:.2e} | {magnitude:.2f} |"
              for name, (difference, magnitude) in differences.items()]
    return "\n".join(lines) + "\n"


def timing_report(results: list[dict[str, Any]], command: str) -> str:
    by_key = {(r["library"], r["method"]): r for r in results}
    lines = [_header(command), "",
             "Experts and a pretrained model with ViT-B/32 vision-tower shapes (87.5M float32 parameters each, "
             "random). Fastest of the timed runs; jaxlab's first call (compilation included) in its own "
             "column. Peak RSS is the whole subprocess, models included.", "",
             "| Method | experts | fusion-bench (s) | jaxlab (s) | fusion-bench / jaxlab | jaxlab first call (s) "
             "| peak RSS fusion-bench / jaxlab (GiB) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for method in TIMING_METHODS:
        reference, ours = by_key[("fusion_bench", method)], by_key[("jaxlab", method)]
        skipped = [f"{r['library']} not run ({r['skipped']})" for r in (reference, ours) if "skipped" in r]
        if skipped:
            lines.append(f"| {METHOD_NAMES[method]} | {ours['experts']} | {'; '.join(skipped)} | | | | |")
            continue
        lines.append(f"| {METHOD_NAMES[method]} | {ours['experts']} | {reference['seconds']:.2f} | "
                     f"{ours['seconds']:.2f} | "
                     f"{reference['seconds'] / ours['seconds']:.2f} | {ours['first_call_s']:.2f} | "
                     f"{reference['peak_rss_gib']:.1f} / {ours['peak_rss_gib']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    del argv
    if _WORKER.value:
        result = run_timing_job(_WORKER.value, _TIMING_EXPERTS.value, _REPEATS.value, _SEED.value)
        print(json.dumps(result))
        return
    command = "python " + " ".join(shlex.quote(arg) for arg in ["benchmarks/merging_fusion_bench.py", *sys.argv[1:]])
    if _MODE.value == "parity":
        differences = run_parity(_PARITY_EXPERTS.value, _SEED.value)
        report, title = parity_report(differences, command, _PARITY_EXPERTS.value), PARITY_TITLE
    else:
        results = run_timing(_TIMING_EXPERTS.value, _TIES_EXPERTS.value, _REPEATS.value, _SEED.value)
        report, title = timing_report(results, command), TIMING_TITLE
    print(report)
    if _OUTPUT.value:
        _replace_section(_OUTPUT.value, title, report)


if __name__ == "__main__":
    app.run(main)
