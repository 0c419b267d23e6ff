"""The `zo_finetune` experiment: fine-tune a sentence classifier with MeZO, LeZO, Sparse-MeZO or AdamW.

The model is all-MiniLM-L6-v2 (the packaged pretrained weights) or a random tiny BERT for smoke tests, with
a cosine head initialised from class prototypes or, zero-shot, from the embeddings of the class names. The
task is one of the offline WordNet text tasks. The run evaluates test accuracy every `eval_every` steps,
checkpoints parameters and optimizer state, and resumes to the same results. Outputs: `results.json`,
`metrics.jsonl`, TensorBoard events, `accuracy.png`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from jaxlab.core import checkpoint as checkpoint_lib
from jaxlab.core import config as config_lib
from jaxlab.core import metrics as metrics_lib
from jaxlab.core import progress as progress_lib
from jaxlab.data import batching
from jaxlab.data import text as text_lib
from jaxlab.models import bert
from jaxlab.models import hf
from jaxlab.models import minilm
from jaxlab.zo import classifier as classifier_lib
from jaxlab.zo import groups as groups_lib
from jaxlab.zo import prompt_lm
from jaxlab.zo import spsa

MODELS = ("minilm", "tiny_bert", "opt")
HEAD_INITS = ("prototypes", "class_names")
OPTIMIZERS = ("mezo", "lezo", "sparse_mezo", "adamw")


def validate(config: ml_collections.ConfigDict) -> None:
    """Raise `ConfigError` naming the first invalid field of a `zo_finetune` config."""
    config_lib.require_int(config, "seed", min=0)
    config_lib.require_choice(config, "model.name", MODELS)
    config_lib.require_int(config, "model.max_length", min=2, max=512)
    config_lib.require_str(config, "model.frozen_pattern", nonempty=False)
    config_lib.require(config, "model.frozen_pattern", _is_regex, "a valid Python regular expression")
    if config.model.name == "opt":
        config_lib.require(config, "model.checkpoint_dir", _is_opt_checkpoint_dir,
                           "a local Hugging Face OPT directory with config.json, tokenizer.json and "
                           "model.safetensors (or a sharded model.safetensors.index.json)")
        config_lib.require(config, "model.label_words", lambda w: isinstance(w, (tuple, list)) and all(
            isinstance(word, str) and word for word in w),
            "a tuple of one non-empty label word per class, or () for words from the class names")
    else:
        # BERT models read classes from a cosine head, so OPT-only fields would be silently ignored.
        config_lib.require(config, "model.label_words", lambda w: not w,
                           f"() for model.name={config.model.name!r}; label words apply to model.name='opt' only")
        config_lib.require(config, "model.checkpoint_dir", lambda d: not d,
                           f"'' for model.name={config.model.name!r}; the checkpoint directory applies to "
                           "model.name='opt' only")
    config_lib.require_choice(config, "task.name", tuple(text_lib.TEXT_TASKS))
    config_lib.require_choice(config, "model.head_init", HEAD_INITS)
    if config.model.name == "opt":
        # OPT reads the classes through its prompt and label words, so it has no head to initialise.
        config_lib.require(config, "model.head_init", lambda h: h == "prototypes",
                           "'prototypes' (the default) for model.name='opt', which has no classification head")
        num_classes = len(text_lib.TEXT_TASKS[config.task.name].class_names)
        config_lib.require(config, "model.label_words", lambda w: len(w) in (0, num_classes),
                           f"() or {num_classes} words, one per class of task {config.task.name!r}")
    config_lib.require_int(config, "task.train_per_class", min=1)
    config_lib.require_int(config, "task.test_per_class", min=1)

    name = config_lib.require_choice(config, "optimizer.name", OPTIMIZERS)
    config_lib.require_float(config, "optimizer.learning_rate", gt=0.0, max=1.0)
    config_lib.require_float(config, "optimizer.weight_decay", min=0.0, max=1.0)
    if name != "adamw":
        config_lib.require_float(config, "optimizer.epsilon", gt=0.0, max=1.0)
    if name == "lezo":
        config_lib.require_float(config, "optimizer.active_fraction", gt=0.0, max=1.0)
    if name == "sparse_mezo":
        config_lib.require_float(config, "optimizer.sparse_keep_fraction", gt=0.0, max=1.0)

    config_lib.require_int(config, "num_steps", min=1)
    config_lib.require_int(config, "batch_size", min=1)
    config_lib.require_int(config, "eval_every", min=1)
    config_lib.require_int(config, "eval_batch_size", min=1)
    config_lib.require_int(config, "checkpoint_every", min=1)
    num_train = config.task.train_per_class * len(text_lib.TEXT_TASKS[config.task.name].class_names)
    config_lib.require(config, "batch_size", lambda b: b <= num_train,
                       f"an int no larger than the {num_train} training examples (train_per_class x classes)")


def _is_opt_checkpoint_dir(directory) -> bool:
    def has(name: str) -> bool:
        return os.path.isfile(os.path.join(directory, name))

    return (isinstance(directory, str) and has("config.json") and has("tokenizer.json")
            and (has("model.safetensors") or has("model.safetensors.index.json")))


def _is_regex(pattern: str) -> bool:
    try:
        re.compile(pattern)
    except re.error:
        return False
    return True


def zo_config(config: ml_collections.ConfigDict) -> spsa.ZOConfig:
    """Build the `ZOConfig` of a MeZO, LeZO or Sparse-MeZO run."""
    optimizer = config.optimizer
    return spsa.ZOConfig(
        epsilon=float(optimizer.epsilon),
        learning_rate=float(optimizer.learning_rate),
        weight_decay=float(optimizer.weight_decay),
        active_fraction=float(optimizer.active_fraction) if optimizer.name == "lezo" else 1.0,
        sparse_keep_fraction=float(optimizer.sparse_keep_fraction) if optimizer.name == "sparse_mezo" else None,
    )


def _load_encoder(config) -> tuple[bert.BertModel, dict, Any]:
    """Return the pooler-free encoder, its params and a tokenizer for the configured BERT model."""
    model_dir = minilm.find_model_dir()
    tokenizer = minilm.load_tokenizer(model_dir, config.model.max_length)
    if config.model.name == "minilm":
        _, params = hf.load_hf(model_dir, config=bert.MINILM_L6)
        return (*classifier_lib.without_pooler(bert.MINILM_L6, params), tokenizer)

    # A random tiny BERT over the MiniLM vocabulary, so the real tokenizer applies.
    tiny = dataclasses.replace(bert.TINY, vocab_size=tokenizer.get_vocab_size(),
                               max_position_embeddings=max(64, config.model.max_length), add_pooling_layer=False)
    module = bert.BertModel(tiny)
    return module, module.init_params(jax.random.fold_in(jax.random.key(config.seed), 1)), tokenizer


def build_model(config, task) -> tuple[Any, dict, Callable[[list[str]], dict[str, np.ndarray]]]:
    """Return (classifier, initial params, tokenize) for the configured model and task.

    BERT models get a cosine head at the class prototypes (`model.head_init="prototypes"`) or at the
    embeddings of the class names (`"class_names"`, a zero-shot classifier). An OPT model reads the classes
    from its next-token logits over one label word per class, the prompt-based setup in which MeZO fine-tunes
    OPT.
    """
    if config.model.name == "opt":
        checkpoint_dir = config.model.checkpoint_dir
        module, params = hf.load_hf(checkpoint_dir)
        words = tuple(config.model.label_words) or None
        template = prompt_lm.gloss_template(task.class_names, words)
        tokenizer = prompt_lm.load_tokenizer(os.path.join(checkpoint_dir, "tokenizer.json"))
        model = prompt_lm.PromptClassifier(module, tokenizer, template, config.model.max_length)
        return model, params, model.tokenize

    encoder, encoder_params, tokenizer = _load_encoder(config)
    model = classifier_lib.TextClassifier(encoder, task.num_classes)

    def tokenize(texts):
        return minilm.tokenize(tokenizer, texts)

    if config.model.head_init == "class_names":
        texts, labels = list(text_lib.class_words(task.class_names)), np.arange(task.num_classes)
    else:
        texts, labels = task.train_texts, np.asarray(task.train_labels)
    embeddings = classifier_lib.embed_all(model, encoder_params, tokenize(texts), config.eval_batch_size)
    head = classifier_lib.prototype_head(embeddings, labels, task.num_classes)
    return model, {"encoder": encoder_params, "head": jax.tree.map(jnp.asarray, head)}, tokenize


def _state_template(optimizer_name: str, trainable: dict, adamw_init) -> dict:
    """Return the checkpointed tree's structure; the ZO optimizer's state is its step, the checkpoint step."""
    state = {"params": trainable, "initial_accuracy": np.zeros((), np.float64)}
    if optimizer_name == "adamw":
        state["opt_state"] = adamw_init(trainable)
    return state


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Fine-tune, evaluate and write results; resume from `workdir/checkpoints` when present."""
    task = text_lib.load_text_task(config.task.name, train_per_class=config.task.train_per_class,
                                   test_per_class=config.task.test_per_class, seed=config.seed)
    model, params, tokenize = build_model(config, task)
    train_tokens = tokenize(task.train_texts)
    test_tokens = tokenize(task.test_texts)
    train_labels = np.asarray(task.train_labels, np.int32)
    test_labels = np.asarray(task.test_labels, np.int32)
    trainable, frozen = classifier_lib.split_trainable(params, config.model.frozen_pattern)

    def loss_fn(trainable_params, batch):
        tokens, labels = batch
        return model.loss(classifier_lib.merge_trainable(trainable_params, frozen), tokens, labels)

    logits_fn = jax.jit(lambda p, tokens: model.logits(classifier_lib.merge_trainable(p, frozen), tokens))

    def evaluate(trainable_params) -> float:
        return classifier_lib.accuracy(model, trainable_params, test_tokens, test_labels, config.eval_batch_size,
                                       logits_fn=logits_fn)

    root_key = jax.random.key(config.seed)
    name = config.optimizer.name
    if name == "adamw":
        optimizer, adamw_step = spsa.adamw_step(loss_fn, float(config.optimizer.learning_rate),
                                                float(config.optimizer.weight_decay))
        adamw_init = optimizer.init
    else:
        zo = zo_config(config)
        groups = groups_lib.group_parameters(trainable)
        logging.info("Layer groups (%d, %d drawn per step):\n%s", groups.num_groups,
                     zo.num_active(groups.num_groups), groups.describe())
        zo_step = spsa.make_step(loss_fn, groups, zo)
        adamw_init = None

    checkpointer = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=2)
    start_step = 0
    initial_accuracy = None
    if checkpointer.latest_step() is not None:
        restored = checkpointer.restore(_state_template(name, trainable, adamw_init))
        start_step = checkpointer.latest_step()
        trainable = restored["params"]
        initial_accuracy = float(restored["initial_accuracy"])
        logging.info("Resumed from checkpoint %d.", start_step)
    if initial_accuracy is None:
        initial_accuracy = evaluate(trainable)
        logging.info("Initial test accuracy: %.4f", initial_accuracy)

    if name == "adamw":
        opt_state = restored["opt_state"] if start_step else optimizer.init(trainable)
    else:
        zo_state = spsa.init(trainable, jax.random.fold_in(root_key, 2), zo)
        zo_state = zo_state._replace(step=jnp.asarray(start_step, jnp.int32))

    writer = metrics_lib.MetricWriter(workdir, resume_from_step=start_step)
    batches_per_epoch = batching.num_batches(len(train_labels), config.batch_size)

    def batch_at(step: int):
        # Data order depends only on (seed, epoch), so a resumed run draws the same batches.
        epoch, index = divmod(step, batches_per_epoch)
        order = batching.epoch_permutation(len(train_labels), config.seed, epoch)
        rows = order[index * config.batch_size:(index + 1) * config.batch_size]
        return {key: value[rows] for key, value in train_tokens.items()}, train_labels[rows]

    def save(step: int):
        state = {"params": trainable, "initial_accuracy": np.asarray(initial_accuracy, np.float64)}
        if name == "adamw":
            state["opt_state"] = opt_state
        checkpointer.save(step, state)

    step_times = []
    bar = progress_lib.progress(config.num_steps, desc=f"{name} on {task.name}", unit="step", initial=start_step)
    with bar:
        for step in range(start_step, config.num_steps):
            batch = batch_at(step)
            started = time.perf_counter()
            if name == "adamw":
                trainable, opt_state, loss = adamw_step(trainable, opt_state, batch)
                loss = float(loss)
                scalars = {"loss": loss}
            else:
                trainable, zo_state, step_metrics = zo_step(trainable, zo_state, batch)
                if not bool(step_metrics.finite):
                    raise FloatingPointError(
                        f"non-finite projected gradient at step {step} (loss+ {float(step_metrics.loss_plus)}, "
                        f"loss- {float(step_metrics.loss_minus)}); lower optimizer.learning_rate or raise "
                        "optimizer.epsilon")
                loss = float(step_metrics.loss_plus)
                scalars = {"loss": loss, "projected_grad": float(step_metrics.projected_grad)}
            step_times.append(time.perf_counter() - started)
            bar.update(1)

            done = step + 1
            if done % config.eval_every == 0 or done == config.num_steps:
                scalars["test_accuracy"] = evaluate(trainable)
                logging.info("step %d: loss %.4f, test accuracy %.4f", done, loss, scalars["test_accuracy"])
            writer.write_scalars(done, scalars)
            if done % config.checkpoint_every == 0 or done == config.num_steps:
                save(done)

    writer.close()
    checkpointer.close()
    final_accuracy = evaluate(trainable)
    curve = _accuracy_curve(workdir)
    results = {
        "experiment": config.experiment,
        "model": config.model.name,
        # What initial_test_accuracy measures: the prototype head, the zero-shot class-name head, or OPT's prompt.
        "head_init": config.model.head_init if config.model.name != "opt" else "prompt",
        "task": task.name,
        "num_classes": task.num_classes,
        "optimizer": name,
        "num_steps": config.num_steps,
        "forward_passes": config.num_steps * 2,
        "initial_test_accuracy": initial_accuracy,
        "final_test_accuracy": final_accuracy,
        "accuracy_curve": curve,
        "trainable_parameters": int(sum(np.size(v) for v in jax.tree.leaves(trainable))),
        "mean_step_time_s": float(np.mean(step_times[1:])) if len(step_times) > 1 else None,
    }
    metrics_lib.write_results(workdir, results)
    if curve["step"]:
        metrics_lib.plot_lines(os.path.join(workdir, "accuracy.png"),
                               [{"x": curve["step"], "y": curve["test_accuracy"], "label": name}],
                               xlabel="step", ylabel="test accuracy", title=f"{name} on {task.name}")
    return results


def _accuracy_curve(workdir: str) -> dict[str, list]:
    """Read the evaluated steps back from metrics.jsonl, so a resumed run reports the whole curve."""
    steps, accuracies = [], []
    with open(os.path.join(workdir, metrics_lib.METRICS_FILE)) as file:
        for line in file:
            record = json.loads(line)
            if "test_accuracy" in record:
                steps.append(record["step"])
                accuracies.append(record["test_accuracy"])
    return {"step": steps, "test_accuracy": accuracies}
