"""The input pipeline's configuration (`DataConfig`, `AugmentConfig`), without TensorFlow.

`handshape_tf.data.pipeline` and `handshape_tf.data.augment` use them; they live here so that
building or checking a training config (`train.config`, every entry point's --help) does not
import TensorFlow.
"""

from __future__ import annotations

import dataclasses

from handshape_tf.config_utils import Problems


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Random augmentation of training crops (all off with `enabled=False`).

    Attributes:
      enabled: apply any augmentation at all.
      rotation_deg: in-plane rotation drawn from U(-r, r) degrees (about the optical axis).
      scale_min, scale_max: zoom factor k drawn from U(scale_min, scale_max).
      translation: shift of each axis drawn from U(-t, t) times the crop side.
      brightness: added brightness drawn from U(-b, b) (images in [0, 1]).
      contrast: contrast factor drawn from U(1 - c, 1 + c).
      saturation: saturation factor drawn from U(1 - s, 1 + s).
      hue: hue shift drawn from U(-h, h) (fraction of the colour circle).
      blur_probability: chance of a Gaussian blur.
      blur_sigma_max: its standard deviation drawn from U(0.3, max) pixels of the model input.
      noise_probability: chance of additive Gaussian noise.
      noise_std_max: its standard deviation drawn from U(0, max) (images in [0, 1]).
    """

    enabled: bool = True
    rotation_deg: float = 15.0
    scale_min: float = 0.9
    scale_max: float = 1.1
    translation: float = 0.05
    brightness: float = 0.15
    contrast: float = 0.3
    saturation: float = 0.3
    hue: float = 0.04
    blur_probability: float = 0.25
    blur_sigma_max: float = 1.2
    noise_probability: float = 0.25
    noise_std_max: float = 0.03


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """How training batches are made.

    Attributes:
      composite: paste the hand (image_rgba: the hand alone, no forearm, no occluders, no
        camera effects) over bank backgrounds; False (default) uses the stored image as the
        renderer's domain made it (forearm, photo background, occluders, camera effects).
      background_folder: image folder for BackgroundSource ("" = its built-in backgrounds).
      background_bank: N, backgrounds drawn once per pipeline.
      resize: resize stored crops of another side to the model's; False requires equal sides.
      mirror_left: mirror left hands into right hands (the network sees right hands only).
      heatmap_sigma: Gaussian standard deviation in pixels at 64 x 64 heat-maps, scaled with the
        heat-map side (paper: 4).
      shuffle_buffer: records permuted together (serialised, before decoding; see
        `ShardSource.elements`).
      parallel_calls: threads of the per-sample map, 0 for tf.data.AUTOTUNE.
      prefetch: batches prefetched, 0 for tf.data.AUTOTUNE.
      augment: the random augmentation.
    """

    composite: bool = False
    background_folder: str = ""
    background_bank: int = 256
    resize: bool = True
    mirror_left: bool = True
    heatmap_sigma: float = 4.0
    shuffle_buffer: int = 1024
    parallel_calls: int = 0
    prefetch: int = 0
    augment: AugmentConfig = AugmentConfig()

    def validated(self) -> DataConfig:
        """Returns self after checking the values; raises ConfigError."""
        a = self.augment
        problems = Problems()
        for name, value, ok, rule in (
            ("data.background_bank", self.background_bank, self.background_bank >= 1, ">= 1"),
            ("data.heatmap_sigma", self.heatmap_sigma, self.heatmap_sigma > 0, "> 0"),
            ("data.shuffle_buffer", self.shuffle_buffer, self.shuffle_buffer >= 1, ">= 1"),
            ("data.parallel_calls", self.parallel_calls, self.parallel_calls >= 0, ">= 0"),
            ("data.prefetch", self.prefetch, self.prefetch >= 0, ">= 0"),
            ("data.augment.rotation_deg", a.rotation_deg, 0 <= a.rotation_deg <= 180, "in [0, 180]"),
            ("data.augment.scale_min", a.scale_min, 0 < a.scale_min <= a.scale_max, "in (0, scale_max]"),
            ("data.augment.translation", a.translation, 0 <= a.translation < 1, "in [0, 1)"),
            ("data.augment.brightness", a.brightness, 0 <= a.brightness <= 1, "in [0, 1]"),
            ("data.augment.contrast", a.contrast, 0 <= a.contrast < 1, "in [0, 1)"),
            ("data.augment.saturation", a.saturation, 0 <= a.saturation < 1, "in [0, 1)"),
            ("data.augment.hue", a.hue, 0 <= a.hue <= 0.5, "in [0, 0.5]"),
            ("data.augment.blur_probability", a.blur_probability, 0 <= a.blur_probability <= 1, "in [0, 1]"),
            ("data.augment.blur_sigma_max", a.blur_sigma_max, a.blur_sigma_max >= 0.3, ">= 0.3"),
            ("data.augment.noise_probability", a.noise_probability, 0 <= a.noise_probability <= 1, "in [0, 1]"),
            ("data.augment.noise_std_max", a.noise_std_max, a.noise_std_max >= 0, ">= 0"),
        ):
            problems.need(name, value, ok, rule)
        problems.raise_if_any("data config")
        return self
