"""Execute the offline-RL tour notebook in a fresh kernel."""

from tests.notebook_runner import execute_notebook, has_error, has_image


def test_offline_rl_tour_notebook_runs(tmp_path, monkeypatch):
    # The kernel inherits the environment, so the notebook's shards are cached under tmp_path.
    monkeypatch.setenv("JAXLAB_DATA", str(tmp_path))
    outputs = execute_notebook("offline_rl_tour.ipynb", cell_timeout_s=300)

    errors = [output.get("evalue") for output in outputs if output.get("output_type") == "error"]
    assert not has_error(outputs), errors
    assert has_image(outputs)
