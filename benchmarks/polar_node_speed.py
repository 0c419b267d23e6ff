"""Wall time of node-based list decoding (Fast-SSCL, SO-FSCL) against bit-by-bit SCL and SO-SCL in jaxlab.

Run:
  python benchmarks/polar_node_speed.py [--output=docs/polar_node_speed.md]

Decodes the same LLR batch of the 5G (1024, 512) code at Eb/N0 = 2 dB with list size 8, interleaving the
four decoders over several repetitions after one warm-up call each (compile time excluded), and prints the
median codewords per second and the ratios. About a minute on 2 CPU cores.
"""

import datetime
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from jaxlab.core import machine
from jaxlab.polar import channel, codes, decoders, encoding

_BATCH = flags.DEFINE_integer("batch", 256, "Codewords per decoder call.")
_REPEATS = flags.DEFINE_integer("repeats", 7, "Timed calls per decoder.")
_OUTPUT = flags.DEFINE_string("output", None, "Markdown file to write the table to (overwritten).")


def main(argv):
    del argv
    code = codes.polar_code_5g(1024, 512)
    info = jnp.asarray(np.random.default_rng(0).integers(0, 2, (_BATCH.value, code.num_info), dtype=np.uint8))
    llr = channel.awgn_llr(jax.random.key(1), encoding.encode(code, info), channel.ebno_db_to_sigma(2.0, code.rate))
    specs = {
        "SCL-8": decoders.DecoderSpec("scl", 8),
        "Fast-SSCL-8": decoders.DecoderSpec("scl", 8, node_based=True),
        "SO-SCL-8": decoders.DecoderSpec("scl", 8, soft_output=True),
        "SO-FSCL-8": decoders.DecoderSpec("scl", 8, soft_output=True, node_based=True),
    }
    decode = {name: decoders.make_decoder(code, spec) for name, spec in specs.items()}
    for function in decode.values():
        jax.block_until_ready(function(llr))

    seconds = {name: [] for name in specs}
    for _ in range(_REPEATS.value):
        for name, function in decode.items():
            started = time.perf_counter()
            jax.block_until_ready(function(llr))
            seconds[name].append(time.perf_counter() - started)
    rate = {name: _BATCH.value / float(np.median(values)) for name, values in seconds.items()}

    lines = ["| decoder | codewords per second (median) |", "| --- | --- |"]
    lines += [f"| {name} | {value:,.0f} |" for name, value in rate.items()]
    ratios = (f"Fast-SSCL-8 / SCL-8: {rate['Fast-SSCL-8'] / rate['SCL-8']:.2f}; "
              f"SO-FSCL-8 / SO-SCL-8: {rate['SO-FSCL-8'] / rate['SO-SCL-8']:.2f}; "
              f"SO-SCL-8 / SCL-8: {rate['SO-SCL-8'] / rate['SCL-8']:.2f} (throughput ratios)")
    table = "\n".join(lines)
    print(table)
    print(ratios)

    if _OUTPUT.value:
        with open(_OUTPUT.value, "w") as file:
            file.write(
                "# Polar list decoders: node-based against bit-by-bit, wall time in jaxlab\n\n"
                f"5G (1024, 512) code, Eb/N0 = 2 dB, list size 8, batch {_BATCH.value}, exact metric, box-plus; "
                f"median of {_REPEATS.value} interleaved calls after warm-up.\n\n"
                f"Command: `python benchmarks/polar_node_speed.py --output={_OUTPUT.value}`  \n"
                f"Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d}  \n"
                f"Machine: {machine.describe_machine()}\n\n"
                f"{table}\n\n{ratios}.\n")


if __name__ == "__main__":
    app.run(main)
