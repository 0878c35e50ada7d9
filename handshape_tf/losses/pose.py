"""3D pose loss L_J (paper Sec. 4.3).

Shape shorthand: B batch, J joints (21).

Reduction: squared Euclidean distance per joint (sum over the 3 coordinates), mean over joints
and batch, where the paper sums over joints: ours = paper / J. Coordinates are the network's
(uvd: normalised u, v and scale-invariant root-relative depth), as for the mesh.
"""

from __future__ import annotations

import tensorflow as tf

from handshape_tf.losses._checks import check_pair


def pose_loss(pred, target) -> tf.Tensor:
    """Squared L2 3D joint loss.

    Args:
      pred: B x J x 3 predicted joints.
      target: B x J x 3 ground-truth joints.

    Returns:
      Scalar float32: mean over batch and joints of |pred - target|^2.

    Raises:
      ValueError: shapes are not B x J x 3 or differ.
    """
    pred = tf.cast(pred, tf.float32)
    target = tf.cast(target, tf.float32)
    check_pair(pred, target, "B x J x 3 joints", rank=3, last_dim=3)
    return tf.reduce_mean(tf.reduce_sum(tf.square(pred - target), axis=-1))
