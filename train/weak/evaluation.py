"""Evaluation of fine-tuned models on crops: pose errors, mesh plausibility and figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import tensorflow as tf

from handshape_tf.assets.template import SCALE_BONE, load_template
from handshape_tf.losses import MeshTopology
from handshape_tf.rendering import render_normals
from train.evaluate import crop_errors, headline, to_millimetres
from train.weak.config import WeakConfig
from train.weak.data import pad_batch, read_batch


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

    size = config.model.image_size
    count = min(len(crops), config.evaluation.limit or len(crops))
    batch_size = config.evaluation.batch_size
    call = tf.function(lambda images: model(images, training=False), autograph=False)

    def predict(images):  # a fixed batch shape (one trace), the padding cut off again
        outputs = call(tf.constant(pad_batch(images, batch_size), tf.float32) / 255.0)
        return tf.nest.map_structure(lambda tensor: tensor[: len(images)], outputs)

    plausibility, truth = MeshPlausibility(), MeshPlausibility()

    def observe(batch, joints, mesh, kind):
        if "vertices_xyz" in batch:
            truth.update(batch["vertices_xyz"], batch["scale"])
        if kind == "uvd":
            plausibility.update(mesh, batch["scale"])

    batches = (
        read_batch(crops, np.arange(start, min(start + batch_size, count))) for start in range(0, count, batch_size)
    )
    metrics = crop_errors(predict, batches, size, observe)
    return {
        "metrics": metrics,
        "headline": headline(metrics),
        "plausibility": plausibility.summary(),
        "ground_truth_plausibility": truth.summary(),
    }


def predicted_meshes(model, crops, count: int, config: WeakConfig) -> np.ndarray:
    """count x V x 3 meshes (mm) the model predicts for the first `count` samples of `crops`."""

    batch = read_batch(crops, np.arange(min(count, len(crops))))
    outputs = model(tf.constant(batch["image"], tf.float32) / 255.0, training=False)
    return to_millimetres(outputs["mesh_uvd"], batch, config.model.image_size, "uvd")


def has_uvd_mesh(model) -> bool:
    """Whether the model outputs mesh_uvd (the paper's network; not Baseline 1)."""
    return "mesh_uvd" in model.output


def _shaded(vertices_mm: np.ndarray, faces: np.ndarray, intrinsics: np.ndarray, side: int) -> np.ndarray:
    """side x side x 3 uint8 grey shading (light from the camera) of meshes B x V x 3."""

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
