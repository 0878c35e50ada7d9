"""Bottleneck residual module of the stacked hourglass network (Newell et al. 2016).

Shape shorthand: B batch, H x W feature map, C input channels, C' = filters.
"""

from __future__ import annotations

import keras

from handshape_tf.layers._common import batch_norm, build_sequence


@keras.saving.register_keras_serializable(package="handshape_tf")
class Residual(keras.layers.Layer):
    """Pre-activation bottleneck: BN-ReLU-conv1x1(C'/2)-BN-ReLU-conv3x3(C'/2)-BN-ReLU-conv1x1(C').

    The skip path is the identity, or a 1x1 convolution of the input when C != C'.

    Args:
        filters: C', output channels (even).
        **kwargs: keras.layers.Layer arguments.

    Call:
        inputs: B x H x W x C (batch norm follows Keras' `training` flag of the outer call).
        Returns: B x H x W x C'.

    Example:
        >>> Residual(64)(np.zeros((2, 16, 16, 32), np.float32)).shape
        TensorShape([2, 16, 16, 64])

    Reference:
        Newell, Yang, Deng, "Stacked Hourglass Networks for Human Pose Estimation", ECCV 2016.
    """

    def __init__(self, filters: int, **kwargs):
        super().__init__(**kwargs)
        if filters < 2 or filters % 2:
            raise ValueError(f"Residual filters must be an even number >= 2, got {filters}")
        self.filters = int(filters)
        half = self.filters // 2
        self.branch = [
            batch_norm(),
            keras.layers.ReLU(),
            keras.layers.Conv2D(half, 1),
            batch_norm(),
            keras.layers.ReLU(),
            keras.layers.Conv2D(half, 3, padding="same"),
            batch_norm(),
            keras.layers.ReLU(),
            keras.layers.Conv2D(self.filters, 1),
        ]
        self.skip = None

    def build(self, input_shape):
        if input_shape[-1] != self.filters:
            self.skip = keras.layers.Conv2D(self.filters, 1, dtype=self.dtype_policy)
            self.skip.build(input_shape)
        build_sequence(self.branch, input_shape)

    def call(self, inputs):
        x = inputs
        for layer in self.branch:
            x = layer(x)
        shortcut = inputs if self.skip is None else self.skip(inputs)
        return x + shortcut

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)

    def get_config(self):
        config = super().get_config()
        config.update({"filters": self.filters})
        return config
