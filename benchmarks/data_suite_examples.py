"""Example grid and build times of the offline data suites (image and WordNet text tasks).

Run:
  python benchmarks/data_suite_examples.py [--sizes=small,large] [--grid=docs/data_image_suite.png]

Builds every task into a fresh temporary cache, so the times include
generation, writing, checksumming and the verified read-back, then times a
second, cached load. Prints a Markdown record (command, machine, date, table)
for docs/data.md and writes a PNG with one example per class of each image
task. About a minute on 2 CPU cores with both sizes.
"""

import datetime
import sys
import tempfile
import time

import numpy as np
from absl import app, flags

from jaxlab.core import machine
from jaxlab.data import images, text

_SIZES = flags.DEFINE_list("sizes", ["small", "large"], "Keys of images.SUITE_SIZES to time.")
_GRID = flags.DEFINE_string("grid", "docs/data_image_suite.png", "PNG path for the example grid; empty skips it.")
_SEED = flags.DEFINE_integer("seed", 0, "Generator seed.")


def _time(function):
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def _write_grid(path, tasks):
    """Save one example per class (columns) for each task (rows), with task names on the left."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    max_classes = max(task.num_classes for task in tasks)
    figure, axes = plt.subplots(len(tasks), max_classes, figsize=(max_classes * 0.75, len(tasks) * 0.8))
    for row, task in enumerate(tasks):
        for label in range(max_classes):
            axis = axes[row, label]
            axis.set_xticks([])
            axis.set_yticks([])
            if label >= task.num_classes:
                axis.axis("off")
                continue
            example = task.train_images[np.flatnonzero(task.train_labels == label)[0]]
            axis.imshow(example, interpolation="nearest")
            axis.set_title(task.class_names[label], fontsize=5, pad=1.5)
        axes[row, 0].set_ylabel(task.name, fontsize=7, rotation=0, ha="right", va="center")
    figure.subplots_adjust(left=0.14, right=0.99, top=0.97, bottom=0.01, wspace=0.08, hspace=0.45)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv):
    del argv
    rows = []
    image_task_names = list(images.DEFAULT_IMAGE_TASKS)
    try:
        import sklearn  # noqa: F401

        image_task_names.append("handwritten_digits")
    except ImportError:
        pass

    grid_tasks = None
    for size in _SIZES.value:
        num_train, num_test = images.SUITE_SIZES[size]
        with tempfile.TemporaryDirectory() as root:
            tasks, build_seconds = _time(lambda: images.load_image_suite(
                image_task_names, size=size, seed=_SEED.value, root=root))
            _, read_seconds = _time(lambda: images.load_image_suite(
                image_task_names, size=size, seed=_SEED.value, root=root))
        megabytes = sum(task.train_images.nbytes + task.test_images.nbytes for task in tasks) / 1e6
        rows.append(f"| images, {len(tasks)} tasks, {size} ({num_train:,} train / {num_test:,} test per task) "
                    f"| {megabytes:.0f} MB | {build_seconds:.1f} s | {read_seconds:.2f} s |")
        if size == "small":
            grid_tasks = tasks

    with tempfile.TemporaryDirectory() as root:
        text_tasks, build_seconds = _time(lambda: text.load_text_suite(seed=_SEED.value, root=root))
        _, read_seconds = _time(lambda: text.load_text_suite(seed=_SEED.value, root=root))
    examples = sum(len(task.train_texts) + len(task.test_texts) for task in text_tasks)
    rows.append(f"| WordNet text, {len(text_tasks)} tasks (250 train / 100 test per class) | {examples:,} texts "
                f"| {build_seconds:.1f} s | {read_seconds:.2f} s |")

    if _GRID.value and grid_tasks is not None:
        _write_grid(_GRID.value, grid_tasks)

    print(f"Command: `python {' '.join(sys.argv)}`\n")
    print(f"Machine: {machine.describe_machine()}\n")
    print(f"Date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}\n")
    print("| suite | size | first build (generate, write, verify) | cached load (verify) |")
    print("| --- | --- | --- | --- |")
    print("\n".join(rows))
    print("\n| text task | classes | train | test | first train example |")
    print("| --- | --- | --- | --- | --- |")
    for task in text_tasks:
        example = task.train_texts[0].replace("|", "/")
        example = example if len(example) <= 70 else example[:67] + "..."
        print(f"| {task.name} | {task.num_classes} | {len(task.train_texts)} | {len(task.test_texts)} | "
              f"{task.class_names[task.train_labels[0]]}: {example} |")


if __name__ == "__main__":
    app.run(main)
