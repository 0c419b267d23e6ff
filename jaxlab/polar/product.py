"""Product codes of two identical polar codes and their iterative (turbo) decoding.

A k×k payload is encoded row by row with the component code C(n, k) and then column by column, giving an
n×n codeword whose rows and columns are all codewords of C (this holds for any linear component code).
Decoding alternates half-iterations over rows and columns. A component decoder receives the input
λ_ch + α·L_E, where L_E is the extrinsic LLR of the previous half-iteration, and returns a new L_E:

- "soft": SO-SCL (Yuan, Duffy and Médard, IEEE T-IT 2025), L_E = app_llr − input;
- "hard": SCL that returns only its decided codeword x̂, turned into L_E = β·(1 − 2x̂) − input, the fixed
  reliability β of Pyndiah's turbo product decoder (Pyndiah, IEEE Trans. Commun. 1998).

Decoding of a product codeword stops once every row and every column of the current decision is a
component codeword (zero syndrome), or after `max_iterations` full iterations (row plus column pass).

Conventions follow `jaxlab.polar`: λ = ln P(0)/P(1), natural-order non-systematic polar encoding.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Literal

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.polar import channel
from jaxlab.polar import decoders
from jaxlab.polar import encoding
from jaxlab.polar.codes import PolarCode

ComponentOutput = Literal["soft", "hard"]
COMPONENT_OUTPUTS = ("soft", "hard")


@dataclasses.dataclass(frozen=True)
class ProductCode:
    """The product code C ⊗ C of one polar component code C(n, k) without CRC.

    Attributes:
      component: the row and column code.
    """

    component: PolarCode

    def __post_init__(self):
        if self.component.crc is not None:
            raise ValueError(f"invalid component code with CRC {self.component.crc!r}; "
                             "build the component code with crc=None")

    @property
    def n(self) -> int:
        return self.component.length

    @property
    def k(self) -> int:
        return self.component.num_info

    @property
    def num_payload(self) -> int:
        return self.k * self.k

    @property
    def rate(self) -> float:
        """Payload rate k²/n², the rate of Eb/N0."""
        return self.num_payload / (self.n * self.n)


@dataclasses.dataclass(frozen=True)
class TurboSpec:
    """Iterative decoder settings.

    Attributes:
      component_output: "soft" (SO-SCL extrinsic LLRs) or "hard" (decided codeword with reliability β).
      list_size: L of the component list decoder.
      max_iterations: maximum number of full iterations, each a row and a column half-iteration.
      alpha: weight of the previous extrinsic LLRs in the component input λ_ch + α·L_E.
      beta: reliability given to a hard decision, in LLR units; used only with "hard".
      llr_clip: LLRs fed to the component decoder and extrinsic LLRs are clipped to ±llr_clip.
    """

    component_output: ComponentOutput = "soft"
    list_size: int = 4
    max_iterations: int = 20
    alpha: float = 0.5
    beta: float = 2.0
    llr_clip: float = 30.0

    def __post_init__(self):
        if self.component_output not in COMPONENT_OUTPUTS:
            raise ValueError(f"invalid component_output {self.component_output!r}; expected one of "
                             f"{COMPONENT_OUTPUTS}")
        if not isinstance(self.list_size, (int, np.integer)) or not 1 <= self.list_size <= 1024:
            raise ValueError(f"invalid list_size {self.list_size!r}; expected an integer in [1, 1024]")
        if not isinstance(self.max_iterations, (int, np.integer)) or self.max_iterations < 1:
            raise ValueError(f"invalid max_iterations {self.max_iterations!r}; expected an integer >= 1")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"invalid alpha {self.alpha!r}; expected a float in [0, 1]")
        if not self.beta > 0.0:
            raise ValueError(f"invalid beta {self.beta!r}; expected a float > 0")
        if not 0.0 < self.llr_clip < 1e4:
            raise ValueError(f"invalid llr_clip {self.llr_clip!r}; expected a float in (0, 1e4)")

    @property
    def name(self) -> str:
        return f"SO-SCL-{self.list_size}" if self.component_output == "soft" else f"SCL-{self.list_size} hard"


@chex.dataclass(frozen=True)
class TurboOutput:
    """Result of decoding a batch of B product codewords.

    Attributes:
      codeword: [B, n, n] uint8, the final decision; its rows (or columns) are component codewords.
      payload: [B, k, k] uint8, the payload read from `codeword`.
      iterations: [B] int32, full iterations run; a codeword that stops after a row pass counts that
        pass as a whole iteration.
      converged: [B] bool, whether every row and column of `codeword` is a component codeword.
    """

    codeword: jax.Array
    payload: jax.Array
    iterations: jax.Array
    converged: jax.Array


def encode(product: ProductCode, payload: jax.Array) -> jax.Array:
    """Encode payloads [..., k, k] into product codewords [..., n, n]: rows first, then columns."""
    payload = jnp.asarray(payload)
    k = product.k
    if payload.shape[-2:] != (k, k):
        raise ValueError(f"invalid payload shape {payload.shape}; expected [..., {k}, {k}]")
    rows = encoding.encode(product.component, payload)
    columns = encoding.encode(product.component, jnp.swapaxes(rows, -1, -2))
    return jnp.swapaxes(columns, -1, -2)


def payload_from_codeword(product: ProductCode, codeword: jax.Array) -> jax.Array:
    """Recover payloads [..., k, k] from product codewords [..., n, n] by inverting both polar transforms."""
    info = jnp.asarray(product.component.info_positions)
    columns_info = encoding.polar_transform(jnp.swapaxes(codeword, -1, -2))[..., info]
    return encoding.polar_transform(jnp.swapaxes(columns_info, -1, -2))[..., info]


def is_component_codeword(code: PolarCode, words: jax.Array) -> jax.Array:
    """Return whether each word [..., n] is a codeword: u = x·F^{⊗n} must vanish at the frozen positions."""
    u = encoding.polar_transform(words)
    return jnp.all(u[..., jnp.asarray(code.frozen_positions)] == 0, axis=-1)


def is_product_codeword(product: ProductCode, codeword: jax.Array) -> jax.Array:
    """Return [...] bool: whether every row and every column of codewords [..., n, n] is a component codeword."""
    rows_ok = jnp.all(is_component_codeword(product.component, codeword), axis=-1)
    columns_ok = jnp.all(is_component_codeword(product.component, jnp.swapaxes(codeword, -1, -2)), axis=-1)
    return rows_ok & columns_ok


def _make_component_fn(product: ProductCode, spec: TurboSpec) -> Callable[[jax.Array], tuple[jax.Array, jax.Array]]:
    """Build `component(inputs [M, n]) -> (extrinsic [M, n], decided codewords [M, n])` for M words."""
    soft = spec.component_output == "soft"
    decoder_spec = decoders.DecoderSpec("scl", spec.list_size, soft_output=soft)
    batch_decode = decoders.make_batch_decode_fn(product.component, decoder_spec)
    clip = spec.llr_clip

    def component(inputs):
        output = batch_decode(inputs)
        if soft:
            # An empty sublist with no out-of-list mass gives an infinite APP LLR; map it to ±clip.
            app = jnp.nan_to_num(output.app_llr, nan=0.0, posinf=clip, neginf=-clip)
            extrinsic = jnp.clip(app, -clip, clip) - inputs
        else:
            extrinsic = spec.beta * channel.bpsk(output.codeword) - inputs
        return jnp.clip(extrinsic, -clip, clip), output.codeword

    return component


def make_turbo_decode_fn(product: ProductCode, spec: TurboSpec) -> Callable[[jax.Array], TurboOutput]:
    """Build the traceable iterative decoder channel LLRs [B, n, n] -> `TurboOutput`.

    One half-iteration decodes the rows (or columns) of all B codewords as one batch of B·n component
    words. The loop is a `lax.while_loop` that ends when every codeword has converged or after
    2·max_iterations half-iterations; a converged codeword keeps its decision and extrinsic LLRs.
    """
    component = _make_component_fn(product, spec)
    n = product.n
    clip = spec.llr_clip
    max_half_iterations = 2 * spec.max_iterations

    def half_iteration(channel_llr, extrinsic, transpose):
        # Rows are the last axis; a column pass swaps the axes, decodes rows and swaps back.
        batch = channel_llr.shape[0]
        if transpose:
            channel_llr, extrinsic = jnp.swapaxes(channel_llr, 1, 2), jnp.swapaxes(extrinsic, 1, 2)
        inputs = jnp.clip(channel_llr + spec.alpha * extrinsic, -clip, clip)
        new_extrinsic, decided = component(inputs.reshape(batch * n, n))
        new_extrinsic, decided = new_extrinsic.reshape(batch, n, n), decided.reshape(batch, n, n)
        if transpose:
            new_extrinsic, decided = jnp.swapaxes(new_extrinsic, 1, 2), jnp.swapaxes(decided, 1, 2)
        return new_extrinsic, decided

    def decode(channel_llr):
        channel_llr = jnp.clip(jnp.nan_to_num(channel_llr, posinf=clip, neginf=-clip), -clip, clip)
        batch = channel_llr.shape[0]

        def keep_going(state):
            half, _, _, done, _ = state
            return (half < max_half_iterations) & ~jnp.all(done)

        def body(state):
            half, extrinsic, decided, done, iterations = state
            new_extrinsic, new_decided = jax.lax.cond(
                half % 2 == 0,
                lambda: half_iteration(channel_llr, extrinsic, transpose=False),
                lambda: half_iteration(channel_llr, extrinsic, transpose=True),
            )
            active = ~done[:, None, None]
            extrinsic = jnp.where(active, new_extrinsic, extrinsic)
            decided = jnp.where(active, new_decided, decided)
            # Half-iterations 2i and 2i + 1 form iteration i + 1; a converged codeword stops counting.
            iterations = jnp.where(done, iterations, half // 2 + 1)
            done = done | is_product_codeword(product, decided)
            return half + 1, extrinsic, decided, done, iterations

        init = (jnp.int32(0), jnp.zeros_like(channel_llr), jnp.zeros(channel_llr.shape, jnp.uint8),
                jnp.zeros((batch,), bool), jnp.zeros((batch,), jnp.int32))
        _, _, decided, done, iterations = jax.lax.while_loop(keep_going, body, init)
        return TurboOutput(codeword=decided, payload=payload_from_codeword(product, decided),
                           iterations=iterations, converged=done)

    return decode


def make_turbo_decoder(product: ProductCode, spec: TurboSpec) -> Callable[[jax.Array], TurboOutput]:
    """Build a jitted iterative decoder mapping channel LLRs [B, n, n] (float) to a `TurboOutput`."""
    batched = jax.jit(make_turbo_decode_fn(product, spec))
    n = product.n

    def decode(channel_llr: jax.Array) -> TurboOutput:
        if channel_llr.ndim != 3 or channel_llr.shape[1:] != (n, n):
            raise ValueError(f"invalid LLR shape {channel_llr.shape}; expected [batch, {n}, {n}]")
        if not jnp.issubdtype(channel_llr.dtype, jnp.floating):
            raise ValueError(f"invalid LLR dtype {channel_llr.dtype}; expected a floating dtype such as float32")
        return batched(channel_llr)

    return decode


def make_batch_simulator(
    product: ProductCode,
    spec: TurboSpec,
    batch_size: int,
    sharding: jax.sharding.Sharding | None = None,
) -> Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array, jax.Array]]:
    """Build a jitted `simulate(key, ebno_db) -> (block_errors, bit_errors, iterations)` for one batch.

    Payloads and noise depend only on `key`, so soft and hard decoding see the same draws. A block error
    is any wrong payload bit; `iterations` sums the full iterations over the batch.
    """
    decode = make_turbo_decode_fn(product, spec)
    k = product.k

    def simulate(key, ebno_db):
        key_payload, key_noise = jax.random.split(key)
        payload = jax.random.bernoulli(key_payload, 0.5, (batch_size, k, k)).astype(jnp.uint8)
        if sharding is not None:
            payload = jax.lax.with_sharding_constraint(payload, sharding)
        codeword = encode(product, payload)
        sigma = channel.ebno_db_to_sigma(ebno_db, product.rate)
        llr = channel.awgn_llr(key_noise, codeword, sigma)

        output = decode(llr)
        wrong_bits = (output.payload != payload).reshape(batch_size, k * k)
        block_errors = jnp.sum(jnp.any(wrong_bits, axis=-1), dtype=jnp.int32)
        bit_errors = jnp.sum(wrong_bits, dtype=jnp.int32)
        return block_errors, bit_errors, jnp.sum(output.iterations, dtype=jnp.int32)

    return jax.jit(simulate)


def ebno_at_bler(ebno_db: list[float], bler: list[float], target: float) -> float | None:
    """Interpolate the Eb/N0 [dB] where a BLER curve crosses `target`, linearly in log10(BLER).

    Uses the first pair of neighbouring grid points with BLER ≥ target and ≤ target (BLER > 0 at both);
    returns None when the curve does not cross the target on the grid.
    """
    for (x0, y0), (x1, y1) in zip(zip(ebno_db, bler), zip(ebno_db[1:], bler[1:])):
        if y0 >= target >= y1 and y0 > 0 and y1 > 0:
            if y0 == y1:
                return float(x0)
            fraction = (np.log10(y0) - np.log10(target)) / (np.log10(y0) - np.log10(y1))
            return float(x0 + fraction * (x1 - x0))
    return None
