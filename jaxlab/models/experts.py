"""The `image_experts` experiment: a pretrained CLIP-style base and one fine-tuned expert per image task.

This builds the models that the model-merging methods (Task Arithmetic,
Ties-Merging, AdaMerging, WEMoE, Surgery, DAM) merge, in three stages:

1. Pretraining without the tasks' labels. A `CLIPVisionModel` is trained on
   the unlabelled training images of all tasks with a weighted sum of up to
   three objectives on its normalised embedding: SimCLR's contrastive loss
   between two augmented views of each image (Chen et al., ICML 2020), source
   identification (which task generator an image came from, a linear head)
   and rotation prediction (Gidaris et al., ICLR 2018; a linear head predicts
   by which multiple of 90 degrees the image was turned). No class label is
   used, so the base is a general feature extractor and not already a
   multi-task model.
2. Heads. For each task a linear head is fit on the frozen, normalised base
   embeddings (a linear probe with L-BFGS and an L2 penalty).
3. Experts. For each task and fine-tuning seed, the head is frozen and the
   whole tower is fine-tuned with AdamW and a warmup-cosine schedule, as in
   LP-FT (Kumar et al., ICLR 2022) and the merging papers, whose experts share
   frozen zero-shot heads.

Every stage checkpoints with orbax and resumes. The base with its heads, and
the experts of each fine-tuning seed, are cached under `$JAXLAB_DATA/image_experts/`
with a manifest keyed by the config sections that produced them, so that
`load_experts(config)` trains on first use and reads the cache afterwards.
`run(config, workdir)` builds (or reads) everything and writes `results.json`
and `results.md` with the per-task accuracy of the base with its linear-probe
heads and of each expert on its own task (the "Individual" row of the merging
papers).
"""

from __future__ import annotations

import functools
import math
import os
import shutil
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import flax.traverse_util
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from jaxlab.core import cache
from jaxlab.core import checkpoint as checkpoint_lib
from jaxlab.core import config as config_lib
from jaxlab.core import metrics as metrics_lib
from jaxlab.core import progress as progress_lib
from jaxlab.data import batching
from jaxlab.data import images as images_lib
from jaxlab.models import classification
from jaxlab.models.clip import CLIPVisionConfig, CLIPVisionModel

PyTree = Any
EXPERIMENT = "image_experts"
# Bump when training changes so that cached artefacts of the old code are not read.
ARTEFACT_VERSION = 2
NUM_ROTATIONS = 4  # Rotation classes of the pretext task: 0, 90, 180 and 270 degrees.
# Brightness and contrast of each contrastive view are jittered by up to this fraction. Hue is never
# jittered, because the `colours` task names hues.
VIEW_JITTER = 0.2
# A crop keeps at least this fraction of the image's width and of its height.
MIN_CROP_SIDE = 0.3
# Multiplies the pretraining heads' logits, which a linear map of unit-norm embeddings keeps small otherwise;
# 1 / 0.07 is the initial logit scale of CLIP (Radford et al., 2021).
PRETRAIN_LOGIT_SCALE = 1 / 0.07
# The pretraining losses, each weighted by config.pretrain.<name>_weight. A weight of 0 skips the objective.
PRETRAIN_OBJECTIVES = ("contrastive", "source", "rotation")
# fold_in indices of the per-purpose keys under the run's seed.
_KEY_INIT, _KEY_STEPS, _KEY_TEST_ROTATIONS = 0, 1, 2


class ExpertSet(NamedTuple):
    """The models of one fine-tuning seed; unpack as `model, base_params, heads, expert_params = ...`.

    Attributes:
        model: the `CLIPVisionModel` shared by the base and all experts.
        base_params: the pretrained tower's parameters (the "params" collection).
        heads: one frozen linear head per task, in `config.data.tasks` order; each a dict with
            float32 kernel [projection_dim, num_classes] and bias [num_classes]
            (see `jaxlab.models.classification`).
        expert_params: one fine-tuned tower per task, same order and tree structure as `base_params`.
    """

    model: CLIPVisionModel
    base_params: PyTree
    heads: list[dict[str, jax.Array]]
    expert_params: list[PyTree]


class TrainState(NamedTuple):
    """The checkpointed state of one training stage.

    Attributes:
        step: int32 scalar, the number of optimizer steps taken.
        params: the trained parameters.
        opt_state: the optax state of those parameters.
    """

    step: jax.Array
    params: PyTree
    opt_state: PyTree


# ---------------------------------------------------------------------------
# Config


def validate(config: ml_collections.ConfigDict) -> None:
    """Raise `ConfigError` naming the first invalid field of an `image_experts` config."""
    config_lib.require_int(config, "seed", min=0)

    config_lib.require_int(config, "data.suite_seed", min=0)
    tasks = config_lib.require(
        config, "data.tasks",
        lambda value: (isinstance(value, (list, tuple)) and len(value) >= 1
                       and all(name in images_lib.IMAGE_TASKS for name in value)
                       and len(set(value)) == len(value)),
        f"a non-empty list of distinct task names from {sorted(images_lib.IMAGE_TASKS)}")
    max_classes = max(len(images_lib.IMAGE_TASKS[name].class_names) for name in tasks)
    num_train = config_lib.require_int(config, "data.num_train", min=max_classes)
    config_lib.require_int(config, "data.num_test", min=max_classes)

    image_size = config_lib.require_int(config, "model.image_size", min=1)
    config_lib.require(config, "model.patch_size",
                       lambda value: isinstance(value, int) and value >= 1 and image_size % value == 0,
                       f"an int >= 1 that divides model.image_size={image_size}")
    hidden_size = config_lib.require_int(config, "model.hidden_size", min=1)
    config_lib.require_int(config, "model.intermediate_size", min=1)
    config_lib.require_int(config, "model.num_layers", min=1)
    config_lib.require(config, "model.num_heads",
                       lambda value: isinstance(value, int) and value >= 1 and hidden_size % value == 0,
                       f"an int >= 1 that divides model.hidden_size={hidden_size}")
    config_lib.require_int(config, "model.projection_dim", min=1)

    pretrain_steps = config_lib.require_int(config, "pretrain.steps", min=1)
    config_lib.require_int(config, "pretrain.batch_size", min=1,
                           max=num_train * len(tasks))
    config_lib.require_float(config, "pretrain.learning_rate", gt=0.0, max=1.0)
    config_lib.require_float(config, "pretrain.weight_decay", min=0.0, max=1.0)
    config_lib.require_int(config, "pretrain.warmup_steps", min=0, max=pretrain_steps - 1)
    weights = [config_lib.require_float(config, f"pretrain.{name}_weight", min=0.0) for name in PRETRAIN_OBJECTIVES]
    if not any(weights):
        raise config_lib.ConfigError(f"pretrain.{PRETRAIN_OBJECTIVES[0]}_weight", 0.0,
                                     "a positive weight in at least one of "
                                     + ", ".join(f"pretrain.{name}_weight" for name in PRETRAIN_OBJECTIVES)
                                     + " (all are 0)")
    config_lib.require_float(config, "pretrain.temperature", gt=0.0)
    config_lib.require_float(config, "pretrain.min_crop_area", gt=0.0, max=1.0)

    config_lib.require_int(config, "probe.steps", min=1)
    config_lib.require_float(config, "probe.l2", min=0.0)

    config_lib.require_int(config, "finetune.epochs", min=1)
    config_lib.require_int(config, "finetune.batch_size", min=1, max=num_train)
    config_lib.require_float(config, "finetune.learning_rate", gt=0.0, max=1.0)
    config_lib.require_float(config, "finetune.weight_decay", min=0.0, max=1.0)
    config_lib.require_float(config, "finetune.warmup_fraction", min=0.0, lt=1.0)
    config_lib.require(
        config, "finetune.seeds",
        lambda value: (isinstance(value, (list, tuple)) and len(value) >= 1
                       and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value)
                       and len(set(value)) == len(value)),
        "a non-empty list of distinct ints >= 0")

    config_lib.require_float(config, "max_grad_norm", gt=0.0)
    config_lib.require_int(config, "eval_batch_size", min=1)
    config_lib.require_int(config, "checkpoint_every", min=1)
    config_lib.require_int(config, "log_every", min=1)


def vision_config(config: ml_collections.ConfigDict) -> CLIPVisionConfig:
    """Build the tower's `CLIPVisionConfig` from `config.model`."""
    model = config.model
    return CLIPVisionConfig(image_size=model.image_size, patch_size=model.patch_size,
                            hidden_size=model.hidden_size, intermediate_size=model.intermediate_size,
                            num_hidden_layers=model.num_layers, num_attention_heads=model.num_heads,
                            projection_dim=model.projection_dim)


def _section(config: ml_collections.ConfigDict, name: str) -> dict[str, Any]:
    return config[name].to_dict()


def base_spec(config: ml_collections.ConfigDict) -> cache.ArtifactSpec:
    """Return the cache identity of the base and its heads, built from every config section that shapes them."""
    params = {"data": _section(config, "data"), "model": _section(config, "model"),
              "pretrain": _section(config, "pretrain"), "probe": _section(config, "probe"),
              "max_grad_norm": config.max_grad_norm}
    return cache.ArtifactSpec(name=f"{EXPERIMENT}/base", version=ARTEFACT_VERSION, params=params,
                              seed=config.seed)


def experts_spec(config: ml_collections.ConfigDict, finetune_seed: int) -> cache.ArtifactSpec:
    """Return the cache identity of one fine-tuning seed's experts: the base's key plus the fine-tuning settings."""
    finetune = _section(config, "finetune")
    del finetune["seeds"]  # Each seed is its own artefact, so adding seeds reuses the existing ones.
    params = {"base_key": base_spec(config).key, "finetune": finetune, "finetune_seed": finetune_seed}
    return cache.ArtifactSpec(name=f"{EXPERIMENT}/experts", version=ARTEFACT_VERSION, params=params,
                              seed=config.seed)


def load_tasks(config: ml_collections.ConfigDict) -> list[images_lib.ImageTaskData]:
    """Load (or generate and cache) the image tasks that `config.data` names."""
    return images_lib.load_image_suite(tuple(config.data.tasks), num_train=config.data.num_train,
                                       num_test=config.data.num_test, seed=config.data.suite_seed)


# ---------------------------------------------------------------------------
# Training


class OptimizerSettings(NamedTuple):
    """Hyperparameters of one stage's optimizer; hashable, so jitted steps take it as a static argument."""

    learning_rate: float  # Peak learning rate.
    weight_decay: float  # AdamW's decoupled weight decay.
    warmup_steps: int  # Steps of linear warmup from zero before the cosine decay.
    total_steps: int  # Steps until the cosine schedule reaches zero.
    max_grad_norm: float  # Global-norm clipping threshold.


def make_optimizer(settings: OptimizerSettings) -> optax.GradientTransformation:
    """AdamW after global-norm clipping, with linear warmup then cosine decay to zero."""
    schedule = optax.warmup_cosine_decay_schedule(0.0, settings.learning_rate, settings.warmup_steps,
                                                  settings.total_steps, 0.0)
    return optax.chain(optax.clip_by_global_norm(settings.max_grad_norm),
                       optax.adamw(schedule, weight_decay=settings.weight_decay))


def make_frozen_head_optimizer(settings: OptimizerSettings) -> optax.GradientTransformation:
    """`make_optimizer` on the "tower" entry of {"tower", "head"} parameters; the head gets zero updates."""
    return optax.multi_transform(
        {"train": make_optimizer(settings), "frozen": optax.set_to_zero()},
        lambda params: {"tower": jax.tree.map(lambda _: "train", params["tower"]),
                        "head": jax.tree.map(lambda _: "frozen", params["head"])})


def _epoch_batch(num_examples: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Return the example indices of optimizer step `step` (dropping each epoch's partial batch)."""
    steps_per_epoch = batching.num_batches(num_examples, batch_size)
    epoch, index = divmod(step, steps_per_epoch)
    order = batching.epoch_permutation(num_examples, seed, epoch)
    return order[index * batch_size:(index + 1) * batch_size]


def _train_stage(
    stage: str,
    state: TrainState,
    train_step: Callable[[TrainState, Any], tuple[TrainState, dict[str, jax.Array]]],
    batch_at: Callable[[int], Any],
    num_steps: int,
    checkpoint_dir: Path,
    config: ml_collections.ConfigDict,
    workdir: str | None,
    metrics_offset: int,
) -> TrainState:
    """Run `train_step` from the latest checkpoint in `checkpoint_dir` (or `state`) up to `num_steps`.

    Checkpoints every `config.checkpoint_every` steps and at the end, so that a
    killed stage restarts where it stopped and a finished one is read back
    without training. Metrics go to `workdir/metrics.jsonl` under `<stage>/`
    names when `workdir` is given, at step `metrics_offset + step`, where the
    offset places the stages one after another on the run's one step axis.
    """
    with checkpoint_lib.Checkpointer(checkpoint_dir, max_to_keep=2) as checkpointer:
        start = checkpointer.latest_step()
        if start is not None:
            state = checkpointer.restore(state)
            logging.info("Stage %s resumes at step %d of %d.", stage, start, num_steps)
        start = int(start or 0)
        if start >= num_steps:
            return state

        writer = metrics_lib.MetricWriter(workdir, resume_from_step=metrics_offset + start) if workdir else None
        bar = progress_lib.progress(num_steps, desc=stage, unit="step", initial=start)
        try:
            for step in range(start, num_steps):
                state, step_metrics = train_step(state, batch_at(step))
                done = step + 1
                log = done % config.log_every == 0 or done == num_steps
                save = done % config.checkpoint_every == 0 or done == num_steps
                if log or save:
                    # Checked before every save too, so that no checkpoint holds diverged parameters.
                    scalars = {name: float(value) for name, value in step_metrics.items()}
                    if not all(math.isfinite(value) for value in scalars.values()):
                        raise FloatingPointError(
                            f"Stage {stage} has non-finite metrics {scalars} at step {done}. Lower the "
                            "learning rate or check the inputs.")
                if log:
                    bar.set_postfix(scalars)
                    if writer is not None:
                        named = {f"{stage}/{name}": value for name, value in scalars.items()}
                        writer.write_scalars(metrics_offset + done, named)
                if save:
                    checkpointer.save(done, state)
                bar.update(1)
        finally:
            bar.close()
            if writer is not None:
                writer.close()
    return state


def _rotate(images: jax.Array, rotations: jax.Array) -> jax.Array:
    """Rotate each NHWC image by `rotations[i]` quarter turns counter-clockwise."""
    turned = jnp.stack([jnp.rot90(images, k, axes=(1, 2)) for k in range(NUM_ROTATIONS)])
    return turned[rotations, jnp.arange(images.shape[0])]


def augment_views(key: jax.Array, images: jax.Array, min_crop_area: float) -> jax.Array:
    """Return one random view of each uint8 NHWC image, for the contrastive objective.

    A view is SimCLR's random resized crop (area fraction in [min_crop_area, 1],
    aspect ratio in [3/4, 4/3], resized back bilinearly) followed by brightness
    and contrast jitter of up to `VIEW_JITTER`. There is no flip and no hue
    change, because the glyph, orientation and colour tasks' labels change under
    them.
    """
    if not 0 < min_crop_area <= 1:
        raise ValueError(f"min_crop_area={min_crop_area!r} must lie in (0, 1]. It is the smallest fraction of the "
                         "image's area that a crop keeps, e.g. 0.5.")
    batch, height, width, channels = images.shape
    key_area, key_aspect, key_x, key_y, key_jitter = jax.random.split(key, 5)
    area = jax.random.uniform(key_area, (batch,), minval=min_crop_area, maxval=1.0)
    log_aspect = jax.random.uniform(key_aspect, (batch,), minval=math.log(3 / 4), maxval=math.log(4 / 3))
    crop_width = jnp.clip(jnp.sqrt(area * jnp.exp(log_aspect)), MIN_CROP_SIDE, 1.0) * width
    crop_height = jnp.clip(jnp.sqrt(area / jnp.exp(log_aspect)), MIN_CROP_SIDE, 1.0) * height
    left = jax.random.uniform(key_x, (batch,)) * (width - crop_width)
    top = jax.random.uniform(key_y, (batch,)) * (height - crop_height)

    def resized_crop(image, crop_height, crop_width, top, left):
        scale = jnp.stack([height / crop_height, width / crop_width])
        return jax.image.scale_and_translate(image, image.shape, (0, 1), scale, -jnp.stack([top, left]) * scale,
                                             "linear")

    views = jax.vmap(resized_crop)(images.astype(jnp.float32), crop_height, crop_width, top, left)
    contrast, brightness = jnp.moveaxis(
        jax.random.uniform(key_jitter, (batch, 2), minval=-VIEW_JITTER, maxval=VIEW_JITTER), 1, 0)
    mean = views.mean(axis=(1, 2, 3), keepdims=True)
    views = (views - mean) * (1 + contrast[:, None, None, None]) + mean + 255 * brightness[:, None, None, None]
    return jnp.clip(jnp.round(views), 0, 255).astype(jnp.uint8)


def contrastive_loss(features_a: jax.Array, features_b: jax.Array, temperature: float
                     ) -> tuple[jax.Array, jax.Array]:
    """Compute SimCLR's NT-Xent loss of two views' unit-norm features [batch, dim] (Chen et al., ICML 2020).

    Each of the 2 * batch features must pick out the other view of its image
    among the 2 * batch - 1 others by cosine similarity / temperature.

    Returns:
        The mean cross-entropy and the fraction of features whose nearest other feature is their pair.
    """
    features = jnp.concatenate([features_a, features_b])
    batch = features_a.shape[0]
    logits = features @ features.T / temperature
    logits = jnp.where(jnp.eye(2 * batch, dtype=bool), -jnp.inf, logits)
    pairs = jnp.concatenate([jnp.arange(batch, 2 * batch), jnp.arange(batch)])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, pairs).mean()
    return loss, jnp.mean(jnp.argmax(logits, axis=-1) == pairs)


class PretrainSettings(NamedTuple):
    """Weights and settings of the pretraining objectives, hashable so that the jitted step takes them as static."""

    contrastive_weight: float
    source_weight: float
    rotation_weight: float
    temperature: float  # Temperature of the contrastive loss.
    min_crop_area: float  # Smallest area fraction of a contrastive view's crop.


def pretrain(config: ml_collections.ConfigDict, model: CLIPVisionModel,
             tasks: Sequence[images_lib.ImageTaskData], checkpoint_dir: Path,
             workdir: str | None = None, metrics_offset: int = 0) -> tuple[PyTree, dict[str, float]]:
    """Pretrain the tower on the training images of all tasks without their labels.

    The loss is the weighted sum of the objectives in `PRETRAIN_OBJECTIVES`
    whose weight in `config.pretrain` is positive: the contrastive loss between
    two views of each image (`augment_views`, `contrastive_loss`), the
    source head's cross-entropy (which task's generator produced the image)
    and the rotation head's cross-entropy (by which multiple of 90 degrees the
    image was turned; Gidaris et al., ICLR 2018). Both heads are linear maps of
    the normalised embedding, trained with the tower.

    Returns:
        The tower's parameters and, for each enabled head, its accuracy on the test images of all tasks.
    """
    settings = config.pretrain
    pool = np.concatenate([task.train_images for task in tasks])
    sources = np.concatenate([np.full(len(task.train_images), index, np.int32) for index, task in enumerate(tasks)])
    key_root = jax.random.key(config.seed)
    objectives = PretrainSettings(settings.contrastive_weight, settings.source_weight, settings.rotation_weight,
                                  settings.temperature, settings.min_crop_area)

    projection_dim = config.model.projection_dim
    params = {"tower": model.init_params(jax.random.fold_in(key_root, _KEY_INIT)),
              "rotation_head": classification.init_head(projection_dim, NUM_ROTATIONS),
              "source_head": classification.init_head(projection_dim, len(tasks))}
    optimizer_settings = OptimizerSettings(settings.learning_rate, settings.weight_decay, settings.warmup_steps,
                                           settings.steps, config.max_grad_norm)
    state = TrainState(jnp.zeros((), jnp.int32), params, make_optimizer(optimizer_settings).init(params))
    train_step = functools.partial(_pretrain_step, model, optimizer_settings, objectives, key_root)

    def batch_at(step):
        rows = _epoch_batch(len(pool), settings.batch_size, config.seed, step)
        return pool[rows], sources[rows]

    state = _train_stage("pretrain", state, train_step, batch_at, settings.steps, checkpoint_dir, config,
                         workdir, metrics_offset)
    test_pool = np.concatenate([task.test_images for task in tasks])
    test_sources = np.concatenate([np.full(len(task.test_images), index) for index, task in enumerate(tasks)])
    test_metrics = {}
    if objectives.rotation_weight > 0:
        test_metrics["test_rotation_accuracy"] = rotation_accuracy(
            model, state.params, test_pool, jax.random.fold_in(key_root, _KEY_TEST_ROTATIONS),
            config.eval_batch_size)
    if objectives.source_weight > 0:
        test_metrics["test_source_accuracy"] = classification.accuracy(
            model, state.params["tower"], state.params["source_head"], test_pool, test_sources,
            config.eval_batch_size)
    return state.params["tower"], test_metrics


def _head_cross_entropy(head, features, labels):
    """Return the mean cross-entropy and the accuracy of a pretraining head on unit-norm features."""
    logits = PRETRAIN_LOGIT_SCALE * classification.head_logits(head, features)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, jnp.mean(jnp.argmax(logits, axis=-1) == labels)


def _pretrain_loss(model, objectives, params, images, sources, key):
    """Return the weighted pretraining loss of one batch and its per-objective metrics; see `pretrain`."""
    key_rotations, key_view_a, key_view_b = jax.random.split(key, 3)
    loss, metrics = 0.0, {}
    if objectives.contrastive_weight > 0:
        features_a = classification.image_features(
            model, params["tower"], augment_views(key_view_a, images, objectives.min_crop_area))
        features_b = classification.image_features(
            model, params["tower"], augment_views(key_view_b, images, objectives.min_crop_area))
        contrastive, pair_accuracy = contrastive_loss(features_a, features_b, objectives.temperature)
        loss += objectives.contrastive_weight * contrastive
        metrics.update(contrastive_loss=contrastive, contrastive_accuracy=pair_accuracy)
    if objectives.source_weight > 0:
        features = classification.image_features(model, params["tower"], images)
        source_loss, source_accuracy = _head_cross_entropy(params["source_head"], features, sources)
        loss += objectives.source_weight * source_loss
        metrics.update(source_loss=source_loss, source_accuracy=source_accuracy)
    if objectives.rotation_weight > 0:
        rotations = jax.random.randint(key_rotations, (images.shape[0],), 0, NUM_ROTATIONS)
        features = classification.image_features(model, params["tower"], _rotate(images, rotations))
        rotation_loss, rotation_accuracy = _head_cross_entropy(params["rotation_head"], features, rotations)
        loss += objectives.rotation_weight * rotation_loss
        metrics.update(rotation_loss=rotation_loss, rotation_accuracy=rotation_accuracy)
    return loss, metrics


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _pretrain_step(model, optimizer_settings, objectives, key_root, state, batch):
    images, sources = batch
    # The random views and rotations come from the step's own key, so a resumed run redraws the same ones.
    key = jax.random.fold_in(jax.random.fold_in(key_root, _KEY_STEPS), state.step)
    (loss, metrics), grads = jax.value_and_grad(_pretrain_loss, argnums=2, has_aux=True)(
        model, objectives, state.params, images, sources, key)
    updates, opt_state = make_optimizer(optimizer_settings).update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **metrics}
    return TrainState(state.step + 1, params, opt_state), metrics


def rotation_accuracy(model: CLIPVisionModel, params: PyTree, images: np.ndarray, key: jax.Array,
                      batch_size: int) -> float:
    """Return the rotation head's accuracy on `images`, each turned by a random multiple of 90 degrees."""
    rotations = np.asarray(jax.random.randint(key, (len(images),), 0, NUM_ROTATIONS))
    rotated = np.concatenate([np.rot90(images[rotations == k], k, axes=(1, 2)) for k in range(NUM_ROTATIONS)])
    targets = np.concatenate([np.full(np.sum(rotations == k), k) for k in range(NUM_ROTATIONS)])
    return classification.accuracy(model, params["tower"], params["rotation_head"], rotated, targets, batch_size)


def fit_linear_probe(model: CLIPVisionModel, params: PyTree, images: np.ndarray, labels: np.ndarray,
                     num_classes: int, steps: int, l2: float, batch_size: int) -> dict[str, jax.Array]:
    """Fit a linear head on the frozen, normalised image embeddings by L-BFGS.

    Minimises the mean cross-entropy plus (l2 / 2) ||kernel||^2 over the whole
    training split, which is convex in the head, starting from zero.
    """
    features = jnp.asarray(classification.batched_apply(
        lambda batch: _features(model, params, batch), images, batch_size))
    labels = jnp.asarray(labels)
    return _fit_head(features, labels, classification.init_head(features.shape[1], num_classes), steps, l2)


@functools.partial(jax.jit, static_argnums=0)
def _features(model, params, images):
    return classification.image_features(model, params, images)


@functools.partial(jax.jit, static_argnames=("steps",))
def _fit_head(features, labels, head, steps, l2):
    def objective(head):
        logits = classification.head_logits(head, features)
        cross_entropy = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return cross_entropy + 0.5 * l2 * jnp.sum(head["kernel"] ** 2)

    solver = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(objective)

    def iteration(carry, _):
        head, solver_state = carry
        value, grad = value_and_grad(head, state=solver_state)
        updates, solver_state = solver.update(grad, solver_state, head, value=value, grad=grad,
                                              value_fn=objective)
        return (optax.apply_updates(head, updates), solver_state), value

    (head, _), _ = jax.lax.scan(iteration, (head, solver.init(head)), None, length=steps)
    return head


def finetune_num_steps(config: ml_collections.ConfigDict) -> int:
    """Return the optimizer steps of one expert: epochs times the full batches of a task's training split."""
    return config.finetune.epochs * batching.num_batches(config.data.num_train, config.finetune.batch_size)


def finetune(config: ml_collections.ConfigDict, model: CLIPVisionModel, base_params: PyTree,
             head: dict[str, jax.Array], task: images_lib.ImageTaskData, finetune_seed: int,
             checkpoint_dir: Path, workdir: str | None = None, metrics_offset: int = 0) -> PyTree:
    """Fine-tune the whole tower on one task with its head frozen.

    The head is part of the optimised tree but its updates are replaced by
    zeros (`optax.set_to_zero`), so AdamW's weight decay cannot move it either.

    Returns:
        The expert's tower parameters.
    """
    settings = config.finetune
    images, labels = task.train_images, task.train_labels
    num_steps = finetune_num_steps(config)
    warmup_steps = int(settings.warmup_fraction * num_steps)

    params = {"tower": base_params, "head": head}
    optimizer_settings = OptimizerSettings(settings.learning_rate, settings.weight_decay, warmup_steps, num_steps,
                                           config.max_grad_norm)
    state = TrainState(jnp.zeros((), jnp.int32), params,
                       make_frozen_head_optimizer(optimizer_settings).init(params))
    train_step = functools.partial(_finetune_step, model, optimizer_settings)

    def batch_at(step):
        rows = _epoch_batch(len(images), settings.batch_size, finetune_seed, step)
        return images[rows], labels[rows]

    stage = f"finetune_seed{finetune_seed}/{task.name}"
    state = _train_stage(stage, state, train_step, batch_at, num_steps, checkpoint_dir, config, workdir,
                         metrics_offset)
    _check_unchanged(head, state.params["head"], task.name)
    return state.params["tower"]


def _classification_loss(model, params, images, labels):
    logits = classification.classifier_logits(model, params["tower"], params["head"], images)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, jnp.mean(jnp.argmax(logits, axis=-1) == labels)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _finetune_step(model, optimizer_settings, state, batch):
    images, labels = batch
    (loss, batch_accuracy), grads = jax.value_and_grad(_classification_loss, argnums=1, has_aux=True)(
        model, state.params, images, labels)
    optimizer = make_frozen_head_optimizer(optimizer_settings)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, "accuracy": batch_accuracy, "grad_norm": optax.tree.norm(grads["tower"])}
    return TrainState(state.step + 1, params, opt_state), metrics


def _check_unchanged(head: dict[str, jax.Array], after: dict[str, jax.Array], task: str) -> None:
    for key in head:
        if not np.array_equal(np.asarray(head[key]), np.asarray(after[key])):
            raise RuntimeError(f"The frozen head of task {task!r} changed during fine-tuning ('{key}'); "
                               "the optimizer's frozen partition is broken.")


# ---------------------------------------------------------------------------
# Building and caching


def _flatten(prefix: str, tree: PyTree) -> dict[str, np.ndarray]:
    flat = flax.traverse_util.flatten_dict(jax.device_get(tree), sep=".")
    return {f"{prefix}.{path}": np.asarray(leaf) for path, leaf in flat.items()}


def _unflatten(prefix: str, arrays: dict[str, np.ndarray], template: PyTree) -> PyTree:
    """Rebuild `template`'s tree from the arrays named `<prefix>.<path>`, checking every path and shape."""
    expected = flax.traverse_util.flatten_dict(template, sep=".")
    found = {name[len(prefix) + 1:]: array for name, array in arrays.items() if name.startswith(prefix + ".")}
    if set(found) != set(expected):
        missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
        raise cache.CacheError(f"Cached '{prefix}' parameters do not match the model: missing {missing[:5]}, "
                               f"unexpected {extra[:5]}. Delete the artefact so that it is rebuilt.")
    for path, leaf in expected.items():
        if found[path].shape != tuple(np.shape(leaf)):
            raise cache.CacheError(f"Cached parameter {prefix}.{path} has shape {found[path].shape} but the model "
                                   f"expects {tuple(np.shape(leaf))}. Delete the artefact so that it is rebuilt.")
    return flax.traverse_util.unflatten_dict({path: jnp.asarray(found[path]) for path in expected}, sep=".")


def _scratch_dir(workdir: str | None, spec: cache.ArtifactSpec, root: str | os.PathLike[str] | None) -> Path:
    """Return the checkpoint directory of a build: `workdir/checkpoints` for a run, else beside the artefact."""
    if workdir is not None:
        return Path(workdir) / "checkpoints"
    return cache.artifact_dir(spec, root).parent / f"checkpoints-{spec.key}"


def _finetune_checkpoint_dir(scratch: Path, finetune_seed: int, task: str) -> Path:
    return scratch / f"finetune_seed{finetune_seed}_{task}"


def _remove_checkpoints(stage_dirs: Sequence[Path], scratch: Path, workdir: str | None) -> None:
    """Delete the checkpoints of stages whose artefact is cached, because the artefact supersedes them."""
    for directory in stage_dirs:
        shutil.rmtree(directory, ignore_errors=True)
    if workdir is None:
        shutil.rmtree(scratch, ignore_errors=True)


def load_base(config: ml_collections.ConfigDict, *, workdir: str | None = None,
              root: str | os.PathLike[str] | None = None,
              ) -> tuple[CLIPVisionModel, PyTree, list[dict[str, jax.Array]], dict[str, Any]]:
    """Return (model, base_params, heads, metadata), pretraining and fitting the heads on first use.

    `metadata` contains the per-task linear-probe test accuracy and the final pretraining metrics.
    """
    validate(config)
    model = CLIPVisionModel(vision_config(config))
    template = jax.eval_shape(model.init_params, jax.random.key(0))
    spec = base_spec(config)
    scratch = _scratch_dir(workdir, spec, root)
    tasks = None

    def generate():
        nonlocal tasks
        tasks = load_tasks(config)
        base_params, pretrain_metrics = pretrain(config, model, tasks, scratch / "pretrain", workdir)
        arrays = _flatten("tower", base_params)
        probe_accuracy = {}
        for task in progress_lib.progress(tasks, desc="linear probes", unit="task"):
            head = fit_linear_probe(model, base_params, task.train_images, task.train_labels, task.num_classes,
                                    config.probe.steps, config.probe.l2, config.eval_batch_size)
            arrays.update(_flatten(f"head.{task.name}", head))
            probe_accuracy[task.name] = classification.accuracy(model, base_params, head, task.test_images,
                                                                task.test_labels, config.eval_batch_size)
            logging.info("Linear probe on %s: test accuracy %.4f.", task.name, probe_accuracy[task.name])
        metadata = {"probe_accuracy": probe_accuracy, "pretrain": pretrain_metrics,
                    "num_classes": {task.name: task.num_classes for task in tasks}}
        return arrays, metadata

    arrays, metadata = cache.load_or_build_arrays(spec, generate, root)
    _remove_checkpoints([scratch / "pretrain"], scratch, workdir)
    base_params = _unflatten("tower", arrays, template)
    heads = []
    for name in config.data.tasks:
        num_classes = metadata["num_classes"][name]
        head_template = classification.init_head(config.model.projection_dim, num_classes)
        heads.append(_unflatten(f"head.{name}", arrays, head_template))
    return model, base_params, heads, metadata


def load_experts(config: ml_collections.ConfigDict, finetune_seed: int | None = None, *,
                 workdir: str | None = None, root: str | os.PathLike[str] | None = None) -> ExpertSet:
    """Return the base, its heads and the experts of one fine-tuning seed, training what is not cached.

    Args:
        config: an `image_experts` config (configs/models/image_experts.py).
        finetune_seed: one of `config.finetune.seeds`; the first when None.
        workdir: a run directory for checkpoints and metrics; without one the
            build checkpoints beside the cache and removes the checkpoints when done.
        root: the cache root; `$JAXLAB_DATA` (default ~/.cache/jaxlab) when None.
    """
    return _load_experts_with_metadata(config, finetune_seed, workdir=workdir, root=root)[0]


def _load_experts_with_metadata(config, finetune_seed, *, workdir, root):
    model, base_params, heads, base_metadata = load_base(config, workdir=workdir, root=root)
    seeds = list(config.finetune.seeds)
    if finetune_seed is None:
        finetune_seed = seeds[0]
    if finetune_seed not in seeds:
        raise ValueError(f"finetune_seed={finetune_seed!r} is not in config.finetune.seeds={seeds}; "
                         "pass one of them or add it to the config.")
    spec = experts_spec(config, finetune_seed)
    scratch = _scratch_dir(workdir, spec, root)

    def generate():
        tasks = load_tasks(config)
        arrays, accuracy = {}, {}
        # Metrics of expert (seed index s, task t) follow pretraining on the run's step axis.
        first_offset = config.pretrain.steps + seeds.index(finetune_seed) * len(tasks) * finetune_num_steps(config)
        for index, (task, head) in enumerate(zip(tasks, heads)):
            checkpoint_dir = _finetune_checkpoint_dir(scratch, finetune_seed, task.name)
            params = finetune(config, model, base_params, head, task, finetune_seed, checkpoint_dir, workdir,
                              metrics_offset=first_offset + index * finetune_num_steps(config))
            arrays.update(_flatten(task.name, params))
            accuracy[task.name] = classification.accuracy(model, params, head, task.test_images, task.test_labels,
                                                          config.eval_batch_size)
            logging.info("Expert %s (fine-tuning seed %d): test accuracy %.4f.", task.name, finetune_seed,
                         accuracy[task.name])
        return arrays, {"accuracy": accuracy}

    arrays, metadata = cache.load_or_build_arrays(spec, generate, root)
    _remove_checkpoints([_finetune_checkpoint_dir(scratch, finetune_seed, name) for name in config.data.tasks],
                        scratch, workdir)
    experts = [_unflatten(name, arrays, base_params) for name in config.data.tasks]
    return ExpertSet(model, base_params, heads, experts), base_metadata, metadata


# ---------------------------------------------------------------------------
# The experiment


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Build (or read from the cache) the base, heads and experts of every fine-tuning seed; report accuracies."""
    validate(config)
    os.makedirs(workdir, exist_ok=True)
    tasks = list(config.data.tasks)
    expert_accuracy = {}
    base_metadata = None
    for finetune_seed in config.finetune.seeds:
        _, base_metadata, metadata = _load_experts_with_metadata(config, finetune_seed, workdir=workdir, root=None)
        expert_accuracy[str(finetune_seed)] = metadata["accuracy"]

    probe = base_metadata["probe_accuracy"]
    per_seed = np.array([[expert_accuracy[str(seed)][name] for name in tasks] for seed in config.finetune.seeds])
    mean, std = per_seed.mean(axis=0), per_seed.std(axis=0)
    summary = {
        "tasks": tasks,
        "finetune_seeds": list(config.finetune.seeds),
        "base_probe_accuracy": probe,
        "base_probe_average": float(np.mean([probe[name] for name in tasks])),
        "expert_accuracy": expert_accuracy,
        "expert_accuracy_mean": dict(zip(tasks, mean.tolist())),
        "expert_accuracy_std": dict(zip(tasks, std.tolist())),
        "individual_average": float(per_seed.mean()),
        "individual_average_std_over_seeds": float(per_seed.mean(axis=1).std()),
        "pretrain": base_metadata["pretrain"],
        "base_cache_key": base_spec(config).key,
    }
    metrics_lib.write_results(workdir, summary)

    rows = [{"Method": "Base + linear probe", **{name: 100 * probe[name] for name in tasks},
             "Avg": 100 * summary["base_probe_average"]},
            {"Method": "Individual", **{name: f"{100 * m:.1f} ± {100 * s:.1f}" for name, m, s in zip(tasks, mean, std)},
             "Avg": f"{100 * summary['individual_average']:.1f} ± "
                    f"{100 * summary['individual_average_std_over_seeds']:.1f}"}]
    metrics_lib.write_markdown_table(
        os.path.join(workdir, "results.md"), rows, ["Method", *tasks, "Avg"],
        title=f"Test accuracy (%) per task; Individual is the mean ± std over fine-tuning seeds "
              f"{list(config.finetune.seeds)}", float_format=".1f")
    logging.info("Base + linear probe average %.4f; Individual average %.4f.", summary["base_probe_average"],
                 summary["individual_average"])
    return summary
