"""Tests for the config validators in jaxlab.core.config."""

import math
import pickle

import ml_collections
import numpy as np
import pytest

from jaxlab.core import config as config_lib
from jaxlab.core.config import ConfigError


def _config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.experiment = "toy"
    config.seed = 0
    config.enabled = True
    config.rate = 0.5
    config.count = 8
    config.nothing = None
    config.code = ml_collections.ConfigDict()
    config.code.n = 16
    config.code.decoder = "scl"
    config.code.snr_db = (1.0, 2.0, 3.0)
    config.code.list_sizes = [1, 2, 8]
    return config


def _error(function, *args, **kwargs) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        function(*args, **kwargs)
    return info.value


def test_config_error_message_format():
    error = ConfigError("code.n", 3, "a power of two >= 2")
    assert str(error) == "invalid config: code.n=3; expected a power of two >= 2"
    assert (error.field, error.value, error.allowed) == ("code.n", 3, "a power of two >= 2")


def test_config_error_message_is_one_line():
    error = ConfigError("name", "a\nb", "one of\n  x,\n  y")
    assert "\n" not in str(error)
    assert str(error) == "invalid config: name='a\\nb'; expected one of x, y"


def test_config_error_survives_pickle():
    error = pickle.loads(pickle.dumps(ConfigError("seed", -1, "an int >= 0")))
    assert str(error) == "invalid config: seed=-1; expected an int >= 0"


def test_config_error_is_not_value_error():
    # ml_collections rewraps ValueErrors from get_config() and loses the fields.
    assert not issubclass(ConfigError, ValueError)


def test_get_field_follows_dotted_path():
    config = _config()
    assert config_lib.get_field(config, "code.n") == 16
    assert config_lib.get_field(config, "code.missing", default="fallback") == "fallback"
    assert config_lib.get_field(config, "seed.x", default="fallback") == "fallback"
    assert config_lib.get_field(config, "nothing") is None


def test_set_field_assigns_existing_fields():
    config = _config()
    config_lib.set_field(config, "code.n", 32)
    config_lib.set_field(config, "seed", 5)
    assert config.code.n == 32
    assert config.seed == 5
    with pytest.raises(ConfigError, match="code.nn=8; expected an existing field"):
        config_lib.set_field(config, "code.nn", 8)
    with pytest.raises(ConfigError, match="seed.x=1"):
        config_lib.set_field(config, "seed.x", 1)
    assert "nn" not in config.code


def test_set_field_names_field_on_type_mismatch():
    config = _config()
    with pytest.raises(ConfigError, match=r"code.n='fast'; expected an int like the current value 16"):
        config_lib.set_field(config, "code.n", "fast")
    with pytest.raises(ConfigError, match=r"enabled=3; expected a bool \(true or false\) like the current value True"):
        config_lib.set_field(config, "enabled", 3)
    assert config.code.n == 16
    assert config.enabled is True


def test_get_field_reads_plain_dicts():
    config = {"outer": {"inner": 3}}
    assert config_lib.get_field(config, "outer.inner") == 3
    assert config_lib.has_field(config, "outer.inner")
    assert not config_lib.has_field(config, "outer.other")


def test_has_field_counts_none_as_defined():
    config = _config()
    assert config_lib.has_field(config, "nothing")
    assert not config_lib.has_field(config, "code.nothing")


def test_describe_neighbors_lists_sibling_fields():
    config = _config()
    assert config_lib.describe_neighbors(config, "code.k") == "fields under 'code': decoder, list_sizes, n, snr_db"
    assert config_lib.describe_neighbors(config, "seeds").startswith("top-level fields: code, count, enabled")
    assert config_lib.describe_neighbors(config, "seed.x.y") == "'seed' is an int, not a group of fields"


def test_require_fields_names_first_missing_field():
    config = _config()
    config_lib.require_fields(config, ["seed", "code.n"])
    error = _error(config_lib.require_fields, config, ["seed", "code.k", "other"])
    assert error.field == "code.k"
    assert error.value is config_lib.MISSING
    assert str(error).startswith("invalid config: code.k=<missing>; expected a value (fields under 'code':")


def test_require_int_accepts_ints_in_bounds():
    config = _config()
    assert config_lib.require_int(config, "code.n", min=2, max=1024) == 16
    assert config_lib.require_int({"n": np.int64(4)}, "n", min=1) == 4


@pytest.mark.parametrize(
    "value, kwargs, allowed",
    [
        (1.5, {}, "an int"),
        (True, {}, "an int"),
        ("3", {}, "an int"),
        (None, {}, "an int"),
        (0, {"min": 1}, "an int >= 1"),
        (9, {"max": 8}, "an int <= 8"),
        (9, {"min": 1, "max": 8}, "an int in [1, 8]"),
        (12, {"power_of_two": True}, "a power of two"),
        (0, {"power_of_two": True}, "a power of two"),
        (2, {"min": 4, "power_of_two": True}, "a power of two >= 4"),
    ],
)
def test_require_int_rejects(value, kwargs, allowed):
    error = _error(config_lib.require_int, {"n": value}, "n", **kwargs)
    assert error.field == "n"
    assert error.value is value
    assert error.allowed == allowed


def test_require_int_power_of_two_accepts_one():
    assert config_lib.require_int({"n": 1}, "n", power_of_two=True) == 1


def test_require_float_accepts_ints_and_returns_float():
    value = config_lib.require_float({"snr": 2}, "snr")
    assert value == 2.0
    assert isinstance(value, float)


@pytest.mark.parametrize(
    "value, kwargs, allowed",
    [
        ("0.1", {}, "a float"),
        (False, {}, "a float"),
        (math.nan, {}, "a float"),
        (math.inf, {}, "a float"),
        (0.0, {"gt": 0}, "a float > 0"),
        (1.0, {"lt": 1}, "a float < 1"),
        (1.5, {"gt": 0, "max": 1}, "a float > 0 and <= 1"),
        (-0.1, {"min": 0, "max": 1}, "a float in [0, 1]"),
    ],
)
def test_require_float_rejects(value, kwargs, allowed):
    error = _error(config_lib.require_float, {"rate": value}, "rate", **kwargs)
    assert error.field == "rate"
    assert error.allowed == allowed


def test_require_bool_rejects_int():
    assert config_lib.require_bool(_config(), "enabled") is True
    error = _error(config_lib.require_bool, {"flag": 1}, "flag")
    assert error.allowed == "a bool (true or false)"


def test_require_str_rejects_empty_by_default():
    assert config_lib.require_str(_config(), "experiment") == "toy"
    assert config_lib.require_str({"name": ""}, "name", nonempty=False) == ""
    error = _error(config_lib.require_str, {"name": ""}, "name")
    assert error.allowed == "a non-empty string"
    error = _error(config_lib.require_str, {"name": 3}, "name")
    assert error.value == 3


def test_require_choice_lists_choices():
    assert config_lib.require_choice(_config(), "code.decoder", ["sc", "scl"]) == "scl"
    error = _error(config_lib.require_choice, _config(), "code.decoder", ["sc", "fast_sscl"])
    assert str(error) == "invalid config: code.decoder='scl'; expected one of ['sc', 'fast_sscl']"


def test_require_list_of_accepts_tuples_and_lists():
    config = _config()
    assert config_lib.require_list_of(config, "code.snr_db", float, min_len=1, increasing=True) == [1.0, 2.0, 3.0]
    assert config_lib.require_list_of(config, "code.list_sizes", int, min=1, max=32) == [1, 2, 8]


def test_require_list_of_names_bad_element():
    error = _error(config_lib.require_list_of, {"sizes": [1, 2, "x"]}, "sizes", int)
    assert error.field == "sizes[2]"
    assert error.value == "x"
    assert error.allowed == "an int"


def test_require_list_of_exclusive_bounds():
    error = _error(config_lib.require_list_of, {"grid": [0.3, 0.0]}, "grid", float, gt=0.0)
    assert error.field == "grid[1]"
    assert error.allowed == "a float > 0.0"
    assert config_lib.require_list_of({"grid": [0.3, 1.0]}, "grid", float, gt=0.0, lt=2.0) == [0.3, 1.0]


def test_require_list_of_checks_element_bounds():
    error = _error(config_lib.require_list_of, {"sizes": [1, 64]}, "sizes", int, min=1, max=32)
    assert error.field == "sizes[1]"
    assert error.allowed == "an int in [1, 32]"


def test_require_list_of_checks_choices():
    error = _error(config_lib.require_list_of, {"decoders": ["sc", "bp"]}, "decoders", str, choices=["sc", "scl"])
    assert error.field == "decoders[1]"
    assert error.allowed == "one of ['sc', 'scl']"


def test_require_list_of_checks_increasing():
    error = _error(config_lib.require_list_of, {"snr": [1.0, 2.0, 2.0]}, "snr", float, increasing=True)
    assert error.field == "snr[2]"
    assert error.allowed.startswith("a value > 2.0")


@pytest.mark.parametrize(
    "value, kwargs, allowed",
    [
        ("1,2", {}, "a list of ints"),
        ([], {"min_len": 1}, "a list of ints with at least 1 element"),
        ([1, 2, 3], {"max_len": 2}, "a list of ints with at most 2 elements"),
        ([1], {"min_len": 2, "max_len": 4}, "a list of ints with 2 to 4 elements"),
    ],
)
def test_require_list_of_checks_length(value, kwargs, allowed):
    error = _error(config_lib.require_list_of, {"sizes": value}, "sizes", int, **kwargs)
    assert error.field == "sizes"
    assert error.allowed == allowed


def test_require_checks_custom_rule():
    config = _config()
    assert config_lib.require(config, "count", lambda count: count <= config.code.n, "an int <= code.n") == 8
    error = _error(config_lib.require, config, "count", lambda count: count > 100, "an int > 100")
    assert str(error) == "invalid config: count=8; expected an int > 100"


def test_missing_field_message_names_expected_type():
    error = _error(config_lib.require_int, _config(), "code.k", min=1)
    assert str(error) == (
        "invalid config: code.k=<missing>; expected an int >= 1 "
        "(fields under 'code': decoder, list_sizes, n, snr_db)"
    )


def test_validators_read_frozen_config():
    frozen = ml_collections.FrozenConfigDict(_config())
    assert config_lib.require_int(frozen, "code.n", power_of_two=True) == 16
    assert config_lib.require_list_of(frozen, "code.list_sizes", int) == [1, 2, 8]


def test_load_config_file_with_and_without_variant(tmp_path):
    with_variant = tmp_path / "with_variant.py"
    with_variant.write_text("import ml_collections\n\ndef get_config(variant=''):\n"
                            "    return ml_collections.ConfigDict({'size': 1 if variant == 'quick' else 8})\n")
    assert config_lib.load_config_file(with_variant, "quick").size == 1
    assert config_lib.load_config_file(str(with_variant)).size == 8

    plain = tmp_path / "plain.py"
    plain.write_text("def get_config():\n    return {'size': 3}\n")
    assert config_lib.load_config_file(plain) == {"size": 3}
    with pytest.raises(ValueError, match="takes no variant"):
        config_lib.load_config_file(plain, "quick")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        config_lib.load_config_file(tmp_path / "missing.py")


def test_parse_override_reads_json_values():
    assert config_lib.parse_override("ppo.lr=1e-3") == ("ppo.lr", 1e-3)
    assert config_lib.parse_override("ppo.active_masks=false") == ("ppo.active_masks", False)
    assert config_lib.parse_override("env.name=3m") == ("env.name", "3m")
    assert config_lib.parse_override("grid=[0.1, 0.2]") == ("grid", [0.1, 0.2])
    with pytest.raises(ValueError, match="invalid override 'steps': expected FIELD=VALUE"):
        config_lib.parse_override("steps")
    with pytest.raises(ValueError, match="expected FIELD=VALUE"):
        config_lib.parse_override("=3")
