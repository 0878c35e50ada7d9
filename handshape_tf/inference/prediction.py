"""The typed result of the inference API and the numpy post-processing that builds it.

Shape shorthand: J = 21 keypoints, V = 1159 template vertices, M heat-map side, B batch.

Everything here is numpy: no TensorFlow import (shared by the TFLite path and the server).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from handshape_tf.assets.template import ROOT_KEYPOINT, SCALE_BONE
from handshape_tf.data.crop import check_box, check_intrinsics

# Smallest |2D bone| (pixels) and 1 - dd^2 used by the scale-normalised reconstruction.
_EPS_PIXELS = 1e-6
_EPS_FORESHORTENING = 1e-4


@dataclasses.dataclass(frozen=True, eq=False)
class HandPrediction:
    """The network's estimate for one hand, in the coordinates of the input image.

    Attributes:
      box: (4,) float32 crop box (x0, y0, w, h) the network saw, full-image pixels.
      is_left: the image was treated as a left hand (mirrored in and out).
      joints_uv: J x 2 float32 joint positions, full-image pixels (continuous convention).
      mesh_uv: V x 2 float32 mesh vertex positions, full-image pixels.
      pose_uvd: J x 3 float32 joints as (u, v) normalised in `box` and d = (z - z_root) / s.
      mesh_uvd: V x 3 float32 vertices, same parametrisation.
      heatmaps: M x M x J float32 heat-maps of the last hourglass stack over `box` (column i
        covers u in [i / M, (i + 1) / M), already mirrored back for left hands).
      confidence: J float32 peak value of each joint's heat-map (training targets are
        Gaussians of peak 1, so ~1 is confident and ~0 means the joint was not found).
      joints_xyz: J x 3 float32 3D joints. Camera frame in millimetres when `camera_space`,
        else root-relative in units of the hand scale s (see `normalised_xyz`).
      vertices_xyz: V x 3 float32 3D mesh vertices, same frame and unit as joints_xyz.
      camera_space: True when intrinsics, root depth and scale were given (paper protocol).
    """

    box: np.ndarray
    is_left: bool
    joints_uv: np.ndarray
    mesh_uv: np.ndarray
    pose_uvd: np.ndarray
    mesh_uvd: np.ndarray
    heatmaps: np.ndarray
    confidence: np.ndarray
    joints_xyz: np.ndarray
    vertices_xyz: np.ndarray
    camera_space: bool

    def to_dict(self, include_heatmaps: bool = False) -> dict[str, Any]:
        """JSON-serialisable dict (lists of floats); heat-maps only when asked (large)."""
        result = {
            "box": self.box.tolist(),
            "is_left": bool(self.is_left),
            "camera_space": bool(self.camera_space),
            "xyz_unit": "mm" if self.camera_space else "hand scale s (root-relative)",
            "joints_uv": self.joints_uv.tolist(),
            "joints_xyz": self.joints_xyz.tolist(),
            "confidence": self.confidence.tolist(),
            "pose_uvd": self.pose_uvd.tolist(),
            "mesh_uv": self.mesh_uv.tolist(),
            "vertices_xyz": self.vertices_xyz.tolist(),
            "mesh_uvd": self.mesh_uvd.tolist(),
        }
        if include_heatmaps:
            result["heatmaps"] = self.heatmaps.tolist()
        return result


def uvd_to_pixels(uvd: np.ndarray, box) -> np.ndarray:
    """P x 3 (or P x 2) normalised crop coordinates -> P x 2 float32 full-image pixels.

    x = x0 + u w, y = y0 + v h for box (x0, y0, w, h).
    """
    x0, y0, w, h = check_box(box)
    uvd = np.asarray(uvd, np.float64)
    return np.stack([x0 + uvd[:, 0] * w, y0 + uvd[:, 1] * h], axis=1).astype(np.float32)


def uvd_to_xyz_np(uvd, intrinsics, box, root_depth: float, scale: float) -> np.ndarray:
    """Numpy twin of `handshape_tf.geometry.camera.uvd_to_xyz` for one hand.

    Args:
      uvd: P x 3 normalised crop coordinates and relative depth.
      intrinsics: (4,) fx, fy, cx, cy of the full image.
      box: (4,) crop box (x0, y0, w, h) in full-image pixels.
      root_depth: Z_root (camera frame, mm), > 0.
      scale: hand scale s (mm), > 0.

    Returns:
      P x 3 float32 camera-frame points: Z = d s + Z_root, X = (x - cx) Z / fx,
      Y = (y - cy) Z / fy with x = x0 + u w, y = y0 + v h.

    Raises:
      ValueError: bad intrinsics or box, or a root depth or scale that is not finite and > 0.
    """
    fx, fy, cx, cy = check_intrinsics(intrinsics)
    root_depth = _positive("root_depth", root_depth)
    scale = _positive("scale", scale)
    uvd = np.asarray(uvd, np.float64)
    pixels = uvd_to_pixels(uvd, box).astype(np.float64)
    z = uvd[:, 2] * scale + root_depth
    x = (pixels[:, 0] - cx) * z / fx
    y = (pixels[:, 1] - cy) * z / fy
    return np.stack([x, y, z], axis=1).astype(np.float32)


def normalised_xyz(pose_uvd, mesh_uvd, box) -> tuple[np.ndarray, np.ndarray]:
    """Root-relative 3D joints and vertices in units of the hand scale s, without a camera.

    Weak perspective around the root: X = k (x - x_root), Y = k (y - y_root) from full-image
    pixels x, y, and Z = d - d_root (d is already in units of s). The factor k makes the scale
    bone (keypoints 9-10) exactly 1 long: k = sqrt(1 - dd^2) / |dxy| with dd, dxy that bone's
    depth and pixel differences (1 - dd^2 is floored at 1e-4 and |dxy| at 1e-6 pixels so a bone
    pointing at the camera stays finite).

    Args:
      pose_uvd: J x 3 joints (u, v normalised in `box`, d relative depth).
      mesh_uvd: V x 3 vertices, same parametrisation.
      box: (4,) crop box (x0, y0, w, h).

    Returns:
      (joints_xyz J x 3, vertices_xyz V x 3) float32, joint 0 at the origin.
    """
    joints_px = uvd_to_pixels(pose_uvd, box).astype(np.float64)
    mesh_px = uvd_to_pixels(mesh_uvd, box).astype(np.float64)
    pose_uvd = np.asarray(pose_uvd, np.float64)
    mesh_uvd = np.asarray(mesh_uvd, np.float64)
    first, second = SCALE_BONE
    bone_px = float(np.linalg.norm(joints_px[second] - joints_px[first]))
    bone_d = float(pose_uvd[second, 2] - pose_uvd[first, 2])
    k = np.sqrt(max(1.0 - bone_d**2, _EPS_FORESHORTENING)) / max(bone_px, _EPS_PIXELS)
    root_px = joints_px[ROOT_KEYPOINT]
    root_d = pose_uvd[ROOT_KEYPOINT, 2]

    def lift(pixels, uvd):
        return np.concatenate([k * (pixels - root_px), (uvd[:, 2:3] - root_d)], axis=1).astype(np.float32)

    return lift(joints_px, pose_uvd), lift(mesh_px, mesh_uvd)


def heatmap_confidence(heatmaps: np.ndarray) -> np.ndarray:
    """M x M x J heat-maps -> J float32 peak values."""
    return np.asarray(heatmaps, np.float32).max(axis=(0, 1))


def _positive(name: str, value) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} is {value!r}; expected a finite number > 0 (mm)") from None
    if not (np.isfinite(number) and number > 0):
        raise ValueError(f"{name} is {value!r}; expected a finite number > 0 (mm)")
    return number
