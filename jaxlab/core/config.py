"""Config validation shared by all experiments.

An experiment's `validate(config)` calls the `require_*` helpers below and
lets their `ConfigError` propagate. The launcher turns that error into one
line on stderr and exit status 2 before any work starts.

Fields are named by dotted paths (`"code.list_size"`), so the same helpers
check nested `ConfigDict`s and plain dicts. Each helper returns the checked
value, which lets `validate` read and check a field in one statement.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import math
import numbers
import os
from typing import Any, Callable, Iterable, Sequence


class _Missing:
    """Placeholder value for a field that the config does not define."""

    def __repr__(self) -> str:
        return "<missing>"


MISSING = _Missing()


class ConfigError(Exception):
    """An invalid config field: its dotted name, its value and what is allowed.

    `str(error)` is the one-line message the launcher prints, for example
    `invalid config: code.n=3; expected a power of two >= 2`.

    Not a `ValueError` on purpose: ml_collections' config-file parser rewraps
    `ValueError`s raised inside `get_config()` as a new exception built from a
    traceback string, which would lose the field name and value.
    """

    def __init__(self, field: str, value: Any, allowed: str):
        super().__init__(field, value, allowed)
        self.field = field
        self.value = value
        self.allowed = allowed

    def __str__(self) -> str:
        message = f"invalid config: {self.field}={self.value!r}; expected {self.allowed}"
        # The launcher promises a single line, whatever the caller passed in.
        return " ".join(message.split())


def load_config_file(path: str | os.PathLike, variant: str = "") -> Any:
    """Load a config file as the launcher does (`--config=PATH:VARIANT`), for notebooks and tests.

    Calls the file's `get_config(variant)`, or `get_config()` when the file takes no variant and
    `variant` is empty.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path!r} does not exist")
    spec = importlib.util.spec_from_file_location(f"_jaxlab_config_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    get_config = getattr(module, "get_config", None)
    if get_config is None:
        raise AttributeError(f"config file {path!r} defines no get_config()")
    if inspect.signature(get_config).parameters:
        return get_config(variant)
    if variant:
        raise ValueError(f"config file {path!r} takes no variant, but variant {variant!r} was given")
    return get_config()


def has_field(config: Any, field: str) -> bool:
    """Return whether `config` defines the dotted `field`."""
    return get_field(config, field, default=MISSING) is not MISSING


def get_field(config: Any, field: str, default: Any = None) -> Any:
    """Read the dotted `field` from a ConfigDict or mapping.

    Returns `default` when any part of the path is absent or when an
    intermediate value is not a container.
    """
    node = config
    for key in field.split("."):
        try:
            if key not in node:
                return default
            node = node[key]
        except TypeError:  # An int, str or None in the middle of the path.
            return default
    return node


def set_field(config: Any, field: str, value: Any) -> None:
    """Assign `value` to the dotted `field` of a ConfigDict or mapping, in place.

    Raises:
        ConfigError: `config` does not define `field`, so that a misspelt override never adds a new field,
            or a ConfigDict rejects the value's type.
    """
    if not has_field(config, field):
        raise ConfigError(field, value, f"an existing field ({describe_neighbors(config, field)})")
    parent, _, leaf = field.rpartition(".")
    node = get_field(config, parent) if parent else config
    current = node[leaf]
    try:
        node[leaf] = value
    except TypeError:
        # ml_collections' own message names neither the dotted field nor the expected type.
        raise ConfigError(field, value, f"{describe_type(type(current))} like the current value {current!r}") from None


def parse_override(text: str) -> tuple[str, Any]:
    """Split `FIELD=VALUE` into (field, value), reading VALUE as JSON when it parses and else as a string.

    So `ppo.lr=1e-3` gives a float, `ppo.active_masks=false` a bool and `env.name=3m` the string '3m'.

    Raises:
        ValueError: `text` has no '=' or an empty field.
    """
    field, separator, value = text.partition("=")
    if not separator or not field:
        raise ValueError(f"invalid override {text!r}: expected FIELD=VALUE, e.g. seed=1")
    try:
        return field, json.loads(value)
    except json.JSONDecodeError:
        return field, value


def _first_difference(old: Any, new: Any, prefix: str = "") -> tuple[str, Any, Any] | None:
    """Return (dotted field, old value, new value) of the first difference of two JSON trees, or None."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            field = f"{prefix}.{key}" if prefix else key
            if key not in old or key not in new:
                return field, old.get(key, "<missing>"), new.get(key, "<missing>")
            difference = _first_difference(old[key], new[key], field)
            if difference is not None:
                return difference
        return None
    return None if old == new else (prefix, old, new)


def check_workdir_config(config: Any, workdir: str) -> None:
    """Raise ConfigError when `workdir` contains checkpoints of a run with a different config.

    Resuming such a run would mix results of two configs, so the launcher and the sweep benchmarks
    reject it before any work. A workdir without config.json and checkpoints/ passes.
    """
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ConfigError("workdir", workdir, "a directory, or a path that does not exist yet; it is an existing file")
    parent = os.path.dirname(os.path.abspath(workdir))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ConfigError("workdir", workdir, f"a path under directories only; {parent} is a file")
    config_file = os.path.join(workdir, "config.json")
    if not (os.path.isfile(config_file) and os.path.isdir(os.path.join(workdir, "checkpoints"))):
        return
    try:
        with open(config_file, encoding="utf-8") as stream:
            previous = json.load(stream)
    except (OSError, ValueError):
        raise ConfigError("workdir", workdir, f"a work directory whose config.json is readable JSON; "
                          f"{config_file} is not, so remove the directory or choose another") from None
    current = json.loads(config.to_json_best_effort(sort_keys=True))
    if isinstance(previous, dict) and previous.get("experiment") != current.get("experiment"):
        raise ConfigError("experiment", current.get("experiment"),
                          f"{previous.get('experiment')!r}, the experiment checkpointed in {workdir}; "
                          "use a new --workdir for another experiment")
    difference = _first_difference(previous, current)
    if difference is not None:
        field, old_value, new_value = difference
        raise ConfigError(field, new_value, f"{old_value!r} as in the checkpointed run in {workdir}; "
                          "use a new --workdir to run a different config")


def write_workdir_config(config: Any, workdir: str) -> None:
    """Create `workdir` and write the config to its config.json atomically (sorted keys, indented)."""
    os.makedirs(workdir, exist_ok=True)
    config_file = os.path.join(workdir, "config.json")
    temporary_file = config_file + ".tmp"
    with open(temporary_file, "w", encoding="utf-8") as stream:
        stream.write(config.to_json_best_effort(indent=2, sort_keys=True))
        stream.write("\n")
    os.replace(temporary_file, config_file)


def field_names(config: Any, prefix: str = "") -> list[str]:
    """Return the sorted keys directly under the dotted `prefix` ("" for the top level)."""
    node = get_field(config, prefix, default=None) if prefix else config
    try:
        return sorted(str(key) for key in node.keys())
    except AttributeError:
        return []


def describe_neighbors(config: Any, field: str) -> str:
    """Describe what exists next to a missing dotted `field`, for error messages.

    For example "fields under 'output': mode, path", or "'seed' is an int, not
    a group of fields" when the path runs through a plain value.
    """
    parent = field.rpartition(".")[0]
    if not parent:
        return f"top-level fields: {', '.join(field_names(config)) or 'none'}"
    # Find the longest prefix of the path that exists.
    parts = parent.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        node = get_field(config, prefix, default=MISSING)
        if node is MISSING:
            continue
        if not hasattr(node, "keys"):
            return f"{prefix!r} is {describe_type(type(node))}, not a group of fields"
        return f"fields under {prefix!r}: {', '.join(field_names(config, prefix)) or 'none'}"
    return f"top-level fields: {', '.join(field_names(config)) or 'none'}"


def require_fields(config: Any, fields: Iterable[str]) -> None:
    """Raise `ConfigError` for the first dotted field that `config` lacks."""
    for field in fields:
        _require_present(config, field, "a value")


def require(config: Any, field: str, predicate: Callable[[Any], bool], allowed: str) -> Any:
    """Check a rule that the typed helpers do not cover, such as one between two fields.

    Example: `require(config, "list_size", lambda size: size <= n, f"an int <= {n}")`.
    """
    value = _require_present(config, field, allowed)
    if not predicate(value):
        raise ConfigError(field, value, allowed)
    return value


def require_bool(config: Any, field: str) -> bool:
    allowed = describe_type(bool)
    value = _require_present(config, field, allowed)
    if not isinstance(value, bool):
        raise ConfigError(field, value, allowed)
    return value


def require_str(config: Any, field: str, *, nonempty: bool = True) -> str:
    allowed = "a non-empty string" if nonempty else "a string"
    value = _require_present(config, field, allowed)
    if not isinstance(value, str) or (nonempty and not value):
        raise ConfigError(field, value, allowed)
    return value


def require_int(
    config: Any,
    field: str,
    *,
    min: int | None = None,
    max: int | None = None,
    power_of_two: bool = False,
) -> int:
    """Check that `field` is an int (bools rejected) within the inclusive bounds.

    `power_of_two=True` also requires one of 1, 2, 4, ..., as polar code
    lengths and padded batch sizes need.
    """
    allowed = _describe_number("a power of two" if power_of_two else "an int", min=min, max=max)
    value = _require_present(config, field, allowed)
    if not _is_int(value) or not _in_bounds(value, min=min, max=max):
        raise ConfigError(field, value, allowed)
    if power_of_two and (value < 1 or value & (value - 1)):
        raise ConfigError(field, value, allowed)
    return int(value)


def require_float(
    config: Any,
    field: str,
    *,
    min: float | None = None,
    max: float | None = None,
    gt: float | None = None,
    lt: float | None = None,
) -> float:
    """Check that `field` is a finite real number within the bounds and return it as a float.

    Ints are accepted because a config author may write `snr_db = 2`.
    `min`/`max` are inclusive bounds and `gt`/`lt` exclusive ones, for example
    `gt=0, max=1` for a rate that may be 1 but not 0.
    """
    allowed = _describe_number("a float", min=min, max=max, gt=gt, lt=lt)
    value = _require_present(config, field, allowed)
    if not _is_real(value) or not math.isfinite(value):
        raise ConfigError(field, value, allowed)
    if not _in_bounds(value, min=min, max=max, gt=gt, lt=lt):
        raise ConfigError(field, value, allowed)
    return float(value)


def require_choice(config: Any, field: str, choices: Sequence[Any]) -> Any:
    allowed = f"one of {list(choices)!r}"
    value = _require_present(config, field, allowed)
    if value not in choices:
        raise ConfigError(field, value, allowed)
    return value


def require_list_of(
    config: Any,
    field: str,
    kind: type,
    *,
    min_len: int | None = None,
    max_len: int | None = None,
    min: float | None = None,
    max: float | None = None,
    gt: float | None = None,
    lt: float | None = None,
    choices: Sequence[Any] | None = None,
    increasing: bool = False,
) -> list[Any]:
    """Check a list or tuple whose elements are all of `kind` (int, float, str or bool).

    Element errors name the element, as in `ebn0_db[2]`. `min`/`max` bound
    numeric elements inclusively and `gt`/`lt` exclusively, `choices` restricts every element, and
    `increasing=True` requires strictly increasing elements, as a sweep grid
    needs. Returns the elements as a new list.
    """
    plural = {str: "strings", bool: "bools (true or false)"}.get(kind, f"{kind.__name__}s")
    allowed = f"a list of {plural}{_describe_length(min_len, max_len)}"
    value = _require_present(config, field, allowed)
    if not isinstance(value, (list, tuple)):
        raise ConfigError(field, value, allowed)
    if min_len is not None and len(value) < min_len:
        raise ConfigError(field, value, allowed)
    if max_len is not None and len(value) > max_len:
        raise ConfigError(field, value, allowed)

    if choices is not None:
        element_rule = f"one of {list(choices)!r}"
    else:
        element_rule = _describe_number(describe_type(kind), min=min, max=max, gt=gt, lt=lt)
    for index, element in enumerate(value):
        element_field = f"{field}[{index}]"
        if not _is_kind(element, kind) or not _in_bounds(element, min=min, max=max, gt=gt, lt=lt):
            raise ConfigError(element_field, element, element_rule)
        if choices is not None and element not in choices:
            raise ConfigError(element_field, element, element_rule)
        if increasing and index > 0 and not element > value[index - 1]:
            previous = value[index - 1]
            raise ConfigError(element_field, element, f"a value > {previous!r} because the list must be strictly increasing")
    return list(value)


def describe_type(kind: type) -> str:
    """Name a Python type as the error messages do ("an int", "a float")."""
    names = {bool: "a bool (true or false)", int: "an int", float: "a float", str: "a string", tuple: "a tuple"}
    if kind is type(None):
        return "None"
    return names.get(kind, f"a {getattr(kind, '__name__', kind)}")


def _require_present(config: Any, field: str, allowed: str) -> Any:
    value = get_field(config, field, default=MISSING)
    if value is MISSING:
        raise ConfigError(field, MISSING, f"{allowed} ({describe_neighbors(config, field)})")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_kind(value: Any, kind: type) -> bool:
    if kind is int:
        return _is_int(value)
    if kind is float:
        return _is_real(value) and math.isfinite(value)
    return isinstance(value, kind)


def _in_bounds(value: Any, *, min=None, max=None, gt=None, lt=None) -> bool:
    if min is not None and not value >= min:
        return False
    if max is not None and not value <= max:
        return False
    if gt is not None and not value > gt:
        return False
    if lt is not None and not value < lt:
        return False
    return True


def _describe_number(noun: str, *, min=None, max=None, gt=None, lt=None) -> str:
    if min is not None and max is not None and gt is None and lt is None:
        return f"{noun} in [{min}, {max}]"
    rules = []
    if min is not None:
        rules.append(f">= {min}")
    if gt is not None:
        rules.append(f"> {gt}")
    if max is not None:
        rules.append(f"<= {max}")
    if lt is not None:
        rules.append(f"< {lt}")
    return " ".join([noun, " and ".join(rules)]) if rules else noun


def _describe_length(min_len: int | None, max_len: int | None) -> str:
    if min_len is not None and max_len is not None:
        return f" with {min_len} to {max_len} elements"
    if min_len is not None:
        return f" with at least {min_len} element{'s' if min_len != 1 else ''}"
    if max_len is not None:
        return f" with at most {max_len} elements"
    return ""
