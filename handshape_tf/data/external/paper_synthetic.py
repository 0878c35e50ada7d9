"""Reader for the paper's synthetic hand shape and pose set (Ge et al., CVPR 2019).

Shape shorthand: H x W crop size, J = 21 keypoints, V mesh vertices, C cameras, G gestures.

Layout (from the dataset's README and its example code, hand-graph-cnn `data/`):
  <root>/images/lNN/camMM/<prefix>_lNN_camMM_.<gesture:04d>.png   RGBA crops centred on the
        hand, alpha = hand mask; 30 lightings x 25 cameras x 500 gestures; gesture from 1.
  <root>/3D_labels/camPosition.txt   one row per (gesture, camera), gesture-major, cameras in
        the order cam01, cam02, ...: "<name> focal tx ty tz rx ry rz" (focal in pixels of the
        crop, translation in cm, Euler angles in degrees).
  <root>/3D_labels/handGestures.txt  one row per (gesture, joint): "<name> x y z", cm, global
        frame, joints in the paper order (0 wrist, thumb, index, middle, ring, little).
  <root>/3D_labels/val-camera.txt    validation camera folder names, one per line.
  <root>/hand_3D_mesh/*.<gesture:04d>.obj   the gesture's mesh, cm, global frame.

Global -> camera (as in the dataset's example code; the text format is only documented by that
code, so the row grouping is checked: names must repeat with period C, resp. J). The camera is a
Maya camera at t with orientation R = Rz Ry Rx (xyz Euler angles, degrees), looking down its
local -z with y up. Its local coordinates are (p - t) R (row vectors); flipping y and z gives
OpenCV axes: p_cam = (p - t) R diag(1, -1, -1). Results are scaled cm -> mm.

Intrinsics: fx = fy = focal, principal point at the crop centre (W / 2, H / 2), which is the
continuous convention (an assumption: the example code uses W / 2 without saying which
convention its pixel coordinates follow). Hands are right hands ("rgt" in the file names).

Meshes: the first object's vertices of the .obj; vertices [473, 529) are the forearm and are
dropped as the dataset's example code does (`arm_vertex_range`).
"""

from __future__ import annotations

import functools
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from handshape_tf.data.external.common import (
    ExternalDataset,
    load_obj_vertices,
    make_sample,
    read_image,
    require_dir,
    require_file,
)
from handshape_tf.geometry.chirality import dataset_is_left

logger = logging.getLogger(__name__)

SPLITS = ("train", "val")
ARM_VERTEX_RANGE = (473, 529)
CM_TO_MM = 10.0
_FILE_PATTERN = re.compile(r"_cam(\d+)_\.(\d+)$")
# Maya camera axes (y up, looking down -z) -> OpenCV camera axes (y down, z forward).
_MAYA_TO_OPENCV = np.diag([1.0, -1.0, -1.0])


def camera_rotation(euler_xyz_degrees: np.ndarray) -> np.ndarray:
    """3 x 3 matrix that maps (p - t) row vectors to OpenCV camera axes: R_maya diag(1, -1, -1)."""
    maya = Rotation.from_euler("xyz", euler_xyz_degrees, degrees=True).as_matrix()  # Rz Ry Rx
    return maya @ _MAYA_TO_OPENCV


def global_to_camera(points: np.ndarray, camera: np.ndarray) -> np.ndarray:
    """P x 3 global points (cm) -> OpenCV camera frame (mm) for one camPosition.txt row.

    Args:
      points: P x 3, cm.
      camera: (7,) focal, tx, ty, tz (cm), rx, ry, rz (degrees).
    """
    return (np.asarray(points, np.float64) - camera[1:4]) @ camera_rotation(camera[4:7]) * CM_TO_MM


def _read_named_rows(path: Path, num_values: int) -> tuple[list[str], np.ndarray]:
    """Names and K values per row of a table "<name> v1 ... vK"; ValueError names a bad line."""
    names, rows = [], []
    with open(path, encoding="utf-8", errors="replace") as stream:
        for line_number, line in enumerate(stream, 1):
            fields = line.split()
            if not fields:
                continue
            try:
                values = [float(v) for v in fields[1:]]
            except ValueError:
                values = []
            if len(values) != num_values:
                raise ValueError(
                    f"{path}:{line_number}: got {line.strip()!r}; expected a name and {num_values} numbers"
                )
            names.append(fields[0])
            rows.append(values)
    if not rows:
        raise ValueError(f"{path}: empty; expected rows of a name and {num_values} numbers")
    return names, np.array(rows, np.float64)


def _group(path: Path, names: list[str], rows: np.ndarray, what: str) -> np.ndarray:
    """G x K x D table from rows whose names repeat with period K = number of distinct names."""
    period = len(dict.fromkeys(names))
    if len(rows) % period or any(names[i] != names[i % period] for i in range(len(names))):
        raise ValueError(
            f"{path}: {len(rows)} rows with {period} distinct {what} names; expected the same "
            f"{period} names repeated in the same order for every gesture"
        )
    return rows.reshape(-1, period, rows.shape[1])


def _subfolders(folder: Path, prefix: str) -> list[Path]:
    """Sorted sub-directories of `folder` whose names start with `prefix`."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith(prefix))


HANDS = ("auto", "left", "right")
_HAND_SAMPLES = 500  # skeletons the "auto" side is decided on


def resolve_hand(hand: str, joints: np.ndarray, what: str) -> bool:
    """is_left for a dataset: `hand` if "left" or "right", else ("auto") the side most of the
    skeletons N x 21 x 3 have (`geometry.chirality.dataset_is_left`), logged with its agreement.

    Raises:
      ValueError: an unknown `hand`.
    """
    if hand not in HANDS:
        raise ValueError(f"hand must be one of {HANDS}; received {hand!r}")
    if hand != "auto":
        return hand == "left"
    is_left, agreement = dataset_is_left(joints)
    logger.info(
        "%s: %d skeletons, %s hands by their ground-truth joints (%.0f%% agree); pass hand='%s' to override",
        what,
        len(joints),
        "left" if is_left else "right",
        100 * agreement,
        "right" if is_left else "left",
    )
    return is_left


class PaperSyntheticDataset(ExternalDataset):
    """The paper's synthetic RGBA hand crops with 3D joints, masks and meshes (mm, camera frame).

    Samples follow `handshape_tf.data.external.common` (stored crops: crop_box is the whole
    image; mask from the alpha channel; vertices_xyz when `with_mesh`; is_left from `hand`: by
    default the side most of its skeletons have, see `resolve_hand`).

    Args:
      root: the set's folder (holding `images/`, `3D_labels/` and `hand_3D_mesh/`).
      split: "train" (cameras not in val-camera.txt) or "val".
      with_mesh: load the gesture's mesh into `vertices_xyz`.
      arm_vertex_range: [start, stop) vertex indices to drop from the meshes, None for none.
      hand: "left", "right" or "auto".

    Raises:
      FileNotFoundError: a folder or label file of the layout is missing.
      ValueError: unknown split, label files of another format, an image file name without
        `_camMM_.NNNN`, or a camera / gesture number the label files do not have.

    Example:
      >>> data = PaperSyntheticDataset("/data/synthetic_train_val", split="val")
      >>> data[0]["vertices_xyz"].shape[1]
      3
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        with_mesh: bool = True,
        arm_vertex_range: tuple[int, int] | None = ARM_VERTEX_RANGE,
        hand: str = "auto",
    ):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}; received {split!r}")
        self.root = require_dir(Path(root), "synthetic dataset root folder")
        self.split = split
        self.with_mesh = with_mesh
        self.arm_vertex_range = arm_vertex_range
        images_dir = require_dir(self.root / "images", "synthetic images folder")
        labels_dir = require_dir(self.root / "3D_labels", "synthetic 3D_labels folder")
        self._mesh_dir = require_dir(self.root / "hand_3D_mesh", "synthetic mesh folder") if with_mesh else None
        # Gestures are shared by 750 images each: keep recent meshes (global frame, cm).
        self._global_mesh = functools.lru_cache(maxsize=16)(self._read_mesh)
        camera_path = require_file(labels_dir / "camPosition.txt", "camera parameter file")
        gesture_path = require_file(labels_dir / "handGestures.txt", "3D gesture file")
        val_path = require_file(labels_dir / "val-camera.txt", "validation camera list")
        # G x C x 7 and G x J x 3.
        self._cameras = _group(camera_path, *_read_named_rows(camera_path, 7), "camera")
        self._gestures = _group(gesture_path, *_read_named_rows(gesture_path, 3), "joint")
        if self._gestures.shape[1] != 21:
            raise ValueError(f"{gesture_path}: {self._gestures.shape[1]} joints per gesture; expected 21")
        val_cameras = {line.strip() for line in val_path.read_text().splitlines() if line.strip()}
        self._paths: list[Path] = []
        self._keys: list[tuple[int, int]] = []
        for light in _subfolders(images_dir, "l"):
            for camera_dir in _subfolders(light, "cam"):
                if (camera_dir.name in val_cameras) != (split == "val"):
                    continue
                for path in sorted(camera_dir.glob("*.png")):
                    self._paths.append(path)
                    self._keys.append(self._parse_name(path))
        self._names = [str(p.relative_to(self.root)) for p in self._paths]
        logger.info("paper synthetic %s: %d images (validation cameras %s)", split, len(self), sorted(val_cameras))
        picks = self._keys[:: max(1, len(self._keys) // _HAND_SAMPLES)] or [(0, 0)]
        skeletons = np.stack([global_to_camera(self._gestures[g], self._cameras[g, c]) for g, c in picks])
        self.is_left = resolve_hand(hand, skeletons, f"paper synthetic {split}")

    def _parse_name(self, path: Path) -> tuple[int, int]:
        """0-based (gesture, camera) from `..._camMM_.NNNN.png`, checked against the labels."""
        match = _FILE_PATTERN.search(path.stem)
        if match is None:
            raise ValueError(f"image file name {path.name}; expected it to end in _camMM_.NNNN.png")
        camera, gesture = int(match.group(1)) - 1, int(match.group(2)) - 1
        num_gestures, num_cameras = self._cameras.shape[:2]
        if not (0 <= camera < num_cameras and 0 <= gesture < min(num_gestures, len(self._gestures))):
            raise ValueError(
                f"{path}: camera {camera + 1}, gesture {gesture + 1}; the labels have {num_cameras} "
                f"cameras, {num_gestures} gestures in camPosition.txt and {len(self._gestures)} in "
                "handGestures.txt"
            )
        return gesture, camera

    def _read_mesh(self, gesture: int) -> np.ndarray:
        """V x 3 global-frame vertices (cm) of a gesture's mesh, arm vertices dropped."""
        matches = sorted(self._mesh_dir.glob(f"*.{gesture + 1:04d}.obj"))
        if len(matches) != 1:
            raise FileNotFoundError(
                f"expected exactly one mesh *.{gesture + 1:04d}.obj in {self._mesh_dir}; found {len(matches)}"
            )
        return load_obj_vertices(matches[0], self.arm_vertex_range)

    def _load(self, index: int) -> dict[str, Any]:
        path = self._paths[index]
        gesture, camera_index = self._keys[index]
        camera = self._cameras[gesture, camera_index]
        rgba = read_image(path)
        if rgba.dtype != np.uint8 or rgba.ndim != 3 or rgba.shape[2] != 4:
            raise ValueError(
                f"synthetic image {path}: got dtype {rgba.dtype} and shape {rgba.shape}; expected "
                "uint8 with shape (H, W, 4) (RGBA)"
            )
        height, width = rgba.shape[:2]
        vertices = None
        if self.with_mesh:
            vertices = global_to_camera(self._global_mesh(gesture), camera).astype(np.float32)
        return make_sample(
            image=np.ascontiguousarray(rgba[..., 2::-1]),
            intrinsics=np.array([camera[0], camera[0], width / 2, height / 2]),
            joints_xyz=global_to_camera(self._gestures[gesture], camera),
            is_left=self.is_left,
            name=self._names[index],
            crop_margin=None,
            mask=rgba[..., 3] >= 128,
            vertices_xyz=vertices,
        )
