"""Shared by the CommFormer benchmarks: the record header and replacing a marked section of docs/commformer.md."""

import datetime
import os
import shlex
import sys

from jaxlab.core import machine
from jaxlab.core import metrics

DOC = os.path.join(os.path.dirname(__file__), "..", "docs", "commformer.md")


def record_header() -> str:
    """Return the command, machine and date lines that precede every measured table."""
    command = " ".join(shlex.quote(arg) for arg in [os.path.relpath(sys.argv[0])] + sys.argv[1:])
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"Command: `python {command}`\n\nMachine: {machine.describe_machine()}\n\nDate: {date}\n"


def replace_section(name: str, text: str, path: str = DOC) -> None:
    """Replace the record between `<!-- BEGIN name -->` and `<!-- END name -->` in `path` (docs/commformer.md)."""
    metrics.replace_marked_section(path, name, text)
