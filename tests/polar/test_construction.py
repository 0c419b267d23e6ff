"""Tests of polar code construction: the 5G NR sequence, Bhattacharyya, GA and PolarCode checks."""

import hashlib
import math

import numpy as np
import pytest

from jaxlab.polar import codes

# SHA-256 (first 16 hex digits) of the comma-joined info positions returned by
# Sionna 2.2 generate_5g_ranking(k, n).
SIONNA_RANKING_DIGESTS = {
    (1024, 512): "f617c61b8831f21e",
    (512, 256): "a85c0381f2f829f1",
    (128, 64): "b255978ba6d62df3",
    (64, 32): "13f253bfdd38e04c",
}


def _digest(positions: np.ndarray) -> str:
    text = ",".join(str(int(p)) for p in positions)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def test_nr_sequence_is_permutation():
    sequence = codes.nr_reliability_sequence()

    assert sequence.shape == (1024,)
    np.testing.assert_array_equal(np.sort(sequence), np.arange(1024))


def test_nr_sequence_known_entries():
    # Entries of TS 38.212 Table 5.3.1.2-1, read in two independent public copies.
    sequence = codes.nr_reliability_sequence()

    np.testing.assert_array_equal(sequence[:16], [0, 1, 2, 4, 8, 16, 32, 3, 5, 64, 9, 6, 17, 10, 18, 128])
    assert sequence[20] == 256
    assert sequence[27] == 512
    np.testing.assert_array_equal(sequence[-6:], [1007, 1015, 1019, 1021, 1022, 1023])


def test_nr_sequence_length8_subsequence():
    sequence = codes.nr_reliability_sequence()

    np.testing.assert_array_equal(sequence[sequence < 8], [0, 1, 2, 4, 3, 5, 6, 7])


@pytest.mark.parametrize("length,num_info", sorted(SIONNA_RANKING_DIGESTS))
def test_5g_matches_recorded_sionna_ranking(length, num_info):
    code = codes.polar_code_5g(length, num_info)

    assert _digest(code.info_positions) == SIONNA_RANKING_DIGESTS[(length, num_info)]


@pytest.mark.parametrize("length,num_info", sorted(SIONNA_RANKING_DIGESTS))
def test_5g_matches_installed_sionna(length, num_info):
    utils = pytest.importorskip("sionna.phy.fec.polar.utils")
    frozen_positions, info_positions = utils.generate_5g_ranking(num_info, length)
    code = codes.polar_code_5g(length, num_info)

    np.testing.assert_array_equal(code.info_positions, np.asarray(info_positions, dtype=int))
    np.testing.assert_array_equal(code.frozen_positions, np.asarray(frozen_positions, dtype=int))


def test_5g_info_set_is_nested():
    # The info set of (N, K) contains that of (N, K - 1), because both take the tail of one order.
    small = codes.polar_code_5g(256, 100)
    large = codes.polar_code_5g(256, 101)

    assert set(small.info_positions) < set(large.info_positions)


def test_5g_rejects_length_above_1024():
    with pytest.raises(ValueError, match="2048"):
        codes.polar_code_5g(2048, 1024)


def test_code_properties_with_crc():
    code = codes.polar_code_5g(128, 64, crc="CRC11")

    assert code.length == 128
    assert code.num_info == 64
    assert code.crc_length == 11
    assert code.num_payload == 53
    assert code.rate == pytest.approx(53 / 128)
    assert code.log2_length == 7
    assert len(code.info_positions) == 64
    assert len(code.frozen_positions) == 64
    assert np.all(np.diff(code.info_positions) > 0)


def test_code_is_hashable_and_comparable():
    first = codes.polar_code_5g(64, 32, crc="CRC6")
    second = codes.polar_code_from_frozen(first.frozen.astype(np.uint8), crc="CRC6")

    assert first == second
    assert hash(first) == hash(second)
    assert first != codes.polar_code_5g(64, 32)


def test_frozen_mask_is_read_only_copy():
    mask = np.zeros(8, dtype=bool)
    mask[:4] = True
    code = codes.PolarCode(length=8, frozen=mask)
    mask[5] = True

    assert code.num_info == 4
    assert not code.frozen.flags.writeable


@pytest.mark.parametrize(
    "kwargs,error,pattern",
    [
        ({"length": 12, "frozen": np.zeros(12, bool)}, ValueError, "power of two"),
        ({"length": 1, "frozen": np.zeros(1, bool)}, ValueError, "power of two"),
        ({"length": 8, "frozen": np.zeros(8, np.uint8)}, TypeError, "bool"),
        ({"length": 8, "frozen": np.zeros(4, bool)}, ValueError, r"\(8,\)"),
        ({"length": 8, "frozen": np.zeros(8, bool), "crc": "CRC7"}, ValueError, "CRC7"),
        ({"length": 8, "frozen": np.ones(8, bool)}, ValueError, "no payload"),
        ({"length": 8, "frozen": np.zeros(8, bool), "crc": "CRC11"}, ValueError, "CRC11"),
    ],
)
def test_polar_code_validation(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        codes.PolarCode(**kwargs)


def test_constructor_rejects_num_info_not_above_crc():
    with pytest.raises(ValueError, match="num_info"):
        codes.polar_code_5g(64, 11, crc="CRC11")


def test_from_frozen_rejects_non_binary_mask():
    with pytest.raises(ValueError, match="0/1"):
        codes.polar_code_from_frozen(np.array([0, 2, 1, 0]))


def test_bhattacharyya_erasure_values_n8():
    # Es/N0 = ln 2 gives Z_0 = 1/2, and the recursion is then exact for the erasure
    # channel with erasure probability 1/2. Values worked out by hand from
    # Z- = 2Z - Z^2 (first step = most significant index bit) and Z+ = Z^2.
    esno_db = 10 * math.log10(math.log(2))
    expected = [
        1 - (1 / 2) ** 8,  # ---: 0.75 -> 0.9375 -> 0.99609
        0.87890625,  # --+
        0.80859375,  # -+-
        0.31640625,  # -++
        0.68359375,  # +--
        0.19140625,  # +-+
        0.12109375,  # ++-
        (1 / 2) ** 8,  # +++
    ]

    z = np.exp(codes.bhattacharyya_log_parameters(8, esno_db))

    np.testing.assert_allclose(z, expected, rtol=1e-12)


@pytest.mark.parametrize("design_snr_db", [-2.0, 0.0, 2.0, 5.0, 10.0])
def test_n8_orderings_match_known_order(design_snr_db):
    # Known ascending reliability order of N = 8 (also the 5G NR subsequence).
    known_order = [0, 1, 2, 4, 3, 5, 6, 7]

    log_z = codes.bhattacharyya_log_parameters(8, design_snr_db)
    mean = codes.ga_mean_llrs(8, design_snr_db)

    np.testing.assert_array_equal(np.argsort(-log_z), known_order)
    np.testing.assert_array_equal(np.argsort(mean), known_order)


@pytest.mark.parametrize("length", [64, 1024])
@pytest.mark.parametrize("esno_db", [-5.0, 0.0, 5.0, 20.0])
def test_extremes_are_least_and_most_reliable(length, esno_db):
    log_z = codes.bhattacharyya_log_parameters(length, esno_db)
    mean = codes.ga_mean_llrs(length, esno_db)

    assert np.all(np.isfinite(log_z))
    assert np.all(np.isfinite(mean))
    assert np.argmax(log_z) == 0
    assert np.argmin(log_z) == length - 1
    assert np.argmin(mean) == 0
    assert np.argmax(mean) == length - 1


def test_bhattacharyya_log_domain_avoids_underflow():
    # At Es/N0 = 20 dB, Z_{N-1} = exp(-100 * 1024) underflows float64, its log does not.
    log_z = codes.bhattacharyya_log_parameters(1024, 20.0)

    assert log_z[-1] == pytest.approx(-100.0 * 1024)
    assert np.exp(log_z[-1]) == 0.0
    assert np.all(np.isfinite(log_z))
    assert np.all(np.diff(log_z[[0, 1, 2, 4, 8, 16]]) < 0)


def test_ga_plus_doubles_and_minus_shrinks():
    mean = codes.ga_mean_llrs(2, 3.0)
    channel_mean = 4 * 10 ** (3.0 / 10)

    assert mean[1] == pytest.approx(2 * channel_mean)
    assert 0 < mean[0] < channel_mean


def test_ga_minus_at_high_mean_loses_4ln2():
    # For large m, phi(m) ~ exp(-m/4), so phi^-1(2 phi(m)) ~ m - 4 ln 2 (to leading order).
    mean = codes.ga_mean_llrs(2, 30.0)
    channel_mean = 4 * 10**3.0

    assert mean[0] == pytest.approx(channel_mean - 4 * math.log(2), abs=0.05)


@pytest.mark.parametrize("builder", [codes.polar_code_bhattacharyya, codes.polar_code_ga])
def test_designed_codes_resemble_5g(builder):
    # Both constructions at a moderate design SNR share most information positions
    # with the 5G NR (1024, 512) code.
    code = builder(1024, 512, design_snr_db=2.0)
    nr_code = codes.polar_code_5g(1024, 512)

    assert code.num_info == 512
    assert len(set(code.info_positions) & set(nr_code.info_positions)) > 480


def test_design_snr_is_ebno_with_payload_rate():
    # With rate 1/2, Eb/N0 = x dB is Es/N0 = x - 3.01 dB.
    code = codes.polar_code_ga(256, 128, design_snr_db=3.0)
    mean = codes.ga_mean_llrs(256, 3.0 + 10 * math.log10(0.5))
    expected = np.lexsort((np.arange(256), mean))[-128:]

    np.testing.assert_array_equal(code.info_positions, np.sort(expected))
