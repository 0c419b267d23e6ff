"""Config file for the launcher tests: a toy experiment that sums a few numbers.

Loading this file registers the experiment `toy_sum`, so the launcher finds
it without an entry in `jaxlab.core.registry`.

    python -m launch.main --config=tests/launch/toy_config.py --workdir=/tmp/toy
"""

import ml_collections

from jaxlab.core import registry

registry.register("toy_sum", run="tests.launch.toy_experiment:run", validate="tests.launch.toy_experiment:validate")

VARIANTS = ("default", "long", "no_steps")


def get_config(variant: str = "default") -> ml_collections.ConfigDict:
    """Return the toy config. Variants: default, long (more steps), no_steps (invalid)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    config = ml_collections.ConfigDict()
    config.experiment = "toy_sum"
    config.seed = 0
    if variant != "no_steps":
        config.steps = 20 if variant == "long" else 3  # Numbers summed: 1, ..., steps.
    config.scale = 1.5  # Factor applied to the sum.
    config.output = ml_collections.ConfigDict()
    config.output.mode = "sum"  # "sum" or "mean".
    return config
