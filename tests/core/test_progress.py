"""Tests for jaxlab.core.progress."""

from __future__ import annotations

import logging
import sys

from jaxlab.core.progress import progress


def _messages(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "absl"]


def test_iterable_mode_yields_items_and_logs(caplog):
    with caplog.at_level(logging.INFO):
        items = list(progress(range(5), desc="data", unit="item", log_interval_s=0.0))
    assert items == [0, 1, 2, 3, 4]
    messages = _messages(caplog)
    assert messages, "expected absl progress lines when stderr is not a terminal"
    assert "data:" in messages[-1]
    assert "5/5" in messages[-1]
    assert "item/s" in messages[-1]


def test_manual_mode_with_postfix(caplog):
    with caplog.at_level(logging.INFO):
        with progress(10, desc="train", unit="step", log_interval_s=0.0) as bar:
            bar.update(3)
            bar.set_postfix(loss=0.5)
            assert bar.n == 3
            assert bar.total == 10
    messages = _messages(caplog)
    assert "3/10" in messages[-1]
    assert "loss=0.5" in messages[-1]


def test_long_interval_logs_only_final_line(caplog):
    with caplog.at_level(logging.INFO):
        for _ in progress(range(100), desc="eval", unit="batch"):
            pass
    messages = _messages(caplog)
    assert len(messages) == 1
    assert "100/100" in messages[0]


def test_terminal_gets_no_log_lines(caplog, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    with caplog.at_level(logging.INFO):
        list(progress(range(3), desc="tty", unit="it", log_interval_s=0.0))
    assert _messages(caplog) == []
