"""Execute the VNE tour notebook end to end."""

from tests.notebook_runner import execute_notebook, has_error, has_image


def test_vne_tour_notebook_runs():
    outputs = execute_notebook("vne_tour.ipynb")
    assert not has_error(outputs)
    assert has_image(outputs), "the acceptance plot was not drawn"
