"""Mesh graph, Laplacians and Graclus coarsening (numpy/scipy only, no TensorFlow).

`template_hierarchy()` gives the decoder's fixed graphs; the rest are the building blocks.
"""

from handshape_tf.graph.coarsening import coarsen, graclus_levels, graclus_matching, tree_permutations
from handshape_tf.graph.hierarchy import MeshHierarchy, build_hierarchy, template_hierarchy
from handshape_tf.graph.mesh_graph import (
    adjacency_from_faces,
    largest_eigenvalue,
    normalized_laplacian,
    rescale_laplacian,
)

__all__ = [
    "MeshHierarchy",
    "adjacency_from_faces",
    "build_hierarchy",
    "coarsen",
    "graclus_levels",
    "graclus_matching",
    "largest_eigenvalue",
    "normalized_laplacian",
    "rescale_laplacian",
    "template_hierarchy",
    "tree_permutations",
]
