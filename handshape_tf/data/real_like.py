"""Real RGB-D hand crops for weak supervision: STB frames, or a rendered "real-like" domain.

Shape shorthand: N samples, B render batch, S crop side, R depth-map side, J = 21 keypoints,
V = 1159 template vertices, C forearm ring points, K forearm rings.

Weakly supervised fine-tuning (paper Sec. 4.4, `train.weak_stb`) reads RGB-D crop sets, one
folder per split, written by this module and stored as numpy arrays (memory-mapped on read):

  metadata.json     format, image_size, num_samples, num_written, complete, has_vertices, source
  images.npy        N x S x S x 3 uint8 RGB crop (right hands: left hands are mirrored)
  depth.npy         N x S x S uint16 depth in mm of the same crop, 0 where the sensor has none
  joints_uv.npy     N x J x 2 float32 crop pixels (continuous convention, centres at i + 0.5)
  joints_xyz.npy    N x J x 3 float32 camera frame, mm (mirrored with the crop)
  vertices_xyz.npy  N x V x 3 float32 camera frame, mm (rendered sets only)
  intrinsics.npy    N x 4 float32 fx, fy, cx, cy of the S x S crop
  root_depth.npy, scale.npy   N float32: wrist depth and middle-finger MCP-PIP length, mm
  mirrored.npy      N bool: the source was a left hand, flipped into a right hand
Mirroring flips the crop's columns, negates camera X and maps cx -> S - cx, so every projected
point moves x -> S - x. Writing goes in chunks and records `num_written`, so an interrupted
generation or preparation resumes where it stopped.

Two producers:

* `prepare_stb`: STB frames (`handshape_tf.data.external.STBDataset`) cropped to the reader's
  square box around the joints (colour: antialiased `crop_and_resize`; depth: the registered
  depth map sampled at the S x S pixel centres, nearest, 0 stays 0). Only the depth pixels that
  can land in the box for depths within `STB_DEPTH_WINDOW_MM` of the wrist are registered (the
  full frame costs ~0.4 s): farther background may be missing near the crop border, which the
  depth loss ignores anyway.
* `generate_real_like`: the synthetic generator's hands, poses, shapes and cameras
  (`handshape_tf.data.synthetic`: `sample_params`, `HandRenderer` for the posed geometry and
  labels) seen by an STB-like RealSense colour camera (640 x 480, fx 608 px) at 300-650 mm,
  re-rendered with a different appearance and a sensor-like depth map. How the domain differs
  from the synthetic training images:
    - skin (`appearance.sample_indoor_skin`): tones concentrated on the middle of the Monk scale (normal
      around tone 4.5, not uniform), redder and less saturated-yellow, a palm closer to the
      back of the hand, glossier;
    - lighting (`appearance.sample_indoor_lighting`): an indoor key light from above (warm 2700-4500 K with
      a fluorescent green tint), sometimes a cool window light from a side, darker ambient,
      harder terminator (little wrap), exposure metered on the whole frame, not on the skin;
    - forearm: the template's stub extruded along its own axis, half the time into a sleeve;
    - camera (`camera_image`): white-balance error, exposure error, vignetting, signal-
      dependent (shot + read) noise before the tone curve, defocus or motion blur, JPEG
      compression at quality 30-80 (8 x 8 block and chroma artefacts);
    - depth (`sensor_depth`, `SensorModel`): what a RealSense-like active sensor returns:
      axial noise growing with the square of the distance, missing pixels at depth
      discontinuities (silhouettes, finger over palm) and at grazing angles, the projector's
      occlusion shadow beside foreground edges, a little speckle dropout, a 150-1200 mm range
      and quantisation to 1 mm; a tilted background plane 100-500 mm behind the hand (or none).
  Its 3D labels (joints_xyz, vertices_xyz) are for evaluation (and the "with 3D pose"
  setting); weak supervision itself reads only images, depth, 2D joints, intrinsics, root
  depth and scale.

Depth maps at another resolution (the loss's R x R, 32 x 32 in the paper) come from
`nearest_depth`: pixel i of the R-map takes the S-map pixel containing its centre, so missing
(0) pixels stay missing and no depth is blended across a silhouette.

Command line:
  python -m handshape_tf.data.real_like --num N --out DIR [--seed S] [--size 128]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import cv2
import numpy as np

from handshape_tf.assets.template import SCALE_BONE, TEMPLATE_VERSION, load_template
from handshape_tf.data import appearance
from handshape_tf.data.crop import crop_and_resize, crop_intrinsics_np
from handshape_tf.data.shards import DatasetError

logger = logging.getLogger(__name__)

FORMAT = "handshape_tf.rgbd_crops"
FORMAT_VERSION = 1
GENERATOR_VERSION = 2
METADATA = "metadata.json"
NUM_KEYPOINTS = 21
CHUNK = 64  # samples written between metadata updates
RENDER_BATCH = 8

# STB's colour camera (continuous pixel convention) and capture distances.
REALSENSE_FRAME = (640, 480)
REALSENSE_INTRINSICS = (607.92271, 607.88192, 314.78337 + 0.5, 236.42484 + 0.5)
DISTANCE_MM = (300.0, 650.0)  # camera to hand centre, log-uniform
HAND_CENTRE_FRAME = 0.7  # the hand centre lands in this central fraction of the frame
STB_DEPTH_WINDOW_MM = 400.0
# Forearm rings: (distance from the stub's end along its axis, in hand scales; width factor).
_ARM_RINGS = ((1.0, 1.06), (3.0, 1.18), (6.0, 1.28), (10.0, 1.34))
_ARM_NEAREST = 0.5  # the forearm stays beyond this fraction of the hand's nearest depth
_SLEEVE_PROBABILITY = 0.5
_SLEEVE_WIDTH = (1.1, 1.4)
_BACKGROUND_GAP_MM = (100.0, 500.0)
_NO_BACKGROUND_PROBABILITY = 0.2
_DOMAIN_TAG = 0x5EA1  # keys the real-like appearance stream of a sample

_ARRAYS = {
    "images": (np.uint8, ("S", "S", 3)),
    "depth": (np.uint16, ("S", "S")),
    "joints_uv": (np.float32, (NUM_KEYPOINTS, 2)),
    "joints_xyz": (np.float32, (NUM_KEYPOINTS, 3)),
    "vertices_xyz": (np.float32, ("V", 3)),
    "intrinsics": (np.float32, (4,)),
    "root_depth": (np.float32, ()),
    "scale": (np.float32, ()),
    "mirrored": (np.bool_, ()),
}


# ---------------------------------------------------------------------------------------------
# Depth sensor.


@dataclasses.dataclass(frozen=True)
class SensorModel:
    """An active (structured-light / stereo) depth sensor like the RealSense in STB.

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


# ---------------------------------------------------------------------------------------------
# Appearance and camera.


def camera_image(radiance: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A consumer camera's image of linear radiance (module docstring, "camera").

    Args:
      radiance: S x S x 3 linear RGB (shaded hand over the background).
      rng: the random generator.

    Returns:
      S x S x 3 uint8 sRGB after white balance and exposure errors, vignetting, shot and read
      noise, the sRGB curve, blur and JPEG compression.
    """
    size = radiance.shape[0]
    image = radiance * np.exp(rng.normal(0.0, [0.07, 0.03, 0.09])) * np.exp(rng.uniform(np.log(0.6), np.log(1.5)))
    centre = size * (0.5 + rng.uniform(-0.3, 0.3, 2))
    rows, cols = np.mgrid[0:size, 0:size] + 0.5
    radius = ((cols - centre[0]) ** 2 + (rows - centre[1]) ** 2) / (0.5 * size**2)
    image = image * (1.0 - rng.uniform(0.0, 0.35) * np.clip(radius, 0.0, 1.5))[..., None]
    variance = rng.uniform(2e-4, 3e-3) * np.clip(image, 0.0, None) + rng.uniform(1e-6, 3e-5)
    image = image + np.sqrt(variance) * rng.standard_normal(image.shape)
    srgb = appearance.linear_to_srgb(image.astype(np.float32))
    pixels_per_128 = size / 128.0
    if rng.uniform() < 0.3:
        length = max(2, int(round(rng.uniform(2.0, 5.0) * pixels_per_128)))
        kernel = np.zeros((length, length), np.float32)
        kernel[length // 2, :] = 1.0 / length
        rotation = cv2.getRotationMatrix2D((length / 2 - 0.5, length / 2 - 0.5), rng.uniform(0, 180), 1.0)
        kernel = cv2.warpAffine(kernel, rotation, (length, length))
        srgb = cv2.filter2D(srgb, -1, kernel / max(kernel.sum(), 1e-6), borderType=cv2.BORDER_REFLECT)
    else:
        srgb = cv2.GaussianBlur(srgb, (0, 0), rng.uniform(0.35, 1.1) * pixels_per_128)
    encoded = (np.clip(srgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    quality = int(rng.integers(30, 81))
    ok, buffer = cv2.imencode(".jpg", encoded[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError(f"JPEG encoding of a {encoded.shape} image failed")
    return cv2.imdecode(buffer, cv2.IMREAD_COLOR)[..., ::-1].copy()


# ---------------------------------------------------------------------------------------------
# Geometry.


def real_like_params(rng: np.random.Generator, templates, views: str = "full"):
    """One sample's parameters: `synthetic.sample_params` (hand, shape, pose, view), then an
    STB-like camera: the RealSense colour intrinsics, 300-650 mm, hand centre in the central 70%.

    Args:
      rng: the sample's random generator.
      templates: {False: right, True: left} templates (`RealLikeRenderer.templates`).
      views: the view distribution ("full" or "frontal", `synthetic.VIEWS`).

    Returns:
      A `synthetic.SampleParams`.
    """
    from handshape_tf.data.synthetic import sample_params

    params = sample_params(rng, templates, views)
    width, height = REALSENSE_FRAME
    margin = (1.0 - HAND_CENTRE_FRAME) / 2
    return dataclasses.replace(
        params,
        distance_mm=float(np.exp(rng.uniform(*np.log(DISTANCE_MM)))),
        frame_size=REALSENSE_FRAME,
        frame_intrinsics=np.array(REALSENSE_INTRINSICS),
        hand_pixel=rng.uniform(margin, 1.0 - margin, 2) * [width, height],
    )


def _band(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """2P x 3 triangles joining two rings of P vertex indices (quad (a, b, d, c) split on b-c)."""
    a, b = first, np.roll(first, -1)
    c, d = second, np.roll(second, -1)
    return np.concatenate([np.stack([a, b, c], 1), np.stack([b, d, c], 1)])


class RealLikeRenderer:
    """Renders real-like RGB-D samples (module docstring) for batches of sample parameters.

    Args:
      image_size: S, the crop side.
      backgrounds: a `backgrounds.BackgroundSource` (default: procedural textures).
      sensor: the depth sensor.

    Attributes:
      image_size, sensor: as given.
      templates: {False: right, True: left} hand templates (as `synthetic.HandRenderer`).
    """

    def __init__(self, image_size: int, backgrounds=None, sensor: SensorModel = SensorModel()):
        import tensorflow as tf

        from handshape_tf.data.backgrounds import BackgroundSource
        from handshape_tf.data.synthetic import HandRenderer, stub_cap
        from handshape_tf.rendering import interpolate, rasterize, vertex_normals

        self.image_size = int(image_size)
        self.sensor = sensor
        self.backgrounds = backgrounds if backgrounds is not None else BackgroundSource()
        self._geometry = HandRenderer(self.image_size, self.backgrounds)
        self.templates = self._geometry.templates
        right = self.templates[False]
        cap, outline = stub_cap(right)
        self._outline = outline
        hand = right.num_vertices
        count = len(outline)
        rings = [outline] + [hand + k * count + np.arange(count) for k in range(len(_ARM_RINGS))]
        end = hand + len(_ARM_RINGS) * count
        arm_faces = np.concatenate(
            [_band(a, b) for a, b in zip(rings[:-1], rings[1:])]
            + [np.stack([rings[-1], np.roll(rings[-1], -1), np.full(count, end)], 1)]
        )
        rest = right.vertices.astype(np.float64)
        arm_rest = self._arm(rest, np.linalg.norm(np.diff(right.keypoints[list(SCALE_BONE)], axis=0)), None)[0]
        if not self._outward(np.concatenate([rest, arm_rest]), arm_faces[: 2 * count], rest[outline]):
            arm_faces = arm_faces[:, ::-1]
        # The stub's cap ends up inside the forearm: drawn nowhere, left out of the normals.
        self._faces = np.concatenate([right.faces[~cap], arm_faces]).astype(np.int32)
        self._num_hand_faces = int(np.sum(~cap))
        regions = appearance.skin_regions(right)
        arm_palmar = np.append(np.tile(regions.palmar[outline], len(_ARM_RINGS)), regions.palmar[outline].mean())
        zeros = np.zeros(len(arm_palmar), np.float32)
        self._regions = appearance.SkinRegions(
            palmar=np.concatenate([regions.palmar, arm_palmar]).astype(np.float32),
            nail=np.concatenate([regions.nail, zeros]),
            knuckle=np.concatenate([regions.knuckle, zeros]),
        )
        self._occluders = appearance.occluder_vertices(right)
        faces, size = self._faces, self.image_size

        @tf.function(autograph=False, reduce_retracing=True)
        def normals(vertices):
            return vertex_normals(vertices, faces)

        @tf.function(autograph=False, reduce_retracing=True)
        def render(vertices, intrinsics, attributes):
            fragments = rasterize(vertices, faces, intrinsics, (size, size))
            return fragments.triangle_ids, interpolate(attributes, fragments)

        self._normals, self._render = normals, render

    @staticmethod
    def _outward(vertices: np.ndarray, faces: np.ndarray, ring: np.ndarray) -> bool:
        """Whether the faces' right-hand normals point away from the ring's centre."""
        corners = vertices[faces]
        normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
        radial = corners.mean(axis=1) - ring.mean(axis=0)
        return float(np.sum(normals * radial)) > 0

    def _arm(self, vertices: np.ndarray, scale: float, rng: np.random.Generator | None):
        """Forearm vertices ((K C + 1) x 3, same unit and frame as `vertices`) and the index of
        the first sleeve ring (K: no sleeve). Without `rng`: no sleeve, full length."""
        outline = vertices[self._outline]
        centre = outline.mean(axis=0)
        axis = np.linalg.svd(outline - centre)[2][-1]
        if axis @ (centre - vertices.mean(axis=0)) < 0:
            axis = -axis
        positions = np.array([r[0] for r in _ARM_RINGS]) * scale
        widths = np.array([r[1] for r in _ARM_RINGS])
        sleeve = len(_ARM_RINGS)
        if rng is not None:
            reach = 1.5 * np.abs(outline - centre).max()
            if axis[2] < 0:  # towards the camera: stop before coming too near
                room = (centre[2] - reach - _ARM_NEAREST * vertices[:, 2].min()) / -axis[2]
                positions = positions * np.clip(room / positions[-1], 0.2, 1.0)
            if rng.uniform() < _SLEEVE_PROBABILITY:
                sleeve = int(rng.integers(1, len(_ARM_RINGS)))
                widths = widths * np.where(np.arange(len(widths)) >= sleeve, rng.uniform(*_SLEEVE_WIDTH), 1.0)
        rings = centre + positions[:, None, None] * axis + widths[:, None, None] * (outline - centre)
        return np.concatenate([rings.reshape(-1, 3), [centre + positions[-1] * axis]]), sleeve

    def render(self, params: Sequence[Any]) -> list[dict[str, Any]]:
        """Real-like samples for a batch of `synthetic.SampleParams` (render ~8 at a time).

        Returns:
          One dict per sample: image (S x S x 3 uint8), depth (S x S float32 sensor mm, 0 =
          missing), depth_exact (S x S float32 noise-free depth of hand, forearm and background
          plane), mask (S x S bool, pixels of the hand itself), joints_uv, joints_xyz,
          vertices_xyz, intrinsics, root_depth, scale, is_left (as `synthetic.HandRenderer`).
        """
        if not params:
            return []
        size = self.image_size
        geometry = self._geometry.render(list(params))
        rngs = [np.random.default_rng([p.appearance_seed, _DOMAIN_TAG]) for p in params]
        arms, sleeves = zip(*[self._arm(g["vertices_xyz"].astype(np.float64), float(g["scale"]), rng)
                              for g, rng in zip(geometry, rngs)])  # fmt: skip
        everything = np.stack([np.concatenate([g["vertices_xyz"], arm]) for g, arm in zip(geometry, arms)])
        everything = everything.astype(np.float32)  # B x (V + A) x 3, camera mm
        hand = self.templates[False].num_vertices
        # Right-hand winding for every sample: a mirrored (left) mesh gets inward normals, flipped.
        flip = np.array([-1.0 if g["is_left"] else 1.0 for g in geometry], np.float32)[:, None, None]
        normals = self._normals(everything).numpy() * flip
        occlusion = np.ones(everything.shape[:2], np.float32)
        occlusion[:, :hand] = appearance.ambient_occlusion(
            everything[:, :hand], normals[:, :hand], self._occluders, self._faces[: self._num_hand_faces]
        )
        albedo = np.empty_like(everything)
        specular = np.empty(everything.shape[:2], np.float32)
        count = len(self._outline)
        for b, (rng, sleeve) in enumerate(zip(rngs, sleeves)):
            skin = appearance.sample_indoor_skin(rng)
            albedo[b], specular[b] = appearance.skin_albedo(rng, skin, self._regions, everything[b] / 1000.0)
            if sleeve < len(_ARM_RINGS):
                cloth = slice(hand + sleeve * count, None)
                albedo[b, cloth], specular[b, cloth] = appearance.cloth_albedo(rng, everything[b, cloth] / 1000.0)
        attributes = [everything[..., 2:], normals, albedo, specular[..., None], occlusion[..., None]]
        attributes = np.concatenate(attributes, axis=-1)  # B x (V + A) x 9
        intrinsics = np.stack([g["intrinsics"] for g in geometry]).astype(np.float32)
        triangles, values = (t.numpy() for t in self._render(everything, intrinsics, attributes))
        samples = []
        for b, g in enumerate(geometry):
            rng = rngs[b]
            covered = triangles[b] >= 0
            fx, fy, cx, cy = intrinsics[b].astype(np.float64)
            cols, rows = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5)
            rays = np.stack([(cols - cx) / fx, (rows - cy) / fy, np.ones_like(cols)], -1)
            view = -rays / np.linalg.norm(rays, axis=-1, keepdims=True)  # towards the camera
            surface_normals = values[b, ..., 1:4]
            surface_normals /= np.maximum(np.linalg.norm(surface_normals, axis=-1, keepdims=True), 1e-6)
            facing = np.sum(surface_normals * view, axis=-1)
            surface_normals *= np.where(facing < 0, -1.0, 1.0)[..., None]
            lighting = appearance.sample_indoor_lighting(rng)
            radiance = appearance.shade(
                surface_normals[covered], view[covered], values[b, ..., 4:7][covered], values[b, ..., 7][covered],
                np.clip(values[b, ..., 8][covered], 0.0, 1.0), lighting,
            )  # fmt: skip
            background = appearance.srgb_to_linear(self.backgrounds.sample(rng, size).astype(np.float32) / 255.0)
            image = background * rng.uniform(0.3, 1.0)
            image[covered] = radiance
            plane_depth, plane_cosines = self._background_plane(rng, rays, values[b, ..., 0][covered])
            depth_exact = np.where(covered, values[b, ..., 0], plane_depth)
            cosines = np.where(covered, np.abs(facing), plane_cosines)
            samples.append({
                "image": camera_image(image, rng),
                "depth": sensor_depth(depth_exact, cosines, 0.5 * (fx + fy), rng, self.sensor),
                "depth_exact": depth_exact.astype(np.float32),
                "mask": covered & (triangles[b] < self._num_hand_faces),
                **{key: g[key] for key in ("joints_uv", "joints_xyz", "vertices_xyz", "intrinsics", "root_depth",
                                           "scale", "is_left")},
            })  # fmt: skip
        return samples

    @staticmethod
    def _background_plane(rng: np.random.Generator, rays: np.ndarray, covered_depths: np.ndarray):
        """Depth (S x S, 0 = none) and |cos| of a tilted plane behind the hand, or of nothing."""
        if rng.uniform() < _NO_BACKGROUND_PROBABILITY or covered_depths.size == 0:
            return np.zeros(rays.shape[:2]), np.ones(rays.shape[:2])
        distance = float(covered_depths.max()) + rng.uniform(*_BACKGROUND_GAP_MM)
        tilt = np.radians(rng.uniform(0.0, 40.0))
        azimuth = rng.uniform(0, 2 * np.pi)
        normal = np.array([np.sin(tilt) * np.cos(azimuth), np.sin(tilt) * np.sin(azimuth), np.cos(tilt)])
        along = rays @ normal  # plane n . x = distance * n_z through (0, 0, distance)
        depth = np.where(along > 1e-3, distance * normal[2] / np.maximum(along, 1e-3), 0.0)
        cosines = np.abs(along) / np.linalg.norm(rays, axis=-1)
        return depth, cosines


# ---------------------------------------------------------------------------------------------
# Crop sets.


def mirror_sample(sample: dict[str, Any]) -> dict[str, Any]:
    """A crop sample flipped left-right (module docstring): image and depth columns, X -> -X,
    cx -> S - cx, u -> S - u."""
    size = sample["image"].shape[1]
    flipped = dict(sample)
    flipped["image"] = np.ascontiguousarray(sample["image"][:, ::-1])
    flipped["depth"] = np.ascontiguousarray(sample["depth"][:, ::-1])
    for key in ("joints_xyz", "vertices_xyz"):
        if sample.get(key) is not None:
            flipped[key] = sample[key] * np.array([-1.0, 1.0, 1.0], np.float32)
    intrinsics = np.array(sample["intrinsics"], np.float32)
    intrinsics[2] = size - intrinsics[2]
    flipped["intrinsics"] = intrinsics
    uv = np.array(sample["joints_uv"], np.float32)
    uv[:, 0] = size - uv[:, 0]
    flipped["joints_uv"] = uv
    return flipped


def nearest_depth(depth, size: int) -> np.ndarray:
    """Resamples ... x H x W depth maps to ... x size x size, nearest: output pixel (i, j) takes
    the input pixel containing its centre ((i + 0.5) W / size, (j + 0.5) H / size); pixels on a
    border go right / down. Missing (0) pixels stay 0, no value is interpolated."""
    depth = np.asarray(depth)
    height, width = depth.shape[-2:]
    rows = np.minimum(((np.arange(size) + 0.5) * height / size).astype(np.int64), height - 1)
    cols = np.minimum(((np.arange(size) + 0.5) * width / size).astype(np.int64), width - 1)
    return depth[..., rows[:, None], cols[None, :]]


def _field_shape(name: str, image_size: int, num_vertices: int) -> tuple[int, ...]:
    symbols = {"S": image_size, "V": num_vertices}
    return tuple(symbols.get(dim, dim) for dim in _ARRAYS[name][1])


class CropSetWriter:
    """Creates or resumes an RGB-D crop set folder (module docstring).

    Args:
      folder: the set's folder (created).
      num_samples: N.
      image_size: S.
      has_vertices: the samples carry vertices_xyz.
      source: JSON-able description of what is written; resuming requires the same.

    Raises:
      DatasetError: the folder holds a set written with another source, size or count.
    """

    def __init__(self, folder: str | Path, num_samples: int, image_size: int, has_vertices: bool,
                 source: dict[str, Any]):  # fmt: skip
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.metadata = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "image_size": int(image_size),
            "num_samples": int(num_samples), "has_vertices": bool(has_vertices),
            "num_vertices": int(load_template().num_vertices), "template_version": TEMPLATE_VERSION,
            "depth_unit_mm": 1.0, "source": source, "num_written": 0, "complete": False,
        }  # fmt: skip
        path = self.folder / METADATA
        if path.is_file():
            existing = json.loads(path.read_text())
            fixed = ("format", "format_version", "image_size", "num_samples", "has_vertices", "source")
            different = {key: (existing.get(key), self.metadata[key]) for key in fixed
                         if existing.get(key) != self.metadata[key]}  # fmt: skip
            if different:
                detail = "; ".join(f"{key}: folder has {a!r}, requested {b!r}" for key, (a, b) in different.items())
                raise DatasetError(f"{self.folder} holds a crop set made differently ({detail}); delete it or "
                                   "choose another folder")  # fmt: skip
            self.metadata["num_written"] = int(existing.get("num_written", 0))
        names = [name for name in _ARRAYS if has_vertices or name != "vertices_xyz"]
        mode = "r+" if self.metadata["num_written"] > 0 else "w+"
        self.arrays = {}
        for name in names:
            shape = (int(num_samples), *_field_shape(name, image_size, self.metadata["num_vertices"]))
            file = self.folder / f"{name}.npy"
            self.arrays[name] = np.lib.format.open_memmap(
                file, mode=mode if file.is_file() else "w+", dtype=_ARRAYS[name][0], shape=shape
            )
        self._write_metadata()

    @property
    def num_written(self) -> int:
        return int(self.metadata["num_written"])

    def _write_metadata(self) -> None:
        self.metadata["complete"] = self.num_written == self.metadata["num_samples"]
        tmp = self.folder / (METADATA + ".tmp")
        tmp.write_text(json.dumps(self.metadata, indent=2, sort_keys=True))
        os.replace(tmp, self.folder / METADATA)

    def append(self, samples: Sequence[dict[str, Any]]) -> None:
        """Writes samples at positions num_written, num_written + 1, ... and records them.

        Each sample: image S x S x 3 uint8, depth S x S mm, joints_uv, joints_xyz, intrinsics,
        root_depth, scale, mirrored (and vertices_xyz when the set has vertices).
        """
        start = self.num_written
        for offset, sample in enumerate(samples):
            for name, array in self.arrays.items():
                value = sample["image" if name == "images" else name]
                if name == "depth":
                    value = np.clip(np.round(value), 0, np.iinfo(np.uint16).max)
                array[start + offset] = value
        for array in self.arrays.values():
            array.flush()
        self.metadata["num_written"] = start + len(samples)
        self._write_metadata()


class CropSet:
    """A complete RGB-D crop set opened for reading (arrays memory-mapped).

    Args:
      folder: the set's folder.

    Attributes:
      folder, metadata, image_size, has_vertices, and `arrays` (name -> N x ... array).

    Raises:
      DatasetError: no metadata, another format, or an incomplete set.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        path = self.folder / METADATA
        if not path.is_file():
            raise DatasetError(f"{self.folder} has no {METADATA}: not an RGB-D crop set (or not written yet)")
        self.metadata = json.loads(path.read_text())
        found = (self.metadata.get("format"), self.metadata.get("format_version"))
        if found != (FORMAT, FORMAT_VERSION):
            raise DatasetError(f"{path}: format {found[0]!r} version {found[1]!r}; "
                               f"expected {FORMAT!r} {FORMAT_VERSION}")  # fmt: skip
        if not self.metadata.get("complete"):
            counts = (self.metadata.get("num_written"), self.metadata.get("num_samples"))
            raise DatasetError(f"{self.folder} is incomplete ({counts[0]} of {counts[1]} samples); rerun the command "
                               "that writes it")  # fmt: skip
        self.image_size = int(self.metadata["image_size"])
        self.has_vertices = bool(self.metadata["has_vertices"])
        names = [name for name in _ARRAYS if self.has_vertices or name != "vertices_xyz"]
        self.arrays = {name: np.load(self.folder / f"{name}.npy", mmap_mode="r") for name in names}

    def __len__(self) -> int:
        return int(self.metadata["num_samples"])

    def __repr__(self) -> str:
        return f"CropSet({str(self.folder)!r}, {len(self)} samples of {self.image_size} px)"

    def batch(self, indices) -> dict[str, np.ndarray]:
        """The samples at `indices` (B ints): a dict of B x ... arrays, depth as float32 mm."""
        indices = np.asarray(indices, np.int64)
        batch = {name: np.asarray(array[indices]) for name, array in self.arrays.items()}
        batch["depth"] = batch["depth"].astype(np.float32)
        return batch


def is_complete(folder: str | Path) -> bool:
    """Whether `folder` holds a completely written crop set."""
    path = Path(folder) / METADATA
    return path.is_file() and bool(json.loads(path.read_text()).get("complete"))


def _progress(total: int, initial: int, enabled: bool, description: str):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="sample", disable=not enabled, desc=description)


def generate_real_like(folder: str | Path, num_samples: int, *, seed: int = 0, image_size: int = 128,
                       progress: bool = True, backgrounds: str | Path | None = None,
                       sensor: SensorModel = SensorModel(),
                       renderer: RealLikeRenderer | None = None, views: str = "full") -> CropSet:  # fmt: skip
    """Renders (or completes) a real-like crop set: sample g comes from the generator seeded
    with [seed, g], so the same arguments always give the same samples.

    Args:
      folder: the set's folder.
      num_samples: N >= 1.
      seed: dataset seed.
      image_size: S (>= 32).
      progress: show a progress bar.
      backgrounds: a folder of photos for the backgrounds (None: procedural).
      sensor: the depth sensor model.
      renderer: a RealLikeRenderer to reuse (e.g. for a train and a test set); it must have
        this image size, sensor and background folder. None: one is made if samples are missing.
      views: the camera view distribution, "full" or "frontal" (`handshape_tf.data.synthetic`).

    Returns:
      The finished CropSet.

    Raises:
      ValueError: num_samples < 1, image_size < 32, or a renderer made with other arguments.
      DatasetError: the folder holds a set made with other arguments.
    """
    from handshape_tf.data.backgrounds import BackgroundSource
    from handshape_tf.data.synthetic import GENERATOR_VERSION as SYNTHETIC_VERSION
    from handshape_tf.data.synthetic import sample_rng

    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples is {num_samples!r}; expected an int >= 1")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 32:
        raise ValueError(f"image_size is {image_size!r}; expected an int >= 32")
    background_folder = None if backgrounds is None else Path(backgrounds).expanduser().resolve()
    if renderer is not None:
        made_with = (renderer.image_size, renderer.sensor, renderer.backgrounds.folder)
        wanted = (image_size, sensor, background_folder)
        if made_with[:2] != wanted[:2] or (made_with[2] and made_with[2].resolve()) != background_folder:
            raise ValueError(f"renderer made with (image_size, sensor, backgrounds) = {made_with}; expected {wanted}")
    source = {"generator": "handshape_tf.data.real_like", "generator_version": GENERATOR_VERSION,
              "synthetic_generator_version": SYNTHETIC_VERSION, "seed": int(seed), "views": views,
              "backgrounds": None if background_folder is None else str(background_folder),
              "sensor": json.loads(json.dumps(dataclasses.asdict(sensor)))}  # fmt: skip
    writer = CropSetWriter(folder, num_samples, image_size, True, source)
    if writer.num_written < num_samples:
        renderer = renderer or RealLikeRenderer(image_size, BackgroundSource(backgrounds), sensor)
        logger.info("rendering %d real-like samples into %s", num_samples - writer.num_written, folder)
        with _progress(num_samples, writer.num_written, progress, "real-like") as bar:
            while writer.num_written < num_samples:
                start = writer.num_written
                stop = min(start + CHUNK, num_samples)
                chunk = []
                for first in range(start, stop, RENDER_BATCH):
                    indices = range(first, min(first + RENDER_BATCH, stop))
                    params = [real_like_params(sample_rng(seed, i), renderer.templates, views) for i in indices]
                    chunk += [_stored(sample) for sample in renderer.render(params)]
                writer.append(chunk)
                bar.update(len(chunk))
    return CropSet(folder)


def _stored(sample: dict[str, Any]) -> dict[str, Any]:
    """A rendered or cropped sample as stored: right hand (mirrored if left), `mirrored` set."""
    stored = mirror_sample(sample) if sample["is_left"] else dict(sample)
    stored["mirrored"] = bool(sample["is_left"])
    return stored


# ---------------------------------------------------------------------------------------------
# STB.


def _stb_depth_window(sample: dict[str, Any], calibration, shape: tuple[int, int]) -> tuple[slice, slice]:
    """Rows and columns of the depth image that can land in the crop box at depths within
    STB_DEPTH_WINDOW_MM of the wrist (corners of the box at the two extreme depths)."""
    x0, y0, w, h = np.asarray(sample["crop_box"], np.float64)
    fx, fy, cx, cy = np.asarray(sample["intrinsics"], np.float64)
    root = float(sample["root_depth"])
    corners = np.array([[x, y] for x in (x0, x0 + w) for y in (y0, y0 + h)])
    points = []
    for z in (max(root - STB_DEPTH_WINDOW_MM, 1.0), root + STB_DEPTH_WINDOW_MM):
        points.append(np.stack([(corners[:, 0] - cx) / fx * z, (corners[:, 1] - cy) / fy * z, np.full(4, z)], 1))
    color = np.concatenate(points)
    depth_frame = color @ calibration.rotation.T + np.asarray(calibration.translation)  # inverse of depth_to_color
    dfx, dfy, dcx, dcy = calibration.continuous(calibration.depth_intrinsics)
    u = dfx * depth_frame[:, 0] / depth_frame[:, 2] + dcx
    v = dfy * depth_frame[:, 1] / depth_frame[:, 2] + dcy
    height, width = shape
    columns = slice(int(np.clip(np.floor(u.min()) - 2, 0, width)), int(np.clip(np.ceil(u.max()) + 2, 0, width)))
    rows = slice(int(np.clip(np.floor(v.min()) - 2, 0, height)), int(np.clip(np.ceil(v.max()) + 2, 0, height)))
    return rows, columns


def crop_depth_nearest(depth: np.ndarray, box, size: int) -> np.ndarray:
    """S x S crop of an H x W depth map: each crop pixel takes the map pixel containing its
    centre (x0 + (i + 0.5) w / S, y0 + (j + 0.5) h / S); 0 outside the map."""
    x0, y0, w, h = np.asarray(box, np.float64)
    height, width = depth.shape
    cols = np.floor(x0 + (np.arange(size) + 0.5) * w / size).astype(np.int64)
    rows = np.floor(y0 + (np.arange(size) + 0.5) * h / size).astype(np.int64)
    inside = (rows[:, None] >= 0) & (rows[:, None] < height) & (cols[None] >= 0) & (cols[None] < width)
    values = depth[np.clip(rows, 0, height - 1)[:, None], np.clip(cols, 0, width - 1)[None]]
    return np.where(inside, values, 0).astype(np.float32)


def stb_crop(dataset, index: int, image_size: int) -> dict[str, Any]:
    """One STB frame as a stored crop sample (module docstring, `prepare_stb`).

    Args:
      dataset: an `STBDataset` opened with with_depth=False (depth is registered here, windowed).
      index: the frame.
      image_size: S.

    Raises:
      FileNotFoundError, ValueError: a missing or undecodable colour or depth PNG, or a depth
        PNG that is not 8-bit 3-channel of the calibration's size (as the reader's messages).
    """
    from handshape_tf.data.external.common import check_rgb_png, read_image
    from handshape_tf.data.external.stb import decode_depth, register_depth

    sample = dataset[index]
    calibration = dataset.calibration
    path = dataset.root / sample["name"].replace("SK_color_", "SK_depth_")
    encoded = read_image(path)
    check_rgb_png(encoded, path, "STB depth image", calibration.depth_size)
    depth = decode_depth(encoded)
    rows, columns = _stb_depth_window(sample, calibration, depth.shape)
    windowed = np.zeros_like(depth)
    windowed[rows, columns] = depth[rows, columns]
    registered = register_depth(
        windowed, calibration.continuous(calibration.depth_intrinsics), sample["intrinsics"],
        calibration.rotation, np.asarray(calibration.translation), sample["image"].shape[:2],
    )  # fmt: skip
    box = sample["crop_box"]
    image, _ = crop_and_resize(sample["image"], box, image_size)
    intrinsics = crop_intrinsics_np(sample["intrinsics"], box, image_size)
    fx, fy, cx, cy = intrinsics.astype(np.float64)
    joints = sample["joints_xyz"].astype(np.float64)
    uv = np.stack([fx * joints[:, 0] / joints[:, 2] + cx, fy * joints[:, 1] / joints[:, 2] + cy], axis=1)
    return _stored({
        "image": image, "depth": crop_depth_nearest(registered, box, image_size),
        "joints_uv": uv.astype(np.float32), "joints_xyz": sample["joints_xyz"], "intrinsics": intrinsics,
        "root_depth": sample["root_depth"], "scale": sample["scale"], "is_left": sample["is_left"],
    })  # fmt: skip


def open_stb(root: str | Path, split: str, calibration=None, sequences: Sequence[str] | None = None):
    """`STBDataset` of a split (or of `sequences`) without the reader's own depth registration
    (`stb_crop` registers a window of it)."""
    from handshape_tf.data.external.stb import STBCalibration, STBDataset

    return STBDataset(root, split, sequences, with_depth=False, calibration=calibration or STBCalibration())


def check_stb(root: str | Path, image_size: int, calibration=None) -> dict[str, int]:
    """Opens both STB splits and crops the first frame of every sequence, so that a missing
    sequence, label file or image, or a depth PNG of the wrong size or type fails now.

    Returns:
      {"train": frames, "test": frames}.

    Raises:
      FileNotFoundError, ValueError: from the reader, naming what is missing or wrong.
    """
    from handshape_tf.data.external.stb import SPLITS

    sizes = {split: len(open_stb(root, split, calibration)) for split in ("train", "test")}
    for split in ("train", "test"):
        for sequence in SPLITS[split]:
            stb_crop(open_stb(root, split, calibration, [sequence]), 0, image_size)
    return sizes


def prepare_stb(root: str | Path, folder: str | Path, split: str, image_size: int, *, stride: int = 1,
                calibration=None, progress: bool = True) -> CropSet:  # fmt: skip
    """Crops (or finishes cropping) every `stride`-th frame of an STB split into a crop set.

    Args:
      root: the STB folder.
      folder: the crop set's folder.
      split: "train" (B2-B6) or "test" (B1).
      image_size: S.
      stride: keep frames 0, stride, 2 stride, ... of the split.
      calibration: an `STBCalibration` (default: the readme's).
      progress: show a progress bar.

    Returns:
      The finished CropSet.

    Raises:
      FileNotFoundError, ValueError: see `check_stb`; DatasetError: the folder holds crops of
        another STB folder, split, stride or size.
    """
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise ValueError(f"stride is {stride!r}; expected an int >= 1")
    dataset = open_stb(root, split, calibration)
    indices = list(range(0, len(dataset), stride))
    source = {"dataset": "STB", "root": str(Path(root).resolve()), "split": split, "stride": stride,
              "calibration": json.loads(json.dumps(dataclasses.asdict(dataset.calibration)))}  # fmt: skip
    writer = CropSetWriter(folder, len(indices), image_size, False, source)
    if writer.num_written < len(indices):
        logger.info("cropping %d STB %s frames into %s", len(indices) - writer.num_written, split, folder)
        with _progress(len(indices), writer.num_written, progress, f"STB {split}") as bar:
            while writer.num_written < len(indices):
                start = writer.num_written
                chunk = [stb_crop(dataset, i, image_size) for i in indices[start : start + CHUNK]]
                writer.append(chunk)
                bar.update(len(chunk))
    return CropSet(folder)


def iterate_batches(crops: CropSet, batch_size: int, *, seed: int, start: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """Endless shuffled batches of a crop set, resumable: epoch e is the permutation drawn from
    `np.random.default_rng([seed, e])`, and `start` samples of the stream are skipped.

    Yields:
      `CropSet.batch` dicts plus "index" (B int64 positions in the set).

    Raises:
      ValueError: batch_size exceeds the set's size.
    """
    count = len(crops)
    if batch_size > count:
        raise ValueError(f"batch_size {batch_size} exceeds the {count} samples of {crops!r}")
    epoch, offset = divmod(int(start), count)
    pending = np.zeros(0, np.int64)
    while True:
        order = np.random.default_rng([int(seed), epoch]).permutation(count)[offset:]
        pending = np.concatenate([pending, order])
        offset = 0
        epoch += 1
        while len(pending) >= batch_size:
            indices, pending = pending[:batch_size], pending[batch_size:]
            batch = crops.batch(indices)
            batch["index"] = indices
            yield batch


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m handshape_tf.data.real_like", description=__doc__.split("\n")[0])
    parser.add_argument("--num", type=int, required=True, help="number of samples")
    parser.add_argument("--out", type=Path, required=True, help="crop set folder (created; resumed if present)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=128, help="crop size in pixels")
    parser.add_argument("--backgrounds", type=Path, default=None, help="folder of photos for backgrounds")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        crops = generate_real_like(args.out, args.num, seed=args.seed, image_size=args.size, progress=not args.quiet,
                                   backgrounds=args.backgrounds)  # fmt: skip
    except (ValueError, OSError) as error:
        parser.exit(2, f"error: {error}\n")
    logger.info("%r", crops)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
