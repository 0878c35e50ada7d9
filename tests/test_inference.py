"""Inference API: image normalisation, crops, the predictor against the bare Keras model,
left-hand mirroring, camera-space output, mesh files, overlays and the predict CLI."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import tensorflow as tf

from handshape_tf.assets import SHIPPED_MODEL
from handshape_tf.assets.template import load_template
from handshape_tf.data.crop import (
    crop_affine,
    crop_and_resize,
    crop_intrinsics_np,
    image_box,
    mirror_image,
    mirror_uv,
    read_image,
    square_box_around,
    to_rgb_uint8,
)
from handshape_tf.geometry.camera import crop_intrinsics, project, uvd_to_xyz
from handshape_tf.inference import (
    CorruptModelError,
    HandPrediction,
    HandPredictor,
    detect_format,
    draw_overlay,
    load_obj,
    load_ply,
    load_predictor,
    mesh_faces,
    save_obj,
    save_ply,
)

REPO = Path(__file__).resolve().parents[1]
SIZE = 64  # the tiny preset's input side
ATOL = 2e-5  # predictor (tf.function) vs eager model call


@pytest.fixture(scope="module")
def model(tiny_model):
    return tiny_model


@pytest.fixture(scope="module")
def predictor(model):
    return HandPredictor.from_keras_model(model, batch_size=4)


@pytest.fixture(scope="module")
def keras_file(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    model.save(path)
    return path


def _reference(model, crop):
    """Raw outputs of the Keras model on one S x S x 3 uint8 crop, prepared by hand."""
    out = model(crop[np.newaxis].astype(np.float32) / 255.0, training=False)
    return {
        "heatmaps": out["heatmaps"][-1].numpy()[0],
        "mesh_uvd": out["mesh_uvd"].numpy()[0],
        "pose_uvd": out["pose_uvd"].numpy()[0],
    }


def _rng_image(shape, seed=0, dtype=np.uint8, high=256):
    return np.random.default_rng(seed).integers(0, high, shape).astype(dtype)


# ----------------------------------------------------------------------------- to_rgb_uint8


def test_to_rgb_uint8_converts_each_layout_and_dtype_by_hand():
    grey = np.array([[0, 10], [200, 255]], np.uint8)
    np.testing.assert_array_equal(to_rgb_uint8(grey), np.repeat(grey[..., None], 3, axis=2))
    np.testing.assert_array_equal(to_rgb_uint8(grey[..., None]), np.repeat(grey[..., None], 3, axis=2))
    deep = np.array([[0, 257, 65535, 385]], np.uint16)  # 385 / 257 = 1.498 -> 1
    np.testing.assert_array_equal(to_rgb_uint8(deep)[0, :, 0], [0, 1, 255, 1])
    unit = np.array([[0.0, 0.5, 1.0, 0.2]], np.float32)  # 0..1 range: x 255, rounded
    np.testing.assert_array_equal(to_rgb_uint8(unit)[0, :, 0], [0, 128, 255, 51])
    wide = np.array([[0.0, 100.4, 255.0, 300.0, -3.0]], np.float64)  # 0..255 range, clipped
    np.testing.assert_array_equal(to_rgb_uint8(wide)[0, :, 0], [0, 100, 255, 255, 0])
    np.testing.assert_array_equal(to_rgb_uint8(np.array([[True, False]]))[0, :, 0], [255, 0])
    np.testing.assert_array_equal(to_rgb_uint8(np.array([[7, 9]], np.int64))[0, :, 0], [7, 9])
    rgb = np.array([[[1, 2, 3]]], np.uint8)
    assert to_rgb_uint8(rgb) is rgb  # already RGB uint8: no copy
    np.testing.assert_array_equal(to_rgb_uint8(rgb, channel_order="bgr"), [[[3, 2, 1]]])


def test_to_rgb_uint8_drops_or_composites_alpha():
    rgba = np.array([[[200, 100, 0, 128], [10, 20, 30, 255]]], np.uint8)
    np.testing.assert_array_equal(to_rgb_uint8(rgba), [[[200, 100, 0], [10, 20, 30]]])
    # 200 * 128/255 + 0 = 100.39 -> 100; over white: 200 a + 255 (1 - a) = 227.4 -> 227.
    np.testing.assert_array_equal(to_rgb_uint8(rgba, background=0)[0, 0], [100, 50, 0])
    np.testing.assert_array_equal(to_rgb_uint8(rgba, background=(255, 255, 255))[0, 0], [227, 177, 127])
    bgra = rgba[..., [2, 1, 0, 3]]
    np.testing.assert_array_equal(
        to_rgb_uint8(bgra, channel_order="bgr", background=(255, 0, 0)), to_rgb_uint8(rgba, background=(255, 0, 0))
    )


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros(5, np.uint8), r"image has shape \(5,\); expected H x W"),
        (np.zeros((2, 2, 2), np.uint8), r"shape \(2, 2, 2\); expected H x W"),
        (np.zeros((1, 2, 2, 3), np.uint8), r"shape \(1, 2, 2, 3\)"),
        (np.zeros((0, 4, 3), np.uint8), r"shape \(0, 4, 3\); expected at least 1 x 1"),
        (np.array([[0.5, np.nan]]), "1 NaN or infinite values"),
        (np.array([[-1, 300]], np.int32), r"values in \[-1, 300\]; expected 0..255"),
        (np.array([["a", "b"]]), "dtype <U1; expected uint8"),
    ],
)
def test_to_rgb_uint8_rejects_non_images(image, message):
    with pytest.raises(ValueError, match=message):
        to_rgb_uint8(image)


def test_to_rgb_uint8_rejects_bad_options():
    with pytest.raises(ValueError, match="channel_order is 'rgba'"):
        to_rgb_uint8(np.zeros((2, 2, 3), np.uint8), channel_order="rgba")
    with pytest.raises(ValueError, match="background is .*expected None, a grey level"):
        to_rgb_uint8(np.zeros((2, 2, 4), np.uint8), background=(1, 2))


def test_read_image_decodes_files_and_names_bad_ones(tmp_path):
    rgb = _rng_image((5, 7, 3))
    cv2.imwrite(str(tmp_path / "a.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), rgb)
    (tmp_path / "fake.png").write_text("not pixels")
    with pytest.raises(ValueError, match=r"fake.png is not an image OpenCV can decode \(10 bytes\)"):
        read_image(tmp_path / "fake.png")
    with pytest.raises(FileNotFoundError, match="image not found: .*missing.png"):
        read_image(tmp_path / "missing.png")


# ----------------------------------------------------------------------------- boxes and crops


def test_square_box_around_by_hand():
    box = square_box_around([[0, 0], [10, 4], [2, 1]], margin=0.25)
    # Extent 10 x 4, side 10 * 1.5 = 15 centred on (5, 2).
    np.testing.assert_allclose(box, [-2.5, -5.5, 15, 15])
    np.testing.assert_allclose(square_box_around([[3, 4]], margin=0.5, min_side=2), [2, 3, 2, 2])
    np.testing.assert_allclose(image_box(80, 100), [-10, 0, 100, 100])
    with pytest.raises(ValueError, match=r"points have shape \(0, 2\); expected P x 2 with P >= 1"):
        square_box_around(np.zeros((0, 2)))
    with pytest.raises(ValueError, match="margin is -0.1; expected a finite number >= 0"):
        square_box_around([[0, 0]], margin=-0.1)
    with pytest.raises(ValueError, match="points contain NaN"):
        square_box_around([[0, np.nan]])


def test_crop_and_resize_cuts_pads_and_shrinks_exactly():
    image = _rng_image((40, 50, 3))
    crop, affine = crop_and_resize(image, (10, 5, 20, 20), 20)  # integer box, no resize
    np.testing.assert_array_equal(crop, image[5:25, 10:30])
    np.testing.assert_allclose(affine, [[1, 0, -10], [0, 1, -5]])
    crop, _ = crop_and_resize(image, (-10, -6, 20, 20), 20)  # reaches outside: black border
    np.testing.assert_array_equal(crop[:6], 0)
    np.testing.assert_array_equal(crop[:, :10], 0)
    np.testing.assert_array_equal(crop[6:, 10:], image[:14, :10])
    crop, _ = crop_and_resize(image, (45, 35, 10, 10), 10, border_value=7)
    np.testing.assert_array_equal(crop[5:, :], 7)
    np.testing.assert_array_equal(crop[:5, :5], image[35:40, 45:50])
    crop, affine = crop_and_resize(image, (0, 0, 40, 40), 10)  # shrink x4: 4 x 4 block means
    blocks = image[:40, :40].astype(np.float64).reshape(10, 4, 10, 4, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(crop, blocks, atol=0.5 + 1e-9)
    np.testing.assert_allclose(affine, [[0.25, 0, 0], [0, 0.25, 0]])


def test_crop_and_resize_keeps_pixel_centres_when_shrinking_a_huge_image():
    # A horizontal ramp: crop pixel i of a 3000-pixel box shrunk to 30 must be the mean of
    # source columns 100 i .. 100 i + 99 (then its value sits at its centre, no shift).
    row = (np.arange(3000) * 256 // 3000).astype(np.uint8)
    ramp = np.broadcast_to(row[np.newaxis, :, np.newaxis], (2000, 3000, 3))
    crop, _ = crop_and_resize(ramp, image_box(3000, 2000), 30)
    np.testing.assert_allclose(crop[15, :, 0], row.reshape(30, 100).mean(axis=1), atol=1.0)
    assert crop[0].max() == 0 and crop[-1].max() == 0  # 500-pixel black bands above and below


@pytest.mark.parametrize(
    "box, message",
    [
        ((1, 2, 0, 5), r"w, h > 0 \(a zero-size box has no crop\)"),
        ((1, 2, 5, -1), "a zero-size box"),
        ((np.nan, 2, 5, 5), r"box is \[nan, 2.0, 5.0, 5.0\]; expected finite"),
        ((1, 2, 3), "expected 4 numbers"),
        ("abcd", "expected 4 numbers"),
    ],
)
def test_crop_and_resize_rejects_bad_boxes(box, message):
    with pytest.raises(ValueError, match=message):
        crop_and_resize(np.zeros((8, 8, 3), np.uint8), box, 4)


def test_crop_and_resize_rejects_bad_sizes():
    with pytest.raises(ValueError, match="size is 0; expected a positive int"):
        crop_and_resize(np.zeros((8, 8, 3), np.uint8), (0, 0, 4, 4), 0)
    with pytest.raises(ValueError, match="size is 4.5"):
        crop_and_resize(np.zeros((8, 8, 3), np.uint8), (0, 0, 4, 4), 4.5)


def test_crop_intrinsics_np_matches_tensorflow_and_the_affine_map():
    rng = np.random.default_rng(3)
    intrinsics = np.stack(
        [rng.uniform(300, 900, 5), rng.uniform(300, 900, 5), rng.uniform(0, 640, 5), rng.uniform(0, 480, 5)], 1
    )
    boxes = np.stack(
        [rng.uniform(-50, 400, 5), rng.uniform(-50, 300, 5), rng.uniform(20, 300, 5), rng.uniform(20, 300, 5)], 1
    )
    ours = crop_intrinsics_np(intrinsics, boxes, 64)
    np.testing.assert_allclose(ours, crop_intrinsics(intrinsics, boxes, 64).numpy(), rtol=1e-6)
    np.testing.assert_allclose(
        crop_intrinsics_np(intrinsics[0], boxes[0], (32, 48)),
        crop_intrinsics(intrinsics[0], boxes[0], (32, 48)).numpy(),
        rtol=1e-6,
    )
    points = np.stack([rng.uniform(-80, 80, (5, 7)), rng.uniform(-80, 80, (5, 7)), rng.uniform(300, 700, (5, 7))], -1)
    full = project(points, intrinsics).numpy()
    for b in range(5):
        affine = crop_affine(boxes[b], 64)
        mapped = full[b] @ affine[:, :2].T + affine[:, 2]
        np.testing.assert_allclose(project(points[b : b + 1], ours[b : b + 1]).numpy()[0], mapped, rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError, match=r"intrinsics must be finite .* received \[nan, 500.0, 1.0, 1.0\]"):
        crop_intrinsics_np([np.nan, 500, 1, 1], (0, 0, 10, 10), 64)
    with pytest.raises(ValueError, match="zero-size box"):
        crop_intrinsics_np([500, 500, 1, 1], (0, 0, 0, 10), 64)


def test_mirroring_by_hand():
    image = np.arange(12, dtype=np.uint8).reshape(2, 3, 2)
    np.testing.assert_array_equal(mirror_image(image)[:, :, 0], [[4, 2, 0], [10, 8, 6]])
    np.testing.assert_allclose(mirror_uv([[0.25, 0.5, 3.0]]), [[0.75, 0.5, 3.0]])
    np.testing.assert_allclose(mirror_uv([[0.5, 7]], width=3), [[2.5, 7]])  # centre of column 0 -> of column 2
    # The crop of a mirrored image with the mirrored box is the mirrored crop.
    full = _rng_image((30, 40, 3), seed=4)
    crop, _ = crop_and_resize(full, (5, 3, 16, 16), 16)
    mirrored, _ = crop_and_resize(mirror_image(full), (40 - 5 - 16, 3, 16, 16), 16)
    np.testing.assert_array_equal(mirrored, mirror_image(crop))


# ----------------------------------------------------------------------------- the predictor


def _assert_matches(prediction, reference, box):
    np.testing.assert_allclose(prediction.mesh_uvd, reference["mesh_uvd"], atol=ATOL)
    np.testing.assert_allclose(prediction.pose_uvd, reference["pose_uvd"], atol=ATOL)
    np.testing.assert_allclose(prediction.heatmaps, reference["heatmaps"], atol=ATOL)
    x0, y0, w, h = box
    np.testing.assert_allclose(
        prediction.joints_uv, reference["pose_uvd"][:, :2] * [w, h] + [x0, y0], atol=ATOL * max(w, h)
    )
    np.testing.assert_allclose(prediction.box, box, rtol=1e-6)
    np.testing.assert_allclose(prediction.confidence, reference["heatmaps"].max(axis=(0, 1)), atol=ATOL)


def test_predictor_equals_the_keras_model_on_hand_prepared_crops(model, predictor):
    rng = np.random.default_rng(5)
    grey = _rng_image((90, 70), seed=1)
    rgba = _rng_image((64, 64, 4), seed=2)
    deep = _rng_image((50, 60, 3), seed=3, dtype=np.uint16, high=65536)
    unit = rng.random((72, 72, 3)).astype(np.float32)
    tiny = _rng_image((8, 8, 3), seed=6)
    huge = _rng_image((2000, 3000, 3), seed=7)
    huge_box = (1200.0, 700.0, 640.0, 640.0)
    # Each image converted by hand (not by to_rgb_uint8).
    cases = [
        (grey, None, np.repeat(grey[..., None], 3, axis=2), (-10, 0, 90, 90)),
        (rgba, None, rgba[..., :3], (0, 0, 64, 64)),
        (deep, (5, 2, 40, 40), ((deep.astype(np.float64) / 257).round()).astype(np.uint8), (5, 2, 40, 40)),
        (unit, None, np.rint(unit * 255).astype(np.uint8), (0, 0, 72, 72)),
        (tiny, None, tiny, (0, 0, 8, 8)),
        (huge, huge_box, huge, huge_box),
    ]
    predictions = predictor.predict([case[0] for case in cases], boxes=[case[1] for case in cases])
    assert isinstance(predictions, list) and len(predictions) == len(cases)
    for prediction, (_, _, rgb, box) in zip(predictions, cases, strict=True):
        crop, _ = crop_and_resize(rgb, box, SIZE)
        _assert_matches(prediction, _reference(model, crop), box)
        assert prediction.camera_space is False and prediction.is_left is False
    # One image alone gives one HandPrediction with the same numbers as inside the batch.
    alone = predictor.predict(unit)
    assert isinstance(alone, HandPrediction)
    np.testing.assert_allclose(alone.mesh_uvd, predictions[3].mesh_uvd, atol=ATOL)
    # A B x H x W x C array is a batch too; BGR input is swapped.
    batch = predictor.predict(np.stack([tiny, tiny[..., ::-1]]), channel_order="bgr")
    crop, _ = crop_and_resize(tiny[..., ::-1], (0, 0, 8, 8), SIZE)
    _assert_matches(batch[0], _reference(model, crop), (0, 0, 8, 8))
    np.testing.assert_allclose(batch[1].mesh_uvd, predictions[4].mesh_uvd, atol=ATOL)


def test_predictor_reads_files(model, predictor, tmp_path):
    rgb = _rng_image((64, 64, 3), seed=9)
    path = tmp_path / "hand.png"
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    prediction = predictor.predict(path)
    _assert_matches(prediction, _reference(model, rgb), (0, 0, 64, 64))


def test_left_hands_are_mirrored_in_and_out(predictor):
    width = 50
    image = _rng_image((40, width, 3), seed=10)
    box = (6.0, 4.0, 32.0, 32.0)
    mirrored_box = (width - 6.0 - 32.0, 4.0, 32.0, 32.0)
    right = predictor.predict(image, boxes=box)
    left = predictor.predict(mirror_image(image), boxes=mirrored_box, is_left=True)
    assert left.is_left
    np.testing.assert_allclose(left.joints_uv, mirror_uv(right.joints_uv, width=width), atol=1e-3)
    np.testing.assert_allclose(left.mesh_uv, mirror_uv(right.mesh_uv, width=width), atol=1e-3)
    np.testing.assert_allclose(left.mesh_uvd, mirror_uv(right.mesh_uvd), atol=1e-5)
    np.testing.assert_allclose(left.heatmaps, right.heatmaps[:, ::-1], atol=1e-5)
    np.testing.assert_allclose(left.confidence, right.confidence, atol=1e-5)
    # Scale-normalised 3D: the mirror image in x.
    np.testing.assert_allclose(left.joints_xyz, right.joints_xyz * [-1, 1, 1], atol=1e-4)
    # Per-image flags in a batch.
    both = predictor.predict([image, mirror_image(image)], boxes=[box, mirrored_box], is_left=[False, True])
    np.testing.assert_allclose(both[1].joints_uv, left.joints_uv, atol=1e-4)


def test_camera_space_output_equals_uvd_to_xyz(predictor):
    image = _rng_image((480, 640, 3), seed=11)
    boxes = np.array([[200, 100, 180, 180], [-20, 300, 240, 240]], np.float32)
    intrinsics = np.array([[607.9, 607.9, 314.8, 236.4], [500.0, 520.0, 320.0, 240.0]], np.float32)
    root_depth, scale = np.array([480.0, 720.0]), np.array([28.0, 31.5])
    predictions = predictor.predict(
        [image, image], boxes=boxes, intrinsics=intrinsics, root_depth=root_depth, scale=scale
    )
    for b, prediction in enumerate(predictions):
        assert prediction.camera_space
        expected = uvd_to_xyz(
            prediction.pose_uvd[None], intrinsics[b : b + 1], boxes[b : b + 1], root_depth[b : b + 1], scale[b : b + 1]
        )
        np.testing.assert_allclose(prediction.joints_xyz, expected.numpy()[0], rtol=1e-5, atol=1e-3)
        vertices = uvd_to_xyz(
            prediction.mesh_uvd[None], intrinsics[b : b + 1], boxes[b : b + 1], root_depth[b : b + 1], scale[b : b + 1]
        )
        np.testing.assert_allclose(prediction.vertices_xyz, vertices.numpy()[0], rtol=1e-5, atol=1e-3)
        # Projecting the 3D joints gives back the 2D joints; the wrist depth is root + d s.
        np.testing.assert_allclose(
            project(prediction.joints_xyz[None], intrinsics[b : b + 1]).numpy()[0], prediction.joints_uv, atol=1e-2
        )
        np.testing.assert_allclose(
            prediction.joints_xyz[0, 2], root_depth[b] + prediction.pose_uvd[0, 2] * scale[b], rtol=1e-6
        )
    # Shared (4,) intrinsics and scalar root depth / scale broadcast over the batch.
    shared = predictor.predict([image, image], boxes=boxes, intrinsics=intrinsics[0], root_depth=480.0, scale=28.0)
    np.testing.assert_allclose(shared[0].joints_xyz, predictions[0].joints_xyz, atol=1e-3)


def test_normalised_xyz_is_root_relative_with_a_unit_scale_bone(predictor):
    prediction = predictor.predict(_rng_image((64, 64, 3), seed=12))
    np.testing.assert_allclose(prediction.joints_xyz[0], 0, atol=1e-6)
    assert np.linalg.norm(prediction.joints_xyz[10] - prediction.joints_xyz[9]) == pytest.approx(1.0, abs=1e-3)
    np.testing.assert_allclose(
        prediction.joints_xyz[:, 2], prediction.pose_uvd[:, 2] - prediction.pose_uvd[0, 2], atol=1e-6
    )
    record = json.loads(json.dumps(prediction.to_dict()))
    assert len(record["joints_xyz"]) == 21 and len(record["vertices_xyz"]) == 1159
    assert record["xyz_unit"] == "hand scale s (root-relative)" and "heatmaps" not in record


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"intrinsics": [np.nan, 600, 320, 240], "root_depth": 500, "scale": 30},
            r"intrinsics must be finite .*received \[nan",
        ),
        ({"intrinsics": [600, 600, 320, 240], "root_depth": 500}, r"must be given together .*missing \['scale'\]"),
        (
            {"intrinsics": [600, 600, 320, 240], "root_depth": -5, "scale": 30},
            r"root_depth is \[-5.0\]; expected finite values > 0",
        ),
        ({"boxes": (10, 10, 0, 0)}, "zero-size box"),
        ({"boxes": (16, 0, 8, 8)}, r"image 0: box \[16.0, 0.0, 8.0, 8.0\] .* lies outside the 16 x 16 image"),
        ({"boxes": (-8, -8, 8, 8)}, r"lies outside the 16 x 16 image; expected a box that overlaps it"),
        ({"boxes": [(0, 0, 8, 8), (0, 0, 8, 8)]}, "boxes has 2 entries for 1 images"),
        ({"is_left": "yes"}, "is_left is 'yes'; expected a bool"),
    ],
)
def test_predictor_rejects_bad_arguments(predictor, kwargs, message):
    with pytest.raises(ValueError, match=message):
        predictor.predict(np.zeros((16, 16, 3), np.uint8), **kwargs)


def test_predictor_rejects_non_images(predictor):
    with pytest.raises(ValueError, match=r"image 1: image has shape \(16,\)"):
        predictor.predict([np.zeros((4, 4), np.uint8), np.zeros(16, np.uint8)])
    with pytest.raises(ValueError, match="images is an empty list"):
        predictor.predict([])
    with pytest.raises(ValueError, match="NaN or infinite"):
        predictor.predict(np.full((4, 4, 3), np.nan))
    with pytest.raises(ValueError, match=r"image 1 is 1 x 1 pixels; expected at least 8 x 8"):
        predictor.predict([np.zeros((8, 8, 3), np.uint8), np.zeros((1, 1, 3), np.uint8)])


# ----------------------------------------------------------------------------- loading models


def test_load_predictor_detects_formats_and_explains_failures(keras_file, tmp_path):
    # Loading a .keras file and its numbers: test_predict_cli_end_to_end.
    assert detect_format(keras_file) == "keras"
    with pytest.raises(FileNotFoundError, match="model not found: .*nothing.keras does not exist"):
        load_predictor(tmp_path / "nothing.keras")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "variables").mkdir()
    with pytest.raises(
        ValueError, match=r"is not a SavedModel: it has no saved_model.pb \(found 1 entries: variables\)"
    ):
        load_predictor(tmp_path / "empty")
    (tmp_path / "weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n")
    with pytest.raises(ValueError, match=r"unsupported model file .*weights.h5 \(suffix '.h5', 8 bytes\)"):
        load_predictor(tmp_path / "weights.h5")
    (tmp_path / "fake.keras").write_text("hello")
    with pytest.raises(ValueError, match="has the .keras suffix but is not a Keras archive"):
        load_predictor(tmp_path / "fake.keras")
    (tmp_path / "fake.tflite").write_text("hello")
    with pytest.raises(ValueError, match="not a TFLite flatbuffer"):
        load_predictor(tmp_path / "fake.tflite")


def _truncate(source: Path, target: Path) -> Path:
    """`target` holding the first half of `source` (a download or copy cut short)."""
    data = source.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    return target


def test_truncated_models_are_corrupt_model_files(model, keras_file, tmp_path, capsys):
    from handshape_tf import predict
    from handshape_tf.inference.signature import save_serving_model

    saved = save_serving_model(model, tmp_path / "saved", encoded=False)
    _truncate(saved / "saved_model.pb", saved / "saved_model.pb")
    models = [
        _truncate(keras_file, tmp_path / "cut.keras"),
        _truncate(SHIPPED_MODEL, tmp_path / "cut.tflite"),
        saved,
    ]
    image = tmp_path / "hand.png"
    cv2.imwrite(str(image), _rng_image((40, 40, 3)))
    for path in models:
        with pytest.raises(CorruptModelError, match=f"corrupt model file {re.escape(str(path))}: "):
            load_predictor(path)
        assert predict.main([str(image), "--model", str(path), "--out", str(tmp_path / "out")]) == 2
        assert f"error: corrupt model file {path}: " in capsys.readouterr().err


def test_importing_the_inference_api_does_not_import_tensorflow():
    code = (
        "import sys, handshape_tf.inference, handshape_tf.data.crop, handshape_tf.predict\n"
        "from handshape_tf.inference import TFLiteBackend\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'TensorFlow was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, env=_env(), timeout=60)


@pytest.mark.slow
def test_tflite_predictor_matches_keras_without_tensorflow(model, tmp_path):
    from handshape_tf.inference.signature import save_serving_model
    from handshape_tf.models.network import with_graph_formulation

    saved = save_serving_model(with_graph_formulation(model, "gather"), tmp_path / "saved", encoded=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved), signature_keys=["serving_default"])
    (tmp_path / "tiny.tflite").write_bytes(converter.convert())
    images = [_rng_image((64, 64, 3), seed=s) for s in range(3)]
    np.save(tmp_path / "images.npy", np.stack(images))
    code = (
        "import sys, numpy as np\n"
        "from handshape_tf.inference import load_predictor\n"
        f"p = load_predictor({str(tmp_path / 'tiny.tflite')!r}, batch_size=2)\n"
        f"out = p.predict(list(np.load({str(tmp_path / 'images.npy')!r})))\n"
        "assert 'tensorflow' not in sys.modules\n"
        f"np.save({str(tmp_path / 'mesh.npy')!r}, np.stack([o.mesh_uvd for o in out]))\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, env=_env(), timeout=120)
    mesh = np.load(tmp_path / "mesh.npy")
    for image, vertices in zip(images, mesh, strict=True):
        np.testing.assert_allclose(vertices, _reference(model, image)["mesh_uvd"], atol=1e-4)


# ----------------------------------------------------------------------------- mesh files and overlays


@pytest.mark.parametrize("save, load", [(save_obj, load_obj), (save_ply, load_ply)])
def test_mesh_files_round_trip(tmp_path, save, load):
    template = load_template()
    vertices = template.vertices * 1000.0
    for left in (False, True):
        path = save(tmp_path / f"hand_{left}.mesh", vertices, mesh_faces(left))
        read_vertices, read_faces = load(path)
        assert read_vertices.shape == (1159, 3) and read_faces.shape == (2314, 3)
        np.testing.assert_allclose(read_vertices, vertices, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(read_faces, mesh_faces(left))
    np.testing.assert_array_equal(mesh_faces(True), template.faces[:, ::-1])
    with pytest.raises(ValueError, match=r"face indices span \[0, 1159\]; expected 0-based indices below V = 1159"):
        save(tmp_path / "bad", vertices, np.array([[0, 1, 1159]]))
    with pytest.raises(ValueError, match="vertices contain NaN"):
        save(tmp_path / "bad", np.full((3, 3), np.nan), np.array([[0, 1, 2]]))


def test_load_obj_reads_polygons_and_slashes(tmp_path):
    path = tmp_path / "quad.obj"
    path.write_text("v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nvn 0 0 1\nf 1//1 2//1 3//1 4//1\nf -1 -2 -3\n")
    vertices, faces = load_obj(path)
    assert vertices.shape == (4, 3)
    np.testing.assert_array_equal(faces, [[0, 1, 2], [0, 2, 3], [3, 2, 1]])
    path.write_text("v 0 0\n")
    with pytest.raises(ValueError, match=r"quad.obj:1: malformed line 'v 0 0'"):
        load_obj(path)


def test_draw_overlay_draws_skeleton_mesh_and_box():
    template = load_template()
    joints = np.stack([np.full(21, 50.0), np.linspace(20, 80, 21)], axis=1).astype(np.float32)
    mesh = np.stack([np.linspace(10, 90, 1159), np.full(1159, 30.0)], axis=1).astype(np.float32)
    prediction = HandPrediction(
        box=np.array([5, 5, 90, 90], np.float32),
        is_left=False,
        joints_uv=joints,
        mesh_uv=mesh,
        pose_uvd=np.zeros((21, 3), np.float32),
        mesh_uvd=np.zeros((1159, 3), np.float32),
        heatmaps=np.zeros((16, 16, 21), np.float32),
        confidence=np.zeros(21, np.float32),
        joints_xyz=np.zeros((21, 3), np.float32),
        vertices_xyz=np.zeros((1159, 3), np.float32),
        camera_space=False,
    )
    image = np.zeros((100, 100), np.uint8)
    overlay = draw_overlay(image, prediction)
    assert overlay.shape == (100, 100, 3) and overlay.dtype == np.uint8 and image.max() == 0
    np.testing.assert_array_equal(overlay[20, 49], [255, 0, 0])  # joint 0 dot (centre 49.5, 19.5)
    assert overlay[30, 70].max() > 0  # mesh wireframe along y = 30
    assert overlay[50, 5].max() > 0 and overlay[50, 2].max() == 0  # box outline at x = 5
    bare = draw_overlay(image, prediction, draw_mesh=False)
    assert bare[30, 70].max() == 0
    assert len(template.edges) > 3000


# ----------------------------------------------------------------------------- the CLI


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def test_predict_cli_end_to_end(model, keras_file, tmp_path):
    rgb = _rng_image((80, 100, 3), seed=14)
    image_path = tmp_path / "hand.png"
    cv2.imwrite(str(image_path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "handshape_tf.predict",
        str(image_path),
        "--model",
        str(keras_file),
        "--out",
        str(out),
        "--json",
        "--box",
        "10,5,70,70",
        "--intrinsics",
        "600,600,50,40",
        "--root-depth",
        "500",
        "--scale",
        "30",
        "--left",
    ]
    result = subprocess.run(command, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert len(printed) == 1 and printed[0]["image"] == str(image_path)
    record = json.loads((out / "hand.json").read_text())
    assert record == printed[0]
    expected = HandPredictor.from_keras_model(model).predict(
        rgb, boxes=(10, 5, 70, 70), intrinsics=(600, 600, 50, 40), root_depth=500, scale=30, is_left=True
    )
    np.testing.assert_allclose(record["joints_uv"], expected.joints_uv, atol=1e-3)
    np.testing.assert_allclose(record["vertices_xyz"], expected.vertices_xyz, rtol=1e-5, atol=1e-3)
    assert record["camera_space"] and record["is_left"] and record["xyz_unit"] == "mm"
    vertices, faces = load_obj(out / "hand.obj")
    np.testing.assert_allclose(vertices, expected.vertices_xyz, rtol=1e-5, atol=1e-3)
    np.testing.assert_array_equal(faces, mesh_faces(True))
    overlay = cv2.imread(str(out / "hand_overlay.png"))
    assert overlay.shape == (80, 100, 3) and np.any(overlay != cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def test_predict_with_a_detector_on_a_photo_without_hands(keras_file, tmp_path, capsys):
    """--detector on a photo where it finds nothing (an untrained detector is never confident):
    an empty hand list, no mesh files and an overlay that is the unchanged photo; --left with
    --detector is refused as a usage error."""
    import keras

    from handshape_tf import predict
    from handshape_tf.models.detector import DetectorConfig, build_detector

    keras.utils.set_random_seed(0)
    detector = tmp_path / "detector.keras"
    build_detector(DetectorConfig(input_height=64, input_width=64, widths=(8,) * 5, head_width=8)).save(detector)
    rgb = _rng_image((90, 120, 3), seed=15)
    image_path = tmp_path / "room.png"
    cv2.imwrite(str(image_path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    out = tmp_path / "out"
    arguments = [str(image_path), "--model", str(keras_file), "--detector", str(detector), "--out", str(out)]
    assert predict.main(arguments) == 0
    record = json.loads((out / "room.json").read_text())
    assert record["hands"] == [] and set(record["files"]) == {"json", "overlay"}
    np.testing.assert_array_equal(cv2.imread(str(out / "room_overlay.png")), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    with pytest.raises(SystemExit) as stop:
        predict.main([*arguments, "--left"])
    assert stop.value.code == 2 and "use them with --box, not --detector" in capsys.readouterr().err


def test_predict_cli_rejects_a_text_file_posing_as_an_image(keras_file, tmp_path):
    fake = tmp_path / "notes.png"
    fake.write_text("this is not a picture\n")
    command = [
        sys.executable,
        "-m",
        "handshape_tf.predict",
        str(fake),
        "--model",
        str(keras_file),
        "--out",
        str(tmp_path / "o"),
    ]
    result = subprocess.run(command, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "error:" in result.stderr and "notes.png is not an image OpenCV can decode" in result.stderr
    assert not (tmp_path / "o").exists()


def test_predict_cli_rejects_bad_arguments(tmp_path, capsys):
    from handshape_tf import predict

    with pytest.raises(SystemExit) as exit_info:
        predict.main([str(tmp_path / "a.png"), "--model", "m.keras", "--box", "1,2,3"])
    assert exit_info.value.code == 2
    assert "'1,2,3' is not 4 comma-separated finite numbers (x0,y0,w,h)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        predict.main([str(tmp_path / "a.png"), "--model", "m.keras", "--root-depth", "500"])
    assert "--intrinsics, --root-depth and --scale must be given together" in capsys.readouterr().err
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.zeros((4, 4, 3), np.uint8))
    assert predict.main([str(image), "--model", str(tmp_path / "missing.keras")]) == 2
    assert "model not found" in capsys.readouterr().err
    assert predict.output_names([Path("a/x.png"), Path("b/x.jpg"), Path("y.png")]) == ["000_x", "001_x", "y"]


def test_predict_cli_takes_folders_skips_bad_files_and_checks_out_first(keras_file, tmp_path, capsys):
    from handshape_tf import predict

    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("a.png", "b.jpg"):
        cv2.imwrite(str(folder / name), _rng_image((48, 40, 3)))
    (folder / "c.png").write_text("not a picture")
    (folder / "notes.txt").write_text("ignored: not an image suffix")
    out = tmp_path / "out"
    assert predict.main([str(folder), "--model", str(keras_file), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "error: skipping " in err and "c.png is not an image OpenCV can decode" in err
    assert "error: 1 of 3 inputs could not be read" in err
    assert sorted(p.name for p in out.iterdir()) == [
        "a.json",
        "a.obj",
        "a_overlay.png",
        "b.json",
        "b.obj",
        "b_overlay.png",
    ]
    (tmp_path / "empty").mkdir()
    assert predict.main([str(tmp_path / "empty"), "--model", str(keras_file)]) == 2
    assert "empty is a folder without image files" in capsys.readouterr().err
    # --out problems are found before the model loads (the model path here does not even exist).
    (tmp_path / "taken").write_text("a file")
    assert predict.main([str(folder / "a.png"), "--model", "none.keras", "--out", str(tmp_path / "taken")]) == 2
    assert f"--out {tmp_path / 'taken'} is a file; expected a folder" in capsys.readouterr().err
    assert predict.main([str(folder / "a.png"), "--model", "none.keras", "--out", str(tmp_path / "taken" / "x")]) == 2
    assert f"cannot write into --out {tmp_path / 'taken' / 'x'}: Not a directory" in capsys.readouterr().err
    # A run that fails (here: no model) leaves no output folder behind.
    assert predict.main([str(folder / "a.png"), "--model", "none.keras", "--out", str(tmp_path / "new")]) == 2
    assert not (tmp_path / "new").exists()
