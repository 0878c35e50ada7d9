"""Static shape checks shared by the losses (raise ValueError at graph-build time)."""

from __future__ import annotations

import tensorflow as tf


def check_pair(pred: tf.Tensor, target: tf.Tensor, expected: str, rank: int, last_dim: int | None = None) -> None:
    """Raises ValueError unless pred and target have compatible static shapes of `rank`.

    Args:
      pred: prediction tensor.
      target: ground-truth tensor.
      expected: shape description for the message, e.g. "B x V x 3".
      rank: required rank.
      last_dim: required last dimension, or None for any.
    """
    for name, tensor in (("prediction", pred), ("target", target)):
        shape = tensor.shape
        if shape.rank is None:
            continue
        if shape.rank != rank or (last_dim is not None and shape[-1] is not None and shape[-1] != last_dim):
            raise ValueError(f"{name} has shape {shape}; expected {expected}")
    if not pred.shape.is_compatible_with(target.shape):
        raise ValueError(f"prediction has shape {pred.shape} and target {target.shape}; expected the same {expected}")


def check_vertex_count(tensor: tf.Tensor, num_vertices: int) -> None:
    """Raises ValueError if the static vertex dimension (axis -2) differs from the topology's."""
    if tensor.shape.rank is not None and tensor.shape[-2] is not None and tensor.shape[-2] != num_vertices:
        raise ValueError(f"mesh has shape {tensor.shape}; expected B x {num_vertices} x 3 to match the topology")


def select_terms(terms, allowed: tuple[str, ...], name: str = "terms") -> tuple[str, ...]:
    """Validates a non-empty selection of loss terms, returned in the order of `allowed`.

    Raises:
      ValueError: terms is a string, empty, or names a term not in `allowed`.
    """
    if isinstance(terms, str):
        raise ValueError(f"{name} is the string {terms!r}; expected a sequence of names from {allowed}")
    terms = tuple(terms)
    unknown = sorted(set(terms) - set(allowed))
    if unknown or not terms:
        raise ValueError(f"{name} is {terms}; expected a non-empty selection of {allowed}")
    return tuple(term for term in allowed if term in terms)


def merge_weights(weights, defaults: dict[str, float], name: str = "weights") -> dict[str, float]:
    """Defaults overridden by `weights` (a mapping or None).

    Raises:
      ValueError: weights names a term not in `defaults`.
    """
    merged = dict(defaults)
    if weights is not None:
        unknown = sorted(set(weights) - set(defaults))
        if unknown:
            raise ValueError(f"{name} has unknown terms {unknown}; expected keys from {tuple(defaults)}")
        merged.update({key: float(value) for key, value in weights.items()})
    return merged
