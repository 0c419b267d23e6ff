"""BPSK over real AWGN and the channel LLRs fed to polar decoders.

Mapping: bit 0 -> +1, bit 1 -> -1, unit symbol energy. LLRs are
lambda = ln P(bit = 0 | y) / P(bit = 1 | y) = 2 y / sigma^2, so a positive LLR
favours 0 (the opposite sign of Sionna's logits).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

ArrayLike = float | np.ndarray | jnp.ndarray


def ebno_db_to_sigma(ebno_db: ArrayLike, rate: ArrayLike) -> ArrayLike:
    """Return the noise standard deviation sigma = sqrt(1 / (2 R 10^(Eb/N0 / 10))).

    Args:
      ebno_db: Eb/N0 per payload bit, in dB (scalar or array).
      rate: payload rate R = num_payload / N (use `PolarCode.rate`), in (0, 1].

    Returns:
      sigma, per real dimension, with the broadcast type of the inputs.
    """
    if isinstance(rate, (int, float)) and not 0 < rate <= 1:
        raise ValueError(f"rate must be in (0, 1], got {rate}; pass PolarCode.rate.")
    return (2.0 * rate * 10.0 ** (ebno_db / 10.0)) ** -0.5


def bpsk(x_bits: jnp.ndarray) -> jnp.ndarray:
    """Map 0/1 bits of shape [...] to float32 symbols +1/-1 (0 -> +1)."""
    return 1.0 - 2.0 * jnp.asarray(x_bits, dtype=jnp.float32)


def awgn_llr(key: jax.Array, x_bits: jnp.ndarray, sigma: ArrayLike) -> jnp.ndarray:
    """Transmit BPSK over AWGN and return channel LLRs 2 y / sigma^2.

    Args:
      key: PRNG key for the noise.
      x_bits: [..., N] 0/1 code bits.
      sigma: noise standard deviation, scalar or broadcastable to [..., N].

    Returns:
      float32 [..., N] LLRs, positive favouring bit 0.
    """
    symbols = bpsk(x_bits)
    sigma = jnp.asarray(sigma, dtype=jnp.float32)
    y = symbols + sigma * jax.random.normal(key, symbols.shape, dtype=jnp.float32)
    return 2.0 * y / sigma**2


def noiseless_llr(x_bits: jnp.ndarray, sigma: ArrayLike = 1.0) -> jnp.ndarray:
    """Return the LLRs 2 s / sigma^2 of the noiseless symbols s = bpsk(x_bits): float32 [..., N]."""
    sigma = jnp.asarray(sigma, dtype=jnp.float32)
    return 2.0 * bpsk(x_bits) / sigma**2
