"""Time per step of LeZO against MeZO on all-MiniLM-L6-v2, split into perturbation, forward passes and update.

Both optimizers run on the same model, batch and machine in one process, alternating step by step so that
load changes on a shared machine hit both alike. A step is timed phase by phase with separately jitted,
buffer-donating functions (two perturbations, two forward passes, one fused restore-and-update), and the
fused single-jit step (`make_step(fused=True)`) is timed as well. Peak memory comes from XLA's compile-time buffer assignment
(`memory_analysis`) of the fused step, of one inference forward pass and of a first-order AdamW step.

Run:
  python benchmarks/zo_speed.py [--steps 30] [--batch_size 16] [--max_length 32] [--output docs/zo_speed.md]
"""

from __future__ import annotations

import argparse
import datetime
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.core import machine
from jaxlab.models import bert, hf, minilm
from jaxlab.zo import classifier as classifier_lib
from jaxlab.zo import groups as groups_lib
from jaxlab.zo import spsa

PHASES = ("perturb", "forward", "update")


def _model_and_batch(batch_size: int, max_length: int, num_classes: int = 8):
    model_dir = minilm.find_model_dir()
    _, params = hf.load_hf(model_dir, config=bert.MINILM_L6)
    encoder, encoder_params = classifier_lib.without_pooler(bert.MINILM_L6, params)
    model = classifier_lib.TextClassifier(encoder, num_classes)
    rng = np.random.default_rng(0)
    head = {"kernel": jnp.asarray(rng.normal(0, 0.05, (bert.MINILM_L6.hidden_size, num_classes)), jnp.float32),
            "bias": jnp.zeros(num_classes)}
    tokenizer = minilm.load_tokenizer(model_dir, max_length)
    texts = [f"a gloss number {i} about an animal that lives in the forest and eats plants" for i in range(batch_size)]
    tokens = {k: jnp.asarray(v) for k, v in minilm.tokenize(tokenizer, texts).items()}
    labels = jnp.asarray(rng.integers(0, num_classes, batch_size), jnp.int32)
    return model, {"encoder": encoder_params, "head": head}, (tokens, labels)


def _peak_bytes(compiled) -> int:
    """Return the peak device memory XLA assigned: arguments + outputs + temporaries - donated aliases."""
    analysis = compiled.memory_analysis()
    return int(analysis.argument_size_in_bytes + analysis.output_size_in_bytes + analysis.temp_size_in_bytes
               - analysis.alias_size_in_bytes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="timed steps per optimizer, after 3 warm-up steps")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--max_length", type=int, default=32)
    parser.add_argument("--active_fraction", type=float, default=0.25)
    parser.add_argument("--output", default="docs/zo_speed.md")
    args = parser.parse_args()

    model, params, batch = _model_and_batch(args.batch_size, args.max_length)

    def loss_fn(p, b):
        return model.loss(p, *b)

    groups = groups_lib.group_parameters(params)
    print(groups.describe())
    configs = {"MeZO": spsa.ZOConfig(learning_rate=1e-6),
               "LeZO": spsa.ZOConfig(learning_rate=1e-6, active_fraction=args.active_fraction)}
    forward = jax.jit(loss_fn)
    runners = {}
    for name, config in configs.items():
        functions = spsa.make_functions(groups, config)
        runners[name] = {
            "functions": functions,
            "perturb": jax.jit(functions.perturb, donate_argnums=0),
            "update": jax.jit(functions.restore_and_update, donate_argnums=0),
            "select": jax.jit(functions.select) if config.active_fraction < 1 else functions.select,
            "fused": spsa.make_step(loss_fn, groups, config, fused=True),
            "params": jax.tree.map(jnp.copy, params),
            "fused_params": jax.tree.map(jnp.copy, params),
            "state": spsa.init(params, jax.random.key(1), config),
            "times": {phase: [] for phase in PHASES + ("fused",)},
        }

    def phase_step(runner, step, record):
        key_select, key_noise = jax.random.split(jax.random.fold_in(jax.random.key(2), step))
        active = runner["select"](key_select)
        p = runner["params"]
        t0 = time.perf_counter()
        p = jax.block_until_ready(runner["perturb"](p, key_noise, 1e-3, active))
        t1 = time.perf_counter()
        loss_plus = forward(p, batch).block_until_ready()
        t2 = time.perf_counter()
        p = jax.block_until_ready(runner["perturb"](p, key_noise, -2e-3, active))
        t3 = time.perf_counter()
        loss_minus = forward(p, batch).block_until_ready()
        t4 = time.perf_counter()
        grad = (loss_plus - loss_minus) / 2e-3
        p = jax.block_until_ready(runner["update"](p, key_noise, active, None, grad, 1e-6))
        t5 = time.perf_counter()
        runner["params"] = p
        if record:
            runner["times"]["perturb"].append((t1 - t0) + (t3 - t2))
            runner["times"]["forward"].append((t2 - t1) + (t4 - t3))
            runner["times"]["update"].append(t5 - t4)

        started = time.perf_counter()
        runner["fused_params"], runner["state"], metrics = runner["fused"](runner["fused_params"], runner["state"],
                                                                           batch)
        jax.block_until_ready(metrics)
        if record:
            runner["times"]["fused"].append(time.perf_counter() - started)

    warmup = 3
    for step in range(warmup + args.steps):
        for runner in runners.values():
            phase_step(runner, step, record=step >= warmup)

    # Memory from XLA's buffer assignment, so it is exact and independent of machine load.
    # The default step runs its programs one after another on the same donated buffers, so its peak is the
    # largest of theirs.
    forward_peak = _peak_bytes(forward.lower(params, batch).compile())
    memory = {"Inference (one forward)": forward_peak}
    for name, runner in runners.items():
        key = jax.random.key(0)
        active = runner["functions"].select(key)
        perturb_peak = _peak_bytes(runner["perturb"].lower(params, key, 1e-3, active).compile())
        update_peak = _peak_bytes(runner["update"].lower(params, key, active, None, 0.0, 1e-6).compile())
        memory[f"{name}, default step"] = max(perturb_peak, forward_peak, update_peak)
        memory[f"{name}, fused step"] = _peak_bytes(runner["fused"].lower(params, runner["state"], batch).compile())
    optimizer, adamw = spsa.adamw_step(loss_fn, 1e-5)
    memory["AdamW (first order)"] = _peak_bytes(adamw.lower(params, optimizer.init(params), batch).compile())

    means = {name: {phase: float(np.mean(times)) for phase, times in runner["times"].items()}
             for name, runner in runners.items()}
    num_params = sum(groups.group_sizes())
    lines = [
        "# Zeroth-order step time and memory: LeZO against MeZO",
        "",
        f"Measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on {machine.describe_machine()}.",
        "",
        "```sh",
        f"python benchmarks/zo_speed.py --steps {args.steps} --batch_size {args.batch_size} "
        f"--max_length {args.max_length} --active_fraction {args.active_fraction}",
        "```",
        "",
        f"Model: all-MiniLM-L6-v2 with an 8-class head, {num_params:,} parameters in {groups.num_groups} layer "
        f"groups ({', '.join(groups.names)}); LeZO draws "
        f"{configs['LeZO'].num_active(groups.num_groups)} groups per step. Batch {args.batch_size} x "
        f"{args.max_length} tokens. Mean over {args.steps} steps after {warmup} warm-up steps, the two optimizers "
        "alternating step by step.",
        "",
        "| optimizer | perturbation (s) | forward passes (s) | update (s) | default step (s) | fused step (s) |",
        "|---|---|---|---|---|---|",
    ]
    for name, mean in means.items():
        total = sum(mean[phase] for phase in PHASES)
        lines.append(f"| {name} | {mean['perturb']:.3f} | {mean['forward']:.3f} | {mean['update']:.3f} | "
                     f"{total:.3f} | {mean['fused']:.3f} |")
    phase_ratio = sum(means["MeZO"][p] for p in PHASES) / sum(means["LeZO"][p] for p in PHASES)
    fused_ratio = means["MeZO"]["fused"] / means["LeZO"]["fused"]
    lines += [
        "",
        f"LeZO speed-up per step: {phase_ratio:.2f}x (default step), {fused_ratio:.2f}x (fused step). The default "
        "step dispatches the five programs timed as phases; the fused step compiles them as one.",
        "",
        "| program | peak memory (MiB) | relative to inference |",
        "|---|---|---|",
    ]
    inference = memory["Inference (one forward)"]
    for name, size in memory.items():
        lines.append(f"| {name} | {size / 2**20:.1f} | {size / inference:.2f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
        with open(args.output, "w") as file:
            file.write(text)


if __name__ == "__main__":
    main()
