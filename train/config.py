"""Training configuration: one frozen dataclass tree, resolved as preset -> YAML -> --set.

Every number of a training run lives here (the model's sizes in `ModelConfig`, the input
pipeline's in `DataConfig`). `resolve_config` builds it the way every entry point does; the
resolved tree is written to `<run>/config.yaml`, and `--config <run>/config.yaml` reproduces
the run.

Stage budgets (paper Sec. 4.3: hourglass with L_H, then the pose regressor with L_J on ground-
truth meshes, then everything but the pose regressor end to end with L_fully): each stage
stops at its `max_steps` (0: no step limit) or when the run's training clock reaches its
cumulative share of `budget_minutes` (stage k ends at (f_1 + ... + f_k) x budget), whichever
comes first, so time a stage leaves unused passes to the next. The training clock counts the
seconds spent in training steps (including the first step's tracing), is kept in the checkpoint
and excludes data rendering, input pipeline start-up, checkpoint writing and evaluation. A stage
with time_fraction 0 and max_steps 0 is skipped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

from handshape_tf.config_utils import Problems, load_yaml, merge
from handshape_tf.data.data_config import DataConfig
from handshape_tf.data.domains import get_domain
from handshape_tf.models.config import PRESETS, Architecture, ModelConfig

STAGES = ("heatmap", "pose", "full")


@dataclasses.dataclass(frozen=True)
class StageConfig:
    """One training stage.

    Attributes:
      time_fraction: share of `budget_minutes` (see the module docstring).
      max_steps: step limit, 0 for none.
      learning_rate: RMSprop learning rate (paper: 1e-3 on synthetic data).
    """

    time_fraction: float
    max_steps: int = 0
    learning_rate: float = 1e-3


@dataclasses.dataclass(frozen=True)
class StagesConfig:
    """The three stages; `full_trains_pose_regressor` also updates the pose regressor in stage 3
    (the paper trains it in stage 2 only)."""

    heatmap: StageConfig = StageConfig(0.15)
    pose: StageConfig = StageConfig(0.05)
    full: StageConfig = StageConfig(0.80)
    full_trains_pose_regressor: bool = False


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """L_fully = w_H L_H + w_M L_M + w_J L_J, L_M = w_v L_v + w_n L_n + w_e L_e + w_l L_l (Eq. 6).

    The switches drop terms (ablations, Table 1); the heat-map term is always on.
    """

    heatmap_weight: float = 0.5
    mesh_weight: float = 1.0
    pose_weight: float = 1.0
    vertex_weight: float = 1.0
    normal_weight: float = 1.0
    edge_weight: float = 1.0
    laplacian_weight: float = 50.0
    vertex: bool = True
    normal: bool = True
    edge: bool = True
    laplacian: bool = True
    pose: bool = True


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """One optimizer per stage (Keras).

    Attributes:
      name: "rmsprop" (the paper's) or "adam" (Keras defaults: beta_1 0.9, beta_2 0.999).
      rho, momentum: RMSprop's squared-gradient decay and momentum (unused by Adam).
      epsilon: added to the denominator (both).
      clipnorm: per-variable gradient norm clip, 0 for none.
      warmup_steps: the learning rate ramps linearly from 0 over a stage's first steps (each
        stage's optimizer starts with empty statistics, and RMSprop's first updates are then
        about 3x the learning rate per weight, enough to undo a pretrained stage), 0 for none.
      decay: "constant" keeps each stage's learning rate; "cosine" lowers it along half a
        cosine from the stage's rate to `final_rate_fraction` of it as the stage uses up its
        time share (or its max_steps), so a run of any budget ends at the low rate.
      final_rate_fraction: where "cosine" ends, as a fraction of the stage's rate.
      decay_start: the share of a stage after which "cosine" starts to lower the rate (0: from
        the start; e.g. 0.7 holds the rate for 70% of the stage, then decays).
    """

    name: Literal["rmsprop", "adam"] = "rmsprop"
    rho: float = 0.9
    momentum: float = 0.0
    epsilon: float = 1e-7
    clipnorm: float = 0.0
    warmup_steps: int = 0
    decay: Literal["constant", "cosine"] = "constant"
    final_rate_fraction: float = 0.01
    decay_start: float = 0.0


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    """A checkpoint every `every_steps` steps or `every_seconds` seconds, `keep` kept."""

    every_steps: int = 500
    every_seconds: float = 120.0
    keep: int = 3


@dataclasses.dataclass(frozen=True)
class DatasetConfig:
    """The default synthetic dataset, rendered when `--data` is not given.

    Held-out samples use seed + 1 (another stream of the generator), in the same `domain`
    (`handshape_tf.data.domains`: "photo", real photographs behind the hands). `views` is the
    generator's camera distribution (`handshape_tf.data.sample_params`): "full" (any direction and
    roll, like the paper's dataset) or "frontal" (palm or back towards the camera, fingers up
    within +-60 deg: a hand held up to a webcam; the cpu preset's default). The model is also
    evaluated on `unseen_samples` hands (seed + 2) of the "unseen" domain, the project's stand-in
    for real photographs, rendered at `unseen_image_size` px like real 256 px crops (0: none).
    """

    views: Literal["full", "frontal"] = "full"
    domain: str = "photo"
    train_samples: int = 10000
    heldout_samples: int = 1000
    unseen_samples: int = 1000
    unseen_image_size: int = 256
    seed: int = 0
    workers: int = 2
    samples_per_shard: int = 256


@dataclasses.dataclass(frozen=True)
class EvaluationConfig:
    """Held-out evaluation: batch size, sample limit (0: all), samples the mean baseline is
    fitted on, samples drawn on the prediction sheet."""

    batch_size: int = 32
    limit: int = 0
    mean_baseline_samples: int = 2000
    sheet_size: int = 16


@dataclasses.dataclass(frozen=True)
class BatchNormConfig:
    """After the last stage the BatchNorm moving statistics become the average batch statistics
    of `samples` stored training images (no augmentation) in batches of `batch_size`
    (`train.batch_norm.recalibrate_batch_norm`); samples 0 keeps the running averages. Batches of 32
    left the 30-minute cpu model at 42.7 mm mesh error, batches of 128 or 512 gave 38.3-38.4."""

    samples: int = 512
    batch_size: int = 128


@dataclasses.dataclass(frozen=True)
class BaselineConfig:
    """Table 2 baselines: hidden widths of their 3-layer MLP (two hidden + output), shape
    components of the parametric rig and the shapes its basis is fitted on."""

    mlp_units: tuple[int, ...] = (512, 512)
    shape_components: int = 10
    shape_samples: int = 256


class StagedRunConfig(Protocol):
    """What every staged run config has (`TrainConfig`, `train.weak.config.WeakConfig`): what
    `check_common` checks and `train.loop.StagedTrainer` reads."""

    model: ModelConfig
    batch_size: int
    budget_minutes: float
    log_every_steps: int
    optimizer: OptimizerConfig
    checkpoint: CheckpointConfig
    loss: Any  # a dataclass whose *_weight fields are loss weights
    evaluation: Any  # has batch_size and limit

    def stage(self, name: str) -> StageConfig: ...


def check_common(config: StagedRunConfig, stages: Sequence[str], problems: Problems) -> None:
    """Checks the sections every staged run config has (`StagedRunConfig`).

    Args:
      config: the config.
      stages: the config's stage names.
      problems: where the failed checks go.
    """
    need = problems.need
    need("batch_size", config.batch_size, config.batch_size >= 1, ">= 1")
    need("budget_minutes", config.budget_minutes, config.budget_minutes > 0, "> 0")
    need("log_every_steps", config.log_every_steps, config.log_every_steps >= 1, ">= 1")
    for name in stages:
        stage = config.stage(name)
        need(f"stages.{name}.time_fraction", stage.time_fraction, 0 <= stage.time_fraction <= 1, "in [0, 1]")
        need(f"stages.{name}.max_steps", stage.max_steps, stage.max_steps >= 0, ">= 0")
        need(f"stages.{name}.learning_rate", stage.learning_rate, stage.learning_rate > 0, "> 0")
    total = sum(config.stage(name).time_fraction for name in stages)
    need("stages.*.time_fraction (sum)", round(total, 6), total <= 1 + 1e-6, "<= 1")
    for key, value in dataclasses.asdict(config.loss).items():
        if key.endswith("_weight"):
            need(f"loss.{key}", value, value >= 0, ">= 0")
    o, c, e = config.optimizer, config.checkpoint, config.evaluation
    need("optimizer.rho", o.rho, 0 <= o.rho < 1, "in [0, 1)")
    need("optimizer.momentum", o.momentum, o.momentum >= 0, ">= 0")
    need("optimizer.epsilon", o.epsilon, o.epsilon > 0, "> 0")
    need("optimizer.clipnorm", o.clipnorm, o.clipnorm >= 0, ">= 0")
    need("optimizer.warmup_steps", o.warmup_steps, o.warmup_steps >= 0, ">= 0")
    need("optimizer.final_rate_fraction", o.final_rate_fraction, 0 <= o.final_rate_fraction <= 1, "in [0, 1]")
    need("optimizer.decay_start", o.decay_start, 0 <= o.decay_start < 1, "in [0, 1)")
    need("checkpoint.every_steps", c.every_steps, c.every_steps >= 1, ">= 1")
    need("checkpoint.every_seconds", c.every_seconds, c.every_seconds > 0, "> 0")
    need("checkpoint.keep", c.keep, c.keep >= 1, ">= 1")
    need("evaluation.batch_size", e.batch_size, e.batch_size >= 1, ">= 1")
    need("evaluation.limit", e.limit, e.limit >= 0, ">= 0")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """A training run on synthetic data.

    Attributes:
      model: network sizes (preset "cpu" by default).
      architecture: "graph" (the paper's network), "direct_lbs" or "parametric" (Table 2).
      batch_size: global batch (paper: 32), split over replicas.
      budget_minutes: wall-clock training budget shared by the stages.
      seed: seeds the input stream and the shape basis.
      log_every_steps: TensorBoard / history interval.
      precision: "mixed_bfloat16" trains the convolutional trunk in bfloat16
        (`handshape_tf.models.network.build_model`); the saved model is float32 either way.
      jit_compile: compile each training step with XLA. Needs model.graph_formulation="gather"
        (XLA has no kernel for the sparse-tensor product of the "sparse" formulation).
    """

    model: ModelConfig = ModelConfig.preset("cpu")
    architecture: Architecture = "graph"
    precision: Literal["float32", "mixed_bfloat16"] = "float32"
    jit_compile: bool = False
    batch_size: int = 32
    budget_minutes: float = 30.0
    seed: int = 0
    log_every_steps: int = 10
    stages: StagesConfig = StagesConfig()
    loss: LossConfig = LossConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    data: DataConfig = DataConfig()
    dataset: DatasetConfig = DatasetConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    batch_norm: BatchNormConfig = BatchNormConfig()
    baseline: BaselineConfig = BaselineConfig()

    def stage(self, name: str) -> StageConfig:
        return getattr(self.stages, name)

    def validated(self) -> TrainConfig:
        """Returns self after checking every section; raises ConfigError naming the keys."""
        self.model.validated()
        self.data.validated()
        problems = Problems()
        check_common(self, STAGES, problems)
        need = problems.need
        for key in ("train_samples", "heldout_samples", "samples_per_shard"):
            value = getattr(self.dataset, key)
            need(f"dataset.{key}", value, value >= 1, ">= 1")
        need(
            "model.graph_formulation",
            self.model.graph_formulation,
            not self.jit_compile or self.architecture != "graph" or self.model.graph_formulation == "gather",
            "'gather' with jit_compile=true (XLA cannot compile sparse-tensor products)",
        )
        need("dataset.workers", self.dataset.workers, self.dataset.workers >= 0, ">= 0")
        need("dataset.unseen_samples", self.dataset.unseen_samples, self.dataset.unseen_samples >= 0, ">= 0")
        need("dataset.unseen_image_size", self.dataset.unseen_image_size, self.dataset.unseen_image_size >= 32, ">= 32")
        try:
            get_domain(self.dataset.domain)
        except ValueError as error:
            problems.messages.append(f"dataset.domain: {error}")
        need("batch_norm.samples", self.batch_norm.samples, self.batch_norm.samples >= 0, ">= 0")
        need("batch_norm.batch_size", self.batch_norm.batch_size, self.batch_norm.batch_size >= 1, ">= 1")
        need(
            "evaluation.mean_baseline_samples",
            self.evaluation.mean_baseline_samples,
            self.evaluation.mean_baseline_samples >= 1,
            ">= 1",
        )
        need("evaluation.sheet_size", self.evaluation.sheet_size, self.evaluation.sheet_size >= 0, ">= 0")
        units = self.baseline.mlp_units
        need("baseline.mlp_units", units, len(units) >= 1 and min(units) >= 1, "one or more positive widths")
        need("baseline.shape_components", self.baseline.shape_components, self.baseline.shape_components >= 1, ">= 1")
        need(
            "baseline.shape_samples",
            self.baseline.shape_samples,
            self.baseline.shape_samples > self.baseline.shape_components,
            "> baseline.shape_components",
        )
        problems.raise_if_any("training config")
        return self


def preset_config(name: str) -> TrainConfig:
    """The default TrainConfig with the model preset `name` ("paper", "cpu", "tiny") and that
    preset's training values (`handshape_tf.models.config.PRESETS`).

    Raises:
      ConfigError: unknown preset.
    """
    return merge(TrainConfig(model=ModelConfig.preset(name)), PRESETS[name].training)


def resolve_config(
    preset: str = "cpu", config_file: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> TrainConfig:
    """Preset -> YAML file -> overrides (dotted keys), validated.

    Raises:
      ConfigError: unknown preset, missing or malformed file, unknown key, bad value.
    """
    config = preset_config(preset)
    if config_file is not None:
        config = merge(config, load_yaml(config_file))
    if overrides:
        config = merge(config, overrides)
    return config.validated()
