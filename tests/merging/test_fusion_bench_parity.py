"""Every merge agrees with fusion-bench 0.2.33 on the same float64 checkpoints.

fusion-bench (and torch) live outside jaxlab's dependencies; run this test
with a Python that has them, e.g. the venv described in
benchmarks/merging_fusion_bench.py.
"""

import importlib.util
import pathlib

import pytest

pytest.importorskip("torch", reason="torch is not installed; the fusion-bench parity test needs it")
pytest.importorskip("fusion_bench", reason="fusion-bench 0.2.33 is not installed in this Python (a benchmark-only "
                    "dependency, see benchmarks/merging_fusion_bench.py)")

BENCHMARK = pathlib.Path(__file__).parents[2] / "benchmarks" / "merging_fusion_bench.py"


def test_all_methods_match():
    spec = importlib.util.spec_from_file_location("merging_fusion_bench", BENCHMARK)
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    differences = benchmark.run_parity(num_experts=3, seed=1)
    assert len(differences) == 9
    for method, (difference, magnitude) in differences.items():
        assert magnitude > 0.1, method
        assert difference < 1e-6, method
