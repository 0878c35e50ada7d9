"""Model configuration: a frozen dataclass with named presets.

`ModelConfig.preset("paper")` follows the paper (Sec. 4.1-4.2 and 5.1): 256 x 256 input,
2-stacked hourglass with 256 channels, 64 x 64 heat-maps, a residual encoder with 8 residual
modules and 4 max-pools (4 x 4 x 256 = 4096 latent), two FC layers to 80 coarse nodes x 64
features, four x2 graph upsamplings with K = 3 Chebyshev convolutions up to 1280 nodes, and the
linear pose regressor. `ModelConfig.preset("cpu")` is the small model for a 2-core CPU: 64 x 64
input (16 x 16 heat-maps), one 64-channel hourglass of depth 2 (pooling to 4 x 4 as the paper's
does, `MIN_HOURGLASS_SIDE`), a 4 x 4 x 64 latent, narrower graph layers; it trains end to end at
~80 images/s there (batch 16; the hourglass alone ~210), so a 30-minute budget passes ~12 times
over a 10k-sample set (`train.config` holds its short-budget recipe).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, get_args

from handshape_tf.config_utils import ConfigError, Problems, merge

# The networks a run can train: the paper's graph CNN and the Table 2 baselines.
Architecture = Literal["graph", "direct_lbs", "parametric"]
ARCHITECTURES: tuple[str, ...] = get_args(Architecture)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Sizes of the network. See the module docstring for the paper's values.

    Attributes:
      image_size: side of the square RGB input crop, pixels.
      num_stacks: hourglass stacks (each gives heat-maps with intermediate supervision).
      hourglass_depth: recursion levels of each hourglass.
      hourglass_filters: feature channels of the hourglass.
      hourglass_modules: residual modules at each hourglass position (1 in Newell et al.,
        2 in the paper's reference code).
      num_keypoints: heat-maps and joints (21).
      encoder_filters: channels of the residual encoder.
      encoder_residuals: residual modules in the encoder (paper: 8).
      encoder_pools: 2x2 max-pools in the encoder (paper: 4).
      decoder_fc_units: width of the first FC layer of the mesh decoder.
      decoder_coarse_features: features per node on the coarsest graph (paper: 64).
      decoder_widths: Chebyshev widths after each x2 upsampling, coarse to fine; its length
        is the number of coarsening levels (paper: 4 levels, 80 -> 1280 nodes).
      cheb_order: Chebyshev polynomial order K (paper: 3).
      pose_widths: widths of the two linear Chebyshev layers of the pose regressor.
      graph_seed: seed of the Graclus coarsening of the hand template.
      graph_formulation: "sparse" (sparse-tensor Laplacian, for training) or "gather"
        (padded-neighbour gather, builtin ops only, for TFLite/ONNX export); same weights.
    """

    image_size: int = 256
    num_stacks: int = 2
    hourglass_depth: int = 4
    hourglass_filters: int = 256
    hourglass_modules: int = 2
    num_keypoints: int = 21
    encoder_filters: int = 256
    encoder_residuals: int = 8
    encoder_pools: int = 4
    decoder_fc_units: int = 512
    decoder_coarse_features: int = 64
    decoder_widths: tuple[int, ...] = (64, 64, 32, 32)
    cheb_order: int = 3
    pose_widths: tuple[int, int] = (32, 32)
    graph_seed: int = 0
    graph_formulation: Literal["sparse", "gather"] = "sparse"

    @property
    def heatmap_size(self) -> int:
        """Side of the heat-maps: the hourglass works at a quarter of the input resolution."""
        return self.image_size // 4

    @property
    def hourglass_innermost_side(self) -> int:
        """Side of the hourglass's innermost (most pooled) feature maps: M / 2**hourglass_depth."""
        return self.heatmap_size // 2**self.hourglass_depth

    @property
    def graph_levels(self) -> int:
        return len(self.decoder_widths)

    @property
    def latent_size(self) -> int:
        side = self.heatmap_size // 2**self.encoder_pools
        return side * side * self.encoder_filters

    @staticmethod
    def preset_names() -> tuple[str, ...]:
        return tuple(PRESETS)

    def preset_name(self) -> str:
        """The preset this config equals field for field (the graph formulation aside: the same
        network and weights either way), or "custom"."""
        for name, preset in PRESETS.items():
            if dataclasses.replace(self, graph_formulation=preset.model.graph_formulation) == preset.model:
                return name
        return "custom"

    @classmethod
    def preset(cls, name: str, **overrides) -> ModelConfig:
        """A named preset ("paper", "cpu", "tiny"), optionally with fields overridden."""
        if name not in PRESETS:
            raise ConfigError(f"unknown model preset {name!r}; choose one of {list(PRESETS)}")
        return merge(PRESETS[name].model, overrides).validated()

    def validated(self) -> ModelConfig:
        """Returns self after checking that the sizes fit together; raises ConfigError."""
        problems = Problems()
        for name in (
            "image_size",
            "num_stacks",
            "hourglass_depth",
            "hourglass_filters",
            "hourglass_modules",
            "num_keypoints",
            "encoder_filters",
            "encoder_residuals",
            "decoder_fc_units",
            "decoder_coarse_features",
            "cheb_order",
        ):
            problems.need(name, getattr(self, name), getattr(self, name) >= 1, ">= 1")
        multiple = 4 * 2**self.hourglass_depth
        problems.need(
            "image_size",
            self.image_size,
            self.image_size % multiple == 0,
            f"a multiple of 4 * 2**hourglass_depth = {multiple}",
        )
        if self.encoder_pools < 0 or self.heatmap_size % 2**self.encoder_pools:
            problems.add(
                f"encoder_pools={self.encoder_pools} does not divide the {self.heatmap_size}-pixel heat-maps "
                "into whole cells"
            )
        if self.encoder_pools > self.encoder_residuals:
            problems.add(f"encoder_pools={self.encoder_pools} exceeds encoder_residuals={self.encoder_residuals}")
        widths_ok = bool(self.decoder_widths) and min(self.decoder_widths) >= 1
        problems.need("decoder_widths", self.decoder_widths, widths_ok, "one positive width per graph level")
        pose_ok = len(self.pose_widths) == 2 and min(self.pose_widths) >= 1
        problems.need("pose_widths", self.pose_widths, pose_ok, "two positive widths")
        if self.graph_levels < 4:
            problems.add(
                f"decoder_widths has {self.graph_levels} levels; the pose regressor pools the mesh graph by 4 twice, "
                "so at least 4 levels are needed"
            )
        formulation_ok = self.graph_formulation in ("sparse", "gather")
        problems.need("graph_formulation", self.graph_formulation, formulation_ok, "'sparse' or 'gather'")
        problems.raise_if_any("model config")
        return self


# The hourglass should not pool its heat-map-sized maps below this side (the paper's: 64 x 64
# heat-maps, depth 4 -> 4 x 4). Measured: the `cpu` preset with depth 4 on 16 x 16 maps pooled
# to 1 x 1, where BatchNorm normalises each channel over the batch alone; at inference, with the
# running statistics, a few images in a hundred got their innermost features amplified 10x per
# residual module (hourglass features 2 to 700x their median norm), and those hands came out
# tens of crop widths away (the "exploding predictions"; held-out mean pose error 2,553 mm after
# 30 XLA minutes, and most of the un-aligned error a longer run added).
MIN_HOURGLASS_SIDE = 4

_MODELS = {
    "paper": ModelConfig(),
    # Measured on the 2-core CPU: see README "Presets" for the training throughput.
    "cpu": ModelConfig(
        image_size=64,
        num_stacks=1,
        hourglass_depth=2,
        hourglass_filters=64,
        hourglass_modules=1,
        encoder_filters=64,
        encoder_pools=2,
        decoder_fc_units=512,
        decoder_coarse_features=32,
        decoder_widths=(64, 32, 32, 16),
        pose_widths=(32, 32),
        graph_formulation="gather",  # what XLA compiles (jit_compile below)
    ),
    # For tests: builds and runs in a fraction of a second.
    "tiny": ModelConfig(
        image_size=64,
        num_stacks=1,
        hourglass_depth=2,
        hourglass_filters=16,
        hourglass_modules=1,
        encoder_filters=16,
        encoder_residuals=4,
        encoder_pools=2,
        decoder_fc_units=32,
        decoder_coarse_features=8,
        decoder_widths=(8, 8, 8, 8),
        pose_widths=(4, 4),
    ),
}


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named preset: the network's sizes and the training values that go with them.

    Attributes:
      model: the ModelConfig.
      training: dotted `train.config.TrainConfig` keys whose values differ from the paper's
        for this preset (applied by `train.config.preset_config`).
    """

    model: ModelConfig
    training: dict[str, Any] = dataclasses.field(default_factory=dict)


# The cpu preset trains for ~30 minutes on 2 cores, a few thousand steps where the paper's
# schedule has hundreds of thousands, so it gets a recipe measured to learn within that: batch 16
# (twice the updates per image), wider heat-map Gaussians (3 px on its 16 x 16 maps where the
# paper's 4 px on 64 x 64 would be 1 px: the hourglass leaves the all-zero plateau several times
# sooner), a 50-step warm-up per stage (a fresh RMSprop's first steps otherwise undo the previous
# stage), frontal views (a hand held up to a webcam) instead of the full sphere, and training
# steps compiled with XLA (1.65x the end-to-end images/s). README "Presets" has the measurements.
PRESETS: dict[str, Preset] = {
    "paper": Preset(_MODELS["paper"]),
    "cpu": Preset(
        _MODELS["cpu"],
        {
            "batch_size": 16,
            "data.heatmap_sigma": 12.0,
            "optimizer.warmup_steps": 50,
            "dataset.views": "frontal",
            "jit_compile": True,
        },
    ),
    "tiny": Preset(_MODELS["tiny"]),
}
