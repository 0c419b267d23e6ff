"""Tests for jaxlab.core.metrics: JSONL and TensorBoard output, results.json, tables, plots."""

from __future__ import annotations

import glob
import json
import math
import os
import struct

import jax.numpy as jnp
import numpy as np
import pytest
from tensorboardX.proto import event_pb2

from jaxlab.core import metrics


def _read_jsonl(path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f]


def _read_events(workdir) -> list[event_pb2.Event]:
    """Parse every event file in `workdir` (TFRecord framing: length, CRC, payload, CRC)."""
    events = []
    for path in sorted(glob.glob(os.path.join(workdir, "events.out.tfevents.*"))):
        with open(path, "rb") as f:
            data = f.read()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset:offset + 8])
            events.append(event_pb2.Event.FromString(data[offset + 12:offset + 12 + length]))
            offset += 12 + length + 4
    return events


def _read_tensorboard_scalars(workdir) -> list[tuple[int, str, float]]:
    return [(event.step, value.tag, value.simple_value)
            for event in _read_events(workdir) for value in event.summary.value]


def test_writes_jsonl_and_tensorboard(tmp_path):
    with metrics.MetricWriter(tmp_path) as writer:
        writer.write_scalars(1, {"loss": 0.5, "accuracy": np.float32(0.25)})
        writer.write_scalars(np.int64(2), {"loss": jnp.array(0.125), "count": np.int32(7), "done": True})

    lines = _read_jsonl(tmp_path / "metrics.jsonl")
    assert lines == [
        {"step": 1, "loss": 0.5, "accuracy": 0.25},
        {"step": 2, "loss": 0.125, "count": 7, "done": 1},
    ]
    assert isinstance(lines[1]["count"], int)
    scalars = _read_tensorboard_scalars(tmp_path)
    assert (1, "loss", 0.5) in scalars
    assert (2, "loss", 0.125) in scalars
    assert (1, "accuracy", 0.25) in scalars
    assert len(scalars) == 5


def test_resume_drops_later_steps(tmp_path):
    with metrics.MetricWriter(tmp_path) as writer:
        for step in range(1, 6):
            writer.write_scalars(step, {"loss": 1.0 / step})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "lo')  # a line cut short by a kill

    with metrics.MetricWriter(tmp_path, resume_from_step=3) as writer:
        writer.write_scalars(4, {"loss": -4.0})

    lines = _read_jsonl(tmp_path / "metrics.jsonl")
    assert [line["step"] for line in lines] == [1, 2, 3, 4]
    assert lines[-1]["loss"] == -4.0
    purge_markers = [event.step for event in _read_events(tmp_path) if event.file_version and event.step]
    assert purge_markers == [4]


def test_resume_without_existing_file(tmp_path):
    with metrics.MetricWriter(tmp_path / "new", resume_from_step=10) as writer:
        writer.write_scalars(11, {"x": 1})
    assert _read_jsonl(tmp_path / "new" / "metrics.jsonl") == [{"step": 11, "x": 1}]


@pytest.mark.parametrize("bad", [float("nan"), np.inf, jnp.array(-jnp.inf)])
def test_nonfinite_raises_with_name_and_step(tmp_path, bad):
    with metrics.MetricWriter(tmp_path) as writer:
        with pytest.raises(FloatingPointError, match="Metric 'grad_norm' is .* at step 12"):
            writer.write_scalars(12, {"loss": 1.0, "grad_norm": bad})
    assert _read_jsonl(tmp_path / "metrics.jsonl") == []


def test_nonfinite_allowed_when_requested(tmp_path):
    with metrics.MetricWriter(tmp_path, allow_nonfinite=True) as writer:
        writer.write_scalars(0, {"loss": float("nan"), "ratio": np.inf})
    (line,) = _read_jsonl(tmp_path / "metrics.jsonl")
    assert math.isnan(line["loss"])
    assert line["ratio"] == math.inf


def test_write_scalars_rejects_bad_values(tmp_path):
    with metrics.MetricWriter(tmp_path) as writer:
        with pytest.raises(ValueError, match=r"'loss' at step 3 has shape \(2,\)"):
            writer.write_scalars(3, {"loss": np.ones(2)})
        with pytest.raises(ValueError, match="'step' at step 3 is reserved"):
            writer.write_scalars(3, {"step": 3})
        with pytest.raises(ValueError, match="dtype <U3"):
            writer.write_scalars(3, {"name": "abc"})
    with pytest.raises(ValueError, match="is closed"):
        writer.write_scalars(4, {"loss": 1.0})


def test_write_results_converts_and_replaces(tmp_path):
    results = {
        "bler": np.float32(0.125),
        "steps": np.int64(100),
        "curve": jnp.array([1.0, 0.5]),
        "table": {"snr_db": (1, 2.5), "ok": np.bool_(True), "note": None},
    }
    path = metrics.write_results(tmp_path, results)
    assert path == os.path.join(tmp_path, "results.json")
    with open(path) as f:
        assert json.load(f) == {
            "bler": 0.125,
            "steps": 100,
            "curve": [1.0, 0.5],
            "table": {"snr_db": [1, 2.5], "ok": True, "note": None},
        }

    metrics.write_results(tmp_path, {"bler": 0.5})
    with open(path) as f:
        assert json.load(f) == {"bler": 0.5}
    assert os.listdir(tmp_path) == ["results.json"]


def test_write_results_keeps_old_file_on_failure(tmp_path, monkeypatch):
    metrics.write_results(tmp_path, {"v": 1})
    with pytest.raises(TypeError, match="results/model/weights has type object"):
        metrics.write_results(tmp_path, {"model": {"weights": object()}})

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        metrics.write_results(tmp_path, {"v": 2})
    with open(tmp_path / "results.json") as f:
        assert json.load(f) == {"v": 1}
    assert os.listdir(tmp_path) == ["results.json"]


def test_write_markdown_table(tmp_path):
    rows = [
        {"method": "SC", "bler": 0.012345, "list": 1},
        {"method": "SCL|CRC", "bler": np.float32(0.5), "list": 8, "ignored": "x"},
        {"method": "Fast-SSCL"},
    ]
    path = tmp_path / "results.md"
    metrics.write_markdown_table(path, rows, columns=["method", "list", "bler"], title="BLER at 2 dB")
    assert path.read_text() == (
        "# BLER at 2 dB\n"
        "\n"
        "| method | list | bler |\n"
        "| --- | --- | --- |\n"
        "| SC | 1 | 0.01235 |\n"
        "| SCL\\|CRC | 8 | 0.5 |\n"
        "| Fast-SSCL |  |  |\n"
    )
    with pytest.raises(ValueError, match="columns is empty"):
        metrics.write_markdown_table(path, rows, columns=[])


def test_plot_lines_writes_png(tmp_path):
    path = tmp_path / "plots" / "bler.png"
    x = np.linspace(0.0, 4.0, 30)
    metrics.plot_lines(
        path,
        [{"x": x, "y": np.exp(-x), "label": "SC"}, {"x": [0, 1, 2], "y": [1.0, 0.1, 0.01], "label": "SCL"}],
        xlabel="Eb/N0 (dB)", ylabel="BLER", title="Polar (128, 64)", logy=True,
    )
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 5000


def test_plot_lines_rejects_bad_series(tmp_path):
    with pytest.raises(ValueError, match=r"'SC' has x of shape \(3,\) and y of shape \(2,\)"):
        metrics.plot_lines(tmp_path / "a.png", [{"x": [1, 2, 3], "y": [1, 2], "label": "SC"}], "x", "y", "t")
    with pytest.raises(ValueError, match=r"Series 0 lacks the keys \['label'\]"):
        metrics.plot_lines(tmp_path / "a.png", [{"x": [1], "y": [1]}], "x", "y", "t")


def test_write_results_file_mode_follows_umask(tmp_path):
    import stat
    umask = os.umask(0o022)
    try:
        metrics.write_results(tmp_path, {"x": 1})
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "results.json").stat().st_mode) == 0o644


def test_replace_marked_section_keeps_the_rest(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("intro\n<!-- BEGIN table -->\nold\n<!-- END table -->\noutro\n")

    metrics.replace_marked_section(doc, "table", "| a |\n| 1 |\n")

    assert doc.read_text() == "intro\n<!-- BEGIN table -->\n| a |\n| 1 |\n<!-- END table -->\noutro\n"


def test_replace_marked_section_without_markers_raises(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("no markers here\n")

    with pytest.raises(ValueError, match="BEGIN speed"):
        metrics.replace_marked_section(doc, "speed", "x")
    assert doc.read_text() == "no markers here\n"


def test_metric_series_skips_partial_records(tmp_path):
    lines = [{"step": 1, "env_steps": 100, "gate_rate": 0.5, "train_gate_rate": 0.9},
             {"step": 2, "env_steps": 200, "loss": 1.0},
             {"step": 3, "env_steps": 300, "gate_rate": 0.25}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    assert metrics.read_metric_series(tmp_path, "env_steps", "gate_rate") == ([100, 300], [0.5, 0.25])
    assert metrics.read_metric_series(tmp_path, "env_steps", "train_gate_rate") == ([100], [0.9])


def test_metric_series_errors_name_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics file not found"):
        metrics.read_metric_series(tmp_path, "step", "loss")
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "lo\n')
    with pytest.raises(ValueError, match="metrics.jsonl line 2 is not a JSON object"):
        metrics.read_metric_series(tmp_path, "step", "loss")
