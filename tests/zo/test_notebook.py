"""Execute the zeroth-order tour notebook end to end."""

import pytest

from jaxlab.data import text
from tests.notebook_runner import execute_notebook, has_error, has_image


@pytest.mark.skipif(not (text.wordnet_dir() / "data.noun").is_file(),
                    reason="WordNet database files not found; install Debian's wordnet-base")
def test_zo_tour_notebook_runs():
    outputs = execute_notebook("zo_tour.ipynb")
    assert not has_error(outputs), [o.get("evalue") for o in outputs if o.get("output_type") == "error"]
    assert has_image(outputs), "the loss curves were not drawn"
