"""Tracking: One Euro filter, crop updates from constructed joints, the detect-then-track loop."""

from __future__ import annotations

from types import SimpleNamespace

import keras
import numpy as np
import pytest

from handshape_tf.inference.detection import box_from_detection
from handshape_tf.inference.tracking import (
    HandTracker,
    OneEuroFilter,
    box_from_joints,
    next_box,
    overlaps_frame,
)


def _joints(centre, extent):
    """21 constructed joints spread over a box of `extent` around `centre`."""
    grid = np.linspace(-0.5, 0.5, 21)
    return np.stack([centre[0] + extent[0] * grid, centre[1] + extent[1] * (4 * grid[::-1] ** 2 - 0.5)], 1)


def test_one_euro_filter_by_hand():
    smooth = OneEuroFilter(min_cutoff=1.0, beta=0.0, d_cutoff=1.0)
    assert smooth(np.array([0.0, 2.0]), 0.0).tolist() == [0.0, 2.0]  # the first sample passes
    # beta = 0: a low-pass at 1 Hz; alpha = 1 / (1 + tau / dt), tau = 1 / (2 pi), dt = 0.1 s.
    alpha = 1.0 / (1.0 + (1.0 / (2 * np.pi)) / 0.1)
    np.testing.assert_allclose(smooth(np.array([1.0, 2.0]), 0.1), [alpha, 2.0])
    np.testing.assert_allclose(smooth(np.array([1.0, 2.0]), 0.2), [alpha + alpha * (1 - alpha), 2.0])
    with pytest.raises(ValueError, match="increasing"):
        smooth(np.array([1.0, 2.0]), 0.2)
    with pytest.raises(ValueError, match="shape"):
        smooth(np.zeros(3), 0.3)
    with pytest.raises(ValueError, match="frequency"):
        OneEuroFilter(min_cutoff=0.0)


def test_one_euro_filter_reduces_jitter_and_speed_reduces_lag():
    rng = np.random.default_rng(0)
    times = np.arange(120) / 30.0
    noisy = 100.0 + rng.normal(0, 2.0, (120, 21, 2))
    smooth = OneEuroFilter(min_cutoff=1.0, beta=0.0)
    filtered = np.array([smooth(x, t) for x, t in zip(noisy, times)])
    assert filtered[30:].std() < 0.5 * noisy[30:].std()
    ramp = 300.0 * times  # 300 px/s
    lag = {}
    for beta in (0.0, 0.05):
        f = OneEuroFilter(min_cutoff=1.0, beta=beta)
        out = np.array([f(np.array([x]), t)[0] for x, t in zip(ramp, times)])
        lag[beta] = float(np.abs(ramp[60:] - out[60:]).mean())
    assert lag[0.05] < 0.5 * lag[0.0]


def test_crop_boxes_from_detections_and_joints_by_hand():
    np.testing.assert_allclose(box_from_detection([10, 20, 40, 20], scale=1.5), [0, 0, 60, 60])
    joints = _joints((100.0, 50.0), (40.0, 20.0))
    box = box_from_joints(joints, margin=0.25)
    np.testing.assert_allclose(box, [100 - 30, 50 - 30, 60, 60], atol=1e-4)  # side 1.5 x 40, centred


def test_next_box_follows_constructed_joints():
    previous = np.array([50.0, 0.0, 100.0, 100.0])
    joints = _joints((130.0, 60.0), (60.0, 40.0))  # moved right and down, side 1.6 x 60 = 96
    exact = next_box(previous, joints, margin=0.3, smoothing=0.0)
    np.testing.assert_allclose(exact, box_from_joints(joints, 0.3), atol=1e-4)
    half = next_box(previous, joints, margin=0.3, smoothing=0.5)
    np.testing.assert_allclose(half[:2] + half[2:] / 2, [(100 + 130) / 2, (50 + 60) / 2], atol=1e-4)
    assert half[2] == pytest.approx((100 + 96) / 2)
    # A collapsed prediction (all joints on one point) shrinks the crop by at most max_change.
    collapsed = next_box(previous, np.full((21, 2), 80.0), smoothing=0.0, max_change=1.25)
    assert collapsed[2] == pytest.approx(80.0) and collapsed[2] == collapsed[3]
    spread = next_box(previous, _joints((100, 50), (1000, 1000)), smoothing=0.0, max_change=1.25)
    assert spread[2] == pytest.approx(125.0)
    with pytest.raises(ValueError, match="smoothing"):
        next_box(previous, joints, smoothing=1.0)


def test_overlaps_frame():
    assert overlaps_frame([0, 0, 10, 10], 20, 20)
    assert overlaps_frame([-5, 0, 10, 10], 20, 20)
    assert not overlaps_frame([-9, -9, 10, 10], 20, 20)
    assert not overlaps_frame([30, 0, 10, 10], 20, 20)


@pytest.fixture(scope="module")
def parts():
    from handshape_tf import ModelConfig, build_model
    from handshape_tf.inference import HandPredictor
    from handshape_tf.models.detector import DetectorConfig, build_detector

    keras.utils.set_random_seed(0)  # the same untrained weights whatever ran before
    predictor = HandPredictor.from_keras_model(build_model(ModelConfig.preset("tiny")))
    detector_model = build_detector(
        DetectorConfig(input_height=64, input_width=64, widths=(8, 8, 8, 8, 8), blocks=(0, 0, 0, 0, 0), head_width=8)
    )
    return predictor, detector_model


def _clip(count=12):
    rng = np.random.default_rng(1)
    return [rng.integers(0, 255, (96, 128, 3), dtype=np.uint8) for _ in range(count)]


def test_tracker_runs_the_detector_every_n_frames_and_follows_hands(parts):
    from handshape_tf.inference.detection import HandDetector

    predictor, detector_model = parts
    detector = HandDetector(detector_model, score_threshold=0.0)  # untrained: anything is a hand
    # The untrained mesh network's joints do not follow anything: a slow crop keeps it in the frame.
    tracker = HandTracker(
        predictor, detector, max_hands=2, redetect_every=5, min_confidence=0.0, filter_joints=False, box_smoothing=0.97
    )
    results = [tracker.update(frame) for frame in _clip()]
    assert tracker.frames == 12 and tracker.detector_runs == 3  # frames 0, 5, 10
    assert all(1 <= len(hands) <= 2 for hands in results)
    assert all(hands[0].detected for hands in (results[0],))
    first = results[0][0]
    assert first.handedness in ("left", "right") and 0 <= first.left_probability <= 1
    # The track's crop for frame 1 came from frame 0's joints; its prediction is the predictor's
    # on that crop, mirrored for a left hand.
    again = tracker.predictor.predict(_clip()[1], boxes=results[1][0].box, is_left=results[1][0].is_left)
    np.testing.assert_allclose(results[1][0].prediction.joints_uv, again.joints_uv, atol=1e-4)
    assert results[1][0].track_id in [hand.track_id for hand in results[0]]
    json_ready = results[1][0].to_dict(include_mesh=False)
    assert "mesh_uv" not in json_ready["hand"] and json_ready["handedness"] in ("left", "right")


def test_tracker_always_detect_and_lost_hands_redetect(parts):
    from handshape_tf.inference.detection import HandDetector

    predictor, detector_model = parts
    detector = HandDetector(detector_model, score_threshold=0.0)
    every = HandTracker(predictor, detector, redetect_every=5, always_detect=True, filter_joints=False)
    for frame in _clip(4):
        every.update(frame)
    assert every.detector_runs == 4
    # A confidence no prediction reaches: every hand is lost at once, so every frame detects.
    lost = HandTracker(predictor, detector, redetect_every=50, min_confidence=2.0)
    for frame in _clip(4):
        lost.update(frame)
    assert lost.detector_runs == 4


def test_no_hand_gives_an_empty_result_and_a_clean_overlay(parts):
    from handshape_tf.inference.detection import HandDetector
    from handshape_tf.inference.overlay import draw_hands

    predictor, detector_model = parts
    tracker = HandTracker(predictor, HandDetector(detector_model, score_threshold=1.0))
    frame = _clip(1)[0]
    assert tracker.update(frame) == [] and tracker.update(frame) == []
    assert tracker.detector_runs == 2  # nothing tracked: it keeps looking
    assert np.array_equal(draw_hands(frame, []), frame)


def test_filtered_tracks_are_smoother_than_raw(parts):
    from handshape_tf.inference.detection import HandDetector

    predictor, detector_model = parts
    frames = _clip(10)
    outputs = {}
    for flag in (False, True):
        tracker = HandTracker(
            predictor,
            HandDetector(detector_model, score_threshold=0.0),
            max_hands=1,
            redetect_every=100,
            min_confidence=0.0,
            filter_joints=flag,
            box_smoothing=0.97,
        )
        outputs[flag] = np.array([tracker.update(frame)[0].prediction.joints_uv for frame in frames])
    np.testing.assert_allclose(outputs[True][0], outputs[False][0], atol=1e-5)  # first frame passes
    assert np.abs(np.diff(outputs[True], axis=0)).mean() < np.abs(np.diff(outputs[False], axis=0)).mean()


def test_clip_matching_and_tracking_summary(parts):
    """match_hands pairs each labelled box with the nearest prediction (once); track_clip's
    summary counts detector runs, found and missed hands on a constructed two-frame clip."""
    from handshape_tf.evaluation.clip import match_hands, track_clip
    from handshape_tf.inference.detection import HandDetector

    def hand_at(x, y):
        prediction = SimpleNamespace(joints_uv=np.tile([[x, y]], (21, 1)).astype(np.float32))
        return SimpleNamespace(prediction=prediction, is_left=False)

    hands = [hand_at(10, 10), hand_at(50, 50)]
    boxes = np.array([[40, 40, 20, 20], [0, 0, 20, 20], [200, 200, 10, 10]], np.float32)
    assert match_hands(hands, boxes) == [(1, 0), (0, 1)]  # the third box has no hand near it
    predictor, detector_model = parts
    tracker = HandTracker(predictor, HandDetector(detector_model), redetect_every=5)  # untrained: finds nothing
    frames = [
        {
            "image": image,
            "boxes": np.array([[10, 10, 30, 30]], np.float32),
            "is_left": np.array([False]),
            "joints_uv": np.full((1, 21, 2), 25.0, np.float32),
        }
        for image in _clip(2)
    ]
    summary = track_clip(tracker, [frames])
    assert summary["detector_runs"] == 2 and summary["detector_fraction"] == 1.0  # no track: detect again
    assert (summary["hands_labelled"], summary["hands_found"], summary["hands_missed"]) == (2, 0, 2)
    assert summary["joint_error_percent_of_hand"] is None and summary["jitter_percent_of_hand"] is None


def test_clip_error_and_jitter_by_hand():
    """A constructed tracker whose one hand is off by +a, -a, +a, -a pixels in u (box side 40):
    error a / 40; jitter |e_t - 2 e_t-1 + e_t-2| = 4a / 40; two clips pool their hands, and a
    missed frame breaks the three-frame run the jitter needs."""
    from handshape_tf.evaluation.clip import track_clip

    truth = np.full((21, 2), 30.0, np.float32)
    box = np.array([10, 10, 40, 40], np.float32)

    class Constructed:
        def __init__(self, offsets):
            self.offsets = offsets

        def reset(self):
            self.frames, self.detector_runs = 0, 1

        def update(self, image):
            offset = self.offsets[self.frames % len(self.offsets)]
            self.frames += 1
            if offset is None:
                return []
            joints = truth + np.array([offset, 0.0], np.float32)
            return [SimpleNamespace(prediction=SimpleNamespace(joints_uv=joints), is_left=False)]

    def clip(n):
        return [{"image": None, "boxes": box[None], "is_left": np.array([False]), "joints_uv": truth[None]}] * n

    a = 2.0
    summary = track_clip(Constructed([a, -a]), [clip(4), clip(3)])
    assert summary["hands_found"] == 7 and summary["detector_runs"] == 2
    np.testing.assert_allclose(summary["joint_error_percent_of_hand"], 100 * a / 40)
    np.testing.assert_allclose(summary["joint_error_per_clip"], [100 * a / 40] * 2)
    np.testing.assert_allclose(summary["jitter_percent_of_hand"], 100 * 4 * a / 40)  # 2 + 1 triples
    steady = track_clip(Constructed([a, None, a, a, a]), [clip(5)])
    assert steady["hands_missed"] == 1
    np.testing.assert_allclose(steady["jitter_percent_of_hand"], 0.0)  # one full triple (frames 2-4): constant error
