"""Compare jaxlab's BLER with Sionna-measured reference points of the 5G (1024, 512) code.

Run:
  python benchmarks/polar_reference_bler.py [--output=docs/polar_reference_bler.md]

Re-simulates each reference point with the same number of codewords and prints both BLERs with their 99%
Clopper-Pearson intervals; takes about a minute on 2 CPU cores. The test suite runs the same comparison.
"""

import datetime
import sys

from absl import app, flags

from jaxlab.core import machine
from jaxlab.polar import reference

_OUTPUT = flags.DEFINE_string("output", None, "Markdown file to write the table to (overwritten).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the jaxlab simulation.")


def _format_interval(interval):
    return f"[{interval[0]:.2e}, {interval[1]:.2e}]"


def main(argv):
    del argv
    rows = reference.compare_with_reference(reference.load_reference_points(), seed=_SEED.value)
    lines = [
        "| decoder | Eb/N0 [dB] | Sionna BLER (errors/codewords) | 99% interval | jaxlab BLER (errors/codewords) "
        "| 99% interval | agree |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {row['decoder']} | {row['ebno_db']} | {row['reference_bler']:.2e} "
            f"({row['reference_errors']}/{row['reference_codewords']}) | {_format_interval(row['reference_ci99'])} "
            f"| {row['jaxlab_bler']:.2e} ({row['jaxlab_errors']}/{row['jaxlab_codewords']}) "
            f"| {_format_interval(row['jaxlab_ci99'])} | {'yes' if row['agree'] else 'NO'} |")
    table = "\n".join(lines)
    print(table)

    if _OUTPUT.value:
        header = (
            "# Polar BLER: jaxlab against Sionna reference points\n\n"
            "5G (1024, 512) code, BPSK over AWGN, exact box-plus decoders. Reference: Sionna 2.2 PolarSCDecoder and "
            "PolarSCLDecoder (data in `jaxlab/polar/data/sionna_reference_bler.json`). A point agrees when the two "
            "99% Clopper-Pearson intervals overlap.\n\n"
            f"Command: `python benchmarks/polar_reference_bler.py --output={_OUTPUT.value}`  \n"
            f"Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d}  \n"
            f"Machine: {machine.describe_machine()}\n\n")
        with open(_OUTPUT.value, "w") as file:
            file.write(header + table + "\n")
    if not all(row["agree"] for row in rows):
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
