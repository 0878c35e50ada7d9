"""Pose and mesh errors, 3D PCK and AUC (numpy), an accumulator and the trivial baseline.

Shape shorthand: B batch, N samples, P points, J = 21 keypoints, V mesh vertices, T thresholds.

Errors are Euclidean distances in millimetres between corresponding points in the camera frame.
"Aligned" (PA) errors are measured after moving each predicted point set onto its ground truth
by the best similarity transform (rotation, isotropic scale, translation; Procrustes, see
`handshape_tf.geometry.alignment`).

3D PCK and AUC (the convention of Zimmermann & Brox 2017's evaluation code, used by the methods
the paper compares with on STB and RHD; stated exactly because published numbers depend on it):
  * PCK(t) of keypoint j = fraction of samples whose error for j is <= t; the PCK curve is the
    mean of the 21 per-keypoint PCKs (with every keypoint labelled in every sample, as in all
    our datasets, this equals the fraction of all (sample, keypoint) errors <= t).
  * The curve is sampled on a fixed threshold grid: `PCK_THRESHOLDS_MM` = 0, 1, ..., 50 mm.
  * AUC over [a, b] = trapezoidal area under the PCK samples at the grid thresholds in [a, b]
    divided by (b - a), so a perfect predictor scores 1. The headline number is the AUC over
    20-50 mm (31 thresholds, 1 mm apart). Zimmermann's script samples 20 thresholds over
    0-50 mm (np.linspace(0, 50, 20)), and some papers take the 20-50 mm part of that coarser
    grid (21.05 ... 50 mm): expect differences in the third decimal against those numbers.
Mean and median: over all (sample, keypoint) errors for the pose; for the mesh, the mean is
over all vertex errors and the median over the per-sample mean vertex errors.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from handshape_tf.geometry.alignment import procrustes_align_np

PCK_THRESHOLDS_MM = np.linspace(0.0, 50.0, 51)
AUC_RANGE_MM = (20.0, 50.0)


def _check_points(pred, target) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, np.float64)
    target = np.asarray(target, np.float64)
    if pred.ndim < 2 or pred.shape[-1] != 3 or pred.shape != target.shape:
        raise ValueError(
            f"pred has shape {pred.shape} and target {target.shape}; expected the same shape B x P x 3 (or P x 3)"
        )
    return pred, target


def point_errors(pred, target) -> np.ndarray:
    """Euclidean distance between corresponding points.

    Args:
      pred: B x P x 3 (or P x 3) predicted points, mm.
      target: same shape, ground truth.

    Returns:
      B x P (or P) float64 errors, mm.

    Raises:
      ValueError: shapes differ or the last dimension is not 3.
    """
    pred, target = _check_points(pred, target)
    return np.linalg.norm(pred - target, axis=-1)


def aligned_point_errors(pred, target) -> np.ndarray:
    """Point errors after Procrustes (similarity) alignment of each point set to its target.

    Args:
      pred: B x P x 3 (or P x 3) predicted points, mm.
      target: same shape, ground truth.

    Returns:
      B x P (or P) float64 errors, mm.

    Raises:
      ValueError: shapes differ or the last dimension is not 3.
    """
    pred, target = _check_points(pred, target)
    return point_errors(procrustes_align_np(pred, target), target)


def _check_thresholds(thresholds) -> np.ndarray:
    thresholds = np.asarray(thresholds, np.float64)
    if thresholds.ndim != 1 or thresholds.size < 2 or not np.all(np.diff(thresholds) > 0):
        raise ValueError(
            f"thresholds {np.ravel(thresholds)[:8].tolist()} (shape {thresholds.shape}); expected "
            "at least 2 increasing values"
        )
    return thresholds


def pck_curve(errors, thresholds=PCK_THRESHOLDS_MM) -> np.ndarray:
    """3D PCK at each threshold: the mean over keypoints of the fraction of errors <= t.

    Args:
      errors: N x J per-sample, per-keypoint errors, mm (N >= 1).
      thresholds: T increasing thresholds, mm.

    Returns:
      T float64 values in [0, 1].

    Raises:
      ValueError: errors not N x J with N >= 1, or thresholds not increasing.
    """
    errors = np.asarray(errors, np.float64)
    if errors.ndim != 2 or errors.shape[0] == 0:
        raise ValueError(f"errors have shape {errors.shape}; expected N x J with N >= 1")
    thresholds = _check_thresholds(thresholds)
    per_keypoint = np.mean(errors[np.newaxis] <= thresholds[:, np.newaxis, np.newaxis], axis=1)  # T x J
    return per_keypoint.mean(axis=1)


def area_under_curve(
    pck, thresholds=PCK_THRESHOLDS_MM, low: float = AUC_RANGE_MM[0], high: float = AUC_RANGE_MM[1]
) -> float:
    """Normalised area under a PCK curve between two thresholds of its grid.

    Args:
      pck: T PCK values at `thresholds`.
      thresholds: T increasing thresholds, mm.
      low, high: the range; both must be thresholds of the grid (within 1e-6 mm).

    Returns:
      trapezoidal area of the samples in [low, high] divided by (high - low), in [0, 1].

    Raises:
      ValueError: shapes differ, thresholds not increasing, or low / high not on the grid or
        not low < high.
    """
    thresholds = _check_thresholds(thresholds)
    pck = np.asarray(pck, np.float64)
    if pck.shape != thresholds.shape:
        raise ValueError(f"pck has shape {pck.shape}; expected {thresholds.shape} like thresholds")
    on_grid = [np.flatnonzero(np.abs(thresholds - bound) <= 1e-6) for bound in (low, high)]
    if not (low < high and all(index.size for index in on_grid)):
        raise ValueError(
            f"AUC range [{low}, {high}] mm; expected low < high, both on the threshold grid "
            f"{thresholds[0]:g}..{thresholds[-1]:g} mm ({thresholds.size} values)"
        )
    first, last = on_grid[0][0], on_grid[1][0]
    x, y = thresholds[first : last + 1], pck[first : last + 1]
    return float(np.sum(0.5 * (y[1:] + y[:-1]) * np.diff(x)) / (high - low))


def _error_summary(errors: np.ndarray, thresholds: np.ndarray) -> dict[str, Any]:
    """Mean, median, per-keypoint means, PCK curve and AUCs of N x J errors."""
    curve = pck_curve(errors, thresholds)
    return {
        "mean_mm": float(errors.mean()),
        "median_mm": float(np.median(errors)),
        "per_joint_mm": errors.mean(axis=0).tolist(),
        "pck": {"thresholds_mm": thresholds.tolist(), "values": curve.tolist()},
        "auc_20_50": area_under_curve(curve, thresholds, *AUC_RANGE_MM),
        "auc_0_50": area_under_curve(curve, thresholds, 0.0, 50.0),
    }


class ErrorAccumulator:
    """Collects pose (and mesh) errors batch by batch and summarises them.

    Args:
      thresholds: T increasing PCK thresholds, mm; must include 0, 20 and 50 (the AUC ranges).

    Example:
      >>> accumulator = ErrorAccumulator()
      >>> accumulator.update(pred_joints_mm, gt_joints_mm)      # B x 21 x 3 each, per batch
      >>> accumulator.summary()["pose"]["auc_20_50"]
    """

    def __init__(self, thresholds=PCK_THRESHOLDS_MM):
        self.thresholds = _check_thresholds(thresholds)
        missing = [b for b in (0.0, *AUC_RANGE_MM) if not np.any(np.abs(self.thresholds - b) <= 1e-6)]
        if missing:
            raise ValueError(f"thresholds lack {missing} mm; expected a grid containing 0, 20 and 50 mm")
        self._pose: list[np.ndarray] = []  # B x J each
        self._pose_aligned: list[np.ndarray] = []
        self._mesh: list[np.ndarray] = []  # B each: per-sample mean vertex error
        self._mesh_aligned: list[np.ndarray] = []
        self._joints_2d: list[np.ndarray] = []  # B x J each: % of the crop box
        self._centre_2d: list[np.ndarray] = []  # B each: predicted joints' centre from the box's, box sides

    def update(self, pred_joints, gt_joints, pred_vertices=None, gt_vertices=None) -> np.ndarray:
        """Adds a batch.

        Args:
          pred_joints: B x J x 3 predicted keypoints, camera frame, mm.
          gt_joints: B x J x 3 ground truth.
          pred_vertices: optional B x V x 3 predicted mesh, mm (with gt_vertices).
          gt_vertices: optional B x V x 3 ground-truth mesh in the same vertex order.

        Returns:
          B float64 per-sample mean keypoint errors, mm.

        Raises:
          ValueError: shapes differ, are not B x P x 3, only one mesh is given, or the mesh is
            given for some batches and not others.
        """
        pred_joints, gt_joints = _check_points(pred_joints, gt_joints)
        if pred_joints.ndim != 3:
            raise ValueError(f"joints have shape {pred_joints.shape}; expected B x J x 3")
        if (pred_vertices is None) != (gt_vertices is None):
            raise ValueError("pred_vertices and gt_vertices must be given together (or neither)")
        with_mesh = pred_vertices is not None
        if self._pose and with_mesh != bool(self._mesh):
            raise ValueError(
                f"this batch {'has' if with_mesh else 'has no'} mesh while earlier ones "
                f"{'had none' if with_mesh else 'had one'}; expected the same for every batch"
            )
        if with_mesh:
            pred_vertices, gt_vertices = _check_points(pred_vertices, gt_vertices)
            if pred_vertices.ndim != 3 or len(pred_vertices) != len(pred_joints):
                raise ValueError(
                    f"vertices have shape {pred_vertices.shape}; expected {len(pred_joints)} x V x 3 "
                    "(the joints' batch size)"
                )
        errors = point_errors(pred_joints, gt_joints)
        self._pose.append(errors)
        self._pose_aligned.append(aligned_point_errors(pred_joints, gt_joints))
        if with_mesh:
            self._mesh.append(point_errors(pred_vertices, gt_vertices).mean(axis=1))
            self._mesh_aligned.append(aligned_point_errors(pred_vertices, gt_vertices).mean(axis=1))
        return errors.mean(axis=1)

    def update_2d(self, pred_uv, gt_uv, boxes) -> None:
        """Adds a batch's 2D joints (the image the network saw a crop of), measured in % of the
        crop box's larger side so that sets of any image size compare.

        Args:
          pred_uv: B x J x 2 predicted joints, image pixels.
          gt_uv: B x J x 2 ground truth (the 3D joints projected with the image's intrinsics).
          boxes: B x 4 crop boxes (x0, y0, w, h) the network saw, image pixels.
        """
        pred_uv, gt_uv = np.asarray(pred_uv, np.float64), np.asarray(gt_uv, np.float64)
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        if pred_uv.ndim != 3 or pred_uv.shape[-1] != 2 or pred_uv.shape != gt_uv.shape or len(boxes) != len(pred_uv):
            raise ValueError(
                f"pred_uv {pred_uv.shape}, gt_uv {gt_uv.shape} and boxes {boxes.shape}; expected B x J x 2 twice "
                "and B x 4"
            )
        side = boxes[:, 2:].max(axis=1)
        self._joints_2d.append(100.0 * np.linalg.norm(pred_uv - gt_uv, axis=-1) / side[:, None])
        centre = boxes[:, :2] + boxes[:, 2:] / 2
        self._centre_2d.append(np.linalg.norm(pred_uv.mean(axis=1) - centre, axis=-1) / side)

    def update_uvd(
        self, pose_uvd, joints_xyz, intrinsics, crop_box, root_depth, scale, mesh_uvd=None, vertices_xyz=None
    ) -> np.ndarray:
        """Adds a batch of predictions in uvd, converted to camera mm with the ground-truth root
        depth and scale (the paper's protocol), e.g. for a validation pass during training.

        Args:
          pose_uvd: B x J x 3 predicted keypoints in uvd.
          joints_xyz: B x J x 3 ground-truth keypoints, camera frame, mm.
          intrinsics: B x 4 (or 4) fx, fy, cx, cy of the image the crop box refers to.
          crop_box: B x 4 (or 4) x0, y0, w, h; (0, 0, S, S) for an S x S crop with its own
            intrinsics.
          root_depth: B ground-truth wrist depths, mm.
          scale: B ground-truth hand scales, mm.
          mesh_uvd: optional B x V x 3 predicted vertices in uvd (with vertices_xyz).
          vertices_xyz: optional B x V x 3 ground-truth vertices, mm.

        Returns:
          B float64 per-sample mean keypoint errors, mm.

        Raises:
          ValueError: as `update`, or bad camera arguments (see `geometry.camera.uvd_to_xyz`).
        """
        from handshape_tf.geometry.camera import uvd_to_xyz

        if (mesh_uvd is None) != (vertices_xyz is None):
            raise ValueError("mesh_uvd and vertices_xyz must be given together (or neither)")

        def to_mm(uvd):
            return np.asarray(uvd_to_xyz(uvd, intrinsics, crop_box, root_depth, scale), np.float64)

        mesh = () if mesh_uvd is None else (to_mm(mesh_uvd), vertices_xyz)
        return self.update(to_mm(pose_uvd), joints_xyz, *mesh)

    @property
    def count(self) -> int:
        """Number of samples added."""
        return sum(len(errors) for errors in self._pose)

    @property
    def has_mesh(self) -> bool:
        return bool(self._mesh)

    def pose_errors(self, aligned: bool = False) -> np.ndarray:
        """N x J float64 per-sample, per-keypoint errors, mm (aligned: after Procrustes)."""
        parts = self._pose_aligned if aligned else self._pose
        return np.concatenate(parts) if parts else np.zeros((0, 0))

    def summary(self) -> dict[str, Any]:
        """The metrics of everything added so far.

        Returns:
          {"count": N,
           "pose": {mean_mm, median_mm, per_joint_mm (J), pck {thresholds_mm, values},
                    auc_20_50, auc_0_50},
           "pose_aligned": the same after Procrustes alignment,
           "mesh": {mean_mm, median_mm, aligned_mean_mm, aligned_median_mm} or None,
           "joints_2d": {mean_percent, median_percent (of the crop box's larger side, over all
                         joints), off_crop (samples whose predicted joints' centre lies over one
                         box side from the box's centre: a prediction that exploded)}
                        or None when `update_2d` was not called}

        Raises:
          ValueError: nothing was added.
        """
        if not self._pose:
            raise ValueError("no samples were added; expected at least one update() before summary()")
        mesh = None
        if self._mesh:
            per_sample, aligned = np.concatenate(self._mesh), np.concatenate(self._mesh_aligned)
            mesh = {
                "mean_mm": float(per_sample.mean()),
                "median_mm": float(np.median(per_sample)),
                "aligned_mean_mm": float(aligned.mean()),
                "aligned_median_mm": float(np.median(aligned)),
            }
        joints_2d = None
        if self._joints_2d:
            errors = np.concatenate(self._joints_2d)
            joints_2d = {
                "mean_percent": float(errors.mean()),
                "median_percent": float(np.median(errors)),
                "off_crop": int(np.sum(np.concatenate(self._centre_2d) > 1.0)),
            }
        return {
            "count": self.count,
            "pose": _error_summary(self.pose_errors(), self.thresholds),
            "pose_aligned": _error_summary(self.pose_errors(aligned=True), self.thresholds),
            "mesh": mesh,
            "joints_2d": joints_2d,
        }


class MeanUVDPredictor:
    """The trivial predictor: the mean training pose and mesh in uvd, whatever the image.

    Fit it on training targets with `update`; it is a backend of
    `handshape_tf.inference.HandPredictor` (image_size, description, run), so `evaluate_model`
    runs it like a network: converted to camera mm with each test sample's camera, root depth
    and scale, its error is what a network must beat to have learned anything from the image.

    Args:
      image_size: side S of the crops it pretends to take.

    Example:
      >>> baseline = MeanUVDPredictor(128)
      >>> baseline.update(train_pose_uvd, train_mesh_uvd)     # B x J x 3, B x V x 3, per batch
      >>> evaluate_model(baseline, "data/val")["metrics"]["pose"]["mean_mm"]
    """

    description = "mean training pose and mesh (trivial baseline)"

    def __init__(self, image_size: int):
        if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 1:
            raise ValueError(f"image_size is {image_size!r}; expected a positive int")
        self.image_size = int(image_size)
        self._pose_sum: np.ndarray | None = None
        self._mesh_sum: np.ndarray | None = None
        self._count = 0

    def update(self, pose_uvd, mesh_uvd) -> None:
        """Adds a batch of training targets.

        Args:
          pose_uvd: B x J x 3 keypoints in uvd (right-hand frame: mirror left hands first if
            the predictor mirrors them).
          mesh_uvd: B x V x 3 mesh vertices in uvd.

        Raises:
          ValueError: not B x P x 3, batch sizes that differ, or point counts that differ from
            earlier batches.
        """
        pose_uvd = np.asarray(pose_uvd, np.float64)
        mesh_uvd = np.asarray(mesh_uvd, np.float64)
        for name, value, total in (("pose_uvd", pose_uvd, self._pose_sum), ("mesh_uvd", mesh_uvd, self._mesh_sum)):
            if value.ndim != 3 or value.shape[-1] != 3:
                raise ValueError(f"{name} has shape {value.shape}; expected B x P x 3")
            if total is not None and value.shape[1:] != total.shape:
                raise ValueError(f"{name} has shape {value.shape}; expected B x {total.shape} like earlier batches")
        if len(pose_uvd) != len(mesh_uvd):
            raise ValueError(f"pose_uvd has {len(pose_uvd)} samples and mesh_uvd {len(mesh_uvd)}; expected the same")
        self._pose_sum = pose_uvd.sum(axis=0) + (0.0 if self._pose_sum is None else self._pose_sum)
        self._mesh_sum = mesh_uvd.sum(axis=0) + (0.0 if self._mesh_sum is None else self._mesh_sum)
        self._count += len(pose_uvd)

    @property
    def count(self) -> int:
        """Number of training samples added."""
        return self._count

    def mean(self) -> tuple[np.ndarray, np.ndarray]:
        """(J x 3, V x 3) float32 mean pose and mesh in uvd."""
        if not self._count:
            raise ValueError("MeanUVDPredictor has no training targets; call update() first")
        return (self._pose_sum / self._count).astype(np.float32), (self._mesh_sum / self._count).astype(np.float32)

    def run(self, crops) -> dict[str, np.ndarray]:
        """B x S x S x 3 crops (ignored) -> heatmaps B x 1 x 1 x J zeros, mesh_uvd, pose_uvd."""
        pose, mesh = self.mean()
        batch = len(crops)
        return {
            "heatmaps": np.zeros((batch, 1, 1, len(pose)), np.float32),
            "mesh_uvd": np.repeat(mesh[np.newaxis], batch, axis=0),
            "pose_uvd": np.repeat(pose[np.newaxis], batch, axis=0),
        }
