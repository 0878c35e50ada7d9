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
    every entry so they are measured identically. Its loop, `crop_errors`, is shared with the
    trivial baseline (`mean_baseline_metrics`) and the weakly supervised runs' crop sets
    (`train.weak.evaluation.evaluate_crops`).
The first path is what a user runs on images; the second is what training measures on ready
crops (and the only one for models without uvd outputs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from handshape_tf.data.data_config import DataConfig
from handshape_tf.data.pipeline import evaluation_dataset
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


def output_kind(outputs: dict[str, Any]) -> str:
    """ "uvd" for the paper's network (mesh_uvd / pose_uvd), "xyz" for the Table 2 baselines."""
    return "uvd" if "mesh_uvd" in outputs else "xyz"


def crop_errors(
    predict: Callable[[Any], dict[str, Any]], batches: Iterable[dict[str, Any]], image_size: int, observe=None
):
    """The errors of predictions on batches of ready crops (the one loop of the second path).

    Args:
      predict: images (B x S x S x 3, as the batches hold them) -> outputs with pose_uvd /
        mesh_uvd or pose_xyz / mesh_xyz (B x P x 3).
      batches: dicts with image, intrinsics, root_depth, scale, joints_xyz and, for the mesh
        error, vertices_xyz (numpy arrays or tensors).
      image_size: S.
      observe: optional callable(batch, joints_mm B x J x 3, mesh_mm B x V x 3, kind) called per batch.

    Returns:
      `ErrorAccumulator.summary()`.
    """
    accumulator = ErrorAccumulator()
    for batch in batches:
        outputs = predict(batch["image"])
        kind = output_kind(outputs)
        joints = to_millimetres(outputs[f"pose_{kind}"], batch, image_size, kind)
        mesh = to_millimetres(outputs[f"mesh_{kind}"], batch, image_size, kind)
        truth_mesh = (mesh, np.asarray(batch["vertices_xyz"])) if "vertices_xyz" in batch else ()
        accumulator.update(joints, np.asarray(batch["joints_xyz"]), *truth_mesh)
        if observe is not None:
            observe(batch, joints, mesh, kind)
    return accumulator.summary()


def heldout_metrics(
    model, source, config: DataConfig, *, image_size: int, heatmap_size: int, batch_size: int, limit: int | None = None
) -> dict[str, Any]:
    """Errors of `model` on `source` (module docstring, second path).

    Args:
      model: a keras.Model with outputs mesh_uvd / pose_uvd or mesh_xyz / pose_xyz.
      source: a `data.sources` source of held-out samples (with meshes for the mesh error).
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
    return crop_errors(lambda images: model(images, training=False), dataset, image_size)


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
    sizes = {"image_size": image_size, "heatmap_size": heatmap_size, "batch_size": batch_size}
    baseline = MeanUVDPredictor(image_size)
    for batch in evaluation_dataset(train_source, config, **sizes, limit=fit_samples):
        baseline.update(batch["pose_uvd"].numpy(), batch["mesh_uvd"].numpy())
    dataset = evaluation_dataset(heldout_source, config, **sizes, limit=limit)
    return crop_errors(lambda images: baseline.run(np.asarray(images)), dataset, image_size)
