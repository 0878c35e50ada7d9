"""Graph upsampling and pooling along the Graclus binary tree (paper Sec. 4.2, Fig. 5).

Shape shorthand: B batch, N graph nodes, F features, r the factor.

With the coarsening's node ordering, the children of coarse node i are fine nodes r*i ... r*i +
r - 1 (r = 2 per level, 4 for two levels), so both operations are fixed reshapes.
"""

from __future__ import annotations

import keras
import tensorflow as tf


def _check_factor(factor):
    if int(factor) != factor or factor < 1:
        raise ValueError(f"factor must be a positive integer, got {factor!r}")
    return int(factor)


@keras.saving.register_keras_serializable(package="handshape_tf")
class GraphUpsample(keras.layers.Layer):
    """Copies each coarse node's features to its `factor` children: child i takes parent i // r.

    Args:
        factor: r >= 1, children per coarse node.
        **kwargs: keras.layers.Layer arguments.

    Call:
        inputs: B x N x F.
        Returns: B x (r N) x F.

    Example:
        >>> GraphUpsample(2)(np.array([[[1.0], [2.0]]]))[0, :, 0].numpy().tolist()
        [1.0, 1.0, 2.0, 2.0]
    """

    def __init__(self, factor: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.factor = _check_factor(factor)

    def call(self, inputs):
        _, num_nodes, num_features = inputs.shape
        tiled = tf.tile(inputs[:, :, None, :], [1, 1, self.factor, 1])  # B x N x r x F
        return tf.reshape(tiled, [-1, num_nodes * self.factor, num_features])

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1] * self.factor, input_shape[2])

    def get_config(self):
        config = super().get_config()
        config.update({"factor": self.factor})
        return config


@keras.saving.register_keras_serializable(package="handshape_tf")
class GraphPool(keras.layers.Layer):
    """Mean over each group of `factor` consecutive nodes (the children of one coarse node).

    Args:
        factor: r >= 1, nodes per group; N must be divisible by r.
        **kwargs: keras.layers.Layer arguments.

    Call:
        inputs: B x N x F.
        Returns: B x (N / r) x F.

    Example:
        >>> GraphPool(2)(np.array([[[1.0], [3.0], [5.0], [9.0]]]))[0, :, 0].numpy().tolist()
        [2.0, 7.0]
    """

    def __init__(self, factor: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.factor = _check_factor(factor)

    def build(self, input_shape):
        if input_shape[1] is None or input_shape[1] % self.factor:
            raise ValueError(
                f"GraphPool(factor={self.factor}) needs a node count divisible by "
                f"{self.factor}, got input shape {input_shape}"
            )

    def call(self, inputs):
        _, num_nodes, num_features = inputs.shape
        groups = tf.reshape(inputs, [-1, num_nodes // self.factor, self.factor, num_features])
        return tf.reduce_mean(groups, axis=2)  # B x N/r x F

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1] // self.factor, input_shape[2])

    def get_config(self):
        config = super().get_config()
        config.update({"factor": self.factor})
        return config
