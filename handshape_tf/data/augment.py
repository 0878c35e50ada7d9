"""Random, label-preserving augmentation of one crop (stateless TensorFlow ops, unbatched).

Shape shorthand: S crop side, C channels, J = 21 keypoints, V mesh vertices, N background bank
size.

Every draw is keyed by `key`, the sample's 2 int64 stateless seed (folded with a fixed index per
draw), so a sample's augmentation is a pure function of (seed, sample index), as the stream of
`handshape_tf.data.pipeline` requires.

Geometric (`affine_augmentation`, `warp_labels`, `warp_image`): a rotation by theta about the
camera's optical axis, a zoom k and a shift t, one affine warp of the image
(x' = M (x - c) + c + t, c the crop centre, M = k F R(theta) F^-1, F = diag(fx, fy)). It is
exactly the image of the rotated scene xyz' = Rz(theta) xyz seen by a camera with intrinsics
fx' = k fx, fy' = k fy, (cx', cy') = M ((cx, cy) - c) + c + t, so 3D joints, mesh, root depth
and scale stay valid labels (z is unchanged, so is the hand scale).

Backgrounds (`random_background`): one of N x S x S x 3 uint8 bank backgrounds, randomly
flipped and turned by a multiple of 90 degrees (8 N variants).

Photometric (`photometric_augmentation`): brightness, contrast, saturation, hue, Gaussian blur
and noise of an S x S x 3 float image in [0, 1].
"""

from __future__ import annotations

import math

import tensorflow as tf

from handshape_tf.data.data_config import AugmentConfig


def _uniform(key: tf.Tensor, index: int, low, high, shape=()) -> tf.Tensor:
    seed = tf.random.experimental.stateless_fold_in(key, index)
    return tf.random.stateless_uniform(shape, seed=seed, minval=low, maxval=high)


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
    """Labels of the warped crop (module docstring).

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


def random_background(bank: tf.Tensor, key) -> tf.Tensor:
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
