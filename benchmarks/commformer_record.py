"""Shared by the CommFormer benchmarks: the record header and replacing a marked section of docs/commformer.md."""

import datetime
import os
import re
import shlex
import sys

from jaxlab.core import machine

DOC = os.path.join(os.path.dirname(__file__), "..", "docs", "commformer.md")


def record_header() -> str:
    """Return the command, machine and date lines that precede every measured table."""
    command = " ".join(shlex.quote(arg) for arg in [os.path.relpath(sys.argv[0])] + sys.argv[1:])
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"Command: `python {command}`\n\nMachine: {machine.describe_machine()}\n\nDate: {date}\n"


def replace_section(name: str, text: str, path: str = DOC) -> None:
    """Replace the text between `<!-- BEGIN name -->` and `<!-- END name -->` in `path`.

    Raises:
      ValueError: if the markers are missing, so that a record is never written to the wrong place.
    """
    with open(path) as doc:
        content = doc.read()
    pattern = re.compile(rf"(<!-- BEGIN {re.escape(name)} -->\n).*?(<!-- END {re.escape(name)} -->)", re.S)
    if not pattern.search(content):
        raise ValueError(f"{path} has no '<!-- BEGIN {name} -->' ... '<!-- END {name} -->' markers; add them "
                         "where the record belongs.")
    content = pattern.sub(lambda m: m.group(1) + text.rstrip() + "\n" + m.group(2), content)
    with open(path, "w") as doc:
        doc.write(content)
