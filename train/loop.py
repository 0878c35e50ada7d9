"""The staged custom training loop (Keras 3 model, tf.function steps, tf.distribute).

Shape shorthand: B global batch, b = B / replicas, S input side, M heat-map side, J = 21,
V mesh vertices.

`StagedTrainer` is the loop both training entry points share: `Trainer` below (train.synthetic,
train.ablations) and `train.weak.trainer.WeakTrainer` (weakly supervised fine-tuning). It runs the
stages of its subclass in order, each with its own optimizer (their variables differ; all are in
the checkpoint), until the stage's max_steps or its share of the time budget (`train.config`);
a subclass says which variables, batches and step function a stage has (learning-rate schedules:
`train.schedules`). `make_environment` sets up the strategy, `build_network` the model of a config.

Stages of `Trainer` (paper Sec. 4.3; `train.config` for the budgets):
  heatmap: the stacked hourglass alone with L_H;
  pose:    the pose regressor alone with L_J, fed ground-truth meshes (uvd) instead of images
           (models without a pose regressor, the Table 2 baselines, skip it);
  full:    everything but the pose regressor end to end with L_fully (`train.objectives`).

Distribution: the model, the optimizers and the steps live in a tf.distribute strategy (the
default one, MirroredStrategy or MultiWorkerMirroredStrategy). Every input pipeline (one per
worker) reads its own 1 / workers share of each epoch (`data.pipeline` sharding), b samples per
replica and step; per-replica losses are scaled by 1 / replicas and summed. Decisions that
depend on a worker's clock (stop at the time budget, checkpoint every N seconds) are taken by
the chief and all-reduced, so all workers step, save and stop together.

Resume: the checkpoint holds the model, the optimizers, the stage, the step within it, the
global step, the samples each input pipeline has consumed (the input stream is a pure function
of its seed, so it is rebuilt at that position) and the training seconds spent.
"""

from __future__ import annotations

import abc
import dataclasses
import logging
import math
import os
import resource
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2
from tqdm import tqdm

from handshape_tf.assets.template import load_template
from handshape_tf.data.pipeline import background_bank, evaluation_dataset, training_dataset
from handshape_tf.losses import MeshTopology
from handshape_tf.models.config import MIN_HOURGLASS_SIDE
from handshape_tf.models.network import HOURGLASS, POSE_REGRESSOR, build_model
from train import checkpoints
from train.batch_norm import recalibrate_batch_norm
from train.config import STAGES, StagedRunConfig, TrainConfig
from train.interrupts import StopSignals, TrainingInterrupted
from train.objectives import Objective
from train.schedules import LinearWarmup, StageSchedule

logger = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint was kept."""


@dataclasses.dataclass(frozen=True)
class Environment:
    """The distribution strategy and this process's place in it.

    Attributes:
      strategy: the tf.distribute strategy.
      num_workers: worker processes (1 unless multi-worker).
      worker_index: this worker's task index.
      chief: this worker writes the run folder (task 0, or the "chief" task).
    """

    strategy: Any
    num_workers: int = 1
    worker_index: int = 0
    chief: bool = True


def make_environment(name: str) -> Environment:
    """Creates the strategy `name` ("default", "mirrored", "multi_worker").

    Multi-worker reads the cluster from the TF_CONFIG environment variable. Create it before
    any other TensorFlow operation of the process.

    Raises:
      ValueError: unknown name, or multi_worker without a TF_CONFIG.
    """
    if name == "default":
        return Environment(tf.distribute.get_strategy())
    if name == "mirrored":
        return Environment(tf.distribute.MirroredStrategy())
    if name == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise ValueError(
                "--strategy multi_worker needs the TF_CONFIG environment variable, e.g. "
                '{"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": "worker", "index": 0}}'
            )
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        resolver = strategy.cluster_resolver
        spec = resolver.cluster_spec()
        workers = spec.num_tasks("worker") + (spec.num_tasks("chief") if "chief" in spec.jobs else 0)
        chief = resolver.task_type == "chief" or (
            resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in spec.jobs
        )
        return Environment(strategy, num_workers=workers, worker_index=int(resolver.task_id), chief=chief)
    raise ValueError(f"strategy {name!r}; expected one of ['default', 'mirrored', 'multi_worker']")


def build_network(config: TrainConfig, precision: str | None = None) -> keras.Model:
    """The model of `config.architecture`: the paper's network or a Table 2 baseline, with
    its trunk in `precision` (default `config.precision`; the baselines are float32)."""
    if config.architecture == "graph":
        return build_model(config.model, trunk_precision=precision or config.precision)
    from handshape_tf.models.baselines import build_baseline

    b = config.baseline
    return build_baseline(
        config.architecture,
        config.model,
        mlp_units=b.mlp_units,
        shape_components=b.shape_components,
        shape_samples=b.shape_samples,
        seed=config.seed,
    )


# TensorBoard's scalar plugin reads tensor summaries tagged with this metadata; writing them with
# the core `tf.summary.write` keeps the tensorboard package optional (TF 2.21 does not need it).
_SCALAR_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
).SerializeToString()


def _has_layer(model: keras.Model, name: str) -> bool:
    return any(layer.name == name for layer in model.layers)


def _peak_memory_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class StagedTrainer(abc.ABC):
    """Trains a run folder stage by stage, resuming from its last checkpoint.

    The base owns what every staged run has: the counters (stage, step, global_step, samples,
    seconds), the checkpoint (keys model, stage, step, global_step, samples, seconds, stage_start and
    optimizer_<stage>) and its manager, history.jsonl, the TensorBoard writer, one optimizer per
    stage, and the loop (time and step limits, non-finite stop, logging, periodic checkpoints,
    the chief's decisions agreed by all workers). A subclass sets STAGE_ORDER and provides
    `stage_variables`, `_batches` and `_step_fn`; it may narrow `_active`.

    Args:
      config: the run's config (`train.config.StagedRunConfig`: `TrainConfig`,
        `train.weak.config.WeakConfig`).
      run_dir: the run folder (`train.checkpoints` layout); created by `prepare_run_dir`.
      model: the Keras model to train, built in `environment.strategy`'s scope.
      environment: the strategy (`make_environment`).
      progress: show tqdm progress bars (on the chief).
    """

    STAGE_ORDER: tuple[str, ...]  # every stage name in order; `stage` and the deadlines count in it

    def __init__(
        self,
        config: StagedRunConfig,
        run_dir: Path,
        model: keras.Model,
        environment: Environment,
        *,
        progress: bool = True,
    ):
        self.config = config
        self.run_dir = Path(run_dir)
        self.model = model
        self.env = environment
        self.progress = progress
        self.samples_per_step = config.batch_size // environment.num_workers  # per input pipeline
        self.stage_names = [name for name in self.STAGE_ORDER if self._active(name)]
        self.stage_progress = tf.Variable(0.0, dtype=tf.float32, trainable=False, name="stage_progress")
        with environment.strategy.scope():
            self.optimizers = {name: self._optimizer(name) for name in self.stage_names}
        self.heatmap_model = keras.Model(
            model.inputs, [model.get_layer(f"heatmaps_{i}").output for i in range(config.model.num_stacks)]
        )
        self.stage = tf.Variable(0, dtype=tf.int64, trainable=False, name="stage")
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.global_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        self.samples = tf.Variable(0, dtype=tf.int64, trainable=False, name="samples")
        self.seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="seconds")
        # Training-clock second at which the current stage started (the cosine decay's origin).
        self.stage_start = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="stage_start")
        self.checkpoint = tf.train.Checkpoint(
            **checkpoints.model_checkpoint_items(model),
            stage=self.stage,
            step=self.step,
            global_step=self.global_step,
            samples=self.samples,
            seconds=self.seconds,
            stage_start=self.stage_start,
            **{f"optimizer_{name}": optimizer for name, optimizer in self.optimizers.items()},
        )
        directory = checkpoints.checkpoint_dir(self.run_dir, environment.chief, environment.worker_index)
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(directory), max_to_keep=config.checkpoint.keep)
        self.history = checkpoints.History(self.run_dir / checkpoints.HISTORY_FILE, enabled=environment.chief)
        log_dir = self.run_dir / checkpoints.LOGS if environment.chief else directory.parent / checkpoints.LOGS
        self.writer = tf.summary.create_file_writer(str(log_dir))
        self.resumed_from: int | None = None
        self._agree_fn = self._make_agree() if environment.num_workers > 1 else None

    # ------------------------------------------------------------------------------------------
    # What a subclass says about its stages.

    def _active(self, name: str) -> bool:
        """Whether stage `name` runs: it has a time share or a step limit."""
        stage = self.config.stage(name)
        return stage.time_fraction > 0 or stage.max_steps > 0

    @abc.abstractmethod
    def stage_variables(self, name: str) -> list:
        """Trainable variables of stage `name`."""

    @abc.abstractmethod
    def _batches(self, name: str):
        """The iterator stage `name`'s step function draws its batches from, starting at the
        `samples` this input pipeline has consumed."""

    @abc.abstractmethod
    def _step_fn(self, name: str):
        """A function iterator -> {"loss": scalar, term: scalar, ...} (tensors) that trains one
        step of stage `name` on the next batch of `_batches(name)`."""

    # ------------------------------------------------------------------------------------------
    # Construction helpers.

    def _optimizer(self, name: str) -> keras.optimizers.Optimizer:
        o = self.config.optimizer
        rate = self.config.stage(name).learning_rate
        if o.decay == "cosine":
            rate = StageSchedule(rate, o.warmup_steps, self.stage_progress, o.final_rate_fraction, o.decay_start)
        elif o.warmup_steps:
            rate = LinearWarmup(rate, o.warmup_steps)
        common = dict(learning_rate=rate, epsilon=o.epsilon, clipnorm=o.clipnorm or None, name=f"{o.name}_{name}")
        if o.name == "adam":
            optimizer = keras.optimizers.Adam(**common)
        else:
            optimizer = keras.optimizers.RMSprop(rho=o.rho, momentum=o.momentum, **common)
        optimizer.build(self.stage_variables(name))
        return optimizer

    def _make_agree(self):
        strategy = self.env.strategy

        @tf.function
        def agree(flags):
            per_replica = strategy.run(tf.identity, args=(flags,))
            return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

        return agree

    # ------------------------------------------------------------------------------------------
    # The loop.

    def restore(self) -> bool:
        """Restores the latest checkpoint, if any; returns whether it did."""
        latest = self.manager.latest_checkpoint
        if latest is None:
            return False
        self.checkpoint.restore(latest).assert_existing_objects_matched()
        self.resumed_from = int(self.global_step.numpy())
        self.history.truncate(self.resumed_from)
        stage = int(self.stage.numpy())
        order = self.STAGE_ORDER
        logger.info(
            "resumed %s at stage %s, step %d (global step %d, %.0f s trained)",
            latest,
            order[stage] if stage < len(order) else "(done)",
            int(self.step.numpy()),
            self.resumed_from,
            float(self.seconds.numpy()),
        )
        return True

    def _extend_finished_run(self) -> None:
        """A finished run resumed with a larger budget continues its last stage, when that stage
        is time-limited: the extension is a new segment of it (the learning-rate schedule runs
        over the segment), so a larger `--budget` trains a finished run further."""
        last = self.stage_names[-1]
        index = self.STAGE_ORDER.index(last)
        seconds = float(self.seconds.numpy())
        if int(self.stage.numpy()) <= index or self.config.stage(last).max_steps > 0 or seconds >= self._deadline(last):
            return
        logger.info(
            "extending the finished run: stage %s continues from %.1f to %.1f min",
            last,
            seconds / 60,
            self._deadline(last) / 60,
        )
        self.stage.assign(index)
        self.step.assign(0)

    def _deadline(self, name: str) -> float:
        """Training-clock second at which stage `name` ends (cumulative budget shares)."""
        index = self.STAGE_ORDER.index(name)
        share = sum(self.config.stage(n).time_fraction for n in self.STAGE_ORDER[: index + 1])
        return share * self.config.budget_minutes * 60.0

    def _agree(
        self, stop: bool, save: bool, progress: float, interrupted: bool = False
    ) -> tuple[bool, bool, float, bool]:
        """The chief's stop, save and interruption decisions and stage progress, the same on every
        worker."""
        if self._agree_fn is None:
            return stop, save, progress, interrupted
        # Only the chief's values are non-zero, so the sum over replicas is the chief's.
        flags = [float(stop), float(save), progress, float(interrupted)]
        agreed = self._agree_fn(tf.constant(flags if self.env.chief else [0.0] * 4)).numpy()
        return bool(agreed[0] > 0), bool(agreed[1] > 0), float(agreed[2]), bool(agreed[3] > 0)

    def _save(self) -> None:
        self.manager.save(checkpoint_number=int(self.global_step.numpy()))

    def train(self) -> dict[str, Any]:
        """Runs (or finishes) every stage; returns a summary of this session.

        Raises:
          TrainingDiverged: a non-finite loss (no checkpoint is written after it).
          TrainingInterrupted: SIGTERM or SIGINT; a checkpoint was written after the last step.
        """
        if self.restore():
            self._extend_finished_run()
        summary: dict[str, Any] = {"resumed_from_step": self.resumed_from, "stages": {}}
        with StopSignals() as signals:
            for name in self.stage_names:
                index = self.STAGE_ORDER.index(name)  # `stage` counts in STAGE_ORDER: skipped stages keep their place
                if index < int(self.stage.numpy()):
                    continue
                summary["stages"][name] = self._run_stage(name, signals)
                self.stage.assign(index + 1)
                self.step.assign(0)
                self._save()
        summary.update(
            global_step=int(self.global_step.numpy()),
            training_seconds=float(self.seconds.numpy()),
            peak_memory_mb=round(_peak_memory_mb(), 1),
        )
        return summary

    def _run_stage(self, name: str, signals: StopSignals) -> dict[str, Any]:
        """Trains stage `name` from its current step until its limits; a stop signal (`signals`,
        also one that came before the stage began) saves a checkpoint and raises."""
        c = self.config
        stage = c.stage(name)
        deadline = self._deadline(name)
        step_fn = self._step_fn(name)
        iterator = self._batches(name)
        first_step = int(self.step.numpy())
        first_seconds = float(self.seconds.numpy())
        if first_step == 0:
            self.stage_start.assign(first_seconds)
        stage_start = float(self.stage_start.numpy())
        # The bar counts steps against max_steps, or seconds against the time left.
        use_steps = stage.max_steps > 0
        total = stage.max_steps if use_steps else max(1, round(deadline - first_seconds))
        time_format = "{l_bar}{bar}| {n_fmt}/{total_fmt} s [{elapsed}<{remaining}{postfix}]"
        bar = tqdm(
            total=total,
            desc=f"stage {name}",
            unit="step",
            bar_format=None if use_steps else time_format,
            disable=not (self.progress and self.env.chief),
            dynamic_ncols=True,
            initial=first_step if use_steps else 0,
        )
        last_save_time, last_save_step = time.monotonic(), first_step
        timed_steps, timed_seconds = 0, 0.0
        values: dict[str, float] = {}

        def limits_reached() -> bool:
            return (use_steps and int(self.step.numpy()) >= stage.max_steps) or float(self.seconds.numpy()) >= deadline

        def progress() -> float:  # share of the stage used, for the learning-rate schedule
            if use_steps:
                return int(self.step.numpy()) / stage.max_steps
            return (float(self.seconds.numpy()) - stage_start) / max(deadline - stage_start, 1e-9)

        asked = signals.received is not None
        stop, _, agreed_progress, interrupted = self._agree(limits_reached() or asked, False, progress(), asked)
        with self.writer.as_default():
            while not stop:
                self.stage_progress.assign(agreed_progress)
                start = time.monotonic()
                results = step_fn(iterator)
                values = {key: float(value) for key, value in results.items()}
                elapsed = time.monotonic() - start
                if not all(math.isfinite(v) for v in values.values()):
                    bar.close()
                    raise TrainingDiverged(self._divergence_message(name, values))
                self.step.assign_add(1)
                self.global_step.assign_add(1)
                self.samples.assign_add(self.samples_per_step)
                self.seconds.assign_add(elapsed)
                session_step = int(self.step.numpy()) - first_step
                if session_step > 1:  # the first step of a session traces and compiles
                    timed_steps += 1
                    timed_seconds += elapsed
                images_per_second = c.batch_size * timed_steps / timed_seconds if timed_seconds else 0.0
                bar.set_postfix(loss=f"{values['loss']:.4g}", img_s=f"{images_per_second:.1f}", refresh=False)
                done = int(self.step.numpy()) if use_steps else round(float(self.seconds.numpy()) - first_seconds)
                bar.update(max(0, min(total, done) - bar.n))
                if int(self.step.numpy()) % c.log_every_steps == 0:
                    self._log(name, values, images_per_second)
                now = time.monotonic()
                due = (
                    int(self.step.numpy()) - last_save_step >= c.checkpoint.every_steps
                    or now - last_save_time >= c.checkpoint.every_seconds
                )
                asked = signals.received is not None
                stop, save, agreed_progress, interrupted = self._agree(
                    limits_reached() or asked, due, progress(), asked
                )
                if save and not stop:
                    self._save()
                    last_save_time, last_save_step = now, int(self.step.numpy())
        bar.close()
        if interrupted:
            self._save()
            raise TrainingInterrupted(
                f"training stopped by {signals.received or 'a signal to the chief'} at stage {name!r}, step "
                f"{int(self.step.numpy())} (global step {int(self.global_step.numpy())}, "
                f"{float(self.seconds.numpy()) / 60:.1f} training minutes); a checkpoint was saved: run the same "
                "command again to resume"
            )
        return {
            "steps": int(self.step.numpy()),
            "session_steps": int(self.step.numpy()) - first_step,
            "images_per_second": round(c.batch_size * timed_steps / timed_seconds, 2) if timed_seconds else None,
            "final_loss": values.get("loss"),
            "final_terms": {key: value for key, value in values.items() if key != "loss"},
        }

    def _log(self, name: str, values: dict[str, float], images_per_second: float) -> None:
        step = int(self.global_step.numpy())
        learning_rate = float(keras.ops.convert_to_numpy(self.optimizers[name].learning_rate))
        for key, value in {**values, "images_per_second": images_per_second, "learning_rate": learning_rate}.items():
            tf.summary.write(f"{name}/{key}", tf.constant(value, tf.float32), step=step, metadata=_SCALAR_METADATA)
        self.history.append(
            {
                "global_step": step,
                "stage": name,
                "step": int(self.step.numpy()),
                "seconds": round(float(self.seconds.numpy()), 2),
                "learning_rate": learning_rate,
                **values,
            }
        )

    def _divergence_message(self, name: str, values: dict[str, float]) -> str:
        bad = {key: value for key, value in values.items() if not math.isfinite(value)}
        latest = self.manager.latest_checkpoint
        kept = f"the last good checkpoint {latest} is kept" if latest else "no checkpoint had been written yet"
        return (
            f"training stopped: non-finite loss at stage {name!r}, step {int(self.step.numpy()) + 1} "
            f"(global step {int(self.global_step.numpy()) + 1}): {bad}; {kept}. Lower the learning rate "
            f"(--set stages.{name}.learning_rate=...) or enable gradient clipping (--set optimizer.clipnorm=1) "
            f"and run the same command again to resume from it"
        )


class Trainer(StagedTrainer):
    """Trains one run folder of synthetic data from its config and a training source, resuming
    if it can (stages heatmap, pose, full; module docstring).

    Args:
      config: the resolved TrainConfig.
      run_dir: the run folder (`train.checkpoints` layout); created by `prepare_run_dir`.
      source: a `data.sources` source (ShardSource or PaperSyntheticSource).
      environment: the strategy (`make_environment`).
      bank: N x S x S x 3 uint8 backgrounds; None draws them from BackgroundSource when the
        data config composites.
      progress: show tqdm progress bars.
    """

    STAGE_ORDER = STAGES

    def __init__(
        self,
        config: TrainConfig,
        run_dir: Path,
        source,
        environment: Environment,
        *,
        bank: np.ndarray | None = None,
        progress: bool = True,
    ):
        replicas = environment.strategy.num_replicas_in_sync
        if config.batch_size % replicas:
            raise ValueError(f"batch_size={config.batch_size} does not split over {replicas} replicas")
        self.source = source
        self.replicas = replicas
        keras.utils.set_random_seed(config.seed)  # the initial weights
        model_config = config.model
        if model_config.hourglass_innermost_side < MIN_HOURGLASS_SIDE:
            logger.warning(
                "hourglass_depth=%d pools the %d-pixel heat-map features to %d pixels; below %d the hourglass's "
                "BatchNorm makes a few predictions explode at inference (models.config.MIN_HOURGLASS_SIDE): "
                "use hourglass_depth <= %d",
                model_config.hourglass_depth,
                model_config.heatmap_size,
                model_config.hourglass_innermost_side,
                MIN_HOURGLASS_SIDE,
                int(math.log2(model_config.heatmap_size // MIN_HOURGLASS_SIDE)),
            )
        with environment.strategy.scope():
            model = build_network(config)
        super().__init__(config, run_dir, model, environment, progress=progress)
        template = load_template()
        self.objective = Objective(
            config.loss,
            MeshTopology.from_faces(template.faces, template.num_vertices),
            config.model.image_size,
            mesh_trained=config.architecture != "direct_lbs",
        )
        self.bank = bank
        if config.data.composite and bank is None:
            self.bank = background_bank(config.data, config.model.image_size, config.seed)

    def inference_model(self) -> keras.Model:
        """The trained model in float32 (a copy with the same weights if it trains in bfloat16)."""
        if self.config.precision == "float32" or self.config.architecture != "graph":
            return self.model
        copy = build_network(self.config, precision="float32")
        copy.set_weights(self.model.get_weights())
        return copy

    def recalibrate_batch_norm(self) -> int:
        """`recalibrate_batch_norm` of the model on the first `config.batch_norm.samples` stored
        training images (no augmentation); returns the batches used."""
        c = self.config
        if not c.batch_norm.samples:
            return 0
        dataset = evaluation_dataset(
            self.source,
            c.data,
            image_size=c.model.image_size,
            heatmap_size=c.model.heatmap_size,
            batch_size=c.batch_norm.batch_size,
            limit=c.batch_norm.samples,
        )
        return recalibrate_batch_norm(self.model, (batch["image"] for batch in dataset))

    def _active(self, name: str) -> bool:
        if name == "pose" and not _has_layer(self.model, POSE_REGRESSOR):
            return False
        return super()._active(name)

    def stage_variables(self, name: str) -> list:
        if name == "heatmap":
            return list(self.model.get_layer(HOURGLASS).trainable_variables)
        if name == "pose":
            return list(self.model.get_layer(POSE_REGRESSOR).trainable_variables)
        excluded = set()
        if _has_layer(self.model, POSE_REGRESSOR) and not self.config.stages.full_trains_pose_regressor:
            excluded = {id(v) for v in self.model.get_layer(POSE_REGRESSOR).trainable_variables}
        return [v for v in self.model.trainable_variables if id(v) not in excluded]

    def _batches(self, name: str):
        c = self.config

        def dataset_fn(context: tf.distribute.InputContext):
            return training_dataset(
                self.source,
                c.data,
                image_size=c.model.image_size,
                heatmap_size=c.model.heatmap_size,
                batch_size=context.get_per_replica_batch_size(c.batch_size),
                seed=c.seed,
                start=int(self.samples.numpy()),
                num_shards=context.num_input_pipelines,
                shard_index=context.input_pipeline_id,
                images=name != "pose",
                bank=self.bank,
            )

        return iter(self.env.strategy.distribute_datasets_from_function(dataset_fn))

    def _step_fn(self, name: str):
        strategy = self.env.strategy
        variables = self.stage_variables(name)
        optimizer = self.optimizers[name]
        objective = self.objective
        replicas = float(self.replicas)

        def replica_step(batch):
            with tf.GradientTape() as tape:
                if name == "heatmap":
                    loss, values = objective.heatmap_stage(self.heatmap_model(batch["image"], training=True), batch)
                elif name == "pose":
                    pose = self.model.get_layer(POSE_REGRESSOR)(batch["mesh_uvd"], training=True)
                    loss, values = objective.pose_stage(pose, batch)
                else:
                    loss, values = objective.full_stage(self.model(batch["image"], training=True), batch)
                scaled = loss / replicas  # the sum over replicas is the mean
            gradients = tape.gradient(scaled, variables)
            pairs = [(g, v) for g, v in zip(gradients, variables) if g is not None]
            optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])
            return {"loss": loss / replicas, **{key: value / replicas for key, value in values.items()}}

        # XLA compiles the replica's step; reading the input iterator stays outside it.
        compiled = tf.function(replica_step, jit_compile=True) if self.config.jit_compile else replica_step

        @tf.function
        def step(iterator):
            results = strategy.run(compiled, args=(next(iterator),))
            return {
                key: strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None) for key, value in results.items()
            }

        return step
