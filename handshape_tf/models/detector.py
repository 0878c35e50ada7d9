"""A small hand detector: centre heat-map, box size and handedness on a light conv backbone.

Shape shorthand: B batch, H x W input, R = `DetectorConfig.stride` (output stride), h = H / R,
w = W / R.

CenterNet-style (Zhou et al., *Objects as Points*, 2019): the network predicts, per output cell,
the logit of "a hand's box centre is here" (a Gaussian peak per hand in training), the
sub-cell offset of that centre, the log of the box's width and height in cells, and the logit
of "the hand is a left hand". Decoding (peaks, boxes, NMS) is numpy in
`handshape_tf.inference.detection`, shared by Python and the LiteRT demo.

Backbone: a 3 x 3 stride-2 stem, then depthwise-separable residual stages down to H / 32 (a
receptive field that covers hands up to the frame's size), and a top-down path (nearest
upsampling + 1 x 1 lateral convolutions, as in an FPN) back to stride R, where one 3 x 3
convolution and a 1 x 1 output convolution give the 6 channels. Fully convolutional: any H, W
divisible by 32 (the TFLite export fixes one).

Input: float32 B x H x W x 3 RGB in [0, 1] (as the mesh network). Output: {"detections":
B x h x w x 6}, channels `CHANNELS` (logits and regressions; no activation).
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import keras

CHANNELS = ("centre", "left", "offset_x", "offset_y", "log_width", "log_height")
CENTRE, LEFT, OFFSET, SIZE = 0, 1, slice(2, 4), slice(4, 6)
# Initial centre bias: sigmoid(-4.6) = 0.01, CenterNet's prior (no hand almost everywhere).
_CENTRE_PRIOR = -4.6
_MIN_SIDE = 32


@dataclasses.dataclass(frozen=True)
class DetectorConfig:
    """The detector's architecture.

    Attributes:
      input_height, input_width: the input size (multiples of 32) of the built model.
      widths: channels of the five stride-2 stages (strides 2, 4, 8, 16, 32).
      blocks: separable residual blocks after each stage's downsampling.
      head_width: channels of the top-down path and the head.
      stride: output stride R, 4 or 8.
    """

    input_height: int = 256
    input_width: int = 256
    widths: tuple[int, ...] = (16, 32, 48, 64, 96)
    blocks: tuple[int, ...] = (0, 1, 2, 2, 2)
    head_width: int = 48
    stride: int = 4

    def __post_init__(self):
        for name in ("input_height", "input_width"):
            value = getattr(self, name)
            if value < _MIN_SIDE or value % 32:
                raise ValueError(f"{name} is {value!r}; expected a multiple of 32 (>= {_MIN_SIDE})")
        if len(self.widths) != 5 or len(self.blocks) != 5:
            raise ValueError(f"widths {self.widths!r} and blocks {self.blocks!r}; expected 5 stages each")
        if self.stride not in (4, 8):
            raise ValueError(f"stride is {self.stride!r}; expected 4 or 8")

    @property
    def output_shape(self) -> tuple[int, int]:
        return self.input_height // self.stride, self.input_width // self.stride


def conv_bn(x, filters: int, kernel: int, strides: int, name: str):
    import keras  # here, not at the top: the config imports without TensorFlow (fast --help)

    x = keras.layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def _separable(x, filters: int, strides: int, name: str):
    """Depthwise 3 x 3 + BN + ReLU, pointwise 1 x 1 + BN (+ identity when shapes match), ReLU."""
    import keras

    shortcut = x
    y = keras.layers.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False, name=f"{name}_dw")(x)
    y = keras.layers.BatchNormalization(name=f"{name}_dw_bn")(y)
    y = keras.layers.ReLU(name=f"{name}_dw_relu")(y)
    y = keras.layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_pw")(y)
    y = keras.layers.BatchNormalization(name=f"{name}_pw_bn")(y)
    if strides == 1 and shortcut.shape[-1] == filters:
        y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
    return keras.layers.ReLU(name=f"{name}_relu")(y)


def build_detector(config: DetectorConfig = DetectorConfig(), name: str = "hand_detector") -> keras.Model:
    """The detector (module docstring) for `config`'s input size."""
    import keras

    inputs = keras.Input((config.input_height, config.input_width, 3), name="image")
    x = conv_bn(inputs, config.widths[0], 3, 2, "stem")
    features = {2: x}
    for stage in range(5):
        stride = 2 ** (stage + 1)
        if stage > 0:
            x = _separable(x, config.widths[stage], 2, f"stage{stride}_down")
        for block in range(config.blocks[stage]):
            x = _separable(x, config.widths[stage], 1, f"stage{stride}_block{block}")
        features[stride] = x
    top = keras.layers.Conv2D(config.head_width, 1, name="lateral32")(features[32])
    stride = 32
    while stride > config.stride:
        stride //= 2
        top = keras.layers.UpSampling2D(2, interpolation="nearest", name=f"up{stride}")(top)
        lateral = keras.layers.Conv2D(config.head_width, 1, name=f"lateral{stride}")(features[stride])
        top = keras.layers.Add(name=f"merge{stride}")([top, lateral])
        top = _separable(top, config.head_width, 1, f"smooth{stride}")
    head = conv_bn(top, config.head_width, 3, 1, "head")
    bias = [_CENTRE_PRIOR, 0.0, 0.0, 0.0, math.log(8.0), math.log(8.0)]
    outputs = keras.layers.Conv2D(
        len(CHANNELS),
        1,
        name="detections",
        bias_initializer=keras.initializers.Constant(bias),
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
    )(head)
    return keras.Model(inputs, {"detections": outputs}, name=name)
