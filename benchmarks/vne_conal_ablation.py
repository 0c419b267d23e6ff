"""The CONAL ablation table on WX100 (rate 0.14): each component switched off in turn.

  python benchmarks/vne_conal_ablation.py --size=cpu --workdir=runs/vne_conal_bench --output=docs/conal.md

Trains and evaluates `configs/vne/conal.py:<size>[,ablation]` for the full method, wo_ha, wo_pc,
wo_ha+wo_pc, wo_reach and wo_arb, each resumable in its own workdir. The full run is shared with
vne_conal_main.py. The table goes into the section "Ablations (<size>)" of --output.
"""

import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(__file__))
import vne_conal_common as common  # noqa: E402

_SIZE = flags.DEFINE_enum("size", "", ["", "cpu", "quick"], "Config size: '' (default, accelerator), cpu or quick.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/vne_conal_bench", "Root of the run directories.")
_OUTPUT = flags.DEFINE_string("output", "docs/conal.md", "Markdown file whose section is replaced.")
ABLATIONS = ("", "wo_ha", "wo_pc", "wo_ha,wo_pc", "wo_reach", "wo_arb")


def main(argv):
    del argv
    size = _SIZE.value
    lines = ["| variant | acceptance (%) | LRC | LAR | violations |", "|---|---:|---:|---:|---:|"]
    grc = None
    for ablation in ABLATIONS:
        variant = ",".join(filter(None, [size, ablation]))
        name = f"{size or 'default'}_{ablation.replace(',', '_')}" if ablation else f"{size or 'default'}_conal"
        results = common.run_variant(variant, os.path.join(_WORKDIR.value, name))
        record = next(r for r in results["records"] if r["topology"] == "wx100" and r["solver"] == results["variant"])
        grc = grc or next(r for r in results["records"] if r["topology"] == "wx100" and r["solver"] == "grc_rank")
        lines.append(f"| {results['variant']} | {common.cell(record, 'acceptance_rate', 100)} | "
                     f"{common.cell(record, 'lrc', digits=3)} | {common.cell(record, 'lar', digits=0)} | "
                     f"{record['violations']} |")
    lines.append(f"| grc_rank | {common.cell(grc, 'acceptance_rate', 100)} | {common.cell(grc, 'lrc', digits=3)} | "
                 f"{common.cell(grc, 'lar', digits=0)} | 0 |")
    body = "\n".join([
        common.header(f"python benchmarks/vne_conal_ablation.py --size={size} --workdir={_WORKDIR.value} "
                      f"--output={_OUTPUT.value}"),
        "WX100 at rate 0.14, mean ± standard error over the test traces. wo_ha: no mapping or imaginary edges; "
        "wo_pc: no path-bandwidth contrast; wo_reach: cumulative positive cost instead of the reachability "
        "return; wo_arb: multiplier loss without the greedy copy's flags and budgets.",
        "",
        *lines,
    ])
    common.write_section(_OUTPUT.value, f"Ablations ({size or 'default'})", body)
    print(body)


if __name__ == "__main__":
    app.run(main)
