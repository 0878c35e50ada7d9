"""The fixed graph hierarchy of the mesh decoder: levels, Laplacians and the vertex <-> node maps.

Shape shorthand: V mesh vertices, N_l graph nodes of level l (real and fake, finest l = 0),
L coarsening levels. Level l + 1 node i is the parent of level l nodes 2i and 2i + 1.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import time

import numpy as np
import scipy.sparse

from handshape_tf.assets.template import load_template
from handshape_tf.graph.coarsening import coarsen
from handshape_tf.graph.mesh_graph import (
    adjacency_from_faces,
    largest_eigenvalue,
    normalized_laplacian,
    rescale_laplacian,
)

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, eq=False)
class MeshHierarchy:
    """Graclus coarsening of a mesh, arranged as a binary tree with fake nodes.

    Attributes:
      level_sizes: L + 1 node counts N_l, finest first, N_l = 2 N_(l+1).
      adjacencies: L + 1 csr_matrix N_l x N_l weights in tree order; level 0 is the binary
        mesh adjacency, coarser weights sum the fine edges between children; fake nodes
        have no edges.
      laplacians: L + 1 csr_matrix N_l x N_l rescaled Laplacians 2 L / lambda_max - I.
      lambda_max: L + 1 largest eigenvalues of the normalised Laplacians.
      node_of_vertex: V int64, the level-0 node of each mesh vertex.
      vertex_of_node: N_0 int64, the mesh vertex of each level-0 node, -1 for fake nodes.
      num_vertices: V.
    """

    level_sizes: tuple[int, ...]
    adjacencies: tuple[scipy.sparse.csr_matrix, ...]
    laplacians: tuple[scipy.sparse.csr_matrix, ...]
    lambda_max: tuple[float, ...]
    node_of_vertex: np.ndarray
    vertex_of_node: np.ndarray
    num_vertices: int

    def __post_init__(self):
        sizes = self.level_sizes
        if any(fine != 2 * coarse for fine, coarse in zip(sizes, sizes[1:])):
            raise ValueError(f"level_sizes {sizes}; expected each level twice the next")
        shapes = [a.shape for a in self.adjacencies], [m.shape for m in self.laplacians]
        expected = [(n, n) for n in sizes]
        if shapes != (expected, expected) or len(self.lambda_max) != len(sizes):
            raise ValueError(
                f"adjacency shapes {shapes[0]}, Laplacian shapes {shapes[1]} and "
                f"{len(self.lambda_max)} lambda_max values; expected {expected} and {len(sizes)}"
            )
        if self.node_of_vertex.shape != (self.num_vertices,) or self.vertex_of_node.shape != (sizes[0],):
            raise ValueError(
                f"node_of_vertex {self.node_of_vertex.shape} and vertex_of_node "
                f"{self.vertex_of_node.shape}; expected ({self.num_vertices},) and ({sizes[0]},)"
            )
        for array in (self.node_of_vertex, self.vertex_of_node):
            array.setflags(write=False)

    @property
    def num_levels(self) -> int:
        """L, the number of coarsening steps."""
        return len(self.level_sizes) - 1

    def checksum(self) -> str:
        """sha256 hex of the level sizes, the vertex order and the Laplacians (6 decimals)."""
        digest = hashlib.sha256()
        digest.update(np.asarray(self.level_sizes, np.int64).tobytes())
        digest.update(self.vertex_of_node.astype(np.int64).tobytes())
        for laplacian in self.laplacians:
            digest.update(laplacian.indptr.astype(np.int64).tobytes())
            digest.update(laplacian.indices.astype(np.int64).tobytes())
            digest.update(np.rint(laplacian.data * 1e6).astype(np.int64).tobytes())
        return digest.hexdigest()


def build_hierarchy(faces: np.ndarray, num_vertices: int, levels: int = 4, seed: int = 0) -> MeshHierarchy:
    """Coarsens a triangle mesh into a binary-tree hierarchy of graphs.

    Args:
      faces: F x 3 integer vertex indices in [0, num_vertices).
      num_vertices: V.
      levels: L >= 1 coarsening steps (the decoder upsamples L times).
      seed: seed of the Graclus visiting orders; the result is a function of it.

    Returns:
      The MeshHierarchy.

    Raises:
      ValueError: bad faces or num_vertices, or levels < 1.
    """
    start = time.perf_counter()
    adjacency = adjacency_from_faces(faces, num_vertices)
    adjacencies, permutations = coarsen(adjacency, levels, seed)
    laplacians, lambdas = [], []
    for graph in adjacencies:
        laplacian = normalized_laplacian(graph)
        lambdas.append(largest_eigenvalue(laplacian))
        laplacians.append(rescale_laplacian(laplacian, lambdas[-1]))
    vertex_of_node = np.where(permutations[0] < num_vertices, permutations[0], -1)
    node_of_vertex = np.empty(num_vertices, np.int64)
    real = np.flatnonzero(vertex_of_node >= 0)
    node_of_vertex[vertex_of_node[real]] = real
    hierarchy = MeshHierarchy(
        level_sizes=tuple(graph.shape[0] for graph in adjacencies),
        adjacencies=tuple(adjacencies),
        laplacians=tuple(laplacians),
        lambda_max=tuple(lambdas),
        node_of_vertex=node_of_vertex,
        vertex_of_node=vertex_of_node.astype(np.int64),
        num_vertices=int(num_vertices),
    )
    logger.info(
        "mesh hierarchy: %d vertices -> levels %s, lambda_max %s, %.2f s",
        num_vertices,
        hierarchy.level_sizes,
        [round(value, 4) for value in lambdas],
        time.perf_counter() - start,
    )
    return hierarchy


@functools.cache
def template_hierarchy(levels: int = 4, seed: int = 0) -> MeshHierarchy:
    """The hierarchy of the right-hand template mesh (cached; the left hand shares it).

    Args:
      levels: L >= 1 coarsening steps.
      seed: Graclus seed.

    Returns:
      The MeshHierarchy of `load_template()`.
    """
    template = load_template()
    return build_hierarchy(template.faces, template.num_vertices, levels, seed)
