"""Execute the VNE tour notebook end to end."""

from tests.notebook_runner import execute_notebook, has_error, has_image


def test_vne_tour_notebook_runs():
    # The CONAL training cell compiles the whole training update (about 50 s of CPU time), which takes
    # more than the default 120 s per cell on a loaded 2-core machine.
    outputs = execute_notebook("vne_tour.ipynb", cell_timeout_s=300)
    assert not has_error(outputs)
    assert has_image(outputs), "the acceptance plot was not drawn"
    images = sum("image/png" in output.get("data", {}) for output in outputs)
    assert images == 2, f"expected the baseline plot and the CONAL-against-GRC plot, got {images} images"
