"""Prompt-based classification with a causal language model, as MeZO fine-tunes OPT.

Each text becomes a prompt that ends where a label word would follow, such as
"<text> It was" for sentiment with the label words " terrible" and " great".
The class logits are the language model's next-token logits at the last
prompt token, restricted to the one token of each label word, and the loss is
the cross-entropy over those logits. This is the classification objective of
MeZO (Malladi et al. 2023, "Fine-Tuning Language Models with Just Forward
Passes"), whose reference code enables it with `--train_as_classification`.
Nothing needs a new head, so fine-tuning starts from the pretrained model's
zero-shot predictions.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from jaxlab.data import text as text_lib
from jaxlab.models import opt

TEXT_FIELD = "{text}"


@dataclasses.dataclass(frozen=True)
class PromptTemplate:
    """A prompt format and one label word per class.

    Attributes:
      prompt: the prompt with one "{text}" placeholder; the label word is the
        token that would follow the prompt's last character.
      label_words: the word of each class, in label order. With GPT-2/OPT
        byte-level BPE a word that follows a space carries the space itself
        (" great"), and each word must be a single token.
    """

    prompt: str
    label_words: tuple[str, ...]

    def __post_init__(self):
        if self.prompt.count(TEXT_FIELD) != 1:
            raise ValueError(f"invalid prompt {self.prompt!r}: expected exactly one {TEXT_FIELD} "
                             "placeholder")
        if len(self.label_words) < 2:
            raise ValueError(f"invalid label_words {self.label_words!r}: expected one word per class "
                             "and at least two classes")
        if len(set(self.label_words)) != len(self.label_words):
            raise ValueError(f"invalid label_words {self.label_words!r}: the words must be distinct")
        for word in self.label_words:
            if not isinstance(word, str) or not word.strip():
                raise ValueError(f"invalid label word {word!r}: expected a non-blank string")

    def format(self, text: str) -> str:
        """Return the prompt for `text` with surrounding whitespace removed, as MeZO's templates do."""
        return self.prompt.replace(TEXT_FIELD, text.strip())


# SST-2 in MeZO's reference templates: "<sentence> It was" followed by " terrible" (0) or " great" (1).
SST2_TEMPLATE = PromptTemplate("{text} It was", (" terrible", " great"))


def gloss_template(class_names: Sequence[str],
                   label_words: Optional[Sequence[str]] = None) -> PromptTemplate:
    """Build the "<gloss> This is about" template for a WordNet gloss task.

    Args:
      class_names: the task's classes in label order, such as "noun.animal"
        or "adverb" (`jaxlab.data.text.TEXT_TASKS[name].class_names`).
      label_words: one word per class; defaults to a space and the class
        name's part after the last dot, with "_" read as a space
        ("noun.animal" -> " animal").
    """
    if label_words is None:
        # NOTE: the default words come from the class names, so some are poor
        # label words (" pert" for adj.pert) or span several tokens. The
        # classifier rejects the latter, and label_words overrides both.
        label_words = [" " + word for word in text_lib.class_words(class_names)]
    if len(label_words) != len(class_names):
        raise ValueError(f"got {len(label_words)} label words for {len(class_names)} classes "
                         f"{tuple(class_names)}; expected one word per class")
    return PromptTemplate("{text} This is about", tuple(label_words))


def load_tokenizer(path: Union[str, os.PathLike]):
    """Load a Hugging Face `tokenizer.json` (OPT and GPT-2 ship one) with the tokenizers library."""
    try:
        import tokenizers
    except ImportError:
        raise ImportError("PromptClassifier needs the tokenizers library (pip install tokenizers)") from None
    if not os.path.isfile(path):
        raise FileNotFoundError(f"tokenizer file {path} not found; pass the tokenizer.json of the "
                                "checkpoint (it sits next to config.json)")
    return tokenizers.Tokenizer.from_file(str(path))


class PromptClassifier:
    """An OPT language model read as a classifier through a prompt template.

    Parameters are the `OPTForCausalLM` params themselves, so zeroth-order
    methods perturb the language model directly. Token batches are dicts of
    int32 [batch, max_length] arrays, `input_ids` and `attention_mask`, as
    `tokenize` returns them.

    Args:
      model: the language model.
      tokenizer: a `tokenizers.Tokenizer` for the model's vocabulary.
      template: prompt and label words.
      max_length: tokens per row, including the beginning-of-sequence token.
        Longer prompts lose their first text tokens, so the end of the
        template that precedes the label word survives.
      add_bos: prepend the config's `bos_token_id`, as OPT's tokenizer does.
    """

    def __init__(self, model: opt.OPTForCausalLM, tokenizer: Any, template: PromptTemplate,
                 max_length: int, add_bos: bool = True):
        config = model.config
        if not isinstance(max_length, int) or not 2 <= max_length <= config.max_position_embeddings:
            raise ValueError(f"invalid max_length={max_length!r}; expected an int in "
                             f"[2, max_position_embeddings={config.max_position_embeddings}]")
        if tokenizer.get_vocab_size() > config.vocab_size:
            raise ValueError(f"the tokenizer has {tokenizer.get_vocab_size()} tokens but the model's "
                             f"vocab_size is {config.vocab_size}; use the checkpoint's own tokenizer")
        self.model = model
        self.tokenizer = tokenizer
        self.template = template
        self.max_length = max_length
        self.add_bos = add_bos
        self.label_token_ids = np.asarray([self._label_token(word) for word in template.label_words],
                                          np.int32)
        if len(set(self.label_token_ids.tolist())) != len(self.label_token_ids):
            raise ValueError(f"label words {template.label_words!r} map to the token ids "
                             f"{self.label_token_ids.tolist()}, which repeat; choose distinct words")

    @property
    def num_classes(self) -> int:
        return len(self.label_token_ids)

    def _label_token(self, word: str) -> int:
        encoding = self.tokenizer.encode(word, add_special_tokens=False)
        if len(encoding.ids) != 1:
            raise ValueError(f"label word {word!r} is {len(encoding.ids)} tokens {encoding.tokens} in "
                             "this tokenizer; each label word must be exactly one token, so choose "
                             "another word or spelling (GPT-2/OPT words after a space start with ' ')")
        return encoding.ids[0]

    def tokenize(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Encode the prompts of `texts`, left-padded to `max_length`.

        Returns:
          {"input_ids", "attention_mask"}: int32 [len(texts), max_length];
          the mask is 1 on prompt tokens and 0 on padding, which comes first.
        """
        config = self.model.config
        prefix = [config.bos_token_id] if self.add_bos else []
        budget = self.max_length - len(prefix)
        input_ids = np.full((len(texts), self.max_length), config.pad_token_id, np.int32)
        attention_mask = np.zeros((len(texts), self.max_length), np.int32)
        truncated = 0
        for row, text in enumerate(texts):
            ids = self.tokenizer.encode(self.template.format(text), add_special_tokens=False).ids
            if len(ids) > budget:
                truncated += 1
                ids = ids[len(ids) - budget:]
            ids = prefix + ids
            input_ids[row, self.max_length - len(ids):] = ids
            attention_mask[row, self.max_length - len(ids):] = 1
        if truncated:
            logging.info("Truncated %d of %d prompts to max_length=%d by dropping their first tokens",
                         truncated, len(texts), self.max_length)
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def logits(self, params: Any, tokens: dict[str, jax.Array]) -> jax.Array:
        """Return class logits float32 [batch, classes]: the next-token logits of the label words.

        The logits are read at each row's last real token, so left and right
        padding give the same result.
        """
        attention_mask = tokens["attention_mask"]
        output = self.model.apply({"params": params}, tokens["input_ids"], attention_mask,
                                  compute_logits=False)
        positions = jnp.arange(attention_mask.shape[1])
        # An all-padding row (batch filler) reads position 0, so its logits stay finite.
        last_index = jnp.max(jnp.where(attention_mask > 0, positions, 0), axis=1)
        last_hidden = jnp.take_along_axis(output.last_hidden_state, last_index[:, None, None], axis=1)[:, 0]
        # The tied LM head's rows for the label words; the other vocabulary logits are never formed.
        label_embeddings = opt.token_embedding(params)[self.label_token_ids]
        return last_hidden @ label_embeddings.T

    def loss(self, params: Any, tokens: dict[str, jax.Array], labels: jax.Array) -> jax.Array:
        """Return the mean cross-entropy of `labels` int32 [batch] over the label-word logits."""
        log_probs = jax.nn.log_softmax(self.logits(params, tokens))
        return -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], axis=1))
