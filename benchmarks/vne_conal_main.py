"""CONAL against PPO-GAT, GRC and NRM on WX100 (rate 0.14), and the WX100 model on GEANT and BRAIN.

  python benchmarks/vne_conal_main.py --size=cpu --workdir=runs/vne_conal_bench --output=docs/conal.md

Trains `configs/vne/conal.py:<size>` and `<size>,ppo_gat` (each resumable in its own workdir below
--workdir) and evaluates both strictly on the test traces of every topology. --epochs sets the training
length of both. One table goes into the section "Results (<size>[, N epochs])" of --output, followed by
the acceptance checks. CONAL should accept at least 10 points more than GRC on WX100, never
break a capacity at inference, and accept at least as much as PPO-GAT.
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
    "epochs", 0, "Training epochs of both methods, each train.requests_per_epoch requests over all streams; "
    "0 keeps the size's own.", lower_bound=0)
_METHODS = flags.DEFINE_multi_enum("methods", ["conal", "ppo_gat"], ["conal", "ppo_gat"],
                                   "Methods to train and compare; the PPO-GAT check needs both.")


def main(argv):
    del argv
    size = _SIZE.value
    overrides, suffix, epochs_note = common.epoch_settings(_EPOCHS.value)
    runs = {}
    for method in _METHODS.value:
        variant = size if method == "conal" else ",".join(filter(None, [size, "ppo_gat"]))
        workdir = os.path.join(_WORKDIR.value, f"{size or 'default'}{suffix}_{method}")
        runs[method] = common.run_variant(variant, workdir, overrides)

    conal, ppo = runs["conal"], runs.get("ppo_gat")
    rows = list(conal["records"])
    if ppo:
        rows += [record for record in ppo["records"] if record["solver"] == "ppo_gat"]
    rows.sort(key=lambda r: (r["topology"] != "wx100", r["topology"], r["solver"]))
    lines = ["| topology | rate | solver | acceptance (%) | LRC | LAR | R2C | ms per request | violations |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['topology']} | {r['arrival_rate']:g} | {r['solver']} | {common.cell(r, 'acceptance_rate', 100)}"
                     f" | {common.cell(r, 'lrc', digits=3)} | {common.cell(r, 'lar', digits=0)}"
                     f" | {common.cell(r, 'r2c', digits=3)} | {r['solve_time_ms']:.2f} | {r['violations']} |")

    def find(records, topology, solver):
        return next(r for r in records if r["topology"] == topology and r["solver"] == solver)

    conal_wx = find(conal["records"], "wx100", conal["variant"])
    grc_wx = find(conal["records"], "wx100", "grc_rank")
    margin = 100 * (conal_wx["acceptance_rate"] - grc_wx["acceptance_rate"])
    violations = sum(r["violations"] for r in conal["records"])
    checks = [
        f"- CONAL - GRC acceptance on WX100: {margin:+.1f} points (target >= +10): {'met' if margin >= 10 else 'NOT met'}",
        f"- Capacity violations of CONAL at inference over all traces: {violations} (target 0)",
    ]
    if ppo:
        ppo_wx = find(ppo["records"], "wx100", "ppo_gat")
        gap = 100 * (conal_wx["acceptance_rate"] - ppo_wx["acceptance_rate"])
        checks.append(f"- CONAL - PPO-GAT acceptance on WX100: {gap:+.1f} points (target >= 0): "
                      f"{'met' if gap >= 0 else 'NOT met'}")
    else:
        checks.append("- PPO-GAT: not run (--methods=conal)")
    training = conal["training"]
    body = "\n".join([
        common.header(f"python benchmarks/vne_conal_main.py --size={size} --epochs={_EPOCHS.value} "
                      f"--workdir={_WORKDIR.value} "
                      f"--output={_OUTPUT.value}" + "".join(f" --methods={m}" for m in _METHODS.value)),
        f"Training (CONAL): {training['updates']} updates, {training['requests']} requests, {training['env_steps']} "
        f"environment steps on {conal['train_topology']} at rate {conal['train_arrival_rate']:g}. Mean ± standard "
        f"error over {conal_wx['traces']} test traces of each topology; ms per request is the wall time of one "
        "trace's simulation divided by its requests (compilation excluded).",
        "",
        *lines,
        "",
        *checks,
    ])
    title = f"Results ({size or 'default'}{epochs_note})"
    common.write_section(_OUTPUT.value, title, body)
    print(body)


if __name__ == "__main__":
    app.run(main)
