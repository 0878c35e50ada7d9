"""Pinhole camera, crops and the paper's uvd parametrisation (Sec. 4.2, 5.1).

Shape shorthand: B batch, P points (21 keypoints or V mesh vertices).

Conventions (project-wide): the camera frame is OpenCV-style (x right, y down, z forward,
depth > 0, millimetres); pixel (col i, row j) covers [i, i+1) x [j, j+1), so a point projects
to x = fx X / Z + cx, y = fy Y / Z + cy with no half-pixel shift. A crop box (x0, y0, w, h) is a
rectangle of the full image in those continuous pixel coordinates; normalised crop coordinates
are u = (x - x0) / w, v = (y - y0) / h, in [0, 1] inside the box, independent of the size the
crop is resized to. uvd is (u, v, d) with d = (Z - Z_root) / s, the scale-invariant root-relative
depth: root = keypoint 0 (wrist), s = |keypoint 9 - keypoint 10| (middle finger MCP-PIP bone).

Every function accepts numpy arrays or tensors (cast to float32) and runs inside tf.function.
Per-batch camera arguments (intrinsics B x 4, crop_box B x 4, root_depth B, scale B) may also be
given unbatched (4, or a scalar) to share one value across the batch.

Value checks (finite intrinsics with fx, fy > 0, crop boxes with w, h > 0, positive scale) run
whenever the value is known when the graph is built: always in eager mode and for numpy or
constant inputs inside tf.function. They raise ValueError. Values only known at run time inside
tf.function are not checked (no assert ops, so exported graphs stay plain): bad values then
give inf/NaN. Points with Z <= 0 (behind the camera) project to inf or to mirrored pixels.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from handshape_tf.assets.template import ROOT_KEYPOINT, SCALE_BONE

NUM_KEYPOINTS = 21


def _check_last_dim(name: str, tensor: tf.Tensor, size: int, expected: str) -> None:
    """Raises ValueError unless the static last dimension of `tensor` is `size`."""
    shape = tensor.shape
    if shape.rank is None:
        return
    if shape.rank == 0 or (shape[-1] is not None and shape[-1] != size):
        raise ValueError(f"{name} has shape {shape}; expected {expected} (last dimension {size})")


def _static_rows(tensor: tf.Tensor) -> np.ndarray | None:
    """The value of `tensor` as a 2D numpy array of rows, if known now; else None."""
    value = tf.get_static_value(tensor)
    return None if value is None else np.reshape(value, (-1, value.shape[-1]))


def _check_intrinsics(intrinsics: tf.Tensor) -> None:
    rows = _static_rows(intrinsics)
    if rows is None:
        return
    bad = ~np.all(np.isfinite(rows), axis=1) | ~(rows[:, 0] > 0) | ~(rows[:, 1] > 0)
    if np.any(bad):
        index = np.flatnonzero(bad)
        raise ValueError(
            f"intrinsics must be finite (fx, fy, cx, cy) with fx, fy > 0; received "
            f"{rows[index[0]].tolist()} (bad batch rows {index[:8].tolist()})"
        )


def _check_crop_box(crop_box: tf.Tensor) -> None:
    rows = _static_rows(crop_box)
    if rows is None:
        return
    bad = ~np.all(np.isfinite(rows), axis=1) | ~(rows[:, 2] > 0) | ~(rows[:, 3] > 0)
    if np.any(bad):
        index = np.flatnonzero(bad)
        raise ValueError(
            f"crop_box must be finite (x0, y0, w, h) with w, h > 0 (a zero-size box has no "
            f"normalised coordinates); received {rows[index[0]].tolist()} "
            f"(bad batch rows {index[:8].tolist()})"
        )


def _check_scale(scale: tf.Tensor, origin: str) -> None:
    value = tf.get_static_value(scale)
    if value is None:
        return
    bad = ~(np.isfinite(value) & (value > 0))
    if np.any(bad):
        index = np.flatnonzero(np.reshape(bad, -1))
        raise ValueError(
            f"scale ({origin}) must be finite and > 0; received {np.reshape(value, -1)[index[0]]} "
            f"(bad batch entries {index[:8].tolist()})"
        )


def _camera_args(intrinsics, crop_box=None):
    intrinsics = tf.cast(intrinsics, tf.float32)
    _check_last_dim("intrinsics", intrinsics, 4, "B x 4 (fx, fy, cx, cy)")
    _check_intrinsics(intrinsics)
    if crop_box is None:
        return intrinsics, None
    crop_box = tf.cast(crop_box, tf.float32)
    _check_last_dim("crop_box", crop_box, 4, "B x 4 (x0, y0, w, h)")
    _check_crop_box(crop_box)
    return intrinsics, crop_box


def _per_point(params: tf.Tensor, index: int) -> tf.Tensor:
    """Column `index` of B x K (or K) camera parameters, shaped to broadcast with B x P."""
    return params[..., index, tf.newaxis]


def _per_batch(value: tf.Tensor) -> tf.Tensor:
    """B (or scalar) values shaped to broadcast with B x P."""
    return value[..., tf.newaxis]


def crop_intrinsics(intrinsics, crop_box, out_size) -> tf.Tensor:
    """Intrinsics of a crop of the full image resized to `out_size`.

    Args:
      intrinsics: B x 4 (fx, fy, cx, cy) of the full image, pixels.
      crop_box: B x 4 (x0, y0, w, h) in full-image pixels.
      out_size: the crop's size after resizing, an int (square) or (width, height).

    Returns:
      B x 4 float32 (fx', fy', cx', cy') such that `project(xyz, result)` gives pixels of the
      resized crop: x' = (x - x0) * width / w, y' = (y - y0) * height / h.

    Raises:
      ValueError: wrong last dimensions, non-finite intrinsics or fx, fy <= 0, a crop box with
        w or h <= 0, or a non-positive out_size.
    """
    intrinsics, crop_box = _camera_args(intrinsics, crop_box)
    width, height = (out_size, out_size) if np.ndim(out_size) == 0 else tuple(out_size)
    if not (np.isfinite(width) and np.isfinite(height) and width > 0 and height > 0):
        raise ValueError(f"out_size is {out_size!r}; expected a positive int or (width, height)")
    scale_x = float(width) / crop_box[..., 2]
    scale_y = float(height) / crop_box[..., 3]
    return tf.stack(
        [
            intrinsics[..., 0] * scale_x,
            intrinsics[..., 1] * scale_y,
            (intrinsics[..., 2] - crop_box[..., 0]) * scale_x,
            (intrinsics[..., 3] - crop_box[..., 1]) * scale_y,
        ],
        axis=-1,
    )


def project(xyz, intrinsics) -> tf.Tensor:
    """Pinhole projection of camera-frame points to pixels.

    Args:
      xyz: B x P x 3 points in the camera frame (Z > 0).
      intrinsics: B x 4 (fx, fy, cx, cy), pixels.

    Returns:
      B x P x 2 float32 pixel coordinates (x, y), continuous convention.

    Raises:
      ValueError: wrong last dimensions, or non-finite intrinsics or fx, fy <= 0.
    """
    xyz = tf.cast(xyz, tf.float32)
    _check_last_dim("xyz", xyz, 3, "B x P x 3")
    intrinsics, _ = _camera_args(intrinsics)
    z = xyz[..., 2]
    x = _per_point(intrinsics, 0) * xyz[..., 0] / z + _per_point(intrinsics, 2)
    y = _per_point(intrinsics, 1) * xyz[..., 1] / z + _per_point(intrinsics, 3)
    return tf.stack([x, y], axis=-1)


def root_depth_and_scale(keypoints) -> tuple[tf.Tensor, tf.Tensor]:
    """Root depth Z_root and hand scale s of 21 keypoints (paper order).

    Args:
      keypoints: B x 21 x 3 keypoints in the camera frame.

    Returns:
      (root_depth, scale): B float32 each; Z of keypoint 0 and |keypoint 9 - keypoint 10|.

    Raises:
      ValueError: keypoints is not ... x 21 x 3, or (eager) a scale is zero or not finite.
    """
    keypoints = tf.cast(keypoints, tf.float32)
    _check_last_dim("keypoints", keypoints, 3, "B x 21 x 3")
    if keypoints.shape.rank is not None and keypoints.shape.rank >= 2:
        if keypoints.shape[-2] is not None and keypoints.shape[-2] != NUM_KEYPOINTS:
            raise ValueError(
                f"keypoints has shape {keypoints.shape}; expected B x {NUM_KEYPOINTS} x 3 (the root "
                f"and scale come from keypoints {ROOT_KEYPOINT} and {SCALE_BONE})"
            )
    bone = keypoints[..., SCALE_BONE[1], :] - keypoints[..., SCALE_BONE[0], :]
    scale = tf.norm(bone, axis=-1)
    _check_scale(scale, f"length of the bone between keypoints {SCALE_BONE}")
    return keypoints[..., ROOT_KEYPOINT, 2], scale


def xyz_to_uvd(xyz, intrinsics, crop_box, root_index: int = 0, scale=None, root_depth=None) -> tf.Tensor:
    """Camera-frame points to normalised crop coordinates and scale-invariant relative depth.

    Args:
      xyz: B x P x 3 points in the camera frame, millimetres.
      intrinsics: B x 4 (fx, fy, cx, cy) of the full image.
      crop_box: B x 4 (x0, y0, w, h) in full-image pixels.
      root_index: point whose depth is Z_root, used when root_depth is None (0 = wrist).
      scale: B hand scales s (same unit as xyz); None computes them from points 9 and 10,
        which requires xyz to be the 21 keypoints.
      root_depth: B root depths Z_root; None takes Z of point `root_index`. Pass it (with
        scale) to convert mesh vertices with the keypoints' root and scale.

    Returns:
      B x P x 3 float32 uvd: u = (x - x0) / w, v = (y - y0) / h with (x, y) the projected
      pixel, d = (Z - Z_root) / s.

    Raises:
      ValueError: wrong last dimensions, scale None with P != 21, non-finite intrinsics or
        fx, fy <= 0, a crop box with w or h <= 0, or a scale that is not finite and positive.
    """
    xyz = tf.cast(xyz, tf.float32)
    _check_last_dim("xyz", xyz, 3, "B x P x 3")
    intrinsics, crop_box = _camera_args(intrinsics, crop_box)
    if scale is None:
        _, scale = root_depth_and_scale(xyz)
    else:
        scale = tf.cast(scale, tf.float32)
        _check_scale(scale, "given")
    if root_depth is None:
        root_depth = xyz[..., root_index, 2]
    root_depth = tf.cast(root_depth, tf.float32)
    pixels = project(xyz, intrinsics)
    u = (pixels[..., 0] - _per_point(crop_box, 0)) / _per_point(crop_box, 2)
    v = (pixels[..., 1] - _per_point(crop_box, 1)) / _per_point(crop_box, 3)
    d = (xyz[..., 2] - _per_batch(root_depth)) / _per_batch(scale)
    return tf.stack([u, v, d], axis=-1)


def uvd_to_xyz(uvd, intrinsics, crop_box, root_depth, scale) -> tf.Tensor:
    """Inverse of `xyz_to_uvd` given the root depth and scale (the paper's test protocol).

    Args:
      uvd: B x P x 3 normalised crop coordinates and relative depth.
      intrinsics: B x 4 (fx, fy, cx, cy) of the full image.
      crop_box: B x 4 (x0, y0, w, h) in full-image pixels.
      root_depth: B root depths Z_root (camera frame, e.g. mm).
      scale: B hand scales s (same unit).

    Returns:
      B x P x 3 float32 camera-frame points: Z = d s + Z_root, X = (x - cx) Z / fx,
      Y = (y - cy) Z / fy with x = x0 + u w, y = y0 + v h.

    Raises:
      ValueError: wrong last dimensions, non-finite intrinsics or fx, fy <= 0, or a crop box
        with w or h <= 0.
    """
    uvd = tf.cast(uvd, tf.float32)
    _check_last_dim("uvd", uvd, 3, "B x P x 3")
    intrinsics, crop_box = _camera_args(intrinsics, crop_box)
    root_depth = tf.cast(root_depth, tf.float32)
    scale = tf.cast(scale, tf.float32)
    z = uvd[..., 2] * _per_batch(scale) + _per_batch(root_depth)
    x_pixel = _per_point(crop_box, 0) + uvd[..., 0] * _per_point(crop_box, 2)
    y_pixel = _per_point(crop_box, 1) + uvd[..., 1] * _per_point(crop_box, 3)
    x = (x_pixel - _per_point(intrinsics, 2)) * z / _per_point(intrinsics, 0)
    y = (y_pixel - _per_point(intrinsics, 3)) * z / _per_point(intrinsics, 1)
    return tf.stack([x, y, z], axis=-1)
