"""Depth map loss L_D for weak supervision (paper Sec. 4.4, Eq. 7).

Shape shorthand: B batch, H x W depth-map pixels (32 x 32 in the paper).

Reduction: smooth L1 per pixel, mean over the valid pixels of the whole batch (pixels of all
images pooled), where the paper writes smooth_L1(D, D^) without saying how it reduces. Invalid
pixels (no reference depth, background) carry neither loss nor gradient; with no valid pixel
at all the loss is 0.
"""

from __future__ import annotations

import tensorflow as tf

from handshape_tf.losses._checks import check_pair


def smooth_l1(difference, delta: float = 1.0) -> tf.Tensor:
    """Elementwise smooth L1 (Girshick 2015): 0.5 x^2 / delta if |x| < delta, else |x| - 0.5 delta.

    Args:
      difference: any-shape tensor x.
      delta: transition point (> 0), in the units of x; delta = 1 is Fast R-CNN's.

    Returns:
      float32 tensor of the same shape.

    Raises:
      ValueError: delta is not positive.
    """
    if not delta > 0:
        raise ValueError(f"delta is {delta!r}; expected a positive transition point")
    magnitude = tf.abs(tf.cast(difference, tf.float32))
    return tf.where(magnitude < delta, 0.5 * tf.square(magnitude) / delta, magnitude - 0.5 * delta)


def depth_map_loss(rendered, reference, valid_mask, delta: float = 1.0) -> tf.Tensor:
    """Smooth L1 between a rendered and a reference depth map over valid pixels.

    Args:
      rendered: B x H x W (or B x H x W x 1) depth rendered from the predicted mesh.
      reference: same shape, the captured depth, in the same units.
      valid_mask: same shape, bool or 0/1: pixels where the reference is valid (and, typically,
        on the hand). Values of either map at invalid pixels are ignored, even inf or NaN.
      delta: smooth-L1 transition point in depth units.

    Returns:
      Scalar float32: sum of smooth_l1(rendered - reference) over valid pixels / their number
      (0 when there are none).

    Raises:
      ValueError: shapes differ or are not 3D / 4D, or delta is not positive.
    """
    rendered = tf.cast(rendered, tf.float32)
    reference = tf.cast(reference, tf.float32)
    valid = tf.cast(valid_mask, tf.bool)
    rank = rendered.shape.rank if rendered.shape.rank in (3, 4) else 3
    check_pair(rendered, reference, "B x H x W (x 1) depth maps", rank=rank)
    if not valid.shape.is_compatible_with(rendered.shape):
        raise ValueError(f"valid_mask has shape {valid.shape}; expected the depth maps' shape {rendered.shape}")
    difference = tf.where(valid, rendered - reference, tf.zeros_like(rendered))
    per_pixel = tf.where(valid, smooth_l1(difference, delta), tf.zeros_like(rendered))
    count = tf.reduce_sum(tf.cast(valid, tf.float32))
    return tf.math.divide_no_nan(tf.reduce_sum(per_pixel), count)
