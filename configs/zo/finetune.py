"""Zeroth-order fine-tuning of all-MiniLM-L6-v2 on a WordNet text task: MeZO, LeZO, Sparse-MeZO or AdamW.

Run:
  python -m launch.main --config=configs/zo/finetune.py --workdir=runs/zo_lezo
  python -m launch.main --config=configs/zo/finetune.py:mezo --workdir=runs/zo_mezo
  python -m launch.main --config=configs/zo/finetune.py:quick --workdir=runs/zo_quick

The default variant is LeZO (a quarter of the layer groups per step) on `noun_concrete` (8 classes) with
the packaged pretrained MiniLM; `mezo`, `sparse_mezo` and `adamw` change only the optimizer. `quick` trains a
random tiny BERT for 40 steps, a smoke test of the whole pipeline that takes under a minute on 2 CPU cores.
"""

import ml_collections


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.experiment = "zo_finetune"
    config.seed = 0  # Draws the task's examples, the data order and the perturbations.

    config.model = ml_collections.ConfigDict()
    # "minilm" (packaged pretrained weights), "tiny_bert" (random, for tests) or "opt" (a local Hugging Face
    # OPT checkpoint, read through a prompt with one label word per class, as MeZO fine-tunes OPT).
    config.model.name = "minilm"
    config.model.max_length = 32  # Tokens per gloss; WordNet glosses rarely need more.
    # Regex on parameter paths (e.g. "encoder/embeddings"); matching leaves stay fixed. Empty: tune all.
    config.model.frozen_pattern = ""
    config.model.checkpoint_dir = ""  # OPT only: directory with config.json, model.safetensors, tokenizer.json.
    config.model.label_words = ()  # OPT only: one single-token word per class; () derives them from class names.
    # BERT only: the cosine head starts at the class prototypes (normalised mean training embedding of each
    # class) or, zero-shot, at the embeddings of the class names ("animal", "food", ...), as MeZO starts
    # from a zero-shot prompt.
    config.model.head_init = "prototypes"

    config.task = ml_collections.ConfigDict()
    config.task.name = "noun_concrete"  # A key of jaxlab.data.text.TEXT_TASKS.
    config.task.train_per_class = 250
    config.task.test_per_class = 100

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "lezo"  # "mezo", "lezo", "sparse_mezo" or "adamw".
    config.optimizer.learning_rate = 1e-5  # Constant; MeZO uses 1e-6 to 1e-7 on OPT-13B.
    config.optimizer.epsilon = 1e-3  # SPSA perturbation scale (MeZO's default).
    config.optimizer.weight_decay = 0.0  # Not applied to biases and LayerNorm parameters.
    config.optimizer.active_fraction = 0.25  # LeZO: fraction of layer groups perturbed per step.
    config.optimizer.sparse_keep_fraction = 0.75  # Sparse-MeZO: smallest-magnitude fraction perturbed.

    config.num_steps = 2000  # Each zeroth-order step costs two forward passes.
    config.batch_size = 16
    config.eval_every = 250  # Steps between test-accuracy evaluations.
    config.eval_batch_size = 100
    config.checkpoint_every = 250  # Steps between checkpoints.

    if variant in ("mezo", "sparse_mezo"):
        config.optimizer.name = variant
    elif variant == "adamw":
        config.optimizer.name = "adamw"
        config.optimizer.learning_rate = 5e-5
        config.num_steps = 500
    elif variant == "quick":
        config.model.name = "tiny_bert"
        config.task.train_per_class = 20
        config.task.test_per_class = 10
        config.optimizer.learning_rate = 1e-3
        config.num_steps = 40
        config.batch_size = 8
        config.eval_every = 20
        config.eval_batch_size = 40
        config.checkpoint_every = 20
    elif variant:
        raise ValueError(f"unknown variant {variant!r} of configs/zo/finetune.py; expected '', 'mezo', "
                         "'sparse_mezo', 'adamw' or 'quick'")
    return config
