"""tf.data input pipeline: samples -> composited, augmented crops with heat-map and uvd labels.

Shape shorthand: B batch, S model input side, S0 stored crop side, M = S / 4 heat-map side,
J = 21 keypoints, V mesh vertices, N background bank size.

Per sample (paper Sec. 4.3 and 5.1), all in TensorFlow ops inside `Dataset.map`:

1. decode: a source of `handshape_tf.data.sources` (our shards or the paper's synthetic set);
   left hands are mirrored into right hands (the network is trained on right hands;
   `handshape_tf.inference` mirrors left-hand crops the same way): the crop flipped left-right,
   X -> -X for the 3D labels and cx -> S0 - cx, so x -> S0 - x for every projected point;
2. resize the stored S0 x S0 crop to the model's S x S (area/antialiased; intrinsics scaled by
   S / S0, so normalised crop coordinates do not change). With `DataConfig.resize` off, S0 must
   equal S (`sources.check_image_size` fails fast otherwise);
3. geometric augmentation (`handshape_tf.data.augment`): a rotation about the camera's optical
   axis, a zoom and a shift, one affine warp of the image that is exactly the image of the
   rotated scene seen by a camera with new intrinsics, so 3D joints, mesh, root depth and scale
   stay valid labels;
4. compositing: the premultiplied hand (`image_rgba`) over a background from a bank of N
   backgrounds drawn once from `handshape_tf.data.backgrounds.BackgroundSource`
   (`background_bank`; each use randomly flipped and turned by a multiple of 90 degrees:
   8 N variants); with compositing off the stored composited `image` is warped instead
   (reflected at the border);
5. photometric augmentation (`handshape_tf.data.augment`): brightness, contrast, saturation,
   hue, Gaussian blur, noise;
6. labels: Gaussian heat-maps (sigma 4 px at 64 x 64, scaled with the heat-map side) at the
   projected joints, and uvd of joints and mesh with `xyz_to_uvd` (crop box = the whole crop).

Randomness is stateless, keyed by (seed, sample index within the endless shuffled stream), and
each epoch's shuffle is seeded by (seed, epoch): the stream is a pure function of the seed, so a
resumed run rebuilds it at the position it had reached (`start`) without replaying it.
Skipping happens on the serialised records, before any decoding.

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
from typing import Any

import numpy as np
import tensorflow as tf

from handshape_tf.data.augment import (
    affine_augmentation,
    photometric_augmentation,
    random_background,
    warp_image,
    warp_labels,
)
from handshape_tf.data.data_config import DataConfig
from handshape_tf.data.shards import DatasetError
from handshape_tf.data.sources import check_image_size
from handshape_tf.geometry.camera import project, root_depth_and_scale, xyz_to_uvd
from handshape_tf.geometry.heatmaps import render_heatmaps, sigma_for_side

logger = logging.getLogger(__name__)


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
# One decoded sample -> one output element (unbatched tensors).


def _resize(image: tf.Tensor, size: int) -> tf.Tensor:
    """S0 x S0 x C float -> size x size x C (bilinear, antialiased when shrinking)."""
    return tf.image.resize(image, (size, size), method="bilinear", antialias=True)


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
            background = random_background(bank, key)
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
