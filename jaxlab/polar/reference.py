"""Agreement of jaxlab's BLER with points measured by an independent decoder implementation.

`data/sionna_reference_bler.json` contains BLER points of the 5G (1024, 512) code measured with Sionna 2.2's
PolarSCDecoder and PolarSCLDecoder (its header states the construction, channel and error conventions,
which match jaxlab's). Each point is re-simulated here with the same number of codewords and compared
through 99% Clopper-Pearson intervals.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax

from jaxlab.polar import codes as codes_lib
from jaxlab.polar import decoders
from jaxlab.polar import simulation

SIONNA_REFERENCE_PATH = Path(__file__).parent / "data" / "sionna_reference_bler.json"


def load_reference_points(path: str | Path = SIONNA_REFERENCE_PATH) -> list[dict[str, Any]]:
    """Read the reference points; raise ValueError naming the first point with a missing or bad field."""
    with open(path) as file:
        points = json.load(file)["points"]
    for index, point in enumerate(points):
        for field in ("n", "k", "decoder", "L", "crc", "ebno", "errors", "codewords"):
            if field not in point:
                raise ValueError(f"invalid reference point {index} in {path}: missing field {field!r}")
        if point["decoder"] not in ("SC", "SCL"):
            raise ValueError(f"invalid reference point {index} in {path}: decoder {point['decoder']!r}; "
                             "expected 'SC' or 'SCL'")
    return points


def compare_with_reference(points: list[dict[str, Any]], batch_size: int = 1000, seed: int = 0,
                           ) -> list[dict[str, Any]]:
    """Re-simulate every reference point with jaxlab and return one comparison row per point."""
    key = jax.random.key(seed)
    simulators = {}
    rows = []
    for index, point in enumerate(points):
        if point["decoder"] == "SC":
            spec = decoders.DecoderSpec("sc", 1)
        else:
            spec = decoders.DecoderSpec("scl", point["L"], crc_aided=point["crc"] is not None)
        code_key = (point["n"], point["k"], point["crc"], spec)
        if code_key not in simulators:
            code = codes_lib.polar_code_5g(point["n"], point["k"], crc=point["crc"])
            simulators[code_key] = simulation.make_batch_simulator(code, spec, batch_size)
        counts = simulation.simulate_codewords(simulators[code_key], point["ebno"], point["codewords"],
                                               batch_size, jax.random.fold_in(key, index))
        rows.append({
            "decoder": spec.name + (f" ({point['crc']})" if point["crc"] else ""),
            "ebno_db": point["ebno"],
            "reference_bler": point["errors"] / point["codewords"],
            "reference_ci99": simulation.clopper_pearson(point["errors"], point["codewords"]),
            "reference_errors": point["errors"],
            "reference_codewords": point["codewords"],
            "jaxlab_bler": counts.block_errors / counts.codewords,
            "jaxlab_ci99": simulation.clopper_pearson(counts.block_errors, counts.codewords),
            "jaxlab_errors": counts.block_errors,
            "jaxlab_codewords": counts.codewords,
            "agree": simulation.intervals_agree(point["errors"], point["codewords"], counts.block_errors,
                                                counts.codewords),
        })
    return rows
