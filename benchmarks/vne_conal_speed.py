"""CONAL training throughput (environment steps per second) and inference time per request next to GRC and NRM.

  python benchmarks/vne_conal_speed.py --size=cpu --updates=20 --output=docs/conal.md

Times `--updates` training updates of `configs/vne/conal.py:<size>` on WX100 after one compiling update.
Then times the strict simulation of one test trace per solver: CONAL (with the latest checkpoint in
--checkpoints when given, else freshly initialised parameters), GRC and NRM. Inference time is the
wall time of the trace's jitted simulation divided by its requests, compilation excluded. Writes the
section "Speed (<size>)" of --output.
"""

import os
import sys
import time

import jax
from absl import app, flags

sys.path.insert(0, os.path.dirname(__file__))
import vne_conal_common as common  # noqa: E402

from jaxlab.core import checkpoint  # noqa: E402
from jaxlab.vne import simulation  # noqa: E402
from jaxlab.vne.conal import evaluate, experiment, train  # noqa: E402

_SIZE = flags.DEFINE_enum("size", "", ["", "cpu", "quick"], "Config size: '' (default, accelerator), cpu or quick.")
_UPDATES = flags.DEFINE_integer("updates", 20, "Timed training updates.")
_CHECKPOINTS = flags.DEFINE_string("checkpoints", None, "Checkpoint directory of a trained run of the same size.")
_OUTPUT = flags.DEFINE_string("output", "docs/conal.md", "Markdown file whose section is replaced.")


def main(argv):
    del argv
    config = common.load_config(_SIZE.value)
    settings = experiment.train_config(config)
    substrate, env_params = experiment.build_substrate(config, "wx100", config.seed)
    key = jax.random.key(config.seed)
    state = train.init_train_state(key, settings, env_params)
    train_step = train.make_train_step(settings, key)

    started = time.perf_counter()
    state, _ = jax.block_until_ready(train_step(state, env_params))
    compile_seconds = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(_UPDATES.value):
        state, _ = train_step(state, env_params)
    jax.block_until_ready(state)
    seconds = time.perf_counter() - started
    steps = _UPDATES.value * settings.num_envs * settings.rollout_steps
    steps_per_s = steps / seconds

    params = state.params
    source = "freshly initialised parameters"
    if _CHECKPOINTS.value:
        with checkpoint.Checkpointer(_CHECKPOINTS.value) as loader:
            params = loader.restore(state).params
        source = f"the latest checkpoint in {_CHECKPOINTS.value}"
    traces = experiment.test_traces(config, "wx100", substrate.num_nodes)[:1]
    network = train.make_network(settings)
    conal, _ = evaluate.run_traces(network, params, env_params, traces, settings.hetero_graph)
    rows = [("conal", conal[0])]
    for solver in ("grc_rank", "nrm_rank"):
        summaries, _ = simulation.run_traces(solver, env_params.substrate, traces, config.seed)
        rows.append((solver, summaries[0]))

    lines = [f"Training: {steps_per_s:,.0f} environment steps per second over {_UPDATES.value} updates of "
             f"{settings.num_envs} streams x {settings.rollout_steps} steps (rollout, greedy-copy check, "
             f"{settings.num_minibatches} PPO minibatches of {settings.minibatch_size} and the contrastive and "
             f"multiplier steps; hidden {settings.hidden}); the first update, compilation included, took "
             f"{compile_seconds:.0f} s.",
             "",
             f"Inference on one WX100 test trace of {traces[0].num_requests} requests at rate "
             f"{config.eval.arrival_rates.wx100:g} (CONAL with {source}):",
             "",
             "| solver | ms per request | acceptance (%) |",
             "|---|---:|---:|"]
    for solver, summary in rows:
        lines.append(f"| {solver} | {summary['solve_time_ms']:.2f} | {100 * summary['acceptance_rate']:.1f} |")
    command = f"python benchmarks/vne_conal_speed.py --size={_SIZE.value} --updates={_UPDATES.value}"
    if _CHECKPOINTS.value:
        command += f" --checkpoints={_CHECKPOINTS.value}"
    body = common.header(command + f" --output={_OUTPUT.value}") + "\n" + "\n".join(lines)
    common.write_section(_OUTPUT.value, f"Speed ({_SIZE.value or 'default'})", body)
    print(body)


if __name__ == "__main__":
    app.run(main)
