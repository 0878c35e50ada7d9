"""Reader for the paper's real-world test set (583 RealSense images, Ge et al., CVPR 2019).

Shape shorthand: N images, J = 21 keypoints, V mesh vertices.

Layout (hand-graph-cnn `data/real_world_testset/`):
  <root>/images/<id:05d>.jpg     crops (256 x 256) of the full RealSense frames
  <root>/params.mat              image_path (N paths relative to <root>), cam_param (N x 4: fx,
                                 fy, u0, v0 of the full frame), bbox (N x 4: x, y, w, h of the
                                 crop in the full frame), pose_root (N x 3), pose_scale (N, cm;
                                 optional, 5 cm when absent in the reference code)
  <root>/pose_gt.mat             pose_gt: N x J x 3, cm, camera frame, paper keypoint order
  <root>/real_hand_3D_mesh/<id:05d>.obj   optional meshes, camera frame (cm assumed, like
                                 pose_gt; not confirmed)

Intrinsics of a crop: the full-frame principal point is shifted to the continuous convention
(+0.5, RealSense puts pixel centres on integers), then moved and scaled with the box:
cx = (u0 + 0.5 - x) W / w, fx = fx W / w (same for y with H / h). root_depth and scale come
from pose_gt (pose_root / pose_scale are not needed). The set does not say which hand it shows:
by default (hand="auto") the reader takes the side most of its ground-truth skeletons have
(`geometry.chirality.dataset_is_left`; the paper's pipeline is built around left hands: its rig's
joints are named `*_L` and it fine-tunes on STB's left hands without mirroring), like a dataset
known to hold left hands (STB), so a right-hand model gets them mirrored.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from handshape_tf.data.external.common import (
    ExternalDataset,
    load_obj_vertices,
    make_sample,
    read_rgb,
    require_dir,
    require_file,
)
from handshape_tf.data.external.paper_synthetic import ARM_VERTEX_RANGE, CM_TO_MM, resolve_hand

logger = logging.getLogger(__name__)


def _load_mat(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The arrays `keys` of a .mat file; raises ValueError naming the missing ones."""
    mat = scipy.io.loadmat(path)
    missing = [key for key in keys if key not in mat]
    if missing:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise ValueError(f"{path}: missing arrays {missing}; found {found}")
    return {key: mat[key] for key in keys}


def _paths_from_mat(value: np.ndarray) -> list[str]:
    """Strings of a MATLAB char matrix or cell array as loaded by scipy, stripped."""
    paths = []
    for item in np.ravel(value):
        if isinstance(item, np.ndarray):  # a cell holds a 1-element (or 1 x L char) array
            item = "".join(np.ravel(item).astype(str))
        paths.append(str(item).strip())
    return paths


def _rows(path: Path, name: str, value: np.ndarray, count: int, width: int) -> np.ndarray:
    """count x width float64 table (a single row is repeated); raises ValueError otherwise."""
    value = np.asarray(value, np.float64)
    if value.ndim == 1 and value.size == width:
        value = value[None]
    if value.ndim != 2 or value.shape[1] != width or value.shape[0] not in (1, count):
        raise ValueError(f"{path}: {name} has shape {value.shape}; expected ({count}, {width})")
    return np.broadcast_to(value, (count, width))


class PaperRealWorldDataset(ExternalDataset):
    """The paper's real-world crops with 3D joints (mm, camera frame) and optional meshes.

    Samples follow `handshape_tf.data.external.common` (stored crops: crop_box is the whole
    image; vertices_xyz when `with_mesh`; is_left from `hand`).

    Args:
      root: the set's folder (holding `params.mat`, `pose_gt.mat` and `images/`).
      with_mesh: load `real_hand_3D_mesh/<image stem>.obj` into `vertices_xyz`.
      arm_vertex_range: [start, stop) vertex indices to drop from the meshes, None for none.
      hand: "left", "right" or "auto" (the side most ground-truth skeletons have).

    Raises:
      FileNotFoundError: the root, a .mat file or (with_mesh) the mesh folder is missing.
      ValueError: .mat arrays missing or of inconsistent shapes.

    Example:
      >>> data = PaperRealWorldDataset("/data/real_world_testset")
      >>> data[0]["image"].shape
      (256, 256, 3)
    """

    def __init__(
        self,
        root: str | Path,
        *,
        with_mesh: bool = False,
        arm_vertex_range: tuple[int, int] | None = ARM_VERTEX_RANGE,
        hand: str = "auto",
    ):
        self.root = require_dir(Path(root), "real-world test set folder")
        self.with_mesh = with_mesh
        self.arm_vertex_range = arm_vertex_range
        self._mesh_dir = require_dir(self.root / "real_hand_3D_mesh", "real-world mesh folder") if with_mesh else None
        params_path = require_file(self.root / "params.mat", "real-world params.mat")
        pose_path = require_file(self.root / "pose_gt.mat", "real-world pose_gt.mat")
        params = _load_mat(params_path, ("image_path", "cam_param", "bbox"))
        self._names = _paths_from_mat(params["image_path"])
        count = len(self._names)
        self._cameras = _rows(params_path, "cam_param", params["cam_param"], count, 4)
        self._boxes = _rows(params_path, "bbox", params["bbox"], count, 4)
        bad_boxes = self._boxes[:, 2:].min(axis=1) <= 0
        if np.any(bad_boxes):
            raise ValueError(
                f"{params_path}: bbox widths and heights must be > 0; received "
                f"{self._boxes[bad_boxes][0].tolist()} (row {np.flatnonzero(bad_boxes)[0]})"
            )
        poses = np.asarray(_load_mat(pose_path, ("pose_gt",))["pose_gt"], np.float64)
        if poses.shape != (count, 21, 3):
            raise ValueError(
                f"{pose_path}: pose_gt has shape {poses.shape}; expected ({count}, 21, 3) for the "
                f"{count} images of params.mat"
            )
        self._joints = poses * CM_TO_MM
        self.is_left = resolve_hand(hand, self._joints, f"paper real-world set {self.root}")

    def _load(self, index: int) -> dict[str, Any]:
        name = self._names[index]
        image = read_rgb(self.root / name)
        height, width = image.shape[:2]
        fx, fy, u0, v0 = self._cameras[index]
        x0, y0, box_w, box_h = self._boxes[index]
        scale_x, scale_y = width / box_w, height / box_h
        intrinsics = np.array([fx * scale_x, fy * scale_y, (u0 + 0.5 - x0) * scale_x, (v0 + 0.5 - y0) * scale_y])
        vertices = None
        if self.with_mesh:
            mesh_path = self._mesh_dir / f"{Path(name).stem}.obj"
            vertices = load_obj_vertices(mesh_path, self.arm_vertex_range) * CM_TO_MM
            vertices = vertices.astype(np.float32)
        return make_sample(
            image=image,
            intrinsics=intrinsics,
            joints_xyz=self._joints[index],
            is_left=self.is_left,
            name=name,
            crop_margin=None,
            vertices_xyz=vertices,
        )
