"""The training losses of the three stages, with the 3D mesh terms in one camera-based space.

Shape shorthand: B batch, S input side, M heat-map side, J = 21 joints, V mesh vertices.

The network predicts uvd (u, v normalised crop coordinates, d = (z - z_root) / s), where u and
v are fractions of the crop and d is in hand scales: three different units, and a perspective
map away from metric space. The paper's 3D vertex, normal, edge and Laplacian terms (Eq. 2-5)
and the 3D pose term are therefore computed on points moved into one metric space, the
root-relative, scale-normalised camera frame

    p = (uvd_to_xyz(uvd; crop intrinsics, crop box = whole crop, z_root, s) - xyz_root) / s,

with the ground-truth root (wrist) position and hand scale, as at test time (paper Sec. 5.1).
The conversion is differentiable (z = d s + z_root; x = (u S - cx) z / fx). Ground truth is
(xyz - xyz_root) / s from the labels directly. The 2D vertex term of Eq. 2 stays on the
predicted and ground-truth (u, v). Models that predict this space directly (the Table 2
baselines: outputs `mesh_xyz`, `pose_xyz`) get their (u, v) by projecting
p s + xyz_root with the crop intrinsics.

Reductions follow `handshape_tf.losses` (means over items); the paper's weights are kept:
L_fully = 0.5 L_H + 1 L_M + 1 L_J with L_M = 1 (L_v3D + L_v2D) + 1 L_n + 1 L_e + 50 L_l.
Units: p is in hand scales (s ~ 30-40 mm, a hand spans ~5), uv in crops.
"""

from __future__ import annotations

import tensorflow as tf

from handshape_tf.geometry.camera import project, uvd_to_xyz
from handshape_tf.losses import MeshTopology, edge_loss, heatmap_loss, laplacian_loss, normal_loss
from train.config import LossConfig

# Predicted depths are kept at least this far in front of the camera (mm) before projecting
# the baselines' points, so an early wild prediction cannot divide by zero.
_MIN_DEPTH_MM = 1.0


def _crop_box(batch, image_size: int) -> tf.Tensor:
    return tf.constant([0.0, 0.0, float(image_size), float(image_size)])


def _root(batch) -> tf.Tensor:
    return batch["joints_xyz"][:, 0]  # B x 3


def normalised_from_uvd(uvd, batch, image_size: int) -> tf.Tensor:
    """B x P x 3 uvd -> B x P x 3 root-relative, scale-normalised camera coordinates."""
    scale = batch["scale"]
    xyz = uvd_to_xyz(uvd, batch["intrinsics"], _crop_box(batch, image_size), batch["root_depth"], scale)
    return (xyz - _root(batch)[:, tf.newaxis]) / scale[:, tf.newaxis, tf.newaxis]


def uv_from_normalised(points, batch, image_size: int) -> tf.Tensor:
    """B x P x 3 normalised points -> B x P x 2 normalised crop coordinates (u, v)."""
    xyz = points * batch["scale"][:, tf.newaxis, tf.newaxis] + _root(batch)[:, tf.newaxis]
    xyz = tf.concat([xyz[..., :2], tf.maximum(xyz[..., 2:], _MIN_DEPTH_MM)], axis=-1)
    return project(xyz, batch["intrinsics"]) / float(image_size)


def normalised_targets(batch) -> tuple[tf.Tensor, tf.Tensor | None]:
    """Ground truth in the normalised space: (joints B x J x 3, vertices B x V x 3 or None)."""
    root = _root(batch)[:, tf.newaxis]
    scale = batch["scale"][:, tf.newaxis, tf.newaxis]
    vertices = batch.get("vertices_xyz")
    return (batch["joints_xyz"] - root) / scale, None if vertices is None else (vertices - root) / scale


def _mean_squared_distance(pred, target) -> tf.Tensor:
    """Mean over batch and points of the squared Euclidean distance."""
    return tf.reduce_mean(tf.reduce_sum(tf.square(pred - target), axis=-1))


class Objective:
    """Stage losses for one model output convention.

    Args:
      config: weights and switches.
      topology: the template mesh (faces, edges, neighbours).
      image_size: S, the crop side the intrinsics refer to.
      mesh_trained: False drops every mesh term (the direct-LBS baseline, whose mesh comes from
        inverse kinematics and is not trained).

    Every method returns (total, values): a scalar and a dict of unweighted scalar terms.
    """

    def __init__(self, config: LossConfig, topology: MeshTopology, image_size: int, mesh_trained: bool = True):
        self.config = config
        self.topology = topology
        self.image_size = image_size
        mesh_terms = {
            "vertex": config.vertex,
            "normal": config.normal,
            "edge": config.edge,
            "laplacian": config.laplacian,
        }
        self.mesh_terms = tuple(t for t, on in mesh_terms.items() if on) if mesh_trained else ()

    def heatmap_stage(self, heatmaps, batch):
        """L_H over the hourglass stacks. heatmaps: list of B x M x M x J."""
        value = heatmap_loss(heatmaps, batch["heatmaps"])
        return value, {"heatmap": value}

    def pose_stage(self, pose_uvd, batch):
        """L_J of the pose regressor fed ground-truth meshes. pose_uvd: B x J x 3."""
        joints, _ = normalised_targets(batch)
        value = _mean_squared_distance(normalised_from_uvd(pose_uvd, batch, self.image_size), joints)
        return value, {"pose": value}

    def _points(self, outputs, batch, kind: str):
        """(normalised B x P x 3, uv B x P x 2) of the predicted mesh or pose."""
        if f"{kind}_uvd" in outputs:
            uvd = outputs[f"{kind}_uvd"]
            return normalised_from_uvd(uvd, batch, self.image_size), uvd[..., :2]
        points = outputs[f"{kind}_xyz"]
        return points, uv_from_normalised(points, batch, self.image_size)

    def full_stage(self, outputs, batch):
        """L_fully on the model's outputs (heatmaps, mesh_* and pose_*)."""
        c = self.config
        joints, vertices = normalised_targets(batch)
        values = {"heatmap": heatmap_loss(outputs["heatmaps"], batch["heatmaps"])}
        total = c.heatmap_weight * values["heatmap"]
        if self.mesh_terms:
            mesh, mesh_uv = self._points(outputs, batch, "mesh")
            terms = []
            if "vertex" in self.mesh_terms:
                values["vertex_3d"] = _mean_squared_distance(mesh, vertices)
                values["vertex_2d"] = _mean_squared_distance(mesh_uv, batch["mesh_uvd"][..., :2])
                terms.append(c.vertex_weight * (values["vertex_3d"] + values["vertex_2d"]))
            if "normal" in self.mesh_terms:
                values["normal"] = normal_loss(mesh, vertices, self.topology)
                terms.append(c.normal_weight * values["normal"])
            if "edge" in self.mesh_terms:
                values["edge"] = edge_loss(mesh, vertices, self.topology)
                terms.append(c.edge_weight * values["edge"])
            if "laplacian" in self.mesh_terms:
                values["laplacian"] = laplacian_loss(mesh, vertices, self.topology)
                terms.append(c.laplacian_weight * values["laplacian"])
            values["mesh"] = tf.add_n(terms)
            total += c.mesh_weight * values["mesh"]
        if c.pose:
            pose, _ = self._points(outputs, batch, "pose")
            values["pose"] = _mean_squared_distance(pose, joints)
            total += c.pose_weight * values["pose"]
        return total, values
