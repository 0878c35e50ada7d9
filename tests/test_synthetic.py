"""The synthetic dataset generator: labels against the geometry (projection, a numpy ray caster,
re-posing from the stored parameters), mirrored left hands, shards (bytes, round trip, resume),
backgrounds, appearance helpers, preview and bad inputs."""

import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from handshape_tf.assets.template import load_template
from handshape_tf.data import appearance, backgrounds, preview, shards, synthetic
from handshape_tf.data.backgrounds import BackgroundError, BackgroundSource
from handshape_tf.data.domains import PHOTO, get_domain
from handshape_tf.data.hand_poses import joint_positions, palm_axes, pose_rotations
from handshape_tf.data.hand_shapes import SHAPE_PARAMETER_NAMES, apply_shape, shape_template
from handshape_tf.data.renderer import (
    _SLEEVE_POINTS,
    HandRenderer,
    _band_faces,
    _fan_faces,
    interpolate_covered,
    stub_cap,
)
from handshape_tf.data.sample_params import (
    FOREARM_CONE_DEG,
    FRONTAL_CONE_DEG,
    FRONTAL_ROLL_DEG,
    _rotation_between,
    mirror_params,
    project,
    sample_params,
)
from handshape_tf.geometry.skinning import pose_hand

REPO = Path(__file__).resolve().parents[1]
SIZE = 64  # small crops keep the tests fast; the geometry does not depend on the size
FLIP_X = np.array([-1.0, 1.0, 1.0])


# Uncut crops (the labels test checks that the crop holds the whole hand), no occluders (the
# mirror test compares masks; occluders are drawn in pixel coordinates, not mirrored).
DOMAIN = "photo-without-framing-occluders"


@pytest.fixture(scope="module")
def renderer():
    domain = get_domain(DOMAIN)
    folder, split = synthetic.resolve_backgrounds(domain, None)  # the fixture bank (conftest)
    return HandRenderer(SIZE, BackgroundSource(folder, split=split), domain)


def _params(renderer, seed, count, *, right_only=False):
    params = [
        sample_params(synthetic.sample_rng(seed, i), renderer.templates, domain=renderer.domain) for i in range(count)
    ]
    if right_only:
        params = [mirror_params(p) if p.is_left else p for p in params]
    return params


def ray_cast(vertices, faces, intrinsics, pixels):
    """Depth of the nearest triangle hit by each pixel-centre ray (Moller-Trumbore), 0 on a miss.

    Args: vertices V x 3 camera mm, faces F x 3, intrinsics (fx, fy, cx, cy), pixels P x 2 (row, col).
    """
    fx, fy, cx, cy = np.asarray(intrinsics, np.float64)
    corners = np.asarray(vertices, np.float64)[faces]  # F x 3 x 3
    edge1, edge2 = corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]
    depths = []
    for row, col in pixels:
        ray = np.array([(col + 0.5 - cx) / fx, (row + 0.5 - cy) / fy, 1.0])
        p = np.cross(ray, edge2)
        det = np.einsum("fc,fc->f", edge1, p)
        ok = np.abs(det) > 1e-12
        inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
        s = -corners[:, 0]  # ray origin at the camera centre
        u = np.einsum("fc,fc->f", s, p) * inv
        q = np.cross(s, edge1)
        v = (q @ ray) * inv
        t = np.einsum("fc,fc->f", edge2, q) * inv  # ray z = 1, so t is the depth
        hit = ok & (u >= -1e-9) & (v >= -1e-9) & (u + v <= 1 + 1e-9) & (t > 0)
        depths.append(t[hit].min() if hit.any() else 0.0)
    return np.array(depths)


# ------------------------------------------------------------------------------------- labels


def test_labels_match_geometry(renderer):
    params = _params(renderer, seed=11, count=6)
    samples = renderer.render(params)
    faces = renderer.templates[False].faces
    rng = np.random.default_rng(0)
    for p, s in zip(params, samples):
        uv = project(s["joints_xyz"], s["intrinsics"])
        np.testing.assert_allclose(uv, s["joints_uv"], atol=0.5)
        np.testing.assert_allclose(uv, s["joints_uv"], atol=1e-3)  # they are the same projection
        # The crop holds the whole hand, with a margin.
        vertex_uv = project(s["vertices_xyz"], s["intrinsics"])
        assert vertex_uv.min() > 0.0 and vertex_uv.max() < SIZE
        extent = (vertex_uv.max(axis=0) - vertex_uv.min(axis=0)).max()
        margin = renderer.domain.framing.margin
        assert SIZE / margin[1] - 1e-3 <= extent <= SIZE / margin[0] + 1e-3
        # Mask and depth come from one rasterization of these vertices.
        np.testing.assert_array_equal(s["mask"], s["depth"] > 0)
        assert s["mask"].sum() > 0.05 * SIZE * SIZE
        rows, cols = np.nonzero(s["mask"])
        pick = rng.choice(len(rows), 40, replace=False)
        pixels = np.stack([rows[pick], cols[pick]], axis=1)
        np.testing.assert_allclose(
            ray_cast(s["vertices_xyz"], faces, s["intrinsics"], pixels), s["depth"][rows[pick], cols[pick]], atol=1.0
        )
        # Labels re-posed from the stored shape, pose and camera.
        template = renderer.templates[bool(s["is_left"])]
        rest_vertices, rest_transforms = apply_shape(template, s["shape"])
        posed = pose_hand(
            template,
            pose_rotations(s["pose"], template)[None],
            rest_vertices=rest_vertices,
            rest_transforms=rest_transforms,
        )
        camera = s["camera"].astype(np.float64)
        np.testing.assert_allclose(camera[:3, :3] @ camera[:3, :3].T, np.eye(3), atol=1e-5)
        for model, stored in ((posed.vertices, s["vertices_xyz"]), (posed.keypoints, s["joints_xyz"])):
            expected = 1000.0 * (model.numpy()[0] @ camera[:3, :3].T + camera[:3, 3])
            np.testing.assert_allclose(stored, expected, atol=0.05)
        assert s["root_depth"] == s["joints_xyz"][0, 2]
        np.testing.assert_allclose(s["scale"], np.linalg.norm(s["joints_xyz"][9] - s["joints_xyz"][10]), rtol=1e-6)
        # The keypoints follow the shape: the MCP-PIP bone scales with size and finger length.
        names = list(SHAPE_PARAMETER_NAMES)
        bone = 1000.0 * np.linalg.norm(np.diff(load_template().keypoints[[9, 10]], axis=0))
        expected_scale = bone * s["shape"][names.index("scale")] * s["shape"][names.index("middle_length")]
        np.testing.assert_allclose(s["scale"], expected_scale, rtol=1e-4)
        # The camera sees the hand's centre from `view` at `distance_mm`, off-axis where asked.
        model = posed.vertices.numpy()[0].astype(np.float64)
        centre = 1000.0 * (camera[:3, :3] @ (0.5 * (model.min(axis=0) + model.max(axis=0))) + camera[:3, 3])
        np.testing.assert_allclose(np.linalg.norm(centre), p.distance_mm, rtol=1e-4)
        fx, fy, cx, cy = p.frame_intrinsics
        np.testing.assert_allclose(centre[:2] / centre[2] * [fx, fy] + [cx, cy], p.hand_pixel, atol=0.05)
        axes = palm_axes(posed.joints.numpy()[0].astype(np.float64), p.is_left)
        np.testing.assert_allclose(-(camera[:3, :3] @ (axes.T @ p.view)), centre / np.linalg.norm(centre), atol=1e-5)
        # RGBA: the hand alone, alpha 1 inside the mask away from its edge, 0 far from it.
        alpha = s["image_rgba"][..., 3]
        interior = cv2.erode(s["mask"].astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        far = cv2.dilate(s["mask"].astype(np.uint8), np.ones((3, 3), np.uint8)) == 0
        assert np.all(alpha[interior] == 255) and np.all(alpha[far] == 0)
        assert s["image"].shape == (SIZE, SIZE, 3) and s["image"].dtype == np.uint8


def test_left_hands_mirror_right_hands(renderer):
    right = _params(renderer, seed=5, count=3, right_only=True)
    left = [mirror_params(p) for p in right]
    assert all(p.is_left for p in left) and not any(p.is_left for p in right)
    # The geometry, forearm and sleeve included, mirrors; normals point out of either hand.
    right_scene, left_scene = renderer.scene(right), renderer.scene(left)
    np.testing.assert_allclose(left_scene.vertices, right_scene.vertices * FLIP_X, atol=0.02)
    np.testing.assert_allclose(left_scene.normals, right_scene.normals * FLIP_X, atol=1e-3)
    hand, sleeve = renderer._num_hand_vertices, renderer._sleeve_start
    for scene in (right_scene, left_scene):
        for vertices, normals in zip(scene.vertices, scene.normals):
            outwards = np.sum(normals[:hand] * (vertices[:hand] - vertices[:hand].mean(axis=0)), axis=1)
            # Inside-out normals would flip every sign (a curled hand is not convex: ~65% positive).
            assert np.mean(outwards > 0) > 0.55 and outwards.sum() > 0
            ring = slice(hand, hand + len(renderer._outline))  # the forearm's first ring
            radial = vertices[ring] - vertices[ring].mean(axis=0)
            assert np.all(np.sum(normals[ring] * radial, axis=1) > 0)
            sleeve_ring = slice(sleeve, sleeve + _SLEEVE_POINTS)
            radial = vertices[sleeve_ring] - vertices[sleeve_ring].mean(axis=0)
            assert np.all(np.sum(normals[sleeve_ring] * radial, axis=1) > 0)
    for r, left_sample in zip(renderer.render(right), renderer.render(left)):
        assert left_sample["is_left"] and not r["is_left"]
        np.testing.assert_allclose(left_sample["joints_xyz"], r["joints_xyz"] * FLIP_X, atol=0.02)
        np.testing.assert_allclose(left_sample["vertices_xyz"], r["vertices_xyz"] * FLIP_X, atol=0.02)
        np.testing.assert_allclose(left_sample["joints_uv"][:, 0], SIZE - r["joints_uv"][:, 0], atol=1e-3)
        np.testing.assert_allclose(left_sample["joints_uv"][:, 1], r["joints_uv"][:, 1], atol=1e-3)
        np.testing.assert_allclose(
            left_sample["intrinsics"], [*r["intrinsics"][:2], SIZE - r["intrinsics"][2], r["intrinsics"][3]], rtol=1e-5
        )
        np.testing.assert_array_equal(left_sample["pose"], r["pose"])
        np.testing.assert_array_equal(left_sample["shape"], r["shape"])
        # Mirrored rasterizations agree but for pixel centres exactly on an edge.
        assert np.mean(left_sample["mask"] == r["mask"][:, ::-1]) > 0.995
        both = left_sample["mask"] & r["mask"][:, ::-1]
        np.testing.assert_allclose(left_sample["depth"][both], r["depth"][:, ::-1][both], atol=0.05)


def test_interpolation_matches_the_rendering_package(renderer):
    from handshape_tf.rendering import interpolate, rasterize

    scene = renderer.scene(_params(renderer, seed=8, count=2))
    faces = renderer._faces
    attributes = np.concatenate([scene.vertices[..., 2:], scene.normals], axis=-1)
    fragments = rasterize(scene.vertices, faces, scene.intrinsics.astype(np.float32), (SIZE, SIZE))
    dense = interpolate(attributes, fragments).numpy()
    triangles = fragments.triangle_ids.numpy()
    batch, rows, columns, values = interpolate_covered(scene.vertices, faces, triangles, scene.intrinsics, attributes)
    np.testing.assert_array_equal(
        np.sort(batch * SIZE * SIZE + rows * SIZE + columns), np.flatnonzero(triangles.reshape(-1) >= 0)
    )
    np.testing.assert_allclose(values, dense[batch, rows, columns], atol=0.02)  # depth mm, normals
    assert np.all(np.diff(batch) >= 0)


def test_sample_params_ranges():
    templates = {False: load_template(), True: load_template(left=True)}
    params = [sample_params(synthetic.sample_rng(2, i), templates) for i in range(200)]
    views = np.array([p.view for p in params])
    np.testing.assert_allclose(np.linalg.norm(views, axis=1), 1.0, atol=1e-9)
    assert 0.35 < np.mean(views[:, 2] > 0) < 0.65  # palm and back each about half the time
    for p in params[:40]:  # seen from the wrist, the camera is outside the forearm cone
        shaped = shape_template(templates[p.is_left], p.shape)
        joints = joint_positions(shaped, pose_rotations(p.angles, shaped))
        camera = 0.5 * (joints.min(axis=0) + joints.max(axis=0)) + p.distance_mm / 1000.0 * (
            palm_axes(joints, p.is_left).T @ p.view
        )
        to_camera = camera - shaped.rest_transforms[0, :3, 3]
        angle = np.degrees(np.arccos(to_camera @ shaped.rest_transforms[0, :3, 2] / np.linalg.norm(to_camera)))
        assert angle > FOREARM_CONE_DEG
    assert 0.35 < np.mean([p.is_left for p in params]) < 0.65
    distances = np.array([p.distance_mm for p in params])
    low, high = PHOTO.distance_mm
    assert low <= distances.min() and distances.max() <= high
    for p in params:
        width, height = p.frame_size
        assert 0.1 * width <= p.hand_pixel[0] <= 0.9 * width and 0.1 * height <= p.hand_pixel[1] <= 0.9 * height
    again = sample_params(synthetic.sample_rng(2, 7), templates)
    np.testing.assert_array_equal(again.angles, params[7].angles)
    assert again.appearance_seed == params[7].appearance_seed


def test_rotation_between_and_tube_faces():
    z = np.array([0.0, 0.0, 1.0])
    for target in ([0.0, 0.6, 0.8], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]):
        rotation = _rotation_between(z, np.array(target))
        np.testing.assert_allclose(rotation @ z, target, atol=1e-12)
        np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(rotation) == pytest.approx(1.0)
    # Two counter-clockwise rings about +z (4 points each) and a cap: faces point outwards.
    angle = np.arange(4) * np.pi / 2
    ring = np.stack([np.cos(angle), np.sin(angle), np.zeros(4)], axis=1)
    vertices = np.concatenate([ring, ring + z, [z]])
    faces = np.concatenate([_band_faces(np.arange(4), np.arange(4, 8)), _fan_faces(np.arange(4, 8), 8)])
    corners = vertices[faces]
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    centres = corners.mean(axis=1)
    assert np.all(np.einsum("fc,fc->f", normals[:8, :2], centres[:8, :2]) > 0)  # sides: radial
    assert np.all(normals[8:, 2] > 0)  # cap: along +z
    # The template's stub cap: a single loop, counter-clockwise about the forearm.
    template = load_template()
    cap, outline = stub_cap(template)
    assert cap.sum() == len(outline) - 2  # a flat polygon: n - 2 triangles
    wrist = template.rest_transforms[0]
    local = (template.vertices[outline] - wrist[:3, 3]) @ wrist[:3, :3]
    offsets = local[:, :2] - local[:, :2].mean(axis=0)
    assert np.all(np.diff(np.unwrap(np.arctan2(offsets[:, 1], offsets[:, 0]))) > 0)


# ---------------------------------------------------------------------------------- appearance


def test_ambient_occlusion_matches_direct_sum_and_simple_cases():
    template = load_template()
    rng = np.random.default_rng(0)
    vertices = (template.vertices * 1000.0 + rng.normal(0, 0.5, template.vertices.shape))[None]
    normals = appearance._rest_normals(template)[None]
    occluders = appearance.occluder_vertices(template, 64)
    area = appearance.surface_area(vertices.astype(np.float64), template.faces)[0] / len(occluders)
    offsets = vertices[0][None, occluders].astype(np.float64) - vertices[0][:, None]
    squared = np.maximum((offsets**2).sum(-1), 1e-6 * area)
    distance = np.sqrt(squared)
    receiver = np.maximum(np.einsum("vc,vmc->vm", normals[0], offsets) / distance, 0)
    emitter = np.maximum(-np.einsum("mc,vmc->vm", normals[0][occluders], offsets) / distance, 0)
    expected = 1.0 - np.clip((receiver * emitter / (np.pi * squared / area + 1.0)).sum(-1), 0, 1)
    result = appearance.ambient_occlusion(vertices, normals, occluders, template.faces)
    np.testing.assert_allclose(result[0], expected, atol=1e-4)
    assert 0.0 <= result.min() and result.max() <= 1.0 and result.min() < 0.8  # some folds occluded
    # Two facing unit squares 0.1 apart occlude each other; a single flat square does not.
    square = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], np.float32)
    flat_faces = np.array([[0, 1, 2], [0, 2, 3]])
    up = np.tile([0.0, 0.0, 1.0], (4, 1))
    alone = appearance.ambient_occlusion(square[None], up[None], np.arange(4), flat_faces)
    np.testing.assert_allclose(alone, 1.0)
    pair = np.concatenate([square, square + [0, 0, 0.1]])
    pair_normals = np.concatenate([up, -up])
    pair_faces = np.concatenate([flat_faces, flat_faces[:, ::-1] + 4])
    facing = appearance.ambient_occlusion(pair[None], pair_normals[None], np.arange(8), pair_faces)
    assert np.all(facing < 0.5)


def test_skin_and_lighting():
    regions = appearance.skin_regions(load_template())
    for weights in (regions.palmar, regions.nail, regions.knuckle):
        assert 0.0 <= weights.min() and weights.max() <= 1.0
    assert 0.3 < regions.palmar.mean() < 0.7 and 0.0 < regions.nail.mean() < 0.05
    np.testing.assert_allclose(
        appearance.linear_to_srgb(appearance.srgb_to_linear(np.linspace(0, 1, 11))), np.linspace(0, 1, 11), atol=1e-6
    )
    tones = [appearance.sample_skin(np.random.default_rng(i)) for i in range(60)]
    values = np.array([t.tone for t in tones])
    assert values.min() < 2.5 and values.max() > 8.5  # light to dark
    luminance = np.array([t.base @ [0.2126, 0.7152, 0.0722] for t in tones])
    assert np.corrcoef(values, luminance)[0, 1] < -0.9
    assert all(t.palm @ [0.2126, 0.7152, 0.0722] > t.base @ [0.2126, 0.7152, 0.0722] for t in tones if t.tone > 5)
    lighting = appearance.sample_lighting(np.random.default_rng(3), tones[0])
    assert lighting.directions[0, 2] < 0  # the key light is on the camera's side
    # Lambert + ambient by hand: one light straight on, no wrap, no specular, no occlusion.
    lit = appearance.Lighting(
        sky=np.full(3, 0.2),
        ground=np.full(3, 0.2),
        up=np.array([0.0, -1.0, 0.0]),
        directions=np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0]]),
        colours=np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]),
        wrap=0.0,
        shininess=10.0,
        exposure=1.0,
    )
    normal = np.array([[0.0, np.sin(0.5), -np.cos(0.5)]])
    radiance = appearance.shade(
        normal, np.array([[0.0, 0.0, -1.0]]), np.full((1, 3), 0.5), np.zeros(1), np.ones(1), lit
    )
    np.testing.assert_allclose(radiance[0], 0.5 * (0.2 + np.cos(0.5)), rtol=1e-6)


# --------------------------------------------------------------------------------- backgrounds


def test_procedural_backgrounds():
    source = BackgroundSource()
    images = [source.sample(np.random.default_rng(i), 48) for i in range(12)]
    for image in images:
        assert image.shape == (48, 48, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(source.sample(np.random.default_rng(4), 48), images[4])
    means = np.array([image.reshape(-1, 3).mean(axis=0) for image in images])
    assert means.std(axis=0).min() > 10  # varied colours
    seeded = BackgroundSource(seed=9)
    np.testing.assert_array_equal(seeded.sample(None, 32), BackgroundSource(seed=9).sample(None, 32))
    with pytest.raises(ValueError, match="size is 0; expected a positive int"):
        source.sample(None, 0)


def test_folder_backgrounds_skip_corrupt_images(tmp_path, caplog):
    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    rng = np.random.default_rng(0)
    cv2.imwrite(str(folder / "a.png"), rng.integers(0, 255, (40, 60, 3), dtype=np.uint8))
    cv2.imwrite(str(folder / "nested" / "b.jpg"), np.full((50, 30, 3), 200, np.uint8))
    (folder / "broken.jpg").write_bytes(b"not a jpeg at all")
    (folder / "notes.txt").write_text("ignored")
    source = BackgroundSource(folder)
    with caplog.at_level(logging.WARNING, logger="handshape_tf.data.backgrounds"):
        images = [source.sample(np.random.default_rng(i), 24) for i in range(20)]
    assert all(image.shape == (24, 24, 3) and image.dtype == np.uint8 for image in images)
    assert source.num_skipped == 1
    assert sum("broken.jpg" in record.message for record in caplog.records) == 1  # warned once
    # Draws depend on the generator only, not on which bad images were found before.
    np.testing.assert_array_equal(BackgroundSource(folder).sample(np.random.default_rng(7), 24), images[7])

    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "x.png").write_bytes(b"\x89PNG broken")
    unreadable = "images drawn in a row from .* were unreadable"
    with caplog.at_level(logging.ERROR), pytest.raises(BackgroundError, match=unreadable):
        BackgroundSource(only_bad).sample(np.random.default_rng(0), 24)


def test_background_folder_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.md").write_text("no images here")
    with pytest.raises(BackgroundError, match=r"holds no images; expected files ending in \.jpg"):
        BackgroundSource(empty)
    with pytest.raises(BackgroundError, match="does not exist"):
        BackgroundSource(tmp_path / "missing")
    with pytest.raises(BackgroundError, match="is a file; expected a folder of images"):
        BackgroundSource(empty / "readme.md")
    with pytest.raises(BackgroundError, match="holds no images"):
        synthetic.generate_dataset(tmp_path / "out", 2, image_size=SIZE, workers=0, backgrounds=empty, progress=False)
    assert not (tmp_path / "out").exists()


def test_packaged_photos_are_optional():
    for path in backgrounds.packaged_photos():
        assert path.is_file() and path.suffix in backgrounds.IMAGE_SUFFIXES


# -------------------------------------------------------------------------------------- shards


def _shard_bytes(folder):
    return {p.name: p.read_bytes() for p in sorted(Path(folder).glob("shard-*.tfrecord"))}


def test_dataset_round_trip_and_determinism(tmp_path, renderer):
    metadata = synthetic.generate_dataset(
        tmp_path / "a", 5, seed=3, image_size=SIZE, workers=0, samples_per_shard=2, progress=False, domain=DOMAIN
    )
    assert metadata["complete"] and metadata["num_complete_samples"] == 5 and metadata["num_shards"] == 3
    assert metadata["shard_counts"] == {
        shards.shard_name(0, 3): 2,
        shards.shard_name(1, 3): 2,
        shards.shard_name(2, 3): 1,
    }
    assert shards.read_metadata(tmp_path / "a") == metadata
    assert metadata["seed"] == 3 and metadata["generator_version"] == synthetic.GENERATOR_VERSION
    # Same seed and arguments -> the same bytes; another seed -> other bytes.
    synthetic.generate_dataset(
        tmp_path / "b", 5, seed=3, image_size=SIZE, workers=0, samples_per_shard=2, progress=False, domain=DOMAIN
    )
    assert _shard_bytes(tmp_path / "a") == _shard_bytes(tmp_path / "b")
    synthetic.generate_dataset(
        tmp_path / "c", 5, seed=4, image_size=SIZE, workers=0, samples_per_shard=2, progress=False, domain=DOMAIN
    )
    first = shards.shard_name(0, 3)
    assert _shard_bytes(tmp_path / "a")[first] != _shard_bytes(tmp_path / "c")[first]

    decoded = [{k: v.numpy() for k, v in s.items()} for s in shards.read_dataset(tmp_path / "a", image_size=SIZE)]
    assert len(decoded) == 5
    expected = renderer.render(_params(renderer, seed=3, count=5))
    # read_dataset interleaves the shards: match samples by their labels.
    order = [int(np.argmin([np.abs(e["joints_xyz"] - d["joints_xyz"]).max() for e in expected])) for d in decoded]
    assert sorted(order) == list(range(5))
    for got, want in zip(decoded, [expected[i] for i in order]):
        for name in ("image", "image_rgba", "mask"):
            np.testing.assert_array_equal(got[name], want[name])
        np.testing.assert_allclose(got["depth"], want["depth"], atol=shards.DEPTH_UNIT_MM / 2 + 1e-3)
        np.testing.assert_array_equal(got["mask"], got["depth"] > 0)
        for name in shards.ARRAY_FIELDS:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-6)
        assert bool(got["is_left"]) == want["is_left"]


def test_spawned_worker_writes_the_same_bytes(tmp_path):
    """A spawned worker (one TF thread, its own hash seeds) reproduces an in-process run byte for byte."""
    arguments = dict(seed=1, image_size=SIZE, samples_per_shard=1, progress=False)
    synthetic.generate_dataset(tmp_path / "here", 2, workers=0, **arguments)
    synthetic.generate_dataset(tmp_path / "spawned", 2, workers=1, **arguments)
    assert _shard_bytes(tmp_path / "here") == _shard_bytes(tmp_path / "spawned")


def test_resume_writes_only_missing_shards(tmp_path):
    folder = tmp_path / "data"
    arguments = dict(seed=0, image_size=SIZE, workers=0, samples_per_shard=2, progress=False)
    synthetic.generate_dataset(folder, 6, **arguments)
    before = _shard_bytes(folder)
    times = {p.name: p.stat().st_mtime_ns for p in folder.glob("shard-*")}
    missing = folder / shards.shard_name(1, 3)
    missing.unlink()
    (folder / (shards.shard_name(2, 3) + ".tmp")).write_bytes(b"half-written leftovers")
    metadata = synthetic.generate_dataset(folder, 6, **arguments)
    assert metadata["complete"] and len(metadata["shards"]) == 3
    assert _shard_bytes(folder) == before
    for path in folder.glob("shard-*.tfrecord"):
        if path != missing:
            assert path.stat().st_mtime_ns == times[path.name]
    # Nothing to do: nothing rewritten.
    times = {p.name: p.stat().st_mtime_ns for p in folder.glob("shard-*.tfrecord")}
    synthetic.generate_dataset(folder, 6, **arguments)
    assert times == {p.name: p.stat().st_mtime_ns for p in folder.glob("shard-*.tfrecord")}
    with pytest.raises(ValueError, match=r"other arguments \(num_samples: folder has 6, requested 8\)"):
        synthetic.generate_dataset(folder, 8, **arguments)
    with pytest.raises(ValueError, match="seed: folder has 0, requested 5"):
        synthetic.generate_dataset(folder, 6, **{**arguments, "seed": 5})


def _spawned_children(parent: int) -> list[int]:
    """Process ids of the multiprocessing workers `parent` spawned (not its resource tracker)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            command = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue  # the process ended meanwhile
        if ppid == parent and b"spawn_main" in command:
            found.append(int(stat.parent.name))
    return found


def test_a_killed_worker_fails_the_generator_at_once_and_a_rerun_completes_the_set(tmp_path):
    """SIGKILL a worker mid-shard (as the out-of-memory killer does): exit 2 within seconds naming
    the shards not written, no temporary files; a rerun fills in exactly the same bytes.
    Bounded: every wait has a deadline and the generator's process group is killed on failure."""
    folder, reference = tmp_path / "killed", tmp_path / "reference"
    arguments = dict(seed=5, image_size=32, samples_per_shard=2, domain="procedural", progress=False)
    command = [
        sys.executable,
        "-m",
        "handshape_tf.data.synthetic",
        "--num",
        "12",
        "--out",
        str(folder),
        "--seed",
        "5",
        "--size",
        "32",
        "--samples-per-shard",
        "2",
        "--domain",
        "procedural",
        "--workers",
        "2",
        "--quiet",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        deadline, victims = time.monotonic() + 240, []
        while not victims and process.poll() is None and time.monotonic() < deadline:
            if list(folder.glob("shard-*.tmp")):  # a worker is writing a shard
                victims = _spawned_children(process.pid)
            time.sleep(0.01)
        assert victims, f"no worker seen writing a shard; exit {process.poll()}"
        os.kill(victims[0], signal.SIGKILL)
        killed = time.monotonic()
        _, stderr = process.communicate(timeout=60)  # the old Pool.imap_unordered waited forever here
        seconds = time.monotonic() - killed
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 2, stderr
    assert seconds < 20
    assert "error: a rendering worker process died (killed by SIGKILL" in stderr and "Traceback" not in stderr, stderr
    missing = re.findall(r"shard-\d{5}-of-00006\.tfrecord", stderr.split("were written:", 1)[1])
    assert missing and not any((folder / name).exists() for name in missing)
    assert not list(folder.glob("*.tmp"))
    metadata = synthetic.generate_dataset(folder, 12, workers=1, **arguments)
    assert metadata["complete"] and len(metadata["shards"]) == 6
    synthetic.generate_dataset(reference, 12, workers=0, **arguments)
    assert _shard_bytes(folder) == _shard_bytes(reference)
    assert not list(folder.glob("*.tmp"))


def test_frontal_views(renderer, tmp_path):
    """views="frontal": the camera within 60 deg of the palm normal (palm and back), roll within
    +-60 deg, so the wrist-to-middle-MCP direction points up in the crop (it can lean at most
    60 deg from the roll plus the foreshortening of a 60 deg tilt)."""
    params = [sample_params(synthetic.sample_rng(3, i), renderer.templates, "frontal") for i in range(200)]
    views = np.array([p.view for p in params])
    np.testing.assert_allclose(np.linalg.norm(views, axis=1), 1.0, atol=1e-9)
    assert np.all(np.abs(views[:, 2]) >= np.cos(np.radians(FRONTAL_CONE_DEG)) - 1e-9)
    assert 0.35 < np.mean(views[:, 2] > 0) < 0.65
    rolls = np.degrees([p.roll for p in params])
    assert np.all(np.abs(rolls) <= FRONTAL_ROLL_DEG) and rolls.min() < -40 and rolls.max() > 40
    samples = list(renderer.render(params[:12]))
    up = np.array([s["joints_uv"][0] - s["joints_uv"][9] for s in samples])  # wrist minus middle MCP, pixels
    assert np.all(up[:, 1] > 0)  # the MCP is above the wrist in every crop
    with pytest.raises(ValueError, match=r"views='sideways'; expected one of \['full', 'frontal'\]"):
        synthetic.generate_dataset(tmp_path / "x", 2, views="sideways", progress=False)
    arguments = dict(image_size=SIZE, workers=0, samples_per_shard=2, progress=False)
    synthetic.generate_dataset(tmp_path / "y", 2, views="frontal", **arguments)
    with pytest.raises(ValueError, match="views: folder has 'frontal', requested 'full'"):
        synthetic.generate_dataset(tmp_path / "y", 2, **arguments)


def test_bad_arguments(tmp_path):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(NotADirectoryError, match="output folder .*file.txt is a file; expected a folder"):
        synthetic.generate_dataset(a_file, 4, workers=0, progress=False)
    with pytest.raises(PermissionError, match="output folder .*file.txt/sub is not writable"):
        synthetic.generate_dataset(a_file / "sub", 4, workers=0, progress=False)
    for count in (0, -3):
        with pytest.raises(ValueError, match=f"num_samples is {count}; expected an int >= 1"):
            synthetic.generate_dataset(tmp_path / "x", count, progress=False)
    with pytest.raises(ValueError, match="num_samples is 2.5; expected an int >= 1"):
        synthetic.generate_dataset(tmp_path / "x", 2.5, progress=False)
    with pytest.raises(ValueError, match="seed is -1; expected an int >= 0"):
        synthetic.generate_dataset(tmp_path / "x", 2, seed=-1, progress=False)
    with pytest.raises(ValueError, match="image_size is 8; expected an int >= 32"):
        synthetic.generate_dataset(tmp_path / "x", 2, image_size=8, progress=False)
    with pytest.raises(ValueError, match="workers is -1; expected an int >= 0"):
        synthetic.generate_dataset(tmp_path / "x", 2, workers=-1, progress=False)
    with pytest.raises(ValueError, match="samples_per_shard is 0; expected an int >= 1"):
        synthetic.generate_dataset(tmp_path / "x", 2, samples_per_shard=0, progress=False)
    assert not (tmp_path / "x").exists()
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / shards.shard_name(0, 1)).write_bytes(b"")
    with pytest.raises(ValueError, match="holds shard files .* but no metadata.json"):
        synthetic.generate_dataset(stray, 2, image_size=SIZE, workers=0, progress=False)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only folders")
def test_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match="is not writable"):
            synthetic.generate_dataset(folder, 2, workers=0, progress=False)
    finally:
        folder.chmod(0o700)


# ------------------------------------------------------------------------------ CLI and preview


def test_cli_and_preview(tmp_path, capsys):
    out = tmp_path / "cli"
    assert (
        synthetic.main(
            [
                "--num",
                "3",
                "--out",
                str(out),
                "--size",
                str(SIZE),
                "--workers",
                "0",
                "--samples-per-shard",
                "2",
                "--preview",
                "--quiet",
            ]
        )
        == 0
    )
    sheet = cv2.imread(str(out / "preview.png"))
    assert sheet.shape == (160, 4 * 2 * 160, 3)  # one row of 4 (3 samples and a gap) x 2 tiles
    assert sheet[:, : 6 * 160].mean() > 10 and sheet[:, 6 * 160 :].max() == 0
    with pytest.raises(SystemExit) as error:
        synthetic.main(["--num", "0", "--out", str(tmp_path / "zero")])
    assert error.value.code == 2
    assert "num_samples is 0; expected an int >= 1" in capsys.readouterr().err
    with pytest.raises(ValueError, match="no samples to draw"):
        preview.contact_sheet([])
