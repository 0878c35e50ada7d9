"""Reader for the Stereo Hand Pose Tracking Benchmark (STB, Zhang et al., ICIP 2017).

Shape shorthand: H x W image size, J = 21 keypoints, N frames of a sequence.

Layout (the official download; sequence folders may also sit directly under the root):
  <root>/images/<seq>/SK_color_<i>.png   640 x 480 RGB of the RealSense F200 colour camera
  <root>/images/<seq>/SK_depth_<i>.png   640 x 480 depth of the F200 depth camera,
                                         depth_mm = R + 256 G (8-bit 3-channel PNG)
  <root>/labels/<seq>_SK.mat             handPara: 3 x J x N, mm, depth-camera frame
with <seq> in B1..B6 x Counting/Random (1500 frames each, i from 0). Split as in the paper and
Zimmermann & Brox: test = B1Counting + B1Random (3000), train = B2..B6 (15000).

Labels (readme of the dataset): joints palm centre, little MCP, PIP, DIP, tip, then ring,
middle, index and thumb (each from the base outward). The readme's rotation vector and
translation map colour-camera to depth-camera coordinates, x_depth = R x_color + t with
R = Rodrigues(rotation vector), so joints move to the colour camera as x_color =
R^T (x_depth - t), in row form (xyz_depth - t) R (as the readme's own positionCalc script and
public readers do). They are then reordered to the paper order, and the root is moved from the
palm centre to the wrist: wrist = ring_MCP + 2 (palm - ring_MCP) (Cai et al. 2018, Ge et al.).
The hand is the subject's left hand (joint names `loc_bn_*_L` in public readers).

Depth: decoded to mm and registered into the colour image: each valid depth pixel is
back-projected with the depth intrinsics, moved with the same (R, t), projected with the colour
intrinsics and splatted over the colour pixels its footprint covers, nearest depth winning;
colour pixels no depth pixel reaches stay 0. Calibrations are OpenCV/Bouguet style (pixel
centres on integers), so principal points are shifted by +0.5 to the continuous convention.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io
from scipy.spatial.transform import Rotation

from handshape_tf.data.external.common import (
    DEFAULT_CROP_MARGIN,
    ExternalDataset,
    check_margin,
    check_rgb_png,
    make_sample,
    read_image,
    read_rgb,
    require_dir,
)

logger = logging.getLogger(__name__)

BACKGROUNDS = ("B1", "B2", "B3", "B4", "B5", "B6")
SEQUENCES = tuple(f"{b}{kind}" for b in BACKGROUNDS for kind in ("Counting", "Random"))
SPLITS = {
    "test": ("B1Counting", "B1Random"),
    "train": tuple(s for s in SEQUENCES if not s.startswith("B1")),
}
# Paper keypoint k is STB joint STB_TO_PAPER[k] (STB: palm, little, ring, middle, index, thumb).
STB_TO_PAPER = (0, 17, 18, 19, 20, 13, 14, 15, 16, 9, 10, 11, 12, 5, 6, 7, 8, 1, 2, 3, 4)
RING_MCP = 13  # paper order


@dataclasses.dataclass(frozen=True)
class STBCalibration:
    """Intel RealSense F200 calibration from the STB readme (OpenCV-style integer pixel centres).

    Attributes:
      color_intrinsics: (4,) fx, fy, cx, cy of the colour camera, pixels.
      depth_intrinsics: (4,) fx, fy, cx, cy of the depth camera, pixels.
      rotation_vector: (3,) Rodrigues vector R of xyz_color = (xyz_depth - t) R.
      translation: (3,) t of that transform, mm.
      depth_size: (width, height) of the SK_depth PNGs.
    """

    color_intrinsics: tuple[float, ...] = (607.92271, 607.88192, 314.78337, 236.42484)
    depth_intrinsics: tuple[float, ...] = (475.62768, 474.77709, 336.41179, 238.77962)
    rotation_vector: tuple[float, float, float] = (0.00531, -0.01196, 0.00301)
    translation: tuple[float, float, float] = (-24.0381, -0.4563, -1.2326)
    depth_size: tuple[int, int] = (640, 480)

    @property
    def rotation(self) -> np.ndarray:
        """3 x 3 rotation matrix of `rotation_vector` (Rodrigues' formula)."""
        return Rotation.from_rotvec(self.rotation_vector).as_matrix()

    def continuous(self, intrinsics: Sequence[float]) -> np.ndarray:
        """(4,) float64 intrinsics with the principal point moved to continuous coordinates."""
        fx, fy, cx, cy = intrinsics
        return np.array([fx, fy, cx + 0.5, cy + 0.5], np.float64)

    def depth_to_color(self, xyz_depth: np.ndarray) -> np.ndarray:
        """... x 3 depth-camera points (mm) -> colour-camera points (mm)."""
        return (np.asarray(xyz_depth, np.float64) - np.asarray(self.translation)) @ self.rotation


def decode_depth(encoded: np.ndarray) -> np.ndarray:
    """H x W float32 mm from an H x W x 3 uint8 STB depth image in OpenCV BGR order (R + 256 G)."""
    red = encoded[..., 2].astype(np.float32)
    green = encoded[..., 1].astype(np.float32)
    return red + 256.0 * green


def register_depth(
    depth_mm: np.ndarray,
    depth_intrinsics: np.ndarray,
    color_intrinsics: np.ndarray,
    rotation: np.ndarray,
    translation: np.ndarray,
    color_shape: tuple[int, int],
) -> np.ndarray:
    """Warps a depth map into another camera: xyz_color = (xyz_depth - translation) rotation.

    Each pixel with depth > 0 is back-projected through its centre, transformed, projected and
    written to every colour pixel whose centre lies inside its projected footprint (its size
    scaled by 1.02; the pixel containing the projection when the footprint covers no centre);
    the smallest colour-frame depth wins. Intrinsics are continuous fx, fy, cx, cy.

    Args:
      depth_mm: Hd x Wd depth in the depth camera, mm, 0 = missing.
      depth_intrinsics: (4,) of the depth camera.
      color_intrinsics: (4,) of the colour camera.
      rotation: 3 x 3.
      translation: (3,) mm.
      color_shape: (Hc, Wc) of the output.

    Returns:
      Hc x Wc float32 colour-frame z, mm, 0 where no depth pixel lands.
    """
    height, width = color_shape
    rows, cols = np.nonzero(depth_mm > 0)
    z = depth_mm[rows, cols].astype(np.float64)
    fx_d, fy_d, cx_d, cy_d = np.asarray(depth_intrinsics, np.float64)
    points = np.stack([(cols + 0.5 - cx_d) / fx_d * z, (rows + 0.5 - cy_d) / fy_d * z, z], axis=1)
    points = (points - np.asarray(translation, np.float64)) @ np.asarray(rotation, np.float64)
    in_front = points[:, 2] > 0
    points, z = points[in_front], z[in_front]
    z_color = points[:, 2]
    fx_c, fy_c, cx_c, cy_c = np.asarray(color_intrinsics, np.float64)
    u = fx_c * points[:, 0] / z_color + cx_c
    v = fy_c * points[:, 1] / z_color + cy_c
    # Half the projected size of one depth pixel, in colour pixels, 2% larger so that the
    # footprints of neighbours overlap instead of leaving cracks where the warp stretches.
    half_u = 0.51 * fx_c / fx_d * z / z_color
    half_v = 0.51 * fy_c / fy_d * z / z_color
    col_first, col_last = _covered_centres(u, half_u)
    row_first, row_last = _covered_centres(v, half_v)
    buffer = np.full(height * width, np.inf)
    if len(z_color):
        for d_row in range(int((row_last - row_first).max()) + 1):
            for d_col in range(int((col_last - col_first).max()) + 1):
                r = row_first + d_row
                c = col_first + d_col
                ok = (r <= row_last) & (c <= col_last)
                ok &= (r >= 0) & (r < height) & (c >= 0) & (c < width)
                np.minimum.at(buffer, r[ok] * width + c[ok], z_color[ok])
    buffer[np.isinf(buffer)] = 0.0
    return buffer.reshape(height, width).astype(np.float32)


def _covered_centres(centre: np.ndarray, half: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and last pixel index whose centre i + 0.5 is in [centre - half, centre + half)."""
    first = np.ceil(centre - half - 0.5)
    last = np.ceil(centre + half - 0.5) - 1
    empty = last < first
    first[empty] = last[empty] = np.floor(centre[empty])
    return first.astype(np.int64), last.astype(np.int64)


class STBDataset(ExternalDataset):
    """STB colour frames with 3D joints (colour camera, wrist root) and registered depth.

    Samples follow `handshape_tf.data.external.common` (full frames: crop_box is a square box
    around the projected joints; is_left is True; depth when `with_depth`).

    Args:
      root: the STB folder (holding `labels/` and the sequence folders, or `images/<seq>`).
      split: "train" (B2-B6) or "test" (B1); ignored when `sequences` is given.
      sequences: explicit sequence names, e.g. ["B1Counting"].
      with_depth: decode and register SK_depth_<i>.png into the colour frame.
      crop_margin: margin of the square crop box, as a fraction of the joints' extent per side.
      calibration: camera parameters (the readme's by default).

    Raises:
      FileNotFoundError: the root, `labels/`, a sequence folder or a label file is missing
        (the message lists every missing one).
      ValueError: unknown split or sequence name, or a label file of another shape.

    Example:
      >>> data = STBDataset("/data/STB", split="test")
      >>> sample = data[0]; sample["joints_xyz"].shape
      (21, 3)
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        sequences: Sequence[str] | None = None,
        *,
        with_depth: bool = True,
        crop_margin: float = DEFAULT_CROP_MARGIN,
        calibration: STBCalibration = STBCalibration(),
    ):
        self.root = require_dir(Path(root), "STB root folder")
        description = f"{split} split" if sequences is None else "sequences"
        if sequences is None:
            if split not in SPLITS:
                raise ValueError(f"STB split must be one of {sorted(SPLITS)}; received {split!r}")
            sequences = SPLITS[split]
        unknown = [s for s in sequences if s not in SEQUENCES]
        if unknown or not sequences:
            raise ValueError(f"unknown STB sequences {unknown or '(none given)'}; expected names from {SEQUENCES}")
        self.sequences = tuple(sequences)
        self.with_depth = with_depth
        self.crop_margin = check_margin(crop_margin)
        self.calibration = calibration
        self._color_intrinsics = calibration.continuous(calibration.color_intrinsics)
        labels_dir = require_dir(self.root / "labels", "STB labels folder")
        image_root = self.root / "images" if (self.root / "images").is_dir() else self.root
        needed = [image_root / s for s in self.sequences]
        needed += [labels_dir / f"{s}_SK.mat" for s in self.sequences]
        missing = [str(path) for path in needed if not path.exists()]
        if missing:
            raise FileNotFoundError(f"STB data missing for sequences {list(self.sequences)}: " + ", ".join(missing))
        self._folders: list[Path] = []
        self._frames: list[int] = []
        self._names = []
        joints = []
        for sequence in self.sequences:
            color_xyz = self._load_labels(labels_dir / f"{sequence}_SK.mat")
            joints.append(color_xyz)
            for frame in range(len(color_xyz)):
                self._folders.append(image_root / sequence)
                self._frames.append(frame)
                path = image_root / sequence / f"SK_color_{frame}.png"
                self._names.append(str(path.relative_to(self.root)))
        self._joints = np.concatenate(joints).astype(np.float32)  # N x J x 3
        logger.info("STB %s: %d frames from %s", description, len(self), ", ".join(self.sequences))

    def _load_labels(self, path: Path) -> np.ndarray:
        """N x J x 3 colour-frame keypoints in paper order with the wrist root, mm."""
        mat = scipy.io.loadmat(path)
        if "handPara" not in mat:
            found = sorted(k for k in mat if not k.startswith("__"))
            raise ValueError(f"{path}: no 'handPara' array; found {found}")
        para = np.asarray(mat["handPara"], np.float64)
        if para.ndim == 2:  # MATLAB drops the trailing singleton of a one-frame 3 x 21 x 1
            para = para[..., None]
        if para.ndim != 3 or para.shape[:2] != (3, 21):
            raise ValueError(f"{path}: handPara has shape {para.shape}; expected (3, 21, N)")
        xyz = self.calibration.depth_to_color(para.transpose(2, 1, 0))[:, STB_TO_PAPER]  # N x J x 3
        palm = xyz[:, 0].copy()
        xyz[:, 0] = xyz[:, RING_MCP] + 2.0 * (palm - xyz[:, RING_MCP])
        return xyz

    def _load(self, index: int) -> dict[str, Any]:
        folder, frame = self._folders[index], self._frames[index]
        image = read_rgb(folder / f"SK_color_{frame}.png")
        depth = None
        if self.with_depth:
            path = folder / f"SK_depth_{frame}.png"
            encoded = read_image(path)
            check_rgb_png(encoded, path, "STB depth image", self.calibration.depth_size)
            calibration = self.calibration
            depth = register_depth(
                decode_depth(encoded),
                calibration.continuous(calibration.depth_intrinsics),
                self._color_intrinsics,
                calibration.rotation,
                np.asarray(calibration.translation),
                image.shape[:2],
            )
        return make_sample(
            image=image,
            intrinsics=self._color_intrinsics,
            joints_xyz=self._joints[index],
            is_left=True,
            name=self._names[index],
            crop_margin=self.crop_margin,
            depth=depth,
        )
