"""The `commformer` experiment end to end: outputs, checkpoint/resume and config validation."""

import functools
import json
import os
import shutil

import jax
import pytest

from jaxlab.commformer import experiment, train
from jaxlab.core.config import ConfigError, load_config_file
from tests.commformer.conftest import CONFIG_PATH

# Results that differ between runs only through wall-clock time.
TIMING_KEYS = ("train_minutes", "env_steps_per_s", "minutes_to_target")


def _without_timing(results: dict) -> dict:
    results = {k: v for k, v in results.items() if k not in TIMING_KEYS}
    results["evaluations"] = [{k: v for k, v in e.items() if k != "elapsed_s"} for e in results["evaluations"]]
    return results


def test_run_resumes_to_identical_results(make_tiny_config, tmp_path, monkeypatch):
    # One trainer for both runs, so the test compiles once; `run` builds it from the same config each time.
    config = make_tiny_config()
    build = train.make_train
    make_train = functools.lru_cache(maxsize=1)(lambda _: build(config))
    monkeypatch.setattr(experiment.train_lib, "make_train", lambda c: make_train(c.to_json()))
    experiment.validate(config)

    full_dir, resumed_dir = tmp_path / "full", tmp_path / "resumed"
    results = experiment.run(config, str(full_dir))
    for name in ("results.json", "metrics.jsonl", "graph.png", "gate_rate.png", "win_rate.png"):
        assert (full_dir / name).is_file(), name
    assert results["updates"] == 4
    assert results["env_steps"] == 4 * 2 * 8
    assert len(results["evaluations"]) == 2
    assert 0.0 <= results["test_gate_rate"] <= 1.0
    assert results["num_links"] == 1
    for row_index, row in enumerate(results["adjacency"]):
        assert row[row_index] == 0.0
        assert sum(row) == 1.0

    # The last checkpoint reproduces the final evaluation when given its key (chunk 1 of eval key 1).
    final_key = jax.random.fold_in(jax.random.fold_in(jax.random.key(config.seed), 1), 1)
    evaluation = experiment.evaluate_checkpoint(config, str(full_dir), key=final_key)
    assert evaluation["win_rate"] == results["test_win_rate"]
    assert evaluation["episode_return"] == pytest.approx(results["test_episode_return"], rel=1e-6)
    assert evaluation["gate_rate"] == pytest.approx(results["test_gate_rate"], rel=1e-6)
    with pytest.raises(ValueError, match="episodes=0"):
        experiment.evaluate_checkpoint(config, str(full_dir), episodes=0)
    with pytest.raises(ValueError, match="key=0"):
        experiment.evaluate_checkpoint(config, str(full_dir), key=0)
    legacy_key = jax.random.key_data(final_key)  # uint32[2], as jax.random.PRNGKey returns.
    assert experiment.evaluate_checkpoint(config, str(full_dir), key=legacy_key)["win_rate"] == results["test_win_rate"]
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        experiment.evaluate_checkpoint(config, str(tmp_path / "untrained"))

    # Interrupt after the first chunk: keep only its checkpoint, then run again in that directory.
    shutil.copytree(full_dir, resumed_dir)
    shutil.rmtree(resumed_dir / "checkpoints" / "2")
    resumed = experiment.run(config, str(resumed_dir))
    assert _without_timing(resumed) == _without_timing(results)
    with open(resumed_dir / "metrics.jsonl") as lines:
        steps = [json.loads(line)["step"] for line in lines]
    assert steps.count(3) == 2  # The training line and the eval line of the last update, once each.
    assert sorted(set(steps)) == [0, 1, 2, 3]


@pytest.mark.parametrize("field, value", [
    ("env.name", "27m_vs_30m"), ("env.continuous_actions", True), ("model.kind", "mat"),
    ("model.num_heads", 3), ("graph.mode", "sparse"), ("graph.sparsity", 0.0), ("graph.alpha_period", 1),
    ("ppo.num_minibatches", 7), ("ppo.gamma", 1.5), ("gating.cost", -1.0), ("train.total_env_steps", 0),
])
def test_validate_rejects_bad_fields(field, value):
    config = load_config_file(CONFIG_PATH, "quick")
    section, name = field.split(".")
    config[section][name] = value
    with pytest.raises(ConfigError) as error:
        experiment.validate(config)
    assert error.value.field == field


@pytest.mark.parametrize("name, variant", [("smax", ""), ("smax", "cpu"), ("smax", "quick"), ("mpe", ""),
                                           ("mpe", "cpu"), ("mpe", "quick"), ("mpe", "continuous")])
def test_config_variants_validate(name, variant):
    path = os.path.join(os.path.dirname(CONFIG_PATH), f"{name}.py")
    experiment.validate(load_config_file(path, variant))
