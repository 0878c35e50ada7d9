"""The tf.data pipeline: labels stay consistent with the augmented images, resume, bad input."""

import json
import struct
import subprocess
import sys

import cv2
import numpy as np
import pytest
import tensorflow as tf
from scipy.spatial.transform import Rotation

from handshape_tf.assets.template import load_template
from handshape_tf.config_utils import ConfigError
from handshape_tf.data.augment import warp_image, warp_labels
from handshape_tf.data.data_config import AugmentConfig, DataConfig
from handshape_tf.data.pipeline import evaluation_dataset, training_dataset
from handshape_tf.data.shards import DatasetError, read_dataset, shard_name, write_metadata, write_shard
from handshape_tf.data.sources import PaperSyntheticSource, ShardSource, open_source
from handshape_tf.geometry.camera import project, uvd_to_xyz
from handshape_tf.geometry.heatmaps import heatmaps_to_uv_argmax


def hand_sample(rng: np.random.Generator, size: int, is_left: bool = False) -> dict:
    """A sample in the shard schema: the template hand, randomly turned, centred 400-500 mm away.

    The RGBA image paints each projected vertex in a colour that depends on the vertex, so
    images differ with the pose; `image` is it over a flat grey.
    """
    template = load_template(left=is_left)
    rotation = Rotation.from_rotvec(rng.normal(0.0, 0.6, 3)).as_matrix()
    centre = template.vertices.mean(axis=0)
    depth = rng.uniform(400.0, 500.0)
    offset = np.array([rng.normal(0, 5), rng.normal(0, 5), depth])
    vertices = (template.vertices - centre) * 1000.0 @ rotation.T + offset  # mm
    joints = (template.keypoints - centre) * 1000.0 @ rotation.T + offset
    focal = 0.4 * size * depth / 110.0
    intrinsics = np.array([focal, focal * rng.uniform(0.97, 1.03), size / 2, size / 2], np.float32)
    uv = project(vertices[None], intrinsics[None]).numpy()[0]
    rgba = np.zeros((size, size, 4), np.uint8)
    colours = (255 * (0.5 + 0.5 * np.sin(np.arange(len(uv))[:, None] * [0.05, 0.11, 0.17]))).astype(int)
    for (x, y), colour in zip(uv, colours):
        cv2.circle(rgba, (int(x), int(y)), max(1, size // 40), (*map(int, colour), 255), -1)
    image = np.where(rgba[..., 3:] > 0, rgba[..., :3], 128).astype(np.uint8)
    return {
        "image": image,
        "image_rgba": rgba,
        "mask": rgba[..., 3] > 0,
        "depth": np.where(rgba[..., 3] > 0, depth, 0.0).astype(np.float32),
        "joints_uv": project(joints[None], intrinsics[None]).numpy()[0],
        "joints_xyz": joints,
        "vertices_xyz": vertices,
        "intrinsics": intrinsics,
        "root_depth": joints[0, 2],
        "scale": np.linalg.norm(joints[9] - joints[10]),
        "is_left": is_left,
        "pose": np.zeros(3),
        "shape": np.ones(2),
        "camera": np.eye(4),
    }


def write_hand_shards(folder, num_samples: int, size: int, per_shard: int = 8, seed: int = 0):
    """A shard folder of `hand_sample`s (the layout `generate_dataset` writes)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    samples = [hand_sample(rng, size, is_left=i % 3 == 2) for i in range(num_samples)]
    num_shards = -(-num_samples // per_shard)
    names = [shard_name(i, num_shards) for i in range(num_shards)]
    for i, name in enumerate(names):
        write_shard(folder / name, samples[i * per_shard : (i + 1) * per_shard])
    write_metadata(
        folder,
        {
            "image_size": size,
            "num_vertices": samples[0]["vertices_xyz"].shape[0],
            "pose_size": 3,
            "shape_size": 2,
            "shards": names,
        },
    )
    return samples


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shards")
    samples = write_hand_shards(folder, 12, 128, per_shard=5)
    return folder, samples


def _bank(size, count=4):
    return np.random.default_rng(1).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


def _batches(dataset, count):
    return [tf.nest.map_structure(lambda t: t.numpy(), b) for b in dataset.take(count)]


def test_heatmap_peak_at_the_joint_and_uvd_round_trip(shards):
    folder, samples = shards
    source = ShardSource(folder)
    assert source.num_samples == 12 and source.image_size == 128
    batch = _batches(evaluation_dataset(source, DataConfig(), image_size=64, heatmap_size=16, batch_size=12), 1)[0]
    order = batch["index"]
    left = np.array([samples[i]["is_left"] for i in order])
    np.testing.assert_array_equal(batch["is_left"], left)
    # Left hands come out mirrored: X -> -X, x -> S - x, image flipped left-right.
    flip = np.where(left[:, None, None], [-1.0, 1.0, 1.0], 1.0)
    joints_xyz = np.stack([samples[i]["joints_xyz"] for i in order]) * flip
    np.testing.assert_allclose(batch["joints_xyz"], joints_xyz, rtol=1e-6)
    # Resizing 128 -> 64 halves the intrinsics and the pixel coordinates.
    stored_uv = np.stack([samples[i]["joints_uv"] for i in order])
    stored_uv[left, :, 0] = 128 - stored_uv[left, :, 0]
    np.testing.assert_allclose(batch["joints_uv"], stored_uv / 2, atol=1e-3)
    first_left = int(np.flatnonzero(left)[0])
    flipped = cv2.resize(samples[order[first_left]]["image"][:, ::-1], (64, 64), interpolation=cv2.INTER_AREA)
    assert np.abs(batch["image"][first_left] * 255 - flipped).mean() < 3
    # Heat-map maxima sit on the pixel containing the joint (16 x 16 maps; joints inside the crop).
    peak_uv, peak = heatmaps_to_uv_argmax(batch["heatmaps"])
    inside = np.all((batch["pose_uvd"][..., :2] > 0) & (batch["pose_uvd"][..., :2] < 1), axis=-1)
    assert inside.mean() > 0.9
    np.testing.assert_allclose(peak_uv.numpy()[inside], batch["pose_uvd"][..., :2][inside], atol=0.5 / 16 + 1e-6)
    assert np.all(peak.numpy()[inside] > np.exp(-0.5 * 2 * 0.5**2))  # sigma = 4 * 16 / 64 = 1 px
    # uvd -> xyz with the root depth and scale gives back the camera-frame joints and vertices.
    box = np.array([0.0, 0.0, 64.0, 64.0], np.float32)
    for name, xyz_name in (("pose_uvd", "joints_xyz"), ("mesh_uvd", "vertices_xyz")):
        back = uvd_to_xyz(batch[name], batch["intrinsics"], box, batch["root_depth"], batch["scale"])
        np.testing.assert_allclose(back.numpy(), batch[xyz_name], atol=2e-3 * 500)
    np.testing.assert_allclose(batch["pose_uvd"][:, 0, 2], 0.0, atol=1e-6)
    np.testing.assert_allclose(
        np.linalg.norm(batch["joints_xyz"][:, 9] - batch["joints_xyz"][:, 10], axis=-1), batch["scale"], rtol=1e-5
    )


def test_augmentation_keeps_joints_on_the_projection_and_on_the_image(shards):
    folder, _ = shards
    config = DataConfig(augment=AugmentConfig(rotation_deg=30.0, scale_min=0.8, scale_max=1.2, translation=0.1))
    dataset = training_dataset(
        ShardSource(folder), config, image_size=128, heatmap_size=32, batch_size=6, seed=3, bank=_bank(128)
    )
    for batch in _batches(dataset, 2):
        projected = project(batch["joints_xyz"], batch["intrinsics"]).numpy()
        np.testing.assert_allclose(batch["joints_uv"], projected, atol=1e-3)
        np.testing.assert_allclose(batch["pose_uvd"][..., :2] * 128, projected, atol=1e-3)
        assert np.all(np.isfinite(batch["image"])) and batch["image"].min() >= 0 and batch["image"].max() <= 1
        assert np.all(batch["root_depth"] > 300) and np.all(batch["scale"] > 10)
    # Different samples get different warps: not all intrinsics equal the stored ones.
    assert np.ptp(batch["intrinsics"][:, 0]) > 1.0


def test_image_warp_moves_a_dot_where_the_labels_go():
    size = 64
    intrinsics = tf.constant([300.0, 330.0, 30.0, 35.0])
    point = tf.constant([[20.0, -15.0, 400.0]])
    dot = project(point[None], intrinsics[None]).numpy()[0, 0]
    image = np.zeros((size, size, 1), np.float32)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    image[..., 0] = np.exp(-((xx - dot[0]) ** 2 + (yy - dot[1]) ** 2) / (2 * 1.5**2))
    theta, zoom, shift = tf.constant(0.4), tf.constant(1.15), tf.constant([3.0, -2.0])
    moved, _, new_intrinsics, matrix = warp_labels(point, None, intrinsics, theta, zoom, shift, size)
    warped = warp_image(tf.constant(image), matrix, shift, "CONSTANT").numpy()[..., 0]
    target = project(moved[None], new_intrinsics[None]).numpy()[0, 0]
    centroid = np.array([(warped * xx).sum(), (warped * yy).sum()]) / warped.sum()
    np.testing.assert_allclose(centroid, target, atol=0.05)
    assert np.linalg.norm(target - dot) > 3  # it did move


def test_stream_is_deterministic_and_resumes_at_start(shards):
    folder, _ = shards
    source = ShardSource(folder)

    def stream(start, count):
        dataset = training_dataset(
            source, DataConfig(), image_size=64, heatmap_size=16, batch_size=4, seed=5, start=start, bank=_bank(64)
        )
        return _batches(dataset, count)

    full = stream(0, 5)  # 20 samples: crosses the 12-sample epoch boundary
    resumed = stream(8, 3)
    for a, b in zip(full[2:], resumed):
        np.testing.assert_array_equal(a["index"], b["index"])
        np.testing.assert_allclose(a["image"], b["image"], atol=1e-6)
    indices = np.concatenate([b["index"] for b in full])
    assert sorted(indices[:12] % 12) == list(range(12)) and np.all(indices[12:] >= 12)
    # Two input pipelines split each epoch into disjoint halves.
    halves = [
        training_dataset(
            source,
            DataConfig(),
            image_size=64,
            heatmap_size=16,
            batch_size=6,
            seed=5,
            num_shards=2,
            shard_index=i,
            images=False,
        )
        for i in range(2)
    ]
    first, second = (_batches(h, 1)[0]["index"] for h in halves)
    assert sorted(np.concatenate([first, second]) % 12) == list(range(12))


def test_labels_only_stream_matches_the_image_stream(shards):
    folder, _ = shards
    source = ShardSource(folder)
    kwargs = dict(image_size=64, heatmap_size=16, batch_size=4, seed=2)
    with_images = _batches(training_dataset(source, DataConfig(), bank=_bank(64), **kwargs), 1)[0]
    labels = _batches(training_dataset(source, DataConfig(), images=False, **kwargs), 1)[0]
    assert "image" not in labels
    for key in ("mesh_uvd", "pose_uvd", "intrinsics", "heatmaps"):
        np.testing.assert_allclose(labels[key], with_images[key], atol=1e-6)


def test_bad_inputs(shards, tmp_path):
    folder, _ = shards
    with pytest.raises(
        DatasetError, match=r"holds 128 x 128 crops but the model takes 64 x 64 and data.resize is false"
    ):
        training_dataset(ShardSource(folder), DataConfig(resize=False), image_size=64, heatmap_size=16, batch_size=2)
    with pytest.raises(DatasetError, match=r"neither shards \(metadata.json\) nor the paper's synthetic layout"):
        open_source(tmp_path)
    with pytest.raises(DatasetError, match=r"does not exist"):
        open_source(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "metadata.json").write_text(
        json.dumps(
            {"format_version": 1, "image_size": 64, "num_vertices": 3, "pose_size": 1, "shape_size": 1, "shards": []}
        )
    )
    with pytest.raises(DatasetError, match=r"contains no complete shards"):
        open_source(empty)
    with pytest.raises(ConfigError, match=r"data.augment.scale_min=2.0 must be in \(0, scale_max\]"):
        DataConfig(augment=AugmentConfig(scale_min=2.0)).validated()


def test_paper_synthetic_layout_feeds_the_same_elements(tmp_path):
    root = tmp_path / "paper"
    rng = np.random.default_rng(0)
    (root / "3D_labels").mkdir(parents=True)
    (root / "hand_3D_mesh").mkdir()
    image_dir = root / "images" / "l01" / "cam01"
    image_dir.mkdir(parents=True)
    # One camera at the origin looking down the global -z (Maya), identity Euler angles.
    joints_cm = np.concatenate([rng.normal(0, 3, (21, 2)), rng.normal(-40, 1, (21, 1))], axis=1)
    joints_cm[10] = joints_cm[9] + [0.0, 3.5, 0.0]
    (root / "3D_labels" / "handGestures.txt").write_text(
        "".join(f"j{j} {x} {y} {z}\n" for j, (x, y, z) in enumerate(joints_cm))
    )
    (root / "3D_labels" / "camPosition.txt").write_text("cam01 200 0 0 0 0 0 0\n")
    (root / "3D_labels" / "val-camera.txt").write_text("cam02\n")
    rgba = np.zeros((96, 96, 4), np.uint8)
    rgba[30:60, 30:60] = (10, 200, 30, 255)  # BGRA on disk
    cv2.imwrite(str(image_dir / "rgt_l01_cam01_.0001.png"), rgba)
    source = open_source(root)
    assert isinstance(source, PaperSyntheticSource) and source.image_size == 96 and source.num_vertices is None
    batch = _batches(
        training_dataset(
            source,
            DataConfig(augment=AugmentConfig(enabled=False)),
            image_size=64,
            heatmap_size=16,
            batch_size=2,
            bank=np.zeros((1, 64, 64, 3), np.uint8),
        ),
        1,
    )[0]
    assert "mesh_uvd" not in batch
    np.testing.assert_allclose(batch["joints_xyz"][0], joints_cm * [10, -10, -10], rtol=1e-5)
    np.testing.assert_allclose(batch["image"][0, 32, 32], [30 / 255, 200 / 255, 10 / 255], atol=0.02)
    np.testing.assert_allclose(batch["image"][0, 5, 5], 0.0)  # transparent: the (black) background


# --- damaged shards -----------------------------------------------------------------------


def _record_ends(path) -> list[int]:
    """Byte offsets where each TFRecord of a file ends (length, its CRC, data, data CRC)."""
    data, ends, offset = path.read_bytes(), [], 0
    while offset < len(data):
        (length,) = struct.unpack("<Q", data[offset : offset + 8])
        offset += 8 + 4 + length + 4
        ends.append(offset)
    return ends


@pytest.fixture()
def counted_shards(tmp_path):
    """A folder of 3 shards x 4 samples whose metadata.json has shard_counts (as the generator writes)."""
    folder = tmp_path / "data"
    write_hand_shards(folder, 12, 32, per_shard=4)
    metadata = json.loads((folder / "metadata.json").read_text())
    metadata["shard_counts"] = {name: 4 for name in metadata["shards"]}
    (folder / "metadata.json").write_text(json.dumps(metadata))
    return folder, folder / metadata["shards"][1]


@pytest.mark.parametrize(
    "damage, message",
    [
        (
            "flipped bytes",
            r"corrupt shard .*shard-00001-of-00003.tfrecord: .* after 1 readable records; metadata.json expects 4",
        ),
        (
            "cut mid-record",
            r"corrupt shard .*shard-00001-of-00003.tfrecord: .* after 3 readable records; metadata.json expects 4",
        ),
        (
            "cut at a record boundary",
            r"short shard .*shard-00001-of-00003.tfrecord: read 3 records; metadata.json expects 4",
        ),
    ],
)
def test_damaged_shards_are_named_with_expected_and_read_counts(counted_shards, damage, message):
    folder, victim = counted_shards
    ends = _record_ends(victim)
    data = bytearray(victim.read_bytes())
    if damage == "flipped bytes":
        middle = (ends[0] + ends[1]) // 2  # inside the second record
        data[middle : middle + 8] = bytes(255 - b for b in data[middle : middle + 8])
    elif damage == "cut mid-record":
        data = data[: ends[2] + 100]
    else:
        data = data[: ends[2]]
    victim.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=message):
        ShardSource(folder)
    with pytest.raises(DatasetError, match=message):
        read_dataset(folder)
    assert read_dataset(folder, verify=False) is not None  # the check can be skipped
    result = subprocess.run(
        [sys.executable, "-m", "handshape_tf.evaluate", "--model", str(victim), "--data", str(folder)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert victim.name in result.stderr and "Traceback" not in result.stderr


def test_intact_counted_shards_are_read_in_full(counted_shards):
    folder, _ = counted_shards
    assert ShardSource(folder).num_samples == 12
    assert sum(1 for _ in read_dataset(folder)) == 12
