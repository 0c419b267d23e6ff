"""AdaMerging: entropy decreases, coefficients stay clamped, scan and step loops agree."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlab import merging

from tests.merging.conftest import task_logits


def _problem(synthetic_tasks, **kwargs):
    vectors = merging.task_vectors(synthetic_tasks.pretrained, synthetic_tasks.experts)
    logits_fn = lambda params, task, x: task_logits(params, synthetic_tasks.heads, task, x)
    return merging.adamerging(synthetic_tasks.pretrained, vectors, logits_fn, **kwargs)


def _batches(synthetic_tasks, num_steps, batch_size=16):
    # Unlabelled test inputs, num_steps batches per task: [num_steps, batch, 8].
    return tuple(x[: num_steps * batch_size].reshape(num_steps, batch_size, -1) for x, _ in synthetic_tasks.test)


def test_prediction_entropy_values():
    assert float(merging.prediction_entropy(jnp.zeros((2, 4)))) == pytest.approx(np.log(4), rel=1e-6)
    assert float(merging.prediction_entropy(jnp.array([[100.0, 0.0]]))) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("granularity", ["task", "layer"])
def test_entropy_decreases(synthetic_tasks, granularity):
    problem = _problem(synthetic_tasks, granularity=granularity, optimizer=optax.adam(0.05))
    state, metrics = jax.jit(merging.fit_adamerging, static_argnums=0)(
        problem, problem.init(), _batches(synthetic_tasks, 16))
    first, last = float(metrics["loss"][0]), float(metrics["loss"][-1])
    assert last < 0.9 * first
    assert int(state.step) == 16
    expected_shape = (3,) if granularity == "task" else (3, 4)
    assert state.coefficients.shape == expected_shape


def test_initial_merge_is_task_arithmetic(synthetic_tasks):
    problem = _problem(synthetic_tasks, granularity="layer")
    expected = merging.task_arithmetic(synthetic_tasks.pretrained, synthetic_tasks.experts, 0.3)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), problem.merge(problem.init()), expected)


def test_clamped_coefficients(synthetic_tasks):
    problem = _problem(synthetic_tasks, granularity="task", optimizer=optax.sgd(100.0))
    state, _ = merging.fit_adamerging(problem, problem.init(), _batches(synthetic_tasks, 3))
    used = np.asarray(problem.coefficients(state))
    assert used.min() >= 0.0
    assert used.max() <= 1.0
    merged = problem.merge(state)
    expected = merging.task_arithmetic(synthetic_tasks.pretrained, synthetic_tasks.experts, jnp.asarray(used))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), merged, expected)


def test_unclamped_matches_raw(synthetic_tasks):
    problem = _problem(synthetic_tasks, granularity="task", clamp=False, optimizer=optax.sgd(100.0))
    state, _ = merging.fit_adamerging(problem, problem.init(), _batches(synthetic_tasks, 3))
    np.testing.assert_array_equal(problem.coefficients(state), state.coefficients)


def test_scan_equals_step_loop(synthetic_tasks):
    problem = _problem(synthetic_tasks, granularity="layer")
    batches = _batches(synthetic_tasks, 4)
    scanned, _ = merging.fit_adamerging(problem, problem.init(), batches)
    state = problem.init()
    step = jax.jit(problem.step)
    for index in range(4):
        state, _ = step(state, tuple(b[index] for b in batches))
    np.testing.assert_allclose(scanned.coefficients, state.coefficients, rtol=1e-5, atol=1e-7)


def test_adamerging_plus_plus_uses_ties_vectors(synthetic_tasks):
    problem = _problem(synthetic_tasks, granularity="task", ties_keep_fraction=0.2)
    vectors = merging.task_vectors(synthetic_tasks.pretrained, synthetic_tasks.experts)
    selected = merging.ties_selected_task_vectors(vectors, 0.2)
    expected = merging.merge_task_vectors(synthetic_tasks.pretrained, selected, 0.3)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), problem.merge(problem.init()), expected)


def test_wrong_batch_count(synthetic_tasks):
    problem = _problem(synthetic_tasks)
    with pytest.raises(ValueError, match="2 batches for 3 tasks"):
        problem.step(problem.init(), _batches(synthetic_tasks, 1)[:2])


def test_invalid_granularity(synthetic_tasks):
    with pytest.raises(ValueError, match="granularity='block'"):
        _problem(synthetic_tasks, granularity="block")
