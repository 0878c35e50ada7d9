"""A RealSense-like active depth sensor, for the RGB-D domains of the renderer.

Shape shorthand: H x W depth map, N x N crop.

`SensorModel` is a `Domain`'s `sensor` (`handshape_tf.data.domains`; None for the domains without
one). `HandRenderer` (`handshape_tf.data.renderer`) then also outputs `sensor_depth`: the exact
depth of everything it drew (hand, forearm, sleeve; the colour image's background photo has no
depth, a tilted plane behind the hand stands in for it, `background_plane`), turned by
`sensor_depth` into what such a sensor returns:

  * axial noise growing with the square of the distance (plus a floor), quantised to 1 mm;
  * missing pixels at depth discontinuities (silhouettes, a finger over the palm), at grazing
    angles, in the projector's occlusion shadow beside foreground edges, a little speckle;
  * a 150-1200 mm range.

Depth maps at another resolution (the weak depth loss's R x R) come from `nearest_depth`: a
missing (0) pixel stays missing and no depth is blended across a silhouette.
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np


@dataclasses.dataclass(frozen=True)
class SensorModel:
    """An active (structured-light / stereo) depth sensor like the RealSense in STB, and the
    surface it sees behind the hand.

    Attributes:
      noise_at_500mm: axial noise standard deviation at 500 mm; it grows with z^2 (mm).
      noise_floor_mm: noise standard deviation added at any distance.
      min_range_mm, max_range_mm: depths outside are missing.
      baseline_mm: projector offset along +x; background beside a foreground edge that the
        projector cannot see is missing (occlusion shadow, on the side away from it).
      edge_jump_mm: a pixel whose 8 neighbours differ from it by more is on a discontinuity.
      edge_dropout: (low, high) range of the per-image probability of losing such a pixel
        (after dilating the discontinuity band by 0 or 1 pixel).
      grazing_cosines: (low, high): pixels whose |cos| between normal and viewing ray is below
        `low` are always missing, above `high` never, linearly in between.
      speckle: probability of a random missing pixel.
      quantum_mm: depth resolution.
      background_probability: probability of a plane behind the hand (else nothing in range).
      background_gap_mm: (low, high) the plane's distance behind the farthest drawn point.
      background_tilt_deg: (low, high) the plane's tilt from facing the camera.
    """

    noise_at_500mm: float = 1.2
    noise_floor_mm: float = 0.3
    min_range_mm: float = 150.0
    max_range_mm: float = 1200.0
    baseline_mm: float = 25.0
    edge_jump_mm: float = 10.0
    edge_dropout: tuple[float, float] = (0.5, 0.9)
    grazing_cosines: tuple[float, float] = (0.08, 0.25)
    speckle: float = 0.005
    quantum_mm: float = 1.0
    background_probability: float = 0.8
    background_gap_mm: tuple[float, float] = (100.0, 500.0)
    background_tilt_deg: tuple[float, float] = (0.0, 40.0)

    def noise_std(self, depth_mm) -> np.ndarray:
        """Axial noise standard deviation (mm) at depths `depth_mm` (any shape)."""
        return self.noise_floor_mm + self.noise_at_500mm * (np.asarray(depth_mm, np.float64) / 500.0) ** 2


def _discontinuities(depth: np.ndarray, valid: np.ndarray, jump_mm: float) -> np.ndarray:
    """H x W bool: valid pixels with an 8-neighbour more than `jump_mm` away (a missing neighbour
    counts as infinitely far; the image border is not a discontinuity)."""
    far = np.where(valid, depth, np.inf)
    padded = np.pad(far, 1, mode="edge")
    height, width = depth.shape
    largest = np.zeros_like(depth, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                if dy or dx:
                    neighbour = padded[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]
                    largest = np.fmax(largest, np.abs(far - neighbour))
    return valid & (largest > jump_mm)


def _projector_shadow(depth: np.ndarray, valid: np.ndarray, focal_px: float, baseline_mm: float) -> np.ndarray:
    """H x W bool: pixels the projector (at +x) cannot see because a nearer surface is in the way.

    With disparity d(z) = f b / z, the projector sees pixel x at x - d(z); a pixel p is hidden
    when a nearer pixel q = p + k of its row satisfies d(z_q) - d(z_p) >= k (k >= 1).
    """
    if baseline_mm <= 0 or not valid.any():
        return np.zeros_like(valid)
    disparity = np.where(valid, focal_px * baseline_mm / np.where(valid, depth, 1.0), 0.0)
    span = int(min(64, math.ceil(disparity[valid].max() - disparity[valid].min())))
    hidden = np.zeros_like(valid)
    for k in range(1, span + 1):
        right = np.zeros_like(disparity)
        right[:, :-k] = disparity[:, k:]
        right_valid = np.zeros_like(valid)
        right_valid[:, :-k] = valid[:, k:]
        hidden |= valid & right_valid & (right - disparity >= k)
    return hidden


def sensor_depth(
    depth_mm: np.ndarray,
    cosines: np.ndarray,
    focal_px: float,
    rng: np.random.Generator,
    sensor: SensorModel = SensorModel(),
) -> np.ndarray:
    """What the sensor returns for an exact depth map (see `SensorModel`).

    Args:
      depth_mm: H x W exact depth along z, mm; 0 (or anything out of range) where no surface.
      cosines: H x W |cos| of the angle between the surface normal and the viewing ray.
      focal_px: focal length of the map in pixels (for the projector disparity).
      rng: the random generator.
      sensor: the sensor's parameters.

    Returns:
      H x W float32 depth, mm, multiples of `sensor.quantum_mm`, 0 where missing.

    Raises:
      ValueError: depth_mm and cosines are not H x W arrays of the same shape.
    """
    depth = np.asarray(depth_mm, np.float64)
    cosines = np.abs(np.asarray(cosines, np.float64))
    if depth.ndim != 2 or cosines.shape != depth.shape:
        raise ValueError(f"depth_mm has shape {depth.shape} and cosines {cosines.shape}; expected the same H x W")
    valid = (depth >= sensor.min_range_mm) & (depth <= sensor.max_range_mm)
    edges = _discontinuities(depth, valid, sensor.edge_jump_mm)
    if rng.uniform() < 0.5:
        edges = cv2.dilate(edges.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & valid
    drop = edges & (rng.uniform(size=depth.shape) < rng.uniform(*sensor.edge_dropout))
    low, high = sensor.grazing_cosines
    grazing = np.clip((high - cosines) / (high - low), 0.0, 1.0)
    drop |= valid & (rng.uniform(size=depth.shape) < grazing)
    drop |= _projector_shadow(depth, valid, focal_px, sensor.baseline_mm)
    drop |= rng.uniform(size=depth.shape) < sensor.speckle
    noisy = depth + rng.standard_normal(depth.shape) * sensor.noise_std(depth)
    quantised = np.round(noisy / sensor.quantum_mm) * sensor.quantum_mm
    return np.where(valid & ~drop & (quantised > 0), quantised, 0.0).astype(np.float32)


def pixel_rays(size: int, intrinsics) -> np.ndarray:
    """N x N x 3 rays (x, y, 1) through the pixel centres of an N x N crop with intrinsics
    (fx, fy, cx, cy): a point at depth z on the ray of pixel (i, j) is z * rays[j, i]."""
    fx, fy, cx, cy = np.asarray(intrinsics, np.float64)
    columns, rows = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5)
    return np.stack([(columns - cx) / fx, (rows - cy) / fy, np.ones_like(columns)], -1)


def background_plane(
    rng: np.random.Generator, rays: np.ndarray, farthest_mm: float | None, sensor: SensorModel
) -> tuple[np.ndarray, np.ndarray]:
    """Depth and |cos| of the surface behind the hand: a tilted plane `sensor.background_gap_mm`
    behind the farthest drawn point, or nothing (with probability 1 - background_probability,
    or when nothing is drawn: farthest_mm None).

    Args:
      rng: the random generator.
      rays: N x N x 3 pixel rays (`pixel_rays`).
      farthest_mm: the largest depth of the drawn surfaces, or None.
      sensor: the sensor (its background_* values).

    Returns:
      (N x N depth, mm, 0 where the plane is not in front of the camera; N x N |cos| between
      the plane's normal and the viewing ray, 1 without a plane).
    """
    if rng.uniform() >= sensor.background_probability or farthest_mm is None:
        return np.zeros(rays.shape[:2]), np.ones(rays.shape[:2])
    distance = float(farthest_mm) + rng.uniform(*sensor.background_gap_mm)
    tilt = np.radians(rng.uniform(*sensor.background_tilt_deg))
    azimuth = rng.uniform(0, 2 * np.pi)
    normal = np.array([np.sin(tilt) * np.cos(azimuth), np.sin(tilt) * np.sin(azimuth), np.cos(tilt)])
    along = rays @ normal  # plane n . x = distance * n_z through (0, 0, distance)
    depth = np.where(along > 1e-3, distance * normal[2] / np.maximum(along, 1e-3), 0.0)
    cosines = np.abs(along) / np.linalg.norm(rays, axis=-1)
    return depth, cosines


def nearest_depth(depth, size: int) -> np.ndarray:
    """Resamples ... x H x W depth maps to ... x size x size, nearest: output pixel (i, j) takes
    the input pixel containing its centre ((i + 0.5) W / size, (j + 0.5) H / size); pixels on a
    border go right / down. Missing (0) pixels stay 0, no value is interpolated."""
    depth = np.asarray(depth)
    height, width = depth.shape[-2:]
    rows = np.minimum(((np.arange(size) + 0.5) * height / size).astype(np.int64), height - 1)
    cols = np.minimum(((np.arange(size) + 0.5) * width / size).astype(np.int64), width - 1)
    return depth[..., rows[:, None], cols[None, :]]
