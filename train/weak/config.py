"""The fine-tuning run's config (`WeakConfig`) and the run it starts from (`InitRun`).

Imports without TensorFlow, so `python -m train.weak_stb --help` answers at once.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

from handshape_tf.config_utils import ConfigError, Problems, load_yaml, merge, to_dict
from handshape_tf.models.config import Architecture, ModelConfig
from train import checkpoints
from train.config import CheckpointConfig, OptimizerConfig, StageConfig, check_common

STAGES = ("heatmap", "full")
DEFAULT_BUDGET_MINUTES = 7.5  # per run: the default command (with its comparison run) trains 15 min


@dataclasses.dataclass(frozen=True)
class WeakStagesConfig:
    """Stage 1 (hourglass, L_H) and stage 2 (everything, L_weakly); learning rate 1e-4 (paper)."""

    heatmap: StageConfig = StageConfig(0.2, learning_rate=1e-4)
    full: StageConfig = StageConfig(0.8, learning_rate=1e-4)


@dataclasses.dataclass(frozen=True)
class WeakLossConfig:
    """L_weakly = w_H L_H + w_D L_D + w_pM L_pM (+ w_J L_J) (Eq. 8); L_pM = 1 L_e + 50 L_l.

    Attributes:
      heatmap_weight, depth_weight, pseudo_mesh_weight, pose_weight: 0.1, 0.1, 1, 10.
      depth, pseudo_mesh, pose: the switches (pose: "with 3D pose supervision").
      depth_size: R, side of the rendered and reference depth maps (paper: 32).
      depth_delta: smooth-L1 transition point, hand scales.
      depth_band: reference pixels farther than this from the root depth (hand scales) are not
        the hand and carry no loss.
    """

    heatmap_weight: float = 0.1
    depth_weight: float = 0.1
    pseudo_mesh_weight: float = 1.0
    pose_weight: float = 10.0
    depth: bool = True
    pseudo_mesh: bool = True
    pose: bool = False
    depth_size: int = 32
    depth_delta: float = 1.0
    depth_band: float = 5.0


@dataclasses.dataclass(frozen=True)
class WeakDataConfig:
    """Data of the fine-tuning.

    Attributes:
      real_like_train, real_like_test, real_like_seed: the default rendered set (test = seed + 1).
      stb_train_stride: keep every k-th STB training frame (1: all 15000).
      photometric: photometric augmentation of the training images (`data.augment`).
      heatmap_sigma: Gaussian SD in pixels at 64 x 64 heat-maps (paper: 4), scaled with the side;
        the --init run's value unless set.
      views: camera views of the real-like set ("full" or "frontal", `data.sample_params`); the
        --init run's training views unless set.
    """

    real_like_train: int = 2000
    real_like_test: int = 400
    real_like_seed: int = 0
    stb_train_stride: int = 1
    photometric: bool = True
    heatmap_sigma: float = 4.0
    views: Literal["full", "frontal"] = "full"


@dataclasses.dataclass(frozen=True)
class WeakEvaluationConfig:
    """Test-set evaluation: batch size, sample limit (0: all), meshes drawn in meshes.png."""

    batch_size: int = 32
    limit: int = 0
    figure_samples: int = 3


@dataclasses.dataclass(frozen=True)
class WeakConfig:
    """A weakly supervised fine-tuning run.

    Attributes:
      model: the network's sizes, those of the --init run (not settable).
      architecture: "graph" (the paper's network) or "direct_lbs" (Table 3's Baseline 1), from
        the --init run.
      batch_size: images per step (paper: 32); the --init run's unless set.
      budget_minutes: wall-clock training budget shared by the stages.
      seed: seeds the batch order and the augmentation.
      log_every_steps: TensorBoard / history interval.
      freeze_batch_norm: keep the --init run's BatchNorm layers as they are (inference mode, no
        statistics update, gamma and beta fixed) while fine-tuning, the usual practice. Statistics
        re-estimated from the small fine-tuning batches let a few test crops diverge (u, v tens
        of crop widths away) in inference mode.
    """

    model: ModelConfig = ModelConfig.preset("cpu")
    architecture: Architecture = "graph"
    batch_size: int = 32
    budget_minutes: float = DEFAULT_BUDGET_MINUTES
    seed: int = 0
    log_every_steps: int = 10
    freeze_batch_norm: bool = True
    stages: WeakStagesConfig = WeakStagesConfig()
    loss: WeakLossConfig = WeakLossConfig()
    optimizer: OptimizerConfig = OptimizerConfig()  # the --init run's unless set
    data: WeakDataConfig = WeakDataConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    evaluation: WeakEvaluationConfig = WeakEvaluationConfig()

    def stage(self, name: str) -> StageConfig:
        return getattr(self.stages, name)

    def validated(self) -> WeakConfig:
        """Returns self after checking the values; raises ConfigError naming the keys."""
        self.model.validated()
        problems = Problems()
        need = problems.need
        need(
            "architecture",
            self.architecture,
            self.architecture in ("graph", "direct_lbs"),
            "'graph' or 'direct_lbs' (the parametric baseline is not fine-tuned weakly)",
        )
        if self.architecture == "direct_lbs":
            for key in ("depth", "pseudo_mesh"):
                value = getattr(self.loss, key)
                need(f"loss.{key}", value, not value, "false with architecture direct_lbs (no trainable mesh)")
        check_common(self, STAGES, problems)
        need("loss.depth_size", self.loss.depth_size, self.loss.depth_size >= 1, ">= 1")
        need("loss.depth_delta", self.loss.depth_delta, self.loss.depth_delta > 0, "> 0")
        need("loss.depth_band", self.loss.depth_band, self.loss.depth_band > 0, "> 0")
        for key in ("real_like_train", "real_like_test", "stb_train_stride"):
            need(f"data.{key}", getattr(self.data, key), getattr(self.data, key) >= 1, ">= 1")
        need("data.heatmap_sigma", self.data.heatmap_sigma, self.data.heatmap_sigma > 0, "> 0")
        need("evaluation.figure_samples", self.evaluation.figure_samples, self.evaluation.figure_samples >= 0, ">= 0")
        problems.raise_if_any("weak fine-tuning config")
        return self

    @property
    def terms(self) -> tuple[str, ...]:
        """The L_weakly terms of stage 2 (`handshape_tf.losses.WEAKLY_SUPERVISED_TERMS` names)."""
        switches = {"depth": self.loss.depth, "pseudo_mesh": self.loss.pseudo_mesh, "pose": self.loss.pose}
        return ("heatmap",) + tuple(term for term, on in switches.items() if on)


@dataclasses.dataclass(frozen=True)
class InitRun:
    """A finished `train.synthetic` run to start from.

    Attributes:
      folder: the run folder.   model_path: its model.keras.   config: its TrainConfig.
    """

    folder: Path
    model_path: Path
    config: Any

    def describe(self) -> dict[str, Any]:
        stat = self.model_path.stat()
        return {
            "folder": str(self.folder.resolve()),
            "model": str(self.model_path.resolve()),
            "model_bytes": stat.st_size,
            "model_mtime_ns": stat.st_mtime_ns,
            "architecture": self.config.architecture,
        }


def open_init(
    folder: str | Path, preset: str | None = None, command: str | None = None, flag: str = "--init"
) -> InitRun:
    """Opens and checks a run folder to fine-tune.

    Args:
      folder: the run folder.
      preset: when given, the run's model must be this preset's.
      command: the command that makes such a run, for the error message (default: train.synthetic
        with the preset, which writes <workdir>/synthetic-<preset>).
      flag: the command-line option that names the folder, for the error message.

    Raises:
      FileNotFoundError: no folder, model.keras or config.yaml (the message says what to run).
      ConfigError: an unreadable config.yaml, or a model other than the preset's.
    """
    from train.config import resolve_config

    folder = Path(folder)
    missing = [name for name in (checkpoints.MODEL_FILE, checkpoints.CONFIG_FILE) if not (folder / name).is_file()]
    if missing:
        found = "does not exist" if not folder.is_dir() else f"lacks {' and '.join(missing)} (unfinished?)"
        command = command or f"python -m train.synthetic --preset {preset or 'cpu'}"
        raise FileNotFoundError(
            f"{flag} {folder} {found}: expected a finished training run folder with {checkpoints.MODEL_FILE} "
            f"and {checkpoints.CONFIG_FILE}. Make one first with `{command}`, or pass {flag} RUN_DIR"
        )
    config = resolve_config("cpu", folder / checkpoints.CONFIG_FILE)
    if preset is not None:
        expected = to_dict(ModelConfig.preset(preset))
        have = to_dict(config.model)
        different = {key: (have.get(key), value) for key, value in expected.items() if have.get(key) != value}
        if different:
            detail = ", ".join(f"{key}={a!r} (preset {preset!r}: {b!r})" for key, (a, b) in list(different.items())[:6])
            raise ConfigError(
                f"{flag} {folder} holds a model of another preset ({detail}); pass the run's own --preset "
                f"({config.model.preset_name()!r}) or a {flag} run trained with --preset {preset}"
            )
    return InitRun(folder, folder / checkpoints.MODEL_FILE, config)


def resolve(init: InitRun, config_file: Path | None = None, overrides: dict[str, Any] | None = None) -> WeakConfig:
    """WeakConfig: defaults with the init run's model, architecture, batch size, optimizer,
    heat-map sigma and views (its preset's recipe, `handshape_tf.models.config.PRESETS`) -> YAML ->
    overrides.

    Raises:
      ConfigError: unknown keys, bad values, or a model / architecture other than the run's.
    """
    data = WeakDataConfig(heatmap_sigma=init.config.data.heatmap_sigma, views=init.config.dataset.views)
    config = WeakConfig(
        model=init.config.model,
        architecture=init.config.architecture,
        batch_size=init.config.batch_size,
        optimizer=init.config.optimizer,
        data=data,
    )
    if config_file is not None:
        config = merge(config, load_yaml(config_file))
    if overrides:
        config = merge(config, overrides)
    for key in ("model", "architecture"):
        if getattr(config, key) != getattr(init.config, key):
            raise ConfigError(
                f"{key} comes from the --init run ({init.folder}) and cannot be changed; "
                f"got {to_dict(getattr(config, key))!r}"
            )
    return config.validated()
