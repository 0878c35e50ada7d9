"""TFRecord shards of hand samples: the schema, an atomic writer, a `tf.data` reader and a
random-access reader.

Shape shorthand: H x W image size, J = 21 keypoints, V = 1159 template vertices, B batch.

A dataset folder holds `shard-NNNNN-of-MMMMM.tfrecord` files and `metadata.json`. Each shard is
written to a temporary name and renamed when complete, so a killed writer never leaves a file
that looks like a finished shard; `metadata.json` lists the shards that are complete and the
fields its samples carry ("fields"; format 1 folders carry `SYNTHETIC_FIELDS`).

One sample (numpy, as given to `encode_example` and returned decoded by `read_dataset`). Every
sample has (`REQUIRED_FIELDS`):
  image:        H x W x 3 uint8 RGB, hand composited over a background.
  joints_uv:    J x 2 float32 pixel coordinates in the crop (pixel centres at i + 0.5).
  joints_xyz:   J x 3 float32 camera coordinates, mm (x right, y down, z forward).
  intrinsics:   4 float32 fx, fy, cx, cy of the crop.
  root_depth:   float32 z of the wrist, mm.     scale: float32 middle MCP-PIP length, mm.
  is_left:      bool.
Rendered samples add (`SYNTHETIC_FIELDS`):
  image_rgba:   H x W x 4 uint8, the hand alone (alpha = anti-aliased coverage).
  mask:         H x W bool, pixels whose centre the hand covers (== depth > 0).
  depth:        H x W float32 millimetres, 0 where there is no hand (stored as uint16 PNG in
                units of DEPTH_UNIT_MM).
  vertices_xyz: V x 3 float32 camera coordinates, mm, template vertex order.
  pose:         P float32 pose parameters.     shape: S float32 shape parameters.
  camera:       4 x 4 float32 camera-from-hand-model transform (model in metres).
RGB-D samples (a rendered domain with a depth sensor, or real RGB-D crops such as STB's) add:
  sensor_depth: H x W float32 millimetres, what the depth sensor measured, 0 where it has no
                value (stored as uint16 PNG in units of SENSOR_DEPTH_UNIT_MM).
A field is stored when the sample has it; `write_shard` can check that every sample has
exactly the folder's fields.

`ShardSamples` reads samples by index (record offsets, no `tf.data`), optionally mirroring left
hands into right hands (`mirror_left`), for training loops that draw their own batches.
"""

from __future__ import annotations

import json
import logging
import os
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from handshape_tf.cli import tf_error_text

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: optional fields, listed in metadata.json ("fields")
READABLE_FORMAT_VERSIONS = (1, 2)
DEPTH_UNIT_MM = 0.1  # uint16 depth PNGs: 0.1 mm steps, up to 6.5 m
SENSOR_DEPTH_UNIT_MM = 1.0  # uint16 sensor depth PNGs: 1 mm steps (the sensors' own resolution)
METADATA = "metadata.json"

REQUIRED_FIELDS = ("image", "joints_uv", "joints_xyz", "intrinsics", "root_depth", "scale", "is_left")
SYNTHETIC_FIELDS = REQUIRED_FIELDS + ("image_rgba", "mask", "depth", "vertices_xyz", "pose", "shape", "camera")
OPTIONAL_FIELDS = SYNTHETIC_FIELDS[len(REQUIRED_FIELDS) :] + ("sensor_depth",)
FIELDS = REQUIRED_FIELDS + OPTIONAL_FIELDS
# PNG fields: name -> (channels, stored dtype, unit: decoded = stored * unit; None for uint8 / bool).
IMAGE_FIELDS = {
    "image": (3, np.uint8, None),
    "image_rgba": (4, np.uint8, None),
    "mask": (1, np.uint8, None),
    "depth": (1, np.uint16, DEPTH_UNIT_MM),
    "sensor_depth": (1, np.uint16, SENSOR_DEPTH_UNIT_MM),
}

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


def sample_fields(sample: dict[str, Any]) -> tuple[str, ...]:
    """The fields `encode_example` stores for `sample`, in `FIELDS` order.

    Raises:
      ValueError: a required field is missing.
    """
    missing = [name for name in REQUIRED_FIELDS if sample.get(name) is None]
    if missing:
        raise ValueError(f"sample lacks the required fields {missing}; it has {sorted(sample)}")
    return tuple(name for name in FIELDS if sample.get(name) is not None)


def folder_fields(metadata: dict[str, Any]) -> tuple[str, ...]:
    """The fields the samples of a folder carry (format 1: `SYNTHETIC_FIELDS`)."""
    return tuple(metadata.get("fields", SYNTHETIC_FIELDS))


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


def _depth_png(depth: np.ndarray, unit_mm: float, name: str) -> bytes:
    units = np.round(np.asarray(depth, np.float32) / unit_mm)
    if units.max(initial=0) > np.iinfo(np.uint16).max:
        raise ValueError(f"{name} up to {units.max() * unit_mm:.0f} mm does not fit uint16 at {unit_mm} mm steps")
    return _png(units.astype(np.uint16))


def encode_example(sample: dict[str, Any]) -> bytes:
    """Serialises one sample (see the module docstring; the fields it has) to a tf.train.Example.

    Raises:
      ValueError: a required field is missing, or a depth does not fit its uint16 PNG.
    """
    import tensorflow as tf

    def bytes_feature(value: bytes) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    def float_feature(value: np.ndarray) -> tf.train.Feature:
        return tf.train.Feature(float_list=tf.train.FloatList(value=np.asarray(value, np.float32).ravel()))

    fields = sample_fields(sample)
    features = {
        "image": bytes_feature(_png(np.asarray(sample["image"], np.uint8))),
        "is_left": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(bool(sample["is_left"]))])),
    }
    if "image_rgba" in fields:
        features["image_rgba"] = bytes_feature(_png(np.asarray(sample["image_rgba"], np.uint8)))
    if "mask" in fields:
        features["mask"] = bytes_feature(_png(np.asarray(sample["mask"], bool).astype(np.uint8) * 255))
    for name in ("depth", "sensor_depth"):
        if name in fields:
            features[name] = bytes_feature(_depth_png(sample[name], IMAGE_FIELDS[name][2], name))
    for name in ARRAY_FIELDS:
        if name in fields:
            features[name] = float_feature(sample[name])
    # deterministic=True: protobuf map order otherwise varies between processes (hash seeds),
    # and the same sample must give the same bytes.
    example = tf.train.Example(features=tf.train.Features(feature=features))
    return example.SerializeToString(deterministic=True)


def write_shard(path: Path, samples: Iterable[dict[str, Any]], fields: Sequence[str] | None = None) -> int:
    """Writes samples to `path` atomically (temporary file, then rename). Returns the count.

    Raises:
      ValueError: `fields` is given and a sample has other fields (nothing is written).
    """
    import tensorflow as tf

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    count = 0
    try:
        with tf.io.TFRecordWriter(str(tmp)) as writer:
            for sample in samples:
                if fields is not None and sample_fields(sample) != tuple(fields):
                    raise ValueError(
                        f"sample {count} of {path.name} has the fields {list(sample_fields(sample))}; "
                        f"the folder's are {list(fields)}"
                    )
                writer.write(encode_example(sample))
                count += 1
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
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
    if metadata.get("format_version") not in READABLE_FORMAT_VERSIONS:
        raise DatasetError(
            f"{path}: shard format version {metadata.get('format_version')!r}; expected one of "
            f"{list(READABLE_FORMAT_VERSIONS)}"
        )
    fields = folder_fields(metadata)
    unknown = [name for name in fields if name not in FIELDS]
    missing = [name for name in REQUIRED_FIELDS if name not in fields]
    if unknown or missing:
        raise DatasetError(f"{path}: fields {list(fields)} have unknown {unknown} and lack required {missing}")
    sizes = {"vertices_xyz": "num_vertices", "pose": "pose_size", "shape": "shape_size"}
    for key in ("image_size", "shards") + tuple(key for name, key in sizes.items() if name in fields):
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
        except tf.errors.OpError:
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


def _field_shapes(metadata: dict[str, Any], fields: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """name -> shape of the float fields among `fields`, sizes filled in from the metadata."""
    sizes = {"vertices_xyz": ("num_vertices", 3), "pose": ("pose_size",), "shape": ("shape_size",)}
    shapes = {}
    for name in ARRAY_FIELDS:
        if name in fields:
            shape = sizes.get(name, ARRAY_FIELDS[name])
            shapes[name] = tuple(int(metadata[d]) if isinstance(d, str) else d for d in shape)
    return shapes


def _parse_spec(metadata: dict[str, Any], fields: Sequence[str]) -> dict[str, Any]:
    """`tf.io.parse_example` features of `fields` (is_left always)."""
    import tensorflow as tf

    spec = {name: tf.io.FixedLenFeature([], tf.string) for name in IMAGE_FIELDS if name in fields}
    spec["is_left"] = tf.io.FixedLenFeature([], tf.int64)
    for name, shape in _field_shapes(metadata, fields).items():
        spec[name] = tf.io.FixedLenFeature(shape, tf.float32)
    return spec


def read_dataset(
    folder: str | Path,
    *,
    image_size: int | None = None,
    shuffle_files: bool = False,
    seed: int | None = None,
    verify: bool = True,
):
    """A `tf.data.Dataset` of decoded samples (dicts of tensors, see the module docstring; the
    folder's fields).

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
    fields = folder_fields(metadata)
    spec = _parse_spec(metadata, fields)
    shapes = _field_shapes(metadata, fields)

    def decode(record):
        example = tf.io.parse_single_example(record, spec)
        sample = {name: example[name] for name in shapes}
        sample["image"] = tf.ensure_shape(tf.io.decode_png(example["image"], channels=3), (size, size, 3))
        if "image_rgba" in fields:
            rgba = tf.io.decode_png(example["image_rgba"], channels=4)
            sample["image_rgba"] = tf.ensure_shape(rgba, (size, size, 4))
        if "mask" in fields:
            sample["mask"] = tf.ensure_shape(tf.io.decode_png(example["mask"], channels=1)[..., 0] > 0, (size, size))
        for name in ("depth", "sensor_depth"):
            if name in fields:
                depth = tf.io.decode_png(example[name], channels=1, dtype=tf.uint16)[..., 0]
                sample[name] = tf.ensure_shape(tf.cast(depth, tf.float32) * IMAGE_FIELDS[name][2], (size, size))
        sample["is_left"] = example["is_left"] > 0
        return sample

    files = tf.data.Dataset.from_tensor_slices([str(p) for p in shard_paths(folder, metadata)])
    if shuffle_files:
        files = files.shuffle(len(metadata["shards"]), seed=seed)
    records = files.interleave(
        tf.data.TFRecordDataset, cycle_length=2, num_parallel_calls=tf.data.AUTOTUNE, deterministic=not shuffle_files
    )
    return records.map(decode, num_parallel_calls=tf.data.AUTOTUNE)


# ---------------------------------------------------------------------------------------------
# Writing a folder shard by shard (resumable).


def plan_shards(num_samples: int, samples_per_shard: int) -> dict[str, int]:
    """{shard name: samples} of a folder of num_samples in shards of samples_per_shard (the last
    one may be smaller); shard k holds samples k * samples_per_shard, ..."""
    num_shards = -(-int(num_samples) // int(samples_per_shard))
    return {
        shard_name(i, num_shards): min(samples_per_shard, num_samples - i * samples_per_shard)
        for i in range(num_shards)
    }


def complete_shards(folder: str | Path, counts: dict[str, int]) -> set[str]:
    """The planned shards present in `folder` (files are renamed into place only when complete)."""
    return {name for name in counts if (Path(folder) / name).is_file()}


def folder_metadata(config: dict[str, Any], counts: dict[str, int], done: set[str]) -> dict[str, Any]:
    """metadata.json of a folder being written: `config` plus the shards planned (`plan_shards`)
    and the complete ones (`done`)."""
    complete = sorted(done)
    return {
        "format_version": FORMAT_VERSION,
        **config,
        "num_shards": len(counts),
        "shards": complete,
        "shard_counts": {name: counts[name] for name in complete},
        "num_complete_samples": int(sum(counts[name] for name in complete)),
        "complete": len(complete) == len(counts),
    }


def check_resumable(
    folder: str | Path, config: dict[str, Any], keys: Sequence[str], defaults: dict[str, Any] | None = None
) -> None:
    """Raises DatasetError if `folder` holds a dataset whose metadata differs from `config` in one
    of `keys` (a key missing from an older folder counts as `defaults`' value, else None), or
    shard files without metadata.json. An empty or missing folder passes."""
    folder = Path(folder)
    path = folder / METADATA
    defaults = defaults or {}
    if not path.is_file():
        stray = sorted(p.name for p in folder.glob("shard-*.tfrecord"))
        if stray:
            raise DatasetError(
                f"{folder} holds shard files ({stray[0]}, ...) but no {METADATA}; "
                "expected an empty folder or one made by this generator"
            )
        return
    try:
        existing = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DatasetError(f"{path} is not valid JSON ({error}); delete the folder or choose another") from None
    different = {
        key: (existing.get(key, defaults.get(key)), config.get(key))
        for key in keys
        if existing.get(key, defaults.get(key)) != config.get(key)
    }
    if different:
        detail = ", ".join(f"{key}: folder has {old!r}, requested {new!r}" for key, (old, new) in different.items())
        raise DatasetError(
            f"{folder} holds a dataset generated with other arguments ({detail}); "
            "rerun with the same arguments to resume it, or choose a new folder"
        )


# ---------------------------------------------------------------------------------------------
# Random access.


def mirror_batch(batch: dict[str, np.ndarray], rows, image_size: int) -> dict[str, np.ndarray]:
    """Flips the samples `rows` (B bool) of a decoded batch left-right, in place: a left hand
    becomes a right hand seen by a camera mirrored about its y-z plane. Image fields' columns
    flip, camera X -> -X (joints_xyz, vertices_xyz; camera becomes the reflection composed with
    the stored transform), cx -> S - cx and u -> S - u, so every projected point moves
    x -> S - x; is_left becomes False. Returns `batch`."""
    rows = np.asarray(rows, bool)
    if not rows.any():
        return batch
    for name in IMAGE_FIELDS:
        if name in batch:
            batch[name][rows] = batch[name][rows][:, :, ::-1]
    for name in ("joints_xyz", "vertices_xyz"):
        if name in batch:
            batch[name][rows, :, 0] *= -1.0
    if "camera" in batch:
        batch["camera"][rows, 0] *= -1.0
    if "intrinsics" in batch:
        batch["intrinsics"][rows, 2] = image_size - batch["intrinsics"][rows, 2]
    if "joints_uv" in batch:
        batch["joints_uv"][rows, :, 0] = image_size - batch["joints_uv"][rows, :, 0]
    batch["is_left"][rows] = False
    return batch


def _record_offsets(path: Path) -> list[tuple[int, int]]:
    """(offset, length) of the data of each record of an uncompressed TFRecord file (each record
    is a uint64 length, its CRC, the data and the data's CRC; `verify_shards` checks the CRCs)."""
    offsets = []
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        position = 0
        while position < size:
            file.seek(position)
            header = file.read(8)
            if len(header) < 8:
                raise DatasetError(f"corrupt shard {path}: a record header ends the file after {len(offsets)} records")
            (length,) = struct.unpack("<Q", header)
            offsets.append((position + 12, length))
            position += 12 + length + 4
        if position != size:
            raise DatasetError(f"corrupt shard {path}: its last record ends past the file after {len(offsets)} records")
    return offsets


def _decode_png(name: str, encoded: bytes) -> np.ndarray:
    channels, dtype, unit = IMAGE_FIELDS[name]
    array = cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None or array.dtype != dtype or (array.shape[2:] or (1,))[0] != channels:
        raise DatasetError(f"{name} is not a {channels}-channel {np.dtype(dtype).name} PNG")
    if channels == 3:
        return array[..., ::-1]  # BGR -> RGB
    if channels == 4:
        return array[..., [2, 1, 0, 3]]
    if name == "mask":
        return array > 0
    return array.astype(np.float32) * np.float32(unit)


class ShardSamples:
    """A complete shard folder opened for reading samples by index (module docstring).

    Sample i is the i-th record of the shards in name order (for the generators: sample i of the
    dataset). Reading costs a seek, the record's bytes and its PNG decodes; nothing is held in
    memory but the record offsets.

    Args:
      folder: the shard folder.
      verify: check every shard's records first (`verify_shards`).

    Attributes:
      folder, metadata, image_size, fields (the stored fields, `folder_fields`).

    Raises:
      DatasetError: see `read_metadata`, `shard_paths` and `verify_shards`; an incomplete folder.
    """

    def __init__(self, folder: str | Path, *, verify: bool = True):
        self.folder = Path(folder)
        self.metadata = read_metadata(self.folder)
        if self.metadata.get("complete") is False:
            have, total = self.metadata.get("num_complete_samples"), self.metadata.get("num_samples")
            raise DatasetError(
                f"{self.folder} is incomplete ({have} of {total} samples written); rerun the command that writes it"
            )
        self._paths = shard_paths(self.folder, self.metadata)
        if verify:
            verify_shards(self.folder, self.metadata)
        self.image_size = int(self.metadata["image_size"])
        self.fields = folder_fields(self.metadata)
        self._records = [
            (file, offset, length) for file, path in enumerate(self._paths) for offset, length in _record_offsets(path)
        ]

    def __len__(self) -> int:
        return len(self._records)

    def __repr__(self) -> str:
        return f"ShardSamples({str(self.folder)!r}, {len(self)} samples of {self.image_size} px)"

    def records(self, indices) -> list[bytes]:
        """The serialised examples at `indices` (B ints in [0, len))."""
        result = []
        for index in np.asarray(indices, np.int64).reshape(-1):
            if not 0 <= index < len(self):
                raise IndexError(f"sample {index} of {self!r}")
            file, offset, length = self._records[index]
            with open(self._paths[file], "rb") as handle:
                handle.seek(offset)
                result.append(handle.read(length))
        return result

    def batch(self, indices, fields: Sequence[str] | None = None, *, mirror_left: bool = True) -> dict[str, np.ndarray]:
        """The samples at `indices`, decoded.

        Args:
          indices: B ints.
          fields: the fields to decode (default: all stored ones).
          mirror_left: flip left hands into right hands (`mirror_batch`).

        Returns:
          {field: B x ... numpy array (images uint8, mask bool, depths and labels float32 mm),
           "is_left": B bool (False after mirroring), "mirrored": B bool, "index": B int64}.

        Raises:
          DatasetError: a field the folder does not hold.
        """
        import tensorflow as tf

        fields = self.fields if fields is None else tuple(fields)
        missing = [name for name in fields if name not in self.fields]
        if missing:
            raise DatasetError(f"{self.folder} holds no {missing}; its samples have {list(self.fields)}")
        indices = np.asarray(indices, np.int64).reshape(-1)
        parsed = tf.io.parse_example(tf.constant(self.records(indices), tf.string), _parse_spec(self.metadata, fields))
        batch = {}
        for name in fields:
            if name in IMAGE_FIELDS:
                batch[name] = np.stack([_decode_png(name, value) for value in parsed[name].numpy()])
            elif name != "is_left":
                batch[name] = np.array(parsed[name].numpy())
        batch["is_left"] = parsed["is_left"].numpy() > 0
        batch["mirrored"] = batch["is_left"] & mirror_left
        mirror_batch(batch, batch["mirrored"], self.image_size)
        batch["index"] = indices
        return batch
