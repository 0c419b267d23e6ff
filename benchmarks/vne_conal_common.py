"""Helpers shared by the CONAL benchmark scripts: configs, resumable runs and sections of docs/conal.md."""

from __future__ import annotations

import datetime
import json
import os
import re

import ml_collections

from jaxlab.core import config as config_lib
from jaxlab.core import machine
from jaxlab.vne.conal import experiment

CONFIG_PATH = os.path.join(os.path.dirname(__file__), os.pardir, "configs", "vne", "conal.py")


def load_config(variant: str, overrides: dict | None = None) -> ml_collections.ConfigDict:
    """Return `configs/vne/conal.py:<variant>` with `overrides` ({"train.epochs": 3, ...}) applied, validated."""
    config = config_lib.load_config_file(CONFIG_PATH, variant)
    for path, value in (overrides or {}).items():
        config_lib.set_field(config, path, value)
    experiment.validate(config)
    return config


def run_variant(variant: str, workdir: str, overrides: dict | None = None) -> dict:
    """Run (or resume, or reuse the finished results of) one variant of the experiment in `workdir`.

    `overrides` maps dotted config fields to new values. A workdir whose config.json differs from the
    resulting config is rejected, so results of two configurations never mix.
    """
    config = load_config(variant, overrides)
    os.makedirs(workdir, exist_ok=True)
    config_path = os.path.join(workdir, "config.json")
    wanted = json.loads(config.to_json())
    if os.path.exists(config_path):
        with open(config_path) as f:
            saved = json.load(f)
        if saved != wanted:
            raise ValueError(f"{workdir} contains a run of another config; use a new --workdir for variant {variant!r}")
    else:
        with open(config_path, "w") as f:
            json.dump(wanted, f, indent=2, sort_keys=True)
    results_path = os.path.join(workdir, "results.json")
    if os.path.exists(results_path):
        with open(results_path) as f:
            return json.load(f)
    return experiment.run(config, workdir)


def epoch_settings(epochs: int) -> tuple[dict, str, str]:
    """Return the config overrides, workdir suffix and section-title note of --epochs (0 keeps the size's own)."""
    if not epochs:
        return {}, "", ""
    return {"train.epochs": epochs}, f"_{epochs}ep", f", {epochs} epoch{'s' if epochs > 1 else ''}"


def cell(record: dict, name: str, scale: float = 1.0, digits: int = 1) -> str:
    """Format mean ± standard error of a metric."""
    return f"{scale * record[name]:.{digits}f} ± {scale * record[name + '_se']:.{digits}f}"


def header(command: str) -> str:
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%a %b %d %H:%M:%S UTC %Y")
    return f"Command: `{command}`  \nDate: {date}  \nMachine: {machine.describe_machine()}\n"


def write_section(path: str, title: str, body: str) -> None:
    """Replace the section `## title` of a Markdown file (up to the next `## `), or append it."""
    text = open(path).read() if os.path.exists(path) else ""
    section = f"## {title}\n\n{body.rstrip()}\n\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section
    with open(path, "w") as f:
        f.write(text.rstrip() + "\n")
