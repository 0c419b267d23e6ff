"""The offline multi-task image suite: 32 x 32 RGB classification tasks generated from a seed.

Each task is generated deterministically from `(task name, split, seed)` and
cached under `$JAXLAB_DATA/image_suite/<task>/` by `jaxlab.core.cache`, which
checks shapes, dtypes and checksums on every read. Generation draws labels
balanced to within one example per class, then renders the images in chunks
of `_CHUNK` examples, each chunk from its own random stream, so that memory
stays bounded and the output does not depend on the machine.

Images are uint8 (N, 32, 32, 3) in [0, 255]; `normalize_images` maps them to
float32 in [-1, 1] by x / 127.5 - 1, the convention of the ViT models here.

Example:
    tasks = images.load_image_suite(seed=0)              # eight tasks, 2,000 / 500 each
    x = images.normalize_images(tasks[0].train_images)  # float32 in [-1, 1]
"""

from __future__ import annotations

import dataclasses
import time
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np
from absl import logging

from jaxlab.core import cache
from jaxlab.data import image_tasks
from jaxlab.data.image_tasks import DEFAULT_IMAGE_TASKS, IMAGE_SIZE, IMAGE_TASKS

GENERATOR_VERSION = 1  # Bump whenever a generator's output for the same arguments changes.
# `generate_split` makes "validation" on demand and the cache does not store it. Methods that select a
# hyperparameter on labelled held-out data (Task Arithmetic's lambda) read it.
SPLITS = ("train", "test", "validation")
# Examples per task for (train, test): "small" builds in seconds on a laptop
# CPU; "large" is closer to the sizes of the merging benchmarks' test sets.
SUITE_SIZES = {"small": (2000, 500), "large": (20000, 4000)}
_CHUNK = 1024
_NOISE_STD = 0.03  # Gaussian pixel noise, in units of the [0, 1] intensity range.

__all__ = ["DEFAULT_IMAGE_TASKS", "IMAGE_TASKS", "ImageTaskData", "SUITE_SIZES", "generate_split",
           "load_image_suite", "load_image_task", "normalize_images"]


@dataclasses.dataclass(frozen=True)
class ImageTaskData:
    """One task's cached splits.

    Attributes:
        name: the task name, a key of `IMAGE_TASKS`.
        class_names: one name per label, in label order.
        description: what the label encodes.
        train_images: uint8 (num_train, 32, 32, 3), RGB in [0, 255].
        train_labels: int32 (num_train,) in [0, num_classes).
        test_images: uint8 (num_test, 32, 32, 3).
        test_labels: int32 (num_test,).
    """

    name: str
    class_names: tuple[str, ...]
    description: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def normalize_images(images):
    """Map uint8 images in [0, 255] to float32 in [-1, 1] (x / 127.5 - 1); works on NumPy and jax arrays."""
    if images.dtype != np.uint8:
        raise TypeError(f"normalize_images expects uint8 images, got dtype {images.dtype}; "
                        "normalising twice would shift the inputs.")
    return images.astype(np.float32) / 127.5 - 1.0


def balanced_labels(rng: np.random.Generator, num_examples: int, num_classes: int) -> np.ndarray:
    """Return int32 labels whose class counts differ by at most one, in random order."""
    return rng.permutation(np.arange(num_examples) % num_classes).astype(np.int32)


def generate_split(name: str, split: str, num_examples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Generate one split of one task without the cache.

    Returns:
        images uint8 (num_examples, 32, 32, 3) and labels int32 (num_examples,).
    """
    task = _task(name)
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; expected one of {SPLITS}.")
    if isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples < 1:
        raise ValueError(f"num_examples must be an int >= 1, got {num_examples!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}.")

    # Streams keyed by (seed, task, split[, chunk]) keep tasks and splits independent.
    stream = (zlib.crc32(name.encode()), SPLITS.index(split))
    label_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=stream))
    labels = balanced_labels(label_rng, num_examples, len(task.class_names))

    images = np.empty((num_examples, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    for chunk, start in enumerate(range(0, num_examples, _CHUNK)):
        stop = min(start + _CHUNK, num_examples)
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=stream + (chunk + 1,)))
        pixels = task.generate(rng, labels[start:stop], split)
        pixels = pixels + rng.normal(0.0, _NOISE_STD, size=pixels.shape)
        images[start:stop] = np.round(np.clip(pixels, 0.0, 1.0) * 255).astype(np.uint8)
    return images, labels


def artifact_spec(name: str, num_train: int, num_test: int, seed: int) -> cache.ArtifactSpec:
    """Build the cache identity of one task's splits from its sizes, seed and renderer versions."""
    task = _task(name)
    params = {"num_train": num_train, "num_test": num_test, "image_size": IMAGE_SIZE,
              "noise_std": _NOISE_STD, "chunk": _CHUNK, "source": task.source()}
    return cache.ArtifactSpec(name=f"image_suite/{name}", version=GENERATOR_VERSION, params=params, seed=seed)


def load_image_task(
    name: str,
    *,
    num_train: int = SUITE_SIZES["small"][0],
    num_test: int = SUITE_SIZES["small"][1],
    seed: int = 0,
    root: str | Path | None = None,
) -> ImageTaskData:
    """Load one task from the cache, generating and caching it first if absent.

    Args:
        name: a key of `IMAGE_TASKS`.
        num_train, num_test: examples per split.
        seed: generator seed; the same seed gives the same bytes.
        root: cache root; `$JAXLAB_DATA` or `~/.cache/jaxlab` when None.
    """
    task = _task(name)
    for field, value in (("num_train", num_train), ("num_test", num_test)):
        if isinstance(value, bool) or not isinstance(value, int) or value < len(task.class_names):
            raise ValueError(f"{field} must be an int >= the {len(task.class_names)} classes of {name!r}, "
                             f"got {value!r}.")
    spec = artifact_spec(name, num_train, num_test, seed)

    def generate():
        start = time.perf_counter()
        train_images, train_labels = generate_split(name, "train", num_train, seed)
        test_images, test_labels = generate_split(name, "test", num_test, seed)
        logging.info("Generated image task %s (%d train, %d test) in %.1f s.", name, num_train, num_test,
                     time.perf_counter() - start)
        arrays = {"train_images": train_images, "train_labels": train_labels, "test_images": test_images,
                  "test_labels": test_labels}
        return arrays, {"class_names": list(task.class_names), "description": task.description}

    arrays, metadata = cache.load_or_build_arrays(spec, generate, root)
    return ImageTaskData(name=name, class_names=tuple(metadata["class_names"]),
                         description=metadata["description"], **arrays)


def load_image_suite(
    tasks: Sequence[str] = DEFAULT_IMAGE_TASKS,
    *,
    size: str | None = None,
    num_train: int | None = None,
    num_test: int | None = None,
    seed: int = 0,
    root: str | Path | None = None,
) -> list[ImageTaskData]:
    """Load several tasks (the default eight unless `tasks` is given), generating any that are not cached.

    Args:
        tasks: task names, keys of `IMAGE_TASKS`.
        size: a key of `SUITE_SIZES` ("small" when neither it nor num_train/num_test is given).
        num_train, num_test: explicit sizes per task; they override `size`.
        seed: generator seed shared by all tasks (each task draws its own streams from it).
        root: cache root.
    """
    if size is not None and size not in SUITE_SIZES:
        raise ValueError(f"Unknown suite size {size!r}; expected one of {sorted(SUITE_SIZES)}.")
    default_train, default_test = SUITE_SIZES[size or "small"]
    num_train = default_train if num_train is None else num_train
    num_test = default_test if num_test is None else num_test
    return [load_image_task(name, num_train=num_train, num_test=num_test, seed=seed, root=root) for name in tasks]


def _task(name: str) -> image_tasks.ImageTaskDef:
    if name not in IMAGE_TASKS:
        raise ValueError(f"Unknown image task {name!r}; expected one of {sorted(IMAGE_TASKS)}.")
    return IMAGE_TASKS[name]
