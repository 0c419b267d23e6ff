"""Atomic, keep-last-n checkpoints of pytrees on top of orbax-checkpoint.

Each save writes step `S` into a temporary directory `S.orbax-checkpoint-tmp-*`
and renames it to `S` only when every file is written (orbax's atomic save on
a local or POSIX file system). A process killed during a save therefore leaves
the previous steps intact, and the next `Checkpointer` on the same directory
deletes the unfinished temporary directory.
"""

from __future__ import annotations

import logging as std_logging
import os
from typing import Any

import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from jaxlab.core.tree import tree_flatten_with_paths

PyTree = Any


class _DropOrbaxInfo(std_logging.Filter):
    """Drop orbax's debug and info records, which it emits for every save and restore."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        from_orbax = f"{os.sep}orbax{os.sep}" in record.pathname
        return not (from_orbax and record.levelno < std_logging.WARNING)


def _quiet_orbax_logging() -> None:
    """Install the filter once on the absl logger, which orbax logs through."""
    absl_logger = std_logging.getLogger("absl")
    if not any(isinstance(f, _DropOrbaxInfo) for f in absl_logger.filters):
        absl_logger.addFilter(_DropOrbaxInfo())


class Checkpointer:
    """Saves and restores numbered steps of a pytree under one directory.

    Call `save` and `restore` from every process of a multi-host job; orbax
    coordinates the writes.

    Args:
        directory: where step subdirectories are written; created if missing.
        max_to_keep: how many of the most recent steps to keep (older ones are
            deleted after each save); None keeps all.
    """

    def __init__(self, directory: str | os.PathLike[str], max_to_keep: int | None = 3):
        if max_to_keep is not None and max_to_keep < 1:
            raise ValueError(f"max_to_keep must be at least 1 or None (keep all), got {max_to_keep}.")
        _quiet_orbax_logging()
        self.directory = os.path.abspath(os.fspath(directory))
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            enable_async_checkpointing=False,
            cleanup_tmp_directories=True,
            create=True,
        )
        # Naming the handler up front lets a fresh manager read a step's metadata
        # before the first save or restore.
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_handlers=ocp.StandardCheckpointHandler()
        )

    def save(self, step: int, state: PyTree) -> bool:
        """Write `state` as `step` and return once the write is complete.

        Args:
            step: a non-negative step number.
            state: a pytree of jax arrays, NumPy arrays and Python scalars.

        Returns:
            True if the step was written, False if `step` already existed and
            was left unchanged (e.g. a resumed run saving its last step again).
        """
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise ValueError(f"step must be a non-negative int, got {step!r}.")
        if step in self._manager.all_steps():
            logging.info("Checkpoint step %d already exists in %s, so it is not overwritten.", step,
                         self.directory)
            return False
        self._manager.save(int(step), args=ocp.args.StandardSave(state), force=True)
        self._manager.wait_until_finished()
        logging.info("Saved checkpoint step %d to %s.", step, self.directory)
        return True

    def all_steps(self) -> list[int]:
        """Return the completely written steps, in increasing order."""
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        """Return the highest completely written step, or None if there is none."""
        return self._manager.latest_step()

    def restore(self, target_like: PyTree, step: int | None = None) -> PyTree:
        """Read a step into the structure, dtypes and shardings of `target_like`.

        Args:
            target_like: a pytree with the saved structure and shapes, e.g. the
                freshly initialized state. Its leaves may be jax arrays (restored
                with their sharding), `jax.ShapeDtypeStruct`s, NumPy arrays or
                Python scalars; saved values are cast to their dtypes.
            step: the step to read; the latest step when None.

        Raises:
            FileNotFoundError: if there is no checkpoint, or not that step.
            ValueError: if the saved tree differs from `target_like` in leaf
                paths or shapes.
        """
        if step is None:
            step = self.latest_step()
            if step is None:
                raise FileNotFoundError(f"No checkpoint to restore in {self.directory}.")
        elif step not in self._manager.all_steps():
            raise FileNotFoundError(
                f"Checkpoint step {step} not found in {self.directory}. Available steps: {self.all_steps()}."
            )
        self._check_matches_target(step, target_like)
        restored = self._manager.restore(step, args=ocp.args.StandardRestore(target_like))
        logging.info("Restored checkpoint step %d from %s.", step, self.directory)
        return restored

    def _check_matches_target(self, step: int, target_like: PyTree) -> None:
        """Raise a ValueError listing every path or shape that differs from the saved tree."""
        saved_items, _ = tree_flatten_with_paths(self._manager.item_metadata(step).tree)
        saved_shapes = {path: tuple(meta.shape) for path, meta in saved_items}
        target_items, _ = tree_flatten_with_paths(target_like)
        target_shapes = {path: tuple(np.shape(leaf)) for path, leaf in target_items}

        problems = []
        missing = sorted(set(target_shapes) - set(saved_shapes))
        if missing:
            problems.append(f"in the target but not in the checkpoint: {missing}")
        extra = sorted(set(saved_shapes) - set(target_shapes))
        if extra:
            problems.append(f"in the checkpoint but not in the target: {extra}")
        for path in sorted(set(saved_shapes) & set(target_shapes)):
            if saved_shapes[path] != target_shapes[path]:
                problems.append(
                    f"shape of '{path}' is {saved_shapes[path]} in the checkpoint but "
                    f"{target_shapes[path]} in the target"
                )
        if problems:
            raise ValueError(
                f"Checkpoint step {step} in {self.directory} does not match the restore target: "
                + "; ".join(problems)
                + ". Restore into a state built with the configuration that wrote the checkpoint, "
                "or start from a new directory."
            )

    def close(self) -> None:
        """Wait for pending work and release orbax's resources."""
        # NOTE: orbax 0.12 awaits its start-up removal of temporary directories only in save(), through a
        # private future. A manager closed without saving could leave it running at interpreter exit, where
        # it logs a RuntimeError traceback, so wait for it here while that attribute exists.
        cleanup = getattr(self._manager, "_cleanup_tmp_directory_future", None)
        if cleanup is not None:
            cleanup.result()
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
