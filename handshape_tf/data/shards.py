"""TFRecord shards of hand samples: the schema, an atomic writer and a `tf.data` reader.

Shape shorthand: H x W image size, J = 21 keypoints, V = 1159 template vertices.

A dataset folder holds `shard-NNNNN-of-MMMMM.tfrecord` files and `metadata.json`. Each shard is
written to a temporary name and renamed when complete, so a killed writer never leaves a file
that looks like a finished shard; `metadata.json` lists the shards that are complete.

One sample (numpy, as given to `encode_example` and returned decoded by `read_dataset`):
  image:        H x W x 3 uint8 RGB, hand composited over a background.
  image_rgba:   H x W x 4 uint8, the hand alone (alpha = anti-aliased coverage).
  mask:         H x W bool, pixels whose centre the hand covers (== depth > 0).
  depth:        H x W float32 millimetres, 0 where there is no hand (stored as uint16 PNG in
                units of DEPTH_UNIT_MM).
  joints_uv:    J x 2 float32 pixel coordinates in the crop (pixel centres at i + 0.5).
  joints_xyz:   J x 3 float32 camera coordinates, mm (x right, y down, z forward).
  vertices_xyz: V x 3 float32 camera coordinates, mm, template vertex order.
  intrinsics:   4 float32 fx, fy, cx, cy of the crop.
  root_depth:   float32 z of the wrist, mm.     scale: float32 middle MCP-PIP length, mm.
  is_left:      bool.
  pose:         P float32 pose parameters.     shape: S float32 shape parameters.
  camera:       4 x 4 float32 camera-from-hand-model transform (model in metres).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable

import cv2
import numpy as np

from handshape_tf.cli import tf_error_text

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
DEPTH_UNIT_MM = 0.1  # uint16 depth PNGs: 0.1 mm steps, up to 6.5 m
METADATA = "metadata.json"

# Float fields: name -> shape, None for sizes read from the metadata.
ARRAY_FIELDS = {
    "joints_uv": (21, 2),
    "joints_xyz": (21, 3),
    "vertices_xyz": (None, 3),
    "intrinsics": (4,),
    "root_depth": (),
    "scale": (),
    "pose": (None,),
    "shape": (None,),
    "camera": (4, 4),
}


class DatasetError(ValueError):
    """A dataset folder or shard that is missing, incomplete or of another format."""


def shard_name(index: int, num_shards: int) -> str:
    return f"shard-{index:05d}-of-{num_shards:05d}.tfrecord"


def _png(array: np.ndarray) -> bytes:
    if array.ndim == 3 and array.shape[2] == 3:
        array = array[..., ::-1]  # RGB -> BGR for OpenCV
    elif array.ndim == 3 and array.shape[2] == 4:
        array = array[..., [2, 1, 0, 3]]
    ok, buffer = cv2.imencode(".png", np.ascontiguousarray(array), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise ValueError(f"PNG encoding failed for an array of shape {array.shape}")
    return buffer.tobytes()


def encode_example(sample: dict[str, Any]) -> bytes:
    """Serialises one sample (see the module docstring) to a tf.train.Example."""
    import tensorflow as tf

    def bytes_feature(value: bytes) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    def float_feature(value: np.ndarray) -> tf.train.Feature:
        return tf.train.Feature(float_list=tf.train.FloatList(value=np.asarray(value, np.float32).ravel()))

    depth = np.asarray(sample["depth"], np.float32)
    mask = np.asarray(sample["mask"], bool)
    depth_units = np.round(depth / DEPTH_UNIT_MM)
    if depth_units.max(initial=0) > np.iinfo(np.uint16).max:
        raise ValueError(f"depth up to {depth.max():.0f} mm does not fit uint16 at {DEPTH_UNIT_MM} mm steps")
    features = {
        "image": bytes_feature(_png(np.asarray(sample["image"], np.uint8))),
        "image_rgba": bytes_feature(_png(np.asarray(sample["image_rgba"], np.uint8))),
        "mask": bytes_feature(_png(mask.astype(np.uint8) * 255)),
        "depth": bytes_feature(_png(depth_units.astype(np.uint16))),
        "is_left": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(bool(sample["is_left"]))])),
    }
    for name in ARRAY_FIELDS:
        features[name] = float_feature(sample[name])
    # deterministic=True: protobuf map order otherwise varies between processes (hash seeds),
    # and the same sample must give the same bytes.
    example = tf.train.Example(features=tf.train.Features(feature=features))
    return example.SerializeToString(deterministic=True)


def write_shard(path: Path, samples: Iterable[dict[str, Any]]) -> int:
    """Writes samples to `path` atomically (temporary file, then rename). Returns the count."""
    import tensorflow as tf

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    count = 0
    with tf.io.TFRecordWriter(str(tmp)) as writer:
        for sample in samples:
            writer.write(encode_example(sample))
            count += 1
    os.replace(tmp, path)
    return count


def write_metadata(folder: Path, metadata: dict[str, Any]) -> None:
    """Writes `metadata.json` atomically."""
    path = Path(folder) / METADATA
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"format_version": FORMAT_VERSION, **metadata}, indent=2, sort_keys=True))
    os.replace(tmp, path)


def read_metadata(folder: str | Path) -> dict[str, Any]:
    """Reads and checks `metadata.json` of a shard folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"dataset folder {folder} does not exist")
    path = folder / METADATA
    if not path.is_file():
        raise DatasetError(f"{folder} has no {METADATA}: not a handshape_tf shard folder (or not generated yet)")
    try:
        metadata = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DatasetError(f"{path} is not valid JSON ({error})") from None
    if metadata.get("format_version") != FORMAT_VERSION:
        raise DatasetError(
            f"{path}: shard format version {metadata.get('format_version')!r}; expected {FORMAT_VERSION}"
        )
    for key in ("image_size", "num_vertices", "pose_size", "shape_size", "shards"):
        if key not in metadata:
            raise DatasetError(f"{path}: missing key {key!r}")
    return metadata


def shard_paths(folder: str | Path, metadata: dict[str, Any] | None = None) -> list[Path]:
    """Complete shard files of a folder, in order; raises DatasetError when there are none."""
    folder = Path(folder)
    metadata = metadata or read_metadata(folder)
    paths = [folder / name for name in sorted(metadata["shards"])]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise DatasetError(f"{folder}: metadata lists shards that are missing: {missing[:5]}")
    if not paths:
        raise DatasetError(f"{folder} contains no complete shards")
    return paths


def verify_shards(folder: str | Path, metadata: dict[str, Any] | None = None) -> dict[str, int]:
    """Reads every record of every listed shard once (checksums, no decoding); {name: count}.

    Costs one pass over the files' bytes, about a tenth of decoding their images.

    Raises:
      DatasetError: a shard is missing, fails its record checksums or ends mid-record
        (corrupt or truncated: the message names the file and the records read before the
        damage), or holds another number of records than `shard_counts` in metadata.json
        (a shard cut at a record boundary).
    """
    import tensorflow as tf

    metadata = metadata or read_metadata(folder)
    expected = metadata.get("shard_counts")
    expected = expected if isinstance(expected, dict) else {}
    counts = {}
    for path in shard_paths(folder, metadata):
        records = tf.data.TFRecordDataset(str(path))
        try:
            count = int(records.reduce(np.int64(0), lambda n, _: n + 1))
        except tf.errors.OpError as error:
            read = 0
            try:
                for _ in records:
                    read += 1
            except tf.errors.OpError as again:
                error = again
            wanted = f"; metadata.json expects {expected[path.name]}" if path.name in expected else ""
            raise DatasetError(
                f"corrupt shard {path}: {tf_error_text(error)} after {read} readable records{wanted}; "
                "regenerate the shard (delete it and rerun the generator)"
            ) from None
        if path.name in expected and count != int(expected[path.name]):
            raise DatasetError(
                f"short shard {path}: read {count} records; metadata.json expects {expected[path.name]} "
                "(the file was truncated or replaced); regenerate the shard (delete it and rerun the generator)"
            )
        counts[path.name] = count
    return counts


def read_dataset(folder: str | Path, *, image_size: int | None = None, shuffle_files: bool = False,
                 seed: int | None = None, verify: bool = True):
    """A `tf.data.Dataset` of decoded samples (dicts of tensors, see the module docstring).

    Args:
      folder: shard folder with `metadata.json`.
      image_size: if given, the shards' image size must equal it (DatasetError otherwise).
      shuffle_files: shuffle the shard order (seeded by `seed`).
      verify: check every shard first (`verify_shards`), so that damage is a DatasetError
        naming the file here rather than a TensorFlow DataLossError mid-iteration.

    Raises:
      DatasetError: see `read_metadata`, `shard_paths` and `verify_shards`.
    """
    import tensorflow as tf

    metadata = read_metadata(folder)
    if verify:
        verify_shards(folder, metadata)
    size = int(metadata["image_size"])
    if image_size is not None and size != image_size:
        raise DatasetError(f"{folder}: shards hold {size}x{size} images; expected {image_size}x{image_size}")
    shapes = dict(ARRAY_FIELDS)
    shapes["vertices_xyz"] = (int(metadata["num_vertices"]), 3)
    shapes["pose"] = (int(metadata["pose_size"]),)
    shapes["shape"] = (int(metadata["shape_size"]),)
    spec = {name: tf.io.FixedLenFeature([], tf.string) for name in ("image", "image_rgba", "mask", "depth")}
    spec["is_left"] = tf.io.FixedLenFeature([], tf.int64)
    for name, shape in shapes.items():
        spec[name] = tf.io.FixedLenFeature(shape, tf.float32)

    def decode(record):
        example = tf.io.parse_single_example(record, spec)
        sample = {name: example[name] for name in shapes}
        sample["image"] = tf.ensure_shape(tf.io.decode_png(example["image"], channels=3), (size, size, 3))
        sample["image_rgba"] = tf.ensure_shape(tf.io.decode_png(example["image_rgba"], channels=4), (size, size, 4))
        sample["mask"] = tf.ensure_shape(tf.io.decode_png(example["mask"], channels=1)[..., 0] > 0, (size, size))
        depth = tf.io.decode_png(example["depth"], channels=1, dtype=tf.uint16)[..., 0]
        sample["depth"] = tf.ensure_shape(tf.cast(depth, tf.float32) * DEPTH_UNIT_MM, (size, size))
        sample["is_left"] = example["is_left"] > 0
        return sample

    files = tf.data.Dataset.from_tensor_slices([str(p) for p in shard_paths(folder, metadata)])
    if shuffle_files:
        files = files.shuffle(len(metadata["shards"]), seed=seed)
    records = files.interleave(tf.data.TFRecordDataset, cycle_length=2, num_parallel_calls=tf.data.AUTOTUNE,
                               deterministic=not shuffle_files)
    return records.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
