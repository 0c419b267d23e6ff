"""Execute the CommFormer tour notebook end to end."""

from tests.notebook_runner import execute_notebook, has_error, has_image


def test_commformer_tour_notebook_runs():
    outputs = execute_notebook("commformer_tour.ipynb", cell_timeout_s=240)
    assert not has_error(outputs)
    assert has_image(outputs), "the graph heatmap and the gate-rate plot were not drawn"
