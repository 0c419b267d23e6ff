"""SO-SCL soft outputs against exact a-posteriori LLRs computed by enumerating every codeword."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.polar import channel, codes, decoders, encoding


def _enumerate_code(code):
    info = np.array(list(itertools.product([0, 1], repeat=code.num_info)), np.uint8)
    return info, np.asarray(encoding.encode(code, jnp.asarray(info)))


def _exact_app(llr, every_codeword, every_info):
    """Return exact APP LLRs of codeword and information bits: P(c | y) ∝ Π_j P(c_j | y_j)."""
    llr = np.asarray(llr, np.float64)
    log_probs = -np.sum(np.logaddexp(0.0, -(1.0 - 2.0 * every_codeword)[None] * llr[:, None]), axis=-1)

    def app(bits):
        log_zero = np.logaddexp.reduce(np.where(bits[None] == 0, log_probs[..., None], -np.inf), axis=1)
        log_one = np.logaddexp.reduce(np.where(bits[None] == 1, log_probs[..., None], -np.inf), axis=1)
        return log_zero - log_one

    return app(every_codeword), app(every_info)


def _noisy_batch(code, every_codeword, batch, ebno_db, seed):
    rng = np.random.default_rng(seed)
    codeword = every_codeword[rng.integers(len(every_codeword), size=batch)]
    sigma = channel.ebno_db_to_sigma(ebno_db, code.rate)
    return channel.awgn_llr(jax.random.key(seed), jnp.asarray(codeword), sigma)


@pytest.mark.parametrize("length,num_info,batch", [(16, 8, 64), (32, 16, 4)])
def test_full_list_soft_output_is_exact_app(length, num_info, batch):
    code = codes.polar_code_5g(length, num_info)
    every_info, every_codeword = _enumerate_code(code)
    llr = _noisy_batch(code, every_codeword, batch, ebno_db=1.0, seed=length)
    exact_codeword_app, exact_info_app = _exact_app(llr, every_codeword, every_info)

    out = decoders.make_decoder(code, decoders.DecoderSpec("scl", 2**num_info, soft_output=True))(llr)

    np.testing.assert_allclose(np.asarray(out.app_llr), exact_codeword_app, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(out.info_app_llr), exact_info_app, rtol=1e-4, atol=1e-4)
    # Nothing is discarded when the list contains every codeword.
    assert np.all(np.isneginf(np.asarray(out.log_out_of_list_mass)))
    np.testing.assert_allclose(np.asarray(out.prob_outside_list), 0.0)


def test_soft_output_error_shrinks_with_list_size():
    code = codes.polar_code_5g(32, 10)
    every_info, every_codeword = _enumerate_code(code)
    llr = _noisy_batch(code, every_codeword, 128, ebno_db=1.0, seed=3)
    exact_codeword_app, _ = _exact_app(llr, every_codeword, every_info)

    errors = []
    for list_size in (2, 4, 16, 64):
        out = decoders.make_decoder(code, decoders.DecoderSpec("scl", list_size, soft_output=True))(llr)
        errors.append(np.mean(np.abs(np.asarray(out.app_llr) - exact_codeword_app)))
        assert np.all(np.isfinite(np.asarray(out.app_llr)))
        assert np.all(np.asarray(out.log_out_of_list_mass) > -np.inf), "a full list must discard paths"
    assert errors == sorted(errors, reverse=True), errors
    assert errors[-1] < 0.2 * errors[0], errors


def test_soft_output_keeps_scl_decisions_and_metrics():
    code = codes.polar_code_5g(256, 128, crc="CRC11")
    rng = np.random.default_rng(4)
    info = jnp.asarray(rng.integers(0, 2, size=(64, code.num_info), dtype=np.uint8))
    llr = channel.awgn_llr(jax.random.key(4), encoding.encode(code, info), channel.ebno_db_to_sigma(1.5, code.rate))
    hard = decoders.make_decoder(code, decoders.DecoderSpec("scl", 8, crc_aided=True))(llr)
    soft = decoders.make_decoder(code, decoders.DecoderSpec("scl", 8, crc_aided=True, soft_output=True))(llr)

    np.testing.assert_array_equal(np.asarray(soft.list_codewords), np.asarray(hard.list_codewords))
    np.testing.assert_array_equal(np.asarray(soft.path_metrics), np.asarray(hard.path_metrics))
    np.testing.assert_array_equal(np.asarray(soft.codeword), np.asarray(hard.codeword))
    for name in ("prob_decision_wrong", "prob_outside_list"):
        values = np.asarray(getattr(soft, name))
        assert np.all((values >= 0.0) & (values <= 1.0)), name
    # The APP hard decisions agree with the decided codeword almost everywhere.
    app_decisions = (np.asarray(soft.app_llr) < 0).astype(np.uint8)
    assert np.mean(app_decisions == np.asarray(soft.codeword)) > 0.99
    assert hard.app_llr is None


def test_soft_output_rejects_sc():
    with pytest.raises(ValueError, match="soft_output"):
        decoders.DecoderSpec("sc", 1, soft_output=True)


def test_block_error_probability_is_calibrated():
    code = codes.polar_code_5g(64, 32)
    decode = decoders.make_decoder(code, decoders.DecoderSpec("scl", 4, soft_output=True))
    predicted, wrong = [], []
    for index in range(4):
        key_bits, key_noise = jax.random.split(jax.random.key(index))
        info = jax.random.bernoulli(key_bits, 0.5, (1000, code.num_info)).astype(jnp.uint8)
        codeword = encoding.encode(code, info)
        out = decode(channel.awgn_llr(key_noise, codeword, channel.ebno_db_to_sigma(2.0, code.rate)))
        predicted.append(np.asarray(out.prob_decision_wrong, np.float64))
        wrong.append(np.any(np.asarray(out.codeword) != np.asarray(codeword), axis=1))
    predicted, wrong = np.concatenate(predicted), np.concatenate(wrong)

    # Over 4000 blocks with an error rate near 0.1, the standard error of the empirical rate is about 0.005.
    assert abs(predicted.mean() - wrong.mean()) < 0.02
    confident = predicted < 0.01
    assert confident.sum() > 1000
    assert wrong[confident].mean() < 0.02
    doubtful = predicted > 0.5
    assert doubtful.sum() > 50
    assert wrong[doubtful].mean() > 0.4
