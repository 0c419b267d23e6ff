"""Layer groups of a parameter pytree, the unit that LeZO samples.

Each leaf belongs to exactly one group, chosen by the first rule whose regular expression `re.search`
finds in the leaf's '/'-joined path. A rule's name may use the pattern's capture groups, so
`(r"layers?_(\\d+)", "block_{0}")` puts every leaf of transformer block 3 into "block_3". Leaves that no rule
matches go to the group named by `fallback`.

Groups are static: they are computed once in Python from the parameter paths, so the jitted step receives
plain Python integers and its shapes never depend on which groups a step draws.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Sequence

import jax

from jaxlab.core import tree as tree_lib

# Transformer blocks by index (Flax `layers_3`, Hugging Face `layer/3` or `h/3`), the embeddings, and
# everything else (task head, final LayerNorm, pooler) as one group.
DEFAULT_GROUP_RULES: tuple[tuple[str, str], ...] = (
    (r"(?:^|/)(?:layers?|blocks?|h)[_/](\d+)(?:/|$)", "block_{0}"),
    (r"embed", "embeddings"),
)
DEFAULT_FALLBACK_GROUP = "head"

# MeZO's rule: no weight decay on biases and LayerNorm parameters.
NO_DECAY_PATTERN = r"(?i)(?:^|/)bias$|norm|(?:^|/)ln"


def _natural_key(name: str) -> list[Any]:
    """Sort "block_2" before "block_10"."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


@dataclasses.dataclass(frozen=True)
class ParameterGroups:
    """A static partition of the leaves of a parameter pytree into layer groups.

    Attributes:
      names: group names; a group's id is its index here. Sorted naturally ("block_2" before "block_10").
      leaf_group: the group id of each leaf, in `jax.tree.leaves` order.
      leaf_paths: the '/'-joined path of each leaf, in the same order.
      leaf_sizes: the number of entries of each leaf.
      treedef: the structure of the parameter pytree.
    """

    names: tuple[str, ...]
    leaf_group: tuple[int, ...]
    leaf_paths: tuple[str, ...]
    leaf_sizes: tuple[int, ...]
    treedef: Any

    @property
    def num_groups(self) -> int:
        return len(self.names)

    def leaves_of(self, group: int) -> tuple[int, ...]:
        """Return the leaf indices of one group."""
        return tuple(i for i, g in enumerate(self.leaf_group) if g == group)

    def group_sizes(self) -> tuple[int, ...]:
        """Return the number of parameters in each group."""
        sizes = [0] * self.num_groups
        for group, size in zip(self.leaf_group, self.leaf_sizes):
            sizes[group] += size
        return tuple(sizes)

    def check_matches(self, params: Any) -> None:
        """Raise ValueError if `params` does not have the structure these groups were built for."""
        treedef = jax.tree.structure(params)
        if treedef != self.treedef:
            paths = tree_lib.tree_paths(params)
            missing = sorted(set(self.leaf_paths) - set(paths))
            extra = sorted(set(paths) - set(self.leaf_paths))
            raise ValueError(
                "parameters do not match the parameter groups: "
                f"missing leaves {missing[:3]}, unexpected leaves {extra[:3]}; "
                "build the groups with group_parameters() from these parameters")

    def describe(self) -> str:
        """Return one line per group with its name and parameter count, for logs."""
        sizes = self.group_sizes()
        return "\n".join(f"{name}: {size:,} parameters" for name, size in zip(self.names, sizes))


def group_parameters(
    params: Any,
    rules: Sequence[tuple[str, str]] = DEFAULT_GROUP_RULES,
    fallback: str = DEFAULT_FALLBACK_GROUP,
) -> ParameterGroups:
    """Assign every leaf of `params` to a layer group by the first matching rule.

    Args:
      params: the parameter pytree (arrays or shape-dtype structs).
      rules: (regular expression, group name) pairs tried in order; the name is formatted with the
        pattern's capture groups.
      fallback: the group of leaves that no rule matches.

    Raises ValueError for an invalid regular expression or a pytree without leaves.
    """
    compiled = []
    for pattern, name in rules:
        try:
            compiled.append((re.compile(pattern), name))
        except re.error as error:
            raise ValueError(f"invalid group rule pattern {pattern!r}: {error}") from None

    items, treedef = tree_lib.tree_flatten_with_paths(params)
    if not items:
        raise ValueError("params has no leaves; pass the model's parameter pytree")

    leaf_names = []
    for path, _ in items:
        for regex, name in compiled:
            match = regex.search(path)
            if match is not None:
                leaf_names.append(name.format(*match.groups()))
                break
        else:
            leaf_names.append(fallback)

    names = tuple(sorted(set(leaf_names), key=_natural_key))
    index = {name: i for i, name in enumerate(names)}
    return ParameterGroups(
        names=names,
        leaf_group=tuple(index[name] for name in leaf_names),
        leaf_paths=tuple(path for path, _ in items),
        leaf_sizes=tuple(int(getattr(leaf, "size", 1)) for _, leaf in items),
        treedef=treedef,
    )


def weight_decay_mask(params: Any, no_decay_pattern: str = NO_DECAY_PATTERN) -> Any:
    """Return a pytree of Python bools: True where weight decay applies (MeZO: not on biases or LayerNorm)."""
    return tree_lib.tree_path_mask(params, include=r".", exclude=no_decay_pattern)
