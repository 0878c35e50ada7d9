"""Stacked hourglass network for 2D heat-maps (Newell et al. 2016; paper Sec. 4.1).

Shape shorthand: B batch, H x W input image, h x w = H/4 x W/4 heat-map resolution, C feature
channels (`filters`), J heat-maps (keypoints).
"""

from __future__ import annotations

import keras

from handshape_tf.layers._common import batch_norm, build_sequence
from handshape_tf.layers.residual import Residual

STEM_CHANNELS = (64, 128)  # Newell's stem: 7x7 conv to 64, residuals to 128, then C.


@keras.saving.register_keras_serializable(package="handshape_tf")
class Hourglass(keras.layers.Layer):
    """One hourglass: `depth` nested levels of (max-pool, residuals, ..., upsample) plus skips.

    Level d: up = residuals(x); low = hourglass_{d-1}(residuals(max_pool(x))) (residuals at the
    innermost level); return up + upsample(residuals(low)). Each "residuals" is `num_modules`
    `Residual` modules of C channels.

    Args:
        depth: number of recursion levels (>= 1); H and W must be divisible by 2**depth.
        filters: C, channels of the input and of every residual module.
        num_modules: residual modules at each place (1 in Newell et al., 2 in the paper's code).
        **kwargs: keras.layers.Layer arguments.

    Call:
        inputs: B x H x W x C.
        Returns: B x H x W x C.

    Example:
        >>> Hourglass(depth=2, filters=16)(np.zeros((1, 8, 8, 16), np.float32)).shape
        TensorShape([1, 8, 8, 16])
    """

    def __init__(self, depth: int, filters: int, num_modules: int = 1, **kwargs):
        super().__init__(**kwargs)
        if depth < 1 or num_modules < 1:
            raise ValueError(
                f"Hourglass needs depth >= 1 and num_modules >= 1, got depth={depth}, num_modules={num_modules}"
            )
        self.depth = int(depth)
        self.filters = int(filters)
        self.num_modules = int(num_modules)

        def residuals():
            return [Residual(self.filters) for _ in range(self.num_modules)]

        self.upper = residuals()
        self.pool = keras.layers.MaxPooling2D(2)
        self.lower_in = residuals()
        if self.depth > 1:
            self.inner = [Hourglass(self.depth - 1, self.filters, self.num_modules)]
        else:
            self.inner = residuals()
        self.lower_out = residuals()
        self.upsample = keras.layers.UpSampling2D(2)

    def build(self, input_shape):
        _check_divisible(input_shape, 2**self.depth, f"Hourglass(depth={self.depth})")
        build_sequence(self.upper, input_shape)
        build_sequence([self.pool, *self.lower_in, *self.inner, *self.lower_out, self.upsample], input_shape)

    def call(self, inputs):
        upper = inputs
        for layer in self.upper:
            upper = layer(upper)
        lower = self.pool(inputs)  # B x H/2 x W/2 x C
        for layer in [*self.lower_in, *self.inner, *self.lower_out]:
            lower = layer(lower)
        return upper + self.upsample(lower)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"depth": self.depth, "filters": self.filters, "num_modules": self.num_modules})
        return config


def _check_divisible(shape, divisor, what):
    height, width = shape[1], shape[2]
    if any(size is not None and size % divisor for size in (height, width)):
        raise ValueError(f"{what} needs image height and width divisible by {divisor}, got input shape {tuple(shape)}")


@keras.saving.register_keras_serializable(package="handshape_tf")
class StackedHourglass(keras.layers.Layer):
    """Stacked hourglass with intermediate supervision: image -> J heat-maps per stack.

    Stem: 7x7 stride-2 conv (64) + BN + ReLU, Residual(128), 2x2 max-pool, Residual(128),
    Residual(C), giving 1/4 resolution. Each stack: Hourglass(depth), `num_modules` residuals,
    1x1 conv + BN + ReLU (the stack's features), 1x1 conv to J heat-maps. Between stacks the
    next input is x + conv1x1(features) + conv1x1(heat-maps).

    Args:
        num_stacks: number of hourglasses (2 in the paper).
        depth: recursion levels per hourglass (4 in Newell et al.).
        filters: C, feature channels (256 in the paper).
        num_heatmaps: J, heat-maps per stack (21 keypoints).
        num_modules: residual modules at each place (1 in Newell et al., 2 in the paper's code).
        **kwargs: keras.layers.Layer arguments.

    Call:
        inputs: B x H x W x 3 images; H and W divisible by 4 * 2**depth.
        Returns: (heatmaps, features): a list of `num_stacks` B x h x w x J tensors (the last one
            is the final estimate) and the last stack's features B x h x w x C, h = H/4, w = W/4.

    Example:
        >>> layer = StackedHourglass(num_stacks=1, depth=2, filters=16)
        >>> heatmaps, features = layer(np.zeros((1, 32, 32, 3), np.float32))
        >>> heatmaps[0].shape, features.shape
        (TensorShape([1, 8, 8, 21]), TensorShape([1, 8, 8, 16]))

    Reference:
        Newell, Yang, Deng, "Stacked Hourglass Networks for Human Pose Estimation", ECCV 2016.
    """

    def __init__(
        self,
        num_stacks: int,
        depth: int = 4,
        filters: int = 256,
        num_heatmaps: int = 21,
        num_modules: int = 1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if num_stacks < 1:
            raise ValueError(f"num_stacks must be >= 1, got {num_stacks}")
        self.num_stacks = int(num_stacks)
        self.depth = int(depth)
        self.filters = int(filters)
        self.num_heatmaps = int(num_heatmaps)
        self.num_modules = int(num_modules)

        self.stem = [
            keras.layers.Conv2D(STEM_CHANNELS[0], 7, strides=2, padding="same"),
            batch_norm(),
            keras.layers.ReLU(),
            Residual(STEM_CHANNELS[1]),
            keras.layers.MaxPooling2D(2),
            Residual(STEM_CHANNELS[1]),
            Residual(self.filters),
        ]
        self.stacks = []  # Each: hourglass, residuals, 1x1 conv + BN + ReLU -> features.
        self.heads = []  # Features -> heat-maps.
        self.feature_remaps = []  # Re-injection between stacks (num_stacks - 1 of each).
        self.heatmap_remaps = []
        for stack in range(self.num_stacks):
            self.stacks.append(
                keras.Sequential(
                    [
                        Hourglass(self.depth, self.filters, self.num_modules),
                        *[Residual(self.filters) for _ in range(self.num_modules)],
                        keras.layers.Conv2D(self.filters, 1),
                        batch_norm(),
                        keras.layers.ReLU(),
                    ]
                )
            )
            self.heads.append(keras.layers.Conv2D(self.num_heatmaps, 1))
            if stack < self.num_stacks - 1:
                self.feature_remaps.append(keras.layers.Conv2D(self.filters, 1))
                self.heatmap_remaps.append(keras.layers.Conv2D(self.filters, 1))

    def build(self, input_shape):
        _check_divisible(input_shape, 4 * 2**self.depth, f"StackedHourglass(depth={self.depth})")
        shape = build_sequence(self.stem, input_shape)
        for stack in range(self.num_stacks):
            self.stacks[stack].build(shape)
            self.heads[stack].build(shape)
        for features_remap, heatmap_remap in zip(self.feature_remaps, self.heatmap_remaps):
            features_remap.build(shape)
            heatmap_remap.build((*shape[:-1], self.num_heatmaps))

    def call(self, inputs):
        x = inputs
        for layer in self.stem:
            x = layer(x)  # B x h x w x C
        heatmaps = []
        for stack in range(self.num_stacks):
            features = self.stacks[stack](x)
            heatmaps.append(self.heads[stack](features))  # B x h x w x J
            if stack < self.num_stacks - 1:
                remapped_heatmaps = self.heatmap_remaps[stack](heatmaps[-1])
                x = x + self.feature_remaps[stack](features) + remapped_heatmaps
        return heatmaps, features

    def compute_output_shape(self, input_shape):
        batch, height, width = input_shape[:3]
        size = (batch, *(None if side is None else side // 4 for side in (height, width)))
        return [(*size, self.num_heatmaps)] * self.num_stacks, (*size, self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_stacks": self.num_stacks,
                "depth": self.depth,
                "filters": self.filters,
                "num_heatmaps": self.num_heatmaps,
                "num_modules": self.num_modules,
            }
        )
        return config
