"""The `polar_product_code` experiment: BLER of soft- and hard-output iterative decoding over BPSK-AWGN.

Outputs in the workdir: `results.json`, `results.md`, `bler.png`, `metrics.jsonl` and TensorBoard events (one
entry per finished point), and `checkpoints/` with the error counts. `results.json` has one record per
decoder and Eb/N0 point, the Eb/N0 of each decoder at BLER 1e-2 and the gain of soft over hard there. A
stopped run resumes from its checkpoint and ends with the same `results.json`.
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np
from absl import logging

from jaxlab.core import checkpoint as checkpoint_lib
from jaxlab.core import config as config_lib
from jaxlab.core import distributed
from jaxlab.core import metrics as metrics_lib
from jaxlab.core import progress as progress_lib
from jaxlab.polar import codes as codes_lib
from jaxlab.polar import simulation
from jaxlab.polar.product import (COMPONENT_OUTPUTS, ProductCode, TurboSpec, ebno_at_bler,
                                  make_batch_simulator)

GAIN_TARGET_BLER = 1e-2
_MAX_CONFIG_LIST_SIZE = 64
_MAX_CONFIG_ITERATIONS = 100


def validate(config) -> None:
    """Raise `ConfigError` naming the first invalid field of a `polar_product_code` config."""
    config_lib.require_int(config, "seed", min=0)
    length = config_lib.require_int(config, "code.length", min=2, max=codes_lib.NR_MAX_LENGTH, power_of_two=True)
    config_lib.require_int(config, "code.num_info", min=1, max=length)
    names = config_lib.require_list_of(config, "decoders", str, min_len=1)
    for index, name in enumerate(names):
        if name not in COMPONENT_OUTPUTS:
            raise config_lib.ConfigError(f"decoders[{index}]", name, f"one of {COMPONENT_OUTPUTS}")
    if len(set(names)) != len(names):
        raise config_lib.ConfigError("decoders", tuple(names), "a list without repeated decoders")
    config_lib.require_int(config, "list_size", min=1, max=_MAX_CONFIG_LIST_SIZE)
    config_lib.require_int(config, "max_iterations", min=1, max=_MAX_CONFIG_ITERATIONS)
    config_lib.require_float(config, "alpha", min=0.0, max=1.0)
    config_lib.require_float(config, "beta", gt=0.0, max=1000.0)
    config_lib.require_float(config, "llr_clip", gt=0.0, max=1000.0)
    simulation.validate_sweep_config(config)


def turbo_spec(config, component_output: str) -> TurboSpec:
    """Build the `TurboSpec` of one configured decoder ("soft" or "hard")."""
    return TurboSpec(component_output=component_output, list_size=config.list_size,
                     max_iterations=config.max_iterations, alpha=float(config.alpha), beta=float(config.beta),
                     llr_clip=float(config.llr_clip))


def _gain_summary(config, records: list[dict]) -> dict:
    crossings = {}
    for name in config.decoders:
        points = [r for r in records if r["decoder"] == name]
        crossings[name] = ebno_at_bler([r["ebno_db"] for r in points], [r["bler"] for r in points],
                                       GAIN_TARGET_BLER)
    gain = None
    if crossings.get("soft") is not None and crossings.get("hard") is not None:
        gain = crossings["hard"] - crossings["soft"]
    return {"target_bler": GAIN_TARGET_BLER, "ebno_db_at_target": crossings, "soft_gain_db": gain}


def _write_summary(workdir: str, config, records: list[dict], gain: dict) -> None:
    columns = ["decoder_label", "ebno_db", "bler", "ber", "mean_iterations", "block_errors", "codewords"]
    rows = [{**r, "bler": f"{r['bler']:.3e}", "ber": f"{r['ber']:.3e}", "mean_iterations": f"{r['mean_iterations']:.2f}"}
            for r in records]
    n, k = config.code.length, config.code.num_info
    title = (f"Polar product code ({n},{k})², L = {config.list_size}, ≤ {config.max_iterations} iterations, "
             f"α = {config.alpha}, β = {config.beta}")
    metrics_lib.write_markdown_table(os.path.join(workdir, "results.md"), rows, columns, title=title)
    with open(os.path.join(workdir, "results.md"), "a") as file:
        for name, ebno in gain["ebno_db_at_target"].items():
            text = "not reached on the grid" if ebno is None else f"{ebno:.3f} dB"
            file.write(f"\nEb/N0 of {name} at BLER {gain['target_bler']:g}: {text}\n")
        if gain["soft_gain_db"] is not None:
            file.write(f"\nGain of soft over hard at BLER {gain['target_bler']:g}: {gain['soft_gain_db']:.3f} dB\n")

    series = []
    for name in config.decoders:
        points = [r for r in records if r["decoder"] == name and r["block_errors"] > 0]
        if points:
            series.append({"x": [r["ebno_db"] for r in points], "y": [r["bler"] for r in points],
                           "label": points[0]["decoder_label"]})
    if series:
        metrics_lib.plot_lines(os.path.join(workdir, "bler.png"), series, xlabel="Eb/N0 [dB]", ylabel="BLER",
                               title=f"Polar product code ({n},{k})² over BPSK-AWGN", logy=True)


def run(config, workdir: str) -> dict:
    """Run the BLER sweep of every configured decoder, resuming from `workdir/checkpoints`; return results."""
    mesh = distributed.make_mesh()
    sharding = distributed.batch_sharding(mesh)
    root_key = jax.random.key(config.seed)
    product = ProductCode(codes_lib.polar_code_5g(config.code.length, config.code.num_info))

    points = [(name, ebno_index, float(ebno_db)) for name in config.decoders
              for ebno_index, ebno_db in enumerate(config.ebno_db)]
    # Columns: block errors, bit errors, codewords, batches (as in `simulation.ErrorCounts`), iterations.
    counts_array = np.zeros((len(points), 5), np.int64)
    checkpointer = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=2)
    latest = checkpointer.latest_step()
    if latest is not None:
        counts_array = np.asarray(checkpointer.restore({"counts": counts_array})["counts"]).copy()
        logging.info("Resumed from checkpoint %d (%d codewords simulated).", latest, counts_array[:, 2].sum())
    counts = [simulation.ErrorCounts.from_array(row[:4]) for row in counts_array]
    iterations = [int(row[4]) for row in counts_array]

    def finished(index: int) -> bool:
        return simulation.should_stop(counts[index], config.target_block_errors, config.max_codewords)

    # Points finished before the last checkpoint keep their metrics lines; later lines are written again.
    first_open = next((i for i in range(len(points)) if not finished(i)), len(points))
    writer = metrics_lib.MetricWriter(workdir, resume_from_step=first_open - 1)
    step = int(counts_array[:, 3].sum())  # Batches simulated so far over all points: the checkpoint step.
    last_save = {"step": latest, "time": time.monotonic()}

    def save_counts():
        if last_save["step"] != step:
            state = np.stack([np.append(c.as_array(), it) for c, it in zip(counts, iterations)])
            checkpointer.save(step, {"counts": state})
        last_save.update(step=step, time=time.monotonic())

    def record(index: int) -> dict:
        name, _, ebno_db = points[index]
        point_counts = counts[index]
        lower, upper = simulation.clopper_pearson(point_counts.block_errors, point_counts.codewords)
        codewords = max(point_counts.codewords, 1)
        return {
            "decoder": name,
            "decoder_label": turbo_spec(config, name).name,
            "n": product.n,
            "k": product.k,
            "ebno_db": ebno_db,
            "bler": point_counts.block_errors / codewords,
            "bler_ci99": [lower, upper],
            "ber": point_counts.bit_errors / (codewords * product.num_payload),
            "mean_iterations": iterations[index] / codewords,
            "block_errors": point_counts.block_errors,
            "bit_errors": point_counts.bit_errors,
            "codewords": point_counts.codewords,
        }

    simulators = {}
    records = []
    for index, (name, ebno_index, ebno_db) in enumerate(points):
        point_counts = counts[index]
        if not finished(index):
            # Eb/N0 is a traced argument, so each decoder compiles once for all its points.
            if name not in simulators:
                simulators[name] = make_batch_simulator(product, turbo_spec(config, name), config.batch_size,
                                                        sharding)
            simulate = simulators[name]
            started = time.monotonic()
            start_codewords = point_counts.codewords
            bar = progress_lib.progress(config.max_codewords, desc=f"{name} @ {ebno_db:.2f} dB", unit="cw",
                                        initial=point_counts.codewords)
            with bar:
                while not finished(index):
                    # The key depends on the Eb/N0 index and batch only, so soft and hard see the same draws.
                    key = simulation.batch_key(root_key, ebno_index, point_counts.batches)
                    block_errors, bit_errors, batch_iterations = jax.device_get(simulate(key, ebno_db))
                    point_counts.add(block_errors, bit_errors, config.batch_size)
                    iterations[index] += int(batch_iterations)
                    step += 1
                    bar.update(config.batch_size)
                    bar.set_postfix(block_errors=point_counts.block_errors, refresh=False)
                    if time.monotonic() - last_save["time"] > config.checkpoint_every_s:
                        save_counts()

            elapsed = time.monotonic() - started
            point_record = record(index)
            writer.write_scalars(index, {
                "bler": point_record["bler"],
                "ber": point_record["ber"],
                "ebno_db": ebno_db,
                "mean_iterations": point_record["mean_iterations"],
                "codewords": point_counts.codewords,
                "codewords_per_s": (point_counts.codewords - start_codewords) / max(elapsed, 1e-9),
            })
            # Metrics first, then the checkpoint: a kill in between only repeats this point's metrics line.
            save_counts()
            logging.info("%s at %.2f dB: BLER %.3e (%d/%d), BER %.3e, %.2f iterations", name, ebno_db,
                         point_record["bler"], point_counts.block_errors, point_counts.codewords,
                         point_record["ber"], point_record["mean_iterations"])
        records.append(record(index))

    writer.close()
    checkpointer.close()
    gain = _gain_summary(config, records)
    results = {
        "experiment": config.experiment,
        "code": {"construction": "5g", "n": product.n, "k": product.k, "rate": product.rate},
        "decoding": {"list_size": config.list_size, "max_iterations": config.max_iterations,
                     "alpha": float(config.alpha), "beta": float(config.beta), "llr_clip": float(config.llr_clip)},
        "points": records,
        "gain": gain,
    }
    metrics_lib.write_results(workdir, results)
    _write_summary(workdir, config, records, gain)
    return results
