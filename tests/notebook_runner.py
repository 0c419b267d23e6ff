"""Execute a notebook in a fresh kernel, as the tour tests do."""

from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def execute_notebook(name: str, cell_timeout_s: int = 120) -> list[dict]:
    """Run notebooks/<name> from its own folder and return the outputs of all code cells."""
    path = NOTEBOOKS / name
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=cell_timeout_s, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    return [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])]


def has_error(outputs: list[dict]) -> bool:
    return any(output.get("output_type") == "error" for output in outputs)


def has_image(outputs: list[dict]) -> bool:
    return any("image/png" in output.get("data", {}) for output in outputs)
