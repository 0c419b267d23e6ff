"""End-to-end tests of `python -m launch.main`, run as a subprocess on the toy experiment.

The toy experiment (toy_config.py, toy_experiment.py) imports no JAX, so each
run takes about a second, most of it importing absl, ml_collections and
jaxlab.core.distributed.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
TOY_CONFIG = "tests/launch/toy_config.py"


def _launch(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run(
        [sys.executable, "-m", "launch.main", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _assert_rejected(result: subprocess.CompletedProcess, workdir: pathlib.Path, *fragments: str) -> str:
    """Check the invalid-config contract and return the one stderr line."""
    lines = result.stderr.splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    assert not workdir.exists()
    return lines[0]


def test_success_writes_config_and_results(tmp_path):
    workdir = tmp_path / "run"
    result = _launch(f"--config={TOY_CONFIG}", f"--workdir={workdir}")
    assert result.returncode == 0, result.stderr

    config = json.loads((workdir / "config.json").read_text())
    assert config["experiment"] == "toy_sum"
    assert config["steps"] == 3
    assert config["output"] == {"mode": "sum"}

    results = json.loads((workdir / "results.json").read_text())
    assert results == {"total": 9.0, "seed": 0}


def test_cache_error_in_run_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXLAB_DATA", str(tmp_path / "cache"))
    result = _launch(f"--config={TOY_CONFIG}", f"--workdir={tmp_path / 'run'}", "--config.output.mode=cached")

    lines = result.stderr.splitlines()
    assert result.returncode == 1, result.stderr
    assert lines[-1].startswith("error: Cache artefact"), result.stderr
    assert "Traceback" not in result.stderr


def test_success_copies_absl_log_to_workdir(tmp_path):
    workdir = tmp_path / "run"
    result = _launch(f"--config={TOY_CONFIG}", f"--workdir={workdir}")
    assert result.returncode == 0, result.stderr
    log_text = (workdir / "launch.INFO").read_text()
    assert "Experiment toy_sum" in log_text
    # The console keeps the same log lines.
    assert "Experiment toy_sum" in result.stderr


def test_variant_and_overrides_reach_run(tmp_path):
    workdir = tmp_path / "run"
    result = _launch(
        f"--config={TOY_CONFIG}:long",
        f"--workdir={workdir}",
        "--config.scale=2",
        "--config.output.mode=mean",
        "--config.seed=7",
    )
    assert result.returncode == 0, result.stderr

    config = json.loads((workdir / "config.json").read_text())
    assert config["steps"] == 20
    assert config["scale"] == 2.0
    assert config["output"]["mode"] == "mean"

    results = json.loads((workdir / "results.json").read_text())
    assert results == {"total": 21.0, "seed": 7}  # 2 * mean(1..20) = 21.


def test_existing_workdir_is_reused(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "keep.txt").write_text("from an earlier run")
    result = _launch(f"--config={TOY_CONFIG}", f"--workdir={workdir}")
    assert result.returncode == 0, result.stderr
    assert (workdir / "keep.txt").read_text() == "from an earlier run"
    assert (workdir / "results.json").exists()


def test_checkpointed_run_with_other_config_rejected(tmp_path):
    workdir = tmp_path / "run"
    first = _launch(f"--config={TOY_CONFIG}", f"--workdir={workdir}", "--config.steps=3")
    assert first.returncode == 0, first.stderr
    (workdir / "checkpoints").mkdir()
    before = sorted(path.name for path in workdir.iterdir())

    result = _launch(f"--config={TOY_CONFIG}", f"--workdir={workdir}", "--config.steps=4")
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "steps=4" in result.stderr
    assert "3 as in the checkpointed run" in result.stderr
    assert sorted(path.name for path in workdir.iterdir()) == before
    assert json.loads((workdir / "config.json").read_text())["steps"] == 3

    same = _launch(f"--config={TOY_CONFIG}", f"--workdir={workdir}", "--config.steps=3")
    assert same.returncode == 0, same.stderr


def test_unknown_experiment_rejected(tmp_path):
    workdir = tmp_path / "run"
    result = _launch(f"--config={TOY_CONFIG}", f"--workdir={workdir}", "--config.experiment=no_such_experiment")
    line = _assert_rejected(result, workdir, "experiment='no_such_experiment'", "toy_sum", "polar_awgn_bler")
    assert line.startswith("invalid config: ")


def test_missing_field_rejected(tmp_path):
    workdir = tmp_path / "run"
    result = _launch(f"--config={TOY_CONFIG}:no_steps", f"--workdir={workdir}")
    _assert_rejected(result, workdir, "invalid config: steps=<missing>", "an int in [1, 1000]")


def test_bad_value_rejected(tmp_path):
    workdir = tmp_path / "run"
    result = _launch(f"--config={TOY_CONFIG}", f"--workdir={workdir}", "--config.steps=0")
    line = _assert_rejected(result, workdir)
    assert line == "invalid config: steps=0; expected an int in [1, 1000]"


def test_bad_nested_value_rejected(tmp_path):
    workdir = tmp_path / "run"
    result = _launch(f"--config={TOY_CONFIG}", f"--workdir={workdir}", "--config.output.mode=median")
    line = _assert_rejected(result, workdir)
    assert line == "invalid config: output.mode='median'; expected one of ['sum', 'mean', 'cached']"


def test_negative_seed_rejected(tmp_path):
    workdir = tmp_path / "run"
    result = _launch(f"--config={TOY_CONFIG}", f"--workdir={workdir}", "--config.seed=-1")
    _assert_rejected(result, workdir, "invalid config: seed=-1", "an int >= 0")


def test_unknown_override_key_rejected(tmp_path):
    workdir = tmp_path / "run"
    result = _launch(f"--config={TOY_CONFIG}", f"--workdir={workdir}", "--config.stpes=5")
    line = _assert_rejected(result, workdir)
    assert line.startswith("invalid config: stpes='5'; expected an existing field")
    assert "steps" in line


def test_unknown_nested_override_key_rejected(tmp_path):
    workdir = tmp_path / "run"
    result = _launch(f"--config={TOY_CONFIG}", f"--workdir={workdir}", "--config.output.mdoe=sum")
    _assert_rejected(result, workdir, "output.mdoe='sum'", "fields under 'output': mode")


def test_override_of_wrong_type_rejected(tmp_path):
    workdir = tmp_path / "run"
    result = _launch(f"--config={TOY_CONFIG}", f"--workdir={workdir}", "--config.steps=many")
    line = _assert_rejected(result, workdir)
    assert line == "invalid config: steps='many'; expected an int"


def test_missing_config_file_rejected(tmp_path):
    workdir = tmp_path / "run"
    result = _launch("--config=tests/launch/no_such_config.py", f"--workdir={workdir}", "--config.seed=1")
    _assert_rejected(result, workdir, "invalid flag: --config='tests/launch/no_such_config.py'", "existing Python file")


def test_unknown_variant_rejected(tmp_path):
    workdir = tmp_path / "run"
    result = _launch(f"--config={TOY_CONFIG}:huge", f"--workdir={workdir}")
    _assert_rejected(result, workdir, f"--config='{TOY_CONFIG}:huge'", "unknown variant 'huge'")


def test_missing_config_flag_rejected(tmp_path):
    workdir = tmp_path / "run"
    result = _launch(f"--workdir={workdir}")
    _assert_rejected(result, workdir, "invalid flag: --config=None")


def test_missing_workdir_flag_rejected(tmp_path):
    result = _launch(f"--config={TOY_CONFIG}")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "invalid flag: --workdir=None; expected a directory for the run's outputs, e.g. --workdir=runs/demo"
    ]


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--no_such_flag=1"], "invalid flag: --no_such_flag='1'"),
        (["positional"], "invalid argument: 'positional'"),
    ],
)
def test_unexpected_arguments_rejected(tmp_path, args, fragment):
    workdir = tmp_path / "run"
    result = _launch(f"--config={TOY_CONFIG}", f"--workdir={workdir}", *args)
    _assert_rejected(result, workdir, fragment)


def test_override_before_config_rejected(tmp_path):
    workdir = tmp_path / "run"
    result = _launch("--config.seed=1", f"--config={TOY_CONFIG}", f"--workdir={workdir}")
    _assert_rejected(result, workdir, "--config before every --config.<field> override")


def test_distributed_module_absent_is_skipped(monkeypatch):
    from launch import main as launcher  # pylint: disable=import-outside-toplevel

    # A None entry makes the import raise ModuleNotFoundError, as on a checkout without the module.
    monkeypatch.setitem(sys.modules, "jaxlab.core.distributed", None)
    launcher._initialize_distributed()  # pylint: disable=protected-access


def test_distributed_import_failure_propagates(monkeypatch):
    from launch import main as launcher  # pylint: disable=import-outside-toplevel

    def fail_import(name):
        raise ModuleNotFoundError("No module named 'some_dependency'", name="some_dependency")

    monkeypatch.setattr(launcher.importlib, "import_module", fail_import)
    with pytest.raises(ModuleNotFoundError):
        launcher._initialize_distributed()  # pylint: disable=protected-access


def test_workdir_that_is_a_file_rejected(tmp_path):
    workdir = tmp_path / "afile"
    workdir.write_text("not a directory")
    result = _launch(f"--config={TOY_CONFIG}", f"--workdir={workdir}")
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "existing file" in result.stderr
    assert workdir.read_text() == "not a directory"


def test_workdir_under_a_file_rejected(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("not a directory")
    result = _launch(f"--config={TOY_CONFIG}", f"--workdir={blocker / 'run'}")
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "is a file" in result.stderr


def test_checkpointed_run_of_other_experiment_rejected(tmp_path):
    workdir = tmp_path / "run"
    (workdir / "checkpoints").mkdir(parents=True)
    (workdir / "config.json").write_text(json.dumps({"experiment": "polar_awgn_bler", "seed": 0}))
    result = _launch(f"--config={TOY_CONFIG}", f"--workdir={workdir}")
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "the experiment checkpointed in" in result.stderr
    assert "'polar_awgn_bler'" in result.stderr
