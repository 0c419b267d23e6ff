"""Test scores of CommFormer and its baselines over SMAX maps and MPE, over seeds (mean +- standard error).

Run (each run resumes from its workdir, so an interrupted sweep continues where it stopped):
  # Learned graph (S = 0.4) against the full graph, no communication and MAPPO on the six SMAX maps and
  # MPE simple_spread, 3 seeds, accelerator-sized:
  python benchmarks/commformer_maps.py --variant= --seeds=0,1,2 --write_doc
  # 60-minute CPU budget on 3m and 2s3z (time to 90% test win rate):
  python benchmarks/commformer_maps.py --variant=cpu --maps=3m,2s3z --methods=commformer --seeds=0 \
      --section=cpu_budget --write_doc
  # CPU-sized table on 3m: the four default methods on the same 409,600 env steps, 3 seeds:
  python benchmarks/commformer_maps.py --variant=cpu --maps=3m --time_limit_minutes=0 \
      --total_env_steps=409600 --section=maps_cpu --write_doc
  # CPU-sized table on MPE simple_spread (the 'cpu' variant of configs/commformer/mpe.py, 409,600 env steps):
  python benchmarks/commformer_maps.py --variant=cpu --maps=MPE_simple_spread_v3 --section=maps_cpu_mpe \
      --write_doc
  # Gating: receive rate at equal win rate:
  python benchmarks/commformer_maps.py --maps=3m,2s3z --methods=commformer,commformer_gated --section=gating \
      --write_doc

Methods: commformer (learned graph, S = 0.4, no gates), commformer_gated (the same with temporal gates),
full (S = 1, MAT-like), none (self-loops only) and mappo. Every run is `experiment.run` with the variant's
config of configs/commformer/smax.py (configs/commformer/mpe.py for MPE_simple_spread_v3); the table
reports the final greedy test win rate and episode return over `eval_episodes` episodes, the receive (gate)
rate of those episodes, minutes and env steps to the target win rate, and throughput; with
--final_eval_episodes, three more columns evaluate each run's last checkpoint on that many episodes. MPE has
no win condition: there the episode return (agent mean, higher is better) is the score. Runs live under
--workdir/<map>/<method>/seed<k>, each with its config.json. A rerun reads a finished run back and resumes an
unfinished one, and it rejects a workdir whose run used another config.
"""

import json
import os
import sys

import numpy as np
from absl import app, flags, logging

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from benchmarks import commformer_record  # noqa: E402
from jaxlab.commformer import experiment  # noqa: E402
from jaxlab.commformer.envs import MPE_SCENARIOS, SMAX_MAPS  # noqa: E402
from jaxlab.core import metrics as metrics_lib  # noqa: E402
from jaxlab.core import config as config_lib  # noqa: E402

METHODS = ("commformer", "commformer_gated", "full", "none", "mappo")

_MAPS = flags.DEFINE_list("maps", list(SMAX_MAPS + MPE_SCENARIOS), "SMAX maps and MPE scenarios.")
_METHODS = flags.DEFINE_list("methods", ["commformer", "full", "none", "mappo"], f"Any of {METHODS}.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (at least 3 for a standard error).")
_VARIANT = flags.DEFINE_string("variant", "", "Variant of configs/commformer/smax.py and mpe.py ('', 'cpu' or "
                               "'quick'; 'continuous' for MPE only).")
_WORKDIR = flags.DEFINE_string("workdir", "runs/commformer_maps", "Root of the run directories.")
_SECTION = flags.DEFINE_string("section", "maps", "Marked section of docs/commformer.md to replace.")
_WRITE_DOC = flags.DEFINE_bool("write_doc", False, "Write the table into docs/commformer.md.")
_GATE_PLOT = flags.DEFINE_string("gate_plot", "", "PNG path for the gate rate over training of the gated runs "
                                  "('' draws none).")
_FINAL_EVAL_EPISODES = flags.DEFINE_integer(
    "final_eval_episodes", 512, "Greedy test episodes for a second evaluation of each run's last checkpoint, "
    "finer than the evaluations during training (0 skips it).")
_TIME_LIMIT = flags.DEFINE_float("time_limit_minutes", -1.0,
                                 "Override train.time_limit_minutes of the variant (minutes; -1 keeps it).")
_TOTAL_ENV_STEPS = flags.DEFINE_integer(
    "total_env_steps", -1, "Override train.total_env_steps of the variant (-1 keeps it); with "
    "--time_limit_minutes=0 every method trains on the same number of env steps.")
_OVERRIDES = flags.DEFINE_multi_string(
    "override", [], "FIELD=VALUE applied to every run's config after the method's settings, repeatable; the "
    "value is read as JSON when it parses (e.g. ppo.active_masks=false).")


def method_config(variant: str, map_name: str, method: str, seed: int):
    """Return the config of one (map, method, seed) run."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    if variant == "continuous" and map_name not in MPE_SCENARIOS:
        raise ValueError(f"--variant=continuous (continuous actions) exists for MPE only, but --maps has the SMAX map "
                         f"{map_name!r}; use --maps={','.join(MPE_SCENARIOS)} or another variant")
    config_file = "mpe.py" if map_name in MPE_SCENARIOS else "smax.py"
    config = config_lib.load_config_file(
        os.path.join(os.path.dirname(__file__), "..", "configs", "commformer", config_file), variant)
    config.env.name = map_name
    config.seed = seed
    config.gating.enabled = method == "commformer_gated"
    if method in ("full", "none"):
        config.graph.mode = method
    if method == "mappo":
        config.model.kind = "mappo"
    if _TIME_LIMIT.value >= 0:
        config.train.time_limit_minutes = _TIME_LIMIT.value
    if _TOTAL_ENV_STEPS.value != -1:
        config.train.total_env_steps = _TOTAL_ENV_STEPS.value
    for text in _OVERRIDES.value:
        config_lib.set_field(config, *config_lib.parse_override(text))
    experiment.validate(config)
    return config


def run_workdir(map_name: str, method: str, seed: int) -> str:
    """Return the workdir of one (map, method, seed) run under --workdir."""
    return os.path.join(_WORKDIR.value, map_name, method, f"seed{seed}")


def _mean_and_error(values):
    values = np.asarray([v for v in values if v is not None], float)
    if len(values) == 0:
        return None, None
    error = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else None
    return values.mean(), error


def _cell(values, scale=100.0, digits=1):
    mean, error = _mean_and_error(values)
    if mean is None:
        return "n/a"
    if error is None:  # One value: no standard error.
        return f"{scale * mean:.{digits}f}"
    return f"{scale * mean:.{digits}f} ± {scale * error:.{digits}f}"


def plot_gate_rates(path: str, workdirs: dict[str, str]) -> None:
    """Plot the fraction of alive agent-steps that receive messages in training rollouts against env steps."""
    series = []
    for label, workdir in workdirs.items():
        env_steps, gate_rates = metrics_lib.read_metric_series(workdir, "env_steps", "gate_rate")
        if not env_steps:
            logging.warning("%s/metrics.jsonl has no gate_rate records; the plot shows no line for %s.", workdir,
                            label)
        series.append({"x": env_steps, "y": gate_rates, "label": label})
    metrics_lib.plot_lines(path, series, xlabel="env steps", ylabel="receive rate (fraction of alive agent-steps)",
                           title="Temporal gating: receive rate over training")
    logging.info("Wrote %s.", path)


def final_evaluation(config, workdir: str, episodes: int) -> dict:
    """Evaluate the run's last checkpoint on `episodes` episodes; the result is cached in the workdir."""
    path = os.path.join(workdir, f"final_eval_{episodes}.json")
    if not os.path.exists(path):
        evaluation = experiment.evaluate_checkpoint(config, workdir, episodes)
        with open(path, "w") as file:
            json.dump(evaluation, file)
    with open(path) as file:
        return json.load(file)


def main(argv):
    del argv
    try:
        seeds = [int(seed) for seed in _SEEDS.value]
    except ValueError:
        sys.exit(f"error: --seeds={','.join(_SEEDS.value)} is invalid; expected integers, e.g. --seeds=0,1,2")

    # Build and check every run's config, and that an existing run in its workdir used the same config,
    # before the first run starts.
    configs = {}
    try:
        for map_name in _MAPS.value:
            for method in _METHODS.value:
                for seed in seeds:
                    config = method_config(_VARIANT.value, map_name, method, seed)
                    config_lib.check_workdir_config(config, run_workdir(map_name, method, seed))
                    configs[map_name, method, seed] = config
    except (ValueError, config_lib.ConfigError) as error:
        sys.exit(f"error: {error}")

    lines = [f"Variant '{_VARIANT.value or 'default'}', seeds {seeds}; mean ± standard error over seeds.", "",
             "| map | method | test win rate (%) | test episode return | receive rate (% of alive agent-steps) | "
             "minutes to target | env steps to target | minutes trained | env steps/s |"
             + (f" win rate, {_FINAL_EVAL_EPISODES.value} episodes (%) | episode return, "
                f"{_FINAL_EVAL_EPISODES.value} episodes | receive rate, {_FINAL_EVAL_EPISODES.value} episodes (%) |"
                if _FINAL_EVAL_EPISODES.value else ""),
             "| --- " * (12 if _FINAL_EVAL_EPISODES.value else 9) + "|"]
    for map_name in _MAPS.value:
        for method in _METHODS.value:
            results, finals = [], []
            for seed in seeds:
                workdir = run_workdir(map_name, method, seed)
                path = os.path.join(workdir, "results.json")
                config = configs[map_name, method, seed]
                if not os.path.exists(path):
                    logging.info("Running %s %s seed %d in %s.", map_name, method, seed, workdir)
                    config_lib.write_workdir_config(config, workdir)
                    experiment.run(config, workdir)
                with open(path) as file:
                    results.append(json.load(file))
                if _FINAL_EVAL_EPISODES.value:
                    finals.append(final_evaluation(config, workdir, _FINAL_EVAL_EPISODES.value))
            reached = [r["minutes_to_target"] for r in results]
            lines.append(" | ".join([
                f"| {map_name}", method, _cell([r["test_win_rate"] for r in results]),
                _cell([r["test_episode_return"] for r in results], 1.0, 2),
                _cell([r["test_gate_rate"] for r in results]),
                f"{_cell(reached, 1.0)} ({sum(m is not None for m in reached)}/{len(results)} reached)",
                _cell([r["env_steps_to_target"] for r in results], 1.0, 0),
                _cell([r["train_minutes"] for r in results], 1.0),
                _cell([r["env_steps_per_s"] for r in results], 1.0, 0)]
                + ([_cell([f["win_rate"] for f in finals]), _cell([f["episode_return"] for f in finals], 1.0, 2),
                    _cell([f["gate_rate"] for f in finals])]
                   if finals else [])) + " |")
    lines += ["", "Receive rate: the percentage of alive agents' steps with an open gate in the greedy test episodes "
              "(100% without gating). Episode return: the agents' mean undiscounted return per test episode; MPE has "
              "no win condition, so its win rate is 0, it never reaches the target, and the return is its score. "
              "Minutes are the wall-clock time of training and evaluation, compilation included; a run stops at the "
              "end of the chunk that passes its time limit. The last three columns evaluate each run's last "
              "checkpoint again on more episodes, with a key that training's evaluations never use."]
    record = commformer_record.record_header() + "\n" + "\n".join(lines)
    print(record)
    if _WRITE_DOC.value:
        commformer_record.replace_section(_SECTION.value, record)

    # The plot comes last, so a damaged metrics file costs the plot only, not the table.
    if _GATE_PLOT.value:
        gated = {f"{map_name}, seed {seed}": run_workdir(map_name, "commformer_gated", seed)
                 for map_name in _MAPS.value for seed in seeds if "commformer_gated" in _METHODS.value}
        try:
            plot_gate_rates(_GATE_PLOT.value, gated)
        except (OSError, ValueError) as error:
            sys.exit(f"error: the table is complete, but the gate plot failed: {error}")


if __name__ == "__main__":
    app.run(main)
