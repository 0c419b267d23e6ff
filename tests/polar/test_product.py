"""Tests of polar product codes: encoding, iterative soft- and hard-output decoding, and the experiment."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.core import config as config_lib
from jaxlab.core import registry
from jaxlab.polar import channel
from jaxlab.polar import codes
from jaxlab.polar import product
from jaxlab.polar import product_experiment

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_PATH = REPO_ROOT / "configs" / "polar" / "product_code.py"
PRODUCT = product.ProductCode(codes.polar_code_5g(32, 26))


def _load_config(variant=""):
    return config_lib.load_config_file(CONFIG_PATH, variant)


def _random_payload(key, batch, k):
    return jax.random.bernoulli(key, 0.5, (batch, k, k)).astype(jnp.uint8)


def _noisy_batch(seed, batch, ebno_db):
    key_payload, key_noise = jax.random.split(jax.random.key(seed))
    payload = _random_payload(key_payload, batch, PRODUCT.k)
    codeword = product.encode(PRODUCT, payload)
    llr = channel.awgn_llr(key_noise, codeword, channel.ebno_db_to_sigma(ebno_db, PRODUCT.rate))
    return payload, codeword, llr


def test_encode_gives_product_codewords():
    payload = _random_payload(jax.random.key(0), 16, PRODUCT.k)
    codeword = product.encode(PRODUCT, payload)
    component = PRODUCT.component

    assert codeword.shape == (16, 32, 32)
    assert bool(jnp.all(product.is_component_codeword(component, codeword)))
    assert bool(jnp.all(product.is_component_codeword(component, jnp.swapaxes(codeword, 1, 2))))
    assert bool(jnp.all(product.is_product_codeword(PRODUCT, codeword)))
    np.testing.assert_array_equal(product.payload_from_codeword(PRODUCT, codeword), payload)


def test_bit_flip_breaks_syndrome():
    codeword = product.encode(PRODUCT, _random_payload(jax.random.key(1), 1, PRODUCT.k))
    flipped = codeword.at[0, 5, 7].set(1 - codeword[0, 5, 7])
    assert not bool(product.is_product_codeword(PRODUCT, flipped)[0])


def test_encode_rejects_wrong_payload_shape():
    with pytest.raises(ValueError, match="expected \\[..., 26, 26\\]"):
        product.encode(PRODUCT, jnp.zeros((2, 26, 25), jnp.uint8))


@pytest.mark.parametrize("component_output", ["soft", "hard"])
def test_noiseless_decoding_is_perfect(component_output):
    payload = _random_payload(jax.random.key(2), 8, PRODUCT.k)
    codeword = product.encode(PRODUCT, payload)
    decode = product.make_turbo_decoder(PRODUCT, product.TurboSpec(component_output, max_iterations=4))
    output = decode(channel.noiseless_llr(codeword, sigma=0.8))

    np.testing.assert_array_equal(output.codeword, codeword)
    np.testing.assert_array_equal(output.payload, payload)
    assert bool(jnp.all(output.converged))
    np.testing.assert_array_equal(output.iterations, 1)


def test_infinite_channel_llrs_are_clipped():
    payload = _random_payload(jax.random.key(3), 8, PRODUCT.k)
    codeword = product.encode(PRODUCT, payload)
    llr = jnp.where(codeword == 0, jnp.inf, -jnp.inf).astype(jnp.float32)
    output = product.make_turbo_decoder(PRODUCT, product.TurboSpec("soft", max_iterations=2))(llr)
    np.testing.assert_array_equal(output.payload, payload)


def test_iterations_reduce_errors():
    _, codeword, llr = _noisy_batch(seed=4, batch=64, ebno_db=2.0)
    bit_errors = {}
    for max_iterations in (1, 8):
        decode = product.make_turbo_decoder(PRODUCT, product.TurboSpec("soft", max_iterations=max_iterations))
        output = decode(llr)
        bit_errors[max_iterations] = int(jnp.sum(output.codeword != codeword))
    assert bit_errors[1] > 0
    assert bit_errors[8] < bit_errors[1] / 2


def test_soft_beats_hard_on_fixed_batch():
    payload, _, llr = _noisy_batch(seed=5, batch=128, ebno_db=2.0)
    block_errors = {}
    for component_output in ("soft", "hard"):
        output = product.make_turbo_decoder(PRODUCT, product.TurboSpec(component_output, beta=8.0))(llr)
        block_errors[component_output] = int(jnp.sum(jnp.any(output.payload != payload, axis=(1, 2))))
    # About 0.06 (soft) and 0.35 (hard) BLER at 2 dB on this code; the margin leaves room for sampling.
    assert block_errors["soft"] < block_errors["hard"] / 2


def test_ebno_at_bler_interpolates_log_bler():
    assert product.ebno_at_bler([1.0, 2.0, 3.0], [1e-1, 1e-3, 1e-5], 1e-2) == pytest.approx(1.5)
    assert product.ebno_at_bler([1.0, 2.0], [1e-1, 1e-1], 1e-2) is None
    assert product.ebno_at_bler([1.0, 2.0], [1e-1, 0.0], 1e-2) is None


@pytest.mark.parametrize("kwargs,message", [
    ({"component_output": "chase"}, "component_output"),
    ({"list_size": 0}, "list_size"),
    ({"max_iterations": 0}, "max_iterations"),
    ({"alpha": 1.5}, "alpha"),
    ({"beta": 0.0}, "beta"),
    ({"llr_clip": float("inf")}, "llr_clip"),
])
def test_turbo_spec_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        product.TurboSpec(**kwargs)


def test_product_code_rejects_crc():
    with pytest.raises(ValueError, match="crc=None"):
        product.ProductCode(codes.polar_code_5g(32, 26, crc="CRC6"))


def _tiny_config():
    config = _load_config("quick")
    config.code.length = 16
    config.code.num_info = 11
    config.ebno_db = (1.0, 4.0)
    config.batch_size = 64
    config.max_iterations = 4
    config.target_block_errors = 10
    config.max_codewords = 128
    return config


@pytest.mark.parametrize("field,value,message", [
    ("decoders", ("soft", "chase"), "decoders[1]"),
    ("decoders", ("soft", "soft"), "decoders"),
    ("code.length", 48, "code.length"),
    ("code.num_info", 40, "code.num_info"),
    ("alpha", -0.1, "alpha"),
    ("beta", 0.0, "beta"),
    ("max_iterations", 0, "max_iterations"),
    ("ebno_db", (3.0, 2.0), "ebno_db[1]"),
    ("batch_size", 12, "device count"),
])
def test_validate_rejects_bad_values(field, value, message):
    config = _tiny_config()
    parent, _, leaf = field.rpartition(".")
    target = config_lib.get_field(config, parent) if parent else config
    setattr(target, leaf, value)
    with pytest.raises(config_lib.ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        product_experiment.validate(config)


def test_configs_validate():
    for variant in ("", "quick"):
        product_experiment.validate(_load_config(variant))
    assert registry.get_experiment("polar_product_code").run is product_experiment.run


def test_run_writes_results_and_repeats_them(tmp_path):
    config = _tiny_config()
    product_experiment.validate(config)
    results = product_experiment.run(config, str(tmp_path))

    points = results["points"]
    assert [(p["decoder"], p["ebno_db"]) for p in points] == [
        (name, ebno) for name in config.decoders for ebno in config.ebno_db]
    for point in points:
        assert point["block_errors"] >= config.target_block_errors or point["codewords"] >= config.max_codewords
        assert point["bler_ci99"][0] <= point["bler"] <= point["bler_ci99"][1]
        assert 1.0 <= point["mean_iterations"] <= config.max_iterations
    by_point = {(p["decoder"], p["ebno_db"]): p["bler"] for p in points}
    assert by_point[("soft", 1.0)] > by_point[("soft", 4.0)]
    assert set(results["gain"]["ebno_db_at_target"]) == {"soft", "hard"}

    assert json.loads((tmp_path / "results.json").read_text()) == json.loads(json.dumps(results))
    assert (tmp_path / "bler.png").stat().st_size > 0
    assert "SO-SCL-4" in (tmp_path / "results.md").read_text()
    metric_lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in metric_lines] == list(range(len(points)))

    assert product_experiment.run(config, str(tmp_path)) == results


def _launch(workdir):
    args = [
        sys.executable, "-m", "launch.main", f"--config={CONFIG_PATH}:quick", f"--workdir={workdir}",
        "--config.code.length=16", "--config.code.num_info=11", "--config.ebno_db=(2.0,3.0)",
        "--config.batch_size=64", "--config.max_iterations=4", "--config.target_block_errors=100000",
        "--config.max_codewords=4096", "--config.checkpoint_every_s=0.2",
    ]
    return subprocess.Popen(args, cwd=REPO_ROOT, env=dict(os.environ, JAX_PLATFORMS="cpu"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


# Slow: three launcher processes each compile the turbo decoder. The BLER experiment's kill tests cover the
# same resumable sweep loop in the fast suite.
@pytest.mark.slow
def test_killed_run_resumes_to_same_results(tmp_path):
    reference_dir, interrupted_dir = tmp_path / "reference", tmp_path / "interrupted"

    process = _launch(interrupted_dir)
    checkpoints = interrupted_dir / "checkpoints"
    deadline = time.monotonic() + 120.0
    while not (checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir())):
        assert process.poll() is None, f"run ended before its first checkpoint: {process.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, "no checkpoint within the timeout"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert not (interrupted_dir / "results.json").exists(), "the run finished before it was killed"

    resumed, reference = _launch(interrupted_dir), _launch(reference_dir)
    stderr = {}
    for name, proc in (("resumed", resumed), ("reference", reference)):
        _, stderr[name] = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[name][-2000:]
    assert "Resumed from checkpoint" in stderr["resumed"]

    resumed_results = json.loads((interrupted_dir / "results.json").read_text())
    assert resumed_results == json.loads((reference_dir / "results.json").read_text())
    assert all(p["mean_iterations"] >= 1.0 for p in resumed_results["points"])
