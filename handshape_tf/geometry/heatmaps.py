"""Gaussian keypoint heat-maps and their decoding (paper Sec. 4.3: 64 x 64, sigma 4 px).

Shape shorthand: B batch, J joints, H x W heat-map rows x columns.

Heat-maps cover the crop, so their coordinates are the normalised crop coordinates (u, v) in
[0, 1] of `geometry.camera`: heat-map pixel (col i, row j) covers [i, i+1) x [j, j+1) in
heat-map pixels, its centre is at u = (i + 0.5) / W, v = (j + 0.5) / H. Maps are laid out
B x H x W x J (channels last, one channel per joint).
"""

from __future__ import annotations

import tensorflow as tf

from handshape_tf.geometry.camera import _check_last_dim

# The paper's heat-maps: 64 x 64 with a 4 px Gaussian; configs give sigma at that side.
PAPER_HEATMAP_SIDE = 64


def sigma_for_side(sigma_at_paper_side: float, heatmap_size: int) -> float:
    """The Gaussian SD in pixels of `heatmap_size`-pixel maps for a config's sigma at 64 x 64."""
    return sigma_at_paper_side * heatmap_size / PAPER_HEATMAP_SIDE


def _check_heatmaps(heatmaps: tf.Tensor) -> None:
    if heatmaps.shape.rank is not None and heatmaps.shape.rank != 4:
        raise ValueError(f"heatmaps has shape {heatmaps.shape}; expected B x H x W x J")


def render_heatmaps(uv, size: int, sigma: float, valid=None) -> tf.Tensor:
    """Renders one unnormalised Gaussian (peak value 1) per joint.

    H[b, j, i, k] = exp(-((i + 0.5 - u size)^2 + (j + 0.5 - v size)^2) / (2 sigma^2)) for joint
    k at (u, v), sampled at pixel centres, so a joint between centres gives a peak just below 1.
    The Gaussian is not truncated: a joint outside the crop leaves the part of its Gaussian that
    falls inside (a partial Gaussian at the border), and one more than ~4 sigma outside leaves
    an all-zero map (values below 3e-4). Pass `valid` to force all-zero maps, e.g. for
    unlabelled joints; their uv may then hold anything finite.

    Args:
      uv: B x J x 2 normalised crop coordinates (u, v) of the joints.
      size: heat-map side S in pixels (square maps).
      sigma: Gaussian standard deviation in heat-map pixels (> 0).
      valid: optional B x J mask (bool or 0/1); invalid joints get all-zero maps.

    Returns:
      B x S x S x J float32 heat-maps.

    Raises:
      ValueError: uv is not ... x 2, size is not a positive int or sigma is not positive.
    """
    uv = tf.cast(uv, tf.float32)
    _check_last_dim("uv", uv, 2, "B x J x 2")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size is {size!r}; expected a positive int (heat-map side in pixels)")
    if not sigma > 0:
        raise ValueError(f"sigma is {sigma!r}; expected a positive number of heat-map pixels")
    centres = tf.range(size, dtype=tf.float32) + 0.5  # S
    position = uv * float(size)  # B x J x 2, heat-map pixels
    scale = -0.5 / float(sigma) ** 2
    along_x = tf.exp(scale * tf.square(centres - position[..., 0:1]))  # B x J x S
    along_y = tf.exp(scale * tf.square(centres - position[..., 1:2]))  # B x J x S
    maps = along_y[..., :, tf.newaxis] * along_x[..., tf.newaxis, :]  # B x J x S(rows) x S(cols)
    if valid is not None:
        maps = maps * tf.cast(valid, tf.float32)[..., tf.newaxis, tf.newaxis]
    return tf.transpose(maps, [0, 2, 3, 1])


def _pixel_centres(heatmaps: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Normalised (u, v) of every pixel centre, each H*W, row-major like a flattened map."""
    height, width = tf.shape(heatmaps)[1], tf.shape(heatmaps)[2]
    u = (tf.cast(tf.range(width), tf.float32) + 0.5) / tf.cast(width, tf.float32)
    v = (tf.cast(tf.range(height), tf.float32) + 0.5) / tf.cast(height, tf.float32)
    grid_v, grid_u = tf.meshgrid(v, u, indexing="ij")  # H x W each
    return tf.reshape(grid_u, [-1]), tf.reshape(grid_v, [-1])


def _flatten(heatmaps: tf.Tensor) -> tf.Tensor:
    """B x H x W x J -> B x J x H*W."""
    shape = tf.shape(heatmaps)
    flat = tf.reshape(heatmaps, [shape[0], shape[1] * shape[2], shape[3]])
    return tf.transpose(flat, [0, 2, 1])


def heatmaps_to_uv_argmax(heatmaps) -> tuple[tf.Tensor, tf.Tensor]:
    """Location of each map's maximum, at pixel-centre precision (error <= half a pixel).

    Args:
      heatmaps: B x H x W x J heat-maps.

    Returns:
      (uv, confidence): B x J x 2 float32 normalised coordinates of the maximum's pixel centre
      (first maximum in row-major order on ties) and B x J float32 maximum values.

    Raises:
      ValueError: heatmaps is not 4D.
    """
    heatmaps = tf.cast(heatmaps, tf.float32)
    _check_heatmaps(heatmaps)
    flat = _flatten(heatmaps)  # B x J x H*W
    index = tf.argmax(flat, axis=-1, output_type=tf.int32)  # B x J
    grid_u, grid_v = _pixel_centres(heatmaps)
    uv = tf.stack([tf.gather(grid_u, index), tf.gather(grid_v, index)], axis=-1)
    return uv, tf.reduce_max(flat, axis=-1)


def heatmaps_to_uv_soft_argmax(heatmaps, beta: float = 30.0) -> tuple[tf.Tensor, tf.Tensor]:
    """Differentiable sub-pixel location: expectation of the pixel centres under softmax(beta H).

    With Gaussian maps of peak 1 and standard deviation sigma, softmax(beta H) is close to a
    Gaussian of standard deviation sigma / sqrt(beta) around the peak; beta must be large enough
    that the peak outweighs the H*W background pixels (exp(beta) >> H W / (2 pi sigma^2 / beta))
    or the result is pulled towards the map centre. The default 30 suits peak-1 maps
    (sigma 4: error ~1e-3 px inside the map). A joint within a pixel or two of the border is
    pulled inwards (up to ~0.6 px at the border itself) because the softmax is truncated there.

    Args:
      heatmaps: B x H x W x J heat-maps.
      beta: inverse softmax temperature (> 0).

    Returns:
      (uv, confidence): B x J x 2 float32 normalised coordinates and B x J float32 maximum
      values of the maps.

    Raises:
      ValueError: heatmaps is not 4D or beta is not positive.
    """
    if not beta > 0:
        raise ValueError(f"beta is {beta!r}; expected a positive inverse temperature")
    heatmaps = tf.cast(heatmaps, tf.float32)
    _check_heatmaps(heatmaps)
    flat = _flatten(heatmaps)  # B x J x H*W
    weights = tf.nn.softmax(beta * flat, axis=-1)
    grid_u, grid_v = _pixel_centres(heatmaps)
    uv = tf.stack([tf.reduce_sum(weights * grid_u, -1), tf.reduce_sum(weights * grid_v, -1)], -1)
    return uv, tf.reduce_max(flat, axis=-1)
