"""Polar code construction: frozen sets from the 5G NR sequence, Bhattacharyya bounds or GA.

Bit-channel indices follow the natural-order transform x = u F^{⊗n} with
F = [[1, 0], [1, 1]] and no bit-reversal permutation (as in 3GPP TS 38.212 and
Sionna's PolarEncoder). Under successive-cancellation decoding in this order,
the most significant bit of an index picks the first polarization step applied
to the channel (0 = the degraded "minus" channel, 1 = the upgraded "plus" one),
and the least significant bit picks the last. Index N-1 is the most reliable
channel and index 0 the least reliable.

All construction runs once in numpy. `PolarCode` is hashable, so it can be a
static argument of `jax.jit`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path

import numpy as np

from jaxlab.polar.crc import CRC_POLYNOMIALS, crc_length

_NR_SEQUENCE_PATH = Path(__file__).parent / "data" / "nr_reliability_sequence.txt"
NR_MAX_LENGTH = 1024


@dataclasses.dataclass(frozen=True, eq=False)
class PolarCode:
    """A polar code given by its frozen set, with an optional outer CRC.

    Attributes:
      length: code length N, a power of two >= 2.
      frozen: bool [N], True at frozen bit-channel indices (fixed to 0). The
        array is copied and made read-only on construction.
      crc: None or the name of the CRC whose parity bits occupy the last
        `crc_length` of the `num_info` information positions ('CRC6', 'CRC11',
        'CRC16' or 'CRC24C', TS 38.212 §5.1).
    """

    length: int
    frozen: np.ndarray
    crc: str | None = None

    def __post_init__(self) -> None:
        length = self.length
        if isinstance(length, bool) or not isinstance(length, (int, np.integer)):
            raise TypeError(f"length must be an int, got {type(length).__name__}.")
        if length < 2 or length & (length - 1):
            raise ValueError(
                f"length must be a power of two >= 2, got {length}; "
                "shorten or puncture a longer code instead."
            )
        object.__setattr__(self, "length", int(length))

        frozen = np.asarray(self.frozen)
        if frozen.dtype != np.bool_:
            raise TypeError(
                f"frozen must have dtype bool, got {frozen.dtype}; "
                "pass mask.astype(bool) or use polar_code_from_frozen."
            )
        if frozen.shape != (length,):
            raise ValueError(
                f"frozen must have shape ({length},), got {frozen.shape}."
            )
        frozen = frozen.copy()
        frozen.setflags(write=False)
        object.__setattr__(self, "frozen", frozen)

        if self.crc is not None and self.crc not in CRC_POLYNOMIALS:
            raise ValueError(
                f"crc must be None or one of {sorted(CRC_POLYNOMIALS)}, got {self.crc!r}."
            )
        if self.num_info <= self.crc_length:
            raise ValueError(
                f"The code has {self.num_info} information positions but "
                f"{self.crc} needs {self.crc_length} of them, leaving no payload bit; "
                "unfreeze more positions or use a shorter CRC."
            )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PolarCode):
            return NotImplemented
        return (
            self.length == other.length
            and self.crc == other.crc
            and np.array_equal(self.frozen, other.frozen)
        )

    def __hash__(self) -> int:
        return hash((self.length, self.crc, self.frozen.tobytes()))

    @property
    def num_info(self) -> int:
        """Number K of information positions, CRC parity bits included."""
        return int(self.length - np.count_nonzero(self.frozen))

    @property
    def crc_length(self) -> int:
        """Number of CRC parity bits (0 without a CRC)."""
        return crc_length(self.crc)

    @property
    def num_payload(self) -> int:
        """Number of payload bits, K minus the CRC length."""
        return self.num_info - self.crc_length

    @property
    def info_positions(self) -> np.ndarray:
        """Information bit-channel indices in increasing order: int64 [K]."""
        return np.flatnonzero(~self.frozen)

    @property
    def frozen_positions(self) -> np.ndarray:
        """Frozen bit-channel indices in increasing order: int64 [N - K]."""
        return np.flatnonzero(self.frozen)

    @property
    def rate(self) -> float:
        """Payload rate num_payload / N, the rate used for Eb/N0."""
        return self.num_payload / self.length

    @property
    def log2_length(self) -> int:
        """Number n of polarization stages, N = 2^n."""
        return self.length.bit_length() - 1


def polar_code_from_frozen(frozen_mask: np.ndarray, crc: str | None = None) -> PolarCode:
    """Wrap a frozen mask (bool or 0/1 integers, shape [N], 1 = frozen) in a PolarCode."""
    mask = np.asarray(frozen_mask)
    if mask.ndim != 1:
        raise ValueError(f"frozen_mask must be 1-D, got shape {mask.shape}.")
    if mask.dtype != np.bool_:
        if not np.isin(mask, (0, 1)).all():
            raise ValueError(
                "frozen_mask must contain only 0/1 or bool values, got "
                f"{np.unique(mask)[:8]}."
            )
        mask = mask.astype(bool)
    return PolarCode(length=len(mask), frozen=mask, crc=crc)


def _check_length_and_info(length: int, num_info: int, crc: str | None) -> None:
    for name, value in (("length", length), ("num_info", num_info)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {value!r} of type {type(value).__name__}.")
    if length < 2 or length & (length - 1):
        raise ValueError(f"length must be a power of two >= 2, got {length}.")
    r = crc_length(crc)
    if not r < num_info <= length:
        counts_crc = f" (it includes the {r} bits of {crc})" if crc else ""
        raise ValueError(f"num_info must satisfy {r} < num_info <= {length}{counts_crc}, got {num_info}.")


def _code_from_reliability(
    ascending_reliability: np.ndarray, num_info: int, crc: str | None
) -> PolarCode:
    """Unfreeze the `num_info` last (most reliable) indices of an ascending order."""
    length = len(ascending_reliability)
    frozen = np.ones(length, dtype=bool)
    frozen[ascending_reliability[length - num_info :]] = False
    return PolarCode(length=length, frozen=frozen, crc=crc)


def _rank_by_metric(metric: np.ndarray, more_reliable_is_larger: bool) -> np.ndarray:
    """Order indices from least to most reliable; ties go to the larger index as more reliable."""
    indices = np.arange(len(metric))
    key = metric if more_reliable_is_larger else -metric
    return np.lexsort((indices, key))


@functools.lru_cache(maxsize=1)
def nr_reliability_sequence() -> np.ndarray:
    """Load the 5G NR sequence Q_0..Q_1023 (TS 38.212 Table 5.3.1.2-1): read-only int64 [1024].

    Entries are bit-channel indices in ascending reliability, so Q_0 = 0 is the
    least reliable and Q_1023 = 1023 the most reliable.
    """
    sequence = np.loadtxt(_NR_SEQUENCE_PATH, dtype=np.int64, comments="#")
    if sequence.shape != (NR_MAX_LENGTH,) or not np.array_equal(
        np.sort(sequence), np.arange(NR_MAX_LENGTH)
    ):
        raise RuntimeError(
            f"{_NR_SEQUENCE_PATH} is not a permutation of 0..1023; restore it from git."
        )
    sequence.setflags(write=False)
    return sequence


def polar_code_5g(length: int, num_info: int, crc: str | None = None) -> PolarCode:
    """Build the 5G NR code: the `num_info` most reliable indices of the length-N subsequence.

    The subsequence keeps the entries of Q_0..Q_1023 below N in their order. No
    rate matching and no parity-check bits are applied. `num_info` counts CRC bits.
    """
    _check_length_and_info(length, num_info, crc)
    if length > NR_MAX_LENGTH:
        raise ValueError(
            f"The 5G NR sequence covers length <= {NR_MAX_LENGTH}, got {length}; "
            "use polar_code_ga or polar_code_bhattacharyya."
        )
    sequence = nr_reliability_sequence()
    return _code_from_reliability(sequence[sequence < length], num_info, crc)


def _design_esno_db(length: int, num_info: int, crc: str | None, design_ebno_db: float) -> float:
    """Convert a design Eb/N0 to Es/N0 in dB with the payload rate (num_info - r) / N."""
    rate = (num_info - crc_length(crc)) / length
    return float(design_ebno_db) + 10.0 * math.log10(rate)


def bhattacharyya_log_parameters(length: int, esno_db: float) -> np.ndarray:
    """Compute ln Z of each bit channel: float64 [N], smaller is more reliable.

    The recursion starts from Z = exp(-Es/N0) of BPSK over AWGN and applies
    Z- = 2Z - Z^2 (an upper bound, exact on the erasure channel) and Z+ = Z^2
    in the log domain, so very reliable channels do not underflow to 0.
    """
    if length < 1 or length & (length - 1):
        raise ValueError(f"length must be a power of two, got {length}.")
    log_z = np.array([-(10.0 ** (esno_db / 10.0))])
    while len(log_z) < length:
        minus = log_z + np.log1p(-np.expm1(log_z))  # ln(Z (2 - Z))
        plus = 2.0 * log_z
        # The earlier polarization step is the more significant index bit.
        log_z = np.stack([minus, plus], axis=-1).reshape(-1)
    return log_z


def polar_code_bhattacharyya(
    length: int, num_info: int, design_snr_db: float, crc: str | None = None
) -> PolarCode:
    """Build a code from Bhattacharyya parameters designed at `design_snr_db`.

    `design_snr_db` is Eb/N0 in dB, converted to Es/N0 with the payload rate
    (num_info - crc length) / N. The `num_info` channels with the smallest Z are
    unfrozen.
    """
    _check_length_and_info(length, num_info, crc)
    esno_db = _design_esno_db(length, num_info, crc, design_snr_db)
    log_z = bhattacharyya_log_parameters(length, esno_db)
    return _code_from_reliability(
        _rank_by_metric(log_z, more_reliable_is_larger=False), num_info, crc
    )


# Chung, Richardson and Urbanke (2001) approximation of
# phi(m) = 1 - E[tanh(L/2)], L ~ N(m, 2m), as used for polar codes by Trifonov (2012).
_PHI_ALPHA = -0.4527
_PHI_BETA = 0.86
_PHI_GAMMA = 0.0218
_PHI_SWITCH = 10.0


def _log_phi_high(mean: np.ndarray) -> np.ndarray:
    """ln phi(m) for m >= 10: ln(sqrt(pi/m) exp(-m/4) (1 - 10/(7m)))."""
    return 0.5 * np.log(np.pi / mean) - mean / 4.0 + np.log1p(-10.0 / (7.0 * mean))


def _log_phi(mean: np.ndarray) -> np.ndarray:
    mean = np.asarray(mean, dtype=np.float64)
    low = _PHI_ALPHA * np.maximum(mean, 0.0) ** _PHI_BETA + _PHI_GAMMA
    high = _log_phi_high(np.maximum(mean, _PHI_SWITCH))
    return np.where(mean < _PHI_SWITCH, np.minimum(low, 0.0), high)


def _inverse_log_phi(log_phi: np.ndarray) -> np.ndarray:
    """Solve ln phi(m) = log_phi for m >= 0 (closed form below m = 10, bisection above)."""
    log_phi = np.asarray(log_phi, dtype=np.float64)
    switch_value = _PHI_ALPHA * _PHI_SWITCH**_PHI_BETA + _PHI_GAMMA
    low = np.maximum((log_phi - _PHI_GAMMA) / _PHI_ALPHA, 0.0) ** (1.0 / _PHI_BETA)

    # ln phi is decreasing on [10, inf) and ln phi(m) < 0.58 - m/4 there, so the
    # root lies below 4 |ln phi| + 2.3 and the bracket [10, 4 |ln phi| + 100] contains it.
    lower = np.full_like(log_phi, _PHI_SWITCH)
    upper = 4.0 * np.abs(log_phi) + 100.0
    for _ in range(100):
        middle = 0.5 * (lower + upper)
        above = _log_phi_high(middle) > log_phi
        lower = np.where(above, middle, lower)
        upper = np.where(above, upper, middle)
    high = 0.5 * (lower + upper)
    return np.where(log_phi >= switch_value, np.minimum(low, _PHI_SWITCH), high)


def ga_mean_llrs(length: int, esno_db: float) -> np.ndarray:
    """Compute the mean LLR of each bit channel by Gaussian approximation: float64 [N].

    Larger is more reliable. The channel LLR of BPSK over AWGN has mean
    4 Es/N0; the recursion is m+ = 2m and m- = phi^-1(1 - (1 - phi(m))^2),
    evaluated through ln phi so that large means stay finite.
    """
    if length < 1 or length & (length - 1):
        raise ValueError(f"length must be a power of two, got {length}.")
    mean = np.array([4.0 * 10.0 ** (esno_db / 10.0)])
    while len(mean) < length:
        log_phi = _log_phi(mean)
        # ln(1 - (1 - phi)^2) = ln(phi (2 - phi))
        minus = _inverse_log_phi(log_phi + np.log1p(-np.expm1(log_phi)))
        plus = 2.0 * mean
        mean = np.stack([minus, plus], axis=-1).reshape(-1)
    return mean


def polar_code_ga(
    length: int, num_info: int, design_snr_db: float, crc: str | None = None
) -> PolarCode:
    """Build a code by Gaussian approximation of density evolution at `design_snr_db`.

    `design_snr_db` is Eb/N0 in dB, converted to Es/N0 with the payload rate
    (num_info - crc length) / N. The `num_info` channels with the largest mean
    LLR are unfrozen.
    """
    _check_length_and_info(length, num_info, crc)
    esno_db = _design_esno_db(length, num_info, crc, design_snr_db)
    mean = ga_mean_llrs(length, esno_db)
    return _code_from_reliability(
        _rank_by_metric(mean, more_reliable_is_larger=True), num_info, crc
    )
