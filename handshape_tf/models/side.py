"""Which hand is in a crop: a small classifier for the side (left or right) of a hand crop.

Shape shorthand: B batch, S input side.

A mirror image of a right hand is a left hand, so the side shows only in two cues taken
together: whether the palm faces the camera and which way the hand's wrist -> index -> little
triangle turns in the picture (`handshape_tf.geometry.chirality.side_cues`). The network is
taught all three (side, palm towards the camera, counter-clockwise): with the side alone it
stays at chance (the full-frame detector's side head did for 13,000 steps), with the cues
beside it the side follows them.

Four stages of (3 x 3 conv + BN + ReLU, 3 x 3 stride-2 conv + BN + ReLU) at widths w, 2w, 4w,
8w, global average pooling, a ReLU dense layer and a linear one.

Input: float32 B x S x S x 3 RGB in [0, 1], the crop as seen (not mirrored), framed as the
mesh network's crops. Output: {"side_logits": B x 3} logits of `SIDE_OUTPUTS` (no activation).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from handshape_tf.models.detector import conv_bn

if TYPE_CHECKING:
    import keras

SIDE_OUTPUTS = ("left", "palm_towards_camera", "counter_clockwise")
LEFT = 0


@dataclasses.dataclass(frozen=True)
class SideConfig:
    """The side classifier's architecture.

    Attributes:
      image_size: S, the input crop's side (a multiple of 16).
      width: w, channels of the first stage (then 2w, 4w, 8w).
      dense_units: the hidden dense layer.
    """

    image_size: int = 64
    width: int = 16
    dense_units: int = 64

    def __post_init__(self):
        if self.image_size < 16 or self.image_size % 16:
            raise ValueError(f"image_size is {self.image_size!r}; expected a multiple of 16 (>= 16)")
        for name in ("width", "dense_units"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} is {getattr(self, name)!r}; expected >= 1")


def build_side_classifier(config: SideConfig = SideConfig(), name: str = "side_classifier") -> keras.Model:
    """The classifier (module docstring)."""
    import keras

    inputs = keras.Input((config.image_size, config.image_size, 3), name="image")
    x = inputs
    for stage in range(4):
        filters = config.width * 2**stage
        x = conv_bn(x, filters, 3, 1, f"stage{stage}_a")
        x = conv_bn(x, filters, 3, 2, f"stage{stage}_b")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dense(config.dense_units, activation="relu", name="hidden")(x)
    outputs = keras.layers.Dense(len(SIDE_OUTPUTS), name="side_logits")(x)
    return keras.Model(inputs, {"side_logits": outputs}, name=name)
