"""Exactness tests of the SC and SCL decoders against brute force and closed forms."""

import itertools
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from jaxlab.core import distributed
from jaxlab.polar import channel, codes, crc, decoders, encoding


def _random_codewords(code, batch, seed):
    rng = np.random.default_rng(seed)
    info = rng.integers(0, 2, size=(batch, code.num_payload), dtype=np.uint8)
    if code.crc is not None:
        info = np.asarray(crc.crc_attach(jnp.asarray(info), code.crc))
    return info, np.asarray(encoding.encode(code, jnp.asarray(info)))


def _noisy_llr(codeword, ebno_db, rate, seed):
    sigma = channel.ebno_db_to_sigma(ebno_db, rate)
    return channel.awgn_llr(jax.random.key(seed), jnp.asarray(codeword), sigma)


def _all_codewords(code):
    info = np.array(list(itertools.product([0, 1], repeat=code.num_info)), np.uint8)
    return np.asarray(encoding.encode(code, jnp.asarray(info)))


@pytest.mark.parametrize("f_function", ["boxplus", "minsum"])
@pytest.mark.parametrize("spec_name", ["SC", "SCL-1", "SCL-8"])
def test_noiseless_input_decodes_perfectly(spec_name, f_function):
    algorithm = "sc" if spec_name == "SC" else "scl"
    list_size = 1 if spec_name == "SC" else int(spec_name.split("-")[1])
    spec = decoders.DecoderSpec(algorithm, list_size, f_function=f_function)
    for length, num_info in [(64, 32), (1024, 512)]:
        code = codes.polar_code_5g(length, num_info)
        info, codeword = _random_codewords(code, 16, seed=length)
        out = decoders.make_decoder(code, spec)(channel.noiseless_llr(jnp.asarray(codeword)))
        np.testing.assert_array_equal(np.asarray(out.codeword), codeword)
        np.testing.assert_array_equal(np.asarray(out.info_bits), info)


def test_ca_scl_noiseless_passes_crc():
    code = codes.polar_code_5g(128, 64, crc="CRC11")
    info, codeword = _random_codewords(code, 16, seed=3)
    spec = decoders.DecoderSpec("scl", 8, crc_aided=True)
    out = decoders.make_decoder(code, spec)(channel.noiseless_llr(jnp.asarray(codeword)))
    np.testing.assert_array_equal(np.asarray(out.info_bits), info)
    assert bool(np.all(np.asarray(out.crc_pass)[:, 0]))


@pytest.mark.parametrize("f_function", ["boxplus", "minsum"])
@pytest.mark.parametrize("length,num_info", [(256, 128), (1024, 512)])
def test_scl_list_size_one_equals_sc(length, num_info, f_function):
    code = codes.polar_code_5g(length, num_info)
    _, codeword = _random_codewords(code, 256, seed=1)
    # An SNR near the waterfall gives both correct and wrong decisions, so disagreements would show.
    llr = _noisy_llr(codeword, 1.5, code.rate, seed=2)
    sc = decoders.make_decoder(code, decoders.DecoderSpec("sc", 1, f_function=f_function))(llr)
    scl = decoders.make_decoder(code, decoders.DecoderSpec("scl", 1, f_function=f_function))(llr)
    assert np.any(np.asarray(sc.codeword) != codeword), "no decoding errors: the comparison is too easy"
    np.testing.assert_array_equal(np.asarray(scl.codeword), np.asarray(sc.codeword))


@pytest.mark.parametrize("length,num_info,batch", [(16, 8, 64), (32, 16, 4)])
def test_scl_with_full_list_is_maximum_likelihood(length, num_info, batch):
    code = codes.polar_code_5g(length, num_info)
    every_codeword = _all_codewords(code)
    _, codeword = _random_codewords(code, batch, seed=length)
    llr = _noisy_llr(codeword, 0.0, code.rate, seed=length + 1)

    out = decoders.make_decoder(code, decoders.DecoderSpec("scl", 2**num_info))(llr)

    # ML over BPSK-AWGN maximizes the correlation Σ_j (1 − 2x_j)·λ_j.
    correlation = np.asarray(llr, np.float64) @ (1.0 - 2.0 * every_codeword.T)
    ml_codeword = every_codeword[np.argmax(correlation, axis=1)]
    decoded = np.asarray(out.codeword)
    decoded_correlation = np.sum(np.asarray(llr, np.float64) * (1.0 - 2.0 * decoded), axis=1)
    assert np.mean(np.all(decoded == ml_codeword, axis=1)) > 0.9
    # Where the codewords differ, the ML metrics tie to float32 precision.
    np.testing.assert_allclose(decoded_correlation, np.max(correlation, axis=1), rtol=1e-5, atol=1e-4)


def test_scl_path_metrics_are_codeword_log_likelihoods():
    code = codes.polar_code_5g(128, 64)
    _, codeword = _random_codewords(code, 32, seed=5)
    llr = _noisy_llr(codeword, 1.0, code.rate, seed=6)
    out = decoders.make_decoder(code, decoders.DecoderSpec("scl", 8))(llr)

    # With every bit of u uniform a priori, −ln P(u | y) = Σ_j ln(1 + exp(−(1 − 2x_j)·λ_j)).
    llr64 = np.asarray(llr, np.float64)[:, None, :]
    signs = 1.0 - 2.0 * np.asarray(out.list_codewords, np.float64)
    expected = np.sum(np.logaddexp(0.0, -signs * llr64), axis=-1)
    np.testing.assert_allclose(np.asarray(out.path_metrics), expected, rtol=1e-4)
    assert np.all(np.diff(np.asarray(out.path_metrics), axis=1) >= 0)


def test_ca_scl_chooses_most_likely_passing_path():
    code = codes.polar_code_5g(128, 64, crc="CRC6")
    _, codeword = _random_codewords(code, 128, seed=7)
    llr = _noisy_llr(codeword, 0.5, code.rate, seed=8)
    out = decoders.make_decoder(code, decoders.DecoderSpec("scl", 8, crc_aided=True))(llr)

    crc_pass = np.asarray(out.crc_pass)
    list_codewords = np.asarray(out.list_codewords)
    for row in range(len(crc_pass)):
        expected = np.argmax(crc_pass[row]) if crc_pass[row].any() else 0
        np.testing.assert_array_equal(np.asarray(out.codeword)[row], list_codewords[row, expected])
    assert crc_pass.any(axis=1).mean() > 0.5
    assert (~crc_pass[:, 0]).any(), "no list head failed its CRC: the test does not exercise CA-SCL"


def test_sharded_decoding_equals_single_device():
    code = codes.polar_code_5g(256, 128)
    _, codeword = _random_codewords(code, 64, seed=9)
    llr = _noisy_llr(codeword, 1.5, code.rate, seed=10)
    decode = decoders.make_decoder(code, decoders.DecoderSpec("scl", 4))

    mesh = distributed.make_mesh()
    assert mesh.size == 8
    sharded = decode(jax.device_put(llr, NamedSharding(mesh, PartitionSpec("data"))))
    single = decode(jax.device_put(llr, jax.devices()[0]))
    np.testing.assert_array_equal(np.asarray(sharded.list_codewords), np.asarray(single.list_codewords))
    # Per-device vectorization may reorder float additions, so metrics agree to rounding only.
    np.testing.assert_allclose(np.asarray(sharded.path_metrics), np.asarray(single.path_metrics), rtol=1e-6)


def test_scl_compile_time_at_1024_list_8():
    code = codes.polar_code_5g(1024, 512, crc="CRC11")
    batch_decode = decoders.make_batch_decode_fn(code, decoders.DecoderSpec("scl", 8, crc_aided=True))
    started = time.perf_counter()
    jax.jit(batch_decode).lower(jax.ShapeDtypeStruct((64, 1024), jnp.float32)).compile()
    assert time.perf_counter() - started < 60.0


def test_decoder_rejects_bad_llrs():
    code = codes.polar_code_5g(64, 32)
    decode = decoders.make_decoder(code, decoders.DecoderSpec("scl", 2))
    with pytest.raises(ValueError, match=r"shape \(4, 32\)"):
        decode(jnp.zeros((4, 32)))
    with pytest.raises(ValueError, match="dtype int32"):
        decode(jnp.zeros((4, 64), jnp.int32))
    with pytest.raises(ValueError, match="NaN"):
        decode(jnp.full((4, 64), jnp.nan))


def test_decoder_spec_rejects_bad_values():
    with pytest.raises(ValueError, match="list_size 0"):
        decoders.DecoderSpec("scl", 0)
    with pytest.raises(ValueError, match="list_size 4 for SC"):
        decoders.DecoderSpec("sc", 4)
    with pytest.raises(ValueError, match="f_function 'tanh'"):
        decoders.DecoderSpec("scl", 4, f_function="tanh")
    with pytest.raises(ValueError, match="crc_aided"):
        decoders.make_decoder(codes.polar_code_5g(64, 32), decoders.DecoderSpec("scl", 4, crc_aided=True))


@pytest.mark.parametrize("list_size", [2, 4, 16, 32])
def test_scl_list_sizes_decode_and_keep_exact_metrics(list_size):
    code = codes.polar_code_5g(128, 64)
    _, codeword = _random_codewords(code, 16, seed=list_size)
    decode = decoders.make_decoder(code, decoders.DecoderSpec("scl", list_size))

    noiseless = decode(channel.noiseless_llr(jnp.asarray(codeword)))
    np.testing.assert_array_equal(np.asarray(noiseless.codeword), codeword)

    llr = _noisy_llr(codeword, 1.0, code.rate, seed=list_size + 100)
    out = decode(llr)
    assert out.path_metrics.shape == (16, list_size)
    signs = 1.0 - 2.0 * np.asarray(out.list_codewords, np.float64)
    expected = np.sum(np.logaddexp(0.0, -signs * np.asarray(llr, np.float64)[:, None, :]), axis=-1)
    np.testing.assert_allclose(np.asarray(out.path_metrics), expected, rtol=1e-4)
    # Distinct list entries: no path is kept twice.
    for row in np.asarray(out.list_codewords):
        assert len({entry.tobytes() for entry in row}) == list_size


def test_decoder_spec_default_list_size():
    assert decoders.DecoderSpec("sc").list_size == 1
    assert decoders.DecoderSpec("scl").list_size == decoders.DEFAULT_LIST_SIZE


def test_decoder_rejects_python_list():
    decode = decoders.make_decoder(codes.polar_code_5g(64, 32), decoders.DecoderSpec("scl", 2))
    with pytest.raises(TypeError, match="type list"):
        decode([[0.0] * 64])
