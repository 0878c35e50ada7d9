"""`WeakTrainer`: the training loop of weakly supervised fine-tuning, on `train.loop.StagedTrainer`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from handshape_tf.assets.template import load_template
from handshape_tf.data.augment import photometric_augmentation
from handshape_tf.data.data_config import AugmentConfig
from handshape_tf.data.depth_sensor import nearest_depth
from handshape_tf.losses import MeshTopology
from handshape_tf.models.network import HOURGLASS
from train.batch_norm import batch_norm_layers
from train.loop import StagedTrainer, make_environment
from train.weak import data  # by module: what a test patches on train.weak.data is what runs
from train.weak.config import STAGES, WeakConfig
from train.weak.evaluation import has_uvd_mesh
from train.weak.objective import WeakObjective


def set_batch_norm_trainable(model, trainable: bool) -> list:
    """Sets `trainable` on every BatchNormalization layer of `model` (nested ones too) that does
    not have it yet; returns those layers. A non-trainable Keras 3 BatchNormalization normalises
    with its moving statistics even when called with training=True, and updates nothing."""
    layers = [layer for layer in batch_norm_layers(model) if layer.trainable != trainable]
    for layer in layers:
        layer.trainable = trainable
    return layers


class WeakTrainer(StagedTrainer):
    """Runs the two stages (`STAGES`) on one run folder with `train.loop.StagedTrainer`
    (checkpoints, resume, time budgets, logging as `train.loop.Trainer`'s); on resume the batch
    stream `data.iterate_batches` is rebuilt at the samples consumed.

    Args:
      config: the resolved `WeakConfig`.
      run_dir: the run folder (prepared with `train.checkpoints.prepare_run_dir`).
      model: the model to fine-tune (loaded from the init run).
      crops: the training set (`shards.ShardSamples`).
      pseudo_gt: N x V x 3 pseudo-GT meshes (uvd) of the training samples, or None without L_pM.
      progress: show progress bars.
    """

    STAGE_ORDER = STAGES

    def __init__(
        self,
        config: WeakConfig,
        run_dir: Path,
        model,
        crops,
        pseudo_gt: np.ndarray | None,
        progress: bool = True,
    ):

        if config.loss.pseudo_mesh and pseudo_gt is None:
            raise ValueError("loss.pseudo_mesh is on but no pseudo-GT meshes were given")
        self.crops = crops
        self.pseudo_gt = pseudo_gt
        # Before the optimizers are built: frozen layers have no trainable variables.
        self._frozen = set_batch_norm_trainable(model, False) if config.freeze_batch_norm else []
        super().__init__(config, run_dir, model, make_environment("default"), progress=progress)
        template = load_template()
        kind = "uvd" if has_uvd_mesh(model) else "xyz"
        topology = MeshTopology.from_faces(template.faces, template.num_vertices)
        self.objective = WeakObjective(config, topology, kind)

    def train(self) -> dict[str, Any]:
        """`StagedTrainer.train`; the frozen BatchNorm layers are trainable again afterwards, so
        the saved model is the init run's kind of model."""
        try:
            return super().train()
        finally:
            for layer in self._frozen:
                layer.trainable = True

    def stage_variables(self, name: str) -> list:
        if name == "heatmap":
            return list(self.model.get_layer(HOURGLASS).trainable_variables)
        return list(self.model.trainable_variables)

    def _batches(self, name: str):
        """Numpy batch dicts of the training stream from the current position on (both stages)."""
        depth_size = self.config.loss.depth_size
        for batch in data.iterate_batches(
            self.crops, self.config.batch_size, seed=self.config.seed, start=int(self.samples.numpy())
        ):
            batch["depth"] = nearest_depth(batch.pop("sensor_depth"), depth_size)
            if self.pseudo_gt is not None:
                batch["pseudo_mesh_uvd"] = self.pseudo_gt[batch["index"]]
            yield batch

    def _step_fn(self, name: str):

        variables, optimizer, objective = self.stage_variables(name), self.optimizers[name], self.objective
        photometric, seed = self.config.data.photometric, self.config.seed
        augment = AugmentConfig()
        keys = ("joints_uv", "depth", "intrinsics", "root_depth", "scale")
        keys += ("joints_xyz",) if self.config.loss.pose else ()  # 3D labels only for L_J
        keys += ("pseudo_mesh_uvd",) if self.pseudo_gt is not None else ()

        @tf.function(autograph=False, reduce_retracing=True)
        def step(images, position, batch):
            images = tf.cast(images, tf.float32) / 255.0
            if photometric:
                base = tf.constant([seed, 7919], tf.int64)
                positions = position + tf.range(tf.shape(images, out_type=tf.int64)[0])
                images = tf.map_fn(
                    lambda item: photometric_augmentation(
                        item[0], tf.random.experimental.stateless_fold_in(base, item[1]), augment
                    ),
                    (images, positions),
                    fn_output_signature=tf.float32,
                )
            with tf.GradientTape() as tape:
                if name == "heatmap":
                    loss, values = objective.heatmap_stage(self.heatmap_model(images, training=True), batch)
                else:
                    loss, values = objective.full_stage(self.model(images, training=True), batch)
            gradients = tape.gradient(loss, variables)
            pairs = [(g, v) for g, v in zip(gradients, variables) if g is not None]
            optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])
            return {"loss": loss, **values}

        def run(batches):
            batch = next(batches)
            inputs = {key: tf.constant(batch[key], tf.float32) for key in keys}
            return step(tf.constant(batch["image"]), tf.constant(int(self.samples.numpy()), tf.int64), inputs)

        return run
