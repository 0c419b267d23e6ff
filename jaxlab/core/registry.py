"""Experiment registry: names that configs use, mapped to run and validate functions.

An entry stores import paths (`"package.module:function"`), not functions,
so importing the registry or the launcher imports no method package and none
of its optional dependencies. `get_experiment` imports the module of one
entry when it is asked for.

Built-in experiments are registered at the bottom of this file. A config file
may register its own experiment before `get_config()` returns, which is how
tests add a small experiment without touching this file.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from typing import Any, Callable

from jaxlab.core.config import ConfigError

RunFn = Callable[[Any, str], dict]
ValidateFn = Callable[[Any], None]

_TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A registered experiment with its functions imported.

    Attributes:
        name: the registered name, as `config.experiment` spells it.
        run: `run(config, workdir) -> dict` does the work, writes its outputs
            into `workdir` and returns the final summary.
        validate: `validate(config)` raises `ConfigError` for an invalid config
            and does nothing else. None when the experiment registered none.
    """

    name: str
    run: RunFn
    validate: ValidateFn | None


@dataclasses.dataclass(frozen=True)
class _Entry:
    run: str
    validate: str | None


# Process-wide by design: registrations come from module imports and config
# files, and must be visible to the launcher that loads them.
_ENTRIES: dict[str, _Entry] = {}


def register(name: str, run: str, validate: str | None = None) -> None:
    """Register experiment `name` by the import paths of its functions.

    Args:
        name: the value of `config.experiment` that selects this experiment.
        run: `"package.module:function"` of `run(config, workdir) -> dict`.
        validate: `"package.module:function"` of `validate(config)`, or None.

    Raises:
        ValueError: if a path is not of the form `module:function`, or if
            `name` is already registered with different paths. Registering
            the same paths again is allowed, since a config file may be
            loaded more than once in a process.
    """
    for target in (run, validate):
        if target is not None and not _TARGET.match(target):
            raise ValueError(f"invalid import path {target!r} for experiment {name!r}; expected 'package.module:function'")
    entry = _Entry(run=run, validate=validate)
    existing = _ENTRIES.get(name)
    if existing is not None and existing != entry:
        raise ValueError(f"experiment {name!r} is already registered as {existing}; cannot register it again as {entry}")
    _ENTRIES[name] = entry


def known_experiments() -> list[str]:
    """Return the registered experiment names, sorted."""
    return sorted(_ENTRIES)


def get_experiment(name: str) -> Experiment:
    """Import and return the functions of experiment `name`.

    Raises:
        ConfigError: for an unregistered name, on the field `experiment`, with
            the registered names as the allowed values.
        ImportError: if the module or function of the entry cannot be imported.
    """
    entry = _ENTRIES.get(name)
    if entry is None:
        raise ConfigError("experiment", name, f"one of the registered experiments: {', '.join(known_experiments())}")
    validate = _import_target(entry.validate) if entry.validate is not None else None
    return Experiment(name=name, run=_import_target(entry.run), validate=validate)


def _import_target(target: str) -> Callable[..., Any]:
    module_name, _, function_name = target.partition(":")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, function_name)
    except AttributeError:
        raise ImportError(f"cannot import {target!r}: module {module_name!r} has no attribute {function_name!r}") from None


register("polar_awgn_bler", run="jaxlab.polar.experiment:run", validate="jaxlab.polar.experiment:validate")
register("polar_product_code", run="jaxlab.polar.product_experiment:run",
         validate="jaxlab.polar.product_experiment:validate")
register("vne_baselines", run="jaxlab.vne.experiment:run", validate="jaxlab.vne.experiment:validate")
register("zo_finetune", run="jaxlab.zo.experiment:run", validate="jaxlab.zo.experiment:validate")
register("image_experts", run="jaxlab.models.experts:run", validate="jaxlab.models.experts:validate")
register("commformer", run="jaxlab.commformer.experiment:run", validate="jaxlab.commformer.experiment:validate")
register("vne_conal", run="jaxlab.vne.conal.experiment:run", validate="jaxlab.vne.conal.experiment:validate")
register("merging_table", run="jaxlab.merging.table_experiment:run", validate="jaxlab.merging.table_experiment:validate")
register("offline_rl_collect_metaworld", run="jaxlab.offline_rl.collect_metaworld:run",
         validate="jaxlab.offline_rl.collect_metaworld:validate")
register("offline_rl_collect_brax", run="jaxlab.offline_rl.collect_brax:run",
         validate="jaxlab.offline_rl.collect_brax:validate")
register("prompt_dt", run="jaxlab.offline_rl.prompt_dt:run", validate="jaxlab.offline_rl.prompt_dt:validate")
