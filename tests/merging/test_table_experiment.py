"""End-to-end test of the `merging_table` experiment on the quick image suite."""

import json
import os
import re

import numpy as np
import pytest

from jaxlab.core import config as config_lib
from jaxlab.data import images as images_lib
from jaxlab.merging import evaluation
from jaxlab.merging import table_experiment
from jaxlab.models import classification
from jaxlab.models import experts as experts_lib

CONFIG_PATH = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "configs", "merging", "image_table.py")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """Run the quick variant once, with the image suite and experts cached in a temporary JAXLAB_DATA."""
    data_dir = tmp_path_factory.mktemp("data")
    workdir = str(tmp_path_factory.mktemp("run"))
    previous = os.environ.get("JAXLAB_DATA")
    os.environ["JAXLAB_DATA"] = str(data_dir)
    try:
        config = config_lib.load_config_file(CONFIG_PATH, "quick")
        results = table_experiment.run(config, workdir)
        yield config, workdir, results
    finally:
        if previous is None:
            os.environ.pop("JAXLAB_DATA")
        else:
            os.environ["JAXLAB_DATA"] = previous


def test_table_rows_in_paper_order(quick_run):
    config, workdir, results = quick_run
    with open(os.path.join(workdir, "results.md")) as file:
        lines = file.read().splitlines()
    cells = [line.split("|")[1].strip() for line in lines if line.startswith("|")]
    rows = cells[2:]  # After the header and the separator line.
    assert rows == [name for name in evaluation.PAPER_ROWS if name in table_experiment.METHODS]
    assert rows == list(config.methods)


def test_accuracies_are_valid(quick_run):
    config, workdir, results = quick_run
    with open(os.path.join(workdir, "results.json")) as file:
        stored = json.load(file)
    columns = [*config.experts.data.tasks, "Avg"]
    for method in config.methods:
        values = [stored["accuracy_mean"][method][column] for column in columns]
        assert all(0.0 <= value <= 1.0 for value in values), (method, values)
        per_task = values[:-1]
        assert values[-1] == pytest.approx(np.mean(per_task))
        # One fine-tuning seed gives no standard error.
        assert all(stored["accuracy_stderr"][method][column] is None for column in columns)


def test_individual_is_expert_accuracy(quick_run):
    config, _, results = quick_run
    model, _, heads, experts = experts_lib.load_experts(config.experts, finetune_seed=0)
    tasks = experts_lib.load_tasks(config.experts)
    for task, head, expert in zip(tasks, heads, experts):
        expected = classification.accuracy(model, expert, head, task.test_images, task.test_labels)
        assert results["accuracy_mean"]["Individual"][task.name] == pytest.approx(expected, abs=1e-9), task.name


def test_merges_differ_from_experts(quick_run):
    _, _, results = quick_run
    individual = results["accuracy_mean"]["Individual"]["Avg"]
    for method in ("Weight Averaging", "Task Arithmetic", "Layer-wise AdaMerging"):
        assert results["accuracy_mean"][method]["Avg"] != individual, method


def test_adamerging_lowers_entropy(quick_run):
    _, _, results = quick_run
    for method in ("Task-wise AdaMerging", "Layer-wise AdaMerging"):
        metrics = results["method_metrics"]["0"][method]
        assert metrics["entropy_last_step"] < metrics["entropy_first_step"], method
        assert 0.0 <= metrics["coefficient_min"] <= metrics["coefficient_max"] <= 1.0


def test_scaling_chosen_on_validation(quick_run):
    config, _, results = quick_run
    for method, grid in (("Task Arithmetic", config.task_arithmetic.scaling_grid),
                         ("Ties-Merging", config.ties.scaling_grid)):
        metrics = results["method_metrics"]["0"][method]
        averages = metrics["validation_average"]
        assert sorted(averages) == sorted(str(scaling) for scaling in grid)
        assert averages[str(metrics["scaling"])] == max(averages.values())


def test_select_scaling_keeps_best_and_first_of_ties():
    tasks = [evaluation.EvaluationTask("task", lambda params, x: x * params, np.array([[1.0, -1.0], [-1.0, 1.0]]),
                                       np.array([0, 1]))]
    # The "tower" is a scalar that multiplies the logits: positive scalings classify both examples right.
    tower, metrics = table_experiment._select_scaling(lambda scaling: scaling - 0.25, (0.1, 0.5, 0.9), tasks, 2)
    assert metrics["scaling"] == 0.5
    assert tower == pytest.approx(0.25)
    assert metrics["validation_average"] == {"0.1": 0.0, "0.5": 1.0, "0.9": 1.0}
    tower, metrics = table_experiment._select_scaling(lambda scaling: scaling, (0.7,), tasks, 2)
    assert metrics == {"scaling": 0.7}


def test_validation_split_differs_from_train_and_test():
    train, _ = images_lib.generate_split("shapes", "train", 50, 0)
    test, _ = images_lib.generate_split("shapes", "test", 50, 0)
    validation, labels = images_lib.generate_split("shapes", "validation", 50, 0)
    again, _ = images_lib.generate_split("shapes", "validation", 50, 0)
    np.testing.assert_array_equal(validation, again)
    assert not np.array_equal(validation, train)
    assert not np.array_equal(validation, test)
    assert labels.shape == (50,)


def test_rerun_reads_method_cache(quick_run, monkeypatch):
    config, workdir, results = quick_run

    def fail(*args, **kwargs):
        raise AssertionError("a finished method was recomputed")

    monkeypatch.setattr(table_experiment, "_merged_tower", fail)
    again = table_experiment.run(config, workdir)
    assert again["accuracy_per_seed"] == results["accuracy_per_seed"]


def test_paper_ordering_check():
    averages = {"Individual": 0.9, "Layer-wise AdaMerging": 0.8, "Ties-Merging": 0.7, "Task Arithmetic": 0.7,
                "Weight Averaging": 0.6}
    assert table_experiment.check_paper_ordering(averages)["holds"] is True
    assert table_experiment.check_paper_ordering({**averages, "Task Arithmetic": 0.71})["holds"] is False
    assert table_experiment.check_paper_ordering({"Individual": 0.9})["holds"] is None


@pytest.mark.parametrize("field, value, named_field", [
    ("methods", ("Individual", "Model Soup"), "methods"),
    ("ties.keep_fraction", 0.0, "ties.keep_fraction"),
    ("regmean.num_examples", 65, "regmean.num_examples"),
    ("adamerging.steps", 0, "adamerging.steps"),
    ("task_arithmetic.scaling_grid", (), "task_arithmetic.scaling_grid"),
    ("ties.scaling_grid", (0.3, -0.1), "ties.scaling_grid[1]"),
    ("validation.num_examples", 0, "validation.num_examples"),
    ("experts.model.num_heads", 5, "experts.model.num_heads"),
])
def test_validate_rejects_invalid_fields(field, value, named_field):
    config = config_lib.load_config_file(CONFIG_PATH, "quick")
    with config.unlocked():
        section, _, name = field.rpartition(".")
        (config if not section else eval("config." + section))[name] = value
    with pytest.raises(config_lib.ConfigError, match=f"invalid config: {re.escape(named_field)}="):
        table_experiment.validate(config)


def test_config_variants_validate():
    for variant in ("", "quick"):
        table_experiment.validate(config_lib.load_config_file(CONFIG_PATH, variant))
