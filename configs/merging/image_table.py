"""The multi-task merging results table on the offline image suite (experiment `merging_table`).

Run:
  python -m launch.main --config=configs/merging/image_table.py --workdir=runs/merging_table
  python -m launch.main --config=configs/merging/image_table.py:quick --workdir=runs/merging_table_quick

Variants:
  default  the default `image_experts` config (8 tasks, 4-layer ViT) with fine-tuning seeds 0, 1 and 2;
           500 AdaMerging steps per granularity and seed. One run took 15 minutes on 2 CPU cores with the
           experts cached (docs/merging.md).
  quick    the quick `image_experts` config with one fine-tuning seed and 10 AdaMerging steps, for tests;
           80 s on 2 CPU cores, building the quick experts included.

The experts come from `jaxlab.models.experts.load_experts`, which trains and caches what is not cached yet.
"""

import os

import ml_collections

from jaxlab.core import config as config_lib

_EXPERTS_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "models", "image_experts.py")


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    if variant not in ("", "quick"):
        raise ValueError(f"unknown variant {variant!r} of configs/merging/image_table.py; expected '' or 'quick'")

    config = ml_collections.ConfigDict()
    config.experiment = "merging_table"
    config.seed = 0  # Seeds the draws of the Fisher, RegMean and AdaMerging batches.

    # The base, heads and experts: an `image_experts` config (configs/models/image_experts.py).
    config.experts = config_lib.load_config_file(_EXPERTS_CONFIG, variant)
    config.experts.finetune.seeds = (0, 1, 2)

    # Rows of the table; any subset of jaxlab.merging.table_experiment.METHODS.
    config.methods = ("Individual", "Weight Averaging", "Fisher Merging", "RegMean", "Task Arithmetic",
                      "Ties-Merging", "Task-wise AdaMerging", "Layer-wise AdaMerging")

    # Task Arithmetic's and Ties-Merging's lambda: the candidate with the best average accuracy on the
    # labelled validation split, as both papers select it. A grid of one value fixes lambda (fusion-bench
    # 0.2.33's task_arithmetic.yaml and ties_merging.yaml use 0.3).
    config.task_arithmetic = ml_collections.ConfigDict()
    config.task_arithmetic.scaling_grid = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)

    config.ties = ml_collections.ConfigDict()
    config.ties.keep_fraction = 0.2  # Top 20% of each task vector by magnitude (fusion-bench's threshold 20).
    config.ties.scaling_grid = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)

    # Labelled images per task of the suite's validation split, drawn apart from the train and test splits.
    config.validation = ml_collections.ConfigDict()
    config.validation.num_examples = 500

    # Empirical diagonal Fisher on labelled training images of each task.
    config.fisher = ml_collections.ConfigDict()
    config.fisher.num_examples = 256  # Training images per task.
    config.fisher.batch_size = 32  # Per-example gradients computed together (vmap).

    # RegMean Gram matrices of every Dense layer's inputs on training images.
    config.regmean = ml_collections.ConfigDict()
    config.regmean.num_examples = 256  # Training images per task; must be a multiple of batch_size.
    config.regmean.batch_size = 64
    config.regmean.alpha = 0.95  # Off-diagonal scale of the Gram matrices (fusion-bench's CLIP setting).

    # AdaMerging on the unlabelled test images, backbone only (heads stay per task).
    config.adamerging = ml_collections.ConfigDict()
    config.adamerging.steps = 500  # Adam steps per granularity and fine-tuning seed, as in the AdaMerging paper.
    config.adamerging.batch_size = 16  # Unlabelled test images per task and step.
    config.adamerging.learning_rate = 1e-3
    config.adamerging.init_value = 0.3
    config.adamerging.clamp = True  # Merge with clip(lambda, 0, 1).

    config.eval_batch_size = 250  # Images per evaluation forward pass.

    if variant == "quick":
        config.experts.finetune.seeds = (0,)
        config.fisher.num_examples = 16  # The per-example gradients dominate the quick run's time.
        config.fisher.batch_size = 16
        config.regmean.num_examples = 64
        config.adamerging.steps = 10
        config.task_arithmetic.scaling_grid = (0.3, 0.5)
        config.ties.scaling_grid = (0.3, 0.5)
        config.validation.num_examples = 100
        config.eval_batch_size = 200
    return config
