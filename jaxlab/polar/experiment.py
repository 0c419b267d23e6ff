"""The `polar_awgn_bler` experiment: BLER/BER curves of polar decoders over BPSK-AWGN.

Outputs in the workdir: `results.json` (one record per decoder and Eb/N0 point), `results.md`, `bler.png`,
`metrics.jsonl` and TensorBoard events (one entry per finished point), and `checkpoints/` holding the error
counts, so that a run stopped at any moment resumes where it was and ends with the same `results.json`.
"""

from __future__ import annotations

import os
import re
from typing import Any

import ml_collections

from jaxlab.core import config as config_lib
from jaxlab.core import distributed
from jaxlab.core import metrics as metrics_lib
from jaxlab.polar import codes as codes_lib
from jaxlab.polar import crc as crc_lib
from jaxlab.polar import decoders
from jaxlab.polar import simulation
from jaxlab.polar import sweep

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


def _record(point: sweep.SweepPoint, code: codes_lib.PolarCode, spec: decoders.DecoderSpec,
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
    sharding = distributed.batch_sharding(distributed.make_mesh())
    codes = {None: build_code(config, None)}
    if any(parse_decoder_name(name).crc_aided for name in config.decoders):
        codes[crc_name(config)] = build_code(config, crc_name(config))

    def code_and_spec(name: str) -> tuple[codes_lib.PolarCode, decoders.DecoderSpec]:
        spec = parse_decoder_name(name, config.f_function)
        return (codes[crc_name(config)] if spec.crc_aided else codes[None]), spec

    def make_simulator(name: str):
        return simulation.make_batch_simulator(*code_and_spec(name), config.batch_size, sharding)

    def make_record(point: sweep.SweepPoint, counts: simulation.ErrorCounts, extras) -> dict[str, Any]:
        del extras  # This experiment counts nothing beyond errors.
        return _record(point, *code_and_spec(point.decoder_name), counts)

    records = sweep.run_sweep(config, workdir, sweep.sweep_points(config.decoders, config.ebno_db),
                              make_simulator, make_record)
    results = {
        "experiment": config.experiment,
        "code": {"construction": config.code.construction, "n": config.code.length, "k": config.code.num_info},
        "f_function": config.f_function,
        "points": records,
    }
    metrics_lib.write_results(workdir, results)
    _write_summary(workdir, config, records)
    return results
