"""The `polar_product_code` experiment: BLER of soft- and hard-output iterative decoding over BPSK-AWGN.

Outputs in the workdir: `results.json`, `results.md`, `bler.png`, `metrics.jsonl` and TensorBoard events (one
entry per finished point), and `checkpoints/` with the error counts. `results.json` has one record per
decoder and Eb/N0 point, the Eb/N0 of each decoder at BLER 1e-2 and the gain of soft over hard there. A
stopped run resumes from its checkpoint and ends with the same `results.json`.
"""

from __future__ import annotations

import os


from jaxlab.core import config as config_lib
from jaxlab.core import distributed
from jaxlab.core import metrics as metrics_lib
from jaxlab.polar import codes as codes_lib
from jaxlab.polar import simulation
from jaxlab.polar import sweep
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
    sharding = distributed.batch_sharding(distributed.make_mesh())
    product = ProductCode(codes_lib.polar_code_5g(config.code.length, config.code.num_info))

    def make_simulator(name: str):
        return make_batch_simulator(product, turbo_spec(config, name), config.batch_size, sharding)

    def make_record(point: sweep.SweepPoint, counts: simulation.ErrorCounts, extras) -> dict:
        lower, upper = simulation.clopper_pearson(counts.block_errors, counts.codewords)
        codewords = max(counts.codewords, 1)
        return {
            "decoder": point.decoder_name,
            "decoder_label": turbo_spec(config, point.decoder_name).name,
            "n": product.n,
            "k": product.k,
            "ebno_db": point.ebno_db,
            "bler": counts.block_errors / codewords,
            "bler_ci99": [lower, upper],
            "ber": counts.bit_errors / (codewords * product.num_payload),
            "mean_iterations": int(extras[0]) / codewords,
            "block_errors": counts.block_errors,
            "bit_errors": counts.bit_errors,
            "codewords": counts.codewords,
        }

    # The batch key depends on the Eb/N0 index and batch only, so soft and hard decoding see the same draws.
    records = sweep.run_sweep(config, workdir, sweep.sweep_points(config.decoders, config.ebno_db),
                              make_simulator, make_record, extra_counters=("iterations",),
                              extra_metrics=("mean_iterations",))
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
