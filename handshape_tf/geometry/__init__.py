"""Geometry shared by data, models, losses and evaluation.

`camera`: crops, projection and the uvd <-> xyz conversions; `heatmaps`: Gaussian heat-maps
and their decoding; `alignment`: Procrustes (similarity) alignment.
"""

from handshape_tf.geometry.alignment import procrustes_align, procrustes_align_np, procrustes_transform
from handshape_tf.geometry.camera import (
    crop_intrinsics,
    project,
    root_depth_and_scale,
    uvd_to_xyz,
    xyz_to_uvd,
)
from handshape_tf.geometry.heatmaps import heatmaps_to_uv_argmax, heatmaps_to_uv_soft_argmax, render_heatmaps

__all__ = [
    "crop_intrinsics",
    "heatmaps_to_uv_argmax",
    "heatmaps_to_uv_soft_argmax",
    "procrustes_align",
    "procrustes_align_np",
    "procrustes_transform",
    "project",
    "render_heatmaps",
    "root_depth_and_scale",
    "uvd_to_xyz",
    "xyz_to_uvd",
]
