"""Monte Carlo estimation of block and bit error rates of polar decoders over BPSK-AWGN.

A batch is drawn, encoded, sent through the channel and decoded in one jitted call. The random key of
batch b at Eb/N0 point e is fold_in(fold_in(key, e), b), independent of the decoder, so every decoder gets
the same payloads and the same noise (common random numbers), and a resumed or sharded simulation replays
exactly the same draws.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from jaxlab.core import config as config_lib
from jaxlab.polar import channel
from jaxlab.polar import crc as crc_lib
from jaxlab.polar import decoders
from jaxlab.polar import encoding
from jaxlab.polar.codes import PolarCode


@dataclasses.dataclass
class ErrorCounts:
    """Running error counts at one Eb/N0 point.

    Attributes:
      block_errors: blocks whose K decoded information bits (payload plus CRC) differ from those sent.
      bit_errors: payload bits decoded wrongly.
      codewords: blocks simulated.
      batches: batches simulated; batch `batches` is the next one to draw.
    """

    block_errors: int = 0
    bit_errors: int = 0
    codewords: int = 0
    batches: int = 0

    def add(self, block_errors: int, bit_errors: int, codewords: int) -> None:
        self.block_errors += int(block_errors)
        self.bit_errors += int(bit_errors)
        self.codewords += int(codewords)
        self.batches += 1

    def as_array(self) -> np.ndarray:
        return np.array([self.block_errors, self.bit_errors, self.codewords, self.batches], np.int64)

    @classmethod
    def from_array(cls, values) -> "ErrorCounts":
        block_errors, bit_errors, codewords, batches = (int(v) for v in np.asarray(values))
        return cls(block_errors, bit_errors, codewords, batches)


def make_batch_simulator(
    code: PolarCode,
    spec: decoders.DecoderSpec,
    batch_size: int,
    sharding: jax.sharding.Sharding | None = None,
) -> Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]:
    """Build a jitted `simulate(key, ebno_db) -> (block_errors, bit_errors)` for one batch.

    Args:
      code: the polar code, with its CRC if any (the CRC is always attached; `spec.crc_aided` decides
        whether the decoder uses it).
      spec: the decoder.
      batch_size: codewords per batch; a multiple of the device count when `sharding` is given.
      sharding: optional sharding of the batch axis (for example `NamedSharding(mesh, P("data"))`).

    Returns a function whose counts are int32 scalars for the batch.
    """
    batch_decode = decoders.make_batch_decode_fn(code, spec)
    rate = code.rate

    def simulate(key, ebno_db):
        key_payload, key_noise = jax.random.split(key)
        payload = jax.random.bernoulli(key_payload, 0.5, (batch_size, code.num_payload)).astype(jnp.uint8)
        if sharding is not None:
            payload = jax.lax.with_sharding_constraint(payload, sharding)
        info_bits = crc_lib.crc_attach(payload, code.crc) if code.crc is not None else payload
        codeword = encoding.encode(code, info_bits)
        sigma = channel.ebno_db_to_sigma(ebno_db, rate)
        llr = channel.awgn_llr(key_noise, codeword, sigma)

        decoded = batch_decode(llr)
        wrong_bits = decoded.info_bits != info_bits
        block_errors = jnp.sum(jnp.any(wrong_bits, axis=-1), dtype=jnp.int32)
        bit_errors = jnp.sum(wrong_bits[:, : code.num_payload], dtype=jnp.int32)
        return block_errors, bit_errors

    return jax.jit(simulate)


def batch_key(key: jax.Array, point_index: int, batch_index: int) -> jax.Array:
    """Return the key of one batch, shared by all decoders at that point."""
    return jax.random.fold_in(jax.random.fold_in(key, point_index), batch_index)


def should_stop(counts: ErrorCounts, target_block_errors: int, max_codewords: int) -> bool:
    """Return whether a point has enough block errors or has reached its codeword cap."""
    return counts.block_errors >= target_block_errors or counts.codewords >= max_codewords


def clopper_pearson(errors: int, trials: int, confidence: float = 0.99) -> tuple[float, float]:
    """Return the exact (Clopper-Pearson) two-sided binomial confidence interval of errors / trials."""
    if trials <= 0:
        return 0.0, 1.0
    tail = (1.0 - confidence) / 2.0
    lower = 0.0 if errors == 0 else float(stats.beta.ppf(tail, errors, trials - errors + 1))
    upper = 1.0 if errors == trials else float(stats.beta.ppf(1.0 - tail, errors + 1, trials - errors))
    return lower, upper


def intervals_agree(errors_a: int, trials_a: int, errors_b: int, trials_b: int,
                    confidence: float = 0.99) -> bool:
    """Return whether two error-rate estimates agree: one lies in the other's interval, or the intervals overlap."""
    lower_a, upper_a = clopper_pearson(errors_a, trials_a, confidence)
    lower_b, upper_b = clopper_pearson(errors_b, trials_b, confidence)
    return lower_a <= upper_b and lower_b <= upper_a


def simulate_codewords(simulate: Callable, ebno_db: float, num_codewords: int, batch_size: int,
                       key: jax.Array) -> ErrorCounts:
    """Run a batch simulator for a fixed number of codewords (rounded up to whole batches) at one point."""
    counts = ErrorCounts()
    while counts.codewords < num_codewords:
        block_errors, bit_errors = jax.device_get(simulate(jax.random.fold_in(key, counts.batches), ebno_db))
        counts.add(block_errors, bit_errors, batch_size)
    return counts


def validate_sweep_config(config) -> None:
    """Check the Monte Carlo fields that every Eb/N0 sweep config shares; raise `ConfigError` on the first bad one.

    Fields: ebno_db (strictly increasing dB values), batch_size (divisible by the device count, because
    batches are sharded over all devices), target_block_errors, max_codewords and checkpoint_every_s.
    """
    config_lib.require_list_of(config, "ebno_db", float, min_len=1, min=-20.0, max=40.0, increasing=True)
    devices = jax.device_count()
    config_lib.require(
        config, "batch_size", lambda b: isinstance(b, int) and b > 0 and b % devices == 0,
        f"a positive int divisible by the device count {devices}",
    )
    config_lib.require_int(config, "target_block_errors", min=1)
    config_lib.require_int(config, "max_codewords", min=1)
    config_lib.require_float(config, "checkpoint_every_s", gt=0.0)
