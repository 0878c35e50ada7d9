"""The sample schema shared by the external dataset readers, and their file helpers.

Shape shorthand: H x W image size, J = 21 keypoints (paper order), V mesh vertices.

Every reader is a sequence (`len()`, indexing, iteration) of dicts of numpy arrays:
  image:        H x W x 3 uint8 RGB, the full frame or the crop as stored.
  intrinsics:   (4,) float32 fx, fy, cx, cy of `image` in continuous pixel coordinates (pixel
                (i, j) covers [i, i+1) x [j, j+1); calibrations that put pixel centres on
                integers are shifted by +0.5).
  joints_xyz:   J x 3 float32 camera frame (x right, y down, z forward), millimetres.
  joints_uv:    J x 2 float32 projection of joints_xyz with `intrinsics`, pixels.
  crop_box:     (4,) float32 x0, y0, w, h: a square box around joints_uv (side = (1 + 2 margin)
                times the larger extent, may reach outside the image) for full frames, the
                whole image for stored crops.
  root_depth:   float32 z of keypoint 0 (wrist), mm.
  scale:        float32 |keypoint 9 - keypoint 10| (middle finger MCP-PIP), mm.
  is_left:      bool, the hand is a left hand.
  depth:        optional H x W float32 mm in the frame of `image`, 0 where missing.
  mask:         optional H x W bool hand mask.
  vertices_xyz: optional V x 3 float32 mm, camera frame (the dataset's own mesh topology).
  name:         str, the image path relative to the dataset root.
"""

from __future__ import annotations

import abc
import collections.abc
import operator
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from handshape_tf.assets.template import ROOT_KEYPOINT, SCALE_BONE
from handshape_tf.data.crop import square_box_around

NUM_KEYPOINTS = 21
DEFAULT_CROP_MARGIN = 0.25


def require_dir(path: Path, what: str) -> Path:
    """Returns `path` if it is a directory; raises FileNotFoundError naming `what` otherwise."""
    if not path.is_dir():
        raise FileNotFoundError(f"{what} not found: expected a directory at {path}")
    return path


def require_file(path: Path, what: str) -> Path:
    """Returns `path` if it is a file; raises FileNotFoundError naming `what` otherwise."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: expected a file at {path}")
    return path


def read_image(path: Path, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    """Decodes an image file with OpenCV (channels in BGR(A) order).

    Raises:
      FileNotFoundError: `path` does not exist.
      ValueError: the file exists but OpenCV cannot decode it.
    """
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    image = cv2.imread(os.fspath(path), flags)
    if image is None:
        raise ValueError(f"cannot decode image {path} (corrupt or not an image file)")
    return image


def read_rgb(path: Path) -> np.ndarray:
    """H x W x 3 uint8 RGB image from a colour (or grey) 8-bit file; see `read_image`."""
    image = read_image(path, cv2.IMREAD_COLOR)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def check_rgb_png(image: np.ndarray, path: Path, what: str, size: tuple[int, int]) -> None:
    """Raises ValueError unless `image` is an 8-bit 3-channel image of `size` (width, height)."""
    width, height = size
    expected = (height, width, 3)
    if image.dtype != np.uint8 or image.shape != expected:
        raise ValueError(
            f"{what} {path}: got dtype {image.dtype} and shape {image.shape}; expected uint8 with "
            f"shape {expected} (8-bit 3-channel PNG of {width} x {height})"
        )


def project(points: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """Pinhole projection: P x 3 camera points and (4,) fx, fy, cx, cy -> P x 2 pixels."""
    points = np.asarray(points, np.float64)
    fx, fy, cx, cy = np.asarray(intrinsics, np.float64)
    z = points[:, 2]
    return np.stack([fx * points[:, 0] / z + cx, fy * points[:, 1] / z + cy], axis=1)


def check_margin(margin: float) -> float:
    """Returns `margin` as a float if it is finite and >= 0; raises ValueError otherwise."""
    margin = float(margin)
    if not np.isfinite(margin) or margin < 0:
        raise ValueError(f"crop_margin must be a finite number >= 0; received {margin}")
    return margin


def make_sample(
    *,
    image: np.ndarray,
    intrinsics: np.ndarray,
    joints_xyz: np.ndarray,
    is_left: bool,
    name: str,
    crop_margin: float | None,
    **optional: np.ndarray,
) -> dict[str, Any]:
    """Assembles one sample in the common schema (see the module docstring).

    Args:
      image: H x W x 3 uint8 RGB.
      intrinsics: (4,) fx, fy, cx, cy of `image`, continuous pixel coordinates.
      joints_xyz: J x 3 camera-frame keypoints in paper order, mm.
      is_left: the hand is a left hand.
      name: image path relative to the dataset root.
      crop_margin: margin of the square crop box around the projected joints for full frames;
        None when `image` is already a crop (the box is then the whole image).
      **optional: depth (H x W), mask (H x W), vertices_xyz (V x 3) when available.

    Returns:
      The sample dict.
    """
    joints_xyz = np.asarray(joints_xyz, np.float32)
    if joints_xyz.shape != (NUM_KEYPOINTS, 3):
        raise ValueError(f"{name}: joints have shape {joints_xyz.shape}; expected ({NUM_KEYPOINTS}, 3)")
    intrinsics = np.asarray(intrinsics, np.float32)
    joints_uv = project(joints_xyz, intrinsics)
    if crop_margin is None:
        height, width = image.shape[:2]
        crop_box = np.array([0.0, 0.0, width, height], np.float32)
    else:
        crop_box = square_box_around(joints_uv, crop_margin)
    first, second = SCALE_BONE
    sample: dict[str, Any] = {
        "image": image,
        "intrinsics": intrinsics,
        "joints_xyz": joints_xyz,
        "joints_uv": joints_uv.astype(np.float32),
        "crop_box": crop_box,
        "root_depth": np.float32(joints_xyz[ROOT_KEYPOINT, 2]),
        "scale": np.float32(np.linalg.norm(joints_xyz[first] - joints_xyz[second])),
        "is_left": bool(is_left),
        "name": name,
    }
    for key, value in optional.items():
        if value is not None:
            sample[key] = value
    return sample


def load_obj_vertices(path: Path, drop_range: tuple[int, int] | None) -> np.ndarray:
    """V x 3 float64 vertices of the first object of a Wavefront .obj file.

    Reads the `v` lines that come before the first `f` or `vn` line (later objects in the
    file are ignored) and removes the vertices with index in [drop_range[0], drop_range[1]).
    """
    require_file(path, "mesh file")
    rows = []
    with open(path, encoding="utf-8", errors="replace") as stream:
        for line_number, line in enumerate(stream, 1):
            fields = line.split()
            if not fields:
                continue
            if fields[0] in ("f", "vn"):
                break
            if fields[0] == "v":
                try:
                    rows.append([float(value) for value in fields[1:4]])
                except ValueError:
                    rows.append([])
                if len(rows[-1]) != 3:
                    raise ValueError(f"{path}:{line_number}: got {line.strip()!r}; expected a vertex 'v x y z'")
    if not rows:
        raise ValueError(f"{path}: no vertex ('v x y z') lines found")
    vertices = np.array(rows, np.float64)
    if drop_range is not None:
        start, stop = drop_range
        if not 0 <= start <= stop <= len(vertices):
            raise ValueError(f"{path}: has {len(vertices)} vertices; cannot drop range [{start}, {stop})")
        vertices = np.delete(vertices, np.arange(start, stop), axis=0)
    return vertices


class ExternalDataset(collections.abc.Sequence):
    """Base of the readers: a sequence of samples loaded lazily by index.

    Subclasses fill `self._names` (one entry per sample) and implement `_load(index)`.
    """

    _names: list[str]

    def __len__(self) -> int:
        return len(self._names)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if isinstance(index, slice):
            raise TypeError(f"{type(self).__name__} indices must be integers; received a slice")
        position = operator.index(index)
        size = len(self)
        if position < 0:
            position += size
        if not 0 <= position < size:
            raise IndexError(f"index {index} out of range for {type(self).__name__} of {size} samples")
        return self._load(position)

    @abc.abstractmethod
    def _load(self, index: int) -> dict[str, Any]:
        """The sample at `index`, 0 <= index < len(self)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} samples)"
