"""Reader for the Rendered Hand Pose Dataset (RHD, Zimmermann & Brox, ICCV 2017).

Shape shorthand: H x W image size (320 x 320), J = 21 keypoints.

Layout (RHD_published_v2):
  <root>/<split>/color/<id:05d>.png      RGB
  <root>/<split>/depth/<id:05d>.png      depth_m = (256 R + G) / 65535 * 5 (8-bit 3-channel)
  <root>/<split>/mask/<id:05d>.png       labels: 0 background, 1 person, 2-17 left hand,
                                         18-33 right hand
  <root>/<split>/anno_<split>.pickle     {id: {"xyz": 42 x 3 m, "uv_vis": 42 x 3, "K": 3 x 3}}
with <split> "training" (41258) or "evaluation" (2728). Keypoints 0-20 are the left hand,
21-41 the right; within a hand: wrist, then thumb, index, middle, ring, little, each from the
tip inward (tip, DIP, PIP, MCP), reversed here to the paper order (base outward).

One sample per image, for one hand: "dominant" picks the hand with more mask pixels (the rule of
Zimmermann & Brox's own data pipeline; ties go to the hand with more visible keypoints, then to
the right hand), "left"/"right" force a side. The mask is the chosen hand's.

K is used as stored, with no half-pixel shift: RHD is rendered (Blender), and a rendered
camera's principal point is the image centre W / 2 in continuous coordinates. This is an
assumption (not checked against the released files); uv_vis is K's projection of xyz either way.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from handshape_tf.data.external.common import (
    DEFAULT_CROP_MARGIN,
    ExternalDataset,
    check_margin,
    check_rgb_png,
    make_sample,
    read_image,
    read_rgb,
    require_dir,
    require_file,
)

logger = logging.getLogger(__name__)

SPLITS = ("training", "evaluation")
HANDS = ("dominant", "left", "right")
# Paper keypoint k is RHD keypoint RHD_TO_PAPER[k] of the same hand (fingers stored tip first).
RHD_TO_PAPER = (0, 4, 3, 2, 1, 8, 7, 6, 5, 12, 11, 10, 9, 16, 15, 14, 13, 20, 19, 18, 17)
LEFT_LABELS = (2, 17)  # inclusive mask label range of the left hand
RIGHT_LABELS = (18, 33)
DEPTH_MAX_MM = 5000.0


def decode_depth(encoded: np.ndarray) -> np.ndarray:
    """H x W float32 mm from an H x W x 3 uint8 RHD depth image in OpenCV BGR order."""
    code = encoded[..., 2].astype(np.float32) * 256.0 + encoded[..., 1].astype(np.float32)
    return code / 65535.0 * DEPTH_MAX_MM


class RHDDataset(ExternalDataset):
    """RHD images with one hand's 3D joints (mm), depth and mask.

    Samples follow `handshape_tf.data.external.common` (full frames: crop_box is a square box
    around the chosen hand's projected joints; depth and mask when `with_depth` / always).

    Args:
      root: the RHD folder holding `training/` and/or `evaluation/`.
      split: "training" or "evaluation".
      hand: "dominant" (more mask pixels), "left" or "right".
      with_depth: decode the depth PNG (mm).
      crop_margin: margin of the square crop box, as a fraction of the joints' extent per side.

    Raises:
      FileNotFoundError: the root, split folder or annotation pickle is missing.
      ValueError: unknown split or hand, or an annotation of another format.

    Example:
      >>> data = RHDDataset("/data/RHD_published_v2", split="evaluation")
      >>> data[0]["is_left"] in (True, False)
      True
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "training",
        hand: str = "dominant",
        *,
        with_depth: bool = True,
        crop_margin: float = DEFAULT_CROP_MARGIN,
    ):
        if split not in SPLITS:
            raise ValueError(f"RHD split must be one of {SPLITS}; received {split!r}")
        if hand not in HANDS:
            raise ValueError(f"RHD hand must be one of {HANDS}; received {hand!r}")
        self.root = require_dir(Path(root), "RHD root folder")
        self.split = split
        self.hand = hand
        self.with_depth = with_depth
        self.crop_margin = check_margin(crop_margin)
        self._folder = require_dir(self.root / split, f"RHD {split} folder")
        pickle_path = require_file(self._folder / f"anno_{split}.pickle", f"RHD {split} annotations")
        with open(pickle_path, "rb") as stream:
            # The pickle was written by Python 2: numpy arrays need latin1 to load.
            annotations = pickle.load(stream, encoding="latin1")
        if not isinstance(annotations, dict):
            raise ValueError(f"{pickle_path}: holds a {type(annotations).__name__}; expected a dict id -> annotation")
        self._ids = sorted(annotations)
        self._annotations = [self._check(pickle_path, i, annotations[i]) for i in self._ids]
        self._names = [f"{split}/color/{i:05d}.png" for i in self._ids]
        logger.info("RHD %s: %d images", split, len(self))

    @staticmethod
    def _check(path: Path, sample_id: Any, annotation: Any) -> dict[str, np.ndarray]:
        expected = {"xyz": (42, 3), "uv_vis": (42, 3), "K": (3, 3)}
        if not isinstance(annotation, dict) or any(key not in annotation for key in expected):
            found = sorted(annotation) if isinstance(annotation, dict) else type(annotation).__name__
            raise ValueError(f"{path}: sample {sample_id!r} has {found}; expected keys {sorted(expected)}")
        arrays = {key: np.asarray(annotation[key], np.float64) for key in expected}
        for key, shape in expected.items():
            if arrays[key].shape != shape:
                raise ValueError(f"{path}: sample {sample_id!r} {key} has shape {arrays[key].shape}; expected {shape}")
        return arrays

    def _choose_left(self, labels: np.ndarray, visible: np.ndarray) -> bool:
        """Whether the sample's hand is the left one, by `self.hand` (see the module docstring)."""
        if self.hand != "dominant":
            return self.hand == "left"
        left = np.count_nonzero((labels >= LEFT_LABELS[0]) & (labels <= LEFT_LABELS[1]))
        right = np.count_nonzero((labels >= RIGHT_LABELS[0]) & (labels <= RIGHT_LABELS[1]))
        if left != right:
            return bool(left > right)
        return bool(visible[:21].sum() > visible[21:].sum())

    def _load(self, index: int) -> dict[str, Any]:
        sample_id = self._ids[index]
        annotation = self._annotations[index]
        file_name = f"{sample_id:05d}.png"
        image = read_rgb(self._folder / "color" / file_name)
        height, width = image.shape[:2]
        mask_path = self._folder / "mask" / file_name
        labels = read_image(mask_path)
        if labels.ndim == 3:
            labels = labels[..., 0]
        if labels.shape != (height, width):
            raise ValueError(
                f"RHD mask {mask_path}: got shape {labels.shape}; expected {(height, width)} like the colour image"
            )
        is_left = self._choose_left(labels, annotation["uv_vis"][:, 2] == 1)
        low, high = LEFT_LABELS if is_left else RIGHT_LABELS
        offset = 0 if is_left else 21
        joints_xyz = annotation["xyz"][offset : offset + 21][list(RHD_TO_PAPER)] * 1000.0
        K = annotation["K"]
        intrinsics = np.array([K[0, 0], K[1, 1], K[0, 2], K[1, 2]])
        depth = None
        if self.with_depth:
            depth_path = self._folder / "depth" / file_name
            encoded = read_image(depth_path)
            check_rgb_png(encoded, depth_path, "RHD depth image", (width, height))
            depth = decode_depth(encoded)
        return make_sample(
            image=image,
            intrinsics=intrinsics,
            joints_xyz=joints_xyz,
            is_left=is_left,
            name=self._names[index],
            crop_margin=self.crop_margin,
            depth=depth,
            mask=(labels >= low) & (labels <= high),
        )
