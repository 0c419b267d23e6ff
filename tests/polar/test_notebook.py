"""Execute the polar tour notebook end to end."""

from tests.notebook_runner import execute_notebook, has_error, has_image


def test_polar_tour_notebook_runs():
    outputs = execute_notebook("polar_tour.ipynb")
    assert not has_error(outputs)
    assert has_image(outputs), "the BLER plot was not drawn"
