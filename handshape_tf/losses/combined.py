"""The paper's training objectives: L_fully (Eq. 6) and L_weakly (Eq. 8).

Shape shorthand: B batch, H x W heat-map pixels, J joints (21), V mesh vertices,
Hd x Wd depth-map pixels.

Each returns (total, values): the weighted sum and a dict of the unweighted terms, including
the individual mesh terms, for logging. Terms can be dropped (ablations, Table 1); a dropped
term's inputs may be None. Reductions are those of the term modules (means, see
`handshape_tf.losses`).
"""

from __future__ import annotations

import types

import tensorflow as tf

from handshape_tf.losses._checks import merge_weights, select_terms
from handshape_tf.losses.depth import depth_map_loss
from handshape_tf.losses.heatmap import heatmap_loss
from handshape_tf.losses.mesh import MESH_TERMS, mesh_loss, pseudo_gt_mesh_loss
from handshape_tf.losses.pose import pose_loss
from handshape_tf.losses.topology import MeshTopology

FULLY_SUPERVISED_TERMS = ("heatmap", "mesh", "pose")
FULLY_SUPERVISED_WEIGHTS = types.MappingProxyType({"heatmap": 0.5, "mesh": 1.0, "pose": 1.0})
WEAKLY_SUPERVISED_TERMS = ("heatmap", "depth", "pseudo_mesh", "pose")
WEAKLY_SUPERVISED_WEIGHTS = types.MappingProxyType({"heatmap": 0.1, "depth": 0.1, "pseudo_mesh": 1.0, "pose": 10.0})


def _require(term: str, **inputs) -> None:
    missing = [name for name, value in inputs.items() if value is None]
    if missing:
        raise ValueError(f"term {term!r} is selected but {missing} is None; pass it or drop the term")


def fully_supervised_loss(
    *,
    heatmaps_pred=None,
    heatmaps_target=None,
    mesh_pred=None,
    mesh_target=None,
    pose_pred=None,
    pose_target=None,
    topology: MeshTopology | None = None,
    terms=FULLY_SUPERVISED_TERMS,
    weights=None,
    mesh_terms=MESH_TERMS,
    mesh_weights=None,
) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
    """L_fully = 0.5 L_H + 1 L_M + 1 L_J (Eq. 6).

    Args:
      heatmaps_pred: B x H x W x J, or a sequence of them (one per hourglass stack; summed).
      heatmaps_target: B x H x W x J ground-truth heat-maps.
      mesh_pred: B x V x 3 predicted uvd vertices.
      mesh_target: B x V x 3 ground-truth uvd vertices.
      pose_pred: B x J x 3 predicted uvd joints.
      pose_target: B x J x 3 ground-truth uvd joints.
      topology: the mesh, needed with the "mesh" term.
      terms: non-empty subset of ("heatmap", "mesh", "pose").
      weights: optional mapping term -> weight overriding (0.5, 1, 1).
      mesh_terms, mesh_weights: passed to `mesh_loss` (its ablation switches and weights).

    Returns:
      (total, values): scalar float32, and unweighted scalars keyed by the selected terms plus
      the selected mesh terms ("vertex", "normal", "edge", "laplacian").

    Raises:
      ValueError: unknown or no terms, a selected term's input is None, or bad shapes.
    """
    terms = select_terms(terms, FULLY_SUPERVISED_TERMS)
    weights = merge_weights(weights, dict(FULLY_SUPERVISED_WEIGHTS))
    values: dict[str, tf.Tensor] = {}
    if "heatmap" in terms:
        _require("heatmap", heatmaps_pred=heatmaps_pred, heatmaps_target=heatmaps_target)
        values["heatmap"] = heatmap_loss(heatmaps_pred, heatmaps_target)
    if "mesh" in terms:
        _require("mesh", mesh_pred=mesh_pred, mesh_target=mesh_target, topology=topology)
        values["mesh"], mesh_values = mesh_loss(mesh_pred, mesh_target, topology, mesh_terms, mesh_weights)
    if "pose" in terms:
        _require("pose", pose_pred=pose_pred, pose_target=pose_target)
        values["pose"] = pose_loss(pose_pred, pose_target)
    total = tf.add_n([weights[term] * values[term] for term in terms])
    if "mesh" in terms:
        values.update(mesh_values)
    return total, values


def weakly_supervised_loss(
    *,
    heatmaps_pred=None,
    heatmaps_target=None,
    rendered_depth=None,
    reference_depth=None,
    depth_valid=None,
    mesh_pred=None,
    mesh_pseudo_target=None,
    pose_pred=None,
    pose_target=None,
    topology: MeshTopology | None = None,
    terms=("heatmap", "depth", "pseudo_mesh"),
    weights=None,
    depth_delta: float = 1.0,
) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
    """L_weakly = 0.1 L_H + 0.1 L_D + 1 L_pM (Eq. 8), + 10 L_J when "pose" is selected.

    Select "pose" in `terms` when 3D joint labels exist (the paper's "with 3D pose" setting).

    Args:
      heatmaps_pred: B x H x W x J, or a sequence of them (one per hourglass stack; summed).
      heatmaps_target: B x H x W x J ground-truth heat-maps.
      rendered_depth: B x Hd x Wd depth rendered from mesh_pred (32 x 32 in the paper).
      reference_depth: B x Hd x Wd captured depth, same units.
      depth_valid: B x Hd x Wd mask of valid reference pixels.
      mesh_pred: B x V x 3 predicted uvd vertices.
      mesh_pseudo_target: B x V x 3 pseudo-ground-truth uvd vertices.
      pose_pred: B x J x 3 predicted uvd joints.
      pose_target: B x J x 3 ground-truth uvd joints.
      topology: the mesh, needed with the "pseudo_mesh" term.
      terms: non-empty subset of ("heatmap", "depth", "pseudo_mesh", "pose").
      weights: optional mapping term -> weight overriding (0.1, 0.1, 1, 10).
      depth_delta: smooth-L1 transition point of the depth loss, in depth units.

    Returns:
      (total, values): scalar float32, and unweighted scalars keyed by the selected terms plus
      "edge" and "laplacian" of the pseudo-GT mesh loss.

    Raises:
      ValueError: unknown or no terms, a selected term's input is None, or bad shapes.
    """
    terms = select_terms(terms, WEAKLY_SUPERVISED_TERMS)
    weights = merge_weights(weights, dict(WEAKLY_SUPERVISED_WEIGHTS))
    values: dict[str, tf.Tensor] = {}
    if "heatmap" in terms:
        _require("heatmap", heatmaps_pred=heatmaps_pred, heatmaps_target=heatmaps_target)
        values["heatmap"] = heatmap_loss(heatmaps_pred, heatmaps_target)
    if "depth" in terms:
        _require("depth", rendered_depth=rendered_depth, reference_depth=reference_depth, depth_valid=depth_valid)
        values["depth"] = depth_map_loss(rendered_depth, reference_depth, depth_valid, depth_delta)
    if "pseudo_mesh" in terms:
        _require("pseudo_mesh", mesh_pred=mesh_pred, mesh_pseudo_target=mesh_pseudo_target, topology=topology)
        values["pseudo_mesh"], mesh_values = pseudo_gt_mesh_loss(mesh_pred, mesh_pseudo_target, topology)
    if "pose" in terms:
        _require("pose", pose_pred=pose_pred, pose_target=pose_target)
        values["pose"] = pose_loss(pose_pred, pose_target)
    total = tf.add_n([weights[term] * values[term] for term in terms])
    if "pseudo_mesh" in terms:
        values.update(mesh_values)
    return total, values
