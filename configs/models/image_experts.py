"""The base model and eight fine-tuned experts that the model-merging methods merge.

Run:
  python -m launch.main --config=configs/models/image_experts.py --workdir=runs/image_experts
  python -m launch.main --config=configs/models/image_experts.py:quick --workdir=runs/image_experts_quick
  python -m launch.main --config=configs/models/image_experts.py:paper --workdir=runs/image_experts_paper

Variants:
  default  a 4-layer CLIP-style ViT on the native 32 x 32 images. One run took 23.5 minutes on 2 CPU cores
           and reached 75.1% average expert accuracy (docs/experts.md).
  quick    a 2-layer, width-32 ViT on 500 training images per task, for smoke tests; about a minute.
  paper    the ViT-B/32 layout of the merging papers on images upsampled to 224 x 224, with the "large"
           suite size. It is meant for an accelerator and has not been run.

The run trains the base once and caches it with its heads under $JAXLAB_DATA/image_experts/. Then it
fine-tunes one expert per task for each fine-tuning seed. A second run with the same config reads the cache.
Experiments that merge the experts call `jaxlab.models.experts.load_experts(config)` with this config.
"""

import ml_collections

from jaxlab.data.image_tasks import DEFAULT_IMAGE_TASKS


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.experiment = "image_experts"
    config.seed = 0  # Seeds the tower's initialisation and the pretraining data order, views and rotations.

    config.data = ml_collections.ConfigDict()
    config.data.tasks = tuple(DEFAULT_IMAGE_TASKS)  # The eight tasks, one expert each.
    config.data.num_train = 2000  # Training images per task (the suite's "small" size).
    config.data.num_test = 500  # Test images per task.
    config.data.suite_seed = 0  # Generator seed of the image suite.

    # The tower. Patches of 8 x 8 pixels give 16 tokens plus the class token, so a training step of 128
    # images takes 1 to 2 seconds on 2 shared CPU cores. Patches of 4 x 4 pixels (65 tokens) would cost about
    # 4 times as much per step, in proportion to the token count. Four layers of width 128 keep the whole
    # run (pretraining and 24 experts) within about half an hour.
    config.model = ml_collections.ConfigDict()
    config.model.image_size = 32  # Pixels per side; the suite's images are resized when this differs from 32.
    config.model.patch_size = 8
    config.model.hidden_size = 128
    config.model.intermediate_size = 512  # MLP width, 4 x hidden_size as in CLIP.
    config.model.num_layers = 4
    config.model.num_heads = 4
    config.model.projection_dim = 128  # Width of the normalised image embedding that the heads read.

    # Pretraining on the unlabelled training images of all tasks: the weighted sum of SimCLR's contrastive
    # loss between two augmented views of each image, source identification (which task's generator made
    # the image) and rotation prediction. Rotation prediction stays at chance within this budget, so its
    # weight is 0 here (docs/experts.md).
    config.pretrain = ml_collections.ConfigDict()
    config.pretrain.steps = 2500  # Optimizer steps; 2,500 x 128 images is 20 passes over the 16,000 images.
    config.pretrain.batch_size = 128
    config.pretrain.learning_rate = 1e-3  # Peak AdamW learning rate.
    config.pretrain.weight_decay = 0.05
    config.pretrain.warmup_steps = 150  # Linear warmup, then cosine decay to zero.
    config.pretrain.contrastive_weight = 1.0
    config.pretrain.source_weight = 1.0
    config.pretrain.rotation_weight = 0.0
    config.pretrain.temperature = 0.1  # Of the contrastive loss's cosine similarities, as in SimCLR.
    config.pretrain.min_crop_area = 0.5  # Each view is a random crop of 50-100% of the image's area.

    # Linear probe: the per-task heads on the frozen, normalised base embeddings (L-BFGS, full batch).
    config.probe = ml_collections.ConfigDict()
    config.probe.steps = 100  # L-BFGS iterations.
    config.probe.l2 = 1e-4  # Penalty (l2 / 2) * ||kernel||^2 added to the mean cross-entropy.

    # Expert fine-tuning of the whole tower with the head frozen.
    config.finetune = ml_collections.ConfigDict()
    config.finetune.epochs = 3  # 3 x 31 = 93 steps per expert at batch 64.
    config.finetune.batch_size = 64
    config.finetune.learning_rate = 3e-4  # Peak AdamW learning rate.
    config.finetune.weight_decay = 0.1  # As in the fine-tuning of the Task Arithmetic experts.
    config.finetune.warmup_fraction = 0.1  # Fraction of the steps spent in linear warmup.
    config.finetune.seeds = (0, 1, 2)  # Data-order seeds; one set of experts each.

    config.max_grad_norm = 1.0  # Global-norm gradient clipping in every stage.
    config.eval_batch_size = 250  # Images per evaluation batch.
    config.checkpoint_every = 100  # Optimizer steps between checkpoints within a stage.
    config.log_every = 10  # Optimizer steps between metric lines.

    if variant == "quick":
        config.data.num_train = 500
        config.data.num_test = 200
        config.model.hidden_size = 32
        config.model.intermediate_size = 128
        config.model.num_layers = 2
        config.model.projection_dim = 32
        config.pretrain.steps = 100
        config.pretrain.batch_size = 64
        config.finetune.epochs = 2
        config.pretrain.warmup_steps = 10
        config.finetune.batch_size = 32
        config.finetune.learning_rate = 1e-3
        config.eval_batch_size = 200
        config.checkpoint_every = 50
    elif variant == "paper":
        config.data.num_train = 20000  # The suite's "large" size.
        config.data.num_test = 4000
        # ViT-B/32 as in openai/clip-vit-base-patch32, on images upsampled bilinearly from 32 to 224 pixels.
        config.model.image_size = 224
        config.model.patch_size = 32
        config.model.hidden_size = 768
        config.model.intermediate_size = 3072
        config.model.num_layers = 12
        config.model.num_heads = 12
        config.model.projection_dim = 512
        config.pretrain.steps = 10000  # 10,000 x 256 images is 16 passes over the 160,000 images.
        config.pretrain.batch_size = 256
        config.pretrain.learning_rate = 5e-4
        config.pretrain.warmup_steps = 1000
        config.finetune.epochs = 4
        config.finetune.batch_size = 128
        config.finetune.learning_rate = 1e-4
        config.eval_batch_size = 500
        config.checkpoint_every = 500
        config.log_every = 50
    elif variant:
        raise ValueError(f"unknown variant {variant!r} of configs/models/image_experts.py; "
                         "expected '', 'quick' or 'paper'")
    return config
