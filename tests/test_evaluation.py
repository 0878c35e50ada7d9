"""Evaluation: errors, PCK / AUC on hand-computed error sets, Procrustes-aligned errors, the trivial
baseline, evaluate_model end to end on a tiny shard folder, and the CLI on an external layout."""

from __future__ import annotations

import json
import pickle
import re

import cv2
import keras
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from handshape_tf import ModelConfig, build_model
from handshape_tf.assets.template import load_template
from handshape_tf.data.shards import read_dataset, shard_name, write_metadata, write_shard
from handshape_tf.evaluate import main as evaluate_main
from handshape_tf.evaluation import (
    PCK_THRESHOLDS_MM,
    ErrorAccumulator,
    MeanUVDPredictor,
    aligned_point_errors,
    area_under_curve,
    evaluate_model,
    fit_mean_uvd,
    open_evaluation_data,
    pck_curve,
    point_errors,
)
from handshape_tf.geometry.camera import xyz_to_uvd

SIZE = 64  # the tiny preset's input side


# ------------------------------------------------------------------------------------ metrics


def test_point_errors_hand_computed():
    pred = np.array([[[0.0, 0, 0], [3, 4, 0]], [[1, 2, 2], [0, 0, 0]]])
    target = np.zeros((2, 2, 3))
    np.testing.assert_allclose(point_errors(pred, target), [[0, 5], [3, 0]])
    np.testing.assert_allclose(point_errors(pred, target).mean(axis=1), [2.5, 1.5])
    with pytest.raises(ValueError, match=r"pred has shape \(2, 2, 3\) and target \(2, 3, 3\); expected the same"):
        point_errors(pred, np.zeros((2, 3, 3)))


def test_pck_and_auc_all_errors_10mm():
    curve = pck_curve(np.full((5, 21), 10.0))
    np.testing.assert_array_equal(curve, (PCK_THRESHOLDS_MM >= 10.0).astype(float))
    assert area_under_curve(curve) == 1.0
    # 0-50 mm: 0 up to 9 mm, 1 from 10 mm: area 0.5 (ramp 9-10) + 40 over a width of 50.
    assert area_under_curve(curve, low=0.0, high=50.0) == pytest.approx(40.5 / 50)


def test_pck_and_auc_all_errors_35mm():
    curve = pck_curve(np.full((3, 21), 35.0))
    assert curve[34] == 0.0 and curve[35] == 1.0  # error <= threshold counts as correct
    # 20-50 mm: ramp 34-35 mm (area 0.5) + 15 mm at 1, over 30 mm.
    assert area_under_curve(curve) == pytest.approx(15.5 / 30)


def test_pck_is_the_mean_over_keypoints_and_auc_of_a_linear_curve():
    errors = np.zeros((4, 2))
    errors[:, 0] = [5, 15, 25, 60]  # keypoint 0: 1/4 correct at 5 mm, 2/4 at 15, 3/4 at 25 ...
    errors[:, 1] = 100.0  # keypoint 1 never correct
    curve = pck_curve(errors, thresholds=[0, 5, 15, 25, 50])
    np.testing.assert_allclose(curve, [0, 1 / 8, 2 / 8, 3 / 8, 3 / 8])
    thresholds = np.linspace(20, 50, 4)
    assert area_under_curve(np.array([0.0, 1 / 3, 2 / 3, 1.0]), thresholds, 20, 50) == pytest.approx(0.5)
    with pytest.raises(ValueError, match=r"AUC range \[20, 45\] mm; expected low < high, both on the threshold grid"):
        area_under_curve(np.zeros(4), thresholds, 20, 45)
    with pytest.raises(ValueError, match="expected at least 2 increasing values"):
        pck_curve(errors, thresholds=[10, 5])
    with pytest.raises(ValueError, match=r"errors have shape \(0, 21\); expected N x J with N >= 1"):
        pck_curve(np.zeros((0, 21)))


def test_procrustes_aligned_errors_of_a_similar_copy_are_zero():
    rng = np.random.default_rng(0)
    target = rng.normal(size=(2, 21, 3)) * 40
    rotation = Rotation.from_euler("xyz", [30, -50, 70], degrees=True).as_matrix()
    pred = 1.7 * target @ rotation.T + np.array([10.0, -5.0, 300.0])
    assert point_errors(pred, target).min() > 1.0
    np.testing.assert_allclose(aligned_point_errors(pred, target), 0.0, atol=1e-9)
    # A mirrored copy cannot be aligned by a proper rotation.
    assert aligned_point_errors(target * np.array([-1.0, 1, 1]), target).mean() > 1.0


def test_accumulator_summary_with_mesh():
    accumulator = ErrorAccumulator()
    gt = np.random.default_rng(0).normal(size=(2, 21, 3)) * 30
    pred = gt.copy()
    pred[0, :, 0] += 10.0  # sample 0: every joint 10 mm off (a pure shift: 0 after alignment)
    pred[1, 3, 2] += 42.0  # sample 1: one joint 42 mm off
    gt_mesh = np.random.default_rng(1).normal(size=(2, 5, 3))
    mesh = gt_mesh + np.array([0.0, 3.0, 4.0])
    returned = accumulator.update(pred[:1], gt[:1], mesh[:1], gt_mesh[:1])
    np.testing.assert_allclose(returned, [10.0])
    accumulator.update(pred[1:], gt[1:], mesh[1:], gt_mesh[1:])
    summary = accumulator.summary()
    assert summary["count"] == 2 and accumulator.count == 2
    pose = summary["pose"]
    assert pose["mean_mm"] == pytest.approx((21 * 10 + 42) / 42)
    assert pose["median_mm"] == pytest.approx(10.0)  # 20 errors of 0, 21 of 10, one of 42
    assert pose["per_joint_mm"][3] == pytest.approx(26.0) and pose["per_joint_mm"][0] == pytest.approx(5.0)
    assert pose["pck"]["values"][10] == pytest.approx(41 / 42) and pose["pck"]["values"][9] == pytest.approx(20 / 42)
    assert summary["mesh"]["mean_mm"] == pytest.approx(5.0) and summary["mesh"]["aligned_mean_mm"] < 1e-9
    aligned = summary["pose_aligned"]["per_joint_mm"]
    assert aligned[0] < 5.0 and 0.0 < aligned[3] < 26.0  # the shift is removed, the outlier spread
    with pytest.raises(ValueError, match="this batch has no mesh while earlier ones had one"):
        accumulator.update(pred, gt)
    with pytest.raises(ValueError, match=r"no samples were added; expected at least one update\(\)"):
        ErrorAccumulator().summary()


def test_update_uvd_uses_ground_truth_root_depth_and_scale():
    """A point on the optical axis: only its depth changes, by delta_d * s."""
    accumulator = ErrorAccumulator()
    gt = np.zeros((1, 21, 3))
    gt[..., 2] = 500.0
    pred_uvd = np.tile([0.5, 0.5, 0.1], (1, 21, 1))
    errors = accumulator.update_uvd(
        pred_uvd,
        gt,
        [100.0, 100.0, 32.0, 32.0],
        [0, 0, 64, 64],
        [500.0],
        [20.0],
        mesh_uvd=pred_uvd[:, :5],
        vertices_xyz=gt[:, :5],
    )
    np.testing.assert_allclose(errors, [2.0], rtol=1e-6)
    assert accumulator.summary()["mesh"]["mean_mm"] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="mesh_uvd and vertices_xyz must be given together"):
        accumulator.update_uvd(
            pred_uvd, gt, [100.0, 100.0, 32.0, 32.0], [0, 0, 64, 64], [500.0], [20.0], vertices_xyz=gt
        )


def test_trivial_baseline_means_and_backend_outputs():
    baseline = MeanUVDPredictor(SIZE)
    with pytest.raises(ValueError, match=r"has no training targets; call update\(\) first"):
        baseline.mean()
    pose = np.stack([np.full((21, 3), 0.2), np.full((21, 3), 0.6)])
    mesh = np.stack([np.zeros((7, 3)), np.ones((7, 3))])
    baseline.update(pose[:1], mesh[:1])
    baseline.update(pose[1:], mesh[1:])
    mean_pose, mean_mesh = baseline.mean()
    np.testing.assert_allclose(mean_pose, 0.4, rtol=1e-6)
    np.testing.assert_allclose(mean_mesh, 0.5)
    outputs = baseline.run(np.zeros((3, SIZE, SIZE, 3), np.uint8))
    assert outputs["pose_uvd"].shape == (3, 21, 3) and outputs["mesh_uvd"].shape == (3, 7, 3)
    assert outputs["heatmaps"].shape == (3, 1, 1, 21)
    with pytest.raises(ValueError, match=r"mesh_uvd has shape \(1, 8, 3\); expected B x \(7, 3\)"):
        baseline.update(pose[:1], np.zeros((1, 8, 3)))


# -------------------------------------------------------------------------- tiny shard folder


def _sample(rng, template, is_left: bool) -> dict:
    """One shard sample: the posed template (random rotation, 500-700 mm away) and its labels."""
    fx = 90.0
    intrinsics = np.array([fx, fx, SIZE / 2, SIZE / 2], np.float32)
    rotation = Rotation.random(random_state=rng.integers(1 << 31)).as_matrix()
    flip = np.array([-1.0, 1, 1]) if is_left else np.ones(3)
    centre = template.vertices.mean(axis=0)
    place = np.array([rng.uniform(-10, 10), rng.uniform(-10, 10), rng.uniform(500, 700)])
    vertices = ((template.vertices - centre) * flip) @ rotation.T * 1000 + place
    joints = ((template.keypoints - centre) * flip) @ rotation.T * 1000 + place
    uv = np.stack([fx * joints[:, 0] / joints[:, 2] + SIZE / 2, fx * joints[:, 1] / joints[:, 2] + SIZE / 2], 1)
    return {
        "image": rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8),
        "image_rgba": np.zeros((SIZE, SIZE, 4), np.uint8),
        "mask": np.zeros((SIZE, SIZE), bool),
        "depth": np.zeros((SIZE, SIZE), np.float32),
        "joints_uv": uv,
        "joints_xyz": joints,
        "vertices_xyz": vertices,
        "intrinsics": intrinsics,
        "root_depth": joints[0, 2],
        "scale": np.linalg.norm(joints[9] - joints[10]),
        "is_left": is_left,
        "pose": np.zeros(3),
        "shape": np.zeros(2),
        "camera": np.eye(4),
    }


@pytest.fixture(scope="module")
def shard_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shards")
    rng = np.random.default_rng(0)
    template = load_template()
    names = [shard_name(i, 2) for i in range(2)]
    for index, name in enumerate(names):
        write_shard(folder / name, [_sample(rng, template, is_left=(index + k) % 3 == 0) for k in range(3)])
    write_metadata(
        folder,
        {
            "image_size": SIZE,
            "num_vertices": template.num_vertices,
            "pose_size": 3,
            "shape_size": 2,
            "shards": names,
            "num_complete_samples": 6,
        },
    )
    return folder


@pytest.fixture(scope="module")
def tiny_model_path(tmp_path_factory):
    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    build_model(ModelConfig.preset("tiny")).save(path)
    return path


def _check_png(path, min_size):
    image = cv2.imread(str(path))
    assert image is not None and image.shape[0] >= min_size[0] and image.shape[1] >= min_size[1]
    return image


def test_evaluate_model_on_shards_writes_report_and_figures(shard_folder, tiny_model_path, tmp_path):
    model = keras.models.load_model(tiny_model_path)
    report = evaluate_model(
        model, shard_folder, tmp_path / "eval", batch_size=4, sheet_size=4, model_path=tiny_model_path
    )
    saved = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert saved == json.loads(json.dumps(report))
    for key in ("model", "dataset", "protocol", "input_size", "metrics", "mesh_note", "files", "seconds"):
        assert key in saved
    assert saved["model"] == str(tiny_model_path) and saved["input_size"] == SIZE
    assert saved["dataset"]["kind"] == "shards" and saved["dataset"]["evaluated"] == 6
    assert saved["dataset"]["size"] == 6 and saved["dataset"]["path"] == str(shard_folder)
    assert saved["dataset"]["left_hands"] == 2
    metrics = saved["metrics"]
    assert metrics["count"] == 6 and metrics["mesh"] is not None and saved["mesh_note"] is None
    assert len(metrics["pose"]["per_joint_mm"]) == 21 and len(metrics["pose"]["pck"]["values"]) == 51
    assert 0.0 <= metrics["pose"]["auc_20_50"] <= 1.0
    assert metrics["pose_aligned"]["mean_mm"] <= metrics["pose"]["mean_mm"]
    assert "ground-truth root" in saved["protocol"]
    _check_png(saved["files"]["pck_curve"], (300, 400))
    _check_png(saved["files"]["sheet"], (192, 4 * 192))


def test_inference_route_and_training_route_give_the_same_errors(shard_folder, tiny_model_path):
    """`evaluate_model` (HandPredictor: crop, mirror, uvd -> mm) and `train.evaluate.heldout_metrics`
    (the training pipeline's evaluation dataset and `crop_errors`) are two implementations of
    the same protocol: the same model on the same shards scores the same."""
    from handshape_tf.data.data_config import DataConfig
    from handshape_tf.data.sources import ShardSource
    from train.evaluate import heldout_metrics

    model = keras.models.load_model(tiny_model_path)
    inference = evaluate_model(model, shard_folder, batch_size=4, sheet_size=0)["metrics"]
    config = ModelConfig.preset("tiny")
    training = heldout_metrics(
        model,
        ShardSource(shard_folder),
        DataConfig(),
        image_size=config.image_size,
        heatmap_size=config.heatmap_size,
        batch_size=4,
    )
    assert inference["count"] == training["count"] == 6
    for part, key in (
        ("pose", "mean_mm"),
        ("pose_aligned", "mean_mm"),
        ("mesh", "mean_mm"),
        ("mesh", "aligned_mean_mm"),
    ):
        assert training[part][key] == pytest.approx(inference[part][key], rel=1e-3), (part, key)


def test_perfect_and_trivial_predictors_on_shards(shard_folder):
    """A backend returning the exact uvd scores 0 mm (left hands mirrored in and out); the
    mean-uvd baseline does not."""
    baseline = fit_mean_uvd(shard_folder, SIZE)
    assert baseline.count == 6
    trivial = evaluate_model(baseline, shard_folder, sheet_size=0)
    assert trivial["metrics"]["pose"]["mean_mm"] > 5.0 and trivial["metrics"]["mesh"]["mean_mm"] > 5.0
    assert trivial["files"] == {}

    samples = list(open_evaluation_data(shard_folder))

    class Oracle:
        description, image_size, served = "oracle", SIZE, 0

        def run(self, crops):
            batch = samples[self.served : self.served + len(crops)]
            self.served += len(crops)
            stacked = {key: np.stack([s[key] for s in batch]) for key in batch[0] if key != "name"}
            outputs = {"heatmaps": np.zeros((len(crops), 1, 1, 21), np.float32)}
            for key, points in (("pose_uvd", "joints_xyz"), ("mesh_uvd", "vertices_xyz")):
                uvd = np.array(
                    xyz_to_uvd(
                        stacked[points],
                        stacked["intrinsics"],
                        stacked["crop_box"],
                        scale=stacked["scale"],
                        root_depth=stacked["root_depth"],
                    )
                )
                uvd[stacked["is_left"], :, 0] = 1.0 - uvd[stacked["is_left"], :, 0]
                outputs[key] = uvd
            return outputs

    perfect = evaluate_model(Oracle(), shard_folder, batch_size=4)["metrics"]
    assert perfect["count"] == 6
    assert perfect["pose"]["mean_mm"] < 1e-2 and perfect["mesh"]["mean_mm"] < 1e-2
    assert perfect["pose"]["auc_20_50"] == 1.0
    assert perfect["joints_2d"]["mean_percent"] < 1e-3 and perfect["joints_2d"]["off_crop"] == 0


def test_2d_joint_errors_by_hand():
    """Errors in % of the crop box's larger side; a prediction whose joints' centre is over one
    box side from the box's centre counts as off the crop."""
    accumulator = ErrorAccumulator()
    truth = np.zeros((2, 21, 2))
    boxes = np.array([[-20.0, -10.0, 40.0, 20.0], [-5.0, -5.0, 10.0, 10.0]])  # sides 40 and 10
    predicted = truth + np.array([[[4.0, 3.0]], [[0.0, 11.0]]])  # 5 px (12.5%) and 11 px (110%, off)
    accumulator.update(np.ones((2, 21, 3)), np.ones((2, 21, 3)))
    accumulator.update_2d(predicted, truth, boxes)
    joints_2d = accumulator.summary()["joints_2d"]
    np.testing.assert_allclose([joints_2d["mean_percent"], joints_2d["median_percent"]], [61.25, 61.25])
    assert joints_2d["off_crop"] == 1
    with pytest.raises(ValueError, match="expected B x J x 2 twice and B x 4"):
        accumulator.update_2d(predicted, truth, boxes[:1])


# ------------------------------------------------------------------------------ CLI on RHD


@pytest.fixture
def rhd_root(tmp_path):
    """Two RHD evaluation frames (80 x 80, right hands in the mask) and one training frame."""
    rng = np.random.default_rng(3)
    root = tmp_path / "RHD"
    for split, count in (("evaluation", 2), ("training", 1)):
        annotations = {}
        for index in range(count):
            xyz = rng.uniform(-0.04, 0.04, (42, 3)) + [0.0, 0.0, 0.5]
            K = np.array([[80.0, 0, 40], [0, 80, 40], [0, 0, 1]])
            uv = xyz @ K.T
            uv_vis = np.concatenate([uv[:, :2] / uv[:, 2:], np.ones((42, 1))], axis=1)
            annotations[index] = {"xyz": xyz, "uv_vis": uv_vis, "K": K}
            mask = np.zeros((80, 80), np.uint8)
            mask[20:60, 20:60] = 18  # right hand
            for folder, image in (("color", rng.integers(0, 256, (80, 80, 3), dtype=np.uint8)), ("mask", mask)):
                (root / split / folder).mkdir(parents=True, exist_ok=True)
                assert cv2.imwrite(str(root / split / folder / f"{index:05d}.png"), image)
        with open(root / split / f"anno_{split}.pickle", "wb") as stream:
            pickle.dump(annotations, stream)
    return root


def test_cli_on_rhd_evaluation_split(rhd_root, tiny_model_path, tmp_path, capsys):
    out = tmp_path / "report"
    status = evaluate_main(
        [
            "--model",
            str(tiny_model_path),
            "--data",
            str(rhd_root),
            "--out",
            str(out),
            "--batch-size",
            "2",
            "--sheet-size",
            "2",
        ]
    )
    assert status == 0
    printed = capsys.readouterr().out
    assert "samples: 2 (RHDDataset evaluation, 0 left hands)" in printed
    assert "AUC 20-50 mm" in printed and f"report: {out / 'report.json'}" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["dataset"]["split"] == "evaluation" and report["dataset"]["size"] == 2
    assert report["metrics"]["mesh"] is None and "no meshes" in report["mesh_note"]
    _check_png(out / "predictions.png", (192, 2 * 192))
    _check_png(out / "pck_curve.png", (300, 400))


def test_tf_dataset_input_with_limit(shard_folder, tmp_path):
    baseline = MeanUVDPredictor(SIZE)
    baseline.update(np.full((1, 21, 3), 0.5), np.full((1, 1159, 3), 0.5))
    report = evaluate_model(baseline, read_dataset(shard_folder), tmp_path, limit=4, batch_size=3, sheet_size=2)
    assert report["dataset"]["evaluated"] == 4 and report["dataset"]["size"] is None
    assert report["dataset"]["path"] is None and report["model_description"] == MeanUVDPredictor.description
    _check_png(tmp_path / "predictions.png", (192, 2 * 192))
    with pytest.raises(ValueError, match="limit is 0; expected an int >= 1"):
        evaluate_model(baseline, shard_folder, limit=0)
    with pytest.raises(TypeError, match="model is a str; expected a HandPredictor, a keras.Model or a backend"):
        evaluate_model("model.keras", shard_folder)
    with pytest.raises(TypeError, match="data is a list; expected a folder path"):
        evaluate_model(baseline, [1, 2])


def test_every_detected_layout_has_an_evaluation_split():
    from handshape_tf.data.external.detect import LAYOUTS
    from handshape_tf.evaluation.report import _EVALUATION_SPLITS

    assert sorted(_EVALUATION_SPLITS) == sorted(reader.__name__ for reader, _, _ in LAYOUTS)
    splits = {name: kwargs.get("split") for name, kwargs in _EVALUATION_SPLITS.items()}
    assert splits == {
        "PaperSyntheticDataset": "val",
        "PaperRealWorldDataset": None,
        "RHDDataset": "evaluation",
        "STBDataset": "test",
    }


def test_cli_bad_inputs_exit_2(rhd_root, tiny_model_path, tmp_path, capsys):
    not_a_model = tmp_path / "notes.txt"
    not_a_model.write_text("hello")
    model, data = str(tiny_model_path), str(rhd_root)
    cases = [
        ([str(tmp_path / "missing.keras"), data], "model not found: .*missing.keras"),
        ([model, str(tmp_path)], "matches no known dataset layout; expected one of: metadata.json"),
        ([model, str(tmp_path / "nowhere")], "evaluation data folder not found"),
        ([model, data, "--limit", "0"], "--limit is 0; expected an integer >= 1"),
        ([str(not_a_model), data], "cannot load --model .*unsupported model file"),
    ]
    for (model_arg, data_arg, *rest), message in cases:
        with pytest.raises(SystemExit) as stopped:
            evaluate_main(["--model", model_arg, "--data", data_arg, *rest])
        assert stopped.value.code == 2
        assert re.search(message, capsys.readouterr().err), message


# ------------------------------------------------------------------------------ peer models


def _write_mediapipe_like_model(path, landmarks: np.ndarray, presence: float) -> None:
    """A .tflite with MediaPipe's landmark model layout (224 x 224 x 3 float in; 63, 1, 1, 63
    out) that returns fixed landmarks and presence for any image."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec((1, 224, 224, 3), tf.float32)])
    def landmark_model(image):
        zero = 0.0 * tf.reduce_mean(image)
        fixed = tf.constant(landmarks.reshape(1, 63), tf.float32)
        return fixed + zero, tf.fill((1, 1), presence) + zero, tf.fill((1, 1), 0.5) + zero, fixed / 1e3 + zero

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [landmark_model.get_concrete_function()], landmark_model
    )
    path.write_bytes(converter.convert())


def test_mediapipe_peer_landmarks_to_uvd_and_cli(shard_folder, tiny_model_path, tmp_path, capsys):
    """x, y in 224-pixel input units -> u, v in [0, 1]; depth relative to the wrist in units of
    the landmarks' own scale bone (9 -> 10: 40 px across, 30 px deeper: 50 px); the CLI measures
    the peer on the same crops, pose only, and draws its skeleton."""
    from handshape_tf.evaluation.peers import MediaPipeLandmarkBackend, is_mediapipe_landmark_model

    landmarks = np.zeros((21, 3), np.float32)
    landmarks[:, :2] = 112.0
    landmarks[0] = [112.0, 200.0, 5.0]
    landmarks[9] = [112.0, 100.0, 0.0]
    landmarks[10] = [152.0, 100.0, 30.0]
    path = tmp_path / "hand_landmark_like.tflite"
    _write_mediapipe_like_model(path, landmarks, presence=0.75)
    assert is_mediapipe_landmark_model(path)
    assert not is_mediapipe_landmark_model(tiny_model_path) and not is_mediapipe_landmark_model(tmp_path / "none")

    outputs = MediaPipeLandmarkBackend(path).run(np.zeros((2, 224, 224, 3), np.uint8))
    expected = np.full((21, 3), [0.5, 0.5, -0.1], np.float32)  # z 0 - 5 over 50 px
    expected[0] = [0.5, 200 / 224, 0.0]
    expected[9] = [0.5, 100 / 224, -0.1]
    expected[10] = [152 / 224, 100 / 224, (30 - 5) / 50]
    np.testing.assert_allclose(outputs["pose_uvd"], np.stack([expected] * 2), atol=1e-6)
    assert outputs["mesh_uvd"].shape == (2, 0, 3)
    np.testing.assert_allclose(outputs["heatmaps"], 0.75)

    assert evaluate_main(["--model", str(path), "--data", str(shard_folder), "--out", str(tmp_path / "eval")]) == 0
    printed = capsys.readouterr().out
    assert "mesh error: not computed (the model predicts no mesh)" in printed
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["model_description"].startswith("MediaPipe hand landmark model")
    assert report["input_size"] == 224 and report["metrics"]["count"] == 6 and report["metrics"]["mesh"] is None
    assert report["metrics"]["pose"]["mean_mm"] > 5.0  # one fixed hand, not the labels
    assert report["confidence"] == {"mean": pytest.approx(0.75), "above_half": 1.0}
    _check_png(report["files"]["sheet"], (192, 4 * 192))
