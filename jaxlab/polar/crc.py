"""5G NR cyclic redundancy checks (3GPP TS 38.212 §5.1) as GF(2) matrix products.

Conventions, as in TS 38.212 §5.1: the shift register starts at zero, nothing is
reflected, the payload a_0..a_{k-1} is the polynomial a_0 x^{k-1} + ... + a_{k-1}
(first bit is the most significant), and the r parity bits are appended after
the payload, most significant first. Bits are 0/1 values of any integer or bool
dtype.

`crc_attach` and `crc_check` are jnp matrix products mod 2, so they run under
`jit` and `vmap`. The matrices are built once per (crc, length) in numpy.
`crc_remainder_reference` is a plain long division kept as independent truth
for tests.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np

# Exponents of the nonzero terms of each generator polynomial g(x), TS 38.212 §5.1.
CRC_POLYNOMIALS: dict[str, tuple[int, ...]] = {
    "CRC6": (6, 5, 0),
    "CRC11": (11, 10, 9, 5, 0),
    "CRC16": (16, 12, 5, 0),
    "CRC24C": (24, 23, 21, 20, 17, 15, 13, 12, 8, 4, 2, 1, 0),
}


def crc_length(crc: str | None) -> int:
    """Return the number of parity bits r of `crc` (0 for None)."""
    if crc is None:
        return 0
    _check_crc_name(crc)
    return CRC_POLYNOMIALS[crc][0]


def _check_crc_name(crc: str) -> None:
    if crc not in CRC_POLYNOMIALS:
        raise ValueError(
            f"Unknown CRC {crc!r}; use one of {sorted(CRC_POLYNOMIALS)} or None."
        )


def _generator_bits(crc: str) -> np.ndarray:
    """Coefficients of g(x), highest degree first: uint8 [r + 1]."""
    r = crc_length(crc)
    g = np.zeros(r + 1, dtype=np.uint8)
    for exponent in CRC_POLYNOMIALS[crc]:
        g[r - exponent] = 1
    return g


def _monomial_remainders(crc: str, count: int) -> np.ndarray:
    """Remainders of x^j mod g(x) for j = 0..count-1: uint8 [count, r], highest degree first."""
    r = crc_length(crc)
    feedback = _generator_bits(crc)[1:]  # g(x) - x^r
    table = np.zeros((count, r), dtype=np.uint8)
    remainder = np.zeros(r, dtype=np.uint8)
    remainder[-1] = 1  # x^0
    for j in range(count):
        table[j] = remainder
        # Multiply by x; a carry out of degree r - 1 is reduced with x^r = g(x) - x^r.
        carry = remainder[0]
        remainder = np.concatenate([remainder[1:], np.zeros(1, dtype=np.uint8)])
        if carry:
            remainder ^= feedback
    return table


@functools.lru_cache(maxsize=None)
def crc_generator_matrix(crc: str, payload_length: int) -> np.ndarray:
    """Build the systematic CRC generator matrix [I_k | P]: read-only uint8 [k, k + r].

    Row i contains payload bit i followed by the parity of x^(k-1-i) * x^r mod g(x).
    """
    _check_crc_name(crc)
    if payload_length < 1:
        raise ValueError(f"payload_length must be >= 1, got {payload_length}.")
    r = crc_length(crc)
    remainders = _monomial_remainders(crc, payload_length + r)
    parity = remainders[r:][::-1]  # row i = x^(k-1-i+r) mod g
    matrix = np.concatenate([np.eye(payload_length, dtype=np.uint8), parity], axis=1)
    matrix.setflags(write=False)
    return matrix


@functools.lru_cache(maxsize=None)
def crc_check_matrix(crc: str, length: int) -> np.ndarray:
    """Build the syndrome matrix of CRC codewords of `length` = k + r bits: read-only uint8 [K, r].

    Row j is x^(K-1-j) mod g(x), so codeword c passes the check iff c @ H = 0 mod 2.
    """
    _check_crc_name(crc)
    r = crc_length(crc)
    if length <= r:
        raise ValueError(
            f"length must exceed the {r} parity bits of {crc}, got {length}."
        )
    matrix = _monomial_remainders(crc, length)[::-1].copy()
    matrix.setflags(write=False)
    return matrix


def _gf2_matmul(bits: jnp.ndarray, matrix: np.ndarray) -> jnp.ndarray:
    product = jnp.matmul(
        bits.astype(jnp.int32),
        jnp.asarray(matrix, dtype=jnp.int32),
        preferred_element_type=jnp.int32,
    )
    return product % 2


def crc_attach(bits: jnp.ndarray, crc: str) -> jnp.ndarray:
    """Append CRC parity bits to each payload.

    Args:
      bits: 0/1 payload, shape [..., k], integer or bool dtype.
      crc: one of `CRC_POLYNOMIALS`.

    Returns:
      [..., k + r] array of the same dtype: the payload followed by its r parity bits.
    """
    bits = jnp.asarray(bits)
    matrix = crc_generator_matrix(crc, bits.shape[-1])
    return _gf2_matmul(bits, matrix).astype(bits.dtype)


def crc_check(bits: jnp.ndarray, crc: str) -> jnp.ndarray:
    """Return True where a payload-plus-parity word passes the CRC.

    Args:
      bits: 0/1 words, shape [..., K] with K = k + r, integer or bool dtype.
      crc: one of `CRC_POLYNOMIALS`.

    Returns:
      bool [...].
    """
    bits = jnp.asarray(bits)
    matrix = crc_check_matrix(crc, bits.shape[-1])
    syndrome = _gf2_matmul(bits, matrix)
    return jnp.all(syndrome == 0, axis=-1)


def crc_remainder_reference(bits: np.ndarray, crc: str) -> np.ndarray:
    """Compute CRC parity bits by polynomial long division (slow numpy reference for tests).

    Returns the remainder of bits(x) * x^r divided by g(x), highest degree first,
    as uint8 [..., r]. For a payload this is its parity; for a valid codeword
    (payload plus parity) it is all zeros.
    """
    bits = np.asarray(bits, dtype=np.uint8)
    g = _generator_bits(crc)
    r = len(g) - 1
    flat = bits.reshape(-1, bits.shape[-1])
    out = np.zeros((flat.shape[0], r), dtype=np.uint8)
    for row_index, row in enumerate(flat):
        dividend = np.concatenate([row, np.zeros(r, dtype=np.uint8)])
        for i in range(len(row)):
            if dividend[i]:
                dividend[i : i + r + 1] ^= g
        out[row_index] = dividend[len(row) :]
    return out.reshape(bits.shape[:-1] + (r,))
