"""Successive-cancellation (SC) and SC list (SCL, CA-SCL) decoders of polar codes in the LLR domain.

Conventions: an LLR is λ = ln P(bit = 0) / P(bit = 1), so bit 0 is favoured by λ > 0; codewords are in
natural order (x = u·F^{⊗n}, no bit reversal).

The decoding tree is walked recursively, but each level is a `lax.scan` over its two children, so the
traced program contains one body per tree level instead of one per node. Compile time therefore grows with
log2(N) rather than with N, while the work stays O(N log N) per path. The list is an array axis: each
node returns the permutation that maps its output paths to its input paths, and the parent gathers only
the state it still needs (its own LLRs and the left child's partial sums) by that permutation, which is
the array form of Tal and Vardy's lazy copy.

Rate-0 subtrees (all bits frozen) are decoded in one step in both decoders, and Rate-1 subtrees (no bit
frozen) are decoded by hard decision in the SC decoder; both shortcuts give exactly the decisions and
path metrics of bit-by-bit decoding (Alamdar-Yazdi and Kschischang, 2011).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Literal, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.polar import crc as crc_lib
from jaxlab.polar import encoding
from jaxlab.polar.codes import PolarCode

FFunction = Literal["boxplus", "minsum"]
F_FUNCTIONS = ("boxplus", "minsum")
PATH_METRICS = ("exact", "maxlog")
MAX_LIST_SIZE = 1 << 20
DEFAULT_LIST_SIZE = 8

# Above this many candidates per information bit, the all-pairs ranking's quadratic cost loses to top_k.
_RANKING_MAX_CANDIDATES = 64

# Nodes up to this size decode their children inline instead of in a scan.
_UNROLL_MAX_SIZE = 4


def f_boxplus(a: jax.Array, b: jax.Array) -> jax.Array:
    """Return the exact box-plus a ⊞ b = 2·atanh(tanh(a/2)·tanh(b/2)), computed without overflow."""
    min_sum = jnp.sign(a) * jnp.sign(b) * jnp.minimum(jnp.abs(a), jnp.abs(b))
    return min_sum + jnp.log1p(jnp.exp(-jnp.abs(a + b))) - jnp.log1p(jnp.exp(-jnp.abs(a - b)))


def f_minsum(a: jax.Array, b: jax.Array) -> jax.Array:
    """Return the min-sum approximation sign(a)·sign(b)·min(|a|, |b|) of the box-plus."""
    return jnp.sign(a) * jnp.sign(b) * jnp.minimum(jnp.abs(a), jnp.abs(b))


def g_function(a: jax.Array, b: jax.Array, left_bits: jax.Array) -> jax.Array:
    """Return b + (1 − 2u)·a, the right-child LLR given the left child's partial sums u."""
    return b + (1.0 - 2.0 * left_bits.astype(a.dtype)) * a


def exact_bit_cost(llr: jax.Array, bits: jax.Array) -> jax.Array:
    """Return ln(1 + e^{−(1 − 2u)λ}), the exact path-metric increment of deciding u against LLR λ."""
    return jax.nn.softplus(-(1.0 - 2.0 * bits.astype(llr.dtype)) * llr)


def maxlog_bit_cost(llr: jax.Array, bits: jax.Array) -> jax.Array:
    """Return max(0, −(1 − 2u)λ): |λ| when u disagrees with the hard decision, else 0 (the max-log metric)."""
    return jax.nn.relu(-(1.0 - 2.0 * bits.astype(llr.dtype)) * llr)


class _ListOps(NamedTuple):
    """Static choices threaded through the SCL recursion."""

    f: Callable[[jax.Array, jax.Array], jax.Array]
    bit_cost: Callable[[jax.Array, jax.Array], jax.Array]
    soft: bool
    node_based: bool


def _f_function(name: str) -> Callable[[jax.Array, jax.Array], jax.Array]:
    if name == "boxplus":
        return f_boxplus
    if name == "minsum":
        return f_minsum
    raise ValueError(f"invalid f_function {name!r}; expected one of {F_FUNCTIONS}")


def _hard_decision(llr: jax.Array) -> jax.Array:
    # A zero LLR decides 0, matching the list decoder's tie-break towards the u = 0 candidate.
    return (llr < 0).astype(jnp.uint8)


# ---------------------------------------------------------------------------------------------------------
# SC decoding.


def _sc_node(alpha: jax.Array, frozen: jax.Array, f: Callable) -> jax.Array:
    """Decode one node of size n = alpha.shape[-1] and return its partial sums, shape [n] uint8."""
    size = alpha.shape[-1]

    def rate0(_):
        return jnp.zeros((size,), jnp.uint8)

    def rate1(_):
        return _hard_decision(alpha)

    if size == 1:
        return jax.lax.cond(frozen[0], rate0, rate1, None)

    def general(_):
        half = size // 2
        left_alpha, right_alpha = alpha[:half], alpha[half:]

        def child(left_bits, child_xs):
            child_index, child_frozen = child_xs
            child_alpha = jax.lax.cond(
                child_index == 0,
                lambda: f(left_alpha, right_alpha),
                lambda: g_function(left_alpha, right_alpha, left_bits),
            )
            child_bits = _sc_node(child_alpha, child_frozen, f)
            return child_bits, child_bits

        _, (left_bits, right_bits) = jax.lax.scan(
            child, jnp.zeros((half,), jnp.uint8), (jnp.arange(2), frozen.reshape(2, half))
        )
        return jnp.concatenate([left_bits ^ right_bits, right_bits])

    kind = jnp.where(jnp.all(frozen), 0, jnp.where(jnp.any(frozen), 2, 1))
    return jax.lax.switch(kind, (rate0, rate1, general), None)


# ---------------------------------------------------------------------------------------------------------
# SCL decoding. Per codeword, a node of size n takes LLRs alpha [L, n] and a list state, and returns
# (partial sums [L, n] uint8, the new list state, parents [L] int32), where parents[j] is the input path
# that output path j extends.


def _gather_paths(array: jax.Array, parents: jax.Array) -> jax.Array:
    return jnp.take(array, parents, axis=0)


def _smallest_indices(values: jax.Array, count: int) -> jax.Array:
    """Return the indices of the `count` smallest entries of a short vector, in ascending order of value.

    Ties go to the lower index. For a few dozen candidates this all-pairs ranking is faster on CPU than
    `lax.top_k` (about 20% of SCL-8 decoding time saved at N = 1024), because it is elementwise work that
    XLA vectorizes over the batch.
    """
    size = values.shape[0]
    index = jnp.arange(size)
    before = (values[None, :] < values[:, None]) | ((values[None, :] == values[:, None]) & (index[None, :] < index[:, None]))
    rank = jnp.sum(before, axis=1)
    slot_holds = rank[None, :] == jnp.arange(count)[:, None]
    return jnp.sum(jnp.where(slot_holds, index[None, :], 0), axis=1)


# A list state is (path_metrics [L], log_out_of_list), the second being ln p_NL, the probability mass of
# the paths that SO-SCL has discarded (−inf when nothing has been discarded or soft output is off).
# A node's code is (frozen [n] bool, frozen_after [n] int32), the latter counting the frozen bits of the
# whole code after each position.


def _scl_leaf(alpha: jax.Array, state, node_code, ops: _ListOps):
    path_metrics, log_out_of_list = state
    frozen, frozen_after = node_code
    list_size = path_metrics.shape[0]
    llr = alpha[:, 0]
    identity = jnp.arange(list_size, dtype=jnp.int32)

    def frozen_leaf(_):
        zeros = jnp.zeros((list_size, 1), jnp.uint8)
        return zeros, (path_metrics + ops.bit_cost(llr, zeros[:, 0]), log_out_of_list), identity

    def info_leaf(_):
        # Candidates 0..L-1 extend path j with u = 0, candidates L..2L-1 with u = 1; keep the L smallest.
        zeros = jnp.zeros((list_size,), jnp.uint8)
        candidates = jnp.concatenate([path_metrics + ops.bit_cost(llr, zeros), path_metrics + ops.bit_cost(llr, 1 - zeros)])
        if 2 * list_size <= _RANKING_MAX_CANDIDATES:
            kept = _smallest_indices(candidates, list_size)
        else:
            _, kept = jax.lax.top_k(-candidates, list_size)
        bits = (kept >= list_size).astype(jnp.uint8)

        new_log_out_of_list = log_out_of_list
        if ops.soft:
            # SO-SCL: a discarded candidate's mass e^{−PM} still has to satisfy each later frozen bit, which
            # happens with probability 1/2 under the auxiliary distribution (Yuan, Duffy and Médard, 2025).
            discarded = jnp.ones(2 * list_size, bool).at[kept].set(False)
            log_discarded = jax.nn.logsumexp(jnp.where(discarded, -candidates, -jnp.inf))
            log_discarded = log_discarded - frozen_after[0].astype(llr.dtype) * jnp.log(2.0)
            new_log_out_of_list = jnp.logaddexp(log_out_of_list, log_discarded)
        return bits[:, None], (candidates[kept], new_log_out_of_list), (kept % list_size).astype(jnp.int32)

    return jax.lax.cond(frozen[0], frozen_leaf, info_leaf, None)


def _split_code(node_code, half: int):
    frozen, frozen_after = node_code
    return (frozen[:half], frozen_after[:half]), (frozen[half:], frozen_after[half:])


def _scl_node(alpha: jax.Array, state, node_code, ops: _ListOps):
    """Decode one node; return (partial sums [L, n] uint8, new list state, parents [L] int32)."""
    list_size, size = alpha.shape
    if size == 1:
        return _scl_leaf(alpha, state, node_code, ops)
    frozen, frozen_after = node_code
    identity = jnp.arange(list_size, dtype=jnp.int32)

    def rate0(_):
        path_metrics, log_out_of_list = state
        cost = jnp.sum(ops.bit_cost(alpha, jnp.zeros(alpha.shape, jnp.uint8)), axis=-1)
        return jnp.zeros((list_size, size), jnp.uint8), (path_metrics + cost, log_out_of_list), identity

    def general_unrolled(_):
        # Small nodes decode their two children inline: a scan's loop overhead would dominate their work.
        half = size // 2
        left_code, right_code = _split_code(node_code, half)
        left_alpha, right_alpha = alpha[:, :half], alpha[:, half:]
        left_bits, child_state, left_parents = _scl_node(ops.f(left_alpha, right_alpha), state, left_code, ops)
        left_alpha = _gather_paths(left_alpha, left_parents)
        right_alpha = _gather_paths(right_alpha, left_parents)
        right_bits, child_state, right_parents = _scl_node(
            g_function(left_alpha, right_alpha, left_bits), child_state, right_code, ops)
        left_bits = _gather_paths(left_bits, right_parents)
        parents = _gather_paths(left_parents, right_parents)
        return jnp.concatenate([left_bits ^ right_bits, right_bits], axis=-1), child_state, parents

    def general(_):
        half = size // 2

        def child(carry, child_xs):
            left_alpha, right_alpha, left_bits, child_state, parents = carry
            child_index, child_code = child_xs
            child_alpha = jax.lax.cond(
                child_index == 0,
                lambda: ops.f(left_alpha, right_alpha),
                lambda: g_function(left_alpha, right_alpha, left_bits),
            )
            child_bits, child_state, child_parents = _scl_node(child_alpha, child_state, child_code, ops)

            # Lazy copy: bring this node's remaining state into the order of the child's surviving paths.
            left_alpha = _gather_paths(left_alpha, child_parents)
            right_alpha = _gather_paths(right_alpha, child_parents)
            left_bits = jnp.where(child_index == 0, child_bits, _gather_paths(left_bits, child_parents))
            parents = _gather_paths(parents, child_parents)
            return (left_alpha, right_alpha, left_bits, child_state, parents), child_bits

        init = (alpha[:, :half], alpha[:, half:], jnp.zeros((list_size, half), jnp.uint8), state, identity)
        children_code = (frozen.reshape(2, half), frozen_after.reshape(2, half))
        (_, _, left_bits, child_state, parents), children_bits = jax.lax.scan(
            child, init, (jnp.arange(2), children_code)
        )
        right_bits = children_bits[1]
        return jnp.concatenate([left_bits ^ right_bits, right_bits], axis=-1), child_state, parents

    descend = general_unrolled if size <= _UNROLL_MAX_SIZE else general
    if not ops.node_based:
        return jax.lax.cond(jnp.all(frozen), rate0, descend, None)

    rate1, repetition, parity_check = _special_node_handlers(alpha, state, frozen_after, ops)
    return jax.lax.switch(_node_kind_index(frozen), (rate0, rate1, repetition, parity_check, descend), None)


# ---------------------------------------------------------------------------------------------------------
# Node-based list decoding (Fast-SSCL): Rate-1, REP and SPC nodes decoded in one step each, with the
# splitting rules of Hashemi, Condo and Gross (IEEE TSP 2017) that keep the surviving list of bit-by-bit
# SCL under the max-log path metric.


def _node_kind_index(frozen: jax.Array) -> jax.Array:
    """Classify a node by its frozen pattern [n], n >= 2: 0 Rate-0, 1 Rate-1, 2 REP, 3 SPC, 4 other."""
    all_frozen = jnp.all(frozen)
    none_frozen = ~jnp.any(frozen)
    repetition = jnp.all(frozen[:-1]) & ~frozen[-1]
    parity_check = frozen[0] & ~jnp.any(frozen[1:])
    return jnp.select([all_frozen, none_frozen, repetition, parity_check], [0, 1, 2, 3], 4)


def _flip_positions(bits: jax.Array, positions: jax.Array, flips: jax.Array) -> jax.Array:
    """XOR `flips` [L] into bits [L, n] at one position per path, `positions` [L]."""
    rows = jnp.arange(bits.shape[0])
    return bits.at[rows, positions].set(bits[rows, positions] ^ flips.astype(bits.dtype))


def _split_sequentially(hard, metrics, flip_cost, positions, parity_bit=None, parity_flipped=None):
    """Split every path on each column of `positions` [L, m] in turn, keeping the L best of 2L each time.

    Every candidate starts from an entering path's hard decisions `hard` [L, n]; flipping the bit at
    positions[:, t] costs flip_cost [L, n]. With `parity_bit` [L] (an SPC node, whose parity bit is
    already flipped where `parity_flipped` [L] is set) the split starts at column 1 and every flip also
    toggles the parity bit, which takes back its flip cost when that bit was flipped. Every added cost is
    non-negative, because the parity bit is the least reliable one, so keeping the L best at each step is
    exact. Only [L, m] state moves during the split; the bits are assembled once at the end.
    Returns (bits [L, n], metrics [L], parents [L]).
    """
    list_size, splits = positions.shape
    rows = jnp.arange(list_size)
    position_cost = jnp.take_along_axis(flip_cost, positions, axis=-1)
    if parity_bit is None:
        parity_cost = jnp.zeros((list_size,), flip_cost.dtype)
        parity_flipped = jnp.zeros((list_size,), jnp.uint8)
    else:
        parity_cost = flip_cost[rows, parity_bit]

    def split(t, carry):
        metrics, origin, flips, parity_state = carry
        delta = position_cost[origin, t]
        if parity_bit is not None:
            delta = delta + jnp.where(parity_state == 1, -parity_cost[origin], parity_cost[origin])
        candidates = jnp.concatenate([metrics, metrics + delta])
        kept = _smallest_indices(candidates, list_size)
        source = kept % list_size
        flipped = (kept >= list_size).astype(jnp.uint8)
        flips = _gather_paths(flips, source).at[:, t].set(flipped)
        parity_state = _gather_paths(parity_state, source) ^ flipped
        return candidates[kept], _gather_paths(origin, source), flips, parity_state

    start = 0 if parity_bit is None else 1
    carry = (metrics, jnp.arange(list_size, dtype=jnp.int32), jnp.zeros((list_size, splits), jnp.uint8),
             parity_flipped.astype(jnp.uint8))
    metrics, origin, flips, parity_state = jax.lax.fori_loop(start, splits, split, carry)

    bits = _gather_paths(hard, origin)
    flip_positions = _gather_paths(positions, origin)
    bits = bits.at[rows[:, None], flip_positions].set(bits[rows[:, None], flip_positions] ^ flips)
    if parity_bit is not None:
        bits = _flip_positions(bits, _gather_paths(parity_bit, origin), parity_state)
    return bits, metrics, origin


def _special_node_handlers(alpha: jax.Array, state, frozen_after: jax.Array, ops: _ListOps):
    """Build the Rate-1, REP and SPC decoders of one node; each returns what `_scl_node` returns."""
    list_size, size = alpha.shape
    path_metrics, log_out_of_list = state
    # Every path discarded inside the node still has to meet the frozen bits after it (SO-SCL's 2^{-F}).
    log_weight = -frozen_after[-1].astype(alpha.dtype) * jnp.log(2.0)

    def out_of_list(log_entering_mass, surviving_metrics):
        """Add the entering probability mass minus the surviving mass to ln p_NL (SO-FSCL)."""
        if not ops.soft:
            return log_out_of_list
        entering = jax.nn.logsumexp(log_entering_mass)
        surviving = jax.nn.logsumexp(-surviving_metrics)
        # The discarded fraction is floored at machine epsilon: below that, entering − surviving is lost to
        # rounding, and SO-SCL's reference likewise keeps p_NL above a small floor.
        fraction = jnp.maximum(-jnp.expm1(surviving - entering), jnp.finfo(alpha.dtype).eps)
        discarded = entering + jnp.log(fraction)
        return jnp.logaddexp(log_out_of_list, discarded + log_weight)

    def hard_decisions():
        """Return the hard decisions [L, n], their cost [L] and the cost of flipping each bit [L, n]."""
        hard = (alpha < 0).astype(jnp.uint8)
        hard_cost = jnp.sum(ops.bit_cost(alpha, hard), axis=-1)
        flip_cost = ops.bit_cost(alpha, 1 - hard) - ops.bit_cost(alpha, hard)  # |α| for both metrics.
        return hard, hard_cost, flip_cost

    def least_reliable(count):
        """Return the positions of the `count` least reliable bits of each path, least reliable first."""
        return jax.lax.top_k(-jnp.abs(alpha), count)[1].astype(jnp.int32)

    def rate1(_):
        hard, hard_cost, flip_cost = hard_decisions()
        positions = least_reliable(min(list_size - 1, size))
        bits, metrics, parents = _split_sequentially(hard, path_metrics + hard_cost, flip_cost, positions)
        return bits, (metrics, out_of_list(-path_metrics, metrics)), parents

    def repetition(_):
        zeros = jnp.zeros(alpha.shape, jnp.uint8)
        candidates = jnp.concatenate([
            path_metrics + jnp.sum(ops.bit_cost(alpha, zeros), axis=-1),
            path_metrics + jnp.sum(ops.bit_cost(alpha, 1 - zeros), axis=-1),
        ])
        kept = _smallest_indices(candidates, list_size)
        bits = jnp.broadcast_to((kept >= list_size).astype(jnp.uint8)[:, None], (list_size, size))
        new_log_out_of_list = log_out_of_list
        if ops.soft:
            discarded = jnp.ones(2 * list_size, bool).at[kept].set(False)
            log_discarded = jax.nn.logsumexp(jnp.where(discarded, -candidates, -jnp.inf))
            new_log_out_of_list = jnp.logaddexp(log_out_of_list, log_discarded + log_weight)
        return bits, (candidates[kept], new_log_out_of_list), (kept % list_size).astype(jnp.int32)

    def parity_check(_):
        hard, hard_cost, flip_cost = hard_decisions()
        positions = least_reliable(min(list_size, size))
        parity_bit = positions[:, 0]
        odd = (jnp.sum(hard, axis=-1) % 2).astype(jnp.uint8)
        parity_cost = jnp.take_along_axis(flip_cost, parity_bit[:, None], axis=-1)[:, 0]
        metrics = path_metrics + hard_cost + odd * parity_cost
        bits, metrics, parents = _split_sequentially(hard, metrics, flip_cost, positions, parity_bit=parity_bit,
                                                     parity_flipped=odd)
        # Paths enter with their even-parity mass only: P(even | α) = (1 + Π_j tanh(α_j / 2)) / 2.
        log_even = jnp.log(0.5 * (1.0 + jnp.prod(jnp.tanh(alpha / 2.0), axis=-1)))
        return bits, (metrics, out_of_list(-path_metrics + log_even, metrics)), parents

    return rate1, repetition, parity_check


# ---------------------------------------------------------------------------------------------------------
# Public decoders.


@chex.dataclass(frozen=True)
class DecoderOutput:
    """Decisions for a batch of B codewords of length N with K information bits (CRC bits included).

    Attributes:
      codeword: [B, N] uint8, the decided codeword x̂.
      info_bits: [B, K] uint8, the decided bits at the information positions of û = x̂·F^{⊗n}
        (payload followed by the CRC when the code has one).
      path_metrics: [B, L] float32, final path metrics −ln P(û_l | y) of the list (all N bits
        uniform a priori), sorted ascending; None for SC, whose Rate-1 shortcut skips the leaf LLRs.
      list_codewords: [B, L, N] uint8, the codewords of the final list in the order of path_metrics.
      crc_pass: [B, L] bool, whether each list codeword passes the CRC (all True without a CRC).
      app_llr: [B, N] float32, SO-SCL a-posteriori LLRs of the codeword bits, ln P(x_j = 0 | y) / P(x_j = 1 | y),
        from the list and the out-of-list mass; None without soft output. The extrinsic LLR is
        app_llr − (decoder input LLR).
      info_app_llr: [B, K] float32, a-posteriori LLRs of the information bits of û; the out-of-list mass is
        split evenly between 0 and 1 here, because its distribution over u is not tracked. None without
        soft output.
      log_out_of_list_mass: [B] float32, ln p_NL; None without soft output.
      prob_decision_wrong: [B] float32, estimated probability that the decided codeword is wrong,
        1 − p(decision) / (Σ_l p_l + p_NL); None without soft output.
      prob_outside_list: [B] float32, estimated probability that the transmitted codeword is not in the
        final list, p_NL / (Σ_l p_l + p_NL); None without soft output.
    """

    codeword: jax.Array
    info_bits: jax.Array
    path_metrics: jax.Array
    list_codewords: jax.Array
    crc_pass: jax.Array
    app_llr: jax.Array | None = None
    info_app_llr: jax.Array | None = None
    log_out_of_list_mass: jax.Array | None = None
    prob_decision_wrong: jax.Array | None = None
    prob_outside_list: jax.Array | None = None


@dataclasses.dataclass(frozen=True)
class DecoderSpec:
    """Decoder choice for a code.

    Attributes:
      list_size: L; 1 with `algorithm="sc"`. None selects 1 for SC and `DEFAULT_LIST_SIZE` for SCL.
      algorithm: "sc" for successive cancellation, "scl" for list decoding.
      crc_aided: with a CRC code, choose the most likely list path that passes the CRC (CA-SCL);
        otherwise choose the most likely path.
      f_function: "boxplus" (exact) or "minsum" (the hardware approximation).
      path_metric: "exact" (ln(1 + e^{∓λ}) per bit) or "maxlog" (|λ| when a bit disagrees with its hard
        decision, the hardware metric).
      node_based: decode Rate-0, Rate-1, REP and SPC subtrees in one step each (Fast-SSCL, or SO-FSCL with
        soft output). With the max-log metric the surviving list equals bit-by-bit SCL's. With the exact
        metric, Rate-1 and SPC nodes rank whole completions while bit-by-bit SCL prunes on marginals, so
        some inputs keep a different list tail than bit-by-bit SCL.
      soft_output: SO-SCL (Yuan, Duffy and Médard, IEEE T-IT 2025): also return APP LLRs and block-error
        probabilities, tracking the probability mass of discarded paths. Needs `algorithm="scl"`.
    """

    algorithm: Literal["sc", "scl"] = "scl"
    list_size: int | None = None
    crc_aided: bool = False
    f_function: FFunction = "boxplus"
    soft_output: bool = False
    path_metric: Literal["exact", "maxlog"] = "exact"
    node_based: bool = False

    def __post_init__(self):
        if self.algorithm not in ("sc", "scl"):
            raise ValueError(f"invalid algorithm {self.algorithm!r}; expected 'sc' or 'scl'")
        if self.list_size is None:
            object.__setattr__(self, "list_size", 1 if self.algorithm == "sc" else DEFAULT_LIST_SIZE)
        if not isinstance(self.list_size, (int, np.integer)) or not 1 <= self.list_size <= MAX_LIST_SIZE:
            raise ValueError(f"invalid list_size {self.list_size!r}; expected an integer in [1, {MAX_LIST_SIZE}]")
        if self.algorithm == "sc" and self.list_size != 1:
            raise ValueError(f"invalid list_size {self.list_size} for SC; SC keeps one path, use list_size=1")
        if self.f_function not in F_FUNCTIONS:
            raise ValueError(f"invalid f_function {self.f_function!r}; expected one of {F_FUNCTIONS}")
        if self.soft_output and self.algorithm != "scl":
            raise ValueError("invalid soft_output=True for SC; soft output needs algorithm='scl'")
        if self.path_metric not in PATH_METRICS:
            raise ValueError(f"invalid path_metric {self.path_metric!r}; expected one of {PATH_METRICS}")
        if self.soft_output and self.path_metric != "exact":
            raise ValueError("invalid path_metric='maxlog' with soft_output=True; soft output needs the exact "
                             "metric, whose e^{-PM} are probabilities")
        if self.node_based and self.algorithm != "scl":
            raise ValueError("invalid node_based=True for SC; node-based decoding here is a list decoder")

    @property
    def name(self) -> str:
        if self.algorithm == "sc":
            return "SC"
        prefix = "CA-" if self.crc_aided else ""
        if self.soft_output:
            prefix += "SO-"
        if not self.node_based:
            return f"{prefix}SCL-{self.list_size}"
        if self.soft_output:
            return f"{prefix}FSCL-{self.list_size}"
        return f"{prefix}Fast-SSCL-{self.list_size}"


def _check_llr(llr: jax.Array, length: int) -> None:
    if not hasattr(llr, "ndim"):
        raise TypeError(f"invalid LLRs of type {type(llr).__name__}; expected an array [batch, {length}], "
                        "for example jnp.asarray(llrs, jnp.float32)")
    if llr.ndim != 2 or llr.shape[-1] != length:
        raise ValueError(f"invalid LLR shape {llr.shape}; expected [batch, {length}]")
    if not jnp.issubdtype(llr.dtype, jnp.floating):
        raise ValueError(f"invalid LLR dtype {llr.dtype}; expected a floating dtype such as float32")
    if not isinstance(llr, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(llr))):
        raise ValueError("invalid LLRs: NaN or infinite values; clip channel LLRs to a finite range first")


def sc_decode_single(code: PolarCode, llr: jax.Array, f_function: FFunction = "boxplus") -> jax.Array:
    """Decode one codeword's LLRs [N] with SC and return the codeword [N] uint8 (traceable)."""
    return _sc_node(llr, jnp.asarray(code.frozen), _f_function(f_function))


def _frozen_after(frozen: np.ndarray) -> np.ndarray:
    """Count, for each position, the frozen positions after it: int32 [N]."""
    frozen = np.asarray(frozen, bool)
    return (np.cumsum(frozen[::-1])[::-1] - frozen).astype(np.int32)


def scl_decode_single(code: PolarCode, llr: jax.Array, list_size: int, f_function: FFunction = "boxplus",
                      soft_output: bool = False, path_metric: str = "exact", node_based: bool = False):
    """Decode one codeword's LLRs [N] with SCL (or SO-SCL with `soft_output`).

    Returns the final list's codewords [L, N] uint8, path metrics [L] and ln p_NL, the log of the
    out-of-list probability mass (−inf without `soft_output`). Paths 1..L−1 start with an infinite
    metric, so the list fills up as information bits split it.
    """
    path_metrics = jnp.full((list_size,), jnp.inf, llr.dtype).at[0].set(0.0)
    state = (path_metrics, jnp.array(-jnp.inf, llr.dtype))
    node_code = (jnp.asarray(code.frozen), jnp.asarray(_frozen_after(code.frozen)))
    alpha = jnp.broadcast_to(llr, (list_size, llr.shape[-1]))
    bit_cost = exact_bit_cost if path_metric == "exact" else maxlog_bit_cost
    ops = _ListOps(_f_function(f_function), bit_cost, soft_output, node_based)
    codewords, (metrics, log_out_of_list), _ = _scl_node(alpha, state, node_code, ops)
    return codewords, metrics, log_out_of_list


def _bitwise_app_llr(bits: jax.Array, log_path_probs: jax.Array, log_out_of_list: jax.Array,
                     log_out_of_list_zero: jax.Array, log_out_of_list_one: jax.Array) -> jax.Array:
    """Combine list paths [L, n] with out-of-list mass into APP LLRs [n] (SO-SCL's bitwise soft output)."""
    is_zero = bits == 0
    log_zero = jax.nn.logsumexp(jnp.where(is_zero, log_path_probs[:, None], -jnp.inf), axis=0)
    log_one = jax.nn.logsumexp(jnp.where(is_zero, -jnp.inf, log_path_probs[:, None]), axis=0)
    return (jnp.logaddexp(log_zero, log_out_of_list + log_out_of_list_zero)
            - jnp.logaddexp(log_one, log_out_of_list + log_out_of_list_one))


def make_batch_decode_fn(code: PolarCode, spec: DecoderSpec) -> Callable[[jax.Array], DecoderOutput]:
    """Build the traceable batch decoder LLRs [B, N] -> `DecoderOutput`, for use inside larger jitted code.

    The batch axis may be sharded over devices; codewords are decoded independently.
    """
    if spec.crc_aided and code.crc is None:
        raise ValueError("invalid crc_aided=True for a code without CRC; build the code with crc='CRC11' or similar")
    info_positions = jnp.asarray(code.info_positions)

    def decode_one(llr):
        if spec.algorithm == "sc":
            list_codewords = sc_decode_single(code, llr, spec.f_function)[None]
            path_metrics = None
        else:
            list_codewords, path_metrics, log_out_of_list = scl_decode_single(
                code, llr, spec.list_size, spec.f_function, spec.soft_output, spec.path_metric, spec.node_based)
            order = jnp.argsort(path_metrics)
            list_codewords, path_metrics = list_codewords[order], path_metrics[order]

        list_info = encoding.polar_transform(list_codewords)[:, info_positions]
        if code.crc is not None:
            crc_pass = crc_lib.crc_check(list_info, code.crc)
        else:
            crc_pass = jnp.ones(list_info.shape[:1], bool)

        # argmax returns the first passing path, the most likely one; fall back to path 0 when none passes.
        best = jnp.where(jnp.any(crc_pass), jnp.argmax(crc_pass), 0) if spec.crc_aided else 0
        output = DecoderOutput(
            codeword=list_codewords[best],
            info_bits=list_info[best],
            path_metrics=path_metrics,
            list_codewords=list_codewords,
            crc_pass=crc_pass,
        )
        if not spec.soft_output:
            return output

        log_path_probs = -path_metrics
        log_total = jnp.logaddexp(jax.nn.logsumexp(log_path_probs), log_out_of_list)
        # Out-of-list codewords follow the channel: bit j is 0 with probability σ(λ_j).
        app_llr = _bitwise_app_llr(list_codewords, log_path_probs, log_out_of_list,
                                   -jax.nn.softplus(-llr), -jax.nn.softplus(llr))
        half = jnp.full(list_info.shape[-1:], -jnp.log(2.0), llr.dtype)
        info_app_llr = _bitwise_app_llr(list_info, log_path_probs, log_out_of_list, half, half)
        return output.replace(
            app_llr=app_llr,
            info_app_llr=info_app_llr,
            log_out_of_list_mass=log_out_of_list,
            prob_decision_wrong=-jnp.expm1(log_path_probs[best] - log_total),
            prob_outside_list=jnp.exp(log_out_of_list - log_total),
        )

    return jax.vmap(decode_one)


def make_decoder(code: PolarCode, spec: DecoderSpec) -> Callable[[jax.Array], DecoderOutput]:
    """Build a jitted decoder mapping channel LLRs [B, N] (float) to a `DecoderOutput`.

    The returned function checks the LLRs' shape, dtype and finiteness before decoding.
    """
    batched = jax.jit(make_batch_decode_fn(code, spec))

    def decode(llr: jax.Array) -> DecoderOutput:
        _check_llr(llr, code.length)
        return batched(llr)

    return decode
