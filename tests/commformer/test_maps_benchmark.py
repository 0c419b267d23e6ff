"""benchmarks/commformer_maps.py reads finished runs back into its table and gate plot.

The runs are written by the test (results.json and metrics.jsonl, no checkpoints), so the benchmark trains
nothing and the test checks only its bookkeeping: which config each map loads, the cells and the plot.
"""

import json
import os
import pathlib
import subprocess
import sys

BENCHMARK = pathlib.Path(__file__).parents[2] / "benchmarks" / "commformer_maps.py"


def _write_run(workdir: pathlib.Path, win_rate: float, episode_return: float, gate_rate: float) -> None:
    workdir.mkdir(parents=True)
    results = {"test_win_rate": win_rate, "test_episode_return": episode_return, "test_gate_rate": gate_rate,
               "minutes_to_target": None, "env_steps_to_target": None, "train_minutes": 2.0,
               "env_steps_per_s": 500.0}
    (workdir / "results.json").write_text(json.dumps(results))
    records = [{"step": step, "env_steps": 1000 * step, "gate_rate": 1.0 / step} for step in (1, 2, 3)]
    (workdir / "metrics.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))


def test_table_and_gate_plot_from_finished_runs(tmp_path):
    for seed, (win_rate, episode_return) in enumerate([(0.7, 3.0), (0.9, 5.0)]):
        _write_run(tmp_path / "3m" / "commformer_gated" / f"seed{seed}", win_rate, episode_return, 0.25)
        _write_run(tmp_path / "MPE_simple_spread_v3" / "commformer_gated" / f"seed{seed}", 0.0,
                   -20.0 - 2 * seed, 1.0)
    plot = tmp_path / "gate_rate.png"
    process = subprocess.run(
        [sys.executable, str(BENCHMARK), "--variant=quick", "--maps=3m,MPE_simple_spread_v3",
         "--methods=commformer_gated", "--seeds=0,1", "--final_eval_episodes=0", f"--workdir={tmp_path}",
         f"--gate_plot={plot}"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert process.returncode == 0, process.stderr[-3000:]

    rows = {line.split(" | ")[0]: line.split(" | ") for line in process.stdout.splitlines()
            if line.startswith("| 3m |") or line.startswith("| MPE")}
    assert set(rows) == {"| 3m", "| MPE_simple_spread_v3"}
    assert rows["| 3m"][2:5] == ["80.0 ± 10.0", "4.00 ± 1.00", "25.0 ± 0.0"]
    assert rows["| MPE_simple_spread_v3"][2:5] == ["0.0 ± 0.0", "-21.00 ± 1.00", "100.0 ± 0.0"]
    assert "receive rate (% of alive agent-steps)" in process.stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_map_is_rejected(tmp_path):
    process = subprocess.run(
        [sys.executable, str(BENCHMARK), "--variant=quick", "--maps=4m", "--methods=commformer", "--seeds=0",
         f"--workdir={tmp_path}"], capture_output=True, text=True, timeout=300)
    assert process.returncode != 0
    assert "env.name='4m'" in process.stderr


def test_damaged_metrics_keep_the_table(tmp_path):
    workdir = tmp_path / "3m" / "commformer_gated" / "seed0"
    _write_run(workdir, 0.5, 1.0, 0.5)
    with open(workdir / "metrics.jsonl", "a") as file:
        file.write('{"step": 4, "env_st\n')
    process = subprocess.run(
        [sys.executable, str(BENCHMARK), "--variant=quick", "--maps=3m", "--methods=commformer_gated", "--seeds=0",
         "--final_eval_episodes=0", f"--workdir={tmp_path}", f"--gate_plot={tmp_path / 'gate_rate.png'}"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert process.returncode != 0
    assert "| 3m | commformer_gated | 50.0 |" in process.stdout
    assert "the gate plot failed" in process.stderr
    assert "line 4 is not a JSON object" in process.stderr


def test_continuous_variant_needs_mpe(tmp_path):
    process = subprocess.run(
        [sys.executable, str(BENCHMARK), "--variant=continuous", "--maps=MPE_simple_spread_v3,3m",
         "--methods=commformer", "--seeds=0", f"--workdir={tmp_path}"], capture_output=True, text=True, timeout=300)
    assert process.returncode != 0
    assert "exists for MPE only" in process.stderr
