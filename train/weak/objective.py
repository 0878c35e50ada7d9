"""L_weakly: depth maps rendered from predicted meshes against the sensor's, heat-maps,
pseudo-ground-truth meshes and (optionally) 3D joints."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from handshape_tf.geometry.camera import uvd_to_xyz
from handshape_tf.geometry.heatmaps import render_heatmaps
from handshape_tf.losses import heatmap_loss, weakly_supervised_loss
from handshape_tf.rendering import render_depth
from train.weak.config import WeakConfig
from train.weak.data import heatmap_sigma


def render_mesh_depth(mesh_uvd, intrinsics, root_depth, scale, image_size: int, depth_size: int, faces):
    """Depth map of predicted meshes seen by the crop's camera, at depth_size x depth_size.

    Shape shorthand: B batch, V vertices, F faces, R = depth_size.

    Args:
      mesh_uvd: B x V x 3 (u, v in the S x S crop, d = (z - z_root) / s).
      intrinsics: B x 4 fx, fy, cx, cy of the S x S crop.
      root_depth: B wrist depths, mm.   scale: B hand scales, mm.
      image_size: S.   depth_size: R.
      faces: F x 3 template faces.

    Returns:
      B x R x R float32 depth (mm) at the R-map pixel centres, 0 where the mesh is absent;
      differentiable w.r.t. mesh_uvd (not through which pixels are covered).
    """

    box = tf.constant([0.0, 0.0, float(image_size), float(image_size)])
    xyz = uvd_to_xyz(mesh_uvd, intrinsics, box, root_depth, scale)  # B x V x 3, mm
    # Resizing the S-crop to R scales all four intrinsics by R / S (continuous convention).
    intrinsics = tf.cast(intrinsics, tf.float32) * (depth_size / image_size)
    return render_depth(xyz, faces, intrinsics, (depth_size, depth_size))


def depth_valid(rendered, reference, root_depth, scale, band: float):
    """B x R x R bool: the reference has depth within `band` hand scales of the root and the
    rendered mesh covers the pixel."""

    limit = band * scale[:, None, None]
    near_root = tf.abs(reference - root_depth[:, None, None]) <= limit
    return (reference > 0) & near_root & (rendered > 0)


class WeakObjective:
    """Stage losses of the fine-tuning (module docstring).

    Args:
      config: the run's WeakConfig.
      topology: `handshape_tf.losses.MeshTopology` of the template.
      output_kind: "uvd" (the paper's network) or "xyz" (Baseline 1: root-relative, scale-
        normalised camera coordinates, `models.baselines`).

    Batches (dicts of tensors, B samples): image B x S x S x 3, joints_uv B x J x 2 (pixels),
    depth B x R x R (mm), intrinsics B x 4, root_depth B, scale B; pseudo_mesh_uvd B x V x 3
    with L_pM; joints_xyz B x J x 3 (mm) with L_J.
    """

    def __init__(self, config: WeakConfig, topology, output_kind: str):
        self.config = config
        self.topology = topology
        self.output_kind = output_kind
        self.image_size = config.model.image_size
        self.heatmap_size = config.model.heatmap_size
        self.sigma = heatmap_sigma(config)
        loss = config.loss
        self.weights = {
            "heatmap": loss.heatmap_weight,
            "depth": loss.depth_weight,
            "pseudo_mesh": loss.pseudo_mesh_weight,
            "pose": loss.pose_weight,
        }

    def heatmap_targets(self, batch):
        """B x M x M x J Gaussians at the 2D joints."""

        return render_heatmaps(batch["joints_uv"] / float(self.image_size), self.heatmap_size, self.sigma)

    def heatmap_stage(self, heatmaps, batch):
        """Stage 1: L_H over the hourglass stacks."""

        value = heatmap_loss(heatmaps, self.heatmap_targets(batch))
        return value, {"heatmap": value}

    def _scaled(self, uvd, batch):
        """B x P x 3 uvd -> camera frame / hand scale (B x P x 3)."""

        box = tf.constant([0.0, 0.0, float(self.image_size), float(self.image_size)])
        xyz = uvd_to_xyz(uvd, batch["intrinsics"], box, batch["root_depth"], batch["scale"])
        return xyz / batch["scale"][:, None, None]

    def full_stage(self, outputs, batch):
        """Stage 2: L_weakly on the model's outputs; returns (total, unweighted terms)."""

        terms = self.config.terms
        inputs: dict[str, Any] = {"heatmaps_pred": outputs["heatmaps"], "heatmaps_target": self.heatmap_targets(batch)}
        scale = batch["scale"][:, None, None]
        if "depth" in terms:
            rendered = render_mesh_depth(
                outputs["mesh_uvd"],
                batch["intrinsics"],
                batch["root_depth"],
                batch["scale"],
                self.image_size,
                self.config.loss.depth_size,
                self.topology.faces,
            )
            inputs.update(
                rendered_depth=rendered / scale,
                reference_depth=batch["depth"] / scale,
                depth_valid=depth_valid(
                    rendered, batch["depth"], batch["root_depth"], batch["scale"], self.config.loss.depth_band
                ),
            )
        if "pseudo_mesh" in terms:
            inputs.update(
                mesh_pred=self._scaled(outputs["mesh_uvd"], batch),
                mesh_pseudo_target=self._scaled(batch["pseudo_mesh_uvd"], batch),
            )
        if "pose" in terms:
            root = batch["joints_xyz"][:, :1]
            if self.output_kind == "uvd":
                pose = self._scaled(outputs["pose_uvd"], batch) - root / scale
            else:
                pose = outputs["pose_xyz"]
            inputs.update(pose_pred=pose, pose_target=(batch["joints_xyz"] - root) / scale)
        return weakly_supervised_loss(
            **inputs,
            topology=self.topology,
            terms=terms,
            weights=self.weights,
            depth_delta=self.config.loss.depth_delta,
        )
