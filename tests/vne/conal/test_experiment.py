"""Config variants, validation and (slow) one end-to-end run of the vne_conal experiment."""

import importlib.util
import json
import os

import pytest

from jaxlab.core.config import ConfigError
from jaxlab.vne.conal import experiment

_CONFIG = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, os.pardir, "configs", "vne", "conal.py")


def get_config(variant=""):
    spec = importlib.util.spec_from_file_location("vne_conal_config", _CONFIG)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant)


@pytest.mark.parametrize("variant", ["", "cpu", "quick", "quick,wo_ha", "cpu,wo_pc,wo_reach", "quick,wo_arb",
                                     "quick,ppo_gat"])
def test_variants_validate(variant):
    experiment.validate(get_config(variant))


def test_variant_flags_and_names():
    assert experiment._variant_name(get_config("quick")) == "conal"
    assert experiment._variant_name(get_config("quick,wo_ha,wo_pc")) == "conal_wo_ha_wo_pc"
    assert experiment._variant_name(get_config("quick,ppo_gat")) == "ppo_gat"
    ppo = experiment.train_config(get_config("quick,ppo_gat"))
    assert not ppo.constrained
    assert not ppo.stream.tolerant
    assert not ppo.path_contrast
    full = experiment.train_config(get_config(""))
    assert full.constrained
    assert full.stream.tolerant
    assert full.adaptive_budget
    assert full.reachability
    assert full.hidden == 128
    assert full.num_layers == 3


def test_unknown_variant_is_rejected():
    with pytest.raises(ValueError, match="unknown ablation 'wo_xyz'"):
        get_config("quick,wo_xyz")
    with pytest.raises(ValueError, match="unknown size 'huge'"):
        get_config("huge")


@pytest.mark.parametrize("field, value", [
    ("method", "dqn"),
    ("ablation.reachability", 1),
    ("train_topology", "wx500"),
    ("train.greedy_capacity", 10_000),
    ("train.contrast_states", 1000),
    ("train.clip_epsilon", 1.5),
    ("eval.test_seeds", (1, 1)),
    ("eval.baselines", ("grc_rank", "mcts")),
    ("min_nodes", 65),
    ("max_nodes", 0),
])
def test_invalid_fields_are_rejected(field, value):
    config = get_config("quick")
    node = config
    *parents, last = field.split(".")
    for parent in parents:
        node = node[parent]
    with node.ignore_type():
        node[last] = value
    with pytest.raises(ConfigError) as error:
        experiment.validate(config)
    assert error.value.field.split("[")[0] in (field, "eval.baselines")


@pytest.mark.slow
def test_quick_run_writes_results(tmp_path):
    config = get_config("quick")
    config.train.epochs = 1
    config.train.requests_per_epoch = 120
    config.eval.topologies = ("wx100",)
    config.eval.num_requests = 60
    results = experiment.run(config, str(tmp_path))
    with open(tmp_path / "results.json") as f:
        saved = json.load(f)
    assert saved["records"] == json.loads(json.dumps(results["records"]))
    solvers = {record["solver"] for record in results["records"]}
    assert solvers == {"conal", "grc_rank", "nrm_rank"}
    assert all(record["violations"] == 0 for record in results["records"])
    assert (tmp_path / "results.md").exists()
    assert (tmp_path / "metrics.jsonl").exists()
    rerun = experiment.run(config, str(tmp_path))
    assert rerun["records"][0]["acceptance_rate"] == results["records"][0]["acceptance_rate"]
