"""Fixed mesh connectivity tables used by the mesh losses.

Shape shorthand: V vertices, F triangles, E undirected edges, K the largest vertex degree.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class MeshTopology:
    """Faces, edges and a padded neighbour table of a triangle mesh; build once per mesh.

    Attributes:
      faces: F x 3 int32 vertex indices (orientation as given; normals follow it).
      edges: E x 2 int32 unique undirected edges (i < j), sorted, from the face sides;
        sides joining a vertex to itself (faces repeating a vertex) are dropped.
      neighbors: V x K int32; row i lists the neighbours of vertex i in increasing order,
        padded with V (one past the last vertex: gather from the vertex table with a zero row
        appended, then the padding contributes nothing).
      neighbor_counts: V int32 number of neighbours B_i (0 for a vertex used by no face).

    Example:
      >>> topology = MeshTopology.from_faces(template.faces, template.num_vertices)
    """

    faces: np.ndarray
    edges: np.ndarray
    neighbors: np.ndarray
    neighbor_counts: np.ndarray

    @property
    def num_vertices(self) -> int:
        return len(self.neighbor_counts)

    @property
    def neighbor_weights(self) -> np.ndarray:
        """V x 1 float32 1 / B_i (0 for isolated vertices), to average gathered neighbours."""
        counts = self.neighbor_counts.astype(np.float32)
        return np.divide(1.0, counts, out=np.zeros_like(counts), where=counts > 0)[:, np.newaxis]

    @classmethod
    def from_faces(cls, faces, num_vertices: int) -> MeshTopology:
        """Builds the tables from triangles.

        Args:
          faces: F x 3 integer vertex indices in [0, num_vertices), F >= 1.
          num_vertices: V (> 0); vertices used by no face are allowed (isolated).

        Returns:
          A MeshTopology with read-only arrays.

        Raises:
          ValueError: faces is empty or not F x 3 integers, num_vertices is not a positive
            int, an index is out of range, or every face repeats one vertex (no edges).
        """
        faces = np.asarray(faces)
        is_integer = np.issubdtype(faces.dtype, np.integer)
        if faces.ndim != 2 or faces.shape[1] != 3 or faces.shape[0] == 0 or not is_integer:
            raise ValueError(
                f"faces has dtype {faces.dtype} and shape {faces.shape}; expected a non-empty F x 3 integer array"
            )
        is_count = isinstance(num_vertices, (int, np.integer)) and not isinstance(num_vertices, bool)
        if not is_count or num_vertices < 1:
            raise ValueError(f"num_vertices is {num_vertices!r}; expected a positive int")
        if faces.min() < 0 or faces.max() >= num_vertices:
            raise ValueError(
                f"faces index vertices in [{faces.min()}, {faces.max()}]; expected indices in [0, {num_vertices})"
            )
        sides = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
        sides = np.sort(sides[sides[:, 0] != sides[:, 1]], axis=1)
        edges = np.unique(sides, axis=0).astype(np.int32).reshape(-1, 2)
        if len(edges) == 0:
            raise ValueError(f"faces {faces.tolist()[:4]} have no side between distinct vertices; expected triangles")
        # Both directions of every edge, sorted by (vertex, neighbour).
        directed = np.concatenate([edges, edges[:, ::-1]])
        directed = directed[np.lexsort((directed[:, 1], directed[:, 0]))]
        counts = np.bincount(directed[:, 0], minlength=num_vertices).astype(np.int32)
        width = max(int(counts.max()), 1)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        slot = np.arange(len(directed)) - np.repeat(starts, counts)
        neighbors = np.full((num_vertices, width), num_vertices, np.int32)
        neighbors[directed[:, 0], slot] = directed[:, 1]
        arrays = dict(faces=faces.astype(np.int32), edges=edges, neighbors=neighbors, neighbor_counts=counts)
        for value in arrays.values():
            value.setflags(write=False)
        return cls(**arrays)
