"""Run one registered experiment from a config file.

    python -m launch.main --config=configs/polar/awgn_bler.py:quick \\
        --workdir=runs/polar/quick [--config.seed=1 ...]

The launcher loads the config, applies `--config.<field>=<value>` overrides,
looks up `config.experiment` in `jaxlab.core.registry` and calls the
experiment's `validate(config)`. Only then does it create the workdir, write
`config.json` there, copy absl logs into it, start the multi-host runtime
when the environment describes several processes, and call
`run(config, workdir)`.

An invalid flag or config exits with status 2 after printing one line to
stderr that names the field, its value and what is allowed. The workdir is
left untouched in that case.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
import traceback
import warnings
from typing import Any

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags
from ml_collections.config_flags import config_path

from jaxlab.core import cache
from jaxlab.core import registry
from jaxlab.core.config import (
    ConfigError,
    check_workdir_config,
    describe_neighbors,
    describe_type,
    has_field,
    require_int,
    require_str,
    write_workdir_config,
)

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    "Experiment config file as PATH.py or PATH.py:VARIANT. Override single "
    "fields after it with --config.<field>=<value>.",
)
_WORKDIR = flags.DEFINE_string(
    "workdir",
    None,
    "Directory for this run's config.json, logs, metrics, checkpoints and "
    "results.json. Created after the config is validated; an existing one is "
    "reused, which lets a run resume.",
)

EXIT_INVALID = 2
_CONFIG_EXAMPLE = "a config file such as configs/polar/awgn_bler.py:quick"
_OVERRIDE = re.compile(r"^--?(?P<negated>no)?config\.(?P<path>[^=]+)(?:=(?P<value>.*))?$", re.DOTALL)


class FlagError(Exception):
    """An invalid command-line flag, reported in the same one-line form as `ConfigError`.

    `flag` is the flag name without dashes, or None for positional arguments.
    """

    def __init__(self, flag: str | None, value: Any, allowed: str):
        super().__init__(flag, value, allowed)
        self.flag = flag
        self.value = value
        self.allowed = allowed

    def __str__(self) -> str:
        if self.flag is None:
            message = f"invalid argument: {self.value!r}; expected {self.allowed}"
        else:
            message = f"invalid flag: --{self.flag}={self.value!r}; expected {self.allowed}"
        return " ".join(message.split())


def _exit_invalid(error: Exception) -> None:
    sys.stderr.write(f"{error}\n")
    sys.stderr.flush()
    sys.exit(EXIT_INVALID)


# ---------------------------------------------------------------------------
# Flag parsing. absl's own parser prints usage text and exits with status 1,
# and ml_collections raises a different exception type for each kind of bad
# override, so the launcher parses flags itself and reduces every failure to
# one line.
# ---------------------------------------------------------------------------


def _parse_flags(argv: list[str]) -> list[str]:
    """Parse flags for `app.run`, exiting with status 2 on any invalid flag or config."""
    try:
        remaining = flags.FLAGS(argv)
    except ConfigError as error:  # Raised by a config file's get_config().
        _exit_invalid(error)
    except Exception as error:  # pylint: disable=broad-except
        # Any exception here comes from flag or config parsing: nothing has run yet.
        _exit_invalid(_explain_parse_error(argv, error))

    try:
        _check_parsed_flags(argv, remaining)
    except (ConfigError, FlagError) as error:
        _exit_invalid(error)
    return remaining


def _check_parsed_flags(argv: list[str], remaining: list[str]) -> None:
    config = _CONFIG.value
    if config is None:
        raise FlagError("config", None, _CONFIG_EXAMPLE)
    if not isinstance(config, ml_collections.ConfigDict):
        # A config file that could not be read parses into a placeholder that
        # raises on first use, so explain it the same way as a parse failure.
        raise _explain_parse_error(argv, TypeError(f"get_config() returned {type(config).__name__}"))
    if not _WORKDIR.value:
        raise FlagError("workdir", _WORKDIR.value, "a directory for the run's outputs, e.g. --workdir=runs/demo")
    if len(remaining) > 1:
        raise FlagError(None, " ".join(remaining[1:]), "flags only; the launcher takes no positional arguments")


def _explain_parse_error(argv: list[str], error: Exception) -> ConfigError | FlagError:
    """Map an exception raised while parsing flags to the flag or field at fault."""
    argv = flags.FLAGS.read_flags_from_files(argv, force_gnu=False)

    if isinstance(error, flags.UnrecognizedFlagError) and not _OVERRIDE.match(f"--{error.flagname}"):
        return FlagError(error.flagname, _flag_value(argv, error.flagname), "a defined flag: --config, --workdir or an absl flag listed by --helpfull")

    config_arg = _flag_value(argv, "config")
    if config_arg is None:
        return FlagError("config", None, _CONFIG_EXAMPLE)
    config_file = config_arg.split(":", 1)[0]
    if not os.path.isfile(config_file):
        return FlagError("config", config_arg, "an existing Python file that defines get_config(), optionally followed by :VARIANT")
    if isinstance(error, config_flags.config_flags.FlagOrderError):
        return FlagError("config", config_arg, "--config before every --config.<field> override")

    # Load the config once more on its own to tell a failing get_config()
    # from a bad override.
    try:
        config = config_flags.config_flags.ConfigFileFlagParser("config").parse(config_arg)
    except ConfigError as load_error:
        return load_error
    except Exception as load_error:  # pylint: disable=broad-except
        return FlagError("config", config_arg, f"a config whose get_config() succeeds; it raised {_describe_exception(load_error)}")
    if not isinstance(config, ml_collections.ConfigDict):
        return FlagError("config", config_arg, f"get_config() to return an ml_collections.ConfigDict, not {type(config).__name__}")

    overrides = _overrides(argv)
    for path, raw_value in overrides.items():
        if not has_field(config, path):
            return ConfigError(path, raw_value, f"an existing field ({describe_neighbors(config, path)})")

    if isinstance(error, flags.IllegalFlagValueError):
        match = re.match(r"flag --config\.(?P<path>[^=]+)=", str(error))
        if match and match["path"] in overrides:
            path = match["path"]
            return ConfigError(path, overrides[path], describe_type(config_path.get_type(path, config)))
    if isinstance(error, config_flags.config_flags.UnsupportedOperationError):
        match = re.search(r"of field config\.(?P<path>\S+) is not supported", str(error))
        if match and match["path"] in overrides:
            path = match["path"]
            return ConfigError(path, overrides[path], "a field of type bool, int, float, str or tuple; change other types in the config file")
    return FlagError("config", config_arg, f"flags that parse; parsing raised {_describe_exception(error)}")


def _flag_value(argv: list[str], name: str) -> str | None:
    """Return the value given to `--name` in `argv` (`--name=V` or `--name V`), or None."""
    for index, arg in enumerate(argv[1:], start=1):
        match = re.match(rf"^--?{re.escape(name)}(?:=(?P<value>.*))?$", arg, re.DOTALL)
        if match is None:
            continue
        if match["value"] is not None:
            return match["value"]
        return argv[index + 1] if index + 1 < len(argv) else ""
    return None


def _overrides(argv: list[str]) -> dict[str, str]:
    """Return `{dotted field: raw value}` for every --config.<field> override in `argv`."""
    overrides = {}
    for index, arg in enumerate(argv):
        match = _OVERRIDE.match(arg)
        if match is None:
            continue
        if match["value"] is not None:
            value = match["value"]
        elif match["negated"]:
            value = "false"
        elif index + 1 < len(argv) and not argv[index + 1].startswith("-"):
            value = argv[index + 1]
        else:
            value = "true"
        overrides[match["path"]] = value
    return overrides


def _describe_exception(error: BaseException) -> str:
    """Summarise an exception in one line: type, message and innermost location."""
    text = str(error)
    if "Traceback (most recent call last)" in text:
        # ml_collections folds the traceback of a failing get_config() into
        # the message. Its last line is the original exception.
        lines = [line for line in text.splitlines() if line.strip()]
        locations = re.findall(r'File "([^"]+)", line (\d+)', text)
        summary = lines[-1].strip()
        if locations:
            summary += f" at {locations[-1][0]}:{locations[-1][1]}"
        return summary
    summary = f"{type(error).__name__}: {text}" if text else type(error).__name__
    frames = traceback.extract_tb(error.__traceback__)
    if frames:
        summary += f" at {frames[-1].filename}:{frames[-1].lineno}"
    return summary


# ---------------------------------------------------------------------------
# The run itself.
# ---------------------------------------------------------------------------


def _resolve_experiment(config: ml_collections.ConfigDict) -> registry.Experiment:
    """Look up and validate the experiment, raising `ConfigError` for an invalid config.

    Warnings raised while importing the experiment module are held back and
    shown once the config is known to be valid, so that an invalid config
    prints exactly one line.
    """
    name = require_str(config, "experiment")
    require_int(config, "seed", min=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        experiment = registry.get_experiment(name)
        if experiment.validate is not None:
            experiment.validate(config)
    for warning in caught:
        warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    return experiment


def _prepare_workdir(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Create the workdir, write config.json and send absl logs there as well as to stderr."""
    write_workdir_config(config, workdir)

    if not flags.FLAGS["alsologtostderr"].present:
        flags.FLAGS.alsologtostderr = True
    logging.get_absl_handler().use_absl_log_file(program_name="launch", log_dir=workdir)


def _initialize_distributed() -> None:
    """Call `jaxlab.core.distributed.initialize_distributed()` where that module exists."""
    try:
        distributed = importlib.import_module("jaxlab.core.distributed")
    except ModuleNotFoundError as error:
        if error.name != "jaxlab.core.distributed":
            raise  # The module exists but one of its own imports failed.
        logging.info("jaxlab.core.distributed is not available; running as a single process.")
        return
    distributed.initialize_distributed()


def main(argv: list[str]) -> None:
    del argv  # _parse_flags has rejected positional arguments.
    config = _CONFIG.value
    workdir = _WORKDIR.value
    try:
        experiment = _resolve_experiment(config)
        check_workdir_config(config, workdir)
    except ConfigError as error:
        _exit_invalid(error)

    _prepare_workdir(config, workdir)
    logging.info("Experiment %s, config %s, workdir %s", experiment.name, flags.FLAGS["config"].config_filename, workdir)
    _initialize_distributed()

    try:
        results = experiment.run(config, workdir)
    except cache.CacheError as error:
        # A corrupt or mismatched cached artefact: the message names the file and the fix, so one line is
        # more useful than a traceback.
        logging.error("%s", error)
        sys.stderr.write(f"error: {error}\n")
        sys.exit(1)
    # The whole results dict can be large (tables, per-task lists); the log keeps its scalar entries,
    # one level of nesting included (e.g. "test.success_rate").
    scalars = {}
    for key, value in results.items():
        entries = value.items() if isinstance(value, dict) else [("", value)]
        for subkey, item in entries:
            if isinstance(item, (bool, int, float, str)):
                scalars[f"{key}.{subkey}" if subkey else key] = item
    logging.info("Results of %s (scalar entries; all of them are in results.json):\n%s",
                 experiment.name, json.dumps(scalars, sort_keys=True, indent=2))
    print(f"{experiment.name} finished; outputs are in {workdir}")


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
