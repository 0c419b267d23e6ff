"""Decoding latency in time steps under unlimited parallelism, for SC-style and node-based decoders.

Counting rule (stated here because published step counts differ in what they count):
- Every f or g computation at a node of the decoding tree takes one step, whatever the node's size: all of
  its LLRs are computed in parallel. Combining partial sums takes no step.
- SC: a bit decision takes no extra step. A tree over N bits has N − 1 internal nodes, so SC takes 2N − 2.
- SCL (and SO-SCL, whose out-of-list accumulation runs beside the sort): one extra step at each
  information bit to sort the 2L candidates, so 2N + K − 2.
- Node-based decoders stop at the largest Rate-0, Rate-1, REP or SPC subtree and spend on it:

  | node (size n) | Fast-SSC | Fast-SSCL / SO-FSCL (list size L) |
  | --- | --- | --- |
  | Rate-0 | 0 | 1 (path metric update) |
  | Rate-1 | 1 (hard decision) | min(L − 1, n) (one sort per split bit) |
  | REP | 1 (LLR sum) | 2 (LLR sum, then a sort) |
  | SPC | 2 (hard decision, then parity fix) | min(L, n) + 1 (parity fix, then one sort per split bit) |

  A node of size 1 is a plain bit: frozen bits cost nothing in Fast-SSC and one step in the list decoders
  (as a Rate-0 node), and information bits cost one step in both (as a Rate-1 node).

The list rules follow the exact splitting of Hashemi, Condo and Gross (IEEE TSP 2017, "Fast and Flexible
Successive-Cancellation List Decoders for Polar Codes"): a Rate-1 node splits on its min(L − 1, n) least
reliable bits, an SPC node on min(L, n).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np

NodeKind = Literal["rate0", "rate1", "rep", "spc", "internal"]
DECODERS = ("SC", "SCL", "SO-SCL", "Fast-SSC", "Fast-SSCL", "SO-FSCL")


def node_kind(frozen: np.ndarray) -> NodeKind:
    """Classify a subtree by its frozen pattern (True = frozen)."""
    frozen = np.asarray(frozen, bool)
    if frozen.all():
        return "rate0"
    if not frozen.any():
        return "rate1"
    if frozen[:-1].all():
        return "rep"
    if frozen[0] and not frozen[1:].any():
        return "spc"
    return "internal"


def _node_steps(kind: NodeKind, size: int, list_size: int | None) -> int:
    if list_size is None:
        return {"rate0": 0, "rate1": 1, "rep": 1, "spc": 2}[kind]
    return {
        "rate0": 1,
        "rate1": min(list_size - 1, size),
        "rep": 2,
        "spc": min(list_size, size) + 1,
    }[kind]


def _bitwise_steps(frozen: np.ndarray, list_size: int | None) -> int:
    internal_steps = 2 * (len(frozen) - 1)
    return internal_steps + (0 if list_size is None else int(np.count_nonzero(~frozen)))


def _node_based_steps(frozen: np.ndarray, list_size: int | None) -> int:
    kind = node_kind(frozen)
    if len(frozen) == 1:
        # A single bit: frozen bits are free in Fast-SSC, and an information bit is a Rate-1 node.
        if kind == "rate0":
            return 0 if list_size is None else 1
        return 1
    if kind != "internal":
        return _node_steps(kind, len(frozen), list_size)
    half = len(frozen) // 2
    return 2 + _node_based_steps(frozen[:half], list_size) + _node_based_steps(frozen[half:], list_size)


def time_steps(frozen: np.ndarray, decoder: str, list_size: int = 8) -> int:
    """Count the decoding time steps of `decoder` (one of `DECODERS`) for a frozen mask [N] (True = frozen)."""
    frozen = np.asarray(frozen, bool)
    if frozen.ndim != 1 or len(frozen) < 2 or len(frozen) & (len(frozen) - 1):
        raise ValueError(f"invalid frozen mask of shape {frozen.shape}; expected [N] with N a power of two >= 2")
    if decoder not in DECODERS:
        raise ValueError(f"invalid decoder {decoder!r}; expected one of {DECODERS}")
    if list_size < 1:
        raise ValueError(f"invalid list_size {list_size}; expected an integer >= 1")
    if decoder == "SC":
        return _bitwise_steps(frozen, None)
    if decoder in ("SCL", "SO-SCL"):
        return _bitwise_steps(frozen, list_size)
    if decoder == "Fast-SSC":
        return _node_based_steps(frozen, None)
    return _node_based_steps(frozen, list_size)


@dataclasses.dataclass(frozen=True)
class NodeCounts:
    """How many subtrees of each kind a node-based decoder visits for one frozen set."""

    rate0: int
    rate1: int
    rep: int
    spc: int
    internal: int


def count_nodes(frozen: np.ndarray) -> NodeCounts:
    """Count the special nodes (and the internal nodes above them) of the node-based decoding tree."""
    counts = {"rate0": 0, "rate1": 0, "rep": 0, "spc": 0, "internal": 0}

    def visit(mask):
        if len(mask) > 1:
            kind = node_kind(mask)
        else:
            kind = "rate0" if mask[0] else "rate1"
        counts[kind] += 1
        if kind == "internal":
            half = len(mask) // 2
            visit(mask[:half])
            visit(mask[half:])

    visit(np.asarray(frozen, bool))
    return NodeCounts(**counts)
