"""The `polar_awgn_bler` experiment: BLER/BER curves of polar decoders over BPSK-AWGN.

Outputs in the workdir: `results.json` (one record per decoder and Eb/N0 point), `results.md`, `bler.png`,
`metrics.jsonl` and TensorBoard events (one entry per finished point), and `checkpoints/` holding the error
counts, so that a run stopped at any moment resumes where it was and ends with the same `results.json`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from jaxlab.core import checkpoint as checkpoint_lib
from jaxlab.core import config as config_lib
from jaxlab.core import distributed
from jaxlab.core import metrics as metrics_lib
from jaxlab.core import progress as progress_lib
from jaxlab.polar import codes as codes_lib
from jaxlab.polar import crc as crc_lib
from jaxlab.polar import decoders
from jaxlab.polar import simulation

CONSTRUCTIONS = ("5g", "ga", "bhattacharyya")
_DECODER_NAME = re.compile(r"^(SC|(CA-)?(Fast-SSCL|SCL)-(\d+))$")
_DECODER_NAMES_ALLOWED = ("a list of 'SC', 'SCL-<L>', 'CA-SCL-<L>', 'Fast-SSCL-<L>' or 'CA-Fast-SSCL-<L>' "
                          "with 1 <= L <= 1024")
_MAX_CONFIG_LIST_SIZE = 1024


def parse_decoder_name(name: str, f_function: str = "boxplus") -> decoders.DecoderSpec:
    """Turn "SC", "SCL-8", "CA-SCL-8", "Fast-SSCL-8" or "CA-Fast-SSCL-8" into a `DecoderSpec`.

    Raises ValueError for any other name. "Fast-SSCL" is node-based list decoding.
    """
    match = _DECODER_NAME.match(name) if isinstance(name, str) else None
    if match is None:
        raise ValueError(f"invalid decoder name {name!r}; expected {_DECODER_NAMES_ALLOWED[len('a list of '):]}")
    if name == "SC":
        return decoders.DecoderSpec("sc", 1, f_function=f_function)
    return decoders.DecoderSpec("scl", int(match.group(4)), crc_aided=match.group(2) is not None,
                                f_function=f_function, node_based=match.group(3) == "Fast-SSCL")


def validate(config: ml_collections.ConfigDict) -> None:
    """Raise `ConfigError` naming the first invalid field of a `polar_awgn_bler` config."""
    config_lib.require_int(config, "seed", min=0)
    construction = config_lib.require_choice(config, "code.construction", CONSTRUCTIONS)
    max_length = codes_lib.NR_MAX_LENGTH if construction == "5g" else 1 << 16
    length = config_lib.require_int(config, "code.length", min=2, max=max_length, power_of_two=True)
    config_lib.require_choice(config, "code.crc", (None, "none") + tuple(crc_lib.CRC_POLYNOMIALS))
    crc = crc_name(config)
    num_info = config_lib.require_int(config, "code.num_info", min=1, max=length)
    config_lib.require_float(config, "code.design_ebno_db", min=-20.0, max=40.0)

    names = config_lib.require_list_of(config, "decoders", str, min_len=1)
    for index, name in enumerate(names):
        try:
            spec = parse_decoder_name(name)
        except ValueError:
            raise config_lib.ConfigError(f"decoders[{index}]", name, _DECODER_NAMES_ALLOWED) from None
        if spec.list_size > _MAX_CONFIG_LIST_SIZE:
            raise config_lib.ConfigError(f"decoders[{index}]", name, _DECODER_NAMES_ALLOWED)
        if spec.crc_aided and crc is None:
            raise config_lib.ConfigError("code.crc", config.code.crc, f"a CRC name such as 'CRC11' because {name} needs a CRC")
    if crc is not None and any(parse_decoder_name(name).crc_aided for name in names):
        config_lib.require(
            config, "code.num_info", lambda k: k > crc_lib.crc_length(crc),
            f"an int > {crc_lib.crc_length(crc)}, the length of {crc}",
        )
    if len(set(names)) != len(names):
        raise config_lib.ConfigError("decoders", tuple(names), "a list without repeated decoders")

    config_lib.require_choice(config, "f_function", decoders.F_FUNCTIONS)
    simulation.validate_sweep_config(config)


def crc_name(config: ml_collections.ConfigDict) -> str | None:
    """Return the configured CRC, None for none; "none" is accepted because a command line cannot spell None."""
    return None if config.code.crc in (None, "none") else config.code.crc


def build_code(config: ml_collections.ConfigDict, crc: str | None) -> codes_lib.PolarCode:
    """Construct the configured code, with `crc` attached (None for none)."""
    code_config = config.code
    if code_config.construction == "5g":
        return codes_lib.polar_code_5g(code_config.length, code_config.num_info, crc=crc)
    if code_config.construction == "ga":
        return codes_lib.polar_code_ga(code_config.length, code_config.num_info, code_config.design_ebno_db, crc=crc)
    return codes_lib.polar_code_bhattacharyya(
        code_config.length, code_config.num_info, code_config.design_ebno_db, crc=crc
    )


@dataclasses.dataclass(frozen=True)
class _Point:
    """One (decoder, Eb/N0) point of the sweep; `index` orders points in metrics and checkpoints."""

    index: int
    decoder_index: int
    ebno_index: int
    decoder_name: str
    ebno_db: float


def _points(config) -> list[_Point]:
    points = []
    for decoder_index, name in enumerate(config.decoders):
        for ebno_index, ebno_db in enumerate(config.ebno_db):
            points.append(_Point(len(points), decoder_index, ebno_index, name, float(ebno_db)))
    return points


def _record(point: _Point, code: codes_lib.PolarCode, spec: decoders.DecoderSpec,
            counts: simulation.ErrorCounts) -> dict[str, Any]:
    bler = counts.block_errors / max(counts.codewords, 1)
    lower, upper = simulation.clopper_pearson(counts.block_errors, counts.codewords)
    return {
        "decoder": point.decoder_name,
        "list_size": spec.list_size,
        "crc": code.crc if spec.crc_aided else None,
        "n": code.length,
        "k": code.num_info,
        "ebno_db": point.ebno_db,
        "bler": bler,
        "bler_ci99": [lower, upper],
        "ber": counts.bit_errors / max(counts.codewords * code.num_payload, 1),
        "block_errors": counts.block_errors,
        "bit_errors": counts.bit_errors,
        "codewords": counts.codewords,
    }


def _write_summary(workdir: str, config, records: list[dict[str, Any]]) -> None:
    columns = ["decoder", "ebno_db", "bler", "ber", "block_errors", "codewords"]
    rows = [{**r, "bler": f"{r['bler']:.3e}", "ber": f"{r['ber']:.3e}"} for r in records]
    title = (f"Polar ({config.code.length}, {config.code.num_info}) {config.code.construction} code over "
             f"BPSK-AWGN, f = {config.f_function}")
    results_md = os.path.join(workdir, "results.md")
    metrics_lib.write_markdown_table(results_md, rows, columns, title=title)
    with open(results_md, "a") as file:
        file.write("\nPoints without block errors are left out of bler.png, because a zero BLER has no place on "
                   "a log scale. Codeword counts are whole batches, so they can pass max_codewords.\n")

    series = []
    for name in config.decoders:
        points = [r for r in records if r["decoder"] == name and r["block_errors"] > 0]
        if points:
            series.append({"x": [r["ebno_db"] for r in points], "y": [r["bler"] for r in points], "label": name})
    if series:
        metrics_lib.plot_lines(os.path.join(workdir, "bler.png"), series, xlabel="Eb/N0 [dB]", ylabel="BLER",
                               title=title, logy=True)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Run the BLER sweep, resuming from `workdir/checkpoints` when present; return the results dict."""
    mesh = distributed.make_mesh()
    sharding = distributed.batch_sharding(mesh)
    root_key = jax.random.key(config.seed)

    codes = {None: build_code(config, None)}
    if any(parse_decoder_name(name).crc_aided for name in config.decoders):
        codes[crc_name(config)] = build_code(config, crc_name(config))

    points = _points(config)
    counts_array = np.zeros((len(points), 4), np.int64)
    checkpointer = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=2)
    latest = checkpointer.latest_step()
    if latest is not None:
        counts_array = np.asarray(checkpointer.restore({"counts": counts_array})["counts"])
        logging.info("Resumed from checkpoint %d (%d codewords simulated).", latest, counts_array[:, 2].sum())
    counts = [simulation.ErrorCounts.from_array(row) for row in counts_array]

    def finished(point: _Point) -> bool:
        return simulation.should_stop(counts[point.index], config.target_block_errors, config.max_codewords)

    # Points finished before the last checkpoint keep their metrics lines; later lines are written again.
    first_open = next((p.index for p in points if not finished(p)), len(points))
    writer = metrics_lib.MetricWriter(workdir, resume_from_step=first_open - 1)
    records = []
    simulators = {}
    step = int(counts_array[:, 3].sum())  # Batches simulated so far over all points: the checkpoint step.
    last_save = {"step": latest, "time": time.monotonic()}

    def save_counts():
        if last_save["step"] != step:
            checkpointer.save(step, {"counts": np.stack([c.as_array() for c in counts])})
        last_save.update(step=step, time=time.monotonic())

    for point in points:
        name = point.decoder_name
        spec = parse_decoder_name(name, config.f_function)
        code = codes[crc_name(config)] if spec.crc_aided else codes[None]
        point_counts = counts[point.index]

        if not finished(point):
            # Eb/N0 is a traced argument, so each decoder compiles once for all its points.
            if name not in simulators:
                simulators[name] = simulation.make_batch_simulator(code, spec, config.batch_size, sharding)
            simulate = simulators[name]
            started = time.monotonic()
            start_codewords = point_counts.codewords
            bar = progress_lib.progress(config.max_codewords, desc=f"{name} @ {point.ebno_db:.2f} dB",
                                        unit="cw", initial=point_counts.codewords)
            with bar:
                while not finished(point):
                    key = simulation.batch_key(root_key, point.ebno_index, point_counts.batches)
                    block_errors, bit_errors = jax.device_get(simulate(key, point.ebno_db))
                    point_counts.add(block_errors, bit_errors, config.batch_size)
                    step += 1
                    bar.update(config.batch_size)
                    bar.set_postfix(block_errors=point_counts.block_errors, refresh=False)
                    if time.monotonic() - last_save["time"] > config.checkpoint_every_s:
                        save_counts()

            elapsed = time.monotonic() - started
            record = _record(point, code, spec, point_counts)
            writer.write_scalars(point.index, {
                "bler": record["bler"],
                "ber": record["ber"],
                "ebno_db": point.ebno_db,
                "codewords": point_counts.codewords,
                "codewords_per_s": (point_counts.codewords - start_codewords) / max(elapsed, 1e-9),
            })
            # Metrics first, then the checkpoint: a kill in between only repeats this point's metrics line.
            save_counts()
            logging.info("%s at %.2f dB: BLER %.3e (%d/%d), BER %.3e", name, point.ebno_db, record["bler"],
                         point_counts.block_errors, point_counts.codewords, record["ber"])
        records.append(_record(point, code, spec, point_counts))

    writer.close()
    checkpointer.close()
    results = {
        "experiment": config.experiment,
        "code": {"construction": config.code.construction, "n": config.code.length, "k": config.code.num_info},
        "f_function": config.f_function,
        "points": records,
    }
    metrics_lib.write_results(workdir, results)
    _write_summary(workdir, config, records)
    return results
