"""Residual encoder from heat-maps and hourglass features to a latent vector (paper Sec. 4.1).

Shape shorthand: B batch, h x w heat-map resolution, J heat-maps, C hourglass channels,
C' = filters, P = num_pools, Z = (h / 2**P) * (w / 2**P) * C' latent size.
"""

from __future__ import annotations

import keras

from handshape_tf.layers._common import build_sequence
from handshape_tf.layers.residual import Residual


@keras.saving.register_keras_serializable(package="handshape_tf")
class ResidualEncoder(keras.layers.Layer):
    """conv1x1(heat-maps) + conv1x1(features), then residual modules and 2x2 max-pools, flattened.

    The `num_residual` modules are split evenly into `num_pools` groups, each group followed by
    a 2x2 max-pool (paper: 8 residual layers and 4 pools, 64x64x256 -> 4x4x256 = 4096).

    Args:
        filters: C', channels of the 1x1 convolutions and the residual modules.
        num_residual: number of `Residual` modules, a multiple of num_pools.
        num_pools: P >= 1, number of 2x2 max-pools; h and w must be divisible by 2**P.
        **kwargs: keras.layers.Layer arguments.

    Call:
        heatmaps: B x h x w x J, the last stack's heat-maps.
        features: B x h x w x C, the last stack's features.
        Returns: B x Z latent vectors.

    Example:
        >>> encoder = ResidualEncoder(16, num_residual=2, num_pools=2)
        >>> encoder(np.zeros((1, 8, 8, 21), "float32"), np.zeros((1, 8, 8, 32), "float32")).shape
        TensorShape([1, 64])
    """

    def __init__(self, filters: int, num_residual: int = 8, num_pools: int = 4, **kwargs):
        super().__init__(**kwargs)
        if num_pools < 1 or num_residual < 0 or num_residual % num_pools:
            raise ValueError(
                "ResidualEncoder needs num_pools >= 1 and num_residual a multiple of num_pools, "
                f"got num_residual={num_residual}, num_pools={num_pools}"
            )
        self.filters = int(filters)
        self.num_residual = int(num_residual)
        self.num_pools = int(num_pools)
        self.heatmap_conv = keras.layers.Conv2D(self.filters, 1)
        self.feature_conv = keras.layers.Conv2D(self.filters, 1)
        per_pool = self.num_residual // self.num_pools
        self.blocks = []
        for _ in range(self.num_pools):
            self.blocks.extend(Residual(self.filters) for _ in range(per_pool))
            self.blocks.append(keras.layers.MaxPooling2D(2))
        self.flatten = keras.layers.Flatten()

    def build(self, heatmaps_shape, features_shape):
        if tuple(heatmaps_shape[1:3]) != tuple(features_shape[1:3]):
            raise ValueError(
                f"heatmaps {tuple(heatmaps_shape)} and features {tuple(features_shape)} must "
                "have the same height and width"
            )
        divisor = 2**self.num_pools
        if any(size is None or size % divisor for size in heatmaps_shape[1:3]):
            raise ValueError(
                f"ResidualEncoder(num_pools={self.num_pools}) needs a known height and width "
                f"divisible by {divisor}, got heatmaps shape {tuple(heatmaps_shape)}"
            )
        self.heatmap_conv.build(heatmaps_shape)
        self.feature_conv.build(features_shape)
        build_sequence([*self.blocks, self.flatten], (*features_shape[:3], self.filters))

    def call(self, heatmaps, features):
        x = self.heatmap_conv(heatmaps) + self.feature_conv(features)  # B x h x w x C'
        for layer in self.blocks:
            x = layer(x)
        return self.flatten(x)  # B x Z

    def compute_output_shape(self, heatmaps_shape, features_shape):
        size = heatmaps_shape[1] * heatmaps_shape[2] // 4**self.num_pools
        return (heatmaps_shape[0], size * self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "num_residual": self.num_residual,
                "num_pools": self.num_pools,
            }
        )
        return config
