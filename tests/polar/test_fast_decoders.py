"""Node-based list decoding (Fast-SSCL, SO-FSCL) against bit-by-bit SCL and SO-SCL."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.polar import channel, codes, decoders, encoding


def _noisy_llr(code, batch, ebno_db, seed):
    rng = np.random.default_rng(seed)
    info = jnp.asarray(rng.integers(0, 2, size=(batch, code.num_info), dtype=np.uint8))
    codeword = encoding.encode(code, info)
    return channel.awgn_llr(jax.random.key(seed), codeword, channel.ebno_db_to_sigma(ebno_db, code.rate))


def _sorted_lists(output):
    return np.asarray(output.list_codewords), np.asarray(output.path_metrics)


# 12,288 noisy inputs over six codes of lengths 64 to 1024 and list sizes 2 to 32.
@pytest.mark.parametrize("length,num_info,list_size", [
    (64, 32, 2), (64, 48, 4), (128, 64, 8), (256, 128, 16), (512, 256, 32), (1024, 512, 8),
])
def test_fast_sscl_equals_scl_with_maxlog_metric(length, num_info, list_size):
    code = codes.polar_code_5g(length, num_info)
    llr = _noisy_llr(code, 2048, ebno_db=1.5, seed=length + list_size)
    bitwise = decoders.DecoderSpec("scl", list_size, f_function="minsum", path_metric="maxlog")
    node_based = decoders.DecoderSpec("scl", list_size, f_function="minsum", path_metric="maxlog", node_based=True)

    expected = decoders.make_decoder(code, bitwise)(llr)
    actual = decoders.make_decoder(code, node_based)(llr)

    np.testing.assert_array_equal(np.asarray(actual.codeword), np.asarray(expected.codeword))
    np.testing.assert_allclose(np.asarray(actual.path_metrics), np.asarray(expected.path_metrics), rtol=1e-5,
                               atol=1e-4)
    # Same surviving list: compare as sets of codewords, since paths with equal metrics may swap places.
    expected_lists, actual_lists = np.asarray(expected.list_codewords), np.asarray(actual.list_codewords)
    for row in range(len(expected_lists)):
        assert {c.tobytes() for c in actual_lists[row]} == {c.tobytes() for c in expected_lists[row]}, row


def test_fast_sscl_exact_metric_keeps_decisions():
    # With the exact metric, Rate-1 and SPC nodes rank their completions by exact probability while
    # bit-by-bit SCL prunes on marginals, so the tails of the lists may differ but the decisions rarely do.
    code = codes.polar_code_5g(256, 128)
    llr = _noisy_llr(code, 1024, ebno_db=1.5, seed=11)
    bitwise = decoders.make_decoder(code, decoders.DecoderSpec("scl", 8))(llr)
    node_based = decoders.make_decoder(code, decoders.DecoderSpec("scl", 8, node_based=True))(llr)
    same = np.all(np.asarray(bitwise.codeword) == np.asarray(node_based.codeword), axis=1)
    assert same.mean() > 0.99


@pytest.mark.parametrize("length,num_info", [(16, 8), (32, 16)])
def test_so_fscl_is_as_accurate_as_so_scl(length, num_info):
    # Against exact APP LLRs by enumeration: node-based soft output must be as close as bit-by-bit SO-SCL.
    code = codes.polar_code_5g(length, num_info)
    info = np.array(list(itertools.product([0, 1], repeat=num_info)), np.uint8)
    every_codeword = np.asarray(encoding.encode(code, jnp.asarray(info))).astype(np.float64)
    sent = every_codeword[np.random.default_rng(length).integers(len(every_codeword), size=256)].astype(np.uint8)
    llr = channel.awgn_llr(jax.random.key(length), jnp.asarray(sent), channel.ebno_db_to_sigma(1.0, code.rate))
    llr64 = np.asarray(llr, np.float64)
    log_probs = -(np.logaddexp(0.0, -llr64) @ (1 - every_codeword.T) + np.logaddexp(0.0, llr64) @ every_codeword.T)
    exact = np.stack([
        np.logaddexp.reduce(log_probs[:, every_codeword[:, bit] == 0], axis=1)
        - np.logaddexp.reduce(log_probs[:, every_codeword[:, bit] == 1], axis=1)
        for bit in range(length)], axis=1)

    for list_size in (2, 4, 8, 16):
        errors = {}
        for node_based in (False, True):
            spec = decoders.DecoderSpec("scl", list_size, soft_output=True, node_based=node_based)
            out = decoders.make_decoder(code, spec)(llr)
            app_llr = np.asarray(out.app_llr)
            assert np.all(np.isfinite(app_llr)), (list_size, node_based)
            for name in ("prob_decision_wrong", "prob_outside_list"):
                values = np.asarray(getattr(out, name))
                assert np.all((values >= 0.0) & (values <= 1.0)), name
            errors[node_based] = np.mean(np.abs(app_llr - exact))
        assert errors[True] <= 1.1 * errors[False] + 0.02, (list_size, errors)


def test_node_based_spec_rejects_bad_combinations():
    with pytest.raises(ValueError, match="node_based"):
        decoders.DecoderSpec("sc", node_based=True)
    with pytest.raises(ValueError, match="maxlog"):
        decoders.DecoderSpec("scl", 8, soft_output=True, path_metric="maxlog")
    with pytest.raises(ValueError, match="path_metric 'log'"):
        decoders.DecoderSpec("scl", 8, path_metric="log")
