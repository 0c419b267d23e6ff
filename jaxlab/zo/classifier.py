"""A sentence classifier for zeroth-order fine-tuning: a BERT encoder, mean pooling and a cosine head.

logits = scale · normalize(mean_pool(encoder(tokens))) @ W + b, with W initialised from class prototypes
(the normalised mean training embedding of each class) so that fine-tuning starts from a nearest-centroid
classifier. A random head would leave zeroth-order optimisation to find the head from scratch, which its
one-direction-per-step estimate does slowly; MeZO avoids the same problem with prompt-based heads.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.models import bert
from jaxlab.models import minilm

# Logit scale of the cosine head: cosine similarities lie in [-1, 1], so logits span [-10, 10].
PROTOTYPE_SCALE = 10.0


@dataclasses.dataclass(frozen=True)
class TextClassifier:
    """A BERT encoder with a linear head on the L2-normalised mean-pooled embedding.

    Parameters are {"encoder": BertModel params (no pooler), "head": {"kernel": [hidden, classes],
    "bias": [classes]}}. Token batches are dicts of int32 [batch, tokens] arrays: input_ids,
    attention_mask and token_type_ids, as `jaxlab.models.minilm.tokenize` returns them.
    """

    encoder: bert.BertModel
    num_classes: int

    def embed(self, encoder_params: Any, tokens: dict[str, jax.Array]) -> jax.Array:
        """Return normalised sentence embeddings float32 [batch, hidden]."""
        output = self.encoder.apply({"params": encoder_params}, tokens["input_ids"], tokens["attention_mask"],
                                    tokens["token_type_ids"])
        return minilm.l2_normalize(minilm.mean_pool(output.last_hidden_state, tokens["attention_mask"]))

    def logits(self, params: Any, tokens: dict[str, jax.Array]) -> jax.Array:
        """Return class logits float32 [batch, classes]."""
        embedding = self.embed(params["encoder"], tokens)
        return embedding @ params["head"]["kernel"] + params["head"]["bias"]

    def loss(self, params: Any, tokens: dict[str, jax.Array], labels: jax.Array) -> jax.Array:
        """Return the mean cross-entropy of `labels` int32 [batch]."""
        log_probs = jax.nn.log_softmax(self.logits(params, tokens))
        return -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], axis=1))


def without_pooler(config: bert.BertConfig, encoder_params: dict) -> tuple[bert.BertModel, dict]:
    """Return a pooler-free BertModel and its params: mean pooling never reads the pooler."""
    params = {name: value for name, value in encoder_params.items() if name != "pooler"}
    return bert.BertModel(dataclasses.replace(config, add_pooling_layer=False)), params


def prototype_head(embeddings: np.ndarray, labels: np.ndarray, num_classes: int,
                   scale: float = PROTOTYPE_SCALE) -> dict[str, np.ndarray]:
    """Build the head from class prototypes: column c is scale times the normalised mean embedding of class c."""
    missing = sorted(set(range(num_classes)) - set(np.unique(labels).tolist()))
    if missing:
        raise ValueError(f"classes {missing} have no training example, so they have no prototype; "
                         "use a training split with every class")
    prototypes = np.stack([embeddings[labels == c].mean(axis=0) for c in range(num_classes)], axis=1)
    prototypes /= np.maximum(np.linalg.norm(prototypes, axis=0, keepdims=True), 1e-12)
    return {"kernel": (scale * prototypes).astype(np.float32), "bias": np.zeros(num_classes, np.float32)}


def embed_all(classifier: TextClassifier, encoder_params: Any, tokens: dict[str, np.ndarray],
              batch_size: int) -> np.ndarray:
    """Embed every row of `tokens` in batches of `batch_size` (the last one padded); return float32 [n, hidden]."""
    embed = jax.jit(classifier.embed)
    num_examples = len(tokens["input_ids"])
    outputs = []
    for start in range(0, num_examples, batch_size):
        batch = {name: _pad_rows(array[start:start + batch_size], batch_size) for name, array in tokens.items()}
        outputs.append(np.asarray(embed(encoder_params, batch))[:min(batch_size, num_examples - start)])
    return np.concatenate(outputs)


def _pad_rows(array: np.ndarray, rows: int) -> np.ndarray:
    if len(array) == rows:
        return array
    return np.concatenate([array, np.zeros((rows - len(array),) + array.shape[1:], array.dtype)])


def accuracy(classifier: TextClassifier, params: Any, tokens: dict[str, np.ndarray], labels: np.ndarray,
             batch_size: int, logits_fn=None) -> float:
    """Return the accuracy on all rows, in batches of `batch_size`; `logits_fn` reuses a jitted logits."""
    logits_fn = logits_fn or jax.jit(classifier.logits)
    num_examples = len(labels)
    correct = 0
    for start in range(0, num_examples, batch_size):
        batch = {name: _pad_rows(array[start:start + batch_size], batch_size) for name, array in tokens.items()}
        predictions = np.asarray(jnp.argmax(logits_fn(params, batch), axis=-1))
        count = min(batch_size, num_examples - start)
        correct += int(np.sum(predictions[:count] == labels[start:start + count]))
    return correct / num_examples


def split_trainable(params: Any, frozen_pattern: str) -> tuple[dict, dict]:
    """Split nested params into (trainable, frozen) nested dicts by a regex on each leaf's '/'-joined path.

    An empty pattern freezes nothing.
    """
    flat = flax.traverse_util.flatten_dict(params)
    regex = re.compile(frozen_pattern) if frozen_pattern else None
    frozen = {path: value for path, value in flat.items() if regex is not None and regex.search("/".join(path))}
    trainable = {path: value for path, value in flat.items() if path not in frozen}
    if not trainable:
        raise ValueError(f"frozen pattern {frozen_pattern!r} freezes every parameter; nothing is left to train")
    return flax.traverse_util.unflatten_dict(trainable), flax.traverse_util.unflatten_dict(frozen)


def merge_trainable(trainable: dict, frozen: dict) -> dict:
    """Invert `split_trainable`: merge the two nested dicts into the full parameters."""
    flat = {**flax.traverse_util.flatten_dict(trainable), **flax.traverse_util.flatten_dict(frozen)}
    return flax.traverse_util.unflatten_dict(flat)
