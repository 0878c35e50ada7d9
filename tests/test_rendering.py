"""Tests of handshape_tf.rendering: the op build, the camera convention, depth against a
numpy ray caster, gradients, culling, normals, and tfg's own pipeline on the same op."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from handshape_tf.assets.template import load_template
from handshape_tf.rendering import (
    interpolate,
    perspective_from_intrinsics,
    rasterize,
    rasterizer_op,
    render_depth,
    render_normals,
    vertex_normals,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def op_cache(tmp_path_factory):
    """Builds the op once per session into a fresh cache folder that every test then uses."""
    cache = tmp_path_factory.mktemp("op_cache")
    rasterizer_op.build_rasterizer_op(cache)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(rasterizer_op.CACHE_ENV, str(cache))
        yield cache


def square(half: float, depth: float) -> tuple[np.ndarray, np.ndarray]:
    """1 x 4 x 3 fronto-parallel square centred on the optical axis, 2 x 3 faces facing the camera."""
    vertices = np.array(
        [[[-half, -half, depth], [half, -half, depth], [half, half, depth], [-half, half, depth]]], np.float32
    )
    # Counter-clockwise seen from the camera (outward normal towards -z).
    return vertices, np.array([[0, 2, 1], [0, 3, 2]], np.int32)


def posed_hand_mm() -> tuple[np.ndarray, np.ndarray]:
    """The template in mm, rotated so fingers overlap in depth, centred 400 mm in front."""
    template = load_template()
    vertices = (template.vertices - template.vertices.mean(axis=0)) * 1000.0
    a, b = 0.7, 0.5
    rot_y = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    rot_x = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    vertices = vertices @ (rot_x @ rot_y).T + np.array([0.0, 0.0, 400.0])
    return vertices.astype(np.float32), template.faces


def ray_cast_depth(vertices, faces, intrinsics, image_size):
    """H x W depth of the nearest triangle hit by each pixel-centre ray (Moller-Trumbore), 0 on miss."""
    height, width = image_size
    fx, fy, cx, cy = np.asarray(intrinsics, np.float64)
    cols, rows = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    rays = np.stack([(cols - cx) / fx, (rows - cy) / fy, np.ones_like(cols)], -1).reshape(-1, 1, 3)
    corners = np.asarray(vertices, np.float64)[faces]  # F x 3 x 3
    best = np.full(len(rays), np.inf)
    for start in range(0, len(faces), 256):
        v0, v1, v2 = (corners[start : start + 256, i][None] for i in range(3))  # 1 x f x 3
        edge1, edge2 = v1 - v0, v2 - v0
        pvec = np.cross(rays, edge2)
        det = np.sum(edge1 * pvec, -1)  # Both sides: no culling.
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / det
            tvec = -v0  # Ray origin is the camera centre.
            u = np.sum(tvec * pvec, -1) * inv
            qvec = np.cross(tvec, edge1)
            v = np.sum(rays * qvec, -1) * inv
            t = np.sum(edge2 * qvec, -1) * inv
        hit = (np.abs(det) > 1e-12) & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0)
        best = np.minimum(best, np.where(hit, t, np.inf).min(axis=1))
    # The rays have unit z, so the ray parameter t is the depth.
    return np.where(np.isfinite(best), best, 0.0).reshape(height, width)


# --- the op -------------------------------------------------------------------------------


def test_op_builds_into_cache_and_is_reused(op_cache):
    path = rasterizer_op.library_path(op_cache)
    assert path.is_file() and path.read_bytes()[:4] == b"\x7fELF"
    assert f"tf{tf.__version__}-tfg2021.12.3-" in path.name
    assert not list(op_cache.glob(".rasterizer_op-*"))  # No temporary file left behind.
    mtime = path.stat().st_mtime_ns
    assert rasterizer_op.build_rasterizer_op(op_cache) == path
    assert path.stat().st_mtime_ns == mtime
    assert rasterizer_op.default_cache_dir() == op_cache


def test_op_loads_and_registers_for_tfg():
    from tensorflow_graphics.rendering import rasterization_backend, triangle_rasterizer

    module = rasterizer_op.load_rasterizer_op()
    assert rasterizer_op.load_rasterizer_op() is module
    assert sys.modules[rasterizer_op.TFG_MODULE_NAME] is module
    # tfg's own pipeline (right-handed camera looking down -z) on its CPU backend.
    triangle = np.array([[[-1.0, -1.0, -5.0], [1.0, -1.0, -5.0], [0.0, 1.0, -5.0]]], np.float32)
    projection = np.diag([5.0, 5.0, -1.0, 0.0]).astype(np.float32)
    projection[2, 3], projection[3, 2] = -2.0, -1.0
    out = triangle_rasterizer.rasterize(
        triangle,
        np.array([[0, 1, 2]], np.int32),
        {},
        projection[None],
        (8, 8),
        enable_cull_face=False,
        backend=rasterization_backend.RasterizationBackends.CPU,
    )
    assert 0 < out["mask"].numpy().sum() < 64


def test_missing_compiler_error_names_it_and_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("CXX", "/nonexistent/bin/g++-missing")
    missing = r"'/nonexistent/bin/g\+\+-missing' not found.*apt-get install g\+\+"
    with pytest.raises(RuntimeError, match=missing):
        rasterizer_op.build_rasterizer_op(tmp_path)
    monkeypatch.delenv("CXX")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match=r"'g\+\+' not found.*apt-get install g\+\+"):
        rasterizer_op.build_rasterizer_op(tmp_path)
    assert not list(tmp_path.glob("*.so"))


def test_cli_prints_library_path(op_cache):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "handshape_tf.rendering.rasterizer_op", "--cache-dir", str(op_cache)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        cwd=REPO,
    )
    assert result.stdout.strip().splitlines()[-1] == str(rasterizer_op.library_path(op_cache))
    assert "RuntimeWarning" not in result.stderr


# --- camera convention and depth ----------------------------------------------------------


@pytest.mark.parametrize("image_size", [(32, 32), (24, 40)])
def test_plane_depth_and_exact_pixel_coverage(image_size):
    height, width = image_size
    vertices, faces = square(half=50.0, depth=500.0)
    fx, fy, cx, cy = 120.0, 100.0, width / 2 - 0.7, height / 2 + 1.3
    depth = render_depth(vertices, faces, [[fx, fy, cx, cy]], image_size).numpy()[0]
    # The square projects to [cx - 12, cx + 12] x [cy - 10, cy + 10]; covered = centres inside.
    centres_x = np.arange(width) + 0.5
    centres_y = np.arange(height) + 0.5
    inside_x = np.abs(centres_x - cx) <= fx * 50.0 / 500.0
    inside_y = np.abs(centres_y - cy) <= fy * 50.0 / 500.0
    expected = inside_y[:, None] & inside_x[None, :]
    np.testing.assert_array_equal(depth > 0, expected)
    np.testing.assert_allclose(depth[expected], 500.0, rtol=1e-6)
    assert np.all(depth[~expected] == 0.0)


def test_off_centre_triangle_covers_the_opencv_pixels():
    # Not symmetric about the principal point, so a flipped or transposed axis would show.
    vertices = np.array([[[29.0, -21.0, 300.0], [31.5, -21.0, 300.0], [30.0, -18.5, 300.0]]], np.float32)
    fx, fy, cx, cy = 200.0, 180.0, 20.0, 30.0
    mask = rasterize(vertices, [[0, 1, 2]], [fx, fy, cx, cy], (48, 64)).mask.numpy()[0]
    # Projected corners (x = fx X / Z + cx, y = fy Y / Z + cy): (39.33, 17.4), (41, 17.4), (40, 18.9).
    projected = vertices[0, :, :2] / vertices[0, :, 2:] * [fx, fy] + [cx, cy]
    cols, rows = np.meshgrid(np.arange(64) + 0.5, np.arange(48) + 0.5)
    centres = np.stack([cols, rows], -1)
    signs = []
    for i in range(3):
        edge = projected[(i + 1) % 3] - projected[i]
        offset = centres - projected[i]
        signs.append(edge[0] * offset[..., 1] - edge[1] * offset[..., 0])
    signs = np.stack(signs)
    expected = np.all(signs >= 0, axis=0) | np.all(signs <= 0, axis=0)
    assert np.array_equal(np.argwhere(expected), [[17, 39], [17, 40]])  # Up-right of (cx, cy).
    np.testing.assert_array_equal(mask > 0, expected)


def test_hand_depth_matches_ray_casting():
    vertices, faces = posed_hand_mm()
    image_size = (56, 48)
    intrinsics = np.array([110.0, 115.0, 23.2, 28.9], np.float32)
    depth = render_depth(vertices[None], faces, intrinsics[None], image_size).numpy()[0]
    reference = ray_cast_depth(vertices, faces, intrinsics, image_size)
    covered, expected = depth > 0, reference > 0
    assert expected.sum() > 400  # The hand fills a good part of the image.
    # Pixel centres on a silhouette edge may go either way (fixed point vs float64); none
    # did at this pose, a couple would be fine.
    assert np.sum(covered != expected) <= 2
    both = covered & expected
    relative = np.abs(depth[both] - reference[both]) / reference[both]
    assert relative.max() < 1e-3  # Measured 6e-7: the interpolated depth is exact.
    assert np.median(relative) < 1e-6


def test_culling_gives_same_depth_for_closed_mesh_and_drops_back_faces():
    vertices, faces = posed_hand_mm()
    intrinsics = [[110.0, 115.0, 24.0, 28.0]]
    both = render_depth(vertices[None], faces, intrinsics, (56, 48)).numpy()
    culled = render_depth(vertices[None], faces, intrinsics, (56, 48), cull_backfaces=True).numpy()
    assert np.sum(np.abs(both - culled) > 1e-3 * 400) <= 2
    plane, plane_faces = square(50.0, 500.0)
    intrinsics = [[100.0, 100.0, 16.0, 16.0]]
    assert render_depth(plane, plane_faces, intrinsics, (32, 32), cull_backfaces=True).numpy().max() > 0
    back = render_depth(plane, plane_faces[:, ::-1], intrinsics, (32, 32), cull_backfaces=True)
    assert back.numpy().max() == 0.0
    assert render_depth(plane, plane_faces[:, ::-1], intrinsics, (32, 32)).numpy().max() > 0


def test_near_far_clip():
    vertices, faces = square(50.0, 500.0)
    intrinsics = [[100.0, 100.0, 16.0, 16.0]]
    assert render_depth(vertices, faces, intrinsics, (32, 32), near=10.0, far=600.0).numpy().max() > 0
    assert render_depth(vertices, faces, intrinsics, (32, 32), near=10.0, far=450.0).numpy().max() == 0
    assert render_depth(vertices, faces, intrinsics, (32, 32), near=550.0, far=900.0).numpy().max() == 0


def test_batch_and_tf_function_match_single_eager_renders():
    hand, faces = posed_hand_mm()
    other = hand * np.array([1.0, 1.0, 1.2], np.float32) + np.array([5.0, -8.0, 30.0], np.float32)
    vertices = np.stack([hand, other])
    intrinsics = np.array([[110.0, 115.0, 24.0, 28.0], [90.0, 95.0, 20.0, 30.0]], np.float32)

    @tf.function(input_signature=[tf.TensorSpec([None, None, 3]), tf.TensorSpec([None, 4])])
    def render(v, k):
        return render_depth(v, faces, k, (32, 32))

    batched = render(vertices, intrinsics).numpy()
    assert batched.shape == (2, 32, 32)
    for i in range(2):
        single = render_depth(vertices[i : i + 1], faces, intrinsics[i : i + 1], (32, 32)).numpy()[0]
        np.testing.assert_allclose(batched[i], single, rtol=1e-6)
    assert not np.allclose(batched[0], batched[1])


def test_barycentrics_match_tfg_pipeline():
    """Our per-pixel barycentrics vs tfg's triangle_rasterizer on the same op and matrices."""
    from tensorflow_graphics.rendering import rasterization_backend, triangle_rasterizer

    vertices, faces = posed_hand_mm()
    intrinsics = np.array([[110.0, 115.0, 24.0, 28.0]], np.float32)
    near, far = 300.0, 500.0
    ours = rasterize(vertices[None], faces, intrinsics, (56, 48), near=near, far=far)
    projection = perspective_from_intrinsics(intrinsics, (56, 48), near, far) / far
    theirs = triangle_rasterizer.rasterize(
        vertices[None],
        faces,
        {"z": vertices[None, :, 2:]},
        projection,
        (56, 48),
        enable_cull_face=False,
        backend=rasterization_backend.RasterizationBackends.CPU,
    )
    np.testing.assert_array_equal(ours.mask.numpy(), theirs["mask"].numpy()[..., 0])
    covered = ours.mask.numpy() > 0
    their_ids = theirs["triangle_indices"].numpy()[..., 0]
    np.testing.assert_array_equal(ours.triangle_ids.numpy()[covered], their_ids[covered])
    assert np.all(ours.triangle_ids.numpy()[~covered] == -1)
    # Both are float32 evaluations of the same formula, each within 4e-5 of a float64 one.
    np.testing.assert_allclose(ours.barycentrics.numpy(), theirs["barycentrics"].numpy(), atol=1e-4)
    depth = interpolate(vertices[None, :, 2:], ours).numpy()
    np.testing.assert_allclose(depth, theirs["z"].numpy(), rtol=1e-5)


# --- gradients ----------------------------------------------------------------------------


def test_depth_gradient_pushes_plane_towards_reference():
    vertices, faces = square(50.0, 500.0)
    intrinsics = [[100.0, 100.0, 16.0, 16.0]]
    vertices = tf.Variable(vertices)
    with tf.GradientTape() as tape:
        depth = render_depth(vertices, faces, intrinsics, (32, 32))
        total = tf.reduce_sum(depth)
    gradient = tape.gradient(total, vertices).numpy()[0]
    assert np.all(gradient[:, 2] > 0)
    # Moving the whole plane by dz moves every covered pixel by dz.
    np.testing.assert_allclose(gradient[:, 2].sum(), np.sum(depth.numpy() > 0), rtol=1e-4)

    mask = tf.cast(depth > 0, tf.float32)
    reference = 520.0 * mask

    def loss():
        d = render_depth(vertices, faces, intrinsics, (32, 32))
        return tf.reduce_mean(tf.square(d - reference) * mask)

    before = loss()
    with tf.GradientTape() as tape:
        value = loss()
    vertices.assign_sub(1.0 * tape.gradient(value, vertices))  # Steps of a few mm.
    assert loss() < 0.7 * before
    assert np.all(vertices.numpy()[0, :, 2] > 500.0)


def test_depth_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    vertices, faces = square(50.0, 500.0)
    vertices = vertices + rng.uniform(-20.0, 20.0, vertices.shape).astype(np.float32)
    intrinsics = [[100.0, 100.0, 16.0, 16.0]]
    weights = tf.constant(rng.uniform(0.5, 1.5, (1, 32, 32)), tf.float32)

    def objective(v):
        return tf.reduce_sum(render_depth(v, faces, intrinsics, (32, 32)) * weights)

    v = tf.constant(vertices)
    with tf.GradientTape() as tape:
        tape.watch(v)
        value = objective(v)
    analytic = tape.gradient(value, v).numpy()[0]
    step = 0.05
    numeric = np.zeros_like(analytic)
    for i in range(4):
        for j in range(3):
            delta = np.zeros_like(vertices)
            delta[0, i, j] = step
            numeric[i, j] = (objective(vertices + delta) - objective(vertices - delta)).numpy() / (2 * step)
    np.testing.assert_allclose(analytic, numeric, rtol=0.05, atol=0.05 * np.abs(numeric).max())


# --- normals ------------------------------------------------------------------------------


def test_vertex_normals_of_octahedron_point_outward():
    # Regular octahedron: by symmetry each vertex normal is the unit vertex position.
    vertices = np.concatenate([np.eye(3), -np.eye(3)]).astype(np.float32)  # +x +y +z -x -y -z
    faces = []
    for sx, sy, sz in np.ndindex(2, 2, 2):
        face = [sx * 3, 1 + sy * 3, 2 + sz * 3]
        faces.append(face if (sx + sy + sz) % 2 == 0 else face[::-1])  # Counter-clockwise outward.
    normals = vertex_normals(vertices[None], np.array(faces, np.int32)).numpy()[0]
    np.testing.assert_allclose(normals, vertices, atol=1e-6)


def test_normal_maps_face_the_camera():
    vertices, faces = square(50.0, 500.0)
    normal_map = render_normals(vertices, faces, [[100.0, 100.0, 16.0, 16.0]], (32, 32)).numpy()[0]
    covered = np.linalg.norm(normal_map, axis=-1) > 0
    assert covered.sum() == 20 * 20
    np.testing.assert_allclose(normal_map[covered], np.tile([0.0, 0.0, -1.0], (400, 1)), atol=1e-6)
    # Visible outward normals of the closed hand point back along the viewing ray.
    hand, hand_faces = posed_hand_mm()
    fx, cx = 110.0, 24.0
    normal_map = render_normals(hand[None], hand_faces, [[fx, fx, cx, cx]], (48, 48)).numpy()[0]
    rows, cols = np.nonzero(np.linalg.norm(normal_map, axis=-1) > 0)
    rays = np.stack([(cols + 0.5 - cx) / fx, (rows + 0.5 - cx) / fx, np.ones(len(rows))], -1)
    np.testing.assert_allclose(np.linalg.norm(normal_map[rows, cols], axis=-1), 1.0, rtol=1e-5)
    assert np.mean(np.sum(normal_map[rows, cols] * rays, axis=-1) < 0) > 0.97


def test_interpolate_affine_attribute_is_exact_on_a_tilted_plane():
    # On a planar triangle an attribute affine in (X, Y) interpolates to its value at the
    # point hit by the pixel-centre ray. Tilted plane Z = 500 + 0.5 X, shared V x K attribute.
    vertices, faces = square(50.0, 500.0)
    vertices[0, :, 2] += 0.5 * vertices[0, :, 0]
    x, y = vertices[0, :, 0], vertices[0, :, 1]
    attribute = np.stack([x, y, 2.0 * x - y + 3.0], -1)
    fx, cx = 100.0, 16.0
    fragments = rasterize(vertices, faces, [fx, fx, cx, cx], (32, 32))
    image = interpolate(attribute, fragments).numpy()[0]
    covered = fragments.mask.numpy()[0] > 0
    rows, cols = np.nonzero(covered)
    ray_x, ray_y = (cols + 0.5 - cx) / fx, (rows + 0.5 - cx) / fx
    depth = 500.0 / (1.0 - 0.5 * ray_x)  # Z = 500 + 0.5 Z ray_x on the ray (X, Y) = Z (ray_x, ray_y).
    x, y = depth * ray_x, depth * ray_y
    np.testing.assert_allclose(image[rows, cols], np.stack([x, y, 2 * x - y + 3], -1), atol=1e-3)
    assert np.all(image[~covered] == 0.0)


# --- argument errors ----------------------------------------------------------------------


def test_argument_errors():
    vertices, faces = square(50.0, 500.0)
    intrinsics = [[100.0, 100.0, 16.0, 16.0]]
    with pytest.raises(ValueError, match=r"vertices have shape \(4, 3\); expected B x V x 3"):
        rasterize(vertices[0], faces, intrinsics, (32, 32))
    with pytest.raises(ValueError, match=r"faces have shape \(2, 4\); expected F x 3"):
        rasterize(vertices, np.zeros((2, 4), np.int32), intrinsics, (32, 32))
    with pytest.raises(ValueError, match=r"intrinsics have shape \(1, 3\); expected B x 4"):
        rasterize(vertices, faces, [[100.0, 16.0, 16.0]], (32, 32))
    with pytest.raises(ValueError, match=r"image_size is \(32, 0\); expected \(height, width\)"):
        rasterize(vertices, faces, intrinsics, (32, 0))
    with pytest.raises(ValueError, match="near = 600.0, far = 500.0; expected near < far"):
        rasterize(vertices, faces, intrinsics, (32, 32), near=600.0, far=500.0)
    with pytest.raises(ValueError, match="near = -1.0; expected a positive depth"):
        rasterize(vertices, faces, intrinsics, (32, 32), near=-1.0)
