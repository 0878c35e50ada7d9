"""Synthetic hand dataset: posed, shaped, lit hands rendered into crops over backgrounds.

Shape shorthand: B render batch, V mesh vertices (1159), R rig joints (25), J keypoints (21),
P pose parameters (23), S shape parameters (14), N image size.

Per sample (`sample_params` draws everything from one random generator; `HandRenderer.render`
turns a batch of `SampleParams` into shard samples, see `handshape_tf.data.shards`):

1. Hand: right or left (50/50; the left hand is the mirrored template posed with mirrored
   rotations, so the same pose angles mean the same anatomical pose), shape factors from
   `hand_shapes.sample_shape` (adults and children, finger and palm proportions), a
   collision-free pose from `hand_poses.sample_pose` (half gestures, half the random prior),
   posed by forward kinematics + linear blend skinning (`geometry.skinning.pose_hand`); the 21
   keypoints follow the shaped rig.
2. Camera: with views="full" (the default), the view direction is uniform over the sphere
   around the hand (so about half the views see the palm side and half the back) and the roll
   uniform over 360 deg; with views="frontal" (a hand held up to a webcam), the direction is
   uniform over the two 60 deg cones around the palm's normal (palm or back towards the
   camera, 50/50) and the roll within +-60 deg of fingers-up. Either way, directions within
   50 deg of the forearm's axis seen from the wrist are redrawn (the arm would come at the
   camera and hide the hand). The distance from the camera to the hand's centre
   log-uniform in 250-1000 mm (a phone or egocentric camera at arm's length to
   a webcam across a desk; STB's RealSense sequences are 300-600 mm). The full frame is a
   640 x 480 webcam (55-78 deg horizontal field of view), a 1280 x 720 webcam (60-78 deg), a
   640 x 480 RealSense colour camera (65-72 deg; fx 615 px at 69 deg, STB's is 608 px) or a
   1920 x 1080 phone (60-77 deg), principal point near the centre, and the hand centre lands
   anywhere in the central 80% of the frame, so crops see the hand off the optical axis as
   real crops do.
3. Crop: a square around the projected mesh, its side 1.1-1.5 x the larger side of the mesh's
   bounding box and its centre jittered by up to 40% of the free margin (the hand always stays
   inside), rendered DIRECTLY at N x N with the crop's intrinsics: if the crop's top-left
   corner is (x0, y0) and its side w in the full frame, k = N / w and the crop camera is
   (fx k, fy k, (cx - x0) k, (cy - y0) k), i.e. x = fx' X / Z + cx' in the crop's continuous
   pixel coordinates (pixel centres at i + 0.5).
4. Image: a forearm leaves the picture from the template's forearm stub (skin, half the time
   in a sleeve; not part of the labels). One rasterization per batch (the project's
   `rendering.rasterize`, for visibility) gives the covered pixels, at which depth, normals,
   albedo, specular strength and ambient occlusion (`appearance`) are interpolated with
   perspective-correct barycentrics (`interpolate_covered`) and shaded. `mask` is the pixels
   whose centre the hand covers, exactly `depth > 0` (where the forearm hides the hand, it is
   not hand). Alpha is the coverage blurred by a 3 x 3 tent (3/4 and 1/4 on either side of a
   straight edge, about what a box filter over the pixel gives), with the colour extended by
   one pixel under the soft edge: the hand + forearm composited over a background
   (`backgrounds`), then camera effects (a crop that spans fewer than N full-frame pixels
   is resampled through that size, as a real one would be enlarged; sometimes blur, sometimes
   sensor noise), make `image`; the hand alone with the hand's alpha makes `image_rgba`.
5. Depth sensor (RGB-D domains only, `Domain.sensor`): the exact depth of hand, forearm and
   sleeve at the covered pixels, a tilted plane behind them elsewhere, turned into what a
   RealSense-like sensor measures (`depth_sensor`: noise growing with distance, holes at
   silhouettes, grazing angles and in the projector's shadow) makes `sensor_depth`. It draws
   from its own random stream, so a domain's images do not depend on whether it has a sensor.

Labels: joints_uv (crop pixels), joints_xyz and vertices_xyz (camera mm), the crop
intrinsics, root depth, scale (middle MCP-PIP, mm), is_left, pose (P angles, degrees), shape
(S factors) and camera: the rigid 4 x 4 transform from the posed hand's model frame to the
camera frame, both in metres, so vertices_xyz = 1000 (camera[:3, :3] v + camera[:3, 3]) for
the vertices v posed from pose and shape with `pose_hand` (no global rotation or translation).

Datasets: sample g of a dataset seeded with s is drawn from `np.random.default_rng([s, g])`,
so the same seed gives the same samples (and the same shard BYTES, whatever the number of
workers) and a shard depends only on (seed, its index). `generate_dataset` writes
`shards.write_shard` files (atomic) and an atomically updated `metadata.json`; rerunning it on
the same folder with the same arguments writes only the shards that are missing. Workers are
spawned processes with one TensorFlow thread each; one that dies (e.g. killed for memory) fails
the run at once with `WorkerDied` naming the shards not written, and leaves no temporary files.

Command line:
  python -m handshape_tf.data.synthetic --num N --out DIR [--seed S] [--size 256]
      [--workers 2] [--samples-per-shard 256] [--backgrounds DIR] [--views full|frontal] [--preview]
      [--verbose]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import multiprocessing
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np

from handshape_tf.assets.template import (
    ROOT_KEYPOINT,
    SCALE_BONE,
    TEMPLATE_VERSION,
    HandTemplate,
    load_template,
)
from handshape_tf.cli import add_verbose_argument, filtered_stderr, setup_logging
from handshape_tf.data import appearance, depth_sensor, shards
from handshape_tf.data.backgrounds import BackgroundSource
from handshape_tf.data.camera_effects import apply_camera, to_uint8
from handshape_tf.data.domains import CAMERA_MODELS, PHOTO, REALSENSE_FRAME, REALSENSE_INTRINSICS, Domain, get_domain
from handshape_tf.data.hand_poses import (
    NUM_POSE_PARAMETERS,
    POSE_PARAMETER_NAMES,
    joint_positions,
    palm_axes,
    pose_rotations,
    sample_pose,
)
from handshape_tf.data.hand_shapes import (
    NUM_SHAPE_PARAMETERS,
    SHAPE_PARAMETER_NAMES,
    apply_shape,
    sample_shape,
    shape_template,
)

logger = logging.getLogger(__name__)

GENERATOR_VERSION = 2  # bump whenever a seed's samples change (resuming checks it)
RENDER_BATCH = 8
MIN_IMAGE_SIZE = 32
# Seen from the wrist, the camera is never within this angle of the forearm's axis: there the
# forearm would come at the camera and hide the hand (or end in the picture).
FOREARM_CONE_DEG = 50.0
# View distributions (module docstring, step 2): "frontal" keeps the camera within
# FRONTAL_CONE_DEG of the palm's normal (either side) and the roll within +-FRONTAL_ROLL_DEG.
VIEWS = ("full", "frontal")
FRONTAL_CONE_DEG = 60.0
FRONTAL_ROLL_DEG = 60.0
_MAX_VIEW_DRAWS = 1000
# The hand centre lands in this central fraction of the full frame ("consumer", "realsense").
HAND_CENTRE_FRAME = {"consumer": 0.8, "realsense": 0.7}
PRINCIPAL_POINT_JITTER = 0.01  # SD, fraction of the frame size
# Occluders: size as a fraction of the hand's bounding box, and how far from a hand pixel.
_OCCLUDER_SIZE = (0.15, 0.5)
_SENSOR_STREAM = 0x5EA1  # keys the depth sensor's random stream of a sample (with its appearance seed)
# A 3 x 3 tent filter: the anti-aliased alpha of the pixel-centre mask.
_ALPHA_KERNEL = np.outer([1.0, 2.0, 1.0], [1.0, 2.0, 1.0]).astype(np.float32) / 16.0


# ---------------------------------------------------------------------------------------------
# Sample parameters.


@dataclasses.dataclass(frozen=True)
class SampleParams:
    """Everything that determines one sample.

    Attributes:
      is_left: left hand (mirrored template).
      shape: S shape factors (`hand_shapes.SHAPE_PARAMETER_NAMES`).
      angles: P pose angles, degrees (`hand_poses.POSE_PARAMETER_NAMES`).
      gesture: the gesture the pose was drawn from, or "random".
      view: 3 unit vector from the hand towards the camera in the posed hand's palm frame
        (distal, radial, palmar: `hand_poses.palm_axes`); palmar > 0 sees the palm.
      roll: rotation about the optical axis, radians (0: fingers point up in the image).
      distance_mm: camera centre to the centre of the hand's bounding box.
      frame_size: (width, height) of the full frame, pixels.
      frame_intrinsics: (fx, fy, cx, cy) of the full frame.
      hand_pixel: (x, y) where the hand's centre projects in the full frame.
      crop_margin: crop side / larger side of the projected mesh's bounding box.
      crop_offset: (x, y) the crop centre's shift as a fraction of the free margin (within
        +- the framing's jitter).
      crop_shift: (x, y) a further shift of the crop centre, fraction of its side (a box that
        cuts the hand; 0 for most samples).
      appearance_seed: seeds the skin, lights, background and camera effects.
    """

    is_left: bool
    shape: np.ndarray
    angles: np.ndarray
    gesture: str
    view: np.ndarray
    roll: float
    distance_mm: float
    frame_size: tuple[int, int]
    frame_intrinsics: np.ndarray
    hand_pixel: np.ndarray
    crop_margin: float
    crop_offset: np.ndarray
    crop_shift: np.ndarray
    appearance_seed: int


def _sample_view(
    rng: np.random.Generator,
    template: HandTemplate,
    rotations: np.ndarray,
    is_left: bool,
    views: str,
    distance_mm: tuple[float, float],
) -> tuple[np.ndarray, float]:
    """A view direction (palm frame) and a distance (mm) that keep the camera out of the forearm cone.

    The direction is uniform on the sphere ("full") or on the two FRONTAL_CONE_DEG cones around
    the palm normal ("frontal"), the distance log-uniform; draws that put the camera within
    FOREARM_CONE_DEG of the forearm's axis as seen from the wrist are redrawn
    (the camera looks at about the centre of the joints' bounding box, the wrist has no pose
    parameter, so its posed frame is its rest frame with +z along the forearm).
    """
    joints = joint_positions(template, rotations)  # R x 3, model frame
    axes = palm_axes(joints, is_left)
    centre = 0.5 * (joints.min(axis=0) + joints.max(axis=0))
    wrist = template.rest_transforms[0].astype(np.float64)
    for _ in range(_MAX_VIEW_DRAWS):
        if views == "full":  # uniform height along the distal axis: uniform on the sphere
            height = rng.uniform(-1.0, 1.0)
            azimuth = rng.uniform(0.0, 2.0 * np.pi)
            view = np.array(
                [height, np.sqrt(1 - height**2) * np.cos(azimuth), np.sqrt(1 - height**2) * np.sin(azimuth)]
            )
        else:  # uniform height along the palmar axis within the cone: uniform on the two caps
            side = 1.0 if rng.uniform() < 0.5 else -1.0
            height = rng.uniform(np.cos(np.radians(FRONTAL_CONE_DEG)), 1.0)
            azimuth = rng.uniform(0.0, 2.0 * np.pi)
            across = np.sqrt(1 - height**2)
            view = np.array([across * np.cos(azimuth), across * np.sin(azimuth), side * height])
        distance = float(np.exp(rng.uniform(*np.log(distance_mm))))
        to_camera = centre + distance / 1000.0 * (axes.T @ view) - wrist[:3, 3]
        if to_camera @ wrist[:3, 2] < np.cos(np.radians(FOREARM_CONE_DEG)) * np.linalg.norm(to_camera):
            return view, distance
    raise RuntimeError(f"no view outside the forearm cone in {_MAX_VIEW_DRAWS} draws")


def sample_params(
    rng: np.random.Generator, templates: dict[bool, HandTemplate], views: str = "full", domain: Domain = PHOTO
) -> SampleParams:
    """Draws one sample's parameters (module docstring, steps 1-3).

    Args:
      rng: the random generator (the only source of randomness).
      templates: {False: right template, True: left template} (rest pose, unshaped).
      views: the view distribution, one of VIEWS.
      domain: the cameras, distances and framing.

    Returns:
      SampleParams.
    """
    is_left = bool(rng.uniform() < 0.5)
    shape = sample_shape(rng)
    shaped = shape_template(templates[is_left], shape)
    pose = sample_pose(rng, shaped)
    if views not in VIEWS:
        raise ValueError(f"views={views!r}; expected one of {list(VIEWS)}")
    view, distance = _sample_view(rng, shaped, pose.rotations, is_left, views, domain.distance_mm)
    if domain.cameras == "realsense":
        (width, height), intrinsics = REALSENSE_FRAME, np.array(REALSENSE_INTRINSICS)
    else:
        _, width, height, fov = CAMERA_MODELS[int(rng.integers(len(CAMERA_MODELS)))]
        focal = 0.5 * width / np.tan(np.radians(rng.uniform(*fov)) / 2)
        centre = np.array([width, height]) / 2 + rng.normal(0, PRINCIPAL_POINT_JITTER, 2) * [width, height]
        intrinsics = np.array([focal, focal, centre[0], centre[1]])
    margin = (1.0 - HAND_CENTRE_FRAME[domain.cameras]) / 2
    hand_pixel = rng.uniform(margin, 1.0 - margin, 2) * [width, height]
    framing = domain.framing
    cut = rng.uniform() < framing.cut_probability
    return SampleParams(
        is_left=is_left,
        shape=shape,
        angles=pose.angles,
        gesture=pose.gesture,
        view=view,
        roll=float(
            rng.uniform(-np.pi, np.pi) if views == "full" else np.radians(rng.uniform(-1, 1) * FRONTAL_ROLL_DEG)
        ),
        distance_mm=distance,
        frame_size=(width, height),
        frame_intrinsics=intrinsics,
        hand_pixel=hand_pixel,
        crop_margin=float(rng.uniform(*framing.margin)),
        crop_offset=rng.uniform(-1.0, 1.0, 2) * framing.jitter,
        crop_shift=rng.uniform(-1.0, 1.0, 2) * framing.cut_fraction if cut else np.zeros(2),
        appearance_seed=int(rng.integers(2**63)),
    )


def mirror_params(params: SampleParams) -> SampleParams:
    """The mirror image of a sample: the other hand with the same shape, pose and view, seen by
    a camera mirrored about its y-z plane (same appearance seed). Its camera-frame points are
    the original's with x negated and its crop pixels x -> N - x."""
    width = params.frame_size[0]
    fx, fy, cx, cy = params.frame_intrinsics
    return dataclasses.replace(
        params,
        is_left=not params.is_left,
        roll=-params.roll,
        frame_intrinsics=np.array([fx, fy, width - cx, cy]),
        hand_pixel=np.array([width - params.hand_pixel[0], params.hand_pixel[1]]),
        crop_offset=params.crop_offset * [-1.0, 1.0],
        crop_shift=params.crop_shift * [-1.0, 1.0],
    )


def _rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """3 x 3 rotation taking unit vector a to unit vector b about their common normal (for
    a = +-z when they are (anti)parallel)."""
    axis = np.cross(a, b)
    sine, cosine = np.linalg.norm(axis), float(a @ b)
    if sine < 1e-12:  # parallel, or antiparallel: a half turn about an axis normal to a = +-z
        return np.eye(3) if cosine > 0 else np.diag([1.0, -1.0, -1.0])
    k = axis / sine
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + sine * cross + (1 - cosine) * cross @ cross


def camera_transform(params: SampleParams, joints: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """4 x 4 rigid transform from the posed hand's model frame to the camera frame (metres).

    Looks at the centre of the mesh's bounding box from `params.view` (palm frame) at
    `params.distance_mm`, rolled by `params.roll`, then turned so that the centre projects at
    `params.hand_pixel`.

    Args:
      params: the sample's parameters.
      joints: R x 3 posed rig joints, model frame (for the palm axes).
      vertices: V x 3 posed vertices, model frame.
    """
    axes = palm_axes(joints.astype(np.float64), params.is_left)  # rows: distal, radial, palmar
    forward = -(axes.T @ params.view)  # camera z in the model frame
    # Roll 0: the distal axis points up (-y) in the image; radial when looking along it.
    reference = -axes[0] if abs(axes[0] @ forward) < 0.999 else axes[1]
    down = reference - (reference @ forward) * forward
    down /= np.linalg.norm(down)
    right = np.cross(down, forward)
    cos, sin = np.cos(params.roll), np.sin(params.roll)
    look = np.stack([cos * right + sin * down, -sin * right + cos * down, forward])  # rows x, y, z
    fx, fy, cx, cy = params.frame_intrinsics
    ray = np.array([(params.hand_pixel[0] - cx) / fx, (params.hand_pixel[1] - cy) / fy, 1.0])
    ray /= np.linalg.norm(ray)
    rotation = _rotation_between(np.array([0.0, 0.0, 1.0]), ray) @ look
    centre = 0.5 * (vertices.min(axis=0) + vertices.max(axis=0))
    transform = np.eye(4)
    transform[:3, :3] = rotation
    transform[:3, 3] = params.distance_mm / 1000.0 * ray - rotation @ centre
    return transform


def crop_intrinsics(params: SampleParams, points_mm: np.ndarray, image_size: int) -> np.ndarray:
    """4 crop intrinsics (fx, fy, cx, cy) of the square crop around points V x 3 (camera mm)."""
    fx, fy, cx, cy = params.frame_intrinsics
    x = fx * points_mm[:, 0] / points_mm[:, 2] + cx
    y = fy * points_mm[:, 1] / points_mm[:, 2] + cy
    low = np.array([x.min(), y.min()])
    extent = np.array([x.max(), y.max()]) - low
    side = extent.max() * params.crop_margin
    centre = low + extent / 2 + params.crop_offset * np.maximum(side - extent, 0.0) / 2 + params.crop_shift * side
    corner = centre - side / 2
    k = image_size / side
    return np.array([fx * k, fy * k, (cx - corner[0]) * k, (cy - corner[1]) * k])


def project(points: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """... x 2 pixel coordinates of camera-frame points ... x 3 (x = fx X / Z + cx)."""
    fx, fy, cx, cy = np.asarray(intrinsics, np.float64)
    points = np.asarray(points, np.float64)
    return np.stack([fx * points[..., 0] / points[..., 2] + cx, fy * points[..., 1] / points[..., 2] + cy], -1)


# ---------------------------------------------------------------------------------------------
# Rendering.


# Forearm: the template ends in a short forearm stub closed by a flat, slanted cap. The image
# extends it out of the picture: rings of the stub's last cross-section (the cap's outline),
# scaled as the forearm widens towards the elbow (wrist ~55 x 40 mm, mid-forearm ~70 x 55 mm
# in adults), joined to the stub's own last ring so the skin runs on without a seam. Rings:
# (distance from the wrist joint along the forearm, mm at shape scale 1; cross-section scale).
_ARM_RINGS = ((40.0, 1.08), (120.0, 1.25), (260.0, 1.3))
_CAP_MIN_DEPTH_MM = 4.0  # cap faces lie beyond this distance past the wrist joint ...
_CAP_MIN_COSINE = 0.5  # ... and face along the forearm
_SLEEVE_START_MM = (30.0, 160.0)
_SLEEVE_WIDTH = (1.15, 1.6)  # sleeve radius / forearm radius
_SLEEVE_RINGS = 4
_SLEEVE_POINTS = 20
_ARM_NEAREST = 0.15  # the forearm is shortened to stay beyond this fraction of the hand distance


def stub_cap(template: HandTemplate) -> tuple[np.ndarray, np.ndarray]:
    """The forearm stub's end: its cap faces and their outline.

    Returns:
      (F bool: the cap's faces, beyond `_CAP_MIN_DEPTH_MM` past the wrist joint and facing
      along the forearm; C vertex indices of the cap's outline, ordered counter-clockwise
      about the forearm axis, i.e. from the wrist frame's x axis towards its y axis).

    Raises:
      ValueError: the template has no such cap, or its outline is not a single loop.
    """
    wrist = template.rest_transforms[0].astype(np.float64)
    local = (template.vertices - wrist[:3, 3]) @ wrist[:3, :3]  # V x 3 in the wrist frame
    corners = local[template.faces]  # F x 3 x 3
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    cap = (corners[..., 2].min(axis=1) > _CAP_MIN_DEPTH_MM / 1000.0) & (normals[:, 2] > _CAP_MIN_COSINE)
    edges = np.sort(template.faces[cap][:, [[0, 1], [1, 2], [2, 0]]].reshape(-1, 2), axis=1)
    unique, counts = np.unique(edges, axis=0, return_counts=True)
    outline = np.unique(unique[counts == 1])
    if not cap.any() or len(outline) != int(np.sum(counts == 1)):
        raise ValueError(f"the template's forearm stub has no single-loop end cap ({int(cap.sum())} cap faces)")
    offsets = local[outline, :2] - local[outline, :2].mean(axis=0)
    return cap, outline[np.argsort(np.arctan2(offsets[:, 1], offsets[:, 0]))]


def _band_faces(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Triangles joining two rings of P vertex indices; outward when the rings run counter-
    clockwise about the axis they advance along (first to second)."""
    a, b = first, np.roll(first, -1)
    c, d = second, np.roll(second, -1)
    return np.concatenate([np.stack([a, b, c], 1), np.stack([b, d, c], 1)])


def _fan_faces(ring: np.ndarray, centre: int) -> np.ndarray:
    """Triangles closing a counter-clockwise ring with a centre vertex, facing along the axis."""
    return np.stack([ring, np.roll(ring, -1), np.full(len(ring), centre)], 1)


def _elliptic_rings(origin, axes, semi_axes, positions, radii, points) -> np.ndarray:
    """K * points + 1 x 3 vertices of elliptical rings and the last ring's centre.

    Args:
      origin: 3 section centre at position 0.  axes: 3 x 3 rows x, y (section), z (axis).
      semi_axes: 2 section semi-axes along x and y.  positions: K distances along z.
      radii: K x points radius factors.  points: vertices per ring.
    """
    angle = 2 * np.pi * np.arange(points) / points
    x = radii * semi_axes[0] * np.cos(angle)  # K x points
    y = radii * semi_axes[1] * np.sin(angle)
    z = np.broadcast_to(np.asarray(positions, np.float64)[:, None], x.shape)
    rings = origin + x[..., None] * axes[0] + y[..., None] * axes[1] + z[..., None] * axes[2]
    return np.concatenate([rings.reshape(-1, 3), [origin + positions[-1] * axes[2]]])


class Scene(NamedTuple):
    """The geometry of a batch of samples, before rasterization (A forearm and sleeve vertices).

    Attributes:
      model: B x (V + A) x 3 float64 hand, forearm and sleeve vertices, model frame, metres.
      vertices: B x (V + A) x 3 float32 the same in the camera frame, mm.
      normals: B x (V + A) x 3 float32 outward unit vertex normals, camera frame.
      keypoints: B x J x 3 float64 camera frame, mm.
      cameras: B x 4 x 4 camera-from-model transforms (metres).
      intrinsics: B x 4 float64 crop intrinsics.
      rngs: B random generators of the appearance (skin noise, lights, background, camera).
      skins: B skins.
    """

    model: np.ndarray
    vertices: np.ndarray
    normals: np.ndarray
    keypoints: np.ndarray
    cameras: np.ndarray
    intrinsics: np.ndarray
    rngs: list
    skins: list


class HandRenderer:
    """Renders batches of `SampleParams` into shard samples (module docstring, steps 1-4).

    The image also shows a forearm (skin coloured, half the time in a sleeve) leaving the
    picture; it is not part of the labels, and where it hides the hand the hand is not in
    `mask` / `depth` / `image_rgba`.

    Args:
      image_size: N, the square output size in pixels.
      backgrounds: where backgrounds come from (default: procedural `BackgroundSource()`).
      domain: how the samples look (`handshape_tf.data.domains`).

    Attributes:
      image_size, backgrounds, domain: as given.
      templates: {False: right, True: left} hand templates.
    """

    def __init__(self, image_size: int = 256, backgrounds: BackgroundSource | None = None, domain: Domain = PHOTO):
        import tensorflow as tf

        from handshape_tf.geometry.skinning import pose_hand
        from handshape_tf.rendering import rasterize, vertex_normals

        _check_positive_int("image_size", image_size, MIN_IMAGE_SIZE)
        self.image_size = int(image_size)
        self.backgrounds = backgrounds if backgrounds is not None else BackgroundSource()
        self.domain = domain
        right = load_template()
        self.templates = {False: right, True: right.mirrored()}
        hand = right.num_vertices
        cap, outline = stub_cap(right)
        self._outline = outline
        # Extra vertices after the hand's: forearm rings + end centre, then sleeve rings + end centre.
        ring = len(outline)
        arm = [hand + k * ring + np.arange(ring) for k in range(len(_ARM_RINGS))]
        arm_centre = hand + len(_ARM_RINGS) * ring
        sleeve_start = arm_centre + 1
        sleeve = [sleeve_start + k * _SLEEVE_POINTS + np.arange(_SLEEVE_POINTS) for k in range(_SLEEVE_RINGS)]
        self._num_hand_vertices = hand
        self._num_hand_faces = len(right.faces)
        self._sleeve_start = sleeve_start
        extra_faces = [_band_faces(a, b) for a, b in zip([outline] + arm[:-1], arm)]
        extra_faces += [_fan_faces(arm[-1], arm_centre)]
        extra_faces += [_band_faces(a, b) for a, b in zip(sleeve[:-1], sleeve[1:])]
        extra_faces += [_fan_faces(sleeve[-1], sleeve[-1][-1] + 1)]
        faces = np.concatenate([right.faces] + extra_faces).astype(np.int32)
        # The stub's cap ends up inside the forearm; leaving it out of the normals keeps the
        # outline's normals those of a continuing tube.
        shading_faces = faces[np.concatenate([~cap, np.ones(len(faces) - len(cap), bool)])]
        self._faces = faces
        regions = appearance.skin_regions(right)  # vertex order is shared by both hands
        arm_palmar = np.append(np.tile(regions.palmar[outline], len(_ARM_RINGS)), regions.palmar[outline].mean())
        zeros = np.zeros(hand + len(arm_palmar), np.float32)
        self._regions = appearance.SkinRegions(
            palmar=np.concatenate([regions.palmar, arm_palmar]).astype(np.float32),
            nail=np.concatenate([regions.nail, zeros[hand:]]),
            knuckle=np.concatenate([regions.knuckle, zeros[hand:]]),
        )  # hand and forearm
        self._occluders = appearance.occluder_vertices(right)
        size = self.image_size

        @tf.function(reduce_retracing=True)
        def pose(rest_vertices, rest_transforms, rotations):
            posed = pose_hand(right, rotations, rest_vertices=rest_vertices, rest_transforms=rest_transforms)
            return posed.vertices, posed.keypoints, posed.joints

        @tf.function(reduce_retracing=True)
        def normals(vertices):
            return vertex_normals(vertices, shading_faces)

        @tf.function(reduce_retracing=True)
        def render(vertices, intrinsics):
            return rasterize(vertices, faces, intrinsics, (size, size)).triangle_ids

        self._pose, self._normals, self._render = pose, normals, render

    def _forearm(
        self,
        params: SampleParams,
        rest_vertices: np.ndarray,
        rest_transforms: np.ndarray,
        camera: np.ndarray,
        rng: np.random.Generator,
    ) -> np.ndarray:
        """Forearm and sleeve vertices (A x 3, model frame, metres) of one posed hand.

        The wrist has no pose parameter, so its posed frame is its (shaped) rest frame: +z
        along the forearm, +y out of the back of the hand, and the stub is where the rest
        mesh has it. The forearm is shortened if it would come nearer the camera than
        `_ARM_NEAREST` x the hand's distance; without a sleeve the sleeve's vertices are hidden
        inside the forearm.
        """
        wrist = rest_transforms[0].astype(np.float64)
        axes = wrist[:3, :3].T  # rows: the wrist's x, y, z axes
        scale = float(params.shape[0])
        outline = (rest_vertices[self._outline] - wrist[:3, 3]) @ axes.T  # C x 3 in the wrist frame
        centre = outline[:, :2].mean(axis=0)
        offsets = outline[:, :2] - centre  # C x 2
        positions = np.array([r[0] for r in _ARM_RINGS]) / 1000.0 * scale
        widths = np.array([r[1] for r in _ARM_RINGS])
        # Keep the far end in front of the camera: the nearest point of the widest ring.
        direction = camera[:3, :3] @ axes[2]
        origin = wrist[:3, 3] + centre @ axes[:2]
        start = camera[:3, :3] @ origin + camera[:3, 3]
        reach = widths.max() * _SLEEVE_WIDTH[1] * np.abs(offsets).max()
        if direction[2] < 0:
            room = start[2] - _ARM_NEAREST * params.distance_mm / 1000.0 - reach
            limit = max(room / -direction[2], 2.0 * outline[:, 2].max())
            positions = np.minimum(positions, limit * positions / positions[-1])
        section = centre + widths[:, None, None] * offsets  # K x C x 2
        rings = (
            wrist[:3, 3] + section[..., :1] * axes[0] + section[..., 1:] * axes[1] + positions[:, None, None] * axes[2]
        )
        arm = np.concatenate([rings.reshape(-1, 3), [origin + positions[-1] * axes[2]]])
        semi = np.abs(offsets).max(axis=0)
        # Rings run counter-clockwise about the forearm on a right hand and, mirrored, clockwise
        # on a left one, like the outline (so one face winding serves both, see `scene`).
        ring_axes = axes * np.array([[-1.0], [1.0], [1.0]]) if params.is_left else axes
        if rng.uniform() < self.domain.sleeve_probability:
            begin = min(rng.uniform(*_SLEEVE_START_MM) / 1000.0 * scale, 0.8 * positions[-1])
            along = np.linspace(begin, positions[-1], _SLEEVE_RINGS)
            width = rng.uniform(*_SLEEVE_WIDTH) * np.interp(along, positions, widths)
            folds = 1.0 + rng.uniform(0.0, 0.06) * rng.standard_normal((_SLEEVE_RINGS, _SLEEVE_POINTS))
            sleeve = _elliptic_rings(origin, ring_axes, semi, along, width[:, None] * folds, _SLEEVE_POINTS)
        else:
            along = np.linspace(positions[0], positions[-1], _SLEEVE_RINGS)
            sleeve = _elliptic_rings(origin, ring_axes, semi, along, np.full((_SLEEVE_RINGS, 1), 0.5), _SLEEVE_POINTS)
        return np.concatenate([arm, sleeve])

    def scene(self, params: Sequence[SampleParams]) -> Scene:
        """Poses, frames and lights up the geometry of a batch (everything but the pixels).

        Args:
          params: B sample parameters.

        Returns:
          Scene (see there).
        """
        size = self.image_size
        hand = self._num_hand_vertices
        rest = [apply_shape(self.templates[p.is_left], p.shape) for p in params]
        rotations = np.stack([pose_rotations(p.angles, self.templates[p.is_left]) for p in params])  # B x R x 3 x 3
        vertices, keypoints, joints = (
            t.numpy().astype(np.float64)
            for t in self._pose(np.stack([r[0] for r in rest]), np.stack([r[1] for r in rest]), rotations)
        )  # model frame, metres
        cameras = np.stack([camera_transform(p, j, v) for p, j, v in zip(params, joints, vertices)])  # B x 4 x 4
        rngs = [np.random.default_rng(p.appearance_seed) for p in params]
        sample_skin = appearance.sample_skin if self.domain.skin == "monk" else appearance.sample_indoor_skin
        skins = [sample_skin(rng) for rng in rngs]
        arms = np.stack([self._forearm(p, r[0], r[1], c, g) for p, r, c, g in zip(params, rest, cameras, rngs)])
        model = np.concatenate([vertices, arms], axis=1)  # B x (V + A) x 3

        def to_camera_mm(points):
            return 1000.0 * (np.einsum("bij,bvj->bvi", cameras[:, :3, :3], points) + cameras[:, None, :3, 3])

        camera_mm = to_camera_mm(model)
        intrinsics = np.stack([crop_intrinsics(p, v[:hand], size) for p, v in zip(params, camera_mm)])  # B x 4
        camera_mm = camera_mm.astype(np.float32)
        # The faces are the right hand's; a mirrored (left) mesh with them turns inside out,
        # which only flips the sign of the area-weighted normals.
        outward = np.where([p.is_left for p in params], -1.0, 1.0).astype(np.float32)[:, None, None]
        normals = self._normals(camera_mm).numpy() * outward
        return Scene(
            model=model,
            vertices=camera_mm,
            normals=normals,
            keypoints=to_camera_mm(keypoints),
            cameras=cameras,
            intrinsics=intrinsics,
            rngs=rngs,
            skins=skins,
        )

    def render(self, params: Sequence[SampleParams]) -> list[dict[str, Any]]:
        """Shard samples (`handshape_tf.data.shards` schema) for a batch of parameters.

        Args:
          params: B sample parameters (render in batches of about `RENDER_BATCH`).

        Returns:
          B dicts with image, image_rgba, mask, depth, joints_uv, joints_xyz, vertices_xyz,
          intrinsics, root_depth, scale, is_left, pose, shape, camera, sensor_depth with a
          domain sensor (and gesture, tone: not stored in shards).
        """
        if not params:
            return []
        size = self.image_size
        hand = self._num_hand_vertices
        scene = self.scene(params)
        everything, everything_mm, normals, intrinsics = scene.model, scene.vertices, scene.normals, scene.intrinsics
        rngs, skins, keypoints_mm, cameras = scene.rngs, scene.skins, scene.keypoints, scene.cameras
        occlusion = np.ones(everything_mm.shape[:2], np.float32)
        occlusion[:, :hand] = appearance.ambient_occlusion(
            everything_mm[:, :hand], normals[:, :hand], self._occluders, self._faces[: self._num_hand_faces]
        )
        albedo = np.empty_like(everything_mm)
        specular = np.empty(everything_mm.shape[:2], np.float32)
        skin_end = self._sleeve_start
        for b, (rng, skin) in enumerate(zip(rngs, skins)):
            albedo[b, :skin_end], specular[b, :skin_end] = appearance.skin_albedo(
                rng, skin, self._regions, everything[b, :skin_end]
            )
            albedo[b, skin_end:], specular[b, skin_end:] = appearance.cloth_albedo(rng, everything[b, skin_end:])
        is_skin = (np.arange(everything_mm.shape[1]) < skin_end).astype(np.float32)
        attributes = np.concatenate(
            [
                everything_mm[..., 2:],
                normals,
                albedo,
                specular[..., None],
                occlusion[..., None],
                np.broadcast_to(is_skin[None, :, None], occlusion.shape + (1,)),
            ],
            axis=-1,
        )  # B x (V + A) x 10: z, normal, albedo, specular, occlusion, skin
        triangles = self._render(everything_mm, intrinsics.astype(np.float32)).numpy()  # B x N x N
        batch, pixel_rows, pixel_columns, values = interpolate_covered(
            everything_mm, self._faces, triangles, intrinsics, attributes
        )
        bounds = np.searchsorted(batch, np.arange(len(params) + 1))

        samples = []
        for b, p in enumerate(params):
            rng = rngs[b]
            background = appearance.srgb_to_linear(self.backgrounds.sample(rng, size).astype(np.float32) / 255.0)
            lighting = self._lighting(rng, skins[b], background)
            rows, columns = pixel_rows[bounds[b] : bounds[b + 1]], pixel_columns[bounds[b] : bounds[b + 1]]
            here = values[bounds[b] : bounds[b + 1]]  # covered pixels x 10
            covered = triangles[b] >= 0
            mask = covered & (triangles[b] < self._num_hand_faces)
            depth = np.zeros((size, size), np.float32)
            depth[rows, columns] = here[:, 0]
            if rng.uniform() < self.domain.skin_detail:
                detail = appearance.skin_detail(rng, size)[rows, columns]
                here[:, 4:7] *= (1.0 + (detail - 1.0) * here[:, 9])[:, None]  # on skin, not on cloth
            if self.domain.skin_texture[1] > 0:
                photo = self.backgrounds.sample(rng, size)
                detail = appearance.photo_texture(photo, rng.uniform(*self.domain.skin_texture), size / 256.0)
                here[:, 4:7] *= (1.0 + (detail[rows, columns] - 1.0) * here[:, 9])[:, None]
            colour = np.zeros((size, size, 3), np.float32)
            colour[rows, columns] = self._shade(rows, columns, here, intrinsics[b], lighting)  # linear
            everything_colour, everything_alpha = _soft_edges(colour, covered)
            alpha = everything_alpha[..., None]
            radiance = everything_colour * alpha + background * (1.0 - alpha)
            hand_colour, hand_alpha = _soft_edges(colour, mask)  # occluders only lower the alpha
            occluded = None
            if rng.uniform() < self.domain.occluder_probability and mask.any():
                cover, cover_colour = self._occluder(rng, mask)
                radiance = cover_colour * cover[..., None] + radiance * (1.0 - cover[..., None])
                hand_alpha = hand_alpha * (1.0 - cover)
                occluded = cover >= 0.5
                mask &= ~occluded
            if self.domain.cast_shadow_probability > 0 and rng.uniform() < self.domain.cast_shadow_probability:
                darkening = rng.uniform(*self.domain.cast_shadow_strength)
                radiance = radiance * (1.0 - darkening * appearance.cast_shadow(rng, size))[..., None]
            depth[~mask] = 0.0
            source_pixels = size * p.frame_intrinsics[0] / intrinsics[b, 0]  # the crop's side in the full frame
            image = apply_camera(rng, radiance, self.domain.camera, source_pixels)
            joints_xyz = keypoints_mm[b]
            samples.append(
                {
                    "image": image,
                    "image_rgba": np.concatenate(
                        [to_uint8(appearance.linear_to_srgb(hand_colour)), to_uint8(hand_alpha[..., None])], axis=-1
                    ),
                    "mask": mask,
                    "depth": depth,
                    "joints_uv": project(joints_xyz, intrinsics[b]).astype(np.float32),
                    "joints_xyz": joints_xyz.astype(np.float32),
                    "vertices_xyz": everything_mm[b, :hand],
                    "intrinsics": intrinsics[b].astype(np.float32),
                    "root_depth": np.float32(joints_xyz[ROOT_KEYPOINT, 2]),
                    "scale": np.float32(np.linalg.norm(joints_xyz[SCALE_BONE[0]] - joints_xyz[SCALE_BONE[1]])),
                    "is_left": p.is_left,
                    "pose": np.asarray(p.angles, np.float32),
                    "shape": np.asarray(p.shape, np.float32),
                    "camera": cameras[b].astype(np.float32),
                    "gesture": p.gesture,
                    "tone": skins[b].tone,
                }
            )
            if self.domain.sensor is not None:
                samples[-1]["sensor_depth"] = self._sensor_depth(p, rows, columns, here, intrinsics[b], occluded)
        return samples

    def _sensor_depth(
        self,
        params: SampleParams,
        rows: np.ndarray,
        columns: np.ndarray,
        values: np.ndarray,
        intrinsics: np.ndarray,
        occluded: np.ndarray | None,
    ) -> np.ndarray:
        """N x N float32 depth (mm, 0 = missing) the domain's sensor measures (module docstring,
        step 5): hand, forearm and sleeve at the covered pixels (`values` as in `render`), the
        sensor's background plane elsewhere; pixels an occluder hides are missing."""
        sensor = self.domain.sensor
        rng = np.random.default_rng([params.appearance_seed, _SENSOR_STREAM])
        rays = depth_sensor.pixel_rays(self.image_size, intrinsics)
        farthest = float(values[:, 0].max()) if len(values) else None
        depth, cosines = depth_sensor.background_plane(rng, rays, farthest, sensor)
        view = rays[rows, columns]
        normals = values[:, 1:4]
        lengths = np.linalg.norm(normals, axis=1) * np.linalg.norm(view, axis=1)
        depth[rows, columns] = values[:, 0]
        cosines[rows, columns] = np.abs(np.sum(normals * view, axis=1)) / np.maximum(lengths, 1e-6)
        measured = depth_sensor.sensor_depth(depth, cosines, 0.5 * (intrinsics[0] + intrinsics[1]), rng, sensor)
        if occluded is not None:
            measured[occluded] = 0.0
        return measured

    def _lighting(self, rng: np.random.Generator, skin: appearance.Skin, background: np.ndarray) -> appearance.Lighting:
        """The domain's lights for one sample, the ambient partly coloured by its background
        (N x N x 3 linear RGB)."""
        if self.domain.lighting == "studio":
            lighting = appearance.sample_lighting(rng, skin, self.domain.extra_light_probability)
        else:
            lighting = appearance.sample_indoor_lighting(rng, self.domain.light_tint)
        return appearance.environment_lighting(lighting, background, self.domain.environment_light)

    def _occluder(self, rng: np.random.Generator, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """An object in front of part of the hand: (N x N coverage in [0, 1], N x N x 3 linear colour).

        A filled ellipse, bar (a pen, a cup's handle, a strap) or polygon, 15-50% of the hand's
        bounding box in size, centred on a random hand pixel, textured with a background crop
        (or plain), shaded by a linear ramp, with anti-aliased edges."""
        size = self.image_size
        rows, columns = np.nonzero(mask)
        extent = max(rows.max() - rows.min(), columns.max() - columns.min()) + 1
        pick = int(rng.integers(len(rows)))
        centre = np.array([columns[pick], rows[pick]], np.float64) + 0.5
        radius = rng.uniform(*_OCCLUDER_SIZE) * extent / 2
        angle = rng.uniform(0, 180)
        cover = np.zeros((size, size), np.float32)
        kind = int(rng.integers(3))
        scale = 16  # cv2 sub-pixel shift: 4 bits
        if kind == 0:
            axes = (int(radius * scale), int(radius * rng.uniform(0.4, 1.0) * scale))
            cv2.ellipse(cover, tuple(int(c * scale) for c in centre), axes, angle, 0, 360, 1.0, -1, cv2.LINE_AA, 4)
        else:
            if kind == 1:  # a bar crossing the whole crop
                half = np.array([2.0 * size, radius * rng.uniform(0.15, 0.4)])
                corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * half
            else:
                count = int(rng.integers(3, 8))
                turns = np.sort(rng.uniform(0, 2 * np.pi, count))
                corners = np.stack([np.cos(turns), np.sin(turns)], 1) * radius * rng.uniform(0.5, 1.0, (count, 1))
            rotation = np.array(
                [
                    [np.cos(np.radians(angle)), -np.sin(np.radians(angle))],
                    [np.sin(np.radians(angle)), np.cos(np.radians(angle))],
                ]
            )
            points = ((corners @ rotation.T + centre) * scale).astype(np.int32)
            cv2.fillPoly(cover, [points], 1.0, cv2.LINE_AA, 4)
        if rng.uniform() < 0.6:
            texture = self.backgrounds.sample(rng, size).astype(np.float32) / 255.0
        else:
            texture = np.broadcast_to(rng.uniform(0.05, 0.95, 3).astype(np.float32), (size, size, 3))
        ramp_direction = rng.normal(size=2)
        grid = (np.mgrid[0:size, 0:size][::-1].transpose(1, 2, 0) + 0.5 - centre) / size  # N x N x 2 (x, y)
        ramp = np.clip(1.0 + rng.uniform(0.3, 1.5) * (grid @ ramp_direction), 0.3, 1.6).astype(np.float32)
        colour = appearance.srgb_to_linear(texture) * ramp[..., None] * rng.uniform(0.4, 1.2)
        return np.clip(cover, 0.0, 1.0), colour.astype(np.float32)

    @staticmethod
    def _shade(
        rows: np.ndarray,
        columns: np.ndarray,
        values: np.ndarray,
        intrinsics: np.ndarray,
        lighting: appearance.Lighting,
    ) -> np.ndarray:
        """M x 3 linear RGB radiance of covered pixels.

        Args:
          rows, columns: M pixel indices.
          values: M x 10 interpolated z, normal, albedo, specular, occlusion, skin.
          intrinsics: 4 crop intrinsics.
          lighting: the lights.
        """
        fx, fy, cx, cy = intrinsics
        view = -np.stack([(columns + 0.5 - cx) / fx, (rows + 0.5 - cy) / fy, np.ones(len(rows))], axis=1)
        view /= np.linalg.norm(view, axis=1, keepdims=True)
        normals = values[:, 1:4] / np.maximum(np.linalg.norm(values[:, 1:4], axis=1, keepdims=True), 1e-6)
        # Surfaces seen from behind (the inside of a sleeve) are lit as their visible side.
        normals *= np.where(np.sum(normals * view, axis=1, keepdims=True) < 0, -1.0, 1.0)
        return appearance.shade(normals, view, values[:, 4:7], values[:, 7], np.clip(values[:, 8], 0.0, 1.0), lighting)


def interpolate_covered(
    vertices: np.ndarray, faces: np.ndarray, triangle_ids: np.ndarray, intrinsics: np.ndarray, attributes: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Perspective-correct interpolation of vertex attributes at the covered pixel centres.

    The ray from the camera centre through a pixel centre, direction d = ((i + 0.5 - cx) / fx,
    (j + 0.5 - cy) / fy, 1), meets triangle (P0, P1, P2) at the point whose barycentric
    coordinates are proportional to the triple products d . (P_j x P_k), (i, j, k) cyclic. The
    cross products belong to the triangle, so a pixel costs one 3 x 3 product: the same
    coordinates as `handshape_tf.rendering.rasterize`'s (the tests compare them), without
    filling whole images.

    Args:
      vertices: B x V x 3 camera-frame positions.
      faces: F x 3 triangles.
      triangle_ids: B x N x N visible triangle per pixel (-1: none), from `rasterize`.
      intrinsics: B x 4 (fx, fy, cx, cy).
      attributes: B x V x K per-vertex values.

    Returns:
      (batch M, rows M, columns M, values M x K float32) of the M covered pixels, batch-major.
    """
    num_batch, num_vertices = vertices.shape[:2]
    height, width = triangle_ids.shape[1:]
    flat = triangle_ids.reshape(-1)
    covered = np.flatnonzero(flat >= 0)
    triangles = flat[covered]
    batch, pixel = np.divmod(covered, height * width)
    rows, columns = np.divmod(pixel, width)
    corners = np.asarray(vertices, np.float64)[:, faces]  # B x F x 3 x 3
    cross = np.cross(np.roll(corners, -1, axis=2), np.roll(corners, -2, axis=2))  # B x F x 3 x 3: P_j x P_k
    cross = np.take(cross.reshape(-1, 9), batch * len(faces) + triangles, axis=0).reshape(-1, 3, 3)  # M x 3 x 3
    fx, fy, cx, cy = np.asarray(intrinsics, np.float64).T
    ray_x = (columns + 0.5 - cx[batch]) / fx[batch]
    ray_y = (rows + 0.5 - cy[batch]) / fy[batch]
    weights = cross[:, :, 0] * ray_x[:, None] + cross[:, :, 1] * ray_y[:, None] + cross[:, :, 2]  # M x 3
    weights /= weights.sum(axis=1, keepdims=True)
    corner_ids = np.take(faces, triangles, axis=0) + (batch * num_vertices)[:, None]  # M x 3
    flat_attributes = np.asarray(attributes, np.float32).reshape(num_batch * num_vertices, -1)
    corner_values = np.take(flat_attributes, corner_ids, axis=0)  # M x 3 x K
    values = np.einsum("mi,mik->mk", weights.astype(np.float32), corner_values)
    return batch, rows, columns, values


def _soft_edges(colour: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Anti-aliased alpha of a pixel-centre mask and the colour under its soft edge.

    Args:
      colour: N x N x 3, valid where `mask`.
      mask: N x N bool.

    Returns:
      (N x N x 3 colour: `colour` inside the mask, the mean of the covered neighbours in the
      one-pixel band outside it, 0 elsewhere; N x N alpha, the mask blurred by a 3 x 3 tent).
    """
    coverage = mask.astype(np.float32)
    alpha = cv2.filter2D(coverage, -1, _ALPHA_KERNEL, borderType=cv2.BORDER_CONSTANT)
    inside = colour * coverage[..., None]
    spread = cv2.filter2D(inside, -1, _ALPHA_KERNEL, borderType=cv2.BORDER_CONSTANT)
    outside = ~mask & (alpha > 0)
    inside[outside] = spread[outside] / alpha[outside, None]
    return inside, alpha


# ---------------------------------------------------------------------------------------------
# Datasets.


def _check_positive_int(name: str, value: Any, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} is {value!r}; expected an int >= {minimum}")


def sample_rng(seed: int, index: int) -> np.random.Generator:
    """The random generator of sample `index` of a dataset seeded with `seed`."""
    return np.random.default_rng([int(seed), int(index)])


def render_range(
    renderer: HandRenderer, seed: int, start: int, count: int, views: str = "full"
) -> Iterator[dict[str, Any]]:
    """Samples start .. start + count - 1 of the dataset seeded with `seed`, rendered in batches."""
    for first in range(start, start + count, RENDER_BATCH):
        indices = range(first, min(first + RENDER_BATCH, start + count))
        yield from renderer.render(
            [sample_params(sample_rng(seed, i), renderer.templates, views, renderer.domain) for i in indices]
        )


def resolve_backgrounds(domain: Domain, backgrounds: str | Path | None) -> tuple[str | None, str | None]:
    """(folder, split) the domain's backgrounds come from: the user's folder (split by photo)
    when given, else the photo bank's part for "photos" (built on first use), else (None, None)
    for procedural textures.

    Raises:
      PhotoBankError: the bank is needed and cannot be built.
    """
    if backgrounds is not None:
        return str(Path(backgrounds).expanduser().resolve()), domain.photo_split
    if domain.backgrounds == "procedural":
        return None, None
    from handshape_tf.data.photo_bank import ensure_bank

    return str(ensure_bank() / domain.photo_split), None


@dataclasses.dataclass(frozen=True)
class ShardTask:
    """One shard to render: samples start .. start + count - 1 of the dataset seeded with `seed`,
    written to `folder` / `shards.shard_name(index, num_shards)`, backgrounds from the folder
    `backgrounds` (None: procedural) and its `split`, camera views from the distribution `views`,
    in the built-in domain named `domain`."""

    folder: str
    index: int
    num_shards: int
    start: int
    count: int
    seed: int
    image_size: int
    backgrounds: str | None
    views: str = "full"
    domain: str = PHOTO.name
    split: str | None = None


_WORKER_RENDERERS: dict[tuple, HandRenderer] = {}


def _init_worker() -> None:
    """Spawned worker: one TensorFlow and OpenCV thread (deterministic, no oversubscription).
    TensorFlow's start-up notices are dropped unless TF_CPP_MIN_LOG_LEVEL is 0 (--verbose)."""
    quiet = os.environ.get("TF_CPP_MIN_LOG_LEVEL") != "0"
    with filtered_stderr() if quiet else contextlib.nullcontext():
        import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    cv2.setNumThreads(1)


class ShardResult(NamedTuple):
    """A written shard: its index, samples, unreadable backgrounds skipped while rendering it,
    and the CPU seconds its process spent on it."""

    index: int
    count: int
    skipped_backgrounds: int
    cpu_seconds: float


def _run_shard(task: ShardTask) -> ShardResult:
    """Renders and writes one shard."""
    start = time.process_time()
    key = (task.image_size, task.backgrounds, task.split, task.domain)
    renderer = _WORKER_RENDERERS.get(key)
    if renderer is None:
        renderer = HandRenderer(
            task.image_size, BackgroundSource(task.backgrounds, split=task.split), get_domain(task.domain)
        )
        _WORKER_RENDERERS[key] = renderer
    skipped = renderer.backgrounds.num_skipped
    path = Path(task.folder) / shards.shard_name(task.index, task.num_shards)
    samples = render_range(renderer, task.seed, task.start, task.count, task.views)
    count = shards.write_shard(path, samples, stored_fields(renderer.domain))
    return ShardResult(task.index, count, renderer.backgrounds.num_skipped - skipped, time.process_time() - start)


@contextlib.contextmanager
def single_threaded_children() -> Iterator[None]:
    """Sets BLAS/OpenMP thread counts to 1 for processes spawned inside (not overriding the user's)."""
    names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    added = [name for name in names if name not in os.environ]
    for name in added:
        os.environ[name] = "1"
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def _prepare_folder(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"output folder {out_dir} is a file; expected a folder (or a path to create)")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".write-test-"):
            pass
    except OSError as error:
        raise PermissionError(f"output folder {out_dir} is not writable ({error.strerror or error})") from None


def stored_fields(domain: Domain) -> tuple[str, ...]:
    """The shard fields of the domain's samples: `shards.SYNTHETIC_FIELDS`, plus sensor_depth
    with a depth sensor."""
    return shards.SYNTHETIC_FIELDS + (("sensor_depth",) if domain.sensor is not None else ())


# metadata.json keys that must match to resume a folder (with their value in older folders).
_RESUME_KEYS = (
    "generator_version",
    "template_version",
    "seed",
    "num_samples",
    "samples_per_shard",
    "image_size",
    "backgrounds",
    "views",
    "domain",
    "domain_values",
    "sensor",
)
_RESUME_DEFAULTS = {"views": "full"}


def _dataset_config(num_samples, seed, image_size, samples_per_shard, backgrounds, views, domain) -> dict[str, Any]:
    template = load_template()
    sensor = (
        {}
        if domain.sensor is None
        else {
            "sensor": domain.as_dict()["sensor"],
            "sensor_depth_unit_mm": shards.SENSOR_DEPTH_UNIT_MM,
        }
    )
    return {
        "generator": "handshape_tf.data.synthetic",
        "generator_version": GENERATOR_VERSION,
        "template_version": TEMPLATE_VERSION,
        "seed": int(seed),
        "num_samples": int(num_samples),
        "samples_per_shard": int(samples_per_shard),
        "image_size": int(image_size),
        "backgrounds": None if backgrounds is None else str(Path(backgrounds).expanduser().resolve()),
        "views": views,
        "domain": domain.name,
        "domain_values": domain.as_dict(),
        "num_vertices": int(template.num_vertices),
        "pose_size": NUM_POSE_PARAMETERS,
        "shape_size": NUM_SHAPE_PARAMETERS,
        "pose_parameters": list(POSE_PARAMETER_NAMES),
        "shape_parameters": list(SHAPE_PARAMETER_NAMES),
        "depth_unit_mm": shards.DEPTH_UNIT_MM,
        "fields": list(stored_fields(domain)),
        **sensor,
        "camera_convention": "OpenCV: x right, y down, z forward, mm; pixel centres at i + 0.5",
    }


def generate_dataset(
    out_dir: str | Path,
    num_samples: int,
    *,
    seed: int = 0,
    image_size: int = 256,
    workers: int = 2,
    samples_per_shard: int = 256,
    progress: bool = True,
    backgrounds: str | Path | None = None,
    views: str = "full",
    domain: str = PHOTO.name,
) -> dict[str, Any]:
    """Renders a synthetic dataset into shards (resumable; see the module docstring).

    Args:
      out_dir: the dataset folder (created if needed).
      num_samples: number of samples, > 0.
      seed: dataset seed, >= 0.
      image_size: square crop size N in pixels (>= 32).
      workers: processes rendering shards in parallel (spawned, 1 TF thread each); 0 renders
        in this process (for tests and debugging; the samples are the same).
      samples_per_shard: samples per shard file (the last one may be smaller).
      progress: show a tqdm progress bar.
      backgrounds: a folder of photos to crop backgrounds from (its `domain.photo_split` part), or
        None for the domain's own (the photo bank, or procedural textures).
      views: the camera view distribution, "full" or "frontal" (module docstring, step 2).
      domain: the image domain's name (`handshape_tf.data.domains.get_domain`).

    Returns:
      The metadata written to `metadata.json` (counts, seed, generator version, image size,
      the complete shards and their sample counts).

    Raises:
      ValueError: num_samples, seed, image_size, samples_per_shard or workers out of range, an
        unknown views, or the
        folder holds a dataset generated with other arguments.
      NotADirectoryError: out_dir is a file.  PermissionError: out_dir is not writable.
      BackgroundError: the background folder is missing or holds no images.
      PhotoBankError: the domain needs the photo bank and it cannot be built.
      WorkerDied: a worker process died; the shards written are kept (rerun to complete the set).
    """
    _check_positive_int("num_samples", num_samples)
    _check_positive_int("seed", seed, 0)
    _check_positive_int("image_size", image_size, MIN_IMAGE_SIZE)
    _check_positive_int("samples_per_shard", samples_per_shard)
    _check_positive_int("workers", workers, 0)
    if views not in VIEWS:
        raise ValueError(f"views={views!r}; expected one of {list(VIEWS)}")
    resolved = get_domain(domain)
    if backgrounds is not None:
        BackgroundSource(backgrounds, split=resolved.photo_split)  # fails now on a missing or empty folder
    out_dir = Path(out_dir).expanduser()
    _prepare_folder(out_dir)

    config = _dataset_config(num_samples, seed, image_size, samples_per_shard, backgrounds, views, resolved)
    counts = shards.plan_shards(num_samples, samples_per_shard)
    names, num_shards = list(counts), len(counts)
    shards.check_resumable(out_dir, config, _RESUME_KEYS, _RESUME_DEFAULTS)
    done = shards.complete_shards(out_dir, counts)

    def metadata() -> dict[str, Any]:
        return shards.folder_metadata(config, counts, done)

    shards.write_metadata(out_dir, metadata())
    if len(done) == num_shards:
        logger.info("%s: all %d shards present; nothing to do", out_dir, num_shards)
        return metadata()
    folder, split = resolve_backgrounds(resolved, backgrounds)
    tasks = [
        ShardTask(
            str(out_dir),
            i,
            num_shards,
            i * samples_per_shard,
            counts[name],
            int(seed),
            int(image_size),
            folder,
            views,
            domain,
            split,
        )
        for i, name in enumerate(names)
        if name not in done
    ]
    logger.info(
        "%s: rendering %d of %d shards (%d samples) with %d workers",
        out_dir,
        len(tasks),
        num_shards,
        sum(t.count for t in tasks),
        workers,
    )

    from tqdm import tqdm

    skipped = 0
    with tqdm(
        total=num_samples,
        initial=num_samples - sum(t.count for t in tasks),
        unit="sample",
        disable=not progress,
        desc="rendering",
    ) as bar:
        for result in render_shards(tasks, workers):
            done.add(names[result.index])
            skipped += result.skipped_backgrounds
            shards.write_metadata(out_dir, metadata())
            bar.update(result.count)
    if skipped:
        logger.warning("%d unreadable background images were skipped", skipped)
    return metadata()


class WorkerDied(shards.DatasetError):
    """A rendering worker process died (killed, e.g. for memory) before writing the shards named
    in `shards`; the shards written before are complete and kept, so a rerun of the same command
    renders only the missing ones."""

    def __init__(self, folder: str, names: Sequence[str], exit_codes: Sequence[int]):
        self.folder, self.shards = folder, list(names)
        causes = "; ".join(_describe_exit(code) for code in exit_codes) or "exit status unknown"
        listed = ", ".join(self.shards[:8]) + (f" and {len(self.shards) - 8} more" if len(self.shards) > 8 else "")
        super().__init__(
            f"a rendering worker process died ({causes}) before {len(self.shards)} shard(s) of {folder} were "
            f"written: {listed}. The shards written so far are kept; run the same command again to render the "
            "missing ones"
        )


def _describe_exit(code: int) -> str:
    if code == -signal.SIGKILL:
        return "killed by SIGKILL, e.g. by the out-of-memory killer: try fewer workers"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


def render_shards(tasks: Sequence[ShardTask], workers: int) -> Iterator[ShardResult]:
    """Renders and writes shards, in this process (workers = 0) or in `workers` spawned processes
    with one TensorFlow thread each. Yields a ShardResult as each shard completes.

    A worker that dies (SIGKILL, the out-of-memory killer, a crash in native code) fails the whole
    call at once with `WorkerDied` naming the shards not written; whenever the call ends early,
    the other workers are stopped and the unfinished shards' temporary files removed.
    """
    if workers == 0:
        for task in tasks:
            yield _run_shard(task)
        return
    context = multiprocessing.get_context("spawn")
    with single_threaded_children():  # workers are spawned while tasks are submitted
        executor = ProcessPoolExecutor(min(workers, len(tasks)), mp_context=context, initializer=_init_worker)
        futures = {executor.submit(_run_shard, task): task for task in tasks}
    # The worker processes, to end them early (the executor only ends them when one dies): all
    # spawned by now, one per submit up to max_workers <= len(tasks).
    processes = list(executor._processes.values())
    finished: set[int] = set()
    try:
        for future in as_completed(futures):
            try:
                result = future.result()
            except BrokenProcessPool:
                _stop(executor, processes)
                folder = tasks[0].folder
                names = [shards.shard_name(t.index, t.num_shards) for t in tasks if t.index not in finished]
                names = [name for name in names if not (Path(folder) / name).exists()]
                codes = sorted({p.exitcode for p in processes if p.exitcode not in (None, 0, -signal.SIGTERM)})
                raise WorkerDied(folder, names, codes) from None
            finished.add(result.index)
            yield result
    finally:
        if len(finished) < len(tasks):
            _stop(executor, processes)
            for task in tasks:
                if task.index not in finished:
                    tmp = Path(task.folder) / (shards.shard_name(task.index, task.num_shards) + ".tmp")
                    tmp.unlink(missing_ok=True)
        executor.shutdown(wait=True)


def _stop(executor: ProcessPoolExecutor, processes: Sequence[multiprocessing.process.BaseProcess]) -> None:
    """Cancels the tasks not started and ends the workers (they may be mid-shard), waiting for them."""
    executor.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.exitcode is None:
            process.terminate()
    for process in processes:
        process.join()


# ---------------------------------------------------------------------------------------------
# Command line.


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m handshape_tf.data.synthetic", description=__doc__.split("\n")[0])
    parser.add_argument("--num", type=int, required=True, help="number of samples")
    parser.add_argument("--out", type=Path, required=True, help="dataset folder (created; resumed if present)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=256, help="crop size in pixels")
    parser.add_argument("--workers", type=int, default=2, help="parallel processes (0: this process)")
    parser.add_argument("--samples-per-shard", type=int, default=256)
    parser.add_argument(
        "--backgrounds",
        type=Path,
        default=None,
        help="folder of photos for backgrounds (its train or test part, by the domain; default: the "
        "domain's own, the photo bank or procedural textures)",
    )
    parser.add_argument(
        "--domain",
        default=PHOTO.name,
        help="image domain: photo (default), procedural, unseen or real_like; append "
        "-without-EFFECT[-EFFECT] to switch effects off (handshape_tf.data.domains)",
    )
    parser.add_argument(
        "--views",
        choices=VIEWS,
        default="full",
        help="camera views: full sphere (default) or frontal (palm or back towards the camera, fingers up +-60 deg)",
    )
    parser.add_argument("--preview", action="store_true", help="also write DIR/preview.png (a contact sheet)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_verbose_argument(parser)
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    from handshape_tf.data.photo_bank import PhotoBankError

    try:
        metadata = generate_dataset(
            args.out,
            args.num,
            seed=args.seed,
            image_size=args.size,
            workers=args.workers,
            samples_per_shard=args.samples_per_shard,
            progress=not args.quiet,
            backgrounds=args.backgrounds,
            views=args.views,
            domain=args.domain,
        )
    except (ValueError, OSError, PhotoBankError) as error:
        parser.exit(2, f"error: {error}\n")
    logger.info("%s: %d samples in %d shards", args.out, metadata["num_complete_samples"], len(metadata["shards"]))
    if args.preview:
        from handshape_tf.data.preview import write_preview

        path = write_preview(args.out, args.out / "preview.png")
        logger.info("preview: %s", path)
    return 0


if __name__ == "__main__":
    # Run the imported module's main, so spawned workers unpickle functions by their real name.
    from handshape_tf.data.synthetic import main as _main

    sys.exit(_main())
