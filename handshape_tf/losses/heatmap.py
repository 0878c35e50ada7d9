"""Heat-map loss L_H (paper Sec. 4.3).

Shape shorthand: B batch, H x W heat-map pixels, J joints.

Reduction: the paper's per-joint squared L2 norm |H_j - H^_j|^2 (sum over the H x W pixels),
then the mean over joints and batch, where the paper sums over joints: ours = paper / J.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from handshape_tf.losses._checks import check_pair


def heatmap_loss(pred, target) -> tf.Tensor:
    """Squared L2 heat-map loss, summed over stacks when given several predictions.

    Args:
      pred: B x H x W x J predicted heat-maps, or a sequence of them (one per hourglass stack,
        intermediate supervision): the per-stack losses are summed.
      target: B x H x W x J ground-truth heat-maps.

    Returns:
      Scalar float32: mean over batch and joints of sum over pixels of (pred - target)^2.

    Raises:
      ValueError: shapes are not B x H x W x J or differ, or pred is an empty sequence.
    """
    target = tf.cast(target, tf.float32)
    stacks = list(pred) if isinstance(pred, Sequence) else [pred]
    if not stacks:
        raise ValueError("pred is an empty sequence; expected B x H x W x J heat-maps or one per stack")
    total = tf.constant(0.0)
    for stack in stacks:
        stack = tf.cast(stack, tf.float32)
        check_pair(stack, target, "B x H x W x J heat-maps", rank=4)
        per_joint = tf.reduce_sum(tf.square(stack - target), axis=[1, 2])  # B x J
        total += tf.reduce_mean(per_joint)
    return total
