"""Test win rates of CommFormer and its baselines over SMAX maps and seeds (mean +- standard error).

Run (each run resumes from its workdir, so an interrupted sweep continues where it stopped):
  # Learned graph (S = 0.4) against the full graph, no communication and MAPPO, 3 seeds, accelerator-sized:
  python benchmarks/commformer_maps.py --variant= --seeds=0,1,2 --write_doc
  # 60-minute CPU budget on 3m and 2s3z (time to 90% test win rate):
  python benchmarks/commformer_maps.py --variant=cpu --maps=3m,2s3z --methods=commformer_gated --seeds=0 \
      --section=cpu_budget --write_doc
  # Gating: receive rate at equal win rate:
  python benchmarks/commformer_maps.py --methods=commformer,commformer_gated --section=gating --write_doc

Methods: commformer (learned graph, S = 0.4, no gates), commformer_gated (the same with temporal gates),
full (S = 1, MAT-like), none (self-loops only) and mappo. Every run is `experiment.run` with the variant's
config of configs/commformer/smax.py; the table reports the final greedy test win rate over
`eval_episodes` episodes, the receive (gate) rate of those episodes, minutes and env steps to the target win
rate, and throughput. Runs live under --workdir/<map>/<method>/seed<k>.
"""

import json
import os
import sys

import numpy as np
from absl import app, flags, logging

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from benchmarks import commformer_record  # noqa: E402
from jaxlab.commformer import experiment  # noqa: E402
from jaxlab.commformer.envs import SMAX_MAPS  # noqa: E402
from jaxlab.core.config import load_config_file  # noqa: E402

METHODS = ("commformer", "commformer_gated", "full", "none", "mappo")

_MAPS = flags.DEFINE_list("maps", list(SMAX_MAPS), "SMAX maps.")
_METHODS = flags.DEFINE_list("methods", ["commformer", "full", "none", "mappo"], f"Any of {METHODS}.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (at least 3 for a standard error).")
_VARIANT = flags.DEFINE_string("variant", "", "Variant of configs/commformer/smax.py ('', 'cpu' or 'quick').")
_WORKDIR = flags.DEFINE_string("workdir", "runs/commformer_maps", "Root of the run directories.")
_SECTION = flags.DEFINE_string("section", "maps", "Marked section of docs/commformer.md to replace.")
_WRITE_DOC = flags.DEFINE_bool("write_doc", False, "Write the table into docs/commformer.md.")
_TIME_LIMIT = flags.DEFINE_float("time_limit_minutes", -1.0,
                                 "Override train.time_limit_minutes of the variant (minutes; -1 keeps it).")


def method_config(variant: str, map_name: str, method: str, seed: int):
    """Return the config of one (map, method, seed) run."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    config = load_config_file(os.path.join(os.path.dirname(__file__), "..", "configs", "commformer", "smax.py"),
                              variant)
    config.env.name = map_name
    config.seed = seed
    config.gating.enabled = method == "commformer_gated"
    if method in ("full", "none"):
        config.graph.mode = method
    if method == "mappo":
        config.model.kind = "mappo"
    if _TIME_LIMIT.value >= 0:
        config.train.time_limit_minutes = _TIME_LIMIT.value
    experiment.validate(config)
    return config


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


def main(argv):
    del argv
    seeds = [int(seed) for seed in _SEEDS.value]
    lines = [f"Variant '{_VARIANT.value or 'default'}', seeds {seeds}; mean ± standard error over seeds"
             + (f"; time limit {_TIME_LIMIT.value:g} minutes per run." if _TIME_LIMIT.value >= 0 else "."), "",
             "| map | method | test win rate (%) | receive rate (% of agent-steps) | minutes to target | "
             "env steps to target | env steps/s |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for map_name in _MAPS.value:
        for method in _METHODS.value:
            results = []
            for seed in seeds:
                workdir = os.path.join(_WORKDIR.value, map_name, method, f"seed{seed}")
                path = os.path.join(workdir, "results.json")
                if not os.path.exists(path):
                    logging.info("Running %s %s seed %d in %s.", map_name, method, seed, workdir)
                    experiment.run(method_config(_VARIANT.value, map_name, method, seed), workdir)
                with open(path) as file:
                    results.append(json.load(file))
            reached = [r["minutes_to_target"] for r in results]
            lines.append(" | ".join([
                f"| {map_name}", method, _cell([r["test_win_rate"] for r in results]),
                _cell([r["test_gate_rate"] for r in results]),
                f"{_cell(reached, 1.0)} ({sum(m is not None for m in reached)}/{len(results)} reached)",
                _cell([r["env_steps_to_target"] for r in results], 1.0, 0),
                _cell([r["env_steps_per_s"] for r in results], 1.0, 0)]) + " |")
    lines += ["", "Receive rate: the percentage of agent-steps with an open gate in the greedy test episodes "
              "(100% without gating). Minutes are the wall-clock time of training and evaluation, compilation included."]
    record = commformer_record.record_header() + "\n" + "\n".join(lines)
    print(record)
    if _WRITE_DOC.value:
        commformer_record.replace_section(_SECTION.value, record)


if __name__ == "__main__":
    app.run(main)
