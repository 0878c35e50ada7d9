"""Mesh losses (paper Sec. 4.3, Eq. 2-5) and the pseudo-ground-truth mesh loss (Sec. 4.4).

Shape shorthand: B batch, V vertices, F triangles, E edges.

Meshes are B x V x 3 in any one coordinate system shared by prediction and target; the
network's is uvd (u, v normalised crop coordinates, d scale-invariant root-relative depth), so
"3D" below means uvd and "2D" its (u, v). Normals are taken in that same space (the normal
constraint <v^_i - v^_j, n_t> = 0 is unchanged by a linear map of the space, only its weighting).

Reduction: per item the paper's summand (squared norms summed over coordinates; for the normal
loss the sum over the 3 sides of a face), then the mean over items and batch, where the paper
sums over items: vertex and Laplacian = paper / V, normal = paper / F, edge = paper / E. The
paper's term weights (1, 1, 1, 50) are kept, so the relative weight of the terms differs from
plain sums by these counts.
"""

from __future__ import annotations

import types

import tensorflow as tf

from handshape_tf.losses._checks import check_pair, check_vertex_count, merge_weights, select_terms
from handshape_tf.losses.topology import MeshTopology

MESH_TERMS = ("vertex", "normal", "edge", "laplacian")
MESH_LOSS_WEIGHTS = types.MappingProxyType({"vertex": 1.0, "normal": 1.0, "edge": 1.0, "laplacian": 50.0})
PSEUDO_GT_TERMS = ("edge", "laplacian")
# Squared cross-product norm below which a face counts as degenerate (its normal is then ~0).
_MIN_SQUARED_AREA = 1e-30


def _mesh_pair(pred, target, topology: MeshTopology | None = None) -> tuple[tf.Tensor, tf.Tensor]:
    pred = tf.cast(pred, tf.float32)
    target = tf.cast(target, tf.float32)
    check_pair(pred, target, "B x V x 3 meshes", rank=3, last_dim=3)
    if topology is not None:
        check_vertex_count(pred, topology.num_vertices)
    return pred, target


def vertex_loss(pred, target) -> tf.Tensor:
    """Eq. 2: |v3D - v^3D|^2 + |v2D - v^2D|^2 per vertex, 3D = uvd and 2D = its uv.

    Args:
      pred: B x V x 3 predicted uvd vertices.
      target: B x V x 3 ground-truth uvd vertices.

    Returns:
      Scalar float32: mean over batch and vertices of 2 du^2 + 2 dv^2 + dd^2.

    Raises:
      ValueError: shapes are not B x V x 3 or differ.
    """
    pred, target = _mesh_pair(pred, target)
    squared = tf.square(pred - target)  # B x V x 3
    per_vertex = tf.reduce_sum(squared, axis=-1) + tf.reduce_sum(squared[..., :2], axis=-1)
    return tf.reduce_mean(per_vertex)


def face_normals(vertices, faces) -> tf.Tensor:
    """Unit normals (right-hand rule on the face order); ~0 for zero-area faces, never NaN.

    Args:
      vertices: B x V x 3.
      faces: F x 3 int vertex indices.

    Returns:
      B x F x 3 float32 normals.
    """
    corners = tf.gather(tf.cast(vertices, tf.float32), faces, axis=-2)  # B x F x 3(corner) x 3
    cross = tf.linalg.cross(corners[..., 1, :] - corners[..., 0, :], corners[..., 2, :] - corners[..., 0, :])
    squared = tf.reduce_sum(tf.square(cross), axis=-1, keepdims=True)
    return cross * tf.math.rsqrt(tf.maximum(squared, _MIN_SQUARED_AREA))


def normal_loss(pred, target, topology: MeshTopology) -> tf.Tensor:
    """Eq. 3: sum over the 3 sides (i, j) of face t of <v^_i - v^_j, n_t>^2, n_t from the target.

    The target normals are constants (no gradient flows into the target); zero-area target faces
    have a zero normal and add nothing.

    Args:
      pred: B x V x 3 predicted vertices.
      target: B x V x 3 ground-truth vertices.
      topology: the mesh (its faces).

    Returns:
      Scalar float32: mean over batch and faces.

    Raises:
      ValueError: shapes are not B x V x 3, differ, or V differs from the topology's.
    """
    pred, target = _mesh_pair(pred, target, topology)
    normals = tf.stop_gradient(face_normals(target, topology.faces))  # B x F x 3
    corners = tf.gather(pred, topology.faces, axis=-2)  # B x F x 3 x 3
    sides = tf.gather(corners, [1, 2, 0], axis=-2) - corners  # sides 0-1, 1-2, 2-0
    projections = tf.reduce_sum(sides * normals[..., tf.newaxis, :], axis=-1)  # B x F x 3
    return tf.reduce_mean(tf.reduce_sum(tf.square(projections), axis=-1))


def edge_loss(pred, target, topology: MeshTopology) -> tf.Tensor:
    """Eq. 4: (|e|^2 - |e^|^2)^2 per undirected edge (difference of squared lengths, squared).

    Args:
      pred: B x V x 3 predicted vertices.
      target: B x V x 3 ground-truth vertices.
      topology: the mesh (its edges).

    Returns:
      Scalar float32: mean over batch and edges.

    Raises:
      ValueError: shapes are not B x V x 3, differ, or V differs from the topology's.
    """
    pred, target = _mesh_pair(pred, target, topology)

    def squared_lengths(vertices):
        ends = tf.gather(vertices, topology.edges, axis=-2)  # B x E x 2 x 3
        return tf.reduce_sum(tf.square(ends[..., 1, :] - ends[..., 0, :]), axis=-1)  # B x E

    return tf.reduce_mean(tf.square(squared_lengths(target) - squared_lengths(pred)))


def laplacian_loss(pred, target, topology: MeshTopology) -> tf.Tensor:
    """Eq. 5: |delta_i - mean of delta_k over the neighbours k of i|^2, delta = target - pred.

    An isolated vertex (no neighbours) has a zero neighbour mean, so it adds |delta_i|^2.

    Args:
      pred: B x V x 3 predicted vertices.
      target: B x V x 3 ground-truth vertices.
      topology: the mesh (its neighbour table).

    Returns:
      Scalar float32: mean over batch and vertices.

    Raises:
      ValueError: shapes are not B x V x 3, differ, or V differs from the topology's.
    """
    pred, target = _mesh_pair(pred, target, topology)
    offset = target - pred  # B x V x 3
    padded = tf.concat([offset, tf.zeros_like(offset[..., :1, :])], axis=-2)  # B x (V+1) x 3
    neighbours = tf.gather(padded, topology.neighbors, axis=-2)  # B x V x K x 3
    neighbour_mean = tf.reduce_sum(neighbours, axis=-2) * topology.neighbor_weights  # B x V x 3
    return tf.reduce_mean(tf.reduce_sum(tf.square(offset - neighbour_mean), axis=-1))


_MESH_FUNCTIONS = {
    "vertex": lambda pred, target, topology: vertex_loss(pred, target),
    "normal": normal_loss,
    "edge": edge_loss,
    "laplacian": laplacian_loss,
}


def mesh_loss(
    pred, target, topology: MeshTopology, terms=MESH_TERMS, weights=None
) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
    """L_M = 1 L_v + 1 L_n + 1 L_e + 50 L_l, with terms switchable for ablations (Table 1).

    Args:
      pred: B x V x 3 predicted vertices.
      target: B x V x 3 ground-truth vertices.
      topology: the mesh.
      terms: the terms to compute, a non-empty subset of MESH_TERMS; the others are skipped.
      weights: optional mapping term -> weight overriding MESH_LOSS_WEIGHTS.

    Returns:
      (total, values): scalar float32 weighted sum, and a dict term -> unweighted scalar for
      the selected terms only.

    Raises:
      ValueError: bad shapes, or terms / weights naming unknown terms, or no term selected.
    """
    terms = select_terms(terms, MESH_TERMS)
    weights = merge_weights(weights, dict(MESH_LOSS_WEIGHTS))
    values = {term: _MESH_FUNCTIONS[term](pred, target, topology) for term in terms}
    total = tf.add_n([weights[term] * value for term, value in values.items()])
    return total, values


def pseudo_gt_mesh_loss(
    pred, pseudo_target, topology: MeshTopology, weights=None
) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
    """L_pM = 1 L_e + 50 L_l against the pseudo-ground-truth mesh (no vertex or normal terms).

    Args:
      pred: B x V x 3 predicted vertices.
      pseudo_target: B x V x 3 pseudo-ground-truth vertices (pretrained model fed GT heat-maps).
      topology: the mesh.
      weights: optional mapping {"edge": ..., "laplacian": ...} overriding (1, 50).

    Returns:
      (total, values) as for `mesh_loss`, values with keys "edge" and "laplacian".

    Raises:
      ValueError: bad shapes or weights naming terms other than edge and laplacian.
    """
    defaults = {term: MESH_LOSS_WEIGHTS[term] for term in PSEUDO_GT_TERMS}
    return mesh_loss(pred, pseudo_target, topology, PSEUDO_GT_TERMS, merge_weights(weights, defaults))
