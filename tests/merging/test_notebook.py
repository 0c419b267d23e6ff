"""Execute the merging tour notebook and the self-contained example of docs/merging.md."""

import importlib.util
import re
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxlab.data import text
from jaxlab.models import minilm
from tests.notebook_runner import execute_notebook, has_error

DOCS = Path(__file__).resolve().parents[2] / "docs" / "merging.md"
EXAMPLE_HEADING = "## Self-contained example"
TABLE_ROWS = ("Individual", "Pretrained", "Weight Averaging", "Task Arithmetic", "Ties-Merging", "DARE",
              "Fisher Merging", "RegMean", "Task-wise AdaMerging", "Layer-wise AdaMerging")
NOTEBOOK_TASKS = 3


def printed_text(outputs: list[dict]) -> str:
    return "".join(output.get("text", "") for output in outputs if output.get("output_type") == "stream")


@pytest.mark.skipif(not (text.wordnet_dir() / "data.noun").is_file(),
                    reason="WordNet database files not found; install Debian's wordnet-base")
@pytest.mark.skipif(importlib.util.find_spec(minilm.PACKAGE) is None,
                    reason=f"all-MiniLM-L6-v2 weights not installed; run `{minilm.INSTALL_HINT}`")
def test_merging_tour_notebook_runs(tmp_path, monkeypatch):
    # The kernel inherits the environment, so the WordNet tasks are cached under tmp_path.
    monkeypatch.setenv("JAXLAB_DATA", str(tmp_path))
    # The notebook needs about 60 s of CPU time. The long cell timeout keeps it passing on a loaded machine.
    outputs = execute_notebook("merging_tour.ipynb", cell_timeout_s=300)
    assert not has_error(outputs), [o.get("evalue") for o in outputs if o.get("output_type") == "error"]

    printed = printed_text(outputs)
    for row in TABLE_ROWS:
        match = re.search(rf"^{re.escape(row)}\s+((?:\d+\.\d\s+){{{NOTEBOOK_TASKS + 1}}})\d+\.\d\d$",
                          printed, flags=re.MULTILINE)
        assert match is not None, f"the results table has no row '{row}':\n{printed}"
        accuracies = [float(value) for value in match.group(1).split()]
        assert all(0.0 <= value <= 100.0 for value in accuracies), (row, accuracies)
        assert accuracies[-1] == pytest.approx(np.mean(accuracies[:-1]), abs=0.11), (row, accuracies)


def docs_example_source() -> str:
    """Return the first ```python block after the self-contained example heading of docs/merging.md."""
    markdown = DOCS.read_text()
    assert EXAMPLE_HEADING in markdown, f"{DOCS} has no '{EXAMPLE_HEADING}' section"
    section = markdown.split(EXAMPLE_HEADING, 1)[1]
    match = re.search(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert match is not None, f"the '{EXAMPLE_HEADING}' section of {DOCS} has no python block"
    return match.group(1)


def test_docs_example_runs(capsys):
    namespace: dict = {}
    exec(compile(docs_example_source(), str(DOCS), "exec"), namespace)
    results, models, pretrained = namespace["results"], namespace["models"], namespace["pretrained"]

    assert "Weight Averaging" in capsys.readouterr().out
    for task in ("task_0", "task_1"):
        assert results["Individual"][task] > results["Pretrained"][task] + 0.3, task
    for name, params in models.items():
        if name == "Individual":
            continue
        assert jax.tree.structure(params) == jax.tree.structure(pretrained), name
        for leaf in jax.tree.leaves(params):
            assert np.all(np.isfinite(np.asarray(leaf))), name
        assert 0.0 <= results[name]["Avg"] <= 1.0, name
    for name in ("Weight Averaging", "Task Arithmetic", "Fisher Merging", "RegMean"):
        assert results[name]["Avg"] > results["Pretrained"]["Avg"] + 0.3, name
