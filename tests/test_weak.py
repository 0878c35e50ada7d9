"""Weakly supervised fine-tuning: depth rendering and loss wiring, the depth sensor and the
real-like RGB-D domain (rendered by HandRenderer), RGB-D shard folders, STB input checks, --init
checks and resuming `train.weak_stb`."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io
import tensorflow as tf
import yaml
from test_rendering import posed_hand_mm, ray_cast_depth

from handshape_tf.assets.template import load_template
from handshape_tf.config_utils import ConfigError, load_yaml, merge, save_yaml
from handshape_tf.data import depth_sensor, real_like, shards, synthetic
from handshape_tf.data.domains import REAL_LIKE
from handshape_tf.data.external.stb import SEQUENCES
from handshape_tf.data.renderer import HandRenderer
from handshape_tf.data.sample_params import project, sample_params
from handshape_tf.data.shards import DatasetError, ShardSamples
from handshape_tf.geometry.camera import xyz_to_uvd
from handshape_tf.losses import MeshTopology, depth_map_loss
from handshape_tf.models.config import ModelConfig
from train import weak_stb
from train.weak import config as weak_config
from train.weak import data as weak_data
from train.weak import evaluation
from train.weak import objective as weak_objective

TINY = 64


@pytest.fixture(scope="module")
def tiny_init(tmp_path_factory) -> Path:
    """A train.synthetic-style run folder holding an untrained tiny model."""
    from handshape_tf.models.network import build_model
    from train.config import preset_config

    folder = tmp_path_factory.mktemp("init") / "synthetic-tiny"
    folder.mkdir()
    config = preset_config("tiny")
    tf.keras.utils.set_random_seed(0)
    build_model(config.model).save(folder / "model.keras")
    save_yaml(config, folder / "config.yaml")
    return folder


@pytest.fixture(scope="module")
def renderer() -> HandRenderer:
    """The real-like domain over procedural backgrounds."""
    return HandRenderer(TINY, domain=dataclasses.replace(REAL_LIKE, backgrounds="procedural"))


def _params(renderer, seed: int, count: int) -> list:
    return [
        sample_params(synthetic.sample_rng(seed, i), renderer.templates, "full", renderer.domain) for i in range(count)
    ]


@pytest.fixture(scope="module")
def crop_sets(tmp_path_factory) -> Path:
    """A folder with train/ (8) and test/ (4) real-like RGB-D shard folders of 64 px."""
    folder = tmp_path_factory.mktemp("real_like")
    for name, count, seed in (("train", 8, 0), ("test", 4, 1)):
        synthetic.generate_dataset(
            folder / name,
            count,
            seed=seed,
            image_size=TINY,
            workers=0,
            samples_per_shard=3,
            progress=False,
            domain="real_like",
        )
    return folder


def _write_rgbd(folder: Path, samples: list, num_samples: int | None = None, per_shard: int = 2) -> None:
    """An RGB-D shard folder of `samples` (the first shards of `num_samples` when given)."""
    num_samples = num_samples or len(samples)
    fields = shards.sample_fields(samples[0])
    config = {"image_size": samples[0]["image"].shape[0], "num_samples": num_samples, "fields": list(fields)}
    for field, key in (("vertices_xyz", "num_vertices"), ("pose", "pose_size"), ("shape", "shape_size")):
        if field in fields:
            config[key] = len(samples[0][field])
    counts = shards.plan_shards(num_samples, per_shard)
    folder.mkdir(parents=True, exist_ok=True)
    done = set()
    for index, name in enumerate(counts):
        part = samples[index * per_shard : index * per_shard + counts[name]]
        if len(part) == counts[name]:
            shards.write_shard(folder / name, part, fields)
            done.add(name)
    shards.write_metadata(folder, shards.folder_metadata(config, counts, done))


def _rgbd_sample(value: int, size: int = 32, is_left: bool = False) -> dict:
    return {
        "image": np.full((size, size, 3), value, np.uint8),
        "sensor_depth": np.full((size, size), 400.4),
        "joints_uv": np.zeros((21, 2)),
        "joints_xyz": np.ones((21, 3)),
        "intrinsics": np.ones(4),
        "root_depth": 1.0,
        "scale": 2.0,
        "is_left": is_left,
    }


def _uvd_to_xyz_np(uvd, intrinsics, root_depth, scale):
    fx, fy, cx, cy = intrinsics
    z = uvd[..., 2] * scale + root_depth
    return np.stack([(uvd[..., 0] * TINY - cx) * z / fx, (uvd[..., 1] * TINY - cy) * z / fy, z], axis=-1)


# --- depth rendering ------------------------------------------------------------------------


def test_rendered_mesh_depth_matches_ray_casting():
    xyz, faces = posed_hand_mm()
    intrinsics = np.array([100.0, 100.0, 32.0, 32.0], np.float32)
    root_depth, scale = np.float32(380.0), np.float32(40.0)
    uvd = xyz_to_uvd(xyz[None], intrinsics, [0.0, 0.0, TINY, TINY], scale=[scale], root_depth=[root_depth])
    rendered = weak_objective.render_mesh_depth(uvd, intrinsics[None], [root_depth], [scale], TINY, 32, faces).numpy()[
        0
    ]
    expected = ray_cast_depth(xyz, faces, intrinsics * 0.5, (32, 32))
    both = (rendered > 0) & (expected > 0)
    assert both.sum() > 100
    assert np.sum((rendered > 0) != (expected > 0)) <= 0.02 * both.sum()  # pixel centres on an edge
    np.testing.assert_allclose(rendered[both], expected[both], atol=0.05)


def test_depth_loss_of_a_plane_moved_in_depth_is_hand_computed_and_its_gradient_points_back():
    # A 120 mm square at 500 mm facing the camera; the reference is a wall at 520 mm.
    half, depth, scale = 60.0, 500.0, 40.0
    xyz = np.array([[[-half, -half, depth], [half, -half, depth], [half, half, depth], [-half, half, depth]]])
    faces = np.array([[0, 2, 1], [0, 3, 2]], np.int32)
    intrinsics = np.array([[100.0, 100.0, 32.0, 32.0]], np.float32)
    uvd = tf.Variable(xyz_to_uvd(xyz, intrinsics, [0.0, 0.0, TINY, TINY], scale=[scale], root_depth=[depth]))
    reference = tf.fill([1, 32, 32], 520.0)

    def loss():
        rendered = weak_objective.render_mesh_depth(uvd, intrinsics, [depth], [scale], TINY, 32, faces)
        valid = weak_objective.depth_valid(rendered, reference, tf.constant([depth]), tf.constant([scale]), 3.0)
        return depth_map_loss(rendered / scale, reference / scale, valid), valid

    with tf.GradientTape() as tape:
        value, valid = loss()
    gradient = tape.gradient(value, uvd).numpy()[0]
    assert int(tf.reduce_sum(tf.cast(valid, tf.int32))) == 12 * 12  # +-12 px at 64 -> 12 x 12 at 32
    # (500 - 520) / 40 = -0.5 hand scales: smooth L1 = 0.5 * 0.25 on every valid pixel.
    np.testing.assert_allclose(float(value), 0.125, rtol=1e-5)
    assert np.all(gradient[:, 2] < 0)  # deeper (larger d) lowers the loss
    # Shifting every d by t moves every pixel by t hand scales: dL/dt = -0.5.
    np.testing.assert_allclose(gradient[:, 2].sum(), -0.5, rtol=1e-3)
    uvd.assign_sub(2.0 * gradient[None])  # d + 0.25: halfway to the wall
    assert float(loss()[0]) < 0.5 * 0.125


def test_weak_objective_terms_and_total_match_a_numpy_computation():
    template = load_template()
    topology = MeshTopology.from_faces(template.faces, template.num_vertices)
    config = dataclasses.replace(
        weak_config.WeakConfig(model=ModelConfig.preset("tiny")), loss=weak_config.WeakLossConfig(pose=True)
    ).validated()
    objective = weak_objective.WeakObjective(config, topology, "uvd")
    vertices, faces = posed_hand_mm()
    joints = (template.keypoints - template.vertices.mean(axis=0)) * 1000.0 + [0.0, 0.0, 400.0]
    intrinsics = np.array([100.0, 100.0, 32.0, 32.0], np.float32)
    root_depth, scale = np.float32(joints[0, 2]), np.float32(50.0)
    box = [0.0, 0.0, TINY, TINY]
    mesh_uvd = xyz_to_uvd(vertices[None], intrinsics, box, scale=[scale], root_depth=[root_depth]).numpy()
    pose_uvd = xyz_to_uvd(joints[None], intrinsics, box, scale=[scale], root_depth=[root_depth]).numpy()
    pseudo_uvd = mesh_uvd * [1.0, 1.0, 1.5]
    rendered = weak_objective.render_mesh_depth(
        mesh_uvd, intrinsics[None], [root_depth], [scale], TINY, 32, faces
    ).numpy()
    batch = {
        "joints_uv": pose_uvd[..., :2] * TINY,
        "intrinsics": intrinsics[None],
        "root_depth": np.array([root_depth]),
        "scale": np.array([scale]),
        "depth": np.where(rendered > 0, rendered + 10.0, 0.0),
        "pseudo_mesh_uvd": pseudo_uvd,
        "joints_xyz": joints[None] + [5.0, 0.0, 0.0],
    }
    batch = {key: tf.constant(value, tf.float32) for key, value in batch.items()}
    outputs = {"heatmaps": [objective.heatmap_targets(batch)], "mesh_uvd": mesh_uvd, "pose_uvd": pose_uvd}
    total, values = objective.full_stage(outputs, batch)

    pred = _uvd_to_xyz_np(mesh_uvd[0].astype(np.float64), intrinsics, root_depth, scale) / scale
    target = _uvd_to_xyz_np(pseudo_uvd[0].astype(np.float64), intrinsics, root_depth, scale) / scale

    def squared_edges(points):
        return np.sum(np.square(points[topology.edges[:, 1]] - points[topology.edges[:, 0]]), axis=-1)

    edge = np.mean(np.square(squared_edges(target) - squared_edges(pred)))
    offset = target - pred
    neighbours = np.concatenate([offset, np.zeros((1, 3))])[topology.neighbors].sum(axis=1) * topology.neighbor_weights
    laplacian = np.mean(np.sum(np.square(offset - neighbours), axis=-1))
    np.testing.assert_allclose(float(values["heatmap"]), 0.0, atol=1e-6)
    np.testing.assert_allclose(float(values["depth"]), 0.5 * (10.0 / 50.0) ** 2, rtol=1e-4)  # every pixel 10 mm off
    np.testing.assert_allclose(float(values["pose"]), (5.0 / 50.0) ** 2, rtol=1e-4)  # every joint 5 mm off
    np.testing.assert_allclose(float(values["edge"]), edge, rtol=1e-3)
    np.testing.assert_allclose(float(values["laplacian"]), laplacian, rtol=1e-3)
    expected = 0.1 * 0.02 + 1.0 * (edge + 50.0 * laplacian) + 10.0 * 0.01
    np.testing.assert_allclose(float(total), expected, rtol=1e-3)


def test_nearest_resampling_keeps_missing_pixels_missing():
    depth = np.arange(1.0, 17.0).reshape(4, 4)
    depth[1, 3] = 0.0
    np.testing.assert_array_equal(depth_sensor.nearest_depth(depth, 2), [[6.0, 0.0], [14.0, 16.0]])
    # Crop box (1, 1, 2, 2) at 4 x 4: centres x = 1.25, 1.75, 2.25, 2.75 -> columns 1, 1, 2, 2.
    np.testing.assert_array_equal(real_like.crop_depth_nearest(depth, (1, 1, 2, 2), 4)[0], [6.0, 6.0, 7.0, 7.0])
    outside = real_like.crop_depth_nearest(depth, (-2, 0, 4, 4), 4)
    np.testing.assert_array_equal(outside[:, :2], 0.0)
    np.testing.assert_array_equal(outside[:, 2:], depth[:, :2])


# --- the real-like domain -----------------------------------------------------------------


def test_sensor_noise_grows_with_distance_and_is_quantised():
    sensor = depth_sensor.SensorModel(speckle=0.0)
    rng = np.random.default_rng(0)
    stds = {}
    for distance in (400.0, 800.0):
        measured = depth_sensor.sensor_depth(np.full((96, 96), distance), np.ones((96, 96)), 100.0, rng, sensor)
        assert np.all(measured > 0)
        np.testing.assert_array_equal(measured, np.round(measured))
        stds[distance] = np.std(measured - distance)
        modelled = np.sqrt(sensor.noise_std(distance) ** 2 + 1.0 / 12.0)  # plus 1 mm rounding
        assert abs(stds[distance] / modelled - 1.0) < 0.1
    assert 2.5 < stds[800.0] / stds[400.0] < 3.6  # ~ (z2 / z1)^2 = 4 above a 0.3 mm floor


def test_sensor_drops_edges_grazing_surfaces_and_the_projector_shadow():
    sensor = depth_sensor.SensorModel(speckle=0.0)
    depth = np.full((64, 64), 800.0)
    depth[20:44, 20:44] = 400.0  # a square in front of a wall
    square = np.zeros((64, 64), bool)
    square[20:44, 20:44] = True
    missing = np.mean(
        [
            depth_sensor.sensor_depth(depth, np.ones_like(depth), 100.0, np.random.default_rng(seed), sensor) == 0
            for seed in range(8)
        ],
        axis=0,
    )
    border = cv2.dilate(square.astype(np.uint8), np.ones((3, 3))) > cv2.erode(square.astype(np.uint8), np.ones((3, 3)))
    assert missing[border].mean() > 0.4
    assert missing[cv2.erode(square.astype(np.uint8), np.ones((7, 7))) > 0].max() == 0.0
    # Projector at +x: disparity difference 100 * 25 * (1/400 - 1/800) = 3.1 px of wall left of
    # the square is hidden, none on its right (beyond the edge band).
    np.testing.assert_array_equal(missing[24:40, 17:20], 1.0)
    np.testing.assert_array_equal(missing[24:40, 46:60], 0.0)
    np.testing.assert_array_equal(missing[24:40, 2:16], 0.0)
    grazing = depth_sensor.sensor_depth(
        np.full((8, 8), 500.0), np.full((8, 8), 0.05), 100.0, np.random.default_rng(0), sensor
    )
    facing = depth_sensor.sensor_depth(
        np.full((8, 8), 500.0), np.full((8, 8), 0.5), 100.0, np.random.default_rng(0), sensor
    )
    assert np.all(grazing == 0) and np.all(facing > 0)


def test_real_like_domain_renders_through_hand_renderer_with_a_sensor_depth_map(renderer):
    """One code path: the RGB-D domain is HandRenderer with a sensor; the sensor adds a depth map
    from its own random stream and changes nothing else."""
    params = _params(renderer, 3, 4)
    with_sensor = renderer.render(params)
    without = HandRenderer(TINY, domain=dataclasses.replace(renderer.domain, sensor=None)).render(params)
    for a, b in zip(with_sensor, without):
        assert set(a) - set(b) == {"sensor_depth"} and a["sensor_depth"].shape == (TINY, TINY)
        for key in b:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        # The sensor sees the hand where the exact depth is, and more (forearm, background plane).
        seen = (a["sensor_depth"] > 0) & a["mask"]
        assert seen.sum() > 0.3 * a["mask"].sum()
        np.testing.assert_allclose(a["sensor_depth"][seen], a["depth"][seen], atol=12.0)
    assert synthetic.stored_fields(renderer.domain) == shards.SYNTHETIC_FIELDS + ("sensor_depth",)
    assert synthetic.stored_fields(dataclasses.replace(renderer.domain, sensor=None)) == shards.SYNTHETIC_FIELDS


def test_real_like_sensor_depth_has_holes_at_silhouettes_and_noise_growing_with_distance(renderer):
    params = _params(renderer, 3, 6)
    edge_missing, inside_missing, ratios, stds = [], [], [], {}
    for distance in (300.0, 650.0):
        samples = renderer.render([dataclasses.replace(p, distance_mm=distance) for p in params])
        residuals = []
        for sample in samples:
            mask = sample["mask"].astype(np.uint8)
            edge = (mask > 0) & (cv2.erode(mask, np.ones((3, 3), np.uint8)) == 0)
            inside = cv2.erode(mask, np.ones((5, 5), np.uint8)) > 0
            missing = sample["sensor_depth"] == 0
            edge_missing.append(missing[edge].mean())
            inside_missing.append(missing[inside].mean() if inside.any() else 0.0)
            valid = ~missing & (sample["mask"] > 0)
            residual = sample["sensor_depth"][valid] - sample["depth"][valid]
            modelled = np.sqrt(np.mean(REAL_LIKE.sensor.noise_std(sample["depth"][valid]) ** 2) + 1.0 / 12.0)
            ratios.append(np.std(residual) / modelled)
            residuals.append(residual)
            assert sample["image"].dtype == np.uint8 and sample["image"].shape == (TINY, TINY, 3)
        stds[distance] = np.std(np.concatenate(residuals))
    assert np.mean(edge_missing) > 2.0 * np.mean(inside_missing) and np.mean(edge_missing) > 0.3
    assert 0.7 < np.median(ratios) < 1.4
    # Modelled: sqrt(noise^2 + 1/12) = 0.79 mm at ~300 mm, 2.3 mm at ~650 mm.
    assert stds[650.0] > 2.0 * stds[300.0]


def test_rgbd_shard_round_trip_mirrors_left_hands(tmp_path, renderer):
    params = _params(renderer, 11, 6)
    samples = renderer.render(params)
    assert {s["is_left"] for s in samples} == {False, True}
    _write_rgbd(tmp_path / "set", samples)
    stored = ShardSamples(tmp_path / "set")
    assert len(stored) == 6 and stored.fields == shards.SYNTHETIC_FIELDS + ("sensor_depth",)
    raw = stored.batch(np.arange(6), mirror_left=False)
    for b, sample in enumerate(samples):
        for key in ("image", "image_rgba", "mask", "sensor_depth"):
            np.testing.assert_array_equal(raw[key][b], sample[key], err_msg=key)
        np.testing.assert_allclose(raw["depth"][b], sample["depth"], atol=shards.DEPTH_UNIT_MM / 2 + 1e-3)
        for key in shards.ARRAY_FIELDS:
            np.testing.assert_allclose(raw[key][b], sample[key], rtol=1e-6, atol=1e-6, err_msg=key)
        assert raw["is_left"][b] == sample["is_left"] and not raw["mirrored"][b]
    order = [5, 0, 3]
    batch = stored.batch(order)  # mirror_left: every sample a right hand
    np.testing.assert_array_equal(batch["index"], order)
    for b, index in enumerate(order):
        left = samples[index]["is_left"]
        assert batch["mirrored"][b] == left and not batch["is_left"][b]
        flip = (lambda a: a[:, ::-1]) if left else (lambda a: a)
        for key in ("image", "sensor_depth", "mask"):
            np.testing.assert_array_equal(batch[key][b], flip(samples[index][key]), err_msg=key)
        # Every projected point moves x -> S - x, and the labels still project onto the crop.
        moved = np.array([-1.0, 1.0]) if left else np.ones(2)
        shift = np.array([TINY, 0.0]) if left else np.zeros(2)
        for key in ("joints_xyz", "vertices_xyz"):
            before = project(samples[index][key], samples[index]["intrinsics"])
            after = project(batch[key][b], batch["intrinsics"][b])
            np.testing.assert_allclose(after, before * moved + shift, atol=2e-2, err_msg=key)
        np.testing.assert_allclose(batch["joints_uv"][b], samples[index]["joints_uv"] * moved + shift, atol=1e-4)
    twice = shards.mirror_batch({k: v.copy() for k, v in batch.items()}, batch["mirrored"], TINY)
    twice = shards.mirror_batch(twice, batch["mirrored"], TINY)
    for key in ("image", "sensor_depth", "joints_uv", "joints_xyz", "vertices_xyz", "intrinsics", "camera"):
        np.testing.assert_allclose(twice[key], batch[key], atol=1e-4, err_msg=key)
    only = stored.batch([1], ["image", "sensor_depth", "joints_uv", "intrinsics", "root_depth", "scale", "joints_xyz"])
    assert set(only) == {
        "image",
        "sensor_depth",
        "joints_uv",
        "intrinsics",
        "root_depth",
        "scale",
        "joints_xyz",
        "is_left",
        "mirrored",
        "index",
    }
    with pytest.raises(DatasetError, match="holds no \\['pressure'\\]"):
        stored.batch([0], ["image", "pressure"])


def test_real_like_sets_are_right_hands_with_consistent_labels(crop_sets):
    crops = ShardSamples(crop_sets / "train")
    metadata = shards.read_metadata(crop_sets / "train")
    assert metadata["domain"] == "real_like" and metadata["sensor"]["noise_at_500mm"] == 1.2
    assert metadata["sensor_depth_unit_mm"] == 1.0 and metadata["fields"][-1] == "sensor_depth"
    batch = weak_data.read_batch(crops, np.arange(len(crops)))
    assert not batch["is_left"].any() and batch["mirrored"].any()
    fx, fy, cx, cy = np.moveaxis(batch["intrinsics"], -1, 0)[..., None]
    xyz = batch["joints_xyz"]
    projected = np.stack([fx * xyz[..., 0] / xyz[..., 2] + cx, fy * xyz[..., 1] / xyz[..., 2] + cy], axis=-1)
    np.testing.assert_allclose(batch["joints_uv"], projected, atol=1e-2)
    depth = batch["sensor_depth"]
    assert depth.dtype == np.float32 and np.all(depth == np.round(depth)) and (depth > 0).mean() > 0.2
    assert batch["vertices_xyz"].shape == (len(crops), load_template().num_vertices, 3)


def test_a_real_like_folder_without_sensor_depth_is_not_resumed(tmp_path, crop_sets):
    folder = tmp_path / "old"
    shutil.copytree(crop_sets / "test", folder)
    metadata = json.loads((folder / shards.METADATA).read_text())
    del metadata["sensor"]  # as the real-like domain wrote it before it had a sensor
    shards.write_metadata(folder, metadata)
    with pytest.raises(ValueError, match="other arguments \\(sensor: folder has None, requested \\{"):
        synthetic.generate_dataset(
            folder, 4, seed=1, image_size=TINY, workers=0, samples_per_shard=3, progress=False, domain="real_like"
        )


def test_rgbd_sets_resume_position_and_refuse_incomplete_folders(tmp_path):
    _write_rgbd(tmp_path / "part", [_rgbd_sample(1), _rgbd_sample(2)], num_samples=3)
    with pytest.raises(DatasetError, match="incomplete \\(2 of 3 samples written\\)"):
        ShardSamples(tmp_path / "part")
    _write_rgbd(tmp_path / "set", [_rgbd_sample(1), _rgbd_sample(2), _rgbd_sample(3, is_left=True)])
    crops = ShardSamples(tmp_path / "set")
    batch = crops.batch([0, 1, 2])
    np.testing.assert_array_equal(batch["image"][:, 0, 0, 0], [1, 2, 3])
    assert batch["sensor_depth"][0, 0, 0] == 400.0  # 1 mm steps
    np.testing.assert_array_equal(batch["mirrored"], [False, False, True])
    with pytest.raises(DatasetError, match="holds no \\['vertices_xyz'\\]; its samples have"):
        crops.batch([0], ["image", "vertices_xyz"])
    streamed = [b["index"] for _, b in zip(range(6), weak_data.iterate_batches(crops, 2, seed=5))]
    resumed = [b["index"] for _, b in zip(range(3), weak_data.iterate_batches(crops, 2, seed=5, start=6))]
    np.testing.assert_array_equal(np.concatenate(streamed[3:]), np.concatenate(resumed))
    assert sorted(np.concatenate(streamed[:3]).tolist()[:3]) == [0, 1, 2]  # the first epoch is a permutation
    with pytest.raises(ValueError, match="batch_size 4 exceeds the 3 samples"):
        next(weak_data.iterate_batches(crops, 4, seed=0))


def test_format_1_folders_read_as_synthetic_fields(tmp_path, renderer):
    """Folders written before optional fields (format 1, no "fields" in metadata.json) still read."""
    samples = HandRenderer(TINY).render(_params(renderer, 2, 2))
    folder = tmp_path / "old"
    folder.mkdir()
    shards.write_shard(folder / shards.shard_name(0, 1), samples, shards.SYNTHETIC_FIELDS)
    template = load_template()
    shards.write_metadata(
        folder,
        {
            "format_version": 1,
            "image_size": TINY,
            "num_vertices": template.num_vertices,
            "pose_size": len(samples[0]["pose"]),
            "shape_size": len(samples[0]["shape"]),
            "shards": [shards.shard_name(0, 1)],
        },
    )
    assert shards.folder_fields(shards.read_metadata(folder)) == shards.SYNTHETIC_FIELDS
    decoded = next(iter(shards.read_dataset(folder)))
    assert set(decoded) == set(shards.SYNTHETIC_FIELDS)
    batch = ShardSamples(folder).batch([0, 1], mirror_left=False)
    np.testing.assert_array_equal(batch["image"], np.stack([s["image"] for s in samples]))
    np.testing.assert_array_equal(decoded["image"].numpy(), samples[0]["image"])
    with pytest.raises(ValueError, match="the folder's are"):
        shards.write_shard(folder / "other.tfrecord", samples, shards.SYNTHETIC_FIELDS + ("sensor_depth",))
    assert not (folder / "other.tfrecord").exists() and not (folder / "other.tfrecord.tmp").exists()


# --- entry point: input checks --------------------------------------------------------------


def _run(argv, capsys) -> tuple[int, str]:
    code = weak_stb.main([str(a) for a in argv])
    return code, capsys.readouterr().err


def test_init_errors_are_reported_before_any_work(tmp_path, tiny_init, capsys):
    code, err = _run(["--workdir", tmp_path, "--preset", "tiny"], capsys)
    assert code == 2 and "--init " in err and "synthetic-tiny does not exist" in err
    assert "Make one first with `python -m train.synthetic --preset tiny`, or pass --init RUN_DIR" in err
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text((tiny_init / "config.yaml").read_text())
    code, err = _run(["--init", unfinished, "--workdir", tmp_path], capsys)
    assert code == 2 and "lacks model.keras (unfinished?)" in err
    code, err = _run(["--init", tiny_init, "--preset", "cpu", "--workdir", tmp_path], capsys)
    assert code == 2 and "holds a model of another preset (hourglass_filters=16 (preset 'cpu': 64)" in err
    assert "--preset ('tiny')" in err
    code, err = _run(["--init", tiny_init, "--workdir", tmp_path, "--set", "model.image_size=128"], capsys)
    assert code == 2 and "model comes from the --init run" in err
    assert not (tmp_path / "data").exists()  # nothing rendered
    for name in ("train", "test"):
        _write_rgbd(tmp_path / "small" / name, [_rgbd_sample(0)])
    code, err = _run(["--init", tiny_init, "--data", tmp_path / "small", "--workdir", tmp_path], capsys)
    assert code == 2 and "holds 32 px crops; the model takes 64 px" in err
    colour_only = {key: value for key, value in _rgbd_sample(0, TINY).items() if key != "sensor_depth"}
    for name in ("train", "test"):
        _write_rgbd(tmp_path / "colour" / name, [colour_only])
    code, err = _run(["--init", tiny_init, "--data", tmp_path / "colour", "--workdir", tmp_path], capsys)
    assert code == 2 and "has no ['sensor_depth']: weak supervision needs RGB-D samples" in err


def _write_stb(root: Path, *, depth_size=(640, 480), depth_channels=3, skip: str | None = None):
    """STB layout with one frame per sequence: a hand-sized point cloud 450 mm away, a flat
    depth map at 450 mm (8-bit 3-channel PNG, depth = R + 256 G) and a grey colour image."""
    rng = np.random.default_rng(0)
    width, height = depth_size
    depth = np.full((height, width), 450, np.int64)
    encoded = np.stack([np.zeros_like(depth), depth // 256, depth % 256], axis=-1).astype(np.uint8)
    if depth_channels == 1:
        encoded = depth.astype(np.uint16)
    (root / "labels").mkdir(parents=True)
    for sequence in SEQUENCES:
        joints = rng.normal([0.0, 0.0, 450.0], [30.0, 30.0, 10.0], (1, 21, 3))
        if sequence != skip:
            scipy.io.savemat(root / "labels" / f"{sequence}_SK.mat", {"handPara": joints.transpose(2, 1, 0)})
            folder = root / "images" / sequence
            folder.mkdir(parents=True)
            cv2.imwrite(str(folder / "SK_color_0.png"), np.full((480, 640, 3), 128, np.uint8))
            cv2.imwrite(str(folder / "SK_depth_0.png"), encoded)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"skip": "B3Random"}, "STB data missing for sequences .*B3Random_SK.mat"),
        (
            {"depth_size": (320, 240)},
            "STB depth image .*shape \\(240, 320, 3\\); expected uint8 with shape \\(480, 640, 3\\)",
        ),
        ({"depth_channels": 1}, "STB depth image .*dtype uint16 and shape \\(480, 640\\); expected uint8"),
    ],
)
def test_stb_bad_input_fails_before_training(tmp_path, tiny_init, capsys, kwargs, message):
    _write_stb(tmp_path / "STB", **kwargs)
    code, err = _run(["--init", tiny_init, "--data", tmp_path / "STB", "--workdir", tmp_path / "work"], capsys)
    assert code == 2
    assert __import__("re").search(message, err), err
    assert not (tmp_path / "work").exists()  # nothing cropped, no run folder


def test_stb_frames_become_mirrored_crops_with_registered_depth(tmp_path):
    _write_stb(tmp_path / "STB")
    assert real_like.check_stb(tmp_path / "STB", TINY) == {"train": 10, "test": 2}
    crops = real_like.prepare_stb(tmp_path / "STB", tmp_path / "crops", "test", TINY, progress=False)
    assert len(crops) == 2 and crops.fields == real_like.STB_FIELDS
    batch = crops.batch([0, 1])
    assert batch["mirrored"].all()  # STB's hands are left hands
    valid = batch["sensor_depth"] > 0
    assert valid.mean() > 0.5
    # Colour-frame z of the flat 450 mm depth plane (rotation ~0.7 deg, t_z = -1.2 mm): ~451 mm.
    assert np.all(np.abs(batch["sensor_depth"][valid] - 451.0) <= 4.0)
    # A rerun finds the shards done; another stride is another dataset.
    written = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "crops").glob("shard-*")}
    real_like.prepare_stb(tmp_path / "STB", tmp_path / "crops", "test", TINY, progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "crops").glob("shard-*")} == written
    with pytest.raises(DatasetError, match="generated with other arguments \\(source: folder has"):
        real_like.prepare_stb(tmp_path / "STB", tmp_path / "crops", "test", TINY, stride=2, progress=False)
    fx, fy, cx, cy = np.moveaxis(batch["intrinsics"], -1, 0)[..., None]
    xyz = batch["joints_xyz"]
    projected = np.stack([fx * xyz[..., 0] / xyz[..., 2] + cx, fy * xyz[..., 1] / xyz[..., 2] + cy], axis=-1)
    np.testing.assert_allclose(batch["joints_uv"], projected, atol=1e-2)


# --- entry point: training and resuming -----------------------------------------------------


def test_weak_stb_resumes_an_interrupted_run_from_its_checkpoint(tmp_path, tiny_init, crop_sets, capsys, monkeypatch):
    run = tmp_path / "run"
    argv = [
        "--init",
        tiny_init,
        "--data",
        crop_sets,
        "--workdir",
        tmp_path,
        "--run-dir",
        run,
        "--no-compare",
        "--no-progress",
        "--set",
        "batch_size=4",
        "evaluation.batch_size=4",
        "evaluation.figure_samples=0",
        "data.photometric=false",
        "log_every_steps=1",
        "checkpoint.every_steps=1",
        "stages.heatmap.time_fraction=0",
        "stages.full.max_steps=3",
    ]
    stream = weak_data.iterate_batches

    def interrupted(*args, **kwargs):  # the process dies while fetching the second batch
        for count, batch in enumerate(stream(*args, **kwargs)):
            if count == 1:
                raise KeyboardInterrupt
            yield batch

    monkeypatch.setattr(weak_data, "iterate_batches", interrupted)
    with pytest.raises(KeyboardInterrupt):
        weak_stb.main([str(a) for a in argv])
    assert not (run / "report.json").exists()
    pseudo_gt = (run / "pseudo_gt" / "mesh_uvd.npy").stat().st_mtime_ns
    monkeypatch.setattr(weak_data, "iterate_batches", stream)
    assert weak_stb.main([str(a) for a in argv]) == 0
    report = json.loads((run / "report.json").read_text())
    assert report["training"]["resumed_from_step"] == 1 and report["training"]["global_step"] == 3
    assert report["training"]["stages"]["full"]["session_steps"] == 2
    assert (run / "pseudo_gt" / "mesh_uvd.npy").stat().st_mtime_ns == pseudo_gt  # cached, not recomputed
    assert [row["global_step"] for row in map(json.loads, (run / "history.jsonl").read_text().splitlines())] == [
        1,
        2,
        3,
    ]
    assert report["evaluation"]["after"]["samples"] == 4 and report["evaluation"]["before"]["samples"] == 4
    assert {"edge_log_ratio", "laplacian_ratio"} <= set(report["plausibility"]["after"])
    assert (run / "model.keras").is_file() and "pretrained" in capsys.readouterr().out
    # train.loop's checkpoint layout; `stage` counts in STAGES, so the skipped heatmap stage keeps its place.
    reader = tf.train.load_checkpoint(str(run / "checkpoints"))
    keys = {key.split("/")[0] for key in reader.get_variable_to_shape_map()}
    assert keys == {
        "stage",
        "step",
        "global_step",
        "samples",
        "seconds",
        "stage_start",
        "model_variables",
        "optimizer_full",
        "save_counter",
        "_CHECKPOINTABLE_OBJECT_GRAPH",
    }
    assert reader.get_tensor("stage/.ATTRIBUTES/VARIABLE_VALUE") == 2
    assert reader.get_tensor("samples/.ATTRIBUTES/VARIABLE_VALUE") == 3 * 4
    # BatchNorm stays the init run's (freeze_batch_norm): statistics and gamma/beta unchanged, the
    # other weights trained; the saved model's BatchNorm layers are trainable again.
    import keras

    before, after = (
        keras.saving.load_model(path, compile=False) for path in (tiny_init / "model.keras", run / "model.keras")
    )
    norms = [
        [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
        for model in (before, after)
    ]
    assert len(norms[1]) > 50 and all(layer.trainable for layer in norms[1])
    for old, new in zip(*norms):
        for a, b in zip(old.weights, new.weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=f"{new.path}/{b.name}")
    convolution = after.get_layer("mesh_decoder").trainable_weights[0]
    assert not np.array_equal(before.get_layer("mesh_decoder").trainable_weights[0].numpy(), convolution.numpy())


def test_weak_config_checks_name_every_bad_key():
    config = weak_config.WeakConfig(model=ModelConfig.preset("tiny"), architecture="direct_lbs")
    bad = {
        "loss.pseudo_mesh": False,
        "stages.full.time_fraction": 1.5,
        "loss.depth_weight": -1.0,
        "checkpoint.keep": 0,
        "loss.depth_size": 0,
        "evaluation.figure_samples": -1,
    }
    message = (
        r"inconsistent weak fine-tuning config: loss.depth=True must be false with architecture direct_lbs "
        r"\(no trainable mesh\); stages.full.time_fraction=1.5 must be in \[0, 1\]; "
        r"stages.\*.time_fraction \(sum\)=1.7 must be <= 1; loss.depth_weight=-1.0 must be >= 0; "
        r"checkpoint.keep=0 must be >= 1; loss.depth_size=0 must be >= 1; "
        r"evaluation.figure_samples=-1 must be >= 0$"
    )
    with pytest.raises(ConfigError, match=message):
        merge(config, bad).validated()
    assert weak_config.WeakConfig(model=ModelConfig.preset("tiny")).validated().terms == (
        "heatmap",
        "depth",
        "pseudo_mesh",
    )


def test_weak_config_takes_the_init_runs_recipe(tmp_path, tiny_init):
    """The real-like set is rendered with the init run's camera views; heat-map width, batch size
    and optimizer are the init run's, unless the command line says otherwise."""
    folder = tmp_path / "synthetic-tiny"
    shutil.copytree(tiny_init, folder)
    config = load_yaml(folder / "config.yaml")
    config["dataset"]["views"], config["data"]["heatmap_sigma"] = "frontal", 12.0
    config["batch_size"], config["optimizer"]["warmup_steps"] = 16, 50
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    init = weak_config.open_init(folder)
    resolved = weak_config.resolve(init)
    assert (resolved.data.views, resolved.data.heatmap_sigma) == ("frontal", 12.0)
    assert (resolved.batch_size, resolved.optimizer.warmup_steps) == (16, 50)
    assert weak_config.resolve(init, overrides={"data.views": "full"}).data.views == "full"


def test_mesh_plausibility_of_the_template_and_of_a_noisy_one():
    template = load_template()
    plausibility = evaluation.MeshPlausibility()
    keypoints = template.keypoints
    scale = np.linalg.norm(keypoints[10] - keypoints[9])
    plausibility.update(template.vertices[None] * 1000.0, [scale * 1000.0])  # same shape, other unit
    summary = plausibility.summary()
    assert summary["edge_log_ratio"] < 1e-6 and summary["edge_outliers"] == 0.0
    np.testing.assert_allclose(summary["laplacian_ratio"], 1.0, rtol=1e-6)
    noisy = evaluation.MeshPlausibility()
    jitter = np.random.default_rng(0).normal(0.0, 0.003, template.vertices.shape)  # 3 mm
    noisy.update((template.vertices + jitter)[None], [scale])
    assert noisy.summary()["laplacian_ratio"] > 2.0 and noisy.summary()["edge_log_ratio"] > 0.2


def test_table3_names_the_command_that_makes_a_missing_baseline_run(tmp_path, tiny_init, capsys):
    from train import weak_table3

    argv = ["--init", tiny_init, "--preset", "tiny", "--workdir", tmp_path, "--variants", "full", "baseline1"]
    assert weak_table3.main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert "--baseline1-init " in err and "ablations-tiny/direct_lbs does not exist" in err
    assert "`python -m train.ablations --preset tiny --variants direct_lbs`, or pass --baseline1-init RUN_DIR" in err
    argv = ["--init", tiny_init, "--baseline1-init", tiny_init, "--preset", "tiny", "--workdir", tmp_path]
    assert weak_table3.main([str(a) for a in argv]) == 2
    assert "is a 'graph' run; the baseline1 variants start from a 'direct_lbs' run" in capsys.readouterr().err
