"""Sources of the input pipeline: where samples come from, and the decoding of one sample.

Shape shorthand: S0 stored crop side, S model input side, J = 21 keypoints, V mesh vertices.

A source gives each epoch a stream of light elements (`elements`: serialised records or sample
indices, cheap to shuffle and skip) and decodes one element into a sample (`decode`);
`handshape_tf.data.pipeline` turns samples into training and evaluation elements. Two layouts:
our shards (`ShardSource`, only the fields training needs) and the paper's synthetic set
(`PaperSyntheticSource`, via `handshape_tf.data.external`). `open_source` picks the one a
folder holds; `check_image_size` fails fast when S0 != S and `DataConfig.resize` is off.

Shuffling is stateless: an epoch's order is a pure function of (seed, epoch), so a resumed run
rebuilds the stream at the position it had reached without replaying it.

Why not `shards.read_dataset`: it decodes every field of every record (depth, mask, both
images); shuffling and skipping decoded samples would cost memory and time, so `ShardSource`
parses the same schema lazily.

Decoded sample (dict of unbatched tensors; the images only with `decode(..., images=True)`):
  image:        S0 x S0 x 3 uint8 RGB, the stored composited crop.
  image_rgba:   S0 x S0 x 4 uint8 RGBA, the hand over a transparent background.
  joints_xyz:   J x 3 float32 camera frame, mm.
  vertices_xyz: V x 3 float32, mm (absent for `PaperSyntheticSource` without meshes).
  intrinsics:   4 float32 fx, fy, cx, cy of the S0 x S0 crop.
  is_left:      bool, a left hand (stored as is; `handshape_tf.data.pipeline` mirrors it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from handshape_tf.data.shards import DatasetError, read_metadata, shard_paths, verify_shards

NUM_KEYPOINTS = 21


class ShardSource:
    """Samples from a folder of our TFRecord shards (`handshape_tf.data.shards` schema).

    Args:
      folder: shard folder with `metadata.json`.

    Raises:
      DatasetError: no metadata, no complete shards, shards of another format, or a corrupt
        or short shard (`shards.verify_shards`).
    """

    has_rgba = True

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.metadata = read_metadata(self.folder)
        self.paths = [str(p) for p in shard_paths(self.folder, self.metadata)]
        self.image_size = int(self.metadata["image_size"])
        self.num_vertices = int(self.metadata["num_vertices"])
        # One pass over the records: corrupt or short shards fail here, naming the file.
        self.num_samples = sum(verify_shards(self.folder, self.metadata).values())
        if self.num_samples == 0:
            raise DatasetError(f"{self.folder}: the shards hold no samples")

    def __repr__(self) -> str:
        return f"ShardSource({str(self.folder)!r}, {self.num_samples} samples of {self.image_size} px)"

    def elements(self, epoch, seed: int, shuffle: bool, buffer: int = 1024) -> tf.data.Dataset:
        """Serialised records of one epoch, shuffled by (seed, epoch) when `shuffle`.

        Shuffling is stateless (a pure function of seed and epoch, unlike `Dataset.shuffle`,
        whose tensor seeds clash with a global seed): the file order is permuted, four files
        are interleaved, and each run of `buffer` consecutive records is permuted. Unshuffled,
        the files come one after the other, so positions follow the source order.
        """
        files = tf.constant(self.paths)
        epoch_key = tf.stack([np.int64(seed), tf.cast(epoch, tf.int64)])
        if shuffle:
            files = tf.random.experimental.stateless_shuffle(files, seed=epoch_key)
        records = tf.data.Dataset.from_tensor_slices(files).interleave(
            tf.data.TFRecordDataset, cycle_length=min(4, len(self.paths)) if shuffle else 1
        )
        if not shuffle:
            return records

        @tf.autograph.experimental.do_not_convert
        def permuted(block, chunk):
            key = tf.random.experimental.stateless_fold_in(epoch_key, block)
            return tf.data.Dataset.from_tensor_slices(tf.random.experimental.stateless_shuffle(chunk, seed=key))

        return records.batch(buffer).enumerate().flat_map(permuted)

    def decode(self, record: tf.Tensor, images: bool) -> dict[str, tf.Tensor]:
        """Parses one record: image, image_rgba (uint8), joints_xyz, vertices_xyz, intrinsics,
        is_left."""
        size = self.image_size
        spec = {
            "joints_xyz": tf.io.FixedLenFeature((NUM_KEYPOINTS, 3), tf.float32),
            "vertices_xyz": tf.io.FixedLenFeature((self.num_vertices, 3), tf.float32),
            "intrinsics": tf.io.FixedLenFeature((4,), tf.float32),
            "is_left": tf.io.FixedLenFeature([], tf.int64),
        }
        if images:
            spec["image"] = tf.io.FixedLenFeature([], tf.string)
            spec["image_rgba"] = tf.io.FixedLenFeature([], tf.string)
        example = tf.io.parse_single_example(record, spec)
        sample = {name: example[name] for name in ("joints_xyz", "vertices_xyz", "intrinsics")}
        sample["is_left"] = example["is_left"] > 0
        if images:
            sample["image"] = tf.ensure_shape(tf.io.decode_png(example["image"], channels=3), (size, size, 3))
            sample["image_rgba"] = tf.ensure_shape(tf.io.decode_png(example["image_rgba"], channels=4), (size, size, 4))
        return sample


class PaperSyntheticSource:
    """Samples of the paper's synthetic set (`handshape_tf.data.external.PaperSyntheticDataset`).

    Its RGBA crops have a transparent background: `image_rgba` is the file, `image` its colour
    channels. Its meshes have the dataset's own topology, so `with_mesh` (default False) is only
    useful to models built on that topology; without meshes the pipeline yields no mesh labels.

    Args:
      root: the set's folder (images/, 3D_labels/, hand_3D_mesh/).
      split: "train" or "val" (the validation cameras).
      with_mesh: load the gesture meshes.

    Raises:
      FileNotFoundError, ValueError: as `PaperSyntheticDataset`; DatasetError when the split is
        empty or its crops are not all of one square size.
    """

    has_rgba = True

    def __init__(self, root: str | Path, split: str = "train", *, with_mesh: bool = False):
        from handshape_tf.data.external import PaperSyntheticDataset

        self.dataset = PaperSyntheticDataset(root, split=split, with_mesh=with_mesh)
        self.num_samples = len(self.dataset)
        if self.num_samples == 0:
            raise DatasetError(f"{root}: no images in the {split!r} split of the paper's synthetic layout")
        first = self.dataset[0]
        height, width = first["image"].shape[:2]
        if height != width:
            raise DatasetError(f"{root}: crops of {width} x {height} px; expected square crops")
        self.image_size = int(height)
        self.num_vertices = int(first["vertices_xyz"].shape[0]) if with_mesh else None

    def __repr__(self) -> str:
        return f"PaperSyntheticSource({self.dataset!r}, {self.image_size} px)"

    def elements(self, epoch, seed: int, shuffle: bool, buffer: int = 0) -> tf.data.Dataset:
        """Sample indices of one epoch (a full permutation seeded by (seed, epoch); `buffer`
        is unused: indices are shuffled whole)."""
        indices = tf.range(self.num_samples, dtype=tf.int64)
        if shuffle:
            indices = tf.random.experimental.stateless_shuffle(indices, seed=tf.stack([np.int64(seed), epoch]))
        return tf.data.Dataset.from_tensor_slices(indices)

    def _load(self, index, images: bool):
        sample = self.dataset[int(index)]
        size = self.image_size
        if sample["image"].shape[:2] != (size, size):
            raise DatasetError(
                f"{sample['name']}: crop of shape {sample['image'].shape}; expected {size} x {size} like the first"
            )
        values = [sample["joints_xyz"].astype(np.float32), sample["intrinsics"].astype(np.float32)]
        if self.num_vertices is not None:
            values.append(sample["vertices_xyz"].astype(np.float32))
        if images:
            alpha = np.where(sample["mask"], 255, 0).astype(np.uint8)[..., None]
            values += [sample["image"], np.concatenate([sample["image"], alpha], axis=-1)]
        return values

    def decode(self, index: tf.Tensor, images: bool) -> dict[str, tf.Tensor]:
        """Loads one sample by index (in a numpy_function; OpenCV releases the GIL)."""
        size = self.image_size
        names = ["joints_xyz", "intrinsics"]
        types = [tf.float32, tf.float32]
        shapes = [(NUM_KEYPOINTS, 3), (4,)]
        if self.num_vertices is not None:
            names.append("vertices_xyz")
            types.append(tf.float32)
            shapes.append((self.num_vertices, 3))
        if images:
            names += ["image", "image_rgba"]
            types += [tf.uint8, tf.uint8]
            shapes += [(size, size, 3), (size, size, 4)]
        values = tf.numpy_function(lambda i: self._load(i, images), [index], types, stateful=False)
        sample = {name: tf.ensure_shape(value, shape) for name, value, shape in zip(names, values, shapes)}
        sample["is_left"] = tf.constant(False)  # the set's hands are all right hands
        return sample


def open_source(path: str | Path, split: str = "train"):
    """A source for a folder: our shards (metadata.json) or the paper's synthetic layout.

    Args:
      path: shard folder, or the paper set's root (images/ and 3D_labels/).
      split: split of the paper's set ("train" or "val"); ignored for shard folders.

    Raises:
      DatasetError: the folder is missing or is neither layout.
    """
    path = Path(path)
    if not path.is_dir():
        raise DatasetError(f"dataset folder {path} does not exist")
    if (path / "metadata.json").is_file():
        return ShardSource(path)
    if (path / "images").is_dir() and (path / "3D_labels").is_dir():
        return PaperSyntheticSource(path, split)
    raise DatasetError(
        f"{path} holds neither shards (metadata.json) nor the paper's synthetic layout (images/, 3D_labels/)"
    )


def check_image_size(source, image_size: int, resize: bool) -> None:
    """Fails fast when the stored crops cannot feed a model of `image_size` px.

    Raises:
      DatasetError: sides differ and resizing is off.
    """
    if source.image_size != image_size and not resize:
        raise DatasetError(
            f"{source!r} holds {source.image_size} x {source.image_size} crops but the model takes "
            f"{image_size} x {image_size} and data.resize is false; regenerate the data at {image_size} px "
            f"or set data.resize=true"
        )
