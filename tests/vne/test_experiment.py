"""End-to-end tests of the vne_baselines experiment: outputs, validation and resume."""

import json
import shutil
from pathlib import Path

import pytest

from jaxlab.core import config as config_lib
from jaxlab.vne import experiment

CONFIG_PATH = Path(__file__).resolve().parents[2] / "configs" / "vne" / "baselines.py"


def _tiny_config():
    config = config_lib.load_config_file(CONFIG_PATH, "quick")
    config.topologies = ("geant",)
    config.arrival_rates.geant = (0.02, 0.05)
    config.solvers = ("nrm_rank", "grc_rank")
    config.num_requests = 60
    config.k_paths = 4
    return config


def _without_times(results):
    return [{k: v for k, v in record.items() if k != "solve_time_ms"} for record in results["records"]]


def test_run_writes_results_and_resumes(tmp_path):
    config = _tiny_config()
    experiment.validate(config)
    results = experiment.run(config, str(tmp_path))

    records = results["records"]
    assert [(r["solver"], r["arrival_rate"]) for r in records] == [
        (solver, rate) for solver in config.solvers for rate in config.arrival_rates.geant]
    for record in records:
        assert 0.0 < record["acceptance_rate"] <= 1.0
        assert 0.0 < record["r2c"] <= 1.0
        assert record["accepted"] == round(record["acceptance_rate"] * 60)
    assert json.loads((tmp_path / "results.json").read_text()) == json.loads(json.dumps(results))
    assert (tmp_path / "acceptance_vs_rate.png").stat().st_size > 0
    assert "grc_rank" in (tmp_path / "results.md").read_text()
    assert sorted(p.name for p in (tmp_path / "traces").iterdir()) == ["geant_rate0.02.npz", "geant_rate0.05.npz"]

    # Drop the last checkpoint and the results: the rerun redoes only the second solver.
    shutil.rmtree(tmp_path / "checkpoints" / "2")
    (tmp_path / "results.json").unlink()
    resumed = experiment.run(config, str(tmp_path))
    assert _without_times(resumed) == _without_times(results)
    assert resumed["records"][0]["solve_time_ms"] == results["records"][0]["solve_time_ms"]
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 1]


@pytest.mark.parametrize("field,value,message", [
    ("topologies", ("wx100", "atlantis"), r"topologies\[1\]"),
    ("arrival_rates.geant", (0.0,), "arrival_rates.geant"),
    ("arrival_rates.geant", (0.05, 0.02), r"arrival_rates.geant\[1\]"),
    ("solvers", ("nrm_rank", "nrm_rank"), "solvers"),
    ("solvers", ("mcts",), r"solvers\[0\]"),
    ("arrival_process", "uniform", "arrival_process"),
    ("k_paths", 0, "k_paths"),
    ("max_nodes", 1, "max_nodes"),
])
def test_validate_rejects_bad_values(field, value, message):
    config = _tiny_config()
    with config.unlocked():
        parent, _, leaf = field.rpartition(".")
        target = config_lib.get_field(config, parent) if parent else config
        setattr(target, leaf, value)
    with pytest.raises(config_lib.ConfigError, match=message):
        experiment.validate(config)


def test_quick_and_default_configs_validate():
    for variant in ("", "quick"):
        experiment.validate(config_lib.load_config_file(CONFIG_PATH, variant))
