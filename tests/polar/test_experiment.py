"""End-to-end tests of the polar_awgn_bler experiment: outputs, validation and resume after a kill."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jaxlab.core import config as config_lib
from jaxlab.polar import decoders, experiment

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_PATH = REPO_ROOT / "configs" / "polar" / "awgn_bler.py"


def _load_config(variant=""):
    return config_lib.load_config_file(CONFIG_PATH, variant)


def _tiny_config():
    config = _load_config("quick")
    config.code.length = 64
    config.code.num_info = 32
    config.code.crc = "CRC6"
    config.decoders = ("SC", "SCL-4", "CA-SCL-4")
    config.ebno_db = (1.0, 3.0)
    config.batch_size = 64
    config.target_block_errors = 20
    config.max_codewords = 1024
    return config


def test_run_writes_results(tmp_path):
    config = _tiny_config()
    experiment.validate(config)
    results = experiment.run(config, str(tmp_path))

    points = results["points"]
    assert [(p["decoder"], p["ebno_db"]) for p in points] == [
        (name, ebno) for name in config.decoders for ebno in config.ebno_db]
    for point in points:
        assert point["block_errors"] >= config.target_block_errors or point["codewords"] >= config.max_codewords
        assert point["bler_ci99"][0] <= point["bler"] <= point["bler_ci99"][1]
        assert point["codewords"] % config.batch_size == 0
    by_name = {(p["decoder"], p["ebno_db"]): p["bler"] for p in points}
    assert by_name[("SC", 1.0)] > by_name[("SC", 3.0)]
    assert by_name[("SCL-4", 1.0)] <= by_name[("SC", 1.0)]

    assert json.loads((tmp_path / "results.json").read_text()) == json.loads(json.dumps(results))
    assert (tmp_path / "bler.png").stat().st_size > 0
    assert "CA-SCL-4" in (tmp_path / "results.md").read_text()
    metric_lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in metric_lines] == list(range(len(points)))


def test_rerun_of_finished_workdir_repeats_results(tmp_path):
    config = _tiny_config()
    first = experiment.run(config, str(tmp_path))
    second = experiment.run(config, str(tmp_path))
    assert first == second


@pytest.mark.parametrize("field,value,message", [
    ("decoders", ("SC", "SCL-three"), "decoders[1]"),
    ("decoders", ("CA-SCL-8",), "code.crc"),
    ("ebno_db", (2.0, 1.0), "ebno_db[1]"),
    ("batch_size", 12, "device count 8"),
    ("code.length", 1000, "code.length"),
    ("code.construction", "reed-muller", "code.construction"),
    ("f_function", "tanh", "f_function"),
    ("max_codewords", 0, "max_codewords"),
])
def test_validate_rejects_bad_values(field, value, message):
    config = _tiny_config()
    if field == "decoders" and value == ("CA-SCL-8",):
        config.code.crc = None
    with config.unlocked():
        parent, _, leaf = field.rpartition(".")
        target = config_lib.get_field(config, parent) if parent else config
        setattr(target, leaf, value)
    with pytest.raises(config_lib.ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        experiment.validate(config)


def test_crc_none_spelled_as_string(tmp_path):
    config = _tiny_config()
    config.code.crc = "none"
    config.decoders = ("SC",)
    experiment.validate(config)
    config.decoders = ("CA-SCL-4",)
    with pytest.raises(config_lib.ConfigError, match="code.crc='none'"):
        experiment.validate(config)


def test_decoder_names_parse():
    assert experiment.parse_decoder_name("SC") == decoders.DecoderSpec("sc", 1)
    assert experiment.parse_decoder_name("CA-SCL-8") == decoders.DecoderSpec("scl", 8, crc_aided=True)
    fast = experiment.parse_decoder_name("CA-Fast-SSCL-16")
    assert fast == decoders.DecoderSpec("scl", 16, crc_aided=True, node_based=True)
    assert fast.name == "CA-Fast-SSCL-16"
    assert decoders.DecoderSpec("scl", 8, soft_output=True, node_based=True).name == "SO-FSCL-8"
    with pytest.raises(ValueError, match="Fast-SSCL"):
        experiment.parse_decoder_name("FSCL-8")


def _launch(workdir, extra_args=()):
    args = [
        sys.executable, "-m", "launch.main", f"--config={CONFIG_PATH}:quick", f"--workdir={workdir}",
        "--config.code.length=256", "--config.code.num_info=128", "--config.decoders=('SCL-8',)",
        "--config.ebno_db=(2.0,2.5)", "--config.batch_size=64", "--config.target_block_errors=100000",
        "--config.max_codewords=3200", "--config.checkpoint_every_s=0.2", *extra_args,
    ]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.Popen(args, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)


def _wait_for_checkpoint(workdir, process, timeout_s=120.0):
    checkpoints = Path(workdir) / "checkpoints"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"run ended before its first checkpoint: {process.stderr.read()[-2000:]}")
        if checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir()):
            return
        time.sleep(0.05)
    raise AssertionError("no checkpoint within the timeout")


@pytest.mark.parametrize("stop_signal", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_killed_run_resumes_to_same_results(tmp_path, stop_signal):
    reference_dir, interrupted_dir = tmp_path / "reference", tmp_path / "interrupted"

    process = _launch(interrupted_dir)
    _wait_for_checkpoint(interrupted_dir, process)
    process.send_signal(stop_signal)
    process.wait(timeout=60)
    assert not (interrupted_dir / "results.json").exists(), "the run finished before it was stopped"

    resumed = _launch(interrupted_dir)
    reference = _launch(reference_dir)
    stderr = {}
    for name, proc in (("resumed", resumed), ("reference", reference)):
        _, stderr[name] = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[name][-2000:]
    assert "Resumed from checkpoint" in stderr["resumed"]
    assert "Resumed from checkpoint" not in stderr["reference"]

    resumed_results = json.loads((interrupted_dir / "results.json").read_text())
    assert resumed_results == json.loads((reference_dir / "results.json").read_text())
    steps = [json.loads(line)["step"] for line in (interrupted_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 1]


def test_sharded_simulation_counts_equal_single_device():
    import jax
    from jaxlab.core import distributed
    from jaxlab.polar import codes, decoders, simulation

    code = codes.polar_code_5g(128, 64, crc="CRC6")
    spec = decoders.DecoderSpec("scl", 4, crc_aided=True)
    mesh = distributed.make_mesh()
    sharded = simulation.make_batch_simulator(code, spec, 64, distributed.batch_sharding(mesh))
    single = simulation.make_batch_simulator(code, spec, 64)
    key = jax.random.key(3)
    for batch_index in range(3):
        batch_key = simulation.batch_key(key, 0, batch_index)
        assert jax.device_get(sharded(batch_key, 1.5)) == jax.device_get(single(batch_key, 1.5))
