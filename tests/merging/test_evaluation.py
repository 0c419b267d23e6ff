"""The evaluation harness on tiny MLPs and synthetic tasks, with every row of the papers' table."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlab import merging
from jaxlab.merging import evaluation

from tests.merging.conftest import task_logits


def _tasks(synthetic_tasks):
    return [
        evaluation.EvaluationTask(name=f"task{t}",
                                  logits_fn=functools.partial(_head_logits, heads=tuple(synthetic_tasks.heads), task=t),
                                  inputs=x, labels=y)
        for t, (x, y) in enumerate(synthetic_tasks.test)
    ]


def _head_logits(params, inputs, heads, task):
    return task_logits(params, heads, task, inputs)


def test_accuracy_matches_numpy(synthetic_tasks):
    task = _tasks(synthetic_tasks)[1]
    expert = synthetic_tasks.experts[1]
    logits = np.asarray(task.logits_fn(expert, task.inputs))
    expected = np.mean(logits.argmax(-1) == np.asarray(task.labels))
    # batch_size 100 leaves a padded last batch of 56 examples.
    assert evaluation.accuracy(task, expert, batch_size=100) == pytest.approx(expected)


def test_label_count_checked(synthetic_tasks):
    task = _tasks(synthetic_tasks)[0]
    broken = evaluation.EvaluationTask(task.name, task.logits_fn, task.inputs[:10], task.labels)
    with pytest.raises(ValueError, match="256 labels but inputs of shape \\(10, 8\\)"):
        evaluation.accuracy(broken, synthetic_tasks.pretrained)


def test_paper_table(synthetic_tasks, tmp_path):
    tasks = _tasks(synthetic_tasks)
    pretrained, experts = synthetic_tasks.pretrained, synthetic_tasks.experts
    vectors = merging.task_vectors(pretrained, experts)

    fishers = []
    for t, expert in enumerate(experts):
        log_likelihood = merging.categorical_log_likelihood(
            functools.partial(_head_logits, heads=tuple(synthetic_tasks.heads), task=t))
        fishers.append(merging.diagonal_fisher(log_likelihood, expert, synthetic_tasks.train[t], batch_size=64))

    def linear_inputs(params, x):
        h = jax.nn.relu(x @ params["fc1"]["kernel"] + params["fc1"]["bias"])
        return {"fc1/kernel": x, "fc2/kernel": h}

    grams = [merging.gram_matrices(linear_inputs, expert, x.reshape(4, 64, -1))
             for expert, (x, _) in zip(experts, synthetic_tasks.train)]

    logits_fn = lambda params, task, x: task_logits(params, synthetic_tasks.heads, task, x)
    batches = tuple(x[:240].reshape(15, 16, -1) for x, _ in synthetic_tasks.test)
    adamerged = {}
    for granularity in ("task", "layer"):
        problem = merging.adamerging(pretrained, vectors, logits_fn, granularity=granularity,
                                     optimizer=optax.adam(0.02))
        state, _ = merging.fit_adamerging(problem, problem.init(), batches)
        adamerged[granularity] = problem.merge(state)

    models = {
        "Individual": experts,
        "Traditional MTL": synthetic_tasks.joint,
        "Weight Averaging": merging.weight_average(experts),
        "Fisher Merging": merging.fisher_merging(experts, fishers),
        "RegMean": merging.regmean_merging(experts, grams, alpha=0.95),
        "Task Arithmetic": merging.task_arithmetic(pretrained, experts, 0.3),
        "Ties-Merging": merging.ties_merging(pretrained, experts),
        "Task-wise AdaMerging": adamerged["task"],
        "Layer-wise AdaMerging": adamerged["layer"],
        "Pretrained": pretrained,
    }
    results = evaluation.evaluate_methods(models, tasks)
    for method, row in results.items():
        assert row["Avg"] == pytest.approx(np.mean([row[task.name] for task in tasks])), method
    assert results["Individual"]["Avg"] > 0.8
    assert results["Traditional MTL"]["Avg"] > 0.8
    # Every merge should beat the untrained backbone with the same heads.
    for method in evaluation.PAPER_ROWS[2:]:
        assert results[method]["Avg"] > results["Pretrained"]["Avg"], method

    path = tmp_path / "results.md"
    evaluation.write_results_table(str(path), results, [task.name for task in tasks], title="Synthetic tasks")
    lines = path.read_text().splitlines()
    assert lines[2] == "| Method | task0 | task1 | task2 | Avg |"
    methods = [line.split("|")[1].strip() for line in lines[4:]]
    assert methods == [*evaluation.PAPER_ROWS, "Pretrained"]
    individual = lines[4].split("|")
    assert float(individual[-2]) == pytest.approx(100 * results["Individual"]["Avg"], abs=0.051)


def test_per_task_params_count_checked(synthetic_tasks):
    with pytest.raises(ValueError, match="2 parameter trees for 3 tasks"):
        evaluation.evaluate(synthetic_tasks.experts[:2], _tasks(synthetic_tasks))
