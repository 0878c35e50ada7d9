"""Tests for handshape_tf.geometry: camera, heat-maps, Procrustes alignment."""

import numpy as np
import pytest
import tensorflow as tf

from handshape_tf.geometry import (
    crop_intrinsics,
    heatmaps_to_uv_argmax,
    heatmaps_to_uv_soft_argmax,
    procrustes_align,
    procrustes_align_np,
    procrustes_transform,
    project,
    render_heatmaps,
    root_depth_and_scale,
    uvd_to_xyz,
    xyz_to_uvd,
)
from handshape_tf.geometry.alignment import det3

INTRINSICS = np.array([[600.0, 580.0, 320.0, 240.0]], np.float32)


def _uniform_columns(rng, ranges, size):
    """float32 array of shape size + (len(ranges),), column k uniform in ranges[k]."""
    return np.stack([rng.uniform(low, high, size) for low, high in ranges], axis=-1).astype(np.float32)


def _random_camera_batch(rng, batch=4, points=21):
    xyz = _uniform_columns(rng, [(-80, 80), (-60, 60), (350, 900)], (batch, points))
    intrinsics = _uniform_columns(rng, [(500, 700), (500, 700), (300, 340), (220, 260)], (batch,))
    crop_box = _uniform_columns(rng, [(100, 300), (50, 200), (100, 250), (100, 250)], (batch,))
    return xyz, intrinsics, crop_box


def _random_rotation(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


# ----------------------------------------------------------------------------- camera


def test_project_matches_hand_computed_pixel():
    pixels = project([[[100.0, -50.0, 500.0]]], INTRINSICS)
    # x = 600 * 100 / 500 + 320, y = 580 * -50 / 500 + 240.
    np.testing.assert_allclose(pixels.numpy(), [[[440.0, 182.0]]], rtol=1e-6)


def test_crop_intrinsics_hand_computed_and_consistent_with_projection():
    crop_box = np.array([[300.0, 150.0, 200.0, 100.0]], np.float32)
    result = crop_intrinsics(INTRINSICS, crop_box, 256).numpy()
    np.testing.assert_allclose(result, [[768.0, 1484.8, 25.6, 230.4]], rtol=1e-6)
    rectangular = crop_intrinsics(INTRINSICS, crop_box, (128, 64)).numpy()
    np.testing.assert_allclose(rectangular, [[384.0, 371.2, 12.8, 57.6]], rtol=1e-6)
    # Projecting with the crop's intrinsics = full-image pixels shifted and resized.
    xyz = np.array([[[100.0, -50.0, 500.0], [-20.0, 30.0, 700.0]]], np.float32)
    full = project(xyz, INTRINSICS).numpy()
    expected = (full - crop_box[:, None, :2]) * np.array([128 / 200, 64 / 100])
    np.testing.assert_allclose(project(xyz, rectangular).numpy(), expected, rtol=1e-5)


def test_xyz_to_uvd_hand_computed():
    keypoints = np.zeros((1, 21, 3), np.float32)
    keypoints[..., 2] = 400.0
    keypoints[0, 0] = [0.0, 0.0, 450.0]  # root depth 450
    keypoints[0, 9] = [0.0, 0.0, 500.0]
    keypoints[0, 10] = [30.0, 40.0, 500.0]  # scale 50
    keypoints[0, 3] = [100.0, -50.0, 500.0]  # pixel (440, 182)
    crop_box = np.array([[400.0, 100.0, 80.0, 160.0]], np.float32)
    uvd = xyz_to_uvd(keypoints, INTRINSICS, crop_box).numpy()
    np.testing.assert_allclose(uvd[0, 3], [40 / 80, 82 / 160, (500 - 450) / 50], rtol=1e-6)
    np.testing.assert_allclose(uvd[0, 0, 2], 0.0)
    root_depth, scale = root_depth_and_scale(keypoints)
    np.testing.assert_allclose(root_depth.numpy(), [450.0])
    np.testing.assert_allclose(scale.numpy(), [50.0])


def test_uvd_xyz_round_trip_keypoints_and_mesh_vertices():
    rng = np.random.default_rng(0)
    keypoints, intrinsics, crop_box = _random_camera_batch(rng)
    uvd = xyz_to_uvd(keypoints, intrinsics, crop_box)
    root_depth, scale = root_depth_and_scale(keypoints)
    back = uvd_to_xyz(uvd, intrinsics, crop_box, root_depth, scale)
    np.testing.assert_allclose(back.numpy(), keypoints, rtol=1e-5, atol=1e-3)
    # Mesh vertices use the keypoints' root depth and scale.
    vertices, _, _ = _random_camera_batch(rng, points=50)
    vertex_uvd = xyz_to_uvd(vertices, intrinsics, crop_box, scale=scale, root_depth=root_depth)
    expected_depth = (vertices[..., 2] - root_depth[:, None]) / scale[:, None]
    np.testing.assert_allclose(vertex_uvd.numpy()[..., 2], expected_depth, rtol=1e-5)
    back = uvd_to_xyz(vertex_uvd, intrinsics, crop_box, root_depth, scale)
    np.testing.assert_allclose(back.numpy(), vertices, rtol=1e-5, atol=1e-3)


def test_camera_functions_broadcast_shared_parameters_and_run_in_tf_function():
    rng = np.random.default_rng(1)
    keypoints, intrinsics, crop_box = _random_camera_batch(rng, batch=3)
    shared = xyz_to_uvd(keypoints, intrinsics[0], crop_box[0])
    batched = xyz_to_uvd(keypoints, np.repeat(intrinsics[:1], 3, 0), np.repeat(crop_box[:1], 3, 0))
    np.testing.assert_allclose(shared.numpy(), batched.numpy(), rtol=1e-6)

    specs = [tf.TensorSpec([None, 21, 3]), tf.TensorSpec([None, 4]), tf.TensorSpec([None, 4])]

    @tf.function(input_signature=specs)
    def round_trip(xyz, k, box):
        root_depth, scale = root_depth_and_scale(xyz)
        return uvd_to_xyz(xyz_to_uvd(xyz, k, box), k, box, root_depth, scale)

    back = round_trip(keypoints, intrinsics, crop_box).numpy()
    np.testing.assert_allclose(back, keypoints, rtol=1e-5, atol=1e-3)


def test_camera_errors():
    keypoints = np.ones((1, 21, 3), np.float32)
    keypoints[0, 10] += 1.0
    good_box = [[0.0, 0.0, 100.0, 100.0]]
    with pytest.raises(ValueError, match=r"intrinsics has shape \(1, 3\); expected B x 4"):
        project(keypoints, [[600.0, 600.0, 320.0]])
    with pytest.raises(ValueError, match=r"xyz has shape \(1, 21, 2\); expected B x P x 3"):
        project(keypoints[..., :2], INTRINSICS)
    with pytest.raises(ValueError, match=r"intrinsics must be finite .* fx, fy > 0; received \[600.0, nan"):
        xyz_to_uvd(keypoints, [[600.0, np.nan, 320.0, 240.0]], good_box)
    with pytest.raises(ValueError, match=r"intrinsics must be finite"):
        project(keypoints, [[0.0, 600.0, 320.0, 240.0]])
    with pytest.raises(
        ValueError, match=r"crop_box must be finite \(x0, y0, w, h\) with w, h > 0 .*\[10.0, 10.0, 0.0, 50"
    ):
        xyz_to_uvd(keypoints, INTRINSICS, [[10.0, 10.0, 0.0, 50.0]])
    with pytest.raises(ValueError, match=r"crop_box has shape \(1, 2\); expected B x 4"):
        uvd_to_xyz(keypoints, INTRINSICS, [[1.0, 2.0]], [500.0], [30.0])
    with pytest.raises(ValueError, match=r"keypoints has shape \(1, 5, 3\); expected B x 21 x 3"):
        xyz_to_uvd(keypoints[:, :5], INTRINSICS, good_box)
    with pytest.raises(ValueError, match=r"scale \(length of the bone between keypoints \(9, 10\)\) must be finite"):
        xyz_to_uvd(np.ones((1, 21, 3)), INTRINSICS, good_box)
    with pytest.raises(ValueError, match=r"scale \(given\) must be finite and > 0; received 0.0"):
        xyz_to_uvd(keypoints, INTRINSICS, good_box, scale=[0.0])
    with pytest.raises(ValueError, match=r"out_size is 0; expected a positive int"):
        crop_intrinsics(INTRINSICS, good_box, 0)


def test_camera_checks_constant_inputs_inside_tf_function():
    @tf.function
    def convert(xyz):
        return xyz_to_uvd(xyz, INTRINSICS, [[0.0, 0.0, 0.0, 10.0]], scale=[1.0])

    with pytest.raises(ValueError, match="crop_box must be finite"):
        convert(tf.ones((1, 21, 3)))


# ----------------------------------------------------------------------------- heat-maps


def test_render_heatmaps_hand_computed_values():
    uv = np.array([[[10.5 / 64, 20.5 / 64]]], np.float32)  # centre of pixel (col 10, row 20)
    maps = render_heatmaps(uv, 64, 4.0).numpy()
    assert maps.shape == (1, 64, 64, 1)
    assert maps[0, 20, 10, 0] == pytest.approx(1.0)
    assert maps[0, 20, 12, 0] == pytest.approx(np.exp(-4 / 32), rel=1e-6)
    assert maps[0, 23, 14, 0] == pytest.approx(np.exp(-(9 + 16) / 32), rel=1e-6)
    assert maps.max() == pytest.approx(1.0)


def test_render_heatmaps_outside_joints_and_valid_mask():
    uv = np.array([[[-2 / 64, 30.5 / 64], [-0.5, 0.5], [0.5, 0.5]]], np.float32)
    valid = np.array([[True, True, False]])
    maps = render_heatmaps(uv, 64, 4.0, valid=valid).numpy()
    # 2 px left of the crop: partial Gaussian, largest at the border pixel's centre 2.5 px away.
    assert maps[..., 0].max() == pytest.approx(np.exp(-(2.5**2) / 32), rel=1e-6)
    assert maps[0, 30, 0, 0] == pytest.approx(np.exp(-(2.5**2) / 32), rel=1e-6)
    assert maps[..., 1].max() < 1e-12  # 32 px outside: all zero
    assert np.all(maps[..., 2] == 0)  # masked


def test_heatmap_decoding_round_trip():
    rng = np.random.default_rng(2)
    uv = rng.uniform(0.1, 0.9, (3, 21, 2)).astype(np.float32)
    maps = render_heatmaps(uv, 64, 4.0)
    argmax_uv, confidence = heatmaps_to_uv_argmax(maps)
    assert np.abs(argmax_uv.numpy() - uv).max() * 64 <= 0.5 + 1e-4
    assert confidence.shape == (3, 21)
    assert np.all(confidence.numpy() > np.exp(-0.5 / 32) - 1e-6)  # at most (0.5, 0.5) px off
    soft_uv, soft_confidence = heatmaps_to_uv_soft_argmax(maps)
    assert np.abs(soft_uv.numpy() - uv).max() * 64 < 0.01
    np.testing.assert_array_equal(soft_confidence.numpy(), confidence.numpy())


def test_heatmap_decoding_rectangular_maps_hand_computed():
    maps = np.zeros((1, 4, 8, 2), np.float32)
    maps[0, 1, 6, 0] = 2.0
    maps[0, 3, 0, 1] = 0.5
    uv, confidence = heatmaps_to_uv_argmax(maps)
    np.testing.assert_allclose(uv.numpy(), [[[6.5 / 8, 1.5 / 4], [0.5 / 8, 3.5 / 4]]])
    np.testing.assert_allclose(confidence.numpy(), [[2.0, 0.5]])


def test_soft_argmax_is_differentiable():
    uv = tf.Variable([[[0.4, 0.6]]])
    with tf.GradientTape() as tape:
        decoded, _ = heatmaps_to_uv_soft_argmax(render_heatmaps(uv, 64, 4.0))
        loss = tf.reduce_sum(decoded)
    gradient = tape.gradient(loss, uv).numpy()
    np.testing.assert_allclose(gradient, [[[1.0, 1.0]]], atol=0.05)


def test_heatmap_errors():
    with pytest.raises(ValueError, match=r"uv has shape \(1, 2, 3\); expected B x J x 2"):
        render_heatmaps(np.zeros((1, 2, 3)), 64, 4.0)
    with pytest.raises(ValueError, match=r"size is 0; expected a positive int"):
        render_heatmaps(np.zeros((1, 2, 2)), 0, 4.0)
    with pytest.raises(ValueError, match=r"sigma is 0.0; expected a positive"):
        render_heatmaps(np.zeros((1, 2, 2)), 64, 0.0)
    with pytest.raises(ValueError, match=r"heatmaps has shape \(64, 64, 21\); expected B x H x W x J"):
        heatmaps_to_uv_argmax(np.zeros((64, 64, 21)))
    with pytest.raises(ValueError, match=r"beta is -1.0; expected a positive"):
        heatmaps_to_uv_soft_argmax(np.zeros((1, 8, 8, 1)), beta=-1.0)


# ----------------------------------------------------------------------------- alignment


def test_procrustes_recovers_similarity_transform():
    rng = np.random.default_rng(3)
    target = rng.normal(size=(2, 30, 3)) * 40
    rotations = np.stack([_random_rotation(rng) for _ in range(2)])
    pred = 2.5 * target @ np.swapaxes(rotations, 1, 2) + np.array([[[10.0, -20.0, 300.0]]])
    aligned = procrustes_align(pred.astype(np.float32), target.astype(np.float32)).numpy()
    np.testing.assert_allclose(aligned, target, atol=2e-3)
    np.testing.assert_allclose(procrustes_align_np(pred, target), target, atol=1e-9)
    np.testing.assert_allclose(procrustes_align_np(pred[0], target[0]), target[0], atol=1e-9)
    scale, rotation, translation = procrustes_transform(pred.astype(np.float32), target.astype(np.float32))
    np.testing.assert_allclose(scale.numpy(), [0.4, 0.4], rtol=1e-5)
    np.testing.assert_allclose(rotation.numpy(), np.swapaxes(rotations, 1, 2), atol=1e-5)
    assert translation.shape == (2, 3)


def test_procrustes_tf_matches_numpy_and_fixes_reflection():
    rng = np.random.default_rng(4)
    pred = rng.normal(size=(3, 21, 3))
    target = pred * np.array([-1.0, 1.0, 1.0]) + 0.1 * rng.normal(size=(3, 21, 3))  # a mirror image
    aligned_np = procrustes_align_np(pred, target)
    aligned_tf = procrustes_align(pred.astype(np.float32), target.astype(np.float32)).numpy()
    np.testing.assert_allclose(aligned_tf, aligned_np, atol=1e-4)
    _, rotation, _ = procrustes_transform(pred.astype(np.float32), target.astype(np.float32))
    np.testing.assert_allclose(np.linalg.det(rotation.numpy()), 1.0, atol=1e-5)
    # A proper rotation cannot undo a mirror image.
    assert np.abs(aligned_np - target).max() > 0.5


def test_procrustes_degenerate_pred_maps_to_target_centroid():
    target = np.arange(12, dtype=np.float32).reshape(1, 4, 3)
    pred = np.ones((1, 4, 3), np.float32)
    centroid = target.mean(axis=1, keepdims=True).repeat(4, axis=1)
    np.testing.assert_allclose(procrustes_align(pred, target).numpy(), centroid, atol=1e-5)
    np.testing.assert_allclose(procrustes_align_np(pred, target), centroid, atol=1e-12)


def test_procrustes_errors():
    with pytest.raises(ValueError, match=r"pred has shape \(1, 4, 3\) and target \(1, 5, 3\); expected the same"):
        procrustes_align(np.zeros((1, 4, 3)), np.zeros((1, 5, 3)))
    with pytest.raises(ValueError, match=r"pred has shape \(4, 2\) and target \(4, 2\)"):
        procrustes_align_np(np.zeros((4, 2)), np.zeros((4, 2)))


def test_det3_is_the_determinant():
    """The XLA-compilable determinant of the Procrustes fit against numpy's, reflections included."""
    matrices = np.random.default_rng(0).normal(size=(5, 3, 3)).astype(np.float32)
    matrices[0] = np.diag([1.0, 1.0, -1.0])
    np.testing.assert_allclose(det3(tf.constant(matrices)), np.linalg.det(matrices), rtol=1e-5, atol=1e-6)


def test_procrustes_compiles_with_xla():
    """The fit has no MatrixDeterminant, so an XLA-compiled step may hold it; same result."""
    rng = np.random.default_rng(1)
    pred, target = (tf.constant(rng.normal(size=(3, 21, 3)), tf.float32) for _ in range(2))
    eager = procrustes_transform(pred, target)
    compiled = tf.function(procrustes_transform, jit_compile=True)(pred, target)
    for a, b in zip(eager, compiled):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
