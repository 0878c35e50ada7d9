"""tf.data input pipeline: samples -> composited, augmented crops with heat-map and uvd labels.

Shape shorthand: B batch, S model input side, S0 stored crop side, M = S / 4 heat-map side,
J = 21 keypoints, V mesh vertices, N background bank size.

Per sample (paper Sec. 4.3 and 5.1), all in TensorFlow ops inside `Dataset.map`:

1. decode: our shards (`ShardSource`, only the fields training needs) or the paper's synthetic
   layout (`PaperSyntheticSource`, via `handshape_tf.data.external`); left hands are mirrored
   into right hands (the network is trained on right hands; `handshape_tf.inference` mirrors
   left-hand crops the same way): the crop flipped left-right, X -> -X for the 3D labels and
   cx -> S0 - cx, so x -> S0 - x for every projected point;
2. resize the stored S0 x S0 crop to the model's S x S (area/antialiased; intrinsics scaled by
   S / S0, so normalised crop coordinates do not change). With `DataConfig.resize` off, S0 must
   equal S (`check_image_size` fails fast otherwise);
3. geometric augmentation: a rotation by theta about the camera's optical axis, a zoom k and a
   shift t, one affine warp of the image (x' = M (x - c) + c + t, c the crop centre,
   M = k F R(theta) F^-1, F = diag(fx, fy)). It is exactly the image of the rotated scene
   xyz' = Rz(theta) xyz seen by a camera with intrinsics fx' = k fx, fy' = k fy,
   (cx', cy') = M ((cx, cy) - c) + c + t, so 3D joints, mesh, root depth and scale stay valid
   labels (z is unchanged, so is the hand scale);
4. compositing: the premultiplied hand (`image_rgba`) over a background from a bank of N
   backgrounds drawn once from `handshape_tf.data.backgrounds.BackgroundSource` (each use
   randomly flipped and turned by a multiple of 90 degrees: 8 N variants); with compositing off
   the stored composited `image` is warped instead (reflected at the border);
5. photometric augmentation: brightness, contrast, saturation, hue, Gaussian blur, noise;
6. labels: Gaussian heat-maps (sigma 4 px at 64 x 64, scaled with the heat-map side) at the
   projected joints, and uvd of joints and mesh with `xyz_to_uvd` (crop box = the whole crop).

Randomness is stateless, keyed by (seed, sample index within the endless shuffled stream), and
each epoch's shuffle is seeded by (seed, epoch): the stream is a pure function of the seed, so a
resumed run rebuilds it at the position it had reached (`start`) without replaying it.
Skipping happens on the serialised records, before any decoding.

Why not `shards.read_dataset`: it decodes every field of every record (depth, mask, both
images); shuffling and skipping decoded samples would cost memory and time, so `ShardSource`
parses the same schema lazily.

Output elements (dicts of tensors, batched):
  image:        B x S x S x 3 float32 RGB in [0, 1].
  heatmaps:     B x M x M x J float32, peak 1.
  pose_uvd:     B x J x 3 float32 ground-truth joints in uvd.
  mesh_uvd:     B x V x 3 float32 ground-truth vertices in uvd (when the source has meshes).
  joints_xyz:   B x J x 3 float32 camera frame after augmentation, mm.
  vertices_xyz: B x V x 3 float32, mm (when the source has meshes).
  joints_uv:    B x J x 2 float32 pixels of the S x S input (continuous convention).
  intrinsics:   B x 4 float32 fx, fy, cx, cy of the S x S input.
  root_depth:   B float32 z of the wrist, mm.    scale: B float32 middle MCP-PIP length, mm.
  is_left:      B bool, the stored sample was a left hand (mirrored as in step 1).
  index:        B int64 position of the sample in the stream (or in the source, evaluation).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from handshape_tf.data.data_config import AugmentConfig, DataConfig  # defined without TensorFlow; re-exported
from handshape_tf.data.shards import DatasetError, read_metadata, shard_paths, verify_shards
from handshape_tf.geometry.camera import project, root_depth_and_scale, xyz_to_uvd
from handshape_tf.geometry.heatmaps import render_heatmaps, sigma_for_side

logger = logging.getLogger(__name__)

NUM_KEYPOINTS = 21


# ----------------------------------------------------------------------------------------------
# Sources: a stream of light elements (serialised records or indices) and their decoding.


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


# ----------------------------------------------------------------------------------------------
# Backgrounds.


def background_bank(config: DataConfig, size: int, seed: int) -> np.ndarray:
    """N x size x size x 3 uint8 backgrounds drawn from BackgroundSource (seeded).

    Args:
      config: its background_folder and background_bank (N).
      size: side of the model input.
      seed: seeds the source and the draws.
    """
    from handshape_tf.data.backgrounds import BackgroundSource

    source = BackgroundSource(config.background_folder or None, seed=seed)
    rng = np.random.default_rng(seed)
    bank = np.stack([np.asarray(source.sample(rng, size), np.uint8) for _ in range(config.background_bank)])
    if bank.shape[1:] != (size, size, 3):
        raise ValueError(f"BackgroundSource.sample gave shape {bank.shape[1:]}; expected ({size}, {size}, 3)")
    logger.info(
        "drew %d backgrounds of %d px from %s", len(bank), size, config.background_folder or "BackgroundSource()"
    )
    return bank


# ----------------------------------------------------------------------------------------------
# Per-sample maths (unbatched tensors).


def _uniform(key: tf.Tensor, index: int, low, high, shape=()) -> tf.Tensor:
    seed = tf.random.experimental.stateless_fold_in(key, index)
    return tf.random.stateless_uniform(shape, seed=seed, minval=low, maxval=high)


def _resize(image: tf.Tensor, size: int) -> tf.Tensor:
    """S0 x S0 x C float -> size x size x C (bilinear, antialiased when shrinking)."""
    return tf.image.resize(image, (size, size), method="bilinear", antialias=True)


def affine_augmentation(key, config: AugmentConfig, size: int):
    """Random warp parameters: rotation theta (radians), zoom k and shift t (pixels, 2).

    Args:
      key: 2 int64 stateless seed of the sample.
      config: the ranges.
      size: crop side S in pixels.

    Returns:
      (theta, k, t): scalar, scalar and 2 float32.
    """
    angle = math.radians(config.rotation_deg)
    theta = _uniform(key, 0, -angle, angle)
    zoom = _uniform(key, 1, config.scale_min, config.scale_max)
    shift = _uniform(key, 2, -config.translation * size, config.translation * size, (2,))
    return theta, zoom, shift


def warp_labels(joints_xyz, vertices_xyz, intrinsics, theta, zoom, shift, size: int):
    """Labels of the warped crop (module docstring, step 3).

    Args:
      joints_xyz: J x 3 mm.   vertices_xyz: V x 3 mm or None.   intrinsics: 4 of the S x S crop.
      theta: rotation about the optical axis, radians.  zoom: k.  shift: 2 pixels t.
      size: crop side S.

    Returns:
      (joints_xyz J x 3, vertices_xyz V x 3 or None, intrinsics 4, matrix 2 x 2 M): the
      rotated points, the new intrinsics and the image-plane map x' = M (x - c) + c + t.
    """
    cos, sin = tf.cos(theta), tf.sin(theta)
    rotation_3d = tf.stack([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]])
    focal = intrinsics[:2]
    rotation_2d = rotation_3d[:2, :2]
    matrix = zoom * focal[:, None] * rotation_2d / focal[None, :]  # k F R F^-1
    centre = tf.fill([2], 0.5 * size)
    principal = tf.linalg.matvec(matrix, intrinsics[2:] - centre) + centre + shift
    new_intrinsics = tf.concat([zoom * focal, principal], axis=0)
    joints_xyz = tf.linalg.matvec(rotation_3d, joints_xyz)
    if vertices_xyz is not None:
        vertices_xyz = tf.linalg.matvec(rotation_3d, vertices_xyz)
    return joints_xyz, vertices_xyz, new_intrinsics, matrix


def warp_image(image, matrix, shift, fill_mode: str) -> tf.Tensor:
    """Resamples an S x S x C float image so that input point x lands at M (x - c) + c + t.

    Pixel centres sit at i + 0.5 (continuous convention); the op samples input index
    coordinates (centres at i), hence the half-pixel terms. Bilinear; outside the input the
    fill is zero ("CONSTANT") or the mirrored image ("REFLECT").
    """
    size = image.shape[0]
    centre = tf.fill([2], 0.5 * size)
    inverse = tf.linalg.inv(matrix)
    # x_in + 0.5 = M^-1 (x_out + 0.5 - c - t) + c  =>  x_in = M^-1 x_out + offset.
    offset = tf.linalg.matvec(inverse, 0.5 - centre - shift) + centre - 0.5
    transform = tf.stack([inverse[0, 0], inverse[0, 1], offset[0], inverse[1, 0], inverse[1, 1], offset[1], 0.0, 0.0])
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[tf.newaxis],
        transforms=transform[tf.newaxis],
        output_shape=tf.constant([size, size]),
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode=fill_mode,
    )
    return tf.ensure_shape(warped[0], image.shape)


def _background(bank: tf.Tensor, key) -> tf.Tensor:
    """One bank background, randomly flipped and turned by k x 90 degrees (float, [0, 1])."""
    choice = tf.random.stateless_uniform(
        (), tf.random.experimental.stateless_fold_in(key, 10), 0, tf.shape(bank, out_type=tf.int64)[0], dtype=tf.int64
    )
    background = tf.image.convert_image_dtype(tf.gather(bank, choice), tf.float32)
    turns = tf.random.stateless_uniform((), tf.random.experimental.stateless_fold_in(key, 11), 0, 4, dtype=tf.int32)
    background = tf.image.rot90(background, turns)
    flip = _uniform(key, 12, 0.0, 1.0) < 0.5
    return tf.where(flip, background[:, ::-1], background)


def _gaussian_blur(image: tf.Tensor, sigma: tf.Tensor, radius: int = 3) -> tf.Tensor:
    """Separable Gaussian blur of an H x W x 3 image with reflected borders."""
    taps = tf.range(-radius, radius + 1, dtype=tf.float32)
    kernel = tf.exp(-0.5 * tf.square(taps / sigma))
    kernel = kernel / tf.reduce_sum(kernel)
    padded = tf.pad(image[tf.newaxis], [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="REFLECT")
    along_x = tf.tile(kernel[tf.newaxis, :, tf.newaxis, tf.newaxis], [1, 1, 3, 1])
    along_y = tf.tile(kernel[:, tf.newaxis, tf.newaxis, tf.newaxis], [1, 1, 3, 1])
    blurred = tf.nn.depthwise_conv2d(padded, along_x, [1, 1, 1, 1], "VALID")
    blurred = tf.nn.depthwise_conv2d(blurred, along_y, [1, 1, 1, 1], "VALID")
    return blurred[0]


def photometric_augmentation(image: tf.Tensor, key, config: AugmentConfig) -> tf.Tensor:
    """Colour jitter, blur and noise of an H x W x 3 float image in [0, 1] (stateless)."""

    def seed(index):
        return tf.random.experimental.stateless_fold_in(key, index)

    image = tf.image.stateless_random_brightness(image, config.brightness, seed(20)) if config.brightness else image
    if config.contrast:
        image = tf.image.stateless_random_contrast(image, 1 - config.contrast, 1 + config.contrast, seed(21))
    if config.saturation:
        image = tf.image.stateless_random_saturation(image, 1 - config.saturation, 1 + config.saturation, seed(22))
    if config.hue:
        image = tf.image.stateless_random_hue(tf.clip_by_value(image, 0.0, 1.0), config.hue, seed(23))
    if config.blur_probability:
        sigma = _uniform(key, 24, 0.3, config.blur_sigma_max)
        blur = _uniform(key, 25, 0.0, 1.0) < config.blur_probability
        image = tf.cond(blur, lambda: _gaussian_blur(image, sigma), lambda: image)
    if config.noise_probability and config.noise_std_max:
        std = _uniform(key, 26, 0.0, config.noise_std_max)
        noisy = _uniform(key, 27, 0.0, 1.0) < config.noise_probability
        noise = tf.random.stateless_normal(tf.shape(image), seed(28)) * std
        image = image + tf.where(noisy, noise, tf.zeros_like(noise))
    return tf.clip_by_value(image, 0.0, 1.0)


def make_labels(joints_xyz, vertices_xyz, intrinsics, size: int, heatmap_size: int, sigma: float):
    """Heat-maps and uvd labels of one crop (crop box = the whole S x S crop).

    Args:
      joints_xyz: J x 3 mm.  vertices_xyz: V x 3 mm or None.  intrinsics: 4 of the crop.
      size: S.  heatmap_size: M.  sigma: Gaussian standard deviation in heat-map pixels.

    Returns:
      dict: heatmaps M x M x J, pose_uvd J x 3, joints_uv J x 2 pixels, root_depth, scale,
      and mesh_uvd V x 3 when vertices are given.
    """
    joints = joints_xyz[tf.newaxis]
    camera = intrinsics[tf.newaxis]
    box = tf.constant([[0.0, 0.0, size, size]])
    root_depth, scale = root_depth_and_scale(joints)
    pose_uvd = xyz_to_uvd(joints, camera, box)
    labels = {
        "heatmaps": render_heatmaps(pose_uvd[..., :2], heatmap_size, sigma)[0],
        "pose_uvd": pose_uvd[0],
        "joints_uv": project(joints, camera)[0],
        "root_depth": root_depth[0],
        "scale": scale[0],
    }
    if vertices_xyz is not None:
        labels["mesh_uvd"] = xyz_to_uvd(vertices_xyz[tf.newaxis], camera, box, scale=scale, root_depth=root_depth)[0]
    return labels


def prepare_sample(
    sample,
    index,
    *,
    stored_size: int,
    image_size: int,
    heatmap_size: int,
    config: DataConfig,
    seed: int,
    augment: bool,
    composite: bool,
    images: bool = True,
    bank=None,
) -> dict[str, tf.Tensor]:
    """One decoded sample -> one output element (module docstring, steps 2-6).

    Args:
      sample: dict from a source's `decode` (image, image_rgba uint8 S0 x S0; joints_xyz,
        vertices_xyz (optional), intrinsics, is_left).
      index: int64 scalar, the sample's position in the stream (keys its randomness).
      stored_size: S0, side of the source's crops (their intrinsics are for S0 x S0).
      image_size: S.  heatmap_size: M.  config: data options.  seed: stream seed.
      augment: apply config.augment.  composite: paste image_rgba over `bank` backgrounds.
      images: False skips every image operation (labels only).
      bank: N x S x S x 3 uint8 backgrounds, needed with composite.

    Returns:
      The element dict (module docstring), unbatched.
    """
    key = tf.random.experimental.stateless_fold_in(tf.constant([seed, 7919], tf.int64), index)
    intrinsics = sample["intrinsics"]
    joints_xyz = sample["joints_xyz"]
    vertices_xyz = sample.get("vertices_xyz")
    is_left = sample["is_left"]
    mirror = tf.logical_and(is_left, config.mirror_left)
    if config.mirror_left:
        flip = tf.where(mirror, -1.0, 1.0)
        joints_xyz = joints_xyz * tf.stack([flip, 1.0, 1.0])
        if vertices_xyz is not None:
            vertices_xyz = vertices_xyz * tf.stack([flip, 1.0, 1.0])
        mirrored_cx = tf.where(mirror, stored_size - intrinsics[2], intrinsics[2])
        intrinsics = tf.stack([intrinsics[0], intrinsics[1], mirrored_cx, intrinsics[3]])
    # Resizing S0 -> S scales every intrinsic by S / S0 (continuous pixel convention).
    intrinsics = intrinsics * (image_size / stored_size)
    element: dict[str, Any] = {}
    image = None
    if images:
        if composite:
            rgba = tf.image.convert_image_dtype(sample["image_rgba"], tf.float32)
            image = tf.concat([rgba[..., :3] * rgba[..., 3:], rgba[..., 3:]], axis=-1)  # premultiplied
        else:
            image = tf.image.convert_image_dtype(sample["image"], tf.float32)
        if config.mirror_left:
            image = tf.where(mirror, image[:, ::-1], image)
        if stored_size != image_size:
            image = _resize(image, image_size)
    if augment and config.augment.enabled:
        theta, zoom, shift = affine_augmentation(key, config.augment, image_size)
        joints_xyz, vertices_xyz, intrinsics, matrix = warp_labels(
            joints_xyz, vertices_xyz, intrinsics, theta, zoom, shift, image_size
        )
        if images:
            image = warp_image(image, matrix, shift, "CONSTANT" if composite else "REFLECT")
    if images:
        if composite:
            background = _background(bank, key)
            image = image[..., :3] + background * (1.0 - image[..., 3:])
        if augment and config.augment.enabled:
            image = photometric_augmentation(image, key, config.augment)
        element["image"] = tf.ensure_shape(tf.clip_by_value(image, 0.0, 1.0), (image_size, image_size, 3))
    sigma = sigma_for_side(config.heatmap_sigma, heatmap_size)
    element.update(make_labels(joints_xyz, vertices_xyz, intrinsics, image_size, heatmap_size, sigma))
    element.update(joints_xyz=joints_xyz, intrinsics=intrinsics, is_left=is_left, index=index)
    if vertices_xyz is not None:
        element["vertices_xyz"] = vertices_xyz
    return element


# ----------------------------------------------------------------------------------------------
# Datasets.


def samples_per_pipeline(num_samples: int, num_shards: int, shard_index: int) -> int:
    """Samples per epoch that input pipeline `shard_index` of `num_shards` keeps."""
    return len(range(shard_index, num_samples, num_shards))


def training_dataset(
    source,
    config: DataConfig,
    *,
    image_size: int,
    heatmap_size: int,
    batch_size: int,
    seed: int = 0,
    start: int = 0,
    num_shards: int = 1,
    shard_index: int = 0,
    images: bool = True,
    bank: np.ndarray | None = None,
) -> tf.data.Dataset:
    """Endless shuffled, augmented batches (module docstring), resumable at `start`.

    Args:
      source: ShardSource or PaperSyntheticSource.
      config: data options (composite, augmentation, heat-map sigma, buffers).
      image_size: S.  heatmap_size: M.
      batch_size: B, samples per batch of this pipeline (batches are full).
      seed: stream seed (shuffles and augmentation).
      start: samples of this pipeline already consumed (e.g. step x B when resuming).
      num_shards, shard_index: this pipeline keeps samples i with i % num_shards == shard_index
        of each epoch's shuffled order (multi-worker input sharding).
      images: False skips image decoding and processing (elements carry labels only).
      bank: N x S x S x 3 uint8 backgrounds for compositing; None draws them from
        BackgroundSource when config.composite is set.

    Returns:
      tf.data.Dataset of element dicts with a leading batch dimension B.

    Raises:
      DatasetError: image sizes differ and config.resize is off, or the source has fewer
        samples than input pipelines.
    """
    config = config.validated()
    check_image_size(source, image_size, config.resize)
    per_epoch = samples_per_pipeline(source.num_samples, num_shards, shard_index)
    if per_epoch == 0:
        raise DatasetError(f"{source!r}: {source.num_samples} samples cannot feed {num_shards} input pipelines")
    composite = images and config.composite
    if composite and bank is None:
        bank = background_bank(config, image_size, seed)
    bank_tensor = tf.constant(bank) if composite else None
    first_epoch, offset = divmod(int(start), per_epoch)
    size = source.image_size

    @tf.autograph.experimental.do_not_convert
    def epoch_elements(epoch):
        elements = source.elements(epoch, seed, shuffle=True, buffer=config.shuffle_buffer)
        elements = elements.enumerate().shard(num_shards, shard_index)
        skip = tf.where(tf.equal(epoch, first_epoch), np.int64(offset), np.int64(0))
        return elements.skip(skip).map(lambda position, element: (epoch * source.num_samples + position, element))

    @tf.autograph.experimental.do_not_convert  # plain TF ops, no Python control flow on tensors
    def decode_and_prepare(index, element):
        return prepare_sample(
            source.decode(element, images),
            index,
            stored_size=size,
            image_size=image_size,
            heatmap_size=heatmap_size,
            config=config,
            seed=seed,
            augment=True,
            composite=composite,
            images=images,
            bank=bank_tensor,
        )

    calls = config.parallel_calls or tf.data.AUTOTUNE
    dataset = tf.data.Dataset.range(first_epoch, np.iinfo(np.int64).max).flat_map(epoch_elements)
    dataset = dataset.map(decode_and_prepare, num_parallel_calls=calls, deterministic=True)
    dataset = dataset.batch(batch_size, drop_remainder=True)
    return dataset.prefetch(config.prefetch or tf.data.AUTOTUNE)


def evaluation_dataset(
    source, config: DataConfig, *, image_size: int, heatmap_size: int, batch_size: int, limit: int | None = None
) -> tf.data.Dataset:
    """One pass over the source in order: stored images, no augmentation, same labels.

    Args:
      source: ShardSource or PaperSyntheticSource.
      config: data options (resize, heat-map sigma, parallelism).
      image_size: S.  heatmap_size: M.  batch_size: B (the last batch may be smaller).
      limit: evaluate only the first `limit` samples.

    Returns:
      tf.data.Dataset of element dicts (index = position in the source).

    Raises:
      DatasetError: image sizes differ and config.resize is off.
    """
    config = config.validated()
    check_image_size(source, image_size, config.resize)
    size = source.image_size
    elements = source.elements(np.int64(0), 0, shuffle=False).enumerate()
    if limit is not None:
        elements = elements.take(limit)

    @tf.autograph.experimental.do_not_convert  # plain TF ops, no Python control flow on tensors
    def decode_and_prepare(index, element):
        return prepare_sample(
            source.decode(element, True),
            index,
            stored_size=size,
            image_size=image_size,
            heatmap_size=heatmap_size,
            config=config,
            seed=0,
            augment=False,
            composite=False,
        )

    dataset = elements.map(
        decode_and_prepare, num_parallel_calls=config.parallel_calls or tf.data.AUTOTUNE, deterministic=True
    )
    return dataset.batch(batch_size).prefetch(config.prefetch or tf.data.AUTOTUNE)
