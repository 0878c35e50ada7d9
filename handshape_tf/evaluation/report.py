"""Runs a model over an evaluation set and writes the report (JSON), PCK curve and prediction sheet.

Shape shorthand: B batch, S model input side, J = 21 keypoints, V mesh vertices, H x W image.

Protocol (the paper's, Sec. 5.1, after Zimmermann & Brox 2017 and Cai et al. 2018): the
predicted (u, v, d) of each sample is turned into camera-frame millimetres with that sample's
camera intrinsics, crop box and ground-truth root (wrist) depth and hand scale (middle finger
MCP-PIP length), which the protocol assumes known at test time; errors are then measured
against the ground-truth keypoints (and mesh vertices) with no further alignment. "Aligned"
metrics add a per-sample Procrustes similarity alignment. See `metrics` for PCK and AUC.

Data sources: one of our shard folders (`handshape_tf.data.shards`, crops with their
intrinsics), or an external dataset (`handshape_tf.data.external`) opened on its evaluation
split: the paper's synthetic set "val", the paper's real-world set (one split), RHD
"evaluation", STB "test". `handshape_tf.inference.HandPredictor` cuts each image to its
sample's crop box, resizes it to the model input, mirrors left hands into the right-hand frame
the network is trained on and maps the outputs back.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from handshape_tf.data import crop as crop_utils
from handshape_tf.data.sample_params import project
from handshape_tf.evaluation.metrics import ErrorAccumulator, MeanUVDPredictor
from handshape_tf.evaluation.plots import plot_pck_curves, prediction_sheet

logger = logging.getLogger(__name__)

PROTOCOL = (
    "Predicted (u, v, d) are converted to camera-frame millimetres with each sample's camera "
    "intrinsics, crop box and ground-truth root (wrist) depth and hand scale (middle finger "
    "MCP-PIP length), which the paper's protocol assumes known at test time; errors are "
    "Euclidean distances to the ground-truth keypoints / mesh vertices in camera space with no "
    "further alignment. 'aligned' metrics apply a per-sample Procrustes similarity alignment "
    "first. 3D PCK(t) = mean over the 21 keypoints of the fraction of samples with error <= t, "
    "on thresholds 0, 1, ..., 50 mm; AUC = trapezoidal area under the PCK samples in the range "
    "divided by its width (auc_20_50: 20-50 mm)."
)
# Splits opened for evaluation, per external reader (keyword arguments of the reader).
_EVALUATION_SPLITS = {
    "PaperSyntheticDataset": {"split": "val", "with_mesh": False},
    "PaperRealWorldDataset": {},
    "RHDDataset": {"split": "evaluation", "with_depth": False},
    "STBDataset": {"split": "test", "with_depth": False},
}
_MESH_NOTES = {
    "PaperSyntheticDataset": "the paper's synthetic meshes have another topology than our hand template",
    "PaperRealWorldDataset": "the paper's real-world meshes have another topology than our hand template",
}


class EvaluationData:
    """An evaluation set as a sequence of samples in one schema (numpy).

    Each sample: image (H x W x 3 uint8 RGB), intrinsics (4, of `image`), crop_box (4, in
    `image` pixels), joints_xyz (J x 3 mm), joints_uv (J x 2 pixels of `image`), root_depth,
    scale (mm), is_left (bool), name (str) and, when the set has meshes in our template's
    topology, vertices_xyz (V x 3 mm).

    Attributes:
      kind: "shards" or the external reader's class name.
      path: the folder, or None for an in-memory dataset.
      split: the split evaluated ("" when the set has one).
      size: number of samples, None when unknown (a tf.data pipeline).
      mesh_note: why the mesh error is not computed, or None.
    """

    def __init__(
        self,
        samples: Callable[[], Iterator[dict[str, Any]]],
        *,
        kind: str,
        path: Path | None,
        split: str,
        size: int | None,
        mesh_note: str | None,
    ):
        self._samples = samples
        self.kind = kind
        self.path = path
        self.split = split
        self.size = size
        self.mesh_note = mesh_note

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self._samples()

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "path": None if self.path is None else str(self.path),
            "split": self.split,
            "size": self.size,
        }


def _shard_sample(sample: dict[str, Any], index: int) -> dict[str, Any]:
    """One decoded shard sample (numpy) in the `EvaluationData` schema."""
    image = np.asarray(sample["image"])
    height, width = image.shape[:2]
    return {
        "image": image,
        "intrinsics": np.asarray(sample["intrinsics"], np.float32),
        "crop_box": np.array([0.0, 0.0, width, height], np.float32),
        "joints_xyz": np.asarray(sample["joints_xyz"], np.float32),
        "joints_uv": np.asarray(sample["joints_uv"], np.float32),
        "root_depth": np.float32(sample["root_depth"]),
        "scale": np.float32(sample["scale"]),
        "is_left": bool(sample["is_left"]),
        "name": f"sample {index}",
        "vertices_xyz": np.asarray(sample["vertices_xyz"], np.float32),
    }


def _from_tf_dataset(dataset, *, path: Path | None, size: int | None) -> EvaluationData:
    def samples():
        for index, sample in enumerate(dataset.as_numpy_iterator()):
            yield _shard_sample(sample, index)

    return EvaluationData(samples, kind="shards", path=path, split="", size=size, mesh_note=None)


def _from_external(dataset, *, path: Path | None) -> EvaluationData:
    kind = type(dataset).__name__

    def samples():
        for index in range(len(dataset)):
            yield dataset[index]

    return EvaluationData(
        samples,
        kind=kind,
        path=path,
        split=str(getattr(dataset, "split", "")),
        size=len(dataset),
        mesh_note=_MESH_NOTES.get(kind),
    )


def open_evaluation_data(path: str | Path) -> EvaluationData:
    """Opens a shard folder, or an external dataset on its evaluation split.

    Args:
      path: a shard folder (with metadata.json) or the root of one of the external datasets
        (an RHD split folder opens that split).

    Returns:
      EvaluationData.

    Raises:
      FileNotFoundError: `path` is not a directory, or a file the layout needs is missing.
      ValueError: the folder matches no known layout (handshape_tf.data.shards.DatasetError
        for a broken shard folder).
    """
    from handshape_tf.data.external.detect import LAYOUTS
    from handshape_tf.data.external.rhd import SPLITS as RHD_SPLITS
    from handshape_tf.data.external.rhd import RHDDataset
    from handshape_tf.data.shards import METADATA, read_dataset, read_metadata

    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"evaluation data folder not found: {root}")
    if (root / METADATA).is_file():
        metadata = read_metadata(root)
        size = metadata.get("num_complete_samples")  # written by data.synthetic
        return _from_tf_dataset(read_dataset(root), path=root, size=None if size is None else int(size))
    if root.name in RHD_SPLITS and (root / f"anno_{root.name}.pickle").is_file():
        return _from_external(RHDDataset(root.parent, split=root.name, with_depth=False), path=root)
    for reader, _, matches in LAYOUTS:
        if matches(root):
            return _from_external(reader(root, **_EVALUATION_SPLITS[reader.__name__]), path=root)
    known = "; ".join([f"{METADATA} (handshape_tf shards)"] + [description for _, description, _ in LAYOUTS])
    raise ValueError(f"{root} matches no known dataset layout; expected one of: {known}")


def as_evaluation_data(data) -> EvaluationData:
    """EvaluationData from a path, an external reader, a tf.data.Dataset of shard samples
    (unbatched, as `read_dataset` gives) or an EvaluationData (returned as is)."""
    if isinstance(data, EvaluationData):
        return data
    if isinstance(data, (str, Path)):
        return open_evaluation_data(data)
    from handshape_tf.data.external.common import ExternalDataset

    if isinstance(data, ExternalDataset):
        return _from_external(data, path=getattr(data, "root", None))
    import tensorflow as tf

    if isinstance(data, tf.data.Dataset):
        return _from_tf_dataset(data, path=None, size=None)
    raise TypeError(
        f"data is a {type(data).__name__}; expected a folder path, an external dataset reader, a "
        "tf.data.Dataset of shard samples or an EvaluationData"
    )


def as_predictor(model, batch_size: int = 16):
    """A `HandPredictor` for a HandPredictor (returned as is), a keras.Model from `build_model`,
    or a backend (an object with image_size, description and run(crops), e.g. MeanUVDPredictor)."""
    from handshape_tf.inference.predictor import HandPredictor

    if isinstance(model, HandPredictor):
        return model
    if all(hasattr(model, name) for name in ("image_size", "description", "run")):
        return HandPredictor(model, batch_size=batch_size)
    import keras

    if isinstance(model, keras.Model):
        return HandPredictor.from_keras_model(model, batch_size=batch_size)
    raise TypeError(
        f"model is a {type(model).__name__}; expected a HandPredictor, a keras.Model or a backend "
        "with image_size, description and run(crops)"
    )


def _batches(data: EvaluationData, limit: int | None, batch_size: int) -> Iterator[list[dict[str, Any]]]:
    """Lists of up to `batch_size` samples from the first `limit` (None: all) samples of `data`."""
    batch: list[dict[str, Any]] = []
    for position, sample in enumerate(data):
        if limit is not None and position >= limit:
            break
        batch.append(sample)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _sheet_indices(size: int | None, limit: int | None, count: int) -> set[int] | None:
    """Sample indices drawn on the sheet: `count` spread evenly, None (the first `count`) when the
    number of samples is unknown."""
    total = size if limit is None else (limit if size is None else min(size, limit))
    if total is None:
        return None
    return set(np.linspace(0, total - 1, min(count, total)).round().astype(int).tolist())


def _sheet_tile(sample: dict[str, Any], prediction, error_mm: float, side: int) -> dict[str, Any]:
    """The sample's crop box redrawn at side x side, with the prediction and ground truth moved
    into its pixels."""
    image, affine = crop_utils.crop_and_resize(sample["image"], sample["crop_box"], side)

    def to_tile(points):
        return (np.asarray(points, np.float64) @ affine[:, :2].T + affine[:, 2]).astype(np.float32)

    in_tile = dataclasses.replace(
        prediction,
        box=np.array([0, 0, side, side], np.float32),
        joints_uv=to_tile(prediction.joints_uv),
        mesh_uv=to_tile(prediction.mesh_uv),
    )
    return {
        "image": image,
        "prediction": in_tile,
        "gt_joints": to_tile(sample["joints_uv"]),
        "caption": f"{sample['name']}  {error_mm:.1f} mm",
    }


def evaluate_model(
    model,
    data,
    out_dir: str | Path | None = None,
    *,
    limit: int | None = None,
    batch_size: int = 16,
    mirror_left: bool = True,
    sheet_size: int = 16,
    sheet_tile: int = 192,
    model_path: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluates a model on a dataset under the paper's protocol (module docstring).

    Args:
      model: a keras.Model from `build_model`, a `HandPredictor` (any model format) or a
        backend such as `MeanUVDPredictor` (see `as_predictor`).
      data: anything `as_evaluation_data` accepts (folder path, reader, tf.data.Dataset).
      out_dir: where to write report.json, pck_curve.png and predictions.png; None: nowhere.
      limit: evaluate only the first `limit` samples.
      batch_size: images per model call.
      mirror_left: mirror left-hand crops into the right-hand frame the network is trained on
        (and the outputs back), as `HandPredictor` does; False feeds them as they are.
      sheet_size: number of samples drawn on the prediction sheet (0: no sheet).
      sheet_tile: side of each sheet tile, pixels (the crop box is redrawn at that size).
      model_path: recorded in the report and used to label the PCK curve.

    Returns:
      The report (also written as report.json): model, dataset {kind, path, split, size,
      evaluated, left_hands}, protocol, input_size, mirror_left, metrics (see
      `ErrorAccumulator.summary`), confidence {mean, above_half}: each hand's mean per-joint
      confidence (the heat-map peaks; a peer's hand-presence score) averaged, and the share of
      hands above 0.5, mesh_note (why the mesh error is not computed, or None), seconds, files
      {report, pck_curve, sheet}.

    Raises:
      ValueError: no samples, or a bad limit / batch_size / sheet_size.
      TypeError: a model or data of an unsupported type.
    """
    for name, value, low in (("limit", limit, 1), ("batch_size", batch_size, 1), ("sheet_size", sheet_size, 0)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            raise ValueError(f"{name} is {value!r}; expected an int >= {low}")
    predictor = as_predictor(model, batch_size)
    data = as_evaluation_data(data)
    sheet_indices = _sheet_indices(data.size, limit, sheet_size)
    accumulator = ErrorAccumulator()
    tiles: list[dict[str, Any]] = []
    mesh_note = data.mesh_note
    use_mesh: bool | None = None  # decided on the first batch
    counts = {"evaluated": 0, "left_hands": 0}
    confidences: list[float] = []
    start = time.perf_counter()

    def run(batch: list[dict[str, Any]]) -> None:
        nonlocal use_mesh, mesh_note
        stacked = {
            key: np.stack([s[key] for s in batch])
            for key in ("crop_box", "intrinsics", "root_depth", "scale", "joints_xyz")
        }
        predictions = predictor.predict(
            [s["image"] for s in batch],
            boxes=stacked["crop_box"],
            intrinsics=stacked["intrinsics"],
            root_depth=stacked["root_depth"],
            scale=stacked["scale"],
            is_left=[bool(s["is_left"]) and mirror_left for s in batch],
        )
        pred_vertices = np.stack([p.vertices_xyz for p in predictions])  # B x V x 3
        if use_mesh is None:
            if not pred_vertices.shape[1]:
                mesh_note = "the model predicts no mesh"
            elif mesh_note is None and "vertices_xyz" not in batch[0]:
                mesh_note = "the dataset has no meshes"
            elif mesh_note is None and batch[0]["vertices_xyz"].shape != pred_vertices.shape[1:]:
                mesh_note = (
                    f"the dataset's meshes have {len(batch[0]['vertices_xyz'])} vertices, the model "
                    f"predicts {pred_vertices.shape[1]} (another topology)"
                )
            use_mesh = mesh_note is None
        mesh = (pred_vertices, np.stack([s["vertices_xyz"] for s in batch])) if use_mesh else ()
        errors = accumulator.update(np.stack([p.joints_xyz for p in predictions]), stacked["joints_xyz"], *mesh)
        truth_uv = [project(joints, camera) for joints, camera in zip(stacked["joints_xyz"], stacked["intrinsics"])]
        accumulator.update_2d(np.stack([p.joints_uv for p in predictions]), np.stack(truth_uv), stacked["crop_box"])
        for sample, prediction, error in zip(batch, predictions, errors):
            index = counts["evaluated"]
            wanted = len(tiles) < sheet_size if sheet_indices is None else index in sheet_indices
            if wanted:
                tiles.append(_sheet_tile(sample, prediction, error, sheet_tile))
            counts["evaluated"] += 1
            confidences.append(float(np.mean(prediction.confidence)))
            counts["left_hands"] += bool(sample["is_left"])

    total = data.size if limit is None else min(limit, data.size or limit)
    with tqdm(total=total, unit="image", desc="evaluate", disable=None) as progress:
        for batch in _batches(data, limit, batch_size):
            run(batch)
            progress.update(len(batch))
    if not counts["evaluated"]:
        raise ValueError(f"dataset {data.describe()} holds no samples; expected at least one")
    metrics = accumulator.summary()
    report: dict[str, Any] = {
        "model": None if model_path is None else str(model_path),
        "model_description": predictor.backend.description,
        "dataset": {**data.describe(), **counts},
        "protocol": PROTOCOL,
        "input_size": int(predictor.image_size),
        "mirror_left": bool(mirror_left),
        "metrics": metrics,
        "confidence": {"mean": float(np.mean(confidences)), "above_half": float(np.mean(np.array(confidences) > 0.5))},
        "mesh_note": mesh_note,
        "seconds": round(time.perf_counter() - start, 3),
        "files": {},
    }
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        label = Path(model_path).stem if model_path is not None else "model"
        title = " ".join(part for part in ("3D PCK,", data.kind, data.split) if part)
        curves = {label: metrics["pose"], f"{label}, Procrustes-aligned": metrics["pose_aligned"]}
        report["files"]["pck_curve"] = str(plot_pck_curves(curves, out / "pck_curve.png", title=title))
        if tiles:
            report["files"]["sheet"] = str(prediction_sheet(tiles, out / "predictions.png"))
        report["files"]["report"] = str(out / "report.json")
        (out / "report.json").write_text(json.dumps(report, indent=2))
        logger.info("evaluation report written to %s", out / "report.json")
    return report


def fit_mean_uvd(
    data, image_size: int, *, limit: int | None = None, mirror_left: bool = True, batch_size: int = 64
) -> MeanUVDPredictor:
    """The trivial baseline fitted on a training set: mean ground-truth pose and mesh in uvd.

    Args:
      data: anything `as_evaluation_data` accepts (usually the training shard folder); its
        samples need vertices_xyz in our template's topology.
      image_size: crop side S the baseline reports (as the network it stands in for).
      limit: use only the first `limit` samples.
      mirror_left: mirror left hands (u -> 1 - u) into the right-hand frame, as the evaluation
        of a right-hand network does.
      batch_size: samples converted per call.

    Returns:
      A fitted `MeanUVDPredictor`.

    Raises:
      ValueError: no samples, or samples without meshes.
    """
    from handshape_tf.geometry.camera import xyz_to_uvd

    data = as_evaluation_data(data)
    baseline = MeanUVDPredictor(image_size)

    for batch in _batches(data, limit, batch_size):
        if "vertices_xyz" not in batch[0]:
            raise ValueError(f"dataset {data.describe()} has no meshes; expected vertices_xyz to fit the mesh mean")
        stacked = {
            key: np.stack([s[key] for s in batch])
            for key in ("intrinsics", "crop_box", "root_depth", "scale", "joints_xyz", "vertices_xyz")
        }
        left = np.array([bool(s["is_left"]) and mirror_left for s in batch])
        uvd = []
        for points in (stacked["joints_xyz"], stacked["vertices_xyz"]):
            values = np.array(
                xyz_to_uvd(
                    points,
                    stacked["intrinsics"],
                    stacked["crop_box"],
                    scale=stacked["scale"],
                    root_depth=stacked["root_depth"],
                )
            )
            values[left] = crop_utils.mirror_uv(values[left])
            uvd.append(values)
        baseline.update(*uvd)
    if not baseline.count:
        raise ValueError(f"dataset {data.describe()} holds no samples; expected at least one")
    return baseline
