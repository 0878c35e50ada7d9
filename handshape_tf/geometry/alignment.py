"""Similarity (Procrustes) alignment of point sets, in TensorFlow and in numpy.

Shape shorthand: B batch, P points.

The transform minimises sum_p |scale R pred_p + t - target_p|^2 over a proper rotation R
(det +1: the reflection the plain SVD solution may give is fixed by flipping the axis of the
smallest singular value, Umeyama 1991), an isotropic scale > 0 and a translation t. Used for
aligned mesh / pose errors. Degenerate inputs: if all pred points coincide the scale is 0 and
every aligned point is the target centroid; when the cross-covariance is rank deficient (e.g.
collinear points) the rotation about the degenerate axis is arbitrary but the aligned points
are still optimal. The TF version differentiates through tf.linalg.svd, whose gradient is not
finite for repeated singular values: use it for evaluation, not as a training loss. It uses
no MatrixDeterminant (`det3`), so a step compiled with XLA may contain it.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from handshape_tf.geometry.camera import _check_last_dim


def _check_pair(pred_shape, target_shape) -> None:
    pred_shape, target_shape = tuple(pred_shape), tuple(target_shape)
    if len(pred_shape) < 2 or pred_shape[-1] != 3 or pred_shape != target_shape:
        raise ValueError(
            f"pred has shape {pred_shape} and target {target_shape}; expected the same shape "
            f"B x P x 3 (or P x 3 in numpy)"
        )


def det3(matrices) -> tf.Tensor:
    """... x 3 x 3 -> ... determinants as the triple product of the rows (XLA has no
    MatrixDeterminant kernel)."""
    return tf.reduce_sum(matrices[..., 0, :] * tf.linalg.cross(matrices[..., 1, :], matrices[..., 2, :]), axis=-1)


def procrustes_transform(pred, target) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Similarity transform taking pred onto target in the least-squares sense.

    Args:
      pred: B x P x 3 points to move.
      target: B x P x 3 corresponding points.

    Returns:
      (scale, rotation, translation): B, B x 3 x 3 and B x 3 float32 such that the aligned
      points are scale * pred @ transpose(rotation) + translation.

    Raises:
      ValueError: pred and target do not have the same static shape B x P x 3.
    """
    pred = tf.cast(pred, tf.float32)
    target = tf.cast(target, tf.float32)
    _check_last_dim("pred", pred, 3, "B x P x 3")
    if pred.shape.is_fully_defined() and target.shape.is_fully_defined():
        _check_pair(pred.shape, target.shape)
    pred_mean = tf.reduce_mean(pred, axis=-2, keepdims=True)  # B x 1 x 3
    target_mean = tf.reduce_mean(target, axis=-2, keepdims=True)
    pred_centred = pred - pred_mean
    target_centred = target - target_mean
    covariance = tf.linalg.matmul(pred_centred, target_centred, transpose_a=True)  # B x 3 x 3
    singular, left, right = tf.linalg.svd(covariance)  # covariance = left diag(s) right^T
    # Rotation R = right D left^T, D = diag(1, 1, sign det(right left^T)).
    sign = tf.sign(det3(tf.linalg.matmul(right, left, transpose_b=True)))
    sign = tf.where(sign == 0, tf.ones_like(sign), sign)
    flip = tf.stack([tf.ones_like(sign), tf.ones_like(sign), sign], axis=-1)  # B x 3
    rotation = tf.linalg.matmul(right * flip[..., tf.newaxis, :], left, transpose_b=True)
    spread = tf.reduce_sum(tf.square(pred_centred), axis=[-2, -1])  # B
    scale = tf.math.divide_no_nan(tf.reduce_sum(singular * flip, axis=-1), spread)
    rotated_mean = tf.linalg.matmul(pred_mean, rotation, transpose_b=True)  # B x 1 x 3
    translation = (target_mean - scale[..., tf.newaxis, tf.newaxis] * rotated_mean)[..., 0, :]
    return scale, rotation, translation


def procrustes_align(pred, target) -> tf.Tensor:
    """Pred moved onto target by the best similarity transform (see `procrustes_transform`).

    Args:
      pred: B x P x 3 points to move.
      target: B x P x 3 corresponding points.

    Returns:
      B x P x 3 float32 aligned copy of pred.

    Raises:
      ValueError: pred and target do not have the same static shape B x P x 3.
    """
    pred = tf.cast(pred, tf.float32)
    scale, rotation, translation = procrustes_transform(pred, target)
    rotated = tf.linalg.matmul(pred, rotation, transpose_b=True)
    return scale[..., tf.newaxis, tf.newaxis] * rotated + translation[..., tf.newaxis, :]


def procrustes_align_np(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Numpy (float64) twin of `procrustes_align` for evaluation.

    Args:
      pred: P x 3 or B x P x 3 points to move.
      target: same shape, corresponding points.

    Returns:
      float64 array of pred's shape: the aligned copy of pred.

    Raises:
      ValueError: pred and target differ in shape or are not (B x) P x 3.
    """
    pred = np.asarray(pred, np.float64)
    target = np.asarray(target, np.float64)
    _check_pair(pred.shape, target.shape)
    pred_mean = pred.mean(axis=-2, keepdims=True)
    target_mean = target.mean(axis=-2, keepdims=True)
    pred_centred = pred - pred_mean
    target_centred = target - target_mean
    covariance = np.swapaxes(pred_centred, -1, -2) @ target_centred
    left, singular, right_t = np.linalg.svd(covariance)
    right = np.swapaxes(right_t, -1, -2)
    sign = np.sign(np.linalg.det(right @ np.swapaxes(left, -1, -2)))
    sign = np.where(sign == 0, 1.0, sign)
    flip = np.stack([np.ones_like(sign), np.ones_like(sign), sign], axis=-1)
    rotation = (right * flip[..., np.newaxis, :]) @ np.swapaxes(left, -1, -2)
    spread = np.sum(pred_centred**2, axis=(-2, -1))
    numerator = np.sum(singular * flip, axis=-1)
    scale = np.divide(numerator, spread, out=np.zeros_like(numerator), where=spread > 0)
    aligned = pred_centred @ np.swapaxes(rotation, -1, -2)
    return scale[..., np.newaxis, np.newaxis] * aligned + target_mean
