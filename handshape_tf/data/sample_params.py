"""Sample parameters: everything that determines one synthetic sample, drawn from one random generator.

Shape shorthand: V mesh vertices (1159), R rig joints (25), J keypoints (21), P pose parameters (23),
S shape parameters (14), N image size.

`sample_params` draws a `SampleParams` (`handshape_tf.data.renderer.HandRenderer` turns a batch
of them into images and labels):

1. Hand: right or left (50/50; the left hand is the mirrored template posed with mirrored
   rotations, so the same pose angles mean the same anatomical pose), shape factors from
   `hand_shapes.sample_shape` (adults and children, finger and palm proportions), a
   collision-free pose from `hand_poses.sample_pose` (half gestures, half the random prior);
   the renderer poses it by forward kinematics + linear blend skinning
   (`geometry.skinning.pose_hand`) and the 21 keypoints follow the shaped rig.
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

From the parameters and the posed mesh, `camera_transform` gives the camera, `crop_intrinsics`
the crop's intrinsics and `project` the pixels; `mirror_params` gives a sample's mirror image.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from handshape_tf.assets.template import HandTemplate
from handshape_tf.data.domains import CAMERA_MODELS, PHOTO, REALSENSE_FRAME, REALSENSE_INTRINSICS, Domain
from handshape_tf.data.hand_poses import joint_positions, palm_axes, sample_pose
from handshape_tf.data.hand_shapes import sample_shape, shape_template

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
