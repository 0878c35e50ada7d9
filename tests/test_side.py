"""Hand side from a crop: the cue targets on constructed hands, the classifier, its use by the
detector, and `train.side` end to end on tiny shards (resume, TFLite parity)."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from test_pipeline import write_hand_shards

from handshape_tf.geometry.chirality import palm_side_scores, side_cues
from handshape_tf.inference.detection import HandDetector, SideClassifier, box_from_detection
from handshape_tf.models.detector import DetectorConfig, build_detector
from handshape_tf.models.side import SIDE_OUTPUTS, SideConfig, build_side_classifier
from train import side as train_side


def _hand_up(palm_to_camera: bool, left: bool) -> tuple[np.ndarray, np.ndarray]:
    """21 joints of a flat hand held up 500 mm in front of the camera (fingers up = -y), and
    their pixels (f = 500, c = 0): thumb side at +x for a right palm or a left back."""
    thumb_side = 1.0 if palm_to_camera != left else -1.0
    joints = np.zeros((21, 3))
    joints[:, 2] = 500.0
    for finger, x in zip(range(4), (30.0, 10.0, -10.0, -30.0)):  # index, middle, ring, little
        for k in range(4):
            joints[5 + 4 * finger + k, :2] = thumb_side * x, -80.0 - 25.0 * k
    for k in range(4):  # thumb
        joints[1 + k, :2] = thumb_side * (35.0 + 15.0 * k), -20.0 - 15.0 * k
    # Fingers bend a little towards the palm (the camera when the palm faces it).
    towards = -1.0 if palm_to_camera else 1.0
    joints[[8, 12, 16, 20, 4], 2] += 15.0 * towards
    return joints, 500.0 * joints[:, :2] / joints[:, 2:]


@pytest.mark.parametrize("palm_to_camera", [True, False])
@pytest.mark.parametrize("left", [False, True])
def test_side_cues_of_constructed_hands(palm_to_camera, left):
    joints, uv = _hand_up(palm_to_camera, left)
    assert (palm_side_scores(joints) > 0) == left  # the constructed hand is the side it claims
    cues = side_cues(joints[None], uv[None], np.array([left]))[0]
    # A right hand with its palm to the camera turns counter-clockwise (wrist -> index -> little).
    assert cues.tolist() == [float(left), float(palm_to_camera), float(palm_to_camera != left)]


def test_mirroring_flips_side_and_turn_but_not_the_palm():
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    targets = rng.integers(0, 2, (4, 3)).astype(np.float32)
    flip = np.array([True, False, True, False])
    mirrored, flipped = train_side.mirror(crops, targets, flip)
    np.testing.assert_array_equal(mirrored[0], crops[0, :, ::-1])
    np.testing.assert_array_equal(mirrored[1], crops[1])
    np.testing.assert_array_equal(flipped[flip, 0], 1 - targets[flip, 0])
    np.testing.assert_array_equal(flipped[:, 1], targets[:, 1])
    np.testing.assert_array_equal(flipped[flip, 2], 1 - targets[flip, 2])
    np.testing.assert_array_equal(flipped[~flip], targets[~flip])
    again, back = train_side.mirror(mirrored, flipped, flip)
    np.testing.assert_array_equal(again, crops)
    np.testing.assert_array_equal(back, targets)


def test_jitter_is_the_identity_at_rest_and_a_half_turn_turns_the_crop():
    crops = np.random.default_rng(3).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    rng = np.random.default_rng(0)
    still = train_side.SideTrainConfig(rotation_deg=0.0, scale=(1.0, 1.0), shift=0.0)
    np.testing.assert_array_equal(train_side.jitter(crops, rng, still), crops)
    half_turn = train_side.SideTrainConfig(rotation_deg=180.0, scale=(1.0, 1.0), shift=0.0)

    class HalfTurns:  # rng.uniform(-180, 180, n) -> 180 degrees for every crop
        def uniform(self, low, high, size):
            return np.full(size, 180.0) if low == -180.0 else np.full(size, high, np.float64)

    np.testing.assert_array_equal(train_side.jitter(crops, HalfTurns(), half_turn), crops[:, ::-1, ::-1])


def test_side_classifier_round_trips_and_rejects_a_bad_size(keras_round_trip):
    model = build_side_classifier(SideConfig(image_size=32, width=4, dense_units=8))
    assert model.output["side_logits"].shape[1:] == (len(SIDE_OUTPUTS),)
    keras_round_trip(model, np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype(np.float32), atol=1e-6)
    with pytest.raises(ValueError, match="multiple of 16"):
        SideConfig(image_size=40)


def _brighter_left_half_model(size: int = 32) -> keras.Model:
    """A stand-in side classifier: "left" when the crop's left half is brighter than its right."""
    inputs = keras.Input((size, size, 3), name="image")
    dense = keras.layers.Dense(3, name="side_logits")
    outputs = dense(keras.layers.Flatten()(inputs))
    kernel = np.zeros((size * size * 3, 3), np.float32)
    kernel[:, 0] = np.where(np.arange(size)[None, :, None] < size // 2, 1.0, -1.0).repeat(size, 0).repeat(3, 2).ravel()
    dense.set_weights([kernel / 50.0, np.zeros(3, np.float32)])
    return keras.Model(inputs, {"side_logits": outputs})


def test_side_classifier_averages_a_crop_and_its_mirror_image():
    frame = np.zeros((40, 80, 3), np.uint8)
    frame[:, :20] = 200  # box A's left half is bright
    frame[:, 60:] = 200  # box B's right half is bright
    side = SideClassifier(_brighter_left_half_model())
    box_a, box_b = np.array([0, 0, 40, 40], np.float32), np.array([40, 0, 40, 40], np.float32)
    left = side.left_probabilities(frame, [box_a, box_b])
    assert left[0] > 0.99 and left[1] < 0.01
    # A classifier that answers the same for a crop and its mirror image says nothing: 0.5.
    flat = side.left_probabilities(np.full((40, 80, 3), 90, np.uint8), [box_a])
    np.testing.assert_allclose(flat, 0.5, atol=1e-6)
    assert side.left_probabilities(frame, []).shape == (0,)
    with pytest.raises(FileNotFoundError, match="side classifier model .* does not exist"):
        SideClassifier("/nonexistent/side.tflite")


def test_detector_takes_each_hands_side_from_the_classifier():
    detector_model = build_detector(
        DetectorConfig(input_height=64, input_width=64, widths=(8,) * 5, blocks=(0,) * 5, head_width=8)
    )
    frame = np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    plain = HandDetector(detector_model, score_threshold=0.0).detect(frame, max_hands=3)
    assert plain  # untrained, threshold 0: something is a hand
    side = SideClassifier(_brighter_left_half_model())
    found = HandDetector(detector_model, score_threshold=0.0, side=side).detect(frame, max_hands=3)
    assert [d.box.tolist() for d in found] == [d.box.tolist() for d in plain]
    expected = side.left_probabilities(frame, [box_from_detection(d.box) for d in plain])
    np.testing.assert_allclose([d.left_probability for d in found], expected, rtol=1e-6)
    assert [d.score for d in found] == [d.score for d in plain]


TINY = ["--set", "model.image_size=32", "model.width=4", "model.dense_units=8", "batch_size=4", "log_every=1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("side-data")
    write_hand_shards(root / "train", 8, 64, per_shard=8, seed=0)
    write_hand_shards(root / "heldout", 6, 64, per_shard=8, seed=1)
    return root


def test_train_side_runs_resumes_and_exports(data, tmp_path):
    run = tmp_path / "run"
    argv = ["--run-dir", str(run), "--data", str(data), "--unseen", str(data / "heldout"), *TINY]
    assert train_side.main(["--budget", "0.02", "--tflite", *argv]) == 0
    report = json.loads((run / "report.json").read_text())
    first_steps = report["training"]["steps"]
    assert first_steps >= 1
    for name in ("heldout", "unseen"):
        assert set(report[name]) == set(SIDE_OUTPUTS) and all(0 <= v <= 1 for v in report[name].values())
    assert report["tflite"]["max_abs_difference"] <= 1e-3
    assert (run / "side.keras").is_file() and (run / "side.tflite").is_file()
    # The exported file names sides as the Keras model does.
    keras_side = SideClassifier(run / "side.keras")
    lite_side = SideClassifier(run / "side.tflite")
    frame = np.random.default_rng(2).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    box = [np.array([5, 3, 30, 30], np.float32)]
    np.testing.assert_allclose(
        lite_side.left_probabilities(frame, box), keras_side.left_probabilities(frame, box), atol=1e-4
    )
    # A longer budget on the same folder resumes from the checkpoint.
    budget = str(report["training"]["minutes"] + 0.05)
    assert train_side.main(["--budget", budget, *argv]) == 0
    assert json.loads((run / "report.json").read_text())["training"]["steps"] > first_steps
    # A different model in the same folder is refused; so is a folder without train/ and heldout/.
    assert train_side.main(["--budget", budget, *argv, "model.width=8"]) == 2
    assert train_side.main(["--run-dir", str(tmp_path / "other"), "--data", str(tmp_path)]) == 2
