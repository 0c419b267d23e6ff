"""Time-step counts of the latency model against closed forms and hand-counted trees."""

import numpy as np
import pytest

from jaxlab.polar import codes, latency


@pytest.mark.parametrize("length,num_info", [(64, 32), (256, 128), (1024, 512)])
def test_bitwise_decoders_match_closed_forms(length, num_info):
    frozen = codes.polar_code_5g(length, num_info).frozen
    assert latency.time_steps(frozen, "SC") == 2 * length - 2
    assert latency.time_steps(frozen, "SCL", list_size=8) == 2 * length + num_info - 2
    assert latency.time_steps(frozen, "SO-SCL", list_size=8) == latency.time_steps(frozen, "SCL", list_size=8)


def test_node_based_counts_on_hand_built_tree():
    # N = 8 with frozen pattern [F F F I | F I I I]: left half is a REP node, right half an SPC node.
    frozen = np.array([1, 1, 1, 0, 1, 0, 0, 0], bool)
    assert latency.node_kind(frozen[:4]) == "rep"
    assert latency.node_kind(frozen[4:]) == "spc"
    # Root f and g (2 steps), then REP and SPC.
    assert latency.time_steps(frozen, "Fast-SSC") == 2 + 1 + 2
    assert latency.time_steps(frozen, "Fast-SSCL", list_size=4) == 2 + 2 + (min(4, 4) + 1)
    assert latency.time_steps(frozen, "SO-FSCL", list_size=2) == 2 + 2 + (min(2, 4) + 1)
    assert latency.count_nodes(frozen) == latency.NodeCounts(rate0=0, rate1=0, rep=1, spc=1, internal=1)


def test_whole_code_special_nodes():
    assert latency.time_steps(np.ones(16, bool), "Fast-SSCL", list_size=8) == 1
    assert latency.time_steps(np.zeros(16, bool), "Fast-SSCL", list_size=8) == 7
    assert latency.time_steps(np.zeros(16, bool), "Fast-SSC") == 1


@pytest.mark.parametrize("length,num_info", [(128, 64), (1024, 512)])
def test_node_based_decoding_is_faster(length, num_info):
    frozen = codes.polar_code_5g(length, num_info).frozen
    assert latency.time_steps(frozen, "Fast-SSC") < latency.time_steps(frozen, "SC")
    assert latency.time_steps(frozen, "SO-FSCL") < latency.time_steps(frozen, "SO-SCL")


def test_time_steps_rejects_bad_input():
    with pytest.raises(ValueError, match="decoder 'BP'"):
        latency.time_steps(np.zeros(8, bool), "BP")
    with pytest.raises(ValueError, match="shape"):
        latency.time_steps(np.zeros(6, bool), "SC")
