"""The resumable Monte Carlo loop shared by the polar BLER experiments.

A sweep walks (decoder, Eb/N0) points in order and simulates batches at each until it has
`target_block_errors` block errors or `max_codewords` codewords. The error counts of every point are
checkpointed, so a run stopped at any moment resumes where it was. Batch keys depend only on the Eb/N0 index
and the batch index, so a resumed run draws the same payloads and noise and ends with the same counts.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np
from absl import logging

from jaxlab.core import checkpoint as checkpoint_lib
from jaxlab.core import metrics as metrics_lib
from jaxlab.core import progress as progress_lib
from jaxlab.polar import simulation

# Columns of the checkpointed count array before the extra counters: those of `simulation.ErrorCounts`.
_NUM_ERROR_COLUMNS = 4


@dataclasses.dataclass(frozen=True)
class SweepPoint:
    """One (decoder, Eb/N0) point of a sweep; `index` orders points in metrics lines and checkpoints."""

    index: int
    decoder_name: str
    ebno_index: int
    ebno_db: float


def sweep_points(decoder_names: Sequence[str], ebno_dbs: Sequence[float]) -> list[SweepPoint]:
    """Return the points decoder by decoder, each over all Eb/N0 values."""
    return [SweepPoint(decoder_index * len(ebno_dbs) + ebno_index, name, ebno_index, float(ebno_db))
            for decoder_index, name in enumerate(decoder_names)
            for ebno_index, ebno_db in enumerate(ebno_dbs)]


def run_sweep(
    config,
    workdir: str,
    points: Sequence[SweepPoint],
    make_simulator: Callable[[str], Callable],
    make_record: Callable[[SweepPoint, simulation.ErrorCounts, np.ndarray], dict[str, Any]],
    extra_counters: Sequence[str] = (),
    extra_metrics: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Simulate every point to its stopping rule, resuming from `workdir/checkpoints`; return one record each.

    Args:
      config: reads `seed`, `batch_size`, `target_block_errors`, `max_codewords` and `checkpoint_every_s`.
      workdir: receives `checkpoints/`, `metrics.jsonl` and TensorBoard events.
      points: the sweep, in the order it runs.
      make_simulator: decoder name -> jitted `simulate(key, ebno_db) -> (block_errors, bit_errors, *extras)`,
        one int per name in `extra_counters`; called once per decoder, since Eb/N0 is a traced argument.
      make_record: (point, counts, extra counter totals) -> the point's results record; it must hold "bler"
        and "ber" and every key of `extra_metrics`.
      extra_counters: names of per-batch totals that `simulate` returns after the error counts, for example
        decoding iterations. Each is summed per point and checkpointed with the error counts.
      extra_metrics: record keys added to the point's metrics line.
    """
    root_key = jax.random.key(config.seed)
    num_columns = _NUM_ERROR_COLUMNS + len(extra_counters)
    counts_array = np.zeros((len(points), num_columns), np.int64)
    checkpointer = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=2)
    latest = checkpointer.latest_step()
    if latest is not None:
        counts_array = np.asarray(checkpointer.restore({"counts": counts_array})["counts"]).copy()
        logging.info("Resumed from checkpoint %d (%d codewords simulated).", latest, counts_array[:, 2].sum())
    counts = [simulation.ErrorCounts.from_array(row[:_NUM_ERROR_COLUMNS]) for row in counts_array]
    extras = counts_array[:, _NUM_ERROR_COLUMNS:].copy()

    def finished(point: SweepPoint) -> bool:
        return simulation.should_stop(counts[point.index], config.target_block_errors, config.max_codewords)

    # Points finished before the last checkpoint keep their metrics lines; later lines are written again.
    first_open = next((p.index for p in points if not finished(p)), len(points))
    writer = metrics_lib.MetricWriter(workdir, resume_from_step=first_open - 1)
    step = int(counts_array[:, 3].sum())  # Batches simulated so far over all points: the checkpoint step.
    last_save = {"step": latest, "time": time.monotonic()}

    def save_counts():
        if last_save["step"] != step:
            state = np.concatenate([np.stack([c.as_array() for c in counts]), extras], axis=1)
            checkpointer.save(step, {"counts": state})
        last_save.update(step=step, time=time.monotonic())

    simulators = {}
    records = []
    for point in points:
        point_counts = counts[point.index]
        if not finished(point):
            if point.decoder_name not in simulators:
                simulators[point.decoder_name] = make_simulator(point.decoder_name)
            simulate = simulators[point.decoder_name]
            started = time.monotonic()
            start_codewords = point_counts.codewords
            bar = progress_lib.progress(config.max_codewords, desc=f"{point.decoder_name} @ {point.ebno_db:.2f} dB",
                                        unit="cw", initial=point_counts.codewords)
            with bar:
                while not finished(point):
                    key = simulation.batch_key(root_key, point.ebno_index, point_counts.batches)
                    block_errors, bit_errors, *batch_extras = jax.device_get(simulate(key, point.ebno_db))
                    point_counts.add(block_errors, bit_errors, config.batch_size)
                    extras[point.index] += np.asarray(batch_extras, np.int64).reshape(len(extra_counters))
                    step += 1
                    bar.update(config.batch_size)
                    bar.set_postfix(block_errors=point_counts.block_errors, refresh=False)
                    if time.monotonic() - last_save["time"] > config.checkpoint_every_s:
                        save_counts()

            elapsed = time.monotonic() - started
            record = make_record(point, point_counts, extras[point.index])
            writer.write_scalars(point.index, {
                "bler": record["bler"],
                "ber": record["ber"],
                "ebno_db": point.ebno_db,
                "codewords": point_counts.codewords,
                "codewords_per_s": (point_counts.codewords - start_codewords) / max(elapsed, 1e-9),
                **{key: record[key] for key in extra_metrics},
            })
            # Metrics first, then the checkpoint: a kill in between only repeats this point's metrics line.
            save_counts()
            logging.info("%s at %.2f dB: BLER %.3e (%d/%d), BER %.3e%s", point.decoder_name, point.ebno_db,
                         record["bler"], point_counts.block_errors, point_counts.codewords, record["ber"],
                         "".join(f", {key} {record[key]:.3g}" for key in extra_metrics))
        records.append(make_record(point, point_counts, extras[point.index]))

    writer.close()
    checkpointer.close()
    return records
