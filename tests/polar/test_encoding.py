"""Tests of the polar transform and the non-systematic and systematic encoders."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.polar import codes, encoding


def _kronecker_power(length: int) -> np.ndarray:
    kernel = np.array([[1, 0], [1, 1]], dtype=np.int64)
    matrix = np.array([[1]], dtype=np.int64)
    while len(matrix) < length:
        matrix = np.kron(matrix, kernel)
    return matrix


@pytest.mark.parametrize("length", [2, 4, 8, 16, 32, 64])
def test_transform_matches_kronecker_matrix(length):
    u = np.random.default_rng(length).integers(0, 2, (20, length), dtype=np.uint8)
    expected = (u.astype(np.int64) @ _kronecker_power(length)) % 2

    np.testing.assert_array_equal(np.asarray(encoding.polar_transform(u)), expected)


@pytest.mark.parametrize("dtype", [jnp.uint8, jnp.int32, jnp.bool_])
def test_transform_is_involution(dtype):
    u = jnp.asarray(np.random.default_rng(5).integers(0, 2, (3, 4, 256)), dtype=dtype)

    x = encoding.polar_transform(u)

    assert x.dtype == dtype
    assert x.shape == u.shape
    np.testing.assert_array_equal(encoding.polar_transform(x), u)


def test_transform_first_rows_n4():
    # F^{⊗2} = [[1,0,0,0],[1,1,0,0],[1,0,1,0],[1,1,1,1]]: u_0 reaches only x_0, u_3 all bits.
    unit_vectors = np.eye(4, dtype=np.uint8)

    x = np.asarray(encoding.polar_transform(unit_vectors))

    np.testing.assert_array_equal(x, [[1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0], [1, 1, 1, 1]])


def test_transform_under_jit():
    u = jnp.asarray(np.random.default_rng(6).integers(0, 2, (5, 128)), dtype=jnp.uint8)

    np.testing.assert_array_equal(jax.jit(encoding.polar_transform)(u), encoding.polar_transform(u))


def test_transform_rejects_float_input():
    with pytest.raises(TypeError, match="float32"):
        encoding.polar_transform(jnp.zeros(8, dtype=jnp.float32))


def test_transform_rejects_non_power_of_two():
    with pytest.raises(ValueError, match="12"):
        encoding.polar_transform(jnp.zeros(12, dtype=jnp.uint8))


def test_encode_places_bits_at_info_positions():
    code = codes.polar_code_5g(64, 20)
    info = np.random.default_rng(7).integers(0, 2, (10, 20), dtype=np.uint8)
    u = np.zeros((10, 64), dtype=np.int64)
    u[:, code.info_positions] = info
    expected = (u @ _kronecker_power(64)) % 2

    np.testing.assert_array_equal(np.asarray(encoding.encode(code, info)), expected)


def test_encode_matches_sionna_vector():
    # Sionna 2.2 PolarEncoder(frozen_pos, 64) output for the 5G (64, 32) frozen set.
    code = codes.polar_code_5g(64, 32)
    info = np.array([int(c) for c in "10101101011000111111100001101110"], dtype=np.uint8)
    expected = "1000101110010011110100100011010100110000110101111001011010001110"

    x = np.asarray(encoding.encode(code, info))

    assert "".join(map(str, x)) == expected


def test_encode_rejects_wrong_info_length():
    code = codes.polar_code_5g(32, 16, crc="CRC6")

    with pytest.raises(ValueError, match="16 bits"):
        encoding.encode(code, np.zeros(10, dtype=np.uint8))


@pytest.mark.parametrize(
    "code",
    [
        codes.polar_code_5g(128, 64, crc="CRC11"),
        codes.polar_code_5g(1024, 512),
        codes.polar_code_ga(256, 100, design_snr_db=2.0),
        codes.polar_code_bhattacharyya(512, 300, design_snr_db=3.0, crc="CRC24C"),
    ],
    ids=["5g-128-64", "5g-1024-512", "ga-256-100", "bhatt-512-300"],
)
def test_systematic_encoding_carries_info_bits(code):
    info = jnp.asarray(
        np.random.default_rng(8).integers(0, 2, (16, code.num_info)), dtype=jnp.uint8
    )

    x = encoding.encode_systematic(code, info)
    u = encoding.polar_transform(x)

    np.testing.assert_array_equal(x[:, code.info_positions], info)
    np.testing.assert_array_equal(u[:, code.frozen_positions], 0)
    np.testing.assert_array_equal(
        encoding.info_bits_from_codeword(code, x, systematic=True), info
    )


def test_systematic_rejects_unsuited_frozen_set():
    # Info set {0, 1, 3} of N = 4: three of the four indices between 0 and 3 in the
    # bitwise order are unfrozen, so the info submatrix of F^{⊗2} is not its own inverse.
    code = codes.polar_code_from_frozen(np.array([0, 0, 1, 0]))

    assert not encoding.supports_systematic(code)
    with pytest.raises(ValueError, match="domination contiguous"):
        encoding.encode_systematic(code, np.ones(3, dtype=np.uint8))


def test_systematic_accepts_small_contiguous_set():
    code = codes.polar_code_from_frozen(np.array([1, 1, 0, 0]))

    assert encoding.supports_systematic(code)


def test_info_bits_roundtrip_non_systematic():
    code = codes.polar_code_5g(256, 128, crc="CRC16")
    info = jnp.asarray(np.random.default_rng(9).integers(0, 2, (4, 128)), dtype=jnp.int32)

    x = encoding.encode(code, info)

    np.testing.assert_array_equal(
        encoding.info_bits_from_codeword(code, x, systematic=False), info
    )


def test_encoders_under_jit_and_vmap():
    code = codes.polar_code_5g(128, 64)
    info = jnp.asarray(np.random.default_rng(10).integers(0, 2, (6, 64)), dtype=jnp.uint8)

    batched = jax.jit(jax.vmap(lambda bits: encoding.encode_systematic(code, bits)))(info)
    direct = jax.jit(lambda bits: encoding.encode(code, bits))(info)

    np.testing.assert_array_equal(batched, encoding.encode_systematic(code, info))
    np.testing.assert_array_equal(direct, encoding.encode(code, info))
