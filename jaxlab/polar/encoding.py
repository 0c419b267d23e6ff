"""Polar encoding: the transform x = u F^{⊗n} and non-systematic or systematic encoders.

F = [[1, 0], [1, 1]] and the Kronecker power is taken in natural order with no
bit-reversal permutation, as in 3GPP TS 38.212 §5.3.1.2 and Sionna's
PolarEncoder. Bits are 0/1 values of an integer or bool dtype, and every
function keeps the input dtype and leading batch axes.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.polar.codes import PolarCode


def polar_transform(u: jnp.ndarray) -> jnp.ndarray:
    """Compute x = u F^{⊗n} over GF(2) for u of shape [..., N], N a power of two.

    Runs log2(N) butterfly stages of XORs. The transform is its own inverse.
    """
    u = jnp.asarray(u)
    if not (jnp.issubdtype(u.dtype, jnp.integer) or u.dtype == jnp.bool_):
        raise TypeError(
            f"polar_transform needs integer or bool bits, got dtype {u.dtype}; "
            "cast hard decisions with .astype(jnp.uint8)."
        )
    length = u.shape[-1]
    if length < 1 or length & (length - 1):
        raise ValueError(f"The last axis must be a power of two, got length {length}.")
    return _butterfly_stages(u)


@jax.jit
def _butterfly_stages(u: jnp.ndarray) -> jnp.ndarray:
    # Compiled once per shape and dtype, because eager dispatch of the
    # 2 log2(N) small ops dominates the cost for one-off calls.
    length = u.shape[-1]
    batch_shape = u.shape[:-1]
    x = u
    half = 1
    while half < length:
        # Pair index j with j + half inside each block of 2 * half: x_j ^= x_{j + half}.
        blocks = x.reshape(batch_shape + (length // (2 * half), 2, half))
        upper = blocks[..., 0, :] ^ blocks[..., 1, :]
        x = jnp.stack([upper, blocks[..., 1, :]], axis=-2).reshape(u.shape)
        half *= 2
    return x


def _polar_transform_numpy(u: np.ndarray) -> np.ndarray:
    """Same butterfly stages as `polar_transform`, in numpy for one-time checks."""
    length = u.shape[-1]
    x = u.copy()
    half = 1
    while half < length:
        blocks = x.reshape(u.shape[:-1] + (length // (2 * half), 2, half))
        blocks[..., 0, :] ^= blocks[..., 1, :]
        half *= 2
    return x


def _check_info_shape(code: PolarCode, info_bits: jnp.ndarray) -> None:
    if info_bits.shape[-1] != code.num_info:
        raise ValueError(
            f"info_bits must have {code.num_info} bits on the last axis "
            f"(payload plus CRC), got shape {info_bits.shape}; attach the CRC first "
            "with jaxlab.polar.crc.crc_attach."
        )


def _place_info_bits(code: PolarCode, info_bits: jnp.ndarray) -> jnp.ndarray:
    u = jnp.zeros(info_bits.shape[:-1] + (code.length,), dtype=info_bits.dtype)
    return u.at[..., code.info_positions].set(info_bits)


def encode(code: PolarCode, info_bits: jnp.ndarray) -> jnp.ndarray:
    """Encode non-systematically: u[info_positions] = info_bits, frozen u = 0, x = u F^{⊗n}.

    Args:
      code: the polar code.
      info_bits: [..., K] 0/1 bits (payload plus CRC when the code has one).

    Returns:
      [..., N] codeword, same dtype as `info_bits`.
    """
    info_bits = jnp.asarray(info_bits)
    _check_info_shape(code, info_bits)
    return polar_transform(_place_info_bits(code, info_bits))


def _systematic_encode_numpy(code: PolarCode, info_bits: np.ndarray) -> np.ndarray:
    """Two-pass systematic encoding in numpy, used to check the frozen set once."""
    v = np.zeros(info_bits.shape[:-1] + (code.length,), dtype=np.uint8)
    v[..., code.info_positions] = info_bits
    u = _polar_transform_numpy(v)
    u[..., code.frozen_positions] = 0
    return _polar_transform_numpy(u)


@functools.lru_cache(maxsize=64)
def supports_systematic(code: PolarCode) -> bool:
    """Return whether two-pass systematic encoding reproduces the information bits.

    The method needs the submatrix of F^{⊗n} on the information rows and columns
    to be its own inverse, which holds for domination-contiguous frozen sets
    (for example the 5G NR, Bhattacharyya and GA constructions). By linearity a
    check on the K unit vectors covers every input.
    """
    identity = np.eye(code.num_info, dtype=np.uint8)
    x = _systematic_encode_numpy(code, identity)
    return bool(np.array_equal(x[:, code.info_positions], identity))


def encode_systematic(code: PolarCode, info_bits: jnp.ndarray) -> jnp.ndarray:
    """Encode systematically so that x[..., info_positions] == info_bits.

    Two passes: x = P_A(v F^{⊗n}) F^{⊗n}, where v carries the information bits
    at the information positions and P_A zeroes the frozen positions.

    Raises:
      ValueError: if the frozen set does not allow this method (see
        `supports_systematic`), before any array work is traced.
    """
    info_bits = jnp.asarray(info_bits)
    _check_info_shape(code, info_bits)
    if not supports_systematic(code):
        raise ValueError(
            f"The frozen set of this (N={code.length}, K={code.num_info}) code is not "
            "domination contiguous, so two-pass systematic encoding does not return "
            "the information bits; use encode() or a 5G NR, Bhattacharyya or GA frozen set."
        )
    u = polar_transform(_place_info_bits(code, info_bits))
    u = u.at[..., code.frozen_positions].set(0)
    return polar_transform(u)


def info_bits_from_codeword(
    code: PolarCode, x: jnp.ndarray, systematic: bool
) -> jnp.ndarray:
    """Recover the K information bits from codewords x of shape [..., N].

    Systematic codewords carry them at `info_positions`. For non-systematic ones
    the transform is inverted (it is an involution) and u is read there.
    """
    x = jnp.asarray(x)
    if x.shape[-1] != code.length:
        raise ValueError(
            f"x must have {code.length} bits on the last axis, got shape {x.shape}."
        )
    if not systematic:
        x = polar_transform(x)
    return x[..., code.info_positions]
