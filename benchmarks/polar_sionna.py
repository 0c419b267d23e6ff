"""Compare the decoding speed of jaxlab's polar SC, SCL-8 and Fast-SSCL-8 decoders with Sionna's, side by side.

Both libraries decode the same BPSK-AWGN LLR batches of the 5G (1024, 512) polar code without CRC, in
one process on the same CPU. Each repetition draws fresh LLRs, and the two implementations decode them
one after the other, alternating which goes first, so machine noise hits both. Compilation and warm-up
are excluded, and the median over repetitions is reported, together with both implementations' block
errors and the fraction of codewords on which their decisions agree.

Sionna and torch are not jaxlab dependencies; install them in a separate venv (see docs/benchmarks.md):

  python benchmarks/polar_sionna.py
  python benchmarks/polar_sionna.py --output=docs/benchmarks.md   # also record the results there
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

from absl import app
from absl import flags
import jax
import numpy as np

from jaxlab.polar import channel
from jaxlab.polar import codes
from jaxlab.polar import decoders
from jaxlab.polar import encoding

SECTION_TITLE = "Polar SC/SCL vs Sionna"
CODE_LENGTH = 1024
NUM_INFO = 512

_OUTPUT = flags.DEFINE_string(
    "output", None, f"Markdown file in which to add or replace the '{SECTION_TITLE}' section; print only if unset."
)
_EBNO_DB = flags.DEFINE_float("ebno_db", 2.0, "Eb/N0 of the BPSK-AWGN channel, in dB.")
_LIST_SIZE = flags.DEFINE_integer("list_size", 8, "List size L of both SCL decoders (a power of two for Sionna).")
_REPEATS = flags.DEFINE_integer("repeats", 7, "Timed repetitions per decoder; each decodes fresh LLRs.")
_SC_CODEWORDS = flags.DEFINE_integer("sc_codewords_per_repeat", 16384, "Codewords decoded per SC repetition.")
_SCL_CODEWORDS = flags.DEFINE_integer("scl_codewords_per_repeat", 4096, "Codewords decoded per SCL repetition.")
_JAXLAB_BATCH = flags.DEFINE_integer("jaxlab_batch_size", 256, "Codewords per jaxlab decoder call.")
_SIONNA_SC_BATCHES = flags.DEFINE_list(
    "sionna_sc_batch_sizes", ["1024", "4096"], "Candidate codewords per Sionna SC call; the fastest is timed."
)
_SIONNA_SCL_BATCHES = flags.DEFINE_list(
    "sionna_scl_batch_sizes", ["128", "512"], "Candidate codewords per Sionna SCL call; the fastest is timed."
)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the payloads and the channel noise.")

PEER_SETUP = """\
  python3 -m venv /tmp/sionnavenv
  /tmp/sionnavenv/bin/pip install torch==2.13.0   # the CPU build, as docs/benchmarks.md explains
  /tmp/sionnavenv/bin/pip install sionna-no-rt
  /tmp/sionnavenv/bin/pip install -e .
  /tmp/sionnavenv/bin/python benchmarks/polar_sionna.py"""

# A decoder under test: LLRs [M, N] (jaxlab's sign, λ = ln P(0)/P(1)) -> information bits [M, K] uint8.
DecodeFn = Callable[[np.ndarray], np.ndarray]


def import_peers():
    """Import torch and Sionna's polar decoders, or exit with the commands that install them."""
    try:
        import torch
        from sionna.phy.fec.polar import PolarSCDecoder, PolarSCLDecoder
    except ImportError as error:
        sys.exit(
            f"error: this benchmark needs torch and sionna, which failed to import in {sys.executable} "
            f"({error}).\nInstall them with jaxlab in a separate venv, then rerun with its python:\n{PEER_SETUP}"
        )
    return torch, PolarSCDecoder, PolarSCLDecoder


def parse_batch_sizes(values: list[str], flag_name: str, codewords_per_repeat: int) -> list[int]:
    sizes = []
    for value in values:
        size = int(value)
        if size < 1 or codewords_per_repeat % size:
            raise app.UsageError(
                f"invalid --{flag_name} entry {size}; expected a positive divisor of {codewords_per_repeat}, "
                "the codewords per repetition"
            )
        sizes.append(size)
    return sizes


def draw_llrs(code: codes.PolarCode, key: jax.Array, count: int, ebno_db: float) -> tuple[np.ndarray, np.ndarray]:
    """Draw `count` random payloads and return them [count, K] with their channel LLRs [count, N] float32."""
    key_payload, key_noise = jax.random.split(key)
    info_bits = jax.random.bernoulli(key_payload, 0.5, (count, code.num_info)).astype(np.uint8)
    codeword = encoding.encode(code, info_bits)
    llr = channel.awgn_llr(key_noise, codeword, channel.ebno_db_to_sigma(ebno_db, code.rate))
    return np.asarray(info_bits), np.asarray(llr)


def make_jaxlab_decode(code: codes.PolarCode, spec: decoders.DecoderSpec, batch_size: int) -> DecodeFn:
    decode = decoders.make_decoder(code, spec)

    def run(llr: np.ndarray) -> np.ndarray:
        bits = [np.asarray(decode(llr[start : start + batch_size]).info_bits) for start in range(0, len(llr), batch_size)]
        return np.concatenate(bits)

    return run


def make_sionna_decode(torch, decoder, batch_size: int) -> DecodeFn:
    def run(llr: np.ndarray) -> np.ndarray:
        # Sionna's decoders take logits ln P(1)/P(0), the negative of jaxlab's LLRs.
        logits = torch.from_numpy(np.negative(llr))
        bits = []
        with torch.inference_mode():
            for start in range(0, len(llr), batch_size):
                bits.append(decoder(logits[start : start + batch_size]).numpy().astype(np.uint8))
        return np.concatenate(bits)

    return run


def time_decode(decode: DecodeFn, llr: np.ndarray) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    bits = decode(llr)
    return time.perf_counter() - start, bits


def pick_sionna_batch_size(torch, decoder, sizes: list[int], llr: np.ndarray) -> tuple[int, dict[int, float]]:
    """Warm Sionna up at each candidate batch size, time one pass over `llr` with each, return the fastest."""
    rates = {}
    for size in sizes:
        decode = make_sionna_decode(torch, decoder, size)
        decode(llr[:size])
        seconds, _ = time_decode(decode, llr)
        rates[size] = len(llr) / seconds
    return max(rates, key=rates.get), rates


def compare(
    name: str, key: jax.Array, code, jaxlab_decode: DecodeFn, sionna_decode: DecodeFn, codewords_per_repeat: int
) -> dict:
    """Time both decoders over `--repeats` fresh LLR sets, alternating their order, and count their errors."""
    rates = {"jaxlab": [], "sionna": []}
    errors = {"jaxlab": 0, "sionna": 0}
    agree = 0
    decode_fns = {"jaxlab": jaxlab_decode, "sionna": sionna_decode}
    for repeat in range(_REPEATS.value):
        info_bits, llr = draw_llrs(code, jax.random.fold_in(key, repeat + 1), codewords_per_repeat, _EBNO_DB.value)
        order = ["jaxlab", "sionna"] if repeat % 2 == 0 else ["sionna", "jaxlab"]
        decided = {}
        for library in order:
            seconds, decided[library] = time_decode(decode_fns[library], llr)
            rates[library].append(codewords_per_repeat / seconds)
            errors[library] += int(np.sum(np.any(decided[library] != info_bits, axis=1)))
        agree += int(np.sum(np.all(decided["jaxlab"] == decided["sionna"], axis=1)))
        print(
            f"{name} repeat {repeat + 1}/{_REPEATS.value}: jaxlab {rates['jaxlab'][-1]:.0f} cw/s, "
            f"sionna {rates['sionna'][-1]:.0f} cw/s",
            flush=True,
        )
    return {
        "name": name,
        "rates": rates,
        "errors": errors,
        "agree": agree,
        "codewords": codewords_per_repeat * _REPEATS.value,
    }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def format_rate(rates: list[float]) -> str:
    return f"{statistics.median(rates):,.0f} ({min(rates):,.0f}–{max(rates):,.0f})"


def format_report(results: list[dict], context: dict) -> str:
    lines = [
        f"## {SECTION_TITLE}",
        "",
        f"Command: `{context['command']}`",
        "",
        f"Date: {context['date']}",
        "",
        f"Machine: {context['cpu']}, {context['cores']} cores; torch.get_num_threads() = {context['torch_threads']}, "
        f"JAX on {context['jax_devices']}. Python {platform.python_version()}, jax {version('jax')}, "
        f"jaxlib {version('jaxlib')}, torch {version('torch')}, sionna {version('sionna-no-rt')}. "
        f"Load average (1 min) {context['load_before']:.2f} before and {context['load_after']:.2f} after the run.",
        "",
        f"Setup: 5G ({CODE_LENGTH}, {NUM_INFO}) polar code without CRC, BPSK-AWGN at Eb/N0 = {_EBNO_DB.value} dB, "
        f"boxplus f-function. Both decode the same LLRs from jaxlab.polar.channel (Sionna gets their negatives as "
        f"logits). jaxlab: `make_decoder`, jitted, batch {_JAXLAB_BATCH.value}. Sionna: `PolarSCDecoder` and "
        f"`PolarSCLDecoder(list_size={_LIST_SIZE.value})` with default arguments, run eagerly under "
        f"`torch.inference_mode()`, at the fastest of the candidate batch sizes "
        f"({context['sionna_probe']}). {_REPEATS.value} interleaved repetitions with fresh LLRs each; "
        "rates are the median codewords per second, with the minimum and maximum in brackets.",
        "",
        "| Decoder | jaxlab batch | jaxlab cw/s | Sionna batch | Sionna cw/s | jaxlab / Sionna |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        ratio = statistics.median(result["rates"]["jaxlab"]) / statistics.median(result["rates"]["sionna"])
        lines.append(
            f"| {result['name']} | {_JAXLAB_BATCH.value} | {format_rate(result['rates']['jaxlab'])} | "
            f"{result['sionna_batch']} | {format_rate(result['rates']['sionna'])} | {ratio:.1f}× |"
        )
    lines += [
        "",
        "| Decoder | Codewords | jaxlab block errors (BLER) | Sionna block errors (BLER) | Same decisions |",
        "|---|---:|---:|---:|---:|",
    ]
    for result in results:
        count = result["codewords"]
        jaxlab_errors, sionna_errors = result["errors"]["jaxlab"], result["errors"]["sionna"]
        lines.append(
            f"| {result['name']} | {count} | {jaxlab_errors} ({jaxlab_errors / count:.2e}) | "
            f"{sionna_errors} ({sionna_errors / count:.2e}) | {result['agree'] / count:.4%} |"
        )
    return "\n".join(lines) + "\n"


def write_section(path: Path, section: str) -> None:
    """Replace the section titled SECTION_TITLE in the Markdown file `path`, or append it."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    lines = text.splitlines(keepends=True)
    heading = f"## {SECTION_TITLE}"
    starts = [i for i, line in enumerate(lines) if line.rstrip() == heading]
    if starts:
        start = starts[0]
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        following = "\n" if end < len(lines) else ""
        lines[start:end] = [section + following]
    else:
        lines.append(("\n" if text.endswith("\n") else "\n\n") + section)
    path.write_text("".join(lines))


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    torch, PolarSCDecoder, PolarSCLDecoder = import_peers()
    sc_codewords, scl_codewords = _SC_CODEWORDS.value, _SCL_CODEWORDS.value
    sc_sizes = parse_batch_sizes(_SIONNA_SC_BATCHES.value, "sionna_sc_batch_sizes", sc_codewords)
    scl_sizes = parse_batch_sizes(_SIONNA_SCL_BATCHES.value, "sionna_scl_batch_sizes", scl_codewords)
    for codewords in (sc_codewords, scl_codewords):
        if codewords % _JAXLAB_BATCH.value:
            raise app.UsageError(
                f"invalid --jaxlab_batch_size {_JAXLAB_BATCH.value}; expected a divisor of the codewords per "
                f"repetition ({sc_codewords} for SC, {scl_codewords} for SCL)"
            )

    # Both libraries use every core available to this process: torch as set here, XLA's CPU backend by default.
    cores = len(os.sched_getaffinity(0))
    torch.set_num_threads(cores)
    load_before = os.getloadavg()[0]

    code = codes.polar_code_5g(CODE_LENGTH, NUM_INFO)
    frozen_positions = np.flatnonzero(code.frozen).astype(np.int64)
    setups = [
        ("SC", decoders.DecoderSpec("sc", 1), PolarSCDecoder(frozen_positions, CODE_LENGTH), sc_sizes, sc_codewords),
        (
            f"SCL-{_LIST_SIZE.value}",
            decoders.DecoderSpec("scl", _LIST_SIZE.value),
            PolarSCLDecoder(frozen_positions, CODE_LENGTH, list_size=_LIST_SIZE.value),
            scl_sizes,
            scl_codewords,
        ),
        (
            # jaxlab's node-based list decoder against the same Sionna SCL decoder.
            f"Fast-SSCL-{_LIST_SIZE.value} vs SCL-{_LIST_SIZE.value}",
            decoders.DecoderSpec("scl", _LIST_SIZE.value, node_based=True),
            PolarSCLDecoder(frozen_positions, CODE_LENGTH, list_size=_LIST_SIZE.value),
            scl_sizes,
            scl_codewords,
        ),
    ]

    results, probes = [], []
    for index, (name, spec, sionna_decoder, sionna_sizes, codewords) in enumerate(setups):
        # Key stream 0 of each decoder feeds the warm-up and the batch-size probe, and streams 1.. the repetitions.
        key = jax.random.fold_in(jax.random.PRNGKey(_SEED.value), index)
        _, warmup_llr = draw_llrs(code, jax.random.fold_in(key, 0), codewords, _EBNO_DB.value)
        jaxlab_decode = make_jaxlab_decode(code, spec, _JAXLAB_BATCH.value)
        jaxlab_decode(warmup_llr[: _JAXLAB_BATCH.value])
        sionna_batch, sionna_rates = pick_sionna_batch_size(torch, sionna_decoder, sionna_sizes, warmup_llr)
        print(f"{name}: Sionna cw/s by batch size {{{', '.join(f'{b}: {r:.0f}' for b, r in sionna_rates.items())}}}")
        probes.append(f"{name}: " + ", ".join(f"{size} → {rate:,.0f} cw/s" for size, rate in sionna_rates.items()))

        result = compare(name, key, code, jaxlab_decode, make_sionna_decode(torch, sionna_decoder, sionna_batch), codewords)
        result["sionna_batch"] = sionna_batch
        results.append(result)

    context = {
        "command": shlex.join(["python", *sys.argv]),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%a %b %d %H:%M:%S UTC %Y"),
        "cpu": cpu_model(),
        "cores": cores,
        "torch_threads": torch.get_num_threads(),
        "jax_devices": ", ".join(str(device) for device in jax.devices()),
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "sionna_probe": "; ".join(probes),
    }
    report = format_report(results, context)
    print()
    print(report)
    if _OUTPUT.value:
        write_section(Path(_OUTPUT.value), report)
        print(f"Wrote the '{SECTION_TITLE}' section to {_OUTPUT.value}.")


if __name__ == "__main__":
    app.run(main)
