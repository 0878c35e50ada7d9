"""Helpers shared by the composite layers: batch-norm settings and building children by shape."""

from __future__ import annotations

import keras
import numpy as np

# PyTorch's BatchNorm defaults (running-average momentum 0.1, eps 1e-5), as in the paper's
# PyTorch code; Keras' own default momentum 0.99 adapts too slowly for short CPU runs.
BATCH_NORM_MOMENTUM = 0.9
BATCH_NORM_EPSILON = 1e-5


def batch_norm(**kwargs) -> keras.layers.BatchNormalization:
    """A BatchNormalization layer over the last axis with the project's settings."""
    return keras.layers.BatchNormalization(momentum=BATCH_NORM_MOMENTUM, epsilon=BATCH_NORM_EPSILON, **kwargs)


def build_sequence(layers, input_shape):
    """Builds `layers` one after the other from `input_shape`; returns the last output shape."""
    shape = tuple(input_shape)
    for layer in layers:
        layer.build(shape)
        shape = tuple(layer.compute_output_shape(shape))
    return shape


def check_node_of_vertex(node_of_vertex, num_nodes: int) -> np.ndarray:
    """Validates a V vector mapping mesh vertices to distinct level-0 graph nodes in [0, N)."""
    table = np.asarray(node_of_vertex)
    if table.ndim != 1 or not np.issubdtype(table.dtype, np.integer):
        raise ValueError(
            f"node_of_vertex must be a 1-D integer array (V,), got dtype {table.dtype} and shape {table.shape}"
        )
    if table.size and (table.min() < 0 or table.max() >= num_nodes):
        raise ValueError(f"node_of_vertex values must be in [0, {num_nodes}), got range [{table.min()}, {table.max()}]")
    if np.unique(table).size != table.size:
        raise ValueError("node_of_vertex maps two vertices to the same graph node")
    return table.astype(np.int32)


def check_level_sizes(level_sizes) -> tuple[int, ...]:
    """Validates finest-first node counts of a binary coarsening tree (each level halves)."""
    sizes = tuple(int(size) for size in level_sizes)
    if len(sizes) < 2 or any(fine != 2 * coarse for fine, coarse in zip(sizes, sizes[1:])):
        raise ValueError(
            "level_sizes must list >= 2 node counts, finest first, each twice the next (binary "
            f"coarsening tree), got {list(level_sizes)}"
        )
    return sizes


def check_laplacian_sizes(laplacians, level_nodes, levels) -> None:
    """Raises unless each of `laplacians` (or None) is square with the expected node count."""
    for laplacian, nodes, level in zip(laplacians, level_nodes, levels):
        if laplacian is not None and tuple(laplacian.shape) != (nodes, nodes):
            raise ValueError(
                f"the level-{level} laplacian must be {nodes} x {nodes}, got shape {tuple(laplacian.shape)}"
            )
