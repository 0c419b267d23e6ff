"""Toy experiment for the launcher tests. It imports no JAX, which keeps each launcher subprocess fast."""

import json
import os

from jaxlab.core import cache
from jaxlab.core.config import require_choice, require_float, require_int


def validate(config) -> None:
    require_int(config, "steps", min=1, max=1000)
    require_float(config, "scale", gt=0)
    require_choice(config, "output.mode", ["sum", "mean", "cached"])


def run(config, workdir: str) -> dict:
    """Scale the sum (or mean) of 1..steps and write it to results.json.

    Mode "cached" reads the steps from a cache artefact that no test builds, so the run raises
    `cache.CacheError`, as a run does that finds a corrupt or missing data set.
    """
    if config.output.mode == "cached":
        cache.load_arrays(cache.ArtifactSpec("toy/steps", 1, {"steps": config.steps}))
    values = [config.scale * step for step in range(1, config.steps + 1)]
    total = sum(values) if config.output.mode == "sum" else sum(values) / len(values)
    results = {"total": total, "seed": config.seed}
    with open(os.path.join(workdir, "results.json"), "w", encoding="utf-8") as stream:
        json.dump(results, stream)
    return results
