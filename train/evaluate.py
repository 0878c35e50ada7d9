"""Held-out evaluation of trained runs with `handshape_tf.evaluation` (paper Sec. 5.1 protocol).

Shape shorthand: B batch, J = 21 keypoints, V mesh vertices, S input side.

Two paths, the same metrics (`ErrorAccumulator`: mean / median errors in mm, Procrustes-aligned
(PA) errors, 3D PCK and AUC over 20-50 mm) under the same protocol (ground-truth root depth and
hand scale given, camera-frame millimetres):
  * `evaluate_model` of `handshape_tf.evaluation.report` for the paper's network: it runs the
    model through `HandPredictor` (crop, mirror left hands, uvd -> mm) and writes its
    report.json, pck_curve.png and predictions.png; the trivial baseline (mean training pose and
    mesh in uvd, `fit_mean_uvd`) goes through the same function.
  * `heldout_metrics` for any model of `train.loop.build_network`, including the Table 2
    baselines whose outputs are root-relative, scale-normalised camera coordinates (not uvd,
    which `HandPredictor` needs): it reads the held-out set through the training pipeline
    without augmentation (`data.pipeline.evaluation_dataset`, left hands mirrored) and converts
    predictions to mm with each sample's camera, root and scale. The ablation table uses it for
    every entry so they are measured identically.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from handshape_tf.data.pipeline import DataConfig, evaluation_dataset
from handshape_tf.evaluation.metrics import ErrorAccumulator, MeanUVDPredictor
from handshape_tf.geometry.camera import uvd_to_xyz


def headline(metrics: dict[str, Any]) -> dict[str, float | None]:
    """The numbers worth printing from an `ErrorAccumulator.summary()`."""
    mesh = metrics.get("mesh") or {}
    return {
        "mesh_error_mm": mesh.get("mean_mm"),
        "mesh_error_pa_mm": mesh.get("aligned_mean_mm"),
        "pose_error_mm": metrics["pose"]["mean_mm"],
        "pose_error_pa_mm": metrics["pose_aligned"]["mean_mm"],
        "auc_20_50": metrics["pose"]["auc_20_50"],
        "auc_20_50_pa": metrics["pose_aligned"]["auc_20_50"],
        "samples": metrics["count"],
    }


def to_millimetres(points, batch, image_size: int, kind: str) -> np.ndarray:
    """Predicted points -> camera-frame mm with the batch's camera, root depth and scale.

    Args:
      points: B x P x 3 uvd (kind "uvd") or root-relative scale-normalised xyz (kind "xyz").
      batch: pipeline element (intrinsics, root_depth, scale, joints_xyz).
      image_size: S (crop box = the whole S x S crop).
      kind: "uvd" or "xyz".

    Returns:
      B x P x 3 float32 millimetres.
    """
    if kind == "uvd":
        box = np.array([0.0, 0.0, image_size, image_size], np.float32)
        return uvd_to_xyz(points, batch["intrinsics"], box, batch["root_depth"], batch["scale"]).numpy()
    root = np.asarray(batch["joints_xyz"])[:, :1]
    return np.asarray(points) * np.asarray(batch["scale"])[:, None, None] + root


def _output_kind(outputs: dict[str, Any]) -> str:
    return "uvd" if "mesh_uvd" in outputs else "xyz"


def heldout_metrics(
    model, source, config: DataConfig, *, image_size: int, heatmap_size: int, batch_size: int, limit: int | None = None
) -> dict[str, Any]:
    """Errors of `model` on `source` (module docstring, second path).

    Args:
      model: a keras.Model with outputs mesh_uvd / pose_uvd or mesh_xyz / pose_xyz.
      source: a `data.pipeline` source of held-out samples (with meshes for the mesh error).
      config: data options (resize, heat-map sigma, parallelism).
      image_size, heatmap_size: the model's S and M.
      batch_size: images per model call.
      limit: evaluate the first `limit` samples only.

    Returns:
      `ErrorAccumulator.summary()`.
    """
    dataset = evaluation_dataset(
        source, config, image_size=image_size, heatmap_size=heatmap_size, batch_size=batch_size, limit=limit
    )
    accumulator = ErrorAccumulator()
    for batch in dataset:
        outputs = model(batch["image"], training=False)
        kind = _output_kind(outputs)
        joints = to_millimetres(outputs[f"pose_{kind}"], batch, image_size, kind)
        mesh = ()
        if "vertices_xyz" in batch:
            mesh = (to_millimetres(outputs[f"mesh_{kind}"], batch, image_size, kind), batch["vertices_xyz"].numpy())
        accumulator.update(joints, batch["joints_xyz"].numpy(), *mesh)
    return accumulator.summary()


def mean_baseline_metrics(
    train_source,
    heldout_source,
    config: DataConfig,
    *,
    image_size: int,
    heatmap_size: int,
    batch_size: int,
    fit_samples: int,
    limit: int | None = None,
) -> dict[str, Any]:
    """The trivial baseline through the same path: mean training uvd pose and mesh (fitted on
    `fit_samples` training samples, no augmentation), converted with each held-out camera.

    Both sources need meshes (`MeanUVDPredictor` averages meshes too)."""
    baseline = MeanUVDPredictor(image_size)
    for batch in evaluation_dataset(
        train_source, config, image_size=image_size, heatmap_size=heatmap_size, batch_size=batch_size, limit=fit_samples
    ):
        baseline.update(batch["pose_uvd"].numpy(), batch["mesh_uvd"].numpy())
    accumulator = ErrorAccumulator()
    for batch in evaluation_dataset(
        heldout_source, config, image_size=image_size, heatmap_size=heatmap_size, batch_size=batch_size, limit=limit
    ):
        prediction = baseline.run(batch["image"].numpy())
        joints = to_millimetres(prediction["pose_uvd"], batch, image_size, "uvd")
        mesh = ()
        if "vertices_xyz" in batch:
            mesh = (to_millimetres(prediction["mesh_uvd"], batch, image_size, "uvd"), batch["vertices_xyz"].numpy())
        accumulator.update(joints, batch["joints_xyz"].numpy(), *mesh)
    return accumulator.summary()
