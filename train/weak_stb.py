"""Weakly supervised fine-tuning on real RGB-D crops (paper Sec. 4.4 and 5.4, Fig. 6 and 8).

    python -m train.weak_stb                        # fine-tune runs/synthetic-cpu on the rendered
                                                    # real-like set, 15 min, before/after report
    python -m train.weak_stb --data /data/STB --with-3d-pose --budget 60
    python -m train.weak_stb --init runs/synthetic-paper --no-compare --set batch_size=16

Starting point (`--init RUN_DIR`, default <workdir>/synthetic-<preset>): a `train.synthetic` run
folder with model.keras and config.yaml; its model sizes are the run's (a `--preset` that
differs, a missing run or a data set of another image size fail before anything is done).
Config: `WeakConfig` defaults with the run's model -> `--config` YAML -> `--with-3d-pose` ->
`--set key=value` (dotted keys; unknown keys fail), written to <run>/config.yaml.

Data (`--data`): an STB root (B2-B6 train, B1 test; cropped once into <workdir>/data, see
`handshape_tf.data.real_like.prepare_stb`), a folder holding train/ and test/ RGB-D shard
folders (samples with `sensor_depth`, `handshape_tf.data.shards`), or nothing: the real-like
domain is rendered into <workdir>/data (`handshape_tf.data.synthetic.generate_dataset` with
domain "real_like"). Samples are read by index (`shards.ShardSamples`, left hands mirrored into
right hands) in shuffled epochs (`iterate_batches`). Training reads images, the sensor depth
maps, 2D joints (heat-maps), the crop camera and the root depth and hand scale; 3D joints only
with `--with-3d-pose`; meshes never.

Losses (`WeakObjective`): L_weakly = 0.1 L_H + 0.1 L_D + 1 L_pM, + 10 L_J with 3D pose
(`handshape_tf.losses.weakly_supervised_loss`):
  * L_D: the predicted mesh (uvd) is placed in the camera with the crop intrinsics and the
    ground-truth root depth and hand scale (the paper's protocol: both are given, Sec. 5.1),
    rendered at R x R (32, `loss.depth_size`) with `handshape_tf.rendering.render_depth` inside
    the training step, and compared by smooth L1 with the reference depth resampled to R x R
    by `depth_sensor.nearest_depth`. Both maps are divided by the hand scale (units of s, like
    the network's d), so `loss.depth_delta` is in hand scales. A pixel counts when the
    reference has depth there within `loss.depth_band` hand scales of the root (the hand and
    what touches it, not the background) and the rendered mesh covers it (a pixel the mesh
    misses has no gradient: visibility is not differentiable).
  * L_pM: edge + 50 Laplacian (Eq. 4, 5) against pseudo-ground-truth meshes: the pretrained
    model's encoder and mesh decoder fed GROUND-TRUTH heat-maps (Gaussians at the 2D joints)
    with its own hourglass features, computed once and cached in the run folder. Meshes are
    compared in the camera frame divided by the hand scale, as in `train.objectives`.
  * L_J: joints in that same frame against (joints_xyz - wrist) / s.

Schedule: stage "heatmap" fine-tunes the hourglass with L_H, then stage "full" fine-tunes every
layer with L_weakly, BatchNorm layers kept as the init run's (`freeze_batch_norm`); RMSprop,
learning rate 1e-4, the stages sharing `budget_minutes` as in `train.config`, run by
`train.loop.StagedTrainer` (the loop of `train.synthetic`). Images get photometric augmentation
only (a geometric one would have to move the depth maps and pseudo meshes with them).

Without `--no-compare` the same fine-tuning also runs without L_pM (<run>/no-pseudo-mesh),
each run getting `--budget` (per run, as in every training command), and the report compares
mesh plausibility (Fig. 6): per predicted mesh, the median |log| ratio of its edge lengths to
the template's and the mean Laplacian (|v_i - mean of its neighbours|) relative to the
template's, all in hand scales.

Run folder (default <workdir>/weak-<data>-<preset>[-pose3d]; `train.checkpoints` layout,
resumable, a finished run is only re-evaluated): config.yaml, sources.json, checkpoints/,
logs/, history.jsonl, pseudo_gt/, model.keras, learning_curve.png, evaluation-before.json,
report.json, pck.png, meshes.png (Fig. 6-style comparison).

Exit codes (`handshape_tf.cli`): 0 done, 2 bad input (config, --init, data, run folder), 1 training
diverged.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np

from handshape_tf.cli import (
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    add_verbose_argument,
    format_number,
    print_error,
    setup_logging,
)
from handshape_tf.config_utils import ConfigError, load_yaml, merge, parse_overrides, to_dict
from handshape_tf.models.config import ModelConfig
from train import checkpoints
from train.config import CheckpointConfig, OptimizerConfig, Problems, StageConfig, check_common

logger = logging.getLogger("train.weak_stb")

STAGES = ("heatmap", "full")
SOURCES_FILE = "sources.json"
BEFORE_FILE = "evaluation-before.json"
PSEUDO_GT_DIR = "pseudo_gt"
COMPARE_DIR = "no-pseudo-mesh"
PAPER_HEATMAP_SIDE = 64
DEFAULT_BUDGET_MINUTES = 7.5  # per run: the default command (with its comparison run) trains 15 min
RENDER_WORKERS = 2  # processes rendering the real-like set
# The fields fine-tuning and evaluation read (plus vertices_xyz when a set has meshes).
READ_FIELDS = ("image", "sensor_depth", "joints_uv", "joints_xyz", "intrinsics", "root_depth", "scale")


# ---------------------------------------------------------------------------------------------
# Configuration.


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
      photometric: photometric augmentation of the training images (`data.pipeline`).
      heatmap_sigma: Gaussian SD in pixels at 64 x 64 heat-maps (paper: 4), scaled with the side;
        the --init run's value unless set.
      views: camera views of the real-like set ("full" or "frontal", `data.synthetic`); the
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
    architecture: Literal["graph", "direct_lbs", "parametric"] = "graph"
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


# ---------------------------------------------------------------------------------------------
# The --init run.


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


def load_init_model(init: InitRun):
    """The run's model.keras as a Keras model (the custom layers are registered on import)."""
    import keras

    import handshape_tf.models.baselines  # noqa: F401  (registers the network's and the baselines' layers)

    return keras.saving.load_model(init.model_path, compile=False)


def resolve(init: InitRun, config_file: Path | None = None, overrides: dict[str, Any] | None = None) -> WeakConfig:
    """WeakConfig: defaults with the init run's model, architecture, batch size, optimizer,
    heat-map sigma and views (its preset's recipe, `train.config.PRESET_TRAINING`) -> YAML ->
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


# ---------------------------------------------------------------------------------------------
# Data.


@dataclasses.dataclass(frozen=True)
class WeakData:
    """Training and test RGB-D sets (`handshape_tf.data.shards.ShardSamples`) and their name."""

    train: Any
    test: Any
    name: str

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "train": repr(self.train), "test": repr(self.test)}


def prepare_data(data: Path | None, workdir: Path, config: WeakConfig, progress: bool = True) -> WeakData:
    """Opens, renders or crops the fine-tuning data (module docstring) and checks its size.

    Raises:
      FileNotFoundError, ValueError: an STB folder with missing sequences, labels or images, or
        depth PNGs of the wrong size or type (checked on the first frame of every sequence
        before anything is cropped); DatasetError: sets of another image size or without sensor
        depth.
    """
    from handshape_tf.data import real_like, shards
    from handshape_tf.data.shards import DatasetError, ShardSamples

    size = config.model.image_size
    d = config.data
    if data is None:
        from handshape_tf.data.synthetic import generate_dataset

        name = f"real-like-rgbd-{d.views}-{size}px-{d.real_like_train}+{d.real_like_test}-seed{d.real_like_seed}"
        folder = Path(workdir) / "data" / name
        parts = {"train": (d.real_like_train, d.real_like_seed), "test": (d.real_like_test, d.real_like_seed + 1)}
        for part, (count, seed) in parts.items():
            generate_dataset(
                folder / part,
                count,
                seed=seed,
                image_size=size,
                workers=RENDER_WORKERS,
                progress=progress,
                views=d.views,
                domain="real_like",
            )
        result = WeakData(ShardSamples(folder / "train"), ShardSamples(folder / "test"), "real-like")
    elif (Path(data) / "train" / shards.METADATA).is_file():
        folder = Path(data)
        result = WeakData(ShardSamples(folder / "train"), ShardSamples(folder / "test"), folder.name)
    else:
        frames = real_like.check_stb(data, size)
        logger.info("STB at %s: %d training and %d test frames", data, frames["train"], frames["test"])
        folder = Path(workdir) / "data" / f"stb-rgbd-{size}px"
        stride = d.stb_train_stride
        train = real_like.prepare_stb(
            data, folder / f"train-stride{stride}", "train", size, stride=stride, progress=progress
        )
        test = real_like.prepare_stb(data, folder / "test", "test", size, progress=progress)
        result = WeakData(train, test, "stb")
    for part in (result.train, result.test):
        if part.image_size != size:
            raise DatasetError(f"{part!r} holds {part.image_size} px crops; the model takes {size} px")
        missing = [name for name in READ_FIELDS if name not in part.fields]
        if missing:
            raise DatasetError(
                f"{part!r} has no {missing}: weak supervision needs RGB-D samples (a domain with a "
                "depth sensor, e.g. --domain real_like, or STB)"
            )
    if len(result.train) < config.batch_size:
        raise DatasetError(f"{result.train!r} has fewer samples than batch_size={config.batch_size}")
    return result


def read_batch(samples, indices) -> dict[str, np.ndarray]:
    """The samples at `indices` of an RGB-D set as right hands (`shards.ShardSamples.batch`):
    READ_FIELDS, and vertices_xyz when the set has meshes."""
    fields = READ_FIELDS + (("vertices_xyz",) if "vertices_xyz" in samples.fields else ())
    return samples.batch(indices, fields)


def iterate_batches(samples, batch_size: int, *, seed: int, start: int = 0):
    """Endless shuffled batches of an RGB-D set, resumable: epoch e is the permutation drawn from
    `np.random.default_rng([seed, e])`, and `start` samples of the stream are skipped.

    Yields:
      `read_batch` dicts ("index": B int64 positions in the set).

    Raises:
      ValueError: batch_size exceeds the set's size.
    """
    count = len(samples)
    if batch_size > count:
        raise ValueError(f"batch_size {batch_size} exceeds the {count} samples of {samples!r}")
    epoch, offset = divmod(int(start), count)
    pending = np.zeros(0, np.int64)
    while True:
        order = np.random.default_rng([int(seed), epoch]).permutation(count)[offset:]
        pending = np.concatenate([pending, order])
        offset = 0
        epoch += 1
        while len(pending) >= batch_size:
            indices, pending = pending[:batch_size], pending[batch_size:]
            yield read_batch(samples, indices)


def heatmap_sigma(config: WeakConfig) -> float:
    """Heat-map Gaussian SD in pixels of the model's heat-maps."""
    return config.data.heatmap_sigma * config.model.heatmap_size / PAPER_HEATMAP_SIDE


# ---------------------------------------------------------------------------------------------
# Depth rendering and the objective.


def render_mesh_depth(mesh_uvd, intrinsics, root_depth, scale, image_size: int, depth_size: int, faces):
    """Depth map of predicted meshes seen by the crop's camera, at depth_size x depth_size.

    Shape shorthand: B batch, V vertices, F faces, R = depth_size.

    Args:
      mesh_uvd: B x V x 3 (u, v in the S x S crop, d = (z - z_root) / s).
      intrinsics: B x 4 fx, fy, cx, cy of the S x S crop.
      root_depth: B wrist depths, mm.   scale: B hand scales, mm.
      image_size: S.   depth_size: R.
      faces: F x 3 template faces.

    Returns:
      B x R x R float32 depth (mm) at the R-map pixel centres, 0 where the mesh is absent;
      differentiable w.r.t. mesh_uvd (not through which pixels are covered).
    """
    import tensorflow as tf

    from handshape_tf.geometry.camera import uvd_to_xyz
    from handshape_tf.rendering import render_depth

    box = tf.constant([0.0, 0.0, float(image_size), float(image_size)])
    xyz = uvd_to_xyz(mesh_uvd, intrinsics, box, root_depth, scale)  # B x V x 3, mm
    # Resizing the S-crop to R scales all four intrinsics by R / S (continuous convention).
    intrinsics = tf.cast(intrinsics, tf.float32) * (depth_size / image_size)
    return render_depth(xyz, faces, intrinsics, (depth_size, depth_size))


def depth_valid(rendered, reference, root_depth, scale, band: float):
    """B x R x R bool: the reference has depth within `band` hand scales of the root and the
    rendered mesh covers the pixel."""
    import tensorflow as tf

    limit = band * scale[:, None, None]
    near_root = tf.abs(reference - root_depth[:, None, None]) <= limit
    return (reference > 0) & near_root & (rendered > 0)


class WeakObjective:
    """Stage losses of the fine-tuning (module docstring).

    Args:
      config: the run's WeakConfig.
      topology: `handshape_tf.losses.MeshTopology` of the template.
      output_kind: "uvd" (the paper's network) or "xyz" (Baseline 1: root-relative, scale-
        normalised camera coordinates, `models.baselines`).

    Batches (dicts of tensors, B samples): image B x S x S x 3, joints_uv B x J x 2 (pixels),
    depth B x R x R (mm), intrinsics B x 4, root_depth B, scale B; pseudo_mesh_uvd B x V x 3
    with L_pM; joints_xyz B x J x 3 (mm) with L_J.
    """

    def __init__(self, config: WeakConfig, topology, output_kind: str):
        self.config = config
        self.topology = topology
        self.output_kind = output_kind
        self.image_size = config.model.image_size
        self.heatmap_size = config.model.heatmap_size
        self.sigma = heatmap_sigma(config)
        loss = config.loss
        self.weights = {
            "heatmap": loss.heatmap_weight,
            "depth": loss.depth_weight,
            "pseudo_mesh": loss.pseudo_mesh_weight,
            "pose": loss.pose_weight,
        }

    def heatmap_targets(self, batch):
        """B x M x M x J Gaussians at the 2D joints."""
        from handshape_tf.geometry.heatmaps import render_heatmaps

        return render_heatmaps(batch["joints_uv"] / float(self.image_size), self.heatmap_size, self.sigma)

    def heatmap_stage(self, heatmaps, batch):
        """Stage 1: L_H over the hourglass stacks."""
        from handshape_tf.losses import heatmap_loss

        value = heatmap_loss(heatmaps, self.heatmap_targets(batch))
        return value, {"heatmap": value}

    def _scaled(self, uvd, batch):
        """B x P x 3 uvd -> camera frame / hand scale (B x P x 3)."""
        import tensorflow as tf

        from handshape_tf.geometry.camera import uvd_to_xyz

        box = tf.constant([0.0, 0.0, float(self.image_size), float(self.image_size)])
        xyz = uvd_to_xyz(uvd, batch["intrinsics"], box, batch["root_depth"], batch["scale"])
        return xyz / batch["scale"][:, None, None]

    def full_stage(self, outputs, batch):
        """Stage 2: L_weakly on the model's outputs; returns (total, unweighted terms)."""
        from handshape_tf.losses import weakly_supervised_loss

        terms = self.config.terms
        inputs: dict[str, Any] = {"heatmaps_pred": outputs["heatmaps"], "heatmaps_target": self.heatmap_targets(batch)}
        scale = batch["scale"][:, None, None]
        if "depth" in terms:
            rendered = render_mesh_depth(
                outputs["mesh_uvd"],
                batch["intrinsics"],
                batch["root_depth"],
                batch["scale"],
                self.image_size,
                self.config.loss.depth_size,
                self.topology.faces,
            )
            inputs.update(
                rendered_depth=rendered / scale,
                reference_depth=batch["depth"] / scale,
                depth_valid=depth_valid(
                    rendered, batch["depth"], batch["root_depth"], batch["scale"], self.config.loss.depth_band
                ),
            )
        if "pseudo_mesh" in terms:
            inputs.update(
                mesh_pred=self._scaled(outputs["mesh_uvd"], batch),
                mesh_pseudo_target=self._scaled(batch["pseudo_mesh_uvd"], batch),
            )
        if "pose" in terms:
            root = batch["joints_xyz"][:, :1]
            if self.output_kind == "uvd":
                pose = self._scaled(outputs["pose_uvd"], batch) - root / scale
            else:
                pose = outputs["pose_xyz"]
            inputs.update(pose_pred=pose, pose_target=(batch["joints_xyz"] - root) / scale)
        return weakly_supervised_loss(
            **inputs,
            topology=self.topology,
            terms=terms,
            weights=self.weights,
            depth_delta=self.config.loss.depth_delta,
        )


# ---------------------------------------------------------------------------------------------
# Pseudo-ground-truth meshes.


def pseudo_gt_meshes(model, crops, config: WeakConfig, progress: bool = True) -> np.ndarray:
    """Meshes of the pretrained model fed ground-truth heat-maps (paper Sec. 4.4).

    The image goes through the model's own input normalisation and hourglass (inference mode);
    the encoder gets the heat-maps rendered at the 2D joints in place of the estimated ones,
    next to the hourglass features, and the mesh decoder turns its latent into a mesh.

    Returns:
      N x V x 3 float32 uvd meshes, one per sample of `crops`.
    """
    import tensorflow as tf
    from tqdm import tqdm

    from handshape_tf.geometry.heatmaps import render_heatmaps
    from handshape_tf.models.network import ENCODER, HOURGLASS, MESH_DECODER

    centre, hourglass = model.get_layer("centre"), model.get_layer(HOURGLASS)
    encoder, decoder = model.get_layer(ENCODER), model.get_layer(MESH_DECODER)
    size, side, sigma = config.model.image_size, config.model.heatmap_size, heatmap_sigma(config)

    @tf.function(autograph=False)
    def run(images, joints_uv):
        _, features = hourglass(centre(images), training=False)
        heatmaps = render_heatmaps(joints_uv / float(size), side, sigma)
        return decoder(encoder(heatmaps, features, training=False), training=False)

    batch_size = config.evaluation.batch_size
    parts = []
    for start in tqdm(range(0, len(crops), batch_size), desc="pseudo-GT meshes", disable=not progress):
        batch = read_batch(crops, np.arange(start, min(start + batch_size, len(crops))))
        count = len(batch["image"])
        images, joints_uv = (_padded(batch[key], batch_size) for key in ("image", "joints_uv"))
        parts.append(run(tf.constant(images, tf.float32) / 255.0, tf.constant(joints_uv)).numpy()[:count])
    return np.concatenate(parts).astype(np.float32)


def _padded(array: np.ndarray, size: int) -> np.ndarray:
    """`array` (B x ...) with zero rows appended up to `size`: one batch shape, one trace."""
    return np.concatenate([array, np.zeros((size - len(array), *array.shape[1:]), array.dtype)])


def cached_pseudo_gt(
    run_dir: Path, model, init: InitRun, crops, config: WeakConfig, progress: bool = True
) -> np.ndarray:
    """`pseudo_gt_meshes`, stored in <run_dir>/pseudo_gt/ with what they were computed from and
    recomputed when that changes (another init model, data or heat-map sigma)."""
    folder = Path(run_dir) / PSEUDO_GT_DIR
    key = {
        "init": init.describe(),
        "data": str(Path(crops.folder).resolve()),
        "samples": len(crops),
        "heatmap_sigma": config.data.heatmap_sigma,
    }
    key_path, mesh_path = folder / "key.json", folder / "mesh_uvd.npy"
    if key_path.is_file() and mesh_path.is_file() and json.loads(key_path.read_text()) == key:
        return np.load(mesh_path)
    start = time.monotonic()
    meshes = pseudo_gt_meshes(model, crops, config, progress)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "mesh_uvd.tmp.npy"
    np.save(tmp, meshes)
    tmp.replace(mesh_path)
    checkpoints.write_json_atomically(key, key_path)
    logger.info("pseudo-GT meshes of %d samples in %.0f s -> %s", len(meshes), time.monotonic() - start, mesh_path)
    return meshes


# ---------------------------------------------------------------------------------------------
# Training.


def set_batch_norm_trainable(model, trainable: bool) -> list:
    """Sets `trainable` on every BatchNormalization layer of `model` (nested ones too) that does
    not have it yet; returns those layers. A non-trainable Keras 3 BatchNormalization normalises
    with its moving statistics even when called with training=True, and updates nothing."""
    from train.loop import batch_norm_layers

    layers = [layer for layer in batch_norm_layers(model) if layer.trainable != trainable]
    for layer in layers:
        layer.trainable = trainable
    return layers


# ---------------------------------------------------------------------------------------------
# Evaluation.


class MeshPlausibility:
    """Edge-length and Laplacian statistics of meshes against the template (Fig. 6), numpy.

    Per mesh (V x 3, with its hand scale s; the template with its own scale s_t):
      edge_log_ratio: median over edges of |log((|e| / s) / (|e_t| / s_t))| (0: the template's
        proportions; 0.1 ~ edges 10% off);
      edge_outliers: fraction of edges more than twice or less than half the template's;
      laplacian_ratio: mean over vertices of |v_i - mean of its neighbours| / s, divided by the
        template's (1: as smooth as the template; a noisy surface is far above).
    `summary()` averages them over the meshes added.
    """

    def __init__(self):
        from handshape_tf.assets.template import SCALE_BONE, load_template
        from handshape_tf.losses import MeshTopology

        template = load_template()
        self.topology = MeshTopology.from_faces(template.faces, template.num_vertices)
        keypoints = template.keypoints
        template_scale = float(np.linalg.norm(keypoints[SCALE_BONE[1]] - keypoints[SCALE_BONE[0]]))
        vertices = template.vertices[None].astype(np.float64)
        self._edges = self._edge_lengths(vertices)[0] / template_scale  # E
        self._laplacian = float(self._laplacians(vertices)[0].mean() / template_scale)
        self._rows: list[np.ndarray] = []

    def _edge_lengths(self, vertices: np.ndarray) -> np.ndarray:
        ends = vertices[:, self.topology.edges]  # B x E x 2 x 3
        return np.linalg.norm(ends[:, :, 1] - ends[:, :, 0], axis=-1)

    def _laplacians(self, vertices: np.ndarray) -> np.ndarray:
        padded = np.concatenate([vertices, np.zeros_like(vertices[:, :1])], axis=1)
        mean = padded[:, self.topology.neighbors].sum(axis=2) * self.topology.neighbor_weights  # B x V x 3
        return np.linalg.norm(vertices - mean, axis=-1)  # B x V

    def update(self, vertices, scale) -> None:
        """Adds B meshes: vertices B x V x 3 (any unit), scale B hand scales (same unit)."""
        vertices = np.asarray(vertices, np.float64)
        scale = np.asarray(scale, np.float64)[:, None]
        ratio = np.log(np.maximum(self._edge_lengths(vertices) / scale, 1e-12) / self._edges)
        laplacian = self._laplacians(vertices).mean(axis=1) / scale[:, 0] / self._laplacian
        self._rows.append(
            np.stack(
                [np.median(np.abs(ratio), axis=1), np.mean(np.abs(ratio) > np.log(2.0), axis=1), laplacian], axis=1
            )
        )

    def summary(self) -> dict[str, float] | None:
        if not self._rows:
            return None
        rows = np.concatenate(self._rows)
        return {
            "edge_log_ratio": float(rows[:, 0].mean()),
            "edge_outliers": float(rows[:, 1].mean()),
            "laplacian_ratio": float(rows[:, 2].mean()),
            "meshes": len(rows),
        }


def evaluate_crops(model, crops, config: WeakConfig) -> dict[str, Any]:
    """Pose (and mesh) errors and mesh plausibility of `model` on a crop set.

    Predictions become camera-frame mm with each sample's crop camera and ground-truth root
    depth and scale (the paper's protocol, `train.evaluate.to_millimetres`).

    Args:
      model: a Keras model with outputs heatmaps and mesh_uvd / pose_uvd or mesh_xyz / pose_xyz.
      crops: the test crop set.
      config: batch size and sample limit (config.evaluation), image size.

    Returns:
      {"metrics": ErrorAccumulator.summary(), "headline": train.evaluate.headline(...),
       "plausibility": MeshPlausibility.summary() (None without a uvd mesh),
       "ground_truth_plausibility": the same for the labelled meshes (None without)}.
    """
    import tensorflow as tf

    from handshape_tf.evaluation.metrics import ErrorAccumulator
    from train.evaluate import headline, to_millimetres

    size = config.model.image_size
    count = min(len(crops), config.evaluation.limit or len(crops))
    batch_size = config.evaluation.batch_size
    predict = tf.function(lambda images: model(images, training=False), autograph=False)
    accumulator, plausibility, truth = ErrorAccumulator(), MeshPlausibility(), MeshPlausibility()
    for start in range(0, count, batch_size):
        batch = read_batch(crops, np.arange(start, min(start + batch_size, count)))
        rows = len(batch["image"])
        outputs = predict(tf.constant(_padded(batch["image"], batch_size), tf.float32) / 255.0)
        outputs = tf.nest.map_structure(lambda tensor, rows=rows: tensor[:rows], outputs)
        kind = "uvd" if "mesh_uvd" in outputs else "xyz"
        joints = to_millimetres(outputs[f"pose_{kind}"], batch, size, kind)
        mesh = to_millimetres(outputs[f"mesh_{kind}"], batch, size, kind)
        if "vertices_xyz" in batch:
            accumulator.update(joints, batch["joints_xyz"], mesh, batch["vertices_xyz"])
            truth.update(batch["vertices_xyz"], batch["scale"])
        else:
            accumulator.update(joints, batch["joints_xyz"])
        if kind == "uvd":
            plausibility.update(mesh, batch["scale"])
    metrics = accumulator.summary()
    return {
        "metrics": metrics,
        "headline": headline(metrics),
        "plausibility": plausibility.summary(),
        "ground_truth_plausibility": truth.summary(),
    }


def predicted_meshes(model, crops, count: int, config: WeakConfig) -> np.ndarray:
    """count x V x 3 meshes (mm) the model predicts for the first `count` samples of `crops`."""
    import tensorflow as tf

    from train.evaluate import to_millimetres

    batch = read_batch(crops, np.arange(min(count, len(crops))))
    outputs = model(tf.constant(batch["image"], tf.float32) / 255.0, training=False)
    return to_millimetres(outputs["mesh_uvd"], batch, config.model.image_size, "uvd")


def has_uvd_mesh(model) -> bool:
    """Whether the model outputs mesh_uvd (the paper's network; not Baseline 1)."""
    return "mesh_uvd" in model.output


def _shaded(vertices_mm: np.ndarray, faces: np.ndarray, intrinsics: np.ndarray, side: int) -> np.ndarray:
    """side x side x 3 uint8 grey shading (light from the camera) of meshes B x V x 3."""
    from handshape_tf.rendering import render_normals

    normals = render_normals(vertices_mm.astype(np.float32), faces, intrinsics.astype(np.float32), (side, side)).numpy()
    covered = np.linalg.norm(normals, axis=-1) > 0
    shade = np.where(covered, 60 + 195 * np.clip(-normals[..., 2], 0.0, 1.0), 255)
    return np.repeat(shade[..., None], 3, axis=-1).astype(np.uint8)


def _side_view(vertices_mm: np.ndarray) -> np.ndarray:
    """Meshes B x V x 3 turned 90 degrees about the vertical axis through their centre."""
    centre = vertices_mm.mean(axis=1, keepdims=True)
    turn = np.array([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    return (vertices_mm - centre) @ turn.T + centre


def comparison_figure(path: Path, crops, meshes: dict[str, np.ndarray], side: int = 96) -> Path:
    """PNG: per test sample a row with the input crop, then each model's mesh from the crop's
    camera and from the side (turned 90 degrees), grey-shaded (paper Fig. 6).

    Args:
      path: the PNG to write.
      crops: the crop set the meshes were predicted on (samples 0 .. K-1).
      meshes: column title -> K x V x 3 meshes in mm.
      side: tile side, pixels.
    """
    import cv2

    from handshape_tf.assets.template import load_template

    faces = load_template().faces
    count = min(len(m) for m in meshes.values())
    batch = read_batch(crops, np.arange(count))
    intrinsics = batch["intrinsics"] * (side / crops.image_size)
    columns = [np.stack([cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA) for image in batch["image"]])]
    for vertices in meshes.values():
        columns += [
            _shaded(vertices[:count], faces, intrinsics, side),
            _shaded(_side_view(vertices[:count]), faces, intrinsics, side),
        ]
    # Two header lines: each model's title over its pair of tiles, then "camera" / "side".
    header = np.full((32, side * len(columns), 3), 255, np.uint8)
    labels = [(0, 13, "input")] + [(1 + 2 * i, 13, title) for i, title in enumerate(meshes)]
    labels += [(column, 27, "camera" if column % 2 else "side") for column in range(1, len(columns))]
    for column, baseline, text in labels:
        cv2.putText(
            header, text[:30], (column * side + 3, baseline), cv2.FONT_HERSHEY_SIMPLEX, 0.33, (0, 0, 0), 1, cv2.LINE_AA
        )
    rows = [np.concatenate([column[k] for column in columns], axis=1) for k in range(count)]
    sheet = np.concatenate([header, *rows], axis=0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), sheet[..., ::-1])
    return path


# ---------------------------------------------------------------------------------------------
# A run.


def _check_sources(run_dir: Path, init: InitRun, data: WeakData) -> None:
    """Writes sources.json, or checks that a resumed run had the same init run and data."""
    sources = {
        "init": str(init.folder.resolve()),
        "train": str(Path(data.train.folder).resolve()),
        "test": str(Path(data.test.folder).resolve()),
    }
    path = Path(run_dir) / SOURCES_FILE
    if path.is_file():
        old = json.loads(path.read_text())
        if old != sources:
            raise ConfigError(
                f"{run_dir} holds a run of other sources ({old}); requested {sources}. Resume it with "
                "the same --init and --data, or choose a new --run-dir"
            )
    else:
        checkpoints.write_json_atomically(sources, path)


def evaluate_before(run_dir: Path, model, init: InitRun, data: WeakData, config: WeakConfig) -> dict[str, Any]:
    """The init model's test evaluation, cached in <run_dir>/evaluation-before.json."""
    path = Path(run_dir) / BEFORE_FILE
    key = {"init": init.describe(), "test": str(Path(data.test.folder).resolve()), "limit": config.evaluation.limit}
    if path.is_file():
        cached = json.loads(path.read_text())
        if cached.get("key") == key:
            return cached["evaluation"]
    evaluation = evaluate_crops(model, data.test, config)
    checkpoints.write_json_atomically({"key": key, "evaluation": evaluation}, path)
    return evaluation


def run_weak(
    config: WeakConfig, run_dir: Path, init: InitRun, data: WeakData, *, progress: bool = True, keep_meshes: int = 0
) -> dict[str, Any]:
    """Fine-tunes (or resumes) one run and evaluates it before and after.

    Args:
      config: resolved WeakConfig.
      run_dir: the run folder.
      init: the run to start from.
      data: training and test crop sets.
      progress: progress bars.
      keep_meshes: predicted test meshes (before and after) to return for figures.

    Returns:
      The report (also written to <run_dir>/report.json); with keep_meshes, "meshes" holds
      {"before": K x V x 3, "after": K x V x 3} (not written).

    Raises:
      ConfigError: the folder holds a run with another fixed configuration or other sources.
      train.loop.TrainingDiverged: non-finite loss.
    """
    from handshape_tf.evaluation.plots import plot_pck_curves
    from train.evaluate import to_millimetres
    from train.weak_trainer import WeakTrainer

    run_dir = Path(run_dir)
    checkpoints.prepare_run_dir(run_dir, config)
    _check_sources(run_dir, init, data)
    model = load_init_model(init)
    before = evaluate_before(run_dir, model, init, data, config)
    pseudo_gt, pseudo_plausibility = None, None
    if config.loss.pseudo_mesh:
        pseudo_gt = cached_pseudo_gt(run_dir, model, init, data.train, config, progress)
        pseudo_plausibility = MeshPlausibility()
        batch = read_batch(data.train, np.arange(min(len(data.train), 512)))
        meshes_mm = to_millimetres(pseudo_gt[: len(batch["scale"])], batch, config.model.image_size, "uvd")
        pseudo_plausibility.update(meshes_mm, batch["scale"])
        pseudo_plausibility = pseudo_plausibility.summary()
    meshes = {}
    if keep_meshes and has_uvd_mesh(model):
        meshes["before"] = predicted_meshes(model, data.test, keep_meshes, config)
    trainer = WeakTrainer(config, run_dir, model, data.train, pseudo_gt, progress)
    summary = trainer.train()
    model_path = checkpoints.save_model_atomically(model, run_dir / checkpoints.MODEL_FILE)
    curve = checkpoints.plot_learning_curve(trainer.history.rows(), run_dir / checkpoints.CURVE_FILE)
    after = evaluate_crops(model, data.test, config)
    if meshes:
        meshes["after"] = predicted_meshes(model, data.test, keep_meshes, config)
    pck = plot_pck_curves(
        {"before": before["metrics"]["pose"], "after": after["metrics"]["pose"]},
        run_dir / "pck.png",
        title=f"3D PCK on {data.name} test ({len(data.test)} crops)",
    )
    report = {
        "run_dir": str(run_dir),
        "init": init.describe(),
        "data": data.describe(),
        "config": to_dict(config),
        "training": summary,
        "evaluation": {"before": before["headline"], "after": after["headline"]},
        "plausibility": {
            "before": before["plausibility"],
            "after": after["plausibility"],
            "pseudo_gt": pseudo_plausibility,
            "ground_truth": after["ground_truth_plausibility"],
        },
        "metrics": {"before": before["metrics"], "after": after["metrics"]},
        "files": {
            "model": str(model_path),
            "learning_curve": None if curve is None else str(curve),
            "pck": str(pck),
            "config": str(run_dir / checkpoints.CONFIG_FILE),
            "tensorboard": str(run_dir / checkpoints.LOGS),
            "checkpoints": str(run_dir / checkpoints.CHECKPOINTS),
        },
    }
    checkpoints.write_json_atomically(report, run_dir / checkpoints.REPORT_FILE)
    if meshes:
        report["meshes"] = meshes
    return report


# ---------------------------------------------------------------------------------------------
# Command line.


def build_parser(prog: str = "python -m train.weak_stb") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument("--init", type=Path, help="train.synthetic run folder (default <workdir>/synthetic-<preset>)")
    parser.add_argument(
        "--preset", help="model preset the --init run must have (default: the run's own; without --init, cpu)"
    )
    parser.add_argument(
        "--data",
        type=Path,
        help="STB root, or a folder with train/ and test/ RGB-D shard folders (default: render the real-like set)",
    )
    parser.add_argument("--with-3d-pose", action="store_true", help="add the 3D pose loss (10 L_J)")
    parser.add_argument("--no-compare", action="store_true", help="skip the run without the pseudo-GT mesh loss")
    parser.add_argument("--config", type=Path, help="YAML file of config values (e.g. a run's config.yaml)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="override config values, e.g. --set batch_size=16 loss.depth_size=64",
    )
    parser.add_argument(
        "--budget",
        type=float,
        metavar="MINUTES",
        help=f"training minutes per run (default {DEFAULT_BUDGET_MINUTES:g}; the comparison is a second run)",
    )
    parser.add_argument("--workdir", type=Path, default=Path("runs"), help="where default data and runs go (./runs)")
    parser.add_argument("--run-dir", type=Path, help="run folder (default <workdir>/weak-<data>-<preset>[-pose3d])")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_verbose_argument(parser)
    return parser


def resolve_command(args) -> tuple[InitRun, WeakConfig, int]:
    """The init run, the config and the number of runs (2 with the comparison) of a command line.

    `--budget` is each run's training time (config budget_minutes; --set budget_minutes wins).
    """
    init = open_init(args.init or args.workdir / f"synthetic-{args.preset or 'cpu'}", args.preset)
    overrides = parse_overrides(args.overrides)
    if args.with_3d_pose:
        overrides = {"loss.pose": True, **overrides}
    if args.budget is not None:
        overrides = {"budget_minutes": args.budget, **overrides}
    config = resolve(init, args.config, overrides)
    runs = 2 if not args.no_compare and config.architecture == "graph" and config.loss.pseudo_mesh else 1
    return init, config, runs


def print_report(report: dict[str, Any], comparison: dict[str, Any] | None, figure: Path | None) -> None:
    columns = ("pose_error_mm", "pose_error_pa_mm", "auc_20_50", "mesh_error_mm")
    rows = {"pretrained": report["evaluation"]["before"], "weak (L_weakly)": report["evaluation"]["after"]}
    plausibility = {
        "pretrained": report["plausibility"]["before"],
        "weak (L_weakly)": report["plausibility"]["after"],
        "pseudo-GT meshes": report["plausibility"]["pseudo_gt"],
        "ground truth": report["plausibility"]["ground_truth"],
    }
    if comparison is not None:
        rows["weak without L_pM"] = comparison["evaluation"]["after"]
        plausibility["weak without L_pM"] = comparison["plausibility"]["after"]
    print(f"test set: {report['data']['test']} ({rows['pretrained']['samples']} samples)")
    print(f"  {'':22}" + "".join(f"{c:>18}" for c in columns))
    for name, values in rows.items():
        print(f"  {name:22}" + "".join(f"{format_number(values.get(c)):>18}" for c in columns))
    print("mesh plausibility vs the template (0, 0 and 1 = the template's proportions and smoothness):")
    print(f"  {'':22}" + "".join(f"{c:>18}" for c in ("edge_log_ratio", "edge_outliers", "laplacian_ratio")))
    for name, values in plausibility.items():
        if values:
            print(
                f"  {name:22}"
                + "".join(
                    f"{format_number(values[c]):>18}" for c in ("edge_log_ratio", "edge_outliers", "laplacian_ratio")
                )
            )
    for name, run in (("weak", report), ("weak without L_pM", comparison)):
        if run is not None:
            stages = ", ".join(f"{n} {s['steps']} steps" for n, s in run["training"]["stages"].items())
            print(
                f"{name}: {stages or 'already trained'}; {run['training']['training_seconds'] / 60:.1f} min; "
                f"report {Path(run['run_dir']) / checkpoints.REPORT_FILE}"
            )
    if figure is not None:
        print(f"meshes: {figure}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, timestamps=True)
    from handshape_tf.data.shards import DatasetError
    from train.loop import TrainingDiverged

    progress = not args.no_progress
    try:
        init, config, runs = resolve_command(args)
        data = prepare_data(args.data, args.workdir, config, progress)
        suffix = "-pose3d" if config.loss.pose else ""
        run_dir = args.run_dir or args.workdir / f"weak-{data.name}-{args.preset or config.model.preset_name()}{suffix}"
        keep = config.evaluation.figure_samples
        report = run_weak(config, run_dir, init, data, progress=progress, keep_meshes=keep)
        comparison = None
        if runs == 2:
            compare_config = merge(config, {"loss.pseudo_mesh": False}).validated()
            comparison = run_weak(
                compare_config, Path(run_dir) / COMPARE_DIR, init, data, progress=progress, keep_meshes=keep
            )
    except (ConfigError, DatasetError, FileNotFoundError, ValueError) as error:
        print_error(error)
        return EXIT_BAD_INPUT
    except TrainingDiverged as error:
        print_error(error)
        return EXIT_FAILURE
    figure = None
    meshes = report.pop("meshes", None)
    if meshes:
        columns = {"pretrained": meshes["before"], "weak": meshes["after"]}
        if "vertices_xyz" in data.test.fields:  # rendered sets know the true mesh
            columns = {
                "ground truth": read_batch(data.test, np.arange(len(meshes["before"])))["vertices_xyz"],
                **columns,
            }
        if comparison is not None:
            columns["weak, no L_pM"] = comparison.pop("meshes")["after"]
        figure = comparison_figure(Path(run_dir) / "meshes.png", data.test, columns)
        report["files"]["meshes"] = str(figure)
    if comparison is not None:
        keys = ("run_dir", "evaluation", "plausibility")
        report["comparison_without_pseudo_mesh"] = {key: comparison[key] for key in keys}
    checkpoints.write_json_atomically(report, Path(run_dir) / checkpoints.REPORT_FILE)
    print_report(report, comparison, figure)
    return 0


if __name__ == "__main__":
    sys.exit(main())
