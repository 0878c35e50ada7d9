"""Image normalisation, square hand crops and left-hand mirroring (numpy + OpenCV only).

Shape shorthand: H x W full image, S crop side, P points, B batch.

Conventions (project-wide): pixel (col i, row j) covers [i, i+1) x [j, j+1), its centre is
(i + 0.5, j + 0.5). A crop box (x0, y0, w, h) is a rectangle of the full image in those
continuous coordinates; it may reach outside the image, where the crop is filled with a constant
border. Resizing it to S x S maps x -> (x - x0) S / w, y -> (y - y0) S / h, the same map as
`handshape_tf.geometry.camera.crop_intrinsics`. Mirroring flips columns: x -> W - x, u -> 1 - u.

Nothing here imports TensorFlow, so exporters, servers and on-device demos can share it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import cv2
import numpy as np

_CHANNEL_ORDERS = ("rgb", "bgr")


def to_rgb_uint8(image, channel_order: str = "rgb", background=None) -> np.ndarray:
    """Any common image array as H x W x 3 uint8 RGB.

    Accepted layouts: H x W or H x W x 1 (grey, replicated to 3 channels), H x W x 3 (RGB or
    BGR) and H x W x 4 (RGBA or BGRA). Accepted value types:
      uint8: used as is.
      uint16: 0..65535, divided by 257 (65535 -> 255) and rounded.
      other integers (int8..int64, uint32, uint64): must lie in 0..255, used as 8-bit values.
      bool: False -> 0, True -> 255.
      float (16, 32, 64): finite values; if the maximum is <= 1 the image is taken as 0..1 and
        multiplied by 255, otherwise as 0..255. Values outside the range are clipped, and the
        result is rounded. (A 0..255 float image whose pixels are all <= 1, i.e. nearly black,
        is therefore read as 0..1: pass such images as uint8.)

    Args:
      image: array-like, one of the layouts above, any size >= 1 x 1.
      channel_order: "rgb" or "bgr" (as read by OpenCV), the order of the colour channels of
        3- and 4-channel inputs; ignored for grey images.
      background: None drops the alpha channel of 4-channel images; a grey level (0..255) or
        an (r, g, b) triple composites the image over that colour using alpha (alpha scaled
        like the colour channels: 255 or 1.0 is opaque).

    Returns:
      H x W x 3 uint8 RGB, C-contiguous (the input itself when it already is one, no copy).

    Raises:
      ValueError: wrong rank or channel count, zero size, an unsupported dtype, non-finite
        values, integers outside 0..255, or an unknown channel_order / bad background.
    """
    if channel_order not in _CHANNEL_ORDERS:
        raise ValueError(f"channel_order is {channel_order!r}; expected one of {_CHANNEL_ORDERS}")
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[:, :, np.newaxis]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ValueError(
            f"image has shape {array.shape}; expected H x W (grey), H x W x 1, H x W x 3 "
            f"(RGB/BGR) or H x W x 4 (RGBA/BGRA)"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"image has shape {array.shape}; expected at least 1 x 1 pixels")
    values = _to_uint8_values(array)
    if values.shape[2] == 4:
        colour, alpha = values[:, :, :3], values[:, :, 3:]
        values = colour if background is None else _composite(colour, alpha, background, channel_order)
    elif values.shape[2] == 1:
        values = np.repeat(values, 3, axis=2)
    if channel_order == "bgr" and array.shape[2] != 1:
        values = values[:, :, ::-1]
    return np.ascontiguousarray(values)


def _to_uint8_values(array: np.ndarray) -> np.ndarray:
    """H x W x C array of any supported dtype -> H x W x C uint8 (see `to_rgb_uint8`)."""
    dtype = array.dtype
    if dtype == np.uint8:
        return array
    if dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if dtype == np.uint16:
        return ((array.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if np.issubdtype(dtype, np.integer):
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 255:
            raise ValueError(
                f"image has dtype {dtype} with values in [{low}, {high}]; expected 0..255 for "
                f"integer types other than uint8 and uint16"
            )
        return array.astype(np.uint8)
    if np.issubdtype(dtype, np.floating):
        values = array.astype(np.float32)
        if not np.all(np.isfinite(values)):
            raise ValueError(
                f"image has {int(np.sum(~np.isfinite(values)))} NaN or infinite values; "
                f"expected finite values in 0..1 or 0..255"
            )
        if float(values.max()) <= 1.0:
            values = values * 255.0
        return np.clip(np.rint(values), 0, 255).astype(np.uint8)
    raise ValueError(f"image has dtype {dtype}; expected uint8, uint16, another integer type, bool or float")


def _composite(colour: np.ndarray, alpha: np.ndarray, background, channel_order: str) -> np.ndarray:
    """H x W x 3 uint8 colour over a constant background with H x W x 1 uint8 alpha."""
    back = np.asarray(background, np.float32)
    if back.ndim == 0:
        back = np.repeat(back, 3)
    if back.shape != (3,) or not np.all(np.isfinite(back)) or back.min() < 0 or back.max() > 255:
        raise ValueError(f"background is {background!r}; expected None, a grey level or an (r, g, b) triple in 0..255")
    if channel_order == "bgr":
        back = back[::-1]
    weight = alpha.astype(np.float32) / 255.0
    mixed = colour.astype(np.float32) * weight + back * (1.0 - weight)
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def read_image(path, background=None) -> np.ndarray:
    """Decodes an image file (PNG, JPEG, BMP, TIFF, ...; 8 or 16 bit; grey, colour or with
    alpha) into H x W x 3 uint8 RGB (see `to_rgb_uint8` for `background`).

    Raises:
      FileNotFoundError: nothing at `path`.
      ValueError: the file is not an image OpenCV can decode (the message names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    data = np.fromfile(os.fspath(path), np.uint8)
    decoded = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if decoded is None:
        raise ValueError(f"{path} is not an image OpenCV can decode ({data.size} bytes)")
    try:
        return to_rgb_uint8(decoded, channel_order="bgr", background=background)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def check_box(box) -> np.ndarray:
    """(4,) float64 (x0, y0, w, h) from array-like `box`.

    Raises:
      ValueError: not 4 numbers, not finite, or w or h <= 0 (a zero-size box).
    """
    values = np.asarray(box, dtype=np.float64) if _is_numeric(box) else None
    if values is None or values.shape != (4,):
        raise ValueError(f"box is {box!r}; expected 4 numbers (x0, y0, w, h) in full-image pixels")
    if not np.all(np.isfinite(values)) or values[2] <= 0 or values[3] <= 0:
        raise ValueError(
            f"box is {values.tolist()}; expected finite (x0, y0, w, h) with w, h > 0 (a zero-size box has no crop)"
        )
    return values


def _is_numeric(value) -> bool:
    try:
        array = np.asarray(value)
    except (TypeError, ValueError):
        return False
    return array.dtype != object and (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_)


def _check_size(size) -> int:
    if isinstance(size, (bool, np.bool_)) or not isinstance(size, (int, np.integer)) or size <= 0:
        raise ValueError(f"size is {size!r}; expected a positive int (crop side, pixels)")
    return int(size)


def square_box_around(points, margin: float = 0.25, min_side: float = 1.0) -> np.ndarray:
    """Square box centred on the extent of 2D points.

    Args:
      points: P x 2 pixel coordinates (x, y), P >= 1, finite.
      margin: extra space on each side as a fraction of the larger extent (>= 0): the side is
        (1 + 2 margin) times max(x extent, y extent).
      min_side: the smallest side returned (> 0), for a single point or collinear points.

    Returns:
      (4,) float32 (x0, y0, w, h) with w == h; it may reach outside the image.

    Raises:
      ValueError: points not P x 2 with P >= 1, non-finite values, a negative or non-finite
        margin, or min_side <= 0.
    """
    points = np.asarray(points, np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or points.shape[0] == 0:
        raise ValueError(f"points have shape {points.shape}; expected P x 2 with P >= 1")
    if not np.all(np.isfinite(points)):
        raise ValueError("points contain NaN or infinite values; expected finite pixel coordinates")
    if not (math.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin is {margin!r}; expected a finite number >= 0")
    if not (math.isfinite(min_side) and min_side > 0):
        raise ValueError(f"min_side is {min_side!r}; expected a finite number > 0")
    low, high = points.min(axis=0), points.max(axis=0)
    centre = 0.5 * (low + high)
    side = max(float((high - low).max()) * (1.0 + 2.0 * margin), float(min_side))
    return np.array([centre[0] - side / 2, centre[1] - side / 2, side, side], np.float32)


def image_box(width: int, height: int) -> np.ndarray:
    """(4,) float32 square box centred on a width x height image with side max(width, height).

    The default box for an image that is already (roughly) a hand crop: the whole image fits,
    the aspect ratio is kept and the shorter side is padded equally on both ends.
    """
    side = float(max(width, height))
    return np.array([(width - side) / 2, (height - side) / 2, side, side], np.float32)


def crop_affine(box, size: int) -> np.ndarray:
    """2 x 3 float64 affine map from full-image to crop pixels (continuous convention).

    Args:
      box: (4,) (x0, y0, w, h).
      size: crop side S.

    Returns:
      A with [x', y'] = A @ [x, y, 1], x' = (x - x0) S / w, y' = (y - y0) S / h.
    """
    x0, y0, w, h = check_box(box)
    size = _check_size(size)
    sx, sy = size / w, size / h
    return np.array([[sx, 0.0, -x0 * sx], [0.0, sy, -y0 * sy]], np.float64)


def crop_and_resize(image, box, size: int, border_value: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Cuts box (x0, y0, w, h) out of an image and resizes it to S x S.

    Bilinear sampling at the crop's pixel centres, with anti-aliasing when shrinking by a factor
    f = w / S (per axis): first exact k x k block averaging with k = floor(f) when f >= 2, then a
    Gaussian of sigma (f / k - 1) / 2 (block) pixels when the rest exceeds 1. Parts of the box
    outside the image are filled with `border_value` (constant border) before any filtering, so
    pixels keep their place whatever the box. A box that is not square is stretched to the
    square crop (u = (x - x0) / w, v = (y - y0) / h).

    Args:
      image: anything `to_rgb_uint8` accepts in RGB order (H x W [x C], any dtype).
      box: (4,) (x0, y0, w, h) in full-image pixels, w, h > 0, may reach outside the image.
      size: crop side S, pixels.
      border_value: grey level 0..255 of the padding.

    Returns:
      (crop, affine): S x S x 3 uint8 RGB, and the 2 x 3 float64 map from full-image to crop
      pixels (see `crop_affine`).

    Raises:
      ValueError: an invalid image (see `to_rgb_uint8`), box (zero size, non-finite) or size.
    """
    rgb = to_rgb_uint8(image)
    affine = crop_affine(box, size)
    x0, y0, w, h = check_box(box)
    if not (0 <= border_value <= 255):
        raise ValueError(f"border_value is {border_value!r}; expected a grey level in 0..255")
    block_x, sigma_x, pad_x = _shrink_filter(w / size)
    block_y, sigma_y, pad_y = _shrink_filter(h / size)
    # Integer source region around the box, padded for the filters and the bilinear taps, with
    # sides that are multiples of the block sizes.
    left, top = int(math.floor(x0)) - pad_x, int(math.floor(y0)) - pad_y
    right = left + block_x * int(math.ceil((math.ceil(x0 + w) + pad_x - left) / block_x))
    bottom = top + block_y * int(math.ceil((math.ceil(y0 + h) + pad_y - top) / block_y))
    region = _padded_region(rgb, left, top, right, bottom, border_value)
    if block_x > 1 or block_y > 1:
        small_size = ((right - left) // block_x, (bottom - top) // block_y)
        region = cv2.resize(region, small_size, interpolation=cv2.INTER_AREA)
    if sigma_x > 0 or sigma_y > 0:
        region = cv2.GaussianBlur(
            region, (0, 0), sigmaX=max(sigma_x, 1e-3), sigmaY=max(sigma_y, 1e-3), borderType=cv2.BORDER_REPLICATE
        )
    # Region pixel c covers full-image x in [left + k c, left + k (c + 1)); OpenCV puts pixel
    # centres on integers (x_cv = x - 0.5) on both sides of the map.
    sx, sy = affine[0, 0], affine[1, 1]
    to_cv = np.array(
        [
            [sx * block_x, 0.0, sx * (left + 0.5 * block_x) + affine[0, 2] - 0.5],
            [0.0, sy * block_y, sy * (top + 0.5 * block_y) + affine[1, 2] - 0.5],
        ]
    )
    crop = cv2.warpAffine(
        region,
        to_cv,
        (size, size),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(border_value,) * 3,
    )
    return crop, affine


def _shrink_filter(shrink: float) -> tuple[int, float, int]:
    """(block size k, Gaussian sigma in block pixels, source padding) for a shrink factor."""
    block = int(shrink) if shrink >= 2.0 else 1
    sigma = max(0.0, (shrink / block - 1.0) / 2.0)
    pad = block * (int(math.ceil(3.0 * sigma)) + 2)
    return block, sigma, pad


def _padded_region(rgb: np.ndarray, left: int, top: int, right: int, bottom: int, value: int) -> np.ndarray:
    """Rows top..bottom-1, columns left..right-1 of an H x W x 3 image, `value` outside it."""
    height, width = rgb.shape[:2]
    region = np.full((bottom - top, right - left, 3), value, np.uint8)
    src_x0, src_x1 = max(left, 0), min(right, width)
    src_y0, src_y1 = max(top, 0), min(bottom, height)
    if src_x0 < src_x1 and src_y0 < src_y1:
        region[src_y0 - top : src_y1 - top, src_x0 - left : src_x1 - left] = rgb[src_y0:src_y1, src_x0:src_x1]
    return region


def crop_intrinsics_np(intrinsics, box, size) -> np.ndarray:
    """Numpy twin of `handshape_tf.geometry.camera.crop_intrinsics`.

    Args:
      intrinsics: (4,) or B x 4 (fx, fy, cx, cy) of the full image, pixels.
      box: (4,) or B x 4 (x0, y0, w, h) in full-image pixels.
      size: the crop's size after resizing, an int (square) or (width, height).

    Returns:
      (4,) or B x 4 float32 (broadcast shape) intrinsics of the resized crop:
      fx' = fx width / w, fy' = fy height / h, cx' = (cx - x0) width / w, cy' = (cy - y0) height / h.

    Raises:
      ValueError: last dimension not 4, non-finite intrinsics or fx, fy <= 0, a box with w or
        h <= 0, or a non-positive size.
    """
    intrinsics = np.asarray(intrinsics, np.float64)
    box = np.asarray(box, np.float64)
    if intrinsics.ndim == 0 or intrinsics.shape[-1] != 4:
        raise ValueError(f"intrinsics have shape {intrinsics.shape}; expected (4,) or B x 4 (fx, fy, cx, cy)")
    if box.ndim == 0 or box.shape[-1] != 4:
        raise ValueError(f"box has shape {box.shape}; expected (4,) or B x 4 (x0, y0, w, h)")
    check_intrinsics(intrinsics)
    for row in box.reshape(-1, 4):
        check_box(row)
    width, height = (size, size) if np.ndim(size) == 0 else tuple(size)
    if not (np.isfinite(width) and np.isfinite(height) and width > 0 and height > 0):
        raise ValueError(f"size is {size!r}; expected a positive int or (width, height)")
    scale_x = float(width) / box[..., 2]
    scale_y = float(height) / box[..., 3]
    result = np.stack(
        np.broadcast_arrays(
            intrinsics[..., 0] * scale_x,
            intrinsics[..., 1] * scale_y,
            (intrinsics[..., 2] - box[..., 0]) * scale_x,
            (intrinsics[..., 3] - box[..., 1]) * scale_y,
        ),
        axis=-1,
    )
    return result.astype(np.float32)


def check_intrinsics(intrinsics) -> np.ndarray:
    """(4,) or B x 4 float64 intrinsics; raises ValueError unless finite with fx, fy > 0."""
    values = np.asarray(intrinsics, np.float64)
    if values.ndim == 0 or values.shape[-1] != 4:
        raise ValueError(f"intrinsics have shape {values.shape}; expected (4,) or B x 4 (fx, fy, cx, cy)")
    rows = values.reshape(-1, 4)
    bad = ~np.all(np.isfinite(rows), axis=1) | ~(rows[:, 0] > 0) | ~(rows[:, 1] > 0)
    if np.any(bad):
        raise ValueError(
            f"intrinsics must be finite (fx, fy, cx, cy) with fx, fy > 0; received "
            f"{rows[np.flatnonzero(bad)[0]].tolist()}"
        )
    return values


def mirror_image(image: np.ndarray) -> np.ndarray:
    """H x W [x C] -> the same image flipped left-right (column i -> W - 1 - i), contiguous."""
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise ValueError(f"image has shape {image.shape}; expected H x W or H x W x C")
    return np.ascontiguousarray(image[:, ::-1])


def mirror_uv(points, width: float = 1.0) -> np.ndarray:
    """Mirrors the x (or u) coordinate of points: x -> width - x; other coordinates unchanged.

    Args:
      points: ... x C array, C >= 1 (e.g. P x 2 uv, P x 3 uvd); component 0 is mirrored.
      width: image width in the points' unit: 1.0 for normalised crop coordinates, W for pixels
        (continuous convention: pixel column i covers [i, i + 1), so x -> W - x).

    Returns:
      ... x C array of the same dtype (float) with component 0 replaced by width - x.
    """
    points = np.array(points, dtype=np.result_type(np.asarray(points).dtype, np.float32))
    if points.ndim == 0 or points.shape[-1] == 0:
        raise ValueError(f"points have shape {points.shape}; expected ... x C with C >= 1")
    points[..., 0] = width - points[..., 0]
    return points
