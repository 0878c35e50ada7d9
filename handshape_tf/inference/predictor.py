"""`HandPredictor`: images in, `HandPrediction`s out, whatever the model format.

Shape shorthand: B batch, H x W image, S crop side, J = 21 keypoints, V = 1159 vertices.

Pipeline per image: normalise to RGB uint8 (`data.crop.to_rgb_uint8`), cut the box and resize
it to S x S (`data.crop.crop_and_resize`, constant black padding outside the image), mirror the
crop of a left hand, run the model in batches, mirror the outputs back (u -> 1 - u, heat-map
columns flipped, d unchanged), then map (u, v) to full-image pixels and lift to 3D.
"""

from __future__ import annotations

import os

import numpy as np

from handshape_tf.data.crop import (
    check_box,
    check_intrinsics,
    crop_and_resize,
    image_box,
    mirror_image,
    read_image,
    to_rgb_uint8,
)
from handshape_tf.inference.backends import KerasBackend, open_backend
from handshape_tf.inference.prediction import (
    HandPrediction,
    heatmap_confidence,
    normalised_xyz,
    uvd_to_pixels,
    uvd_to_xyz_np,
)

DEFAULT_BATCH_SIZE = 8
# Smallest image side accepted: below it an image cannot show a hand (a 1 x 1 "image" would
# be stretched over the whole crop and give a confident-looking answer).
MIN_IMAGE_SIDE = 8


class HandPredictor:
    """Estimates hand pose and shape on images with any backend of `inference.backends`.

    Args:
      backend: an object with `image_size`, `description` and `run(crops)` (see
        `handshape_tf.inference.backends`).
      batch_size: crops per model call (>= 1).

    Example:
      predictor = load_predictor("model.keras")
      hand = predictor.predict(rgb_image, boxes=(120, 80, 200, 200))
      hand.joints_uv  # 21 x 2 pixels of rgb_image
    """

    def __init__(self, backend, batch_size: int = DEFAULT_BATCH_SIZE):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size is {batch_size!r}; expected an int >= 1")
        self.backend = backend
        self.batch_size = batch_size

    @classmethod
    def from_keras_model(cls, model, batch_size: int = DEFAULT_BATCH_SIZE) -> HandPredictor:
        """A predictor around an in-memory Keras model from `handshape_tf.models.build_model`."""
        return cls(KerasBackend(model), batch_size=batch_size)

    @property
    def image_size(self) -> int:
        """Side S of the square crops the model takes."""
        return self.backend.image_size

    def predict(
        self,
        images,
        boxes=None,
        intrinsics=None,
        root_depth=None,
        scale=None,
        is_left=False,
        channel_order: str = "rgb",
    ) -> HandPrediction | list[HandPrediction]:
        """Runs the model on one image or a batch of images.

        Args:
          images: one image (H x W [x C] array, or a path to an image file) or a batch: a
            list/tuple of such images (sizes and dtypes may differ) or a B x H x W x C array.
            Arrays: anything `data.crop.to_rgb_uint8` accepts (grey, RGB, RGBA; uint8, uint16,
            float). Files are decoded with OpenCV (BGR order handled).
          boxes: crop box (x0, y0, w, h) in image pixels around the hand: None (default: the
            square centred on the image with side max(H, W)), one (4,) box for all images, or
            one per image (B x 4, or a list with None entries for the default).
          intrinsics: None, or (4,) / B x 4 (fx, fy, cx, cy) of the full images, pixels.
          root_depth: None, or scalar / B: depth of the wrist (keypoint 0), mm.
          scale: None, or scalar / B: hand scale s (middle finger MCP-PIP length), mm.
            Give intrinsics, root_depth and scale together to get camera-space millimetres
            (the paper's protocol); with none of them the xyz outputs are root-relative, in
            units of s (`prediction.normalised_xyz`).
          is_left: bool or one bool per image: left hands are mirrored before the network
            (which is trained on right hands) and the outputs mirrored back.
          channel_order: "rgb" or "bgr", the channel order of array images.

        Returns:
          A `HandPrediction` for a single image, a list of them for a batch.

        Raises:
          ValueError: an input that is not an image or is smaller than MIN_IMAGE_SIDE, a bad or
            zero-size box or one entirely outside its image, NaN or non-positive
            intrinsics, root depth or scale, only some of the three camera arguments, or
            per-image arguments whose count does not match the batch.
          FileNotFoundError: an image path that does not exist.
        """
        single, items = _as_batch(images)
        count = len(items)
        rgb_images = [_load_image(item, channel_order, index) for index, item in enumerate(items)]
        for index, rgb in enumerate(rgb_images):
            if min(rgb.shape[:2]) < MIN_IMAGE_SIDE:
                raise ValueError(
                    f"image {index} is {rgb.shape[1]} x {rgb.shape[0]} pixels; expected at least "
                    f"{MIN_IMAGE_SIDE} x {MIN_IMAGE_SIDE} (a picture of a hand)"
                )
        box_list = _per_image_boxes(boxes, count, rgb_images)
        left_list = _per_image_flags(is_left, count)
        camera = _camera_arguments(intrinsics, root_depth, scale, count)

        size = self.image_size
        crops = np.empty((count, size, size, 3), np.uint8)
        for index, (rgb, box, left) in enumerate(zip(rgb_images, box_list, left_list, strict=True)):
            crop, _ = crop_and_resize(rgb, box, size)
            crops[index] = mirror_image(crop) if left else crop
        outputs = self._run(crops)

        predictions = []
        for index in range(count):
            predictions.append(
                _assemble(
                    {name: value[index] for name, value in outputs.items()},
                    box_list[index],
                    left_list[index],
                    None if camera is None else tuple(part[index] for part in camera),
                )
            )
        return predictions[0] if single else predictions

    def _run(self, crops: np.ndarray) -> dict[str, np.ndarray]:
        parts = []
        for start in range(0, len(crops), self.batch_size):
            parts.append(self.backend.run(crops[start : start + self.batch_size]))
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def load_predictor(path, batch_size: int = DEFAULT_BATCH_SIZE, num_threads: int | None = None) -> HandPredictor:
    """A `HandPredictor` for a .keras file, a SavedModel directory or a .tflite file.

    Args:
      path: the model; the format is detected from the path (see `backends.detect_format`).
      batch_size: crops per model call.
      num_threads: interpreter threads for .tflite models (None: LiteRT's default).

    Raises:
      FileNotFoundError: nothing at `path`.
      ValueError: `path` is not one of the three formats, or the model does not take
        B x S x S x 3 images / return mesh_uvd, pose_uvd and heat-maps.
    """
    return HandPredictor(open_backend(path, num_threads=num_threads), batch_size=batch_size)


def _as_batch(images) -> tuple[bool, list]:
    """(is a single image, list of images) from the forms `predict` accepts."""
    if isinstance(images, (str, os.PathLike)):
        return True, [images]
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("images is an empty list; expected at least one image")
        return False, list(images)
    array = np.asarray(images)
    if array.ndim == 4:
        if array.shape[0] == 0:
            raise ValueError(f"images has shape {array.shape}; expected a batch of at least one image")
        return False, list(array)
    return True, [array]


def _load_image(item, channel_order: str, index: int) -> np.ndarray:
    """H x W x 3 uint8 RGB from an array or an image file path."""
    if isinstance(item, (str, os.PathLike)):
        return read_image(item)
    try:
        return to_rgb_uint8(item, channel_order=channel_order)
    except ValueError as error:
        raise ValueError(f"image {index}: {error}") from None


def _per_image_boxes(boxes, count: int, rgb_images: list[np.ndarray]) -> list[np.ndarray]:
    """One checked (4,) box per image; a box must overlap its image (padding covers the rest)."""
    defaults = [image_box(rgb.shape[1], rgb.shape[0]) for rgb in rgb_images]
    if boxes is None:
        result = [check_box(box) for box in defaults]
    elif _is_flat_numbers(boxes):
        result = [check_box(boxes)] * count
    else:
        entries = list(boxes)
        if len(entries) != count:
            raise ValueError(
                f"boxes has {len(entries)} entries for {count} images; expected one box (4,) or one per image"
            )
        result = [check_box(default if box is None else box) for box, default in zip(entries, defaults, strict=True)]
    for index, (box, rgb) in enumerate(zip(result, rgb_images, strict=True)):
        x0, y0, width, height = box
        if x0 >= rgb.shape[1] or y0 >= rgb.shape[0] or x0 + width <= 0 or y0 + height <= 0:
            raise ValueError(
                f"image {index}: box {box.tolist()} (x0, y0, w, h) lies outside the {rgb.shape[1]} x {rgb.shape[0]} "
                "image; expected a box that overlaps it"
            )
    return result


def _is_flat_numbers(value) -> bool:
    if isinstance(value, np.ndarray):
        return value.ndim == 1
    return isinstance(value, (list, tuple)) and all(isinstance(v, (int, float, np.number)) for v in value)


def _per_image_flags(is_left, count: int) -> list[bool]:
    if isinstance(is_left, (bool, np.bool_)):
        return [bool(is_left)] * count
    flags = list(is_left) if isinstance(is_left, (list, tuple, np.ndarray)) else None
    if flags is None or len(flags) != count or not all(isinstance(f, (bool, np.bool_)) for f in flags):
        raise ValueError(f"is_left is {is_left!r}; expected a bool or {count} bools (one per image)")
    return [bool(f) for f in flags]


def _camera_arguments(intrinsics, root_depth, scale, count: int):
    """None, or (B x 4 intrinsics, B root depths, B scales) as float64 arrays."""
    given = {"intrinsics": intrinsics is not None, "root_depth": root_depth is not None, "scale": scale is not None}
    if not any(given.values()):
        return None
    if not all(given.values()):
        missing = [name for name, present in given.items() if not present]
        raise ValueError(
            f"intrinsics, root_depth and scale must be given together for camera-space output; missing {missing}"
        )
    values = check_intrinsics(intrinsics)
    if values.ndim == 1:
        values = np.broadcast_to(values, (count, 4))
    if values.shape != (count, 4):
        raise ValueError(f"intrinsics have shape {values.shape}; expected (4,) or ({count}, 4)")
    depths = _per_image_numbers("root_depth", root_depth, count)
    scales = _per_image_numbers("scale", scale, count)
    return values, depths, scales


def _per_image_numbers(name: str, value, count: int) -> np.ndarray:
    array = np.asarray(value, np.float64)
    if array.ndim == 0:
        array = np.full(count, float(array))
    if array.shape != (count,):
        raise ValueError(f"{name} has shape {array.shape}; expected a scalar or ({count},)")
    if not np.all(np.isfinite(array) & (array > 0)):
        raise ValueError(f"{name} is {array.tolist()}; expected finite values > 0 (mm)")
    return array


def _assemble(raw: dict[str, np.ndarray], box: np.ndarray, is_left: bool, camera) -> HandPrediction:
    """One `HandPrediction` from one crop's raw outputs (mirrored back for left hands)."""
    pose_uvd = raw["pose_uvd"].astype(np.float32)
    mesh_uvd = raw["mesh_uvd"].astype(np.float32)
    heatmaps = raw["heatmaps"].astype(np.float32)
    if is_left:
        pose_uvd[:, 0] = 1.0 - pose_uvd[:, 0]
        mesh_uvd[:, 0] = 1.0 - mesh_uvd[:, 0]
        heatmaps = np.ascontiguousarray(heatmaps[:, ::-1])
    if camera is None:
        joints_xyz, vertices_xyz = normalised_xyz(pose_uvd, mesh_uvd, box)
    else:
        intrinsics, root_depth, scale = camera
        joints_xyz = uvd_to_xyz_np(pose_uvd, intrinsics, box, root_depth, scale)
        vertices_xyz = uvd_to_xyz_np(mesh_uvd, intrinsics, box, root_depth, scale)
    return HandPrediction(
        box=box.astype(np.float32),
        is_left=is_left,
        joints_uv=uvd_to_pixels(pose_uvd, box),
        mesh_uv=uvd_to_pixels(mesh_uvd, box),
        pose_uvd=pose_uvd,
        mesh_uvd=mesh_uvd,
        heatmaps=heatmaps,
        confidence=heatmap_confidence(heatmaps),
        joints_xyz=joints_xyz,
        vertices_xyz=vertices_xyz,
        camera_space=camera is not None,
    )
