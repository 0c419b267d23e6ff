"""Tests of the BPSK-AWGN channel and its LLRs."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.polar import channel


def test_sigma_formula():
    sigma = channel.ebno_db_to_sigma(2.0, 0.5)

    assert sigma == pytest.approx(math.sqrt(1 / (2 * 0.5 * 10**0.2)))


def test_sigma_at_zero_db_rate_half_is_one():
    assert channel.ebno_db_to_sigma(0.0, 0.5) == pytest.approx(1.0)


def test_sigma_accepts_arrays():
    sigma = channel.ebno_db_to_sigma(np.array([0.0, 10.0]), 0.5)

    np.testing.assert_allclose(sigma, [1.0, math.sqrt(0.1)])


def test_sigma_rejects_invalid_rate():
    with pytest.raises(ValueError, match="rate"):
        channel.ebno_db_to_sigma(1.0, 0.0)


def test_bpsk_mapping():
    symbols = channel.bpsk(jnp.array([0, 1, 1, 0], dtype=jnp.uint8))

    assert symbols.dtype == jnp.float32
    np.testing.assert_array_equal(symbols, [1.0, -1.0, -1.0, 1.0])


def test_noiseless_llr_sign_and_scale():
    llr = channel.noiseless_llr(jnp.array([0, 1], dtype=jnp.int32), sigma=0.5)

    np.testing.assert_allclose(llr, [8.0, -8.0])


def test_awgn_noise_variance_and_mean():
    sigma = 0.7
    bits = jnp.zeros((200, 1000), dtype=jnp.uint8)

    llr = channel.awgn_llr(jax.random.key(0), bits, sigma)
    y = np.asarray(llr) * sigma**2 / 2

    assert llr.dtype == jnp.float32
    assert llr.shape == bits.shape
    assert np.mean(y) == pytest.approx(1.0, abs=0.01)
    assert np.var(y) == pytest.approx(sigma**2, rel=0.02)


def test_awgn_llr_mean_and_variance():
    # For BPSK-AWGN the LLR of bit 1 is Gaussian with mean -2/sigma^2 and variance 4/sigma^2.
    sigma = 0.8
    bits = jnp.ones((100, 1000), dtype=jnp.uint8)

    llr = np.asarray(channel.awgn_llr(jax.random.key(1), bits, sigma))

    assert np.mean(llr) == pytest.approx(-2 / sigma**2, rel=0.01)
    assert np.var(llr) == pytest.approx(4 / sigma**2, rel=0.02)


def test_awgn_hard_decision_error_rate():
    # P(sign error) = Q(1 / sigma); for sigma = 1 it is 0.158655.
    bits = jnp.asarray(np.random.default_rng(0).integers(0, 2, (100, 1000)), dtype=jnp.uint8)

    llr = channel.awgn_llr(jax.random.key(2), bits, 1.0)
    errors = np.mean((np.asarray(llr) < 0) != np.asarray(bits, dtype=bool))

    assert errors == pytest.approx(0.158655, abs=0.004)


def test_awgn_under_jit_with_traced_sigma():
    bits = jnp.zeros(64, dtype=jnp.uint8)

    llr = jax.jit(channel.awgn_llr)(jax.random.key(3), bits, jnp.float32(0.5))

    np.testing.assert_allclose(llr, channel.awgn_llr(jax.random.key(3), bits, 0.5), rtol=1e-6)
