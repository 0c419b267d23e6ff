"""Request streams: distribution ranges, determinism, trace files and rejected inputs."""

import dataclasses

import numpy as np
import pytest

from jaxlab.vne import requests


def test_trace_is_deterministic_and_in_range():
    trace = requests.generate_trace(1, arrival_rate=0.1, num_requests=200)
    again = requests.generate_trace(1, arrival_rate=0.1, num_requests=200)
    for field in dataclasses.fields(trace):
        np.testing.assert_array_equal(getattr(trace, field.name), getattr(again, field.name))
    assert trace.num_nodes.min() >= 2
    assert trace.num_nodes.max() <= 10
    assert trace.cpu.max() <= 20
    assert trace.cpu.min() >= 0
    assert trace.link_bw.max() <= 50
    gaps = np.diff(trace.arrival_time, prepend=0.0)
    assert np.all(gaps == np.round(gaps)), "Poisson gaps are integers"
    assert 5.0 < gaps.mean() < 15.0
    assert 350.0 < trace.lifetime.mean() < 650.0


def test_exponential_gaps_are_not_integers():
    trace = requests.generate_trace(1, arrival_rate=0.1, num_requests=50, arrival_process="exponential_gaps")
    assert np.any(trace.arrival_time != np.round(trace.arrival_time))


def test_trace_round_trip(tmp_path):
    trace = requests.generate_trace(2, arrival_rate=0.2, num_requests=30)
    path = tmp_path / "trace.npz"
    requests.save_trace(path, trace)
    loaded = requests.load_trace(path)
    for field in dataclasses.fields(trace):
        np.testing.assert_array_equal(getattr(trace, field.name), getattr(loaded, field.name))


def _corrupt(trace, name, index, value):
    array = getattr(trace, name).copy()
    array[index] = value
    return dataclasses.replace(trace, **{name: array})


@pytest.mark.parametrize("name,index,value,message", [
    ("cpu", (3, 0), -5, "request 3 has negative CPU demand -5 on virtual node 0"),
    ("link_bw", (4, 0), -1, "request 4 has negative bandwidth demand -1"),
    ("arrival_time", 7, 0.0, "arrivals out of order, request 7"),
    ("lifetime", 2, 0.0, "request 2 has lifetime 0.0"),
    ("num_nodes", 1, 11, "request 1 has 11 virtual nodes; expected 1 to 10"),
])
def test_corrupt_trace_file_rejected(tmp_path, name, index, value, message):
    trace = requests.generate_trace(3, arrival_rate=0.1, num_requests=10)
    corrupt = _corrupt(trace, name, index, value)
    path = tmp_path / "corrupt.npz"
    np.savez(path, format_version=np.int32(1),
             **{field.name: getattr(corrupt, field.name) for field in dataclasses.fields(corrupt)})
    with pytest.raises(ValueError, match=message) as error:
        requests.load_trace(path)
    assert "corrupt.npz" in str(error.value)


def test_request_larger_than_substrate_rejected():
    trace = requests.generate_trace(4, arrival_rate=0.1, num_requests=20)
    with pytest.raises(ValueError, match=r"larger than the substrate: it has \d+ virtual nodes but the substrate has 2"):
        requests.validate_trace(trace, max_substrate_nodes=2)


def test_trace_file_missing_field(tmp_path):
    path = tmp_path / "partial.npz"
    np.savez(path, format_version=np.int32(1), arrival_time=np.zeros(3))
    with pytest.raises(ValueError, match="missing arrays .*lifetime"):
        requests.load_trace(path)


def test_disconnected_request_rejected():
    trace = requests.generate_trace(6, arrival_rate=0.1, num_requests=5, min_nodes=3, max_nodes=3, link_prob=1.0)
    keep = trace.link_valid.copy()
    keep[0, 1:] = False  # Request 0 keeps only link (0, 1), so node 2 is isolated.
    corrupt = dataclasses.replace(trace, link_valid=keep, link_src=np.where(keep, trace.link_src, 0),
                                  link_dst=np.where(keep, trace.link_dst, 0), link_bw=np.where(keep, trace.link_bw, 0))
    with pytest.raises(ValueError, match="request 0 is not a connected graph"):
        requests.validate_trace(corrupt)
