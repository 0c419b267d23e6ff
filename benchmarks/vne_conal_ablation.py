"""The CONAL ablation table on WX100 (rate 0.14): each component switched off in turn.

  python benchmarks/vne_conal_ablation.py --size=cpu --workdir=runs/vne_conal_bench --output=docs/conal.md

Trains and evaluates `configs/vne/conal.py:<size>[,ablation]` for the full method, wo_ha, wo_pc,
wo_ha+wo_pc, wo_reach, wo_arb and the plain PPO-GAT baseline, each resumable in its own workdir, and
evaluates each on WX100 only (the table's topology). --epochs sets the training length of every run
alike. The table goes into the section "Ablations (<size>[, N epochs])" of --output.
"""

import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(__file__))
import vne_conal_common as common  # noqa: E402

_SIZE = flags.DEFINE_enum("size", "", ["", "cpu", "quick"], "Config size: '' (default, accelerator), cpu or quick.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/vne_conal_bench", "Root of the run directories.")
_OUTPUT = flags.DEFINE_string("output", "docs/conal.md", "Markdown file whose section is replaced.")
_EPOCHS = flags.DEFINE_integer(
    "epochs", 0, "Training epochs of every run, each train.requests_per_epoch requests over all streams; "
    "0 keeps the size's own.", lower_bound=0)
ABLATIONS = ("", "wo_ha", "wo_pc", "wo_ha,wo_pc", "wo_reach", "wo_arb", "ppo_gat")


def main(argv):
    del argv
    size = _SIZE.value
    overrides, suffix, epochs_note = common.epoch_settings(_EPOCHS.value)
    overrides["eval.topologies"] = ("wx100",)  # The table reads WX100 only.
    lines = ["| variant | acceptance (%) | LRC | LAR | violations | requests trained |",
             "|---|---:|---:|---:|---:|---:|"]
    grc = None
    for ablation in ABLATIONS:
        variant = ",".join(filter(None, [size, ablation]))
        name = f"{size or 'default'}{suffix}_{ablation.replace(',', '_') or 'conal'}_wx100"
        results = common.run_variant(variant, os.path.join(_WORKDIR.value, name), overrides)
        record = next(r for r in results["records"] if r["topology"] == "wx100" and r["solver"] == results["variant"])
        grc = grc or next(r for r in results["records"] if r["topology"] == "wx100" and r["solver"] == "grc_rank")
        lines.append(f"| {results['variant']} | {common.cell(record, 'acceptance_rate', 100)} | "
                     f"{common.cell(record, 'lrc', digits=3)} | {common.cell(record, 'lar', digits=0)} | "
                     f"{record['violations']} | {results['training']['requests']} |")
    lines.append(f"| grc_rank | {common.cell(grc, 'acceptance_rate', 100)} | {common.cell(grc, 'lrc', digits=3)} | "
                 f"{common.cell(grc, 'lar', digits=0)} | 0 | - |")
    body = "\n".join([
        common.header(f"python benchmarks/vne_conal_ablation.py --size={size} --epochs={_EPOCHS.value} "
                      f"--workdir={_WORKDIR.value} --output={_OUTPUT.value}"),
        "WX100 at rate 0.14, mean ± standard error over the test traces. The variants:",
        "",
        "- wo_ha: no mapping or imaginary edges;",
        "- wo_pc: no path-bandwidth contrast;",
        "- wo_reach: cumulative positive cost instead of the reachability return;",
        "- wo_arb: multiplier loss without the greedy copy's flags and budgets;",
        "- ppo_gat: plain PPO with the same encoder, strict training and no cost.",
        "",
        *lines,
    ])
    title = f"Ablations ({size or 'default'}{epochs_note})"
    common.write_section(_OUTPUT.value, title, body)
    print(body)


if __name__ == "__main__":
    app.run(main)
