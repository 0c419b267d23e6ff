"""Tests of the 5G CRCs: matrix form against long division, Sionna vectors, error detection."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.polar import crc as crc_lib

CRC_NAMES = ["CRC6", "CRC11", "CRC16", "CRC24C"]

# Payload and parity bits produced by Sionna 2.2 CRCEncoder(crc_degree=name).
SIONNA_PAYLOAD = "0111001100100100110011111001000010001010"
SIONNA_PARITY = {
    "CRC6": "010001",
    "CRC11": "01011010100",
    "CRC16": "0010110000000100",
    "CRC24C": "000010010100110100001111",
}


def _bits(text: str) -> np.ndarray:
    return np.array([int(c) for c in text], dtype=np.uint8)


@pytest.mark.parametrize("name", CRC_NAMES)
def test_attach_matches_long_division(name):
    rng = np.random.default_rng(0)
    for payload_length in (1, 7, 40, 117):
        payload = rng.integers(0, 2, (16, payload_length), dtype=np.uint8)
        attached = np.asarray(crc_lib.crc_attach(payload, name))
        expected = crc_lib.crc_remainder_reference(payload, name)

        assert attached.shape == (16, payload_length + crc_lib.crc_length(name))
        np.testing.assert_array_equal(attached[:, :payload_length], payload)
        np.testing.assert_array_equal(attached[:, payload_length:], expected)


@pytest.mark.parametrize("name", CRC_NAMES)
def test_attach_matches_sionna_vectors(name):
    attached = np.asarray(crc_lib.crc_attach(_bits(SIONNA_PAYLOAD), name))

    np.testing.assert_array_equal(attached[len(SIONNA_PAYLOAD) :], _bits(SIONNA_PARITY[name]))


def test_crc16_xmodem_check_value():
    # x^16 + x^12 + x^5 + 1 with zero initial register and no reflection is
    # CRC-16/XMODEM, whose catalogued check value for ASCII "123456789" is 0x31C3.
    message = np.unpackbits(np.frombuffer(b"123456789", dtype=np.uint8))
    parity = np.asarray(crc_lib.crc_attach(message, "CRC16"))[len(message) :]

    assert int("".join(map(str, parity)), 2) == 0x31C3


@pytest.mark.parametrize("name", CRC_NAMES)
def test_check_accepts_valid_words(name):
    payload = np.random.default_rng(1).integers(0, 2, (32, 50), dtype=np.uint8)
    words = crc_lib.crc_attach(payload, name)

    assert bool(jnp.all(crc_lib.crc_check(words, name)))
    np.testing.assert_array_equal(crc_lib.crc_remainder_reference(np.asarray(words), name), 0)


@pytest.mark.parametrize("name", CRC_NAMES)
def test_check_detects_single_bit_flips(name):
    payload = np.random.default_rng(2).integers(0, 2, 30, dtype=np.uint8)
    word = np.asarray(crc_lib.crc_attach(payload, name))
    flips = np.eye(len(word), dtype=np.uint8)

    corrupted = word[None, :] ^ flips

    assert not bool(jnp.any(crc_lib.crc_check(corrupted, name)))


def test_attach_keeps_dtype_and_batch_shape():
    payload = np.random.default_rng(3).integers(0, 2, (2, 3, 20)).astype(bool)

    attached = crc_lib.crc_attach(payload, "CRC11")

    assert attached.dtype == jnp.bool_
    assert attached.shape == (2, 3, 31)
    assert crc_lib.crc_check(attached, "CRC11").shape == (2, 3)


def test_attach_and_check_under_jit_and_vmap():
    payload = jnp.asarray(np.random.default_rng(4).integers(0, 2, (8, 21)), dtype=jnp.int32)

    attached = jax.jit(jax.vmap(lambda bits: crc_lib.crc_attach(bits, "CRC24C")))(payload)
    passed = jax.jit(lambda words: crc_lib.crc_check(words, "CRC24C"))(attached)

    np.testing.assert_array_equal(attached, crc_lib.crc_attach(payload, "CRC24C"))
    assert bool(jnp.all(passed))


def test_crc_length_values():
    assert crc_lib.crc_length(None) == 0
    assert [crc_lib.crc_length(name) for name in CRC_NAMES] == [6, 11, 16, 24]


def test_unknown_crc_name_raises():
    with pytest.raises(ValueError, match="CRC12"):
        crc_lib.crc_attach(np.zeros(8, dtype=np.uint8), "CRC12")
