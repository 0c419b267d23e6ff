"""Combining pretrained parameters with the parameters of an extended model."""

from __future__ import annotations

from typing import Any, Mapping


def overlay_params(extended: Mapping[str, Any], pretrained: Mapping[str, Any]) -> dict:
    """Return a copy of `extended` with every entry that `pretrained` has replaced by its value.

    Use it to start an extended model (a replaced MLP, layer hooks) from a
    loaded checkpoint: initialise the extended model, then overlay the
    pretrained params. Entries that only `extended` has, such as hook
    parameters, keep their initial values.

    Raises:
      ValueError: naming the first pretrained entry that `extended` lacks, or
        whose shape differs.
    """
    return _overlay(extended, pretrained, ())


def _overlay(extended: Mapping[str, Any], pretrained: Mapping[str, Any], prefix: tuple) -> dict:
    result = dict(extended)
    for key, value in pretrained.items():
        path = prefix + (key,)
        if key not in extended:
            raise ValueError(f"pretrained entry {'/'.join(path)} has no counterpart in the extended "
                             "params; the extension replaced or renamed it, so overlay only the "
                             "entries it keeps")
        target = extended[key]
        if isinstance(value, Mapping) != isinstance(target, Mapping):
            raise ValueError(f"pretrained entry {'/'.join(path)} is a "
                             f"{'subtree' if isinstance(value, Mapping) else 'leaf'} but the extended "
                             f"params have a {'subtree' if isinstance(target, Mapping) else 'leaf'} there")
        if isinstance(value, Mapping):
            result[key] = _overlay(target, value, path)
        elif tuple(value.shape) != tuple(target.shape):
            raise ValueError(f"pretrained entry {'/'.join(path)} has shape {tuple(value.shape)}, the "
                             f"extended params {tuple(target.shape)}")
        else:
            result[key] = value
    return result
