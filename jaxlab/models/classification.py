"""Image classifiers built from a CLIP vision tower and one linear head per task.

The classifier follows the setup of the model-merging papers (Task
Arithmetic, Ties-Merging, AdaMerging), where every task has its own frozen
head on top of a shared CLIP image encoder:

    features = image_embeds / ||image_embeds||       (CLIP's normalised embedding)
    logits   = features @ head["kernel"] + head["bias"]

A head is a dict pytree:

    kernel: float32 [projection_dim, num_classes]
    bias:   float32 [num_classes]

Inputs are uint8 NHWC images [batch, height, width, 3] in [0, 255], as
`jaxlab.data.images` stores them. `preprocess_images` maps them to [-1, 1] and
resizes them bilinearly when the tower expects another size, as the paper-sized
ViT-B/32 does for the 32 x 32 image suite.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.models.clip import CLIPVisionModel

PyTree = Any
Head = dict[str, jax.Array]

# Guards the normalisation of an all-zero embedding, which only an untrained tower produces.
_NORM_EPSILON = 1e-6


def preprocess_images(images: jax.Array, image_size: int) -> jax.Array:
    """Map uint8 [batch, h, w, c] images to float32 in [-1, 1], resized to image_size x image_size."""
    if images.dtype != jnp.uint8:
        raise TypeError(f"preprocess_images expects uint8 images in [0, 255], got dtype {images.dtype}; "
                        "pass the arrays of jaxlab.data.images unchanged.")
    if images.ndim != 4:
        raise ValueError(f"images has shape {tuple(images.shape)}; expected NHWC [batch, height, width, channels].")
    pixels = images.astype(jnp.float32) / 127.5 - 1.0
    batch, height, width, channels = pixels.shape
    if (height, width) != (image_size, image_size):
        pixels = jax.image.resize(pixels, (batch, image_size, image_size, channels), method="bilinear")
    return pixels


def image_features(model: CLIPVisionModel, params: PyTree, images: jax.Array) -> jax.Array:
    """Return the L2-normalised CLIP image embeddings, float32 [batch, projection_dim], of uint8 images."""
    if model.config.projection_dim is None:
        raise ValueError("The classifier needs a CLIPVisionConfig with projection_dim set, "
                         "because the heads read the projected image embedding.")
    pixels = preprocess_images(images, model.config.image_size)
    embeddings = model.apply({"params": params}, pixels).image_embeds
    norms = jnp.linalg.norm(embeddings, axis=-1, keepdims=True)
    return embeddings / jnp.maximum(norms, _NORM_EPSILON)


def head_logits(head: Head, features: jax.Array) -> jax.Array:
    """Apply a linear head to features [batch, projection_dim]; returns logits [batch, num_classes]."""
    return features @ head["kernel"] + head["bias"]


def classifier_logits(model: CLIPVisionModel, params: PyTree, head: Head, images: jax.Array) -> jax.Array:
    """Return the logits [batch, num_classes] of the tower `params` with one task's `head`."""
    return head_logits(head, image_features(model, params, images))


def init_head(projection_dim: int, num_classes: int) -> Head:
    """Return a zero head: uniform predictions, the usual start of a convex linear probe."""
    return {"kernel": jnp.zeros((projection_dim, num_classes), jnp.float32),
            "bias": jnp.zeros((num_classes,), jnp.float32)}


def batched_apply(function, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Apply a jitted `function(images) -> [batch, ...]` in fixed-size batches and concatenate on the host.

    The last batch is padded by repeating its final image, so that `function`
    compiles once, and the padded rows are dropped from the result.
    """
    num_images = len(images)
    if num_images == 0:
        raise ValueError("batched_apply got no images.")
    batch_size = min(batch_size, num_images)
    outputs = []
    for start in range(0, num_images, batch_size):
        batch = images[start:start + batch_size]
        valid = len(batch)
        if valid < batch_size:
            padding = np.repeat(batch[-1:], batch_size - valid, axis=0)
            batch = np.concatenate([batch, padding])
        outputs.append(np.asarray(function(batch))[:valid])
    return np.concatenate(outputs)


def accuracy(model: CLIPVisionModel, params: PyTree, head: Head, images: np.ndarray, labels: np.ndarray,
             batch_size: int = 256) -> float:
    """Return the fraction of `images` whose argmax logit under (params, head) equals `labels`."""
    predictions = batched_apply(lambda batch: predict_labels(model, params, head, batch), images, batch_size)
    return float(np.mean(predictions == np.asarray(labels)))


@functools.partial(jax.jit, static_argnums=0)
def predict_labels(model: CLIPVisionModel, params: PyTree, head: Head, images: jax.Array) -> jax.Array:
    """Return the int32 argmax class [batch] of uint8 `images` under (params, head)."""
    return jnp.argmax(classifier_logits(model, params, head, images), axis=-1)
