"""Hand detector: targets, decoding (peaks, boxes, NMS, thresholds), AP, letterbox, model."""

from __future__ import annotations

import numpy as np
import pytest

from handshape_tf.inference.detection import (
    Detection,
    HandDetector,
    average_precision,
    decode,
    encode_targets,
    letterbox,
    local_maxima,
    match_detections,
    non_maximum_suppression,
)

STRIDE = 4


def _logit(p):
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def _output_from_targets(targets, left_logit=6.0):
    """The detector output that encodes `targets` exactly (centre probability = heat)."""
    output = np.zeros(targets["heat"].shape + (6,), np.float32)
    output[..., 0] = _logit(targets["heat"] * 0.99)
    output[..., 1] = np.where(targets["left"] > 0.5, left_logit, -left_logit)
    output[..., 2:] = targets["regression"]
    return output


def test_targets_decode_back_to_the_boxes():
    boxes = np.array([[10.5, 20.25, 40.0, 60.0], [150.0, 100.0, 30.0, 24.0], [60.0, 180.0, 70.0, 50.0]], np.float32)
    is_left = np.array([True, False, True])
    targets = encode_targets(boxes, is_left, (64, 64), STRIDE)
    assert targets["heat"].max() == pytest.approx(1.0)
    assert (targets["heat"] >= 1 - 1e-6).sum() == 3  # one peak per hand
    found = decode(_output_from_targets(targets), STRIDE, score_threshold=0.5)
    assert len(found) == 3
    order = [int(np.argmin(np.abs(boxes[:, 0] - d.box[0]))) for d in found]
    assert sorted(order) == [0, 1, 2]
    for detection, k in zip(found, order):
        np.testing.assert_allclose(detection.box, boxes[k], atol=1e-3)
        assert detection.is_left == is_left[k]
        assert detection.score == pytest.approx(0.99, abs=1e-4)
        assert detection.handedness == ("left" if is_left[k] else "right")


def test_targets_mark_regression_cells_around_each_centre():
    targets = encode_targets(np.array([[40.0, 40.0, 80.0, 80.0]]), np.array([False]), (32, 32), STRIDE)
    # Centre (80, 80) px = cell (20, 20); sigma = 0.1 * 80 / 4 = 2 cells -> weight 1 within
    # sqrt(2 ln 2) * 2 = 2.35 cells.
    assert targets["weight"][20, 20] == 1 and targets["weight"][20, 22] == 1 and targets["weight"][20, 23] == 0
    np.testing.assert_allclose(targets["regression"][20, 22], [20 - 22, 0.0, np.log(20), np.log(20)], atol=1e-6)
    assert targets["left"].max() == 0


def test_encode_targets_rejects_bad_input():
    with pytest.raises(ValueError, match="one flag per box"):
        encode_targets(np.zeros((2, 4)), np.array([True]), (8, 8), STRIDE)
    with pytest.raises(ValueError, match="no area"):
        encode_targets(np.array([[1.0, 1.0, 0.0, 3.0]]), np.array([True]), (8, 8), STRIDE)


def test_local_maxima_keep_one_peak_per_neighbourhood():
    scores = np.zeros((5, 5), np.float32)
    scores[1, 1], scores[1, 2], scores[3, 4] = 0.9, 0.8, 0.5
    peaks = local_maxima(scores)
    assert peaks[1, 1] and not peaks[1, 2] and peaks[3, 4]


def test_non_maximum_suppression_by_hand():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 10, 10], [20, 20, 5, 5], [0, 5, 10, 10]], np.float64)
    scores = np.array([0.9, 0.95, 0.5, 0.6])
    # IoU(1, 0) = 90 / 110 = 0.82; IoU(1, 3) = 45 / 155 = 0.29; IoU(0, 3) = 50 / 150 = 0.33.
    assert non_maximum_suppression(boxes, scores, 0.5).tolist() == [1, 3, 2]
    assert non_maximum_suppression(boxes, scores, 0.3).tolist() == [1, 3, 2]
    assert non_maximum_suppression(boxes, scores, 0.25).tolist() == [1, 2]
    assert non_maximum_suppression(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []


def test_decode_thresholds_limits_and_suppresses():
    output = np.full((16, 16, 6), -10.0, np.float32)
    output[..., 1:4] = 0.0  # centres on the cells' corners
    output[..., 4:] = np.log(4.0)  # 16 px boxes
    output[2, 2, 0] = _logit(0.9)
    output[2, 4, 0] = _logit(0.8)  # its box overlaps the first by IoU 8 x 16 / (2 x 256 - 128) = 0.33
    output[10, 10, 0] = _logit(0.2)  # below the default threshold
    found = decode(output, STRIDE)
    assert [round(d.score, 4) for d in found] == [0.9, 0.8]
    np.testing.assert_allclose(found[0].box, [0.0, 0.0, 16.0, 16.0], atol=1e-5)
    assert len(decode(output, STRIDE, iou_threshold=0.3)) == 1
    assert len(decode(output, STRIDE, score_threshold=0.1)) == 3
    assert len(decode(output, STRIDE, score_threshold=0.1, max_detections=2)) == 2
    assert decode(np.full((8, 8, 6), -10.0, np.float32), STRIDE) == []
    with pytest.raises(ValueError, match="h x w x 6"):
        decode(np.zeros((8, 8, 5)), STRIDE)
    with pytest.raises(ValueError, match="probability"):
        decode(output, STRIDE, score_threshold=1.5)


def _det(box, score, left=0.1):
    return Detection(np.asarray(box, np.float32), score, left)


def test_average_precision_by_hand():
    truths = [np.array([[0, 0, 10, 10]]), np.array([[50, 50, 10, 10]])]
    detections = [[_det([0, 0, 10, 10], 0.9), _det([100, 100, 5, 5], 0.8)], [_det([51, 50, 10, 10], 0.7)]]
    # By score: TP (P 1, R 0.5), FP (P 0.5), TP (P 2/3, R 1): AP = 0.5 * 1 + 0.5 * 2/3.
    assert average_precision(detections, truths) == pytest.approx(0.5 + 1 / 3)
    assert average_precision([[_det([0, 0, 10, 10], 0.9), _det([0, 0, 10, 10], 0.8)]], truths[:1]) == pytest.approx(1.0)
    assert average_precision([[]], [np.zeros((0, 4))]) == 1.0
    assert average_precision([[_det([0, 0, 1, 1], 0.5)]], [np.zeros((0, 4))]) == 0.0
    assert average_precision([[]], truths[:1]) == 0.0
    assert match_detections(detections[0], truths[0]) == [(0, 0)]


def test_letterbox_maps_boxes_back_to_the_frame():
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[100:200, 300:400] = 255
    canvas, fit = letterbox(frame, 256, 256)
    assert canvas.shape == (256, 256, 3) and fit.scale == pytest.approx(0.4) and fit.top == 32 and fit.left == 0
    lit = np.argwhere(canvas.max(axis=-1) > 127)
    box_in = np.array([lit[:, 1].min(), lit[:, 0].min(), np.ptp(lit[:, 1]) + 1, np.ptp(lit[:, 0]) + 1], np.float32)
    np.testing.assert_allclose(fit.to_frame(box_in), [300, 100, 100, 100], atol=3)


def test_detector_model_shapes_prior_and_detector_wrapper(keras_round_trip):
    from handshape_tf.models.detector import DetectorConfig, build_detector

    config = DetectorConfig(
        input_height=96, input_width=128, widths=(8, 8, 16, 16, 16), blocks=(0, 1, 1, 1, 1), head_width=16
    )
    model = build_detector(config)
    output = model(np.random.default_rng(0).uniform(size=(2, 96, 128, 3)).astype(np.float32))["detections"]
    assert tuple(output.shape) == (2, 24, 32, 6) == (2, *config.output_shape, 6)
    probability = 1 / (1 + np.exp(-np.asarray(output[..., 0])))
    assert 0.003 < probability.mean() < 0.03  # the CenterNet prior: almost no hands anywhere
    detector = HandDetector(model)
    assert (detector.input_height, detector.input_width, detector.stride) == (96, 128, 4)
    assert detector.detect(np.zeros((240, 320, 3), np.uint8)) == []  # nothing confident in a black frame
    found = HandDetector(model, score_threshold=0.0).detect(np.zeros((240, 320, 3), np.uint8), max_hands=3)
    assert 1 <= len(found) <= 3 and all(np.isfinite(d.box).all() for d in found)
    keras_round_trip(model, np.random.default_rng(1).uniform(size=(1, 96, 128, 3)).astype(np.float32))


def test_detector_config_rejects_bad_values():
    from handshape_tf.models.detector import DetectorConfig

    with pytest.raises(ValueError, match="multiple of 32"):
        DetectorConfig(input_height=100)
    with pytest.raises(ValueError, match="4 or 8"):
        DetectorConfig(stride=2)
