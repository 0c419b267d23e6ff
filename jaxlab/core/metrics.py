"""Run outputs in the workdir: metrics.jsonl, TensorBoard events, results.json, tables and plots."""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from absl import logging

METRICS_FILE = "metrics.jsonl"
RESULTS_FILE = "results.json"


def _write_atomically(path: str | os.PathLike[str], text: str) -> None:
    """Write `text` to a temporary file next to `path`, then rename it over `path`.

    Readers see either the old or the new file, never a partial one, because
    os.replace is atomic within one file system.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates the file with mode 0600; give it the mode a plain open() would under the umask.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise


def _to_scalar(name: str, step: int, value: Any) -> int | float:
    """Convert a Python, NumPy or JAX scalar to an int or float for JSON."""
    array = np.asarray(value)
    if array.shape != ():
        raise ValueError(f"Metric '{name}' at step {step} has shape {array.shape}, but write_scalars "
                         "takes scalars only. Reduce it first, e.g. with .mean().")
    if array.dtype == np.bool_ or np.issubdtype(array.dtype, np.integer):
        return int(array)
    if np.issubdtype(array.dtype, np.floating):
        return float(array)
    raise ValueError(f"Metric '{name}' at step {step} has dtype {array.dtype}, but write_scalars "
                     "takes real numbers only. Convert it to a float or int.")


def _read_steps_upto(path: str, max_step: int) -> tuple[list[str], int]:
    """Return the lines of a metrics file whose step is <= max_step, and how many were dropped."""
    kept_lines, dropped = [], 0
    with open(path) as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                step = json.loads(line)["step"]
            except (json.JSONDecodeError, KeyError, TypeError):
                # A process killed mid-write leaves a partial last line.
                logging.warning("Dropping unreadable line %d of %s: %r", number, path, line[:200])
                dropped += 1
                continue
            if step <= max_step:
                kept_lines.append(line if line.endswith("\n") else line + "\n")
            else:
                dropped += 1
    return kept_lines, dropped


class MetricWriter:
    """Writes scalar metrics per step to `workdir/metrics.jsonl` and TensorBoard.

    Only process 0 of a multi-host job writes; the other processes accept the
    same calls and do nothing.

    Args:
        workdir: the run directory; created if missing.
        resume_from_step: the step a resumed run restarts from. Lines with a
            larger step are removed from metrics.jsonl, and the event file starts
            with a purge marker that makes TensorBoard discard the events logged
            after it, so replayed steps are not duplicated.
        allow_nonfinite: write NaN and inf values instead of raising. JSON then
            contains the non-standard tokens NaN and Infinity, which Python's
            json module reads back.
    """

    def __init__(self, workdir: str | os.PathLike[str], *, resume_from_step: int | None = None,
                 allow_nonfinite: bool = False):
        self.workdir = os.fspath(workdir)
        self.metrics_path = os.path.join(self.workdir, METRICS_FILE)
        self.allow_nonfinite = allow_nonfinite
        self._enabled = jax.process_index() == 0
        self._jsonl = None
        self._tensorboard = None
        if not self._enabled:
            return

        # Import here so that `import jaxlab.core.metrics` stays cheap.
        from tensorboardX import SummaryWriter

        os.makedirs(self.workdir, exist_ok=True)
        purge_step = None
        if resume_from_step is not None:
            purge_step = resume_from_step + 1
            if os.path.exists(self.metrics_path):
                kept_lines, dropped = _read_steps_upto(self.metrics_path, resume_from_step)
                _write_atomically(self.metrics_path, "".join(kept_lines))
                logging.info("Resuming %s from step %d: kept %d lines, dropped %d.", self.metrics_path,
                             resume_from_step, len(kept_lines), dropped)
        self._jsonl = open(self.metrics_path, "a")
        self._tensorboard = SummaryWriter(logdir=self.workdir, purge_step=purge_step)

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        """Append one line {"step": step, **scalars} and one TensorBoard scalar per metric.

        Raises:
            FloatingPointError: if a value is NaN or infinite and `allow_nonfinite` is False.
            ValueError: if a value is not a real scalar, or a metric is named "step".
        """
        step = int(step)
        if "step" in scalars:
            raise ValueError(
                f"Metric name 'step' at step {step} is reserved for the step number. Rename the metric."
            )
        values = {name: _to_scalar(name, step, value) for name, value in scalars.items()}
        if not self.allow_nonfinite:
            for name, value in values.items():
                if not math.isfinite(value):
                    raise FloatingPointError(
                        f"Metric '{name}' is {value} at step {step}. Lower the learning rate or check the "
                        "inputs, or pass allow_nonfinite=True to MetricWriter to record it anyway."
                    )
        if not self._enabled:
            return
        if self._jsonl is None:
            raise ValueError(f"MetricWriter for {self.workdir} is closed. Create a new one to write more.")
        self._jsonl.write(json.dumps({"step": step, **values}) + "\n")
        self._jsonl.flush()
        for name, value in values.items():
            self._tensorboard.add_scalar(name, value, global_step=step)

    def flush(self) -> None:
        """Push buffered TensorBoard events to disk (metrics.jsonl is flushed on every write)."""
        if self._enabled:
            self._tensorboard.flush()

    def close(self) -> None:
        """Flush and close both files; later writes raise ValueError."""
        if self._enabled and self._jsonl is not None:
            self._jsonl.close()
            self._tensorboard.close()
            self._jsonl = None

    def __enter__(self) -> MetricWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def to_json_safe(value: Any, path: str = "results") -> Any:
    """Convert nested dicts and sequences of Python, NumPy and JAX values into JSON types.

    Scalars become int, float or bool; arrays become (nested) lists; tuples
    become lists. Dict keys must be strings.

    Raises:
        TypeError: for any other type, naming where in the tree it is.
    """
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, Mapping):
        safe = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"Key {key!r} at {path} is a {type(key).__name__}, but JSON keys must be strings.")
            safe[key] = to_json_safe(item, f"{path}/{key}")
        return safe
    if isinstance(value, (list, tuple)):
        return [to_json_safe(item, f"{path}/{i}") for i, item in enumerate(value)]
    if isinstance(value, (np.generic, np.ndarray, jax.Array)):
        array = np.asarray(value)
        if array.dtype.kind in "biuf":
            return array.tolist()
        raise TypeError(f"Value at {path} has dtype {array.dtype}, which JSON cannot store. Convert it first.")
    raise TypeError(f"Value at {path} has type {type(value).__name__}, which JSON cannot store. Convert it "
                    "to a number, string, list or dict first.")


def write_results(workdir: str | os.PathLike[str], results: Mapping[str, Any]) -> str:
    """Write `workdir/results.json` atomically and return its path.

    Values go through `to_json_safe`, so NumPy and JAX scalars and arrays are allowed.
    """
    path = os.path.join(os.fspath(workdir), RESULTS_FILE)
    text = json.dumps(to_json_safe(results), indent=2, sort_keys=True) + "\n"
    _write_atomically(path, text)
    logging.info("Wrote %s.", path)
    return path


def read_metric_series(workdir: str | os.PathLike[str], x_name: str, y_name: str) -> tuple[list, list]:
    """Read one metric against another from `workdir/metrics.jsonl`, e.g. a rate against env steps.

    Records lacking either name are skipped (runs log different metrics at different steps).

    Returns:
        (x, y): lists of equal length, in file order; both empty when no record has both names, so a
        caller that needs points must check.

    Raises:
        FileNotFoundError: the workdir has no metrics.jsonl.
        ValueError: a line is not a JSON object; the message names the file and line.
    """
    path = os.path.join(os.fspath(workdir), METRICS_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"metrics file not found: {path}; pass the workdir of a run that has logged metrics")
    x, y = [], []
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if not isinstance(record, dict):
                raise ValueError(f"{path} line {number} is not a JSON object: {line.strip()[:80]!r}; the file is "
                                 "damaged, so repair or delete that line, or train the run again in an empty workdir")
            if x_name in record and y_name in record:
                x.append(record[x_name])
                y.append(record[y_name])
    return x, y


def _format_cell(value: Any, float_format: str) -> str:
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)) or (isinstance(value, (np.ndarray, jax.Array))
                                                   and np.ndim(value) == 0):
        value = np.asarray(value).item()
    if isinstance(value, float):
        return format(value, float_format)
    return str(value).replace("|", "\\|").replace("\n", " ")


def write_markdown_table(path: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]],
                         columns: Sequence[str], title: str | None = None,
                         float_format: str = ".4g") -> None:
    """Write `rows` as a Markdown table with the given columns, in that order.

    Args:
        path: the .md file to write (replaced atomically).
        rows: one mapping per table row; a missing key gives an empty cell.
        columns: the keys to show, which are also the header.
        title: an optional '# title' line above the table.
        float_format: the format spec for floats, e.g. '.4g' or '.2%'.
    """
    if not columns:
        raise ValueError("columns is empty; name at least one key of the rows to show.")
    lines = []
    if title:
        lines += [f"# {title}", ""]
    lines.append("| " + " | ".join(_format_cell(c, float_format) for c in columns) + " |")
    lines.append("|" + "|".join(" --- " for _ in columns) + "|")
    for row in rows:
        lines.append("| " + " | ".join(_format_cell(row.get(c), float_format) for c in columns) + " |")
    _write_atomically(path, "\n".join(lines) + "\n")


def plot_lines(path: str | os.PathLike[str], series: Sequence[Mapping[str, Any]], xlabel: str,
               ylabel: str, title: str, logy: bool = False) -> None:
    """Draw one line per series and save the figure as a PNG.

    Args:
        path: the .png file to write.
        series: mappings with keys 'x' and 'y' (equal-length sequences) and
            'label' (the legend entry).
        xlabel: the x-axis label, with its unit where there is one.
        ylabel: the y-axis label, with its unit where there is one.
        title: the figure title.
        logy: use a logarithmic y axis (non-positive values are not drawn).
    """
    # Figure with the Agg canvas needs no display and leaves pyplot's global state alone.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 4.4), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for index, line in enumerate(series):
        missing = [key for key in ("x", "y", "label") if key not in line]
        if missing:
            raise ValueError(f"Series {index} lacks the keys {missing}; each series needs x, y and label.")
        x, y = np.asarray(line["x"]), np.asarray(line["y"])
        if x.shape != y.shape or x.ndim != 1:
            raise ValueError(f"Series '{line['label']}' has x of shape {x.shape} and y of shape {y.shape}, "
                             "but both must be 1-D and of equal length.")
        axes.plot(x, y, marker="o" if x.size <= 20 else None, markersize=3, label=line["label"])
    if logy:
        axes.set_yscale("log")
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    if series:
        axes.legend()
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(os.fspath(path))), exist_ok=True)
    figure.savefig(os.fspath(path), format="png")


def replace_marked_section(path: str | os.PathLike[str], name: str, text: str) -> None:
    """Replace the lines between `<!-- BEGIN name -->` and `<!-- END name -->` in the document at `path`.

    Benchmark scripts record their tables in docs this way. The markers stay, so a rerun replaces its own
    record and nothing else.

    Raises:
        ValueError: the markers are missing, so that a record is never written to the wrong place.
    """
    with open(path) as doc:
        content = doc.read()
    pattern = re.compile(rf"(<!-- BEGIN {re.escape(name)} -->\n).*?(<!-- END {re.escape(name)} -->)", re.S)
    if not pattern.search(content):
        raise ValueError(f"{path} has no '<!-- BEGIN {name} -->' ... '<!-- END {name} -->' markers; add them "
                         "where the record belongs.")
    content = pattern.sub(lambda match: match.group(1) + text.rstrip() + "\n" + match.group(2), content)
    _write_atomically(path, content)
