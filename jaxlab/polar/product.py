"""Product codes of two identical polar codes and their iterative (turbo) decoding.

A k×k payload is encoded row by row with the component code C(n, k) and then column by column, giving an
n×n codeword whose rows and columns are all codewords of C (this holds for any linear component code).
Decoding alternates half-iterations over rows and columns. A component decoder receives the input
λ_ch + α·L_E, where L_E is the extrinsic LLR of the previous half-iteration, and returns a new L_E:

- "soft": SO-SCL (Yuan, Duffy and Médard, IEEE T-IT 2025), L_E = app_llr − input;
- "hard": SCL that returns only its decided codeword x̂, turned into L_E = β·(1 − 2x̂) − input, the fixed
  reliability β of Pyndiah's turbo product decoder (Pyndiah, IEEE Trans. Commun. 1998).

Decoding of a product codeword stops once every row and every column of the current decision is a
component codeword (zero syndrome), or after `max_iterations` full iterations (row plus column pass).

Conventions follow `jaxlab.polar`: λ = ln P(0)/P(1), natural-order non-systematic polar encoding.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Callable, Literal

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from jaxlab.core import checkpoint as checkpoint_lib
from jaxlab.core import config as config_lib
from jaxlab.core import distributed
from jaxlab.core import metrics as metrics_lib
from jaxlab.core import progress as progress_lib
from jaxlab.polar import channel
from jaxlab.polar import codes as codes_lib
from jaxlab.polar import decoders
from jaxlab.polar import encoding
from jaxlab.polar import simulation
from jaxlab.polar.codes import PolarCode

ComponentOutput = Literal["soft", "hard"]
COMPONENT_OUTPUTS = ("soft", "hard")


@dataclasses.dataclass(frozen=True)
class ProductCode:
    """The product code C ⊗ C of one polar component code C(n, k) without CRC.

    Attributes:
      component: the row and column code.
    """

    component: PolarCode

    def __post_init__(self):
        if self.component.crc is not None:
            raise ValueError(f"invalid component code with CRC {self.component.crc!r}; "
                             "build the component code with crc=None")

    @property
    def n(self) -> int:
        return self.component.length

    @property
    def k(self) -> int:
        return self.component.num_info

    @property
    def num_payload(self) -> int:
        return self.k * self.k

    @property
    def rate(self) -> float:
        """Payload rate k²/n², the rate of Eb/N0."""
        return self.num_payload / (self.n * self.n)


@dataclasses.dataclass(frozen=True)
class TurboSpec:
    """Iterative decoder settings.

    Attributes:
      component_output: "soft" (SO-SCL extrinsic LLRs) or "hard" (decided codeword with reliability β).
      list_size: L of the component list decoder.
      max_iterations: maximum number of full iterations, each a row and a column half-iteration.
      alpha: weight of the previous extrinsic LLRs in the component input λ_ch + α·L_E.
      beta: reliability given to a hard decision, in LLR units; used only with "hard".
      llr_clip: LLRs fed to the component decoder and extrinsic LLRs are clipped to ±llr_clip.
    """

    component_output: ComponentOutput = "soft"
    list_size: int = 4
    max_iterations: int = 20
    alpha: float = 0.5
    beta: float = 2.0
    llr_clip: float = 30.0

    def __post_init__(self):
        if self.component_output not in COMPONENT_OUTPUTS:
            raise ValueError(f"invalid component_output {self.component_output!r}; expected one of "
                             f"{COMPONENT_OUTPUTS}")
        if not isinstance(self.list_size, (int, np.integer)) or not 1 <= self.list_size <= 1024:
            raise ValueError(f"invalid list_size {self.list_size!r}; expected an integer in [1, 1024]")
        if not isinstance(self.max_iterations, (int, np.integer)) or self.max_iterations < 1:
            raise ValueError(f"invalid max_iterations {self.max_iterations!r}; expected an integer >= 1")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"invalid alpha {self.alpha!r}; expected a float in [0, 1]")
        if not self.beta > 0.0:
            raise ValueError(f"invalid beta {self.beta!r}; expected a float > 0")
        if not 0.0 < self.llr_clip < 1e4:
            raise ValueError(f"invalid llr_clip {self.llr_clip!r}; expected a float in (0, 1e4)")

    @property
    def name(self) -> str:
        return f"SO-SCL-{self.list_size}" if self.component_output == "soft" else f"SCL-{self.list_size} hard"


@chex.dataclass(frozen=True)
class TurboOutput:
    """Result of decoding a batch of B product codewords.

    Attributes:
      codeword: [B, n, n] uint8, the final decision; its rows (or columns) are component codewords.
      payload: [B, k, k] uint8, the payload read from `codeword`.
      iterations: [B] int32, full iterations run; a codeword that stops after a row pass counts that
        pass as a whole iteration.
      converged: [B] bool, whether every row and column of `codeword` is a component codeword.
    """

    codeword: jax.Array
    payload: jax.Array
    iterations: jax.Array
    converged: jax.Array


def encode(product: ProductCode, payload: jax.Array) -> jax.Array:
    """Encode payloads [..., k, k] into product codewords [..., n, n]: rows first, then columns."""
    payload = jnp.asarray(payload)
    k = product.k
    if payload.shape[-2:] != (k, k):
        raise ValueError(f"invalid payload shape {payload.shape}; expected [..., {k}, {k}]")
    rows = encoding.encode(product.component, payload)
    columns = encoding.encode(product.component, jnp.swapaxes(rows, -1, -2))
    return jnp.swapaxes(columns, -1, -2)


def payload_from_codeword(product: ProductCode, codeword: jax.Array) -> jax.Array:
    """Recover payloads [..., k, k] from product codewords [..., n, n] by inverting both polar transforms."""
    info = jnp.asarray(product.component.info_positions)
    columns_info = encoding.polar_transform(jnp.swapaxes(codeword, -1, -2))[..., info]
    return encoding.polar_transform(jnp.swapaxes(columns_info, -1, -2))[..., info]


def is_component_codeword(code: PolarCode, words: jax.Array) -> jax.Array:
    """Return whether each word [..., n] is a codeword: u = x·F^{⊗n} must vanish at the frozen positions."""
    u = encoding.polar_transform(words)
    return jnp.all(u[..., jnp.asarray(code.frozen_positions)] == 0, axis=-1)


def is_product_codeword(product: ProductCode, codeword: jax.Array) -> jax.Array:
    """Return [...] bool: whether every row and every column of codewords [..., n, n] is a component codeword."""
    rows_ok = jnp.all(is_component_codeword(product.component, codeword), axis=-1)
    columns_ok = jnp.all(is_component_codeword(product.component, jnp.swapaxes(codeword, -1, -2)), axis=-1)
    return rows_ok & columns_ok


def _make_component_fn(product: ProductCode, spec: TurboSpec) -> Callable[[jax.Array], tuple[jax.Array, jax.Array]]:
    """Build `component(inputs [M, n]) -> (extrinsic [M, n], decided codewords [M, n])` for M words."""
    soft = spec.component_output == "soft"
    decoder_spec = decoders.DecoderSpec("scl", spec.list_size, soft_output=soft)
    batch_decode = decoders.make_batch_decode_fn(product.component, decoder_spec)
    clip = spec.llr_clip

    def component(inputs):
        output = batch_decode(inputs)
        if soft:
            # An empty sublist with no out-of-list mass gives an infinite APP LLR; map it to ±clip.
            app = jnp.nan_to_num(output.app_llr, nan=0.0, posinf=clip, neginf=-clip)
            extrinsic = jnp.clip(app, -clip, clip) - inputs
        else:
            extrinsic = spec.beta * channel.bpsk(output.codeword) - inputs
        return jnp.clip(extrinsic, -clip, clip), output.codeword

    return component


def make_turbo_decode_fn(product: ProductCode, spec: TurboSpec) -> Callable[[jax.Array], TurboOutput]:
    """Build the traceable iterative decoder channel LLRs [B, n, n] -> `TurboOutput`.

    One half-iteration decodes the rows (or columns) of all B codewords as one batch of B·n component
    words. The loop is a `lax.while_loop` that ends when every codeword has converged or after
    2·max_iterations half-iterations; a converged codeword keeps its decision and extrinsic LLRs.
    """
    component = _make_component_fn(product, spec)
    n = product.n
    clip = spec.llr_clip
    max_half_iterations = 2 * spec.max_iterations

    def half_iteration(channel_llr, extrinsic, transpose):
        # Rows are the last axis; a column pass swaps the axes, decodes rows and swaps back.
        batch = channel_llr.shape[0]
        if transpose:
            channel_llr, extrinsic = jnp.swapaxes(channel_llr, 1, 2), jnp.swapaxes(extrinsic, 1, 2)
        inputs = jnp.clip(channel_llr + spec.alpha * extrinsic, -clip, clip)
        new_extrinsic, decided = component(inputs.reshape(batch * n, n))
        new_extrinsic, decided = new_extrinsic.reshape(batch, n, n), decided.reshape(batch, n, n)
        if transpose:
            new_extrinsic, decided = jnp.swapaxes(new_extrinsic, 1, 2), jnp.swapaxes(decided, 1, 2)
        return new_extrinsic, decided

    def decode(channel_llr):
        channel_llr = jnp.clip(jnp.nan_to_num(channel_llr, posinf=clip, neginf=-clip), -clip, clip)
        batch = channel_llr.shape[0]

        def keep_going(state):
            half, _, _, done, _ = state
            return (half < max_half_iterations) & ~jnp.all(done)

        def body(state):
            half, extrinsic, decided, done, iterations = state
            new_extrinsic, new_decided = jax.lax.cond(
                half % 2 == 0,
                lambda: half_iteration(channel_llr, extrinsic, transpose=False),
                lambda: half_iteration(channel_llr, extrinsic, transpose=True),
            )
            active = ~done[:, None, None]
            extrinsic = jnp.where(active, new_extrinsic, extrinsic)
            decided = jnp.where(active, new_decided, decided)
            # Half-iterations 2i and 2i + 1 form iteration i + 1; a converged codeword stops counting.
            iterations = jnp.where(done, iterations, half // 2 + 1)
            done = done | is_product_codeword(product, decided)
            return half + 1, extrinsic, decided, done, iterations

        init = (jnp.int32(0), jnp.zeros_like(channel_llr), jnp.zeros(channel_llr.shape, jnp.uint8),
                jnp.zeros((batch,), bool), jnp.zeros((batch,), jnp.int32))
        _, _, decided, done, iterations = jax.lax.while_loop(keep_going, body, init)
        return TurboOutput(codeword=decided, payload=payload_from_codeword(product, decided),
                           iterations=iterations, converged=done)

    return decode


def make_turbo_decoder(product: ProductCode, spec: TurboSpec) -> Callable[[jax.Array], TurboOutput]:
    """Build a jitted iterative decoder mapping channel LLRs [B, n, n] (float) to a `TurboOutput`."""
    batched = jax.jit(make_turbo_decode_fn(product, spec))
    n = product.n

    def decode(channel_llr: jax.Array) -> TurboOutput:
        if channel_llr.ndim != 3 or channel_llr.shape[1:] != (n, n):
            raise ValueError(f"invalid LLR shape {channel_llr.shape}; expected [batch, {n}, {n}]")
        if not jnp.issubdtype(channel_llr.dtype, jnp.floating):
            raise ValueError(f"invalid LLR dtype {channel_llr.dtype}; expected a floating dtype such as float32")
        return batched(channel_llr)

    return decode


def make_batch_simulator(
    product: ProductCode,
    spec: TurboSpec,
    batch_size: int,
    sharding: jax.sharding.Sharding | None = None,
) -> Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array, jax.Array]]:
    """Build a jitted `simulate(key, ebno_db) -> (block_errors, bit_errors, iterations)` for one batch.

    Payloads and noise depend only on `key`, so soft and hard decoding see the same draws. A block error
    is any wrong payload bit; `iterations` sums the full iterations over the batch.
    """
    decode = make_turbo_decode_fn(product, spec)
    k = product.k

    def simulate(key, ebno_db):
        key_payload, key_noise = jax.random.split(key)
        payload = jax.random.bernoulli(key_payload, 0.5, (batch_size, k, k)).astype(jnp.uint8)
        if sharding is not None:
            payload = jax.lax.with_sharding_constraint(payload, sharding)
        codeword = encode(product, payload)
        sigma = channel.ebno_db_to_sigma(ebno_db, product.rate)
        llr = channel.awgn_llr(key_noise, codeword, sigma)

        output = decode(llr)
        wrong_bits = (output.payload != payload).reshape(batch_size, k * k)
        block_errors = jnp.sum(jnp.any(wrong_bits, axis=-1), dtype=jnp.int32)
        bit_errors = jnp.sum(wrong_bits, dtype=jnp.int32)
        return block_errors, bit_errors, jnp.sum(output.iterations, dtype=jnp.int32)

    return jax.jit(simulate)


def ebno_at_bler(ebno_db: list[float], bler: list[float], target: float) -> float | None:
    """Interpolate the Eb/N0 [dB] where a BLER curve crosses `target`, linearly in log10(BLER).

    Uses the first pair of neighbouring grid points with BLER ≥ target and ≤ target (BLER > 0 at both);
    returns None when the curve does not cross the target on the grid.
    """
    for (x0, y0), (x1, y1) in zip(zip(ebno_db, bler), zip(ebno_db[1:], bler[1:])):
        if y0 >= target >= y1 and y0 > 0 and y1 > 0:
            if y0 == y1:
                return float(x0)
            fraction = (np.log10(y0) - np.log10(target)) / (np.log10(y0) - np.log10(y1))
            return float(x0 + fraction * (x1 - x0))
    return None


# ---------------------------------------------------------------------------------------------------------
# The `polar_product_code` experiment: BLER of soft- and hard-output iterative decoding over BPSK-AWGN.
#
# Outputs in the workdir: `results.json`, `results.md`, `bler.png`, `metrics.jsonl` and TensorBoard events
# (one entry per finished point), and `checkpoints/` with the error counts. `results.json` has one record per
# decoder and Eb/N0 point, the Eb/N0 of each decoder at BLER 1e-2 and the gain of soft over hard there. A
# stopped run resumes from its checkpoint and ends with the same `results.json`.

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
    config_lib.require_list_of(config, "ebno_db", float, min_len=1, min=-20.0, max=40.0, increasing=True)
    devices = jax.device_count()
    config_lib.require(
        config, "batch_size", lambda b: isinstance(b, int) and b > 0 and b % devices == 0,
        f"a positive int divisible by the device count {devices}",
    )
    config_lib.require_int(config, "target_block_errors", min=1)
    config_lib.require_int(config, "max_codewords", min=1)
    config_lib.require_float(config, "checkpoint_every_s", gt=0.0)


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
    mesh = distributed.make_mesh()
    sharding = distributed.batch_sharding(mesh)
    root_key = jax.random.key(config.seed)
    product = ProductCode(codes_lib.polar_code_5g(config.code.length, config.code.num_info))

    points = [(name, ebno_index, float(ebno_db)) for name in config.decoders
              for ebno_index, ebno_db in enumerate(config.ebno_db)]
    # Columns: block errors, bit errors, codewords, batches (as in `simulation.ErrorCounts`), iterations.
    counts_array = np.zeros((len(points), 5), np.int64)
    checkpointer = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=2)
    latest = checkpointer.latest_step()
    if latest is not None:
        counts_array = np.asarray(checkpointer.restore({"counts": counts_array})["counts"]).copy()
        logging.info("Resumed from checkpoint %d (%d codewords simulated).", latest, counts_array[:, 2].sum())
    counts = [simulation.ErrorCounts.from_array(row[:4]) for row in counts_array]
    iterations = [int(row[4]) for row in counts_array]

    def finished(index: int) -> bool:
        return simulation.should_stop(counts[index], config.target_block_errors, config.max_codewords)

    # Points finished before the last checkpoint keep their metrics lines; later lines are written again.
    first_open = next((i for i in range(len(points)) if not finished(i)), len(points))
    writer = metrics_lib.MetricWriter(workdir, resume_from_step=first_open - 1)
    step = int(counts_array[:, 3].sum())  # Batches simulated so far over all points: the checkpoint step.
    last_save = {"step": latest, "time": time.monotonic()}

    def save_counts():
        if last_save["step"] != step:
            state = np.stack([np.append(c.as_array(), it) for c, it in zip(counts, iterations)])
            checkpointer.save(step, {"counts": state})
        last_save.update(step=step, time=time.monotonic())

    def record(index: int) -> dict:
        name, _, ebno_db = points[index]
        point_counts = counts[index]
        lower, upper = simulation.clopper_pearson(point_counts.block_errors, point_counts.codewords)
        codewords = max(point_counts.codewords, 1)
        return {
            "decoder": name,
            "decoder_label": turbo_spec(config, name).name,
            "n": product.n,
            "k": product.k,
            "ebno_db": ebno_db,
            "bler": point_counts.block_errors / codewords,
            "bler_ci99": [lower, upper],
            "ber": point_counts.bit_errors / (codewords * product.num_payload),
            "mean_iterations": iterations[index] / codewords,
            "block_errors": point_counts.block_errors,
            "bit_errors": point_counts.bit_errors,
            "codewords": point_counts.codewords,
        }

    simulators = {}
    records = []
    for index, (name, ebno_index, ebno_db) in enumerate(points):
        point_counts = counts[index]
        if not finished(index):
            # Eb/N0 is a traced argument, so each decoder compiles once for all its points.
            if name not in simulators:
                simulators[name] = make_batch_simulator(product, turbo_spec(config, name), config.batch_size,
                                                        sharding)
            simulate = simulators[name]
            started = time.monotonic()
            start_codewords = point_counts.codewords
            bar = progress_lib.progress(config.max_codewords, desc=f"{name} @ {ebno_db:.2f} dB", unit="cw",
                                        initial=point_counts.codewords)
            with bar:
                while not finished(index):
                    # The key depends on the Eb/N0 index and batch only, so soft and hard see the same draws.
                    key = simulation.batch_key(root_key, ebno_index, point_counts.batches)
                    block_errors, bit_errors, batch_iterations = jax.device_get(simulate(key, ebno_db))
                    point_counts.add(block_errors, bit_errors, config.batch_size)
                    iterations[index] += int(batch_iterations)
                    step += 1
                    bar.update(config.batch_size)
                    bar.set_postfix(block_errors=point_counts.block_errors, refresh=False)
                    if time.monotonic() - last_save["time"] > config.checkpoint_every_s:
                        save_counts()

            elapsed = time.monotonic() - started
            point_record = record(index)
            writer.write_scalars(index, {
                "bler": point_record["bler"],
                "ber": point_record["ber"],
                "ebno_db": ebno_db,
                "mean_iterations": point_record["mean_iterations"],
                "codewords": point_counts.codewords,
                "codewords_per_s": (point_counts.codewords - start_codewords) / max(elapsed, 1e-9),
            })
            # Metrics first, then the checkpoint: a kill in between only repeats this point's metrics line.
            save_counts()
            logging.info("%s at %.2f dB: BLER %.3e (%d/%d), BER %.3e, %.2f iterations", name, ebno_db,
                         point_record["bler"], point_counts.block_errors, point_counts.codewords,
                         point_record["ber"], point_record["mean_iterations"])
        records.append(record(index))

    writer.close()
    checkpointer.close()
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
