"""Anatomical hand poses for the synthetic dataset: joint angles, gestures and a random prior.

Shape shorthand: R rig joints (25), P pose parameters (23), S capsule segments (14).

A pose is P joint angles in degrees (`POSE_PARAMETERS`), each a rotation about one local axis
of one rig joint, RELATIVE TO THE TEMPLATE'S REST POSE. WebXR joint frames have -z along the
bone towards the fingertip and +y out of the back of the hand / the nail (checked numerically
on the template: a rotation of +30 deg about the index MCP's local x moves the fingertip 41 mm
towards the back of the hand, +x in the model frame, where the palm faces -x), so

  flexion   (towards the palm)        = rotation by -angle about local x,
  abduction (spreading, see below)    = rotation by +-angle about local y (+ is radial),
  pronation (thumb CMC axial turn)    = rotation by +angle about local z (the bone axis).

A joint with several angles gets L = R_flexion @ R_abduction @ R_pronation: abduction and
pronation in the joint's rest frame, then flexion about the rest flexion axis.

The rest pose is close to anatomical neutral: fingers straight (MCPs 5-9 deg flexed, DIPs 3-10
deg hyperextended), fingers slightly spread, the thumb metacarpal 35 deg from the index
metacarpal and 30 deg out of the palm plane (about half-way to full palmar abduction), thumb MCP
and IP ~10 deg hyperextended. Ranges relative to rest, degrees (normal active ranges of motion
from the AAOS / American Medical Association tables; thumb CMC from Cooney et al. 1981, "The
kinesiology of the thumb trapeziometacarpal joint", J Bone Joint Surg 63A, which measured arcs
of about 53 deg flexion-extension, 42 deg abduction-adduction and 17 deg axial rotation):

  finger MCP flexion      -20 .. 90   (AAOS: 0-90 flexion; passive hyperextension varies,
                          20-45; rest is ~5-9 deg flexed)
  finger MCP abduction    index -10..25, middle -15..15, ring -10..20, little -10..30
                          (+ = spread away from the middle finger; middle: + = radial).
                          Adduction past rest is limited by the neighbouring finger; the
                          random prior narrows abduction as the MCP flexes (collateral
                          ligaments are taut in flexion, so flexed fingers converge).
  finger PIP flexion        0 .. 110  (AAOS 100, up to 110-120 measured actively)
  finger DIP flexion        0 .. 85   (AAOS 90; rest is ~8 deg hyperextended)
  ring / little CMC flex    0 .. 10 / 0 .. 20  (the mobile 4th/5th carpometacarpal joints,
                          which cup the palm; index and middle CMCs are practically rigid)
  thumb CMC flexion       -25 .. 45   (+ = across the palm towards the little finger;
                          - = radial abduction / extension)
  thumb CMC abduction     -25 .. 35   (+ = palmar abduction, out of the palm plane)
  thumb CMC pronation     -10 .. 25   (axial rotation that turns the pad towards the fingers
                          in opposition; Cooney: ~17 deg arc, more with the MCP's own rotation)
  thumb MCP flexion        -5 .. 65   (AAOS 0..50, many hands 60-80; rest ~10 hyperextended)
  thumb IP flexion        -10 .. 85   (AAOS -15..80)

Left hands: the mirrored template's frames are F T F with F = diag(-1, 1, 1); posing it with
F L F gives the mirror image of the right hand posed with L, so the same angles mean the same
anatomical pose on either hand (`pose_rotations` does the conjugation).

Sampling (`sample_pose`) mixes a gesture library (`GESTURES`, with per-angle Gaussian noise)
and a joint-limited random prior with correlated curls; poses whose fingers intersect each
other or the palm are rejected and redrawn (`pose_collisions`: capsules along the phalanges
with radii measured from the template mesh, and a slab for the palm). One pose takes ~0.7 ms
(numpy, 1.5 draws on average), ~2 ms with a freshly shaped template (capsules re-measured).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from scipy.special import ndtr

from handshape_tf.assets.template import RIG_JOINT_NAMES, HandTemplate

FINGERS = ("thumb", "index", "middle", "ring", "little")
# WebXR joint names of each finger start with these.
WEBXR_FINGER_PREFIX = {
    "thumb": "thumb",
    "index": "index-finger",
    "middle": "middle-finger",
    "ring": "ring-finger",
    "little": "pinky-finger",
}


def _joint(finger: str, part: str) -> int:
    return RIG_JOINT_NAMES.index(f"{WEBXR_FINGER_PREFIX[finger]}-{part}")


@dataclasses.dataclass(frozen=True)
class PoseParameter:
    """One anatomical angle: a rotation of `joint` about its local `axis`.

    Attributes:
      name: e.g. "index_pip_flex".
      joint: rig joint index whose local rotation it sets.
      axis: 0, 1, 2 for the local x, y, z axis.
      sign: rotation angle = sign * parameter (flexion is -x, radial abduction +y).
      low: lower limit, degrees.
      high: upper limit, degrees.
    """

    name: str
    joint: int
    axis: int
    sign: float
    low: float
    high: float


def _pose_parameters() -> tuple[PoseParameter, ...]:
    thumb = (
        PoseParameter("thumb_cmc_flex", _joint("thumb", "metacarpal"), 0, -1.0, -25.0, 45.0),
        PoseParameter("thumb_cmc_abd", _joint("thumb", "metacarpal"), 1, 1.0, -25.0, 35.0),
        PoseParameter("thumb_cmc_pron", _joint("thumb", "metacarpal"), 2, 1.0, -10.0, 25.0),
        PoseParameter("thumb_mcp_flex", _joint("thumb", "phalanx-proximal"), 0, -1.0, -5.0, 65.0),
        PoseParameter("thumb_ip_flex", _joint("thumb", "phalanx-distal"), 0, -1.0, -10.0, 85.0),
    )
    # (abduction sign, abduction low, abduction high, CMC flexion high or None)
    fingers = {
        "index": (1.0, -10.0, 25.0, None),
        "middle": (1.0, -15.0, 15.0, None),
        "ring": (-1.0, -10.0, 20.0, 10.0),
        "little": (-1.0, -10.0, 30.0, 20.0),
    }
    params = list(thumb)
    for finger, (abd_sign, abd_low, abd_high, cmc_high) in fingers.items():
        if cmc_high is not None:
            params.append(PoseParameter(f"{finger}_cmc_flex", _joint(finger, "metacarpal"), 0, -1.0, 0.0, cmc_high))
        mcp = _joint(finger, "phalanx-proximal")
        params += [
            PoseParameter(f"{finger}_mcp_flex", mcp, 0, -1.0, -20.0, 90.0),
            PoseParameter(f"{finger}_mcp_abd", mcp, 1, abd_sign, abd_low, abd_high),
            PoseParameter(f"{finger}_pip_flex", _joint(finger, "phalanx-intermediate"), 0, -1.0, 0.0, 110.0),
            PoseParameter(f"{finger}_dip_flex", _joint(finger, "phalanx-distal"), 0, -1.0, 0.0, 85.0),
        ]
    return tuple(params)


POSE_PARAMETERS = _pose_parameters()
POSE_PARAMETER_NAMES = tuple(p.name for p in POSE_PARAMETERS)
NUM_POSE_PARAMETERS = len(POSE_PARAMETERS)
POSE_LIMITS_DEG = np.array([(p.low, p.high) for p in POSE_PARAMETERS], np.float32)  # P x 2
_INDEX = {name: i for i, name in enumerate(POSE_PARAMETER_NAMES)}
_JOINT = np.array([p.joint for p in POSE_PARAMETERS])
_AXIS = np.array([p.axis for p in POSE_PARAMETERS])
_SIGN = np.array([p.sign for p in POSE_PARAMETERS])
# Within a joint the product is flexion (x) @ abduction (y) @ pronation (z): sort by axis.
_ORDER = np.lexsort((_AXIS, _JOINT))
_MIRROR = np.diag([-1.0, 1.0, 1.0])


class HandPose(NamedTuple):
    """A sampled pose.

    Attributes:
      rotations: R x 3 x 3 float32 local joint rotations for `pose_hand`.
      angles: P float32 anatomical angles, degrees (`POSE_PARAMETER_NAMES` order).
      gesture: the gesture it was drawn from, or "random" for the random prior.
    """

    rotations: np.ndarray
    angles: np.ndarray
    gesture: str


def pose_rotations(angles, template: HandTemplate) -> np.ndarray:
    """Local joint rotations of anatomical angles.

    Args:
      angles: P angles in degrees (`POSE_PARAMETER_NAMES` order).
      template: the (right or mirrored left) template the rotations are for.

    Returns:
      R x 3 x 3 float32 local rotations (identity for joints without a parameter).
    """
    angles = np.asarray(angles, np.float64)
    if angles.shape != (NUM_POSE_PARAMETERS,):
        raise ValueError(f"angles has shape {angles.shape}; expected ({NUM_POSE_PARAMETERS},)")
    radians = np.radians(angles) * _SIGN
    cos, sin = np.cos(radians), np.sin(radians)
    elementary = np.tile(np.eye(3), (NUM_POSE_PARAMETERS, 1, 1))  # P x 3 x 3
    index = np.arange(NUM_POSE_PARAMETERS)
    first, second = (_AXIS + 1) % 3, (_AXIS + 2) % 3
    elementary[index, first, first] = cos
    elementary[index, second, second] = cos
    elementary[index, first, second] = -sin
    elementary[index, second, first] = sin
    rotations = np.tile(np.eye(3), (len(template.joint_names), 1, 1))
    for p in _ORDER:
        rotations[_JOINT[p]] = rotations[_JOINT[p]] @ elementary[p]
    if template.is_left:
        rotations = _MIRROR @ rotations @ _MIRROR
    return rotations.astype(np.float32)


def joint_positions(template: HandTemplate, rotations) -> np.ndarray:
    """Posed rig joint positions (numpy forward kinematics, no global transform).

    The same kinematics as `handshape_tf.geometry.skinning.forward_kinematics`, for one pose
    without TensorFlow, fast enough for rejection sampling.

    Args:
      template: the hand template (joint tree and rest frames).
      rotations: R x 3 x 3 local rotations.

    Returns:
      R x 3 posed joint positions in the model frame.
    """
    rest = template.rest_transforms.astype(np.float64)
    rotations = np.asarray(rotations, np.float64)
    if rotations.shape != (len(rest), 3, 3):
        raise ValueError(f"rotations has shape {rotations.shape}; expected ({len(rest)}, 3, 3)")
    frames = np.empty((len(rest), 3, 3))
    positions = np.empty((len(rest), 3))
    for joint, parent in enumerate(template.joint_parents):
        if parent < 0:
            frames[joint] = rest[joint, :3, :3] @ rotations[joint]
            positions[joint] = rest[joint, :3, 3]
            continue
        # Posed frame: parent's posed frame times the rest offset inv(T_parent) T_joint times L.
        to_parent = frames[parent] @ rest[parent, :3, :3].T
        frames[joint] = to_parent @ rest[joint, :3, :3] @ rotations[joint]
        positions[joint] = positions[parent] + to_parent @ (rest[joint, :3, 3] - rest[parent, :3, 3])
    return positions


# ---------------------------------------------------------------------------------------------
# Collision check: capsules along the phalanges and a slab for the palm.

# Capsules of different fingers may overlap by this fraction of the sum of their radii (soft
# tissue gives way where fingers press together); a finger may sink this fraction of its
# radius into the palm's skin (fingertips pressing into the palm of a fist).
CAPSULE_OVERLAP = 0.25
PALM_PENETRATION = 0.5


def _chain(finger: str) -> list[int]:
    """Rig joints of a finger from its MCP joint to its tip."""
    parts = (
        ("phalanx-proximal", "phalanx-distal", "tip")
        if finger == "thumb"
        else ("phalanx-proximal", "phalanx-intermediate", "phalanx-distal", "tip")
    )
    return [_joint(finger, part) for part in parts]


_SEGMENTS = np.array([(a, b) for f in FINGERS for a, b in zip(_chain(f)[:-1], _chain(f)[1:])])  # S x 2
_SEGMENT_FINGER = np.array([f for f, name in enumerate(FINGERS) for _ in range(len(_chain(name)) - 1)])
_FIRST, _SECOND = np.triu_indices(len(_SEGMENTS), k=1)
_PAIRS = np.stack([_FIRST, _SECOND], axis=1)[_SEGMENT_FINGER[_FIRST] != _SEGMENT_FINGER[_SECOND]]  # Q x 2
# Points tested against the palm: along the segments past the MCP (fractions of each segment).
_PALM_TEST_FRACTIONS = np.linspace(0.0, 1.0, 4)
_PALM_TEST_SEGMENTS = np.flatnonzero(~np.isin(_SEGMENTS[:, 0], [_joint(f, "phalanx-proximal") for f in FINGERS[1:]]))
_WRIST = RIG_JOINT_NAMES.index("wrist")
_PALM_JOINTS = (_WRIST,) + tuple(_joint(f, "metacarpal") for f in FINGERS[1:])
_INDEX_MCP, _MIDDLE_MCP, _LITTLE_MCP = (_joint(f, "phalanx-proximal") for f in ("index", "middle", "little"))


@dataclasses.dataclass(frozen=True)
class HandCapsules:
    """Capsules of a template's phalanges and the thickness of its palm.

    Attributes:
      radii: S capsule radii (metres) of `_SEGMENTS`, the median distance of the vertices a
        bone mostly drives from that bone.
      palmar_depth: distance of the palm's skin below the wrist-MCP plane, metres.
      dorsal_depth: distance of the back of the hand above that plane, metres.
      is_left: whether the template is a left hand (flips the palm normal).
    """

    radii: np.ndarray
    palmar_depth: float
    dorsal_depth: float
    is_left: bool


@functools.lru_cache(maxsize=8)
def hand_capsules(template: HandTemplate) -> HandCapsules:
    """Measures the capsule radii and palm thickness of a (rest pose) template (cached)."""
    joints = template.joint_positions.astype(np.float64)
    vertices = template.vertices.astype(np.float64)
    owner = np.argmax(template.skin_weights, axis=1)
    radii = np.empty(len(_SEGMENTS))
    for s, (a, b) in enumerate(_SEGMENTS):
        points = vertices[owner == a]
        axis = joints[b] - joints[a]
        t = np.clip((points - joints[a]) @ axis / (axis @ axis), 0.0, 1.0)
        radii[s] = np.median(np.linalg.norm(points - joints[a] - t[:, None] * axis, axis=1))
    palm = _palm_coordinates(joints, vertices[np.isin(owner, _PALM_JOINTS)], template.is_left)
    depth = palm[_inside_palm(palm, joints, template.is_left), 2]
    return HandCapsules(
        radii=radii,
        palmar_depth=float(np.percentile(depth[depth > 0], 25)),
        dorsal_depth=float(np.percentile(-depth[depth < 0], 25)),
        is_left=template.is_left,
    )


def palm_axes(joints: np.ndarray, is_left: bool = False) -> np.ndarray:
    """3 x 3 orthonormal palm axes (rows) of posed rig joints R x 3.

    Rows: towards the middle MCP from the wrist (distal), towards the index side (radial), out
    of the palm (palmar). The left hand's axes are the mirror images of the right's.
    """
    distal = joints[_MIDDLE_MCP] - joints[_WRIST]
    distal = distal / np.linalg.norm(distal)
    radial = joints[_INDEX_MCP] - joints[_LITTLE_MCP]
    radial = radial - (radial @ distal) * distal
    radial = radial / np.linalg.norm(radial)
    # A cross product is not mirror-symmetric: flip it for the left hand.
    palmar = np.cross(radial, distal) * (-1.0 if is_left else 1.0)
    return np.stack([distal, radial, palmar])


def _palm_coordinates(joints: np.ndarray, points: np.ndarray, is_left: bool) -> np.ndarray:
    """N x 3 coordinates of points in the palm frame (origin at the wrist, `palm_axes`)."""
    return (points - joints[_WRIST]) @ palm_axes(joints, is_left).T


def _inside_palm(coordinates: np.ndarray, joints: np.ndarray, is_left: bool) -> np.ndarray:
    """Whether palm coordinates N x 3 lie over the palm.

    Over the palm: between the index and little MCPs across, and from 20% of the wrist-MCP
    distance (nearer the wrist the thenar and hypothenar eminences rise) to the MCP line.
    """
    mcps = _palm_coordinates(joints, joints[[_INDEX_MCP, _LITTLE_MCP]], is_left)
    length = mcps[:, 0].min()
    return (
        (coordinates[:, 0] > 0.2 * length)
        & (coordinates[:, 0] < length)
        & (coordinates[:, 1] > mcps[1, 1])
        & (coordinates[:, 1] < mcps[0, 1])
    )


def _segment_distances(p0: np.ndarray, p1: np.ndarray, q0: np.ndarray, q1: np.ndarray) -> np.ndarray:
    """Q closest distances between segments p0-p1 and q0-q1 (each Q x 3)."""
    d1, d2, r = p1 - p0, q1 - q0, p0 - q0
    a = np.einsum("ij,ij->i", d1, d1)
    e = np.einsum("ij,ij->i", d2, d2)
    b = np.einsum("ij,ij->i", d1, d2)
    c = np.einsum("ij,ij->i", d1, r)
    f = np.einsum("ij,ij->i", d2, r)
    denominator = a * e - b * b
    # Closest point on the infinite lines, clamped to the first segment (parallel: start).
    s = np.where(denominator > 1e-12 * a * e, np.clip((b * f - c * e) / np.maximum(denominator, 1e-30), 0, 1), 0)
    t = (b * s + f) / e
    # Clamp t to the second segment and recompute s for the clamped t.
    t = np.clip(t, 0, 1)
    s = np.clip((b * t - c) / a, 0, 1)
    return np.linalg.norm(r + s[:, None] * d1 - t[:, None] * d2, axis=1)


def pose_collisions(joints: np.ndarray, capsules: HandCapsules) -> list[str]:
    """Finger-finger and finger-palm intersections of a posed hand.

    Two capsules of different fingers collide when their bones are closer than
    (1 - CAPSULE_OVERLAP) times the sum of their radii; a point of a finger past the proximal
    phalanx (the thumb's proximal and distal phalanges) collides with the palm when it lies over
    the palm and its capsule sinks more than PALM_PENETRATION radii into the palm's slab.

    Args:
      joints: R x 3 posed rig joint positions (`joint_positions`).
      capsules: the template's capsules (`hand_capsules`).

    Returns:
      Descriptions of the collisions found; empty when the pose is valid.
    """
    starts, ends = joints[_SEGMENTS[:, 0]], joints[_SEGMENTS[:, 1]]
    first, second = _PAIRS[:, 0], _PAIRS[:, 1]
    distance = _segment_distances(starts[first], ends[first], starts[second], ends[second])
    limit = (1.0 - CAPSULE_OVERLAP) * (capsules.radii[first] + capsules.radii[second])
    found = [
        f"{RIG_JOINT_NAMES[_SEGMENTS[i, 0]]} hits {RIG_JOINT_NAMES[_SEGMENTS[j, 0]]} "
        f"({distance[q] * 1000:.1f} mm < {limit[q] * 1000:.1f} mm)"
        for q, (i, j) in enumerate(_PAIRS)
        if distance[q] < limit[q]
    ]
    segments = _PALM_TEST_SEGMENTS
    fractions = _PALM_TEST_FRACTIONS[None, :, None]
    points = (starts[segments, None] * (1 - fractions) + ends[segments, None] * fractions).reshape(-1, 3)
    radii = np.repeat(capsules.radii[segments], len(_PALM_TEST_FRACTIONS))
    palm = _palm_coordinates(joints, points, capsules.is_left)
    sunk = (
        _inside_palm(palm, joints, capsules.is_left)
        & (palm[:, 2] - radii < capsules.palmar_depth - PALM_PENETRATION * radii)
        & (palm[:, 2] + radii > -capsules.dorsal_depth)
    )
    for k in np.flatnonzero(sunk):
        segment = _SEGMENTS[segments[k // len(_PALM_TEST_FRACTIONS)], 0]
        depth = capsules.palmar_depth - palm[k, 2] + radii[k]
        found.append(f"{RIG_JOINT_NAMES[segment]} sinks {depth * 1000:.1f} mm into the palm")
    return found


# ---------------------------------------------------------------------------------------------
# Gesture library.

# Finger states, degrees: (MCP flexion, PIP flexion, DIP flexion).
_STRAIGHT = (0.0, 0.0, 0.0)
_CURLED = (85.0, 100.0, 65.0)  # a fist: fingertips on the palm
_HALF = (45.0, 55.0, 35.0)  # holding a thick cylinder
_HOOK = (5.0, 85.0, 60.0)  # claw / hook grip
_BENT = (80.0, 5.0, 5.0)  # flat hand bent at the knuckles
# Thumb states, degrees: (CMC flexion, CMC abduction, CMC pronation, MCP flexion, IP flexion).
_THUMB_OUT = (-10.0, 0.0, 0.0, 0.0, 0.0)
_THUMB_SPREAD = (-25.0, -5.0, -5.0, -5.0, -10.0)
_THUMB_UP = (15.0, -15.0, 0.0, 0.0, 0.0)  # extended along the side of a fist
_THUMB_RELAXED = (10.0, 5.0, 5.0, 15.0, 15.0)
_THUMB_GRASP = (15.0, 25.0, 15.0, 15.0, 15.0)
# Thumbs touching something. Found by minimising (scipy Nelder-Mead) the thumb tip's distance
# to its target, with a margin on `pose_collisions`, and rounded; for the pinch and OK also the
# misalignment of the thumb and index pads (their local -y), with the index free near its
# intended posture: pads face each other to within ~30 deg.
_THUMB_PINCH = (39.0, 15.0, 25.0, 4.0, -10.0)  # pad to pad with the index fingertip
_THUMB_OK = (43.0, 10.0, 17.0, -5.0, -10.0)  # the same with a rounder index: a ring
_THUMB_OVER_FIST = (-5.0, 35.0, 11.0, 60.0, 60.0)  # across the middle phalanges of a fist
_THUMB_ACROSS_PALM = (35.0, 7.0, 25.0, 65.0, 44.0)  # on the palm below the ring finger (four)
_THUMB_ON_RING = (14.0, 35.0, 7.0, 65.0, 47.0)  # holding the curled ring finger (V sign)
_THUMB_ON_LITTLE = (29.0, 35.0, 0.0, 65.0, 42.0)  # holding the curled little finger (three)
_THUMB_ROCK = (11.0, 27.0, 4.0, 65.0, 49.0)  # over the curled middle and ring fingers


def _gesture(thumb, index, middle, ring, little, spread=(0.0, 0.0, 0.0, 0.0), cupping=(0.0, 0.0)) -> np.ndarray:
    """P angles from finger states, MCP abductions (index..little) and ring/little CMC flexion."""
    angles = np.zeros(NUM_POSE_PARAMETERS, np.float32)
    for part, value in zip(("cmc_flex", "cmc_abd", "cmc_pron", "mcp_flex", "ip_flex"), thumb):
        angles[_INDEX[f"thumb_{part}"]] = value
    for finger, state, abduction in zip(FINGERS[1:], (index, middle, ring, little), spread):
        for part, value in zip(("mcp_flex", "pip_flex", "dip_flex"), state):
            angles[_INDEX[f"{finger}_{part}"]] = value
        angles[_INDEX[f"{finger}_mcp_abd"]] = abduction
    angles[_INDEX["ring_cmc_flex"]], angles[_INDEX["little_cmc_flex"]] = cupping
    return angles


# Curled fingers converge as their MCPs flex; a slight spread keeps them side by side.
_CURLED_SPREAD = (3.0, 0.0, 4.0, 6.0)

# Counting: point = 1, v_sign = 2, three (or three_thumb) = 3, four = 4, open = 5.
GESTURES: dict[str, np.ndarray] = {
    "open": _gesture(_THUMB_OUT, _STRAIGHT, _STRAIGHT, _STRAIGHT, _STRAIGHT),
    "spread": _gesture(_THUMB_SPREAD, _STRAIGHT, _STRAIGHT, _STRAIGHT, _STRAIGHT, (20, 5, 12, 25)),
    "relaxed": _gesture(_THUMB_RELAXED, (20, 30, 15), (25, 35, 20), (30, 40, 25), (35, 45, 25), cupping=(5, 10)),
    "fist": _gesture(_THUMB_OVER_FIST, _CURLED, _CURLED, _CURLED, _CURLED, _CURLED_SPREAD, (5, 10)),
    "point": _gesture(_THUMB_OVER_FIST, _STRAIGHT, _CURLED, _CURLED, _CURLED, (0, 0, 4, 6), (5, 10)),
    "v_sign": _gesture(_THUMB_ON_RING, _STRAIGHT, _STRAIGHT, _CURLED, _CURLED, (12, -10, 4, 6), (5, 10)),
    "three": _gesture(_THUMB_ON_LITTLE, _STRAIGHT, _STRAIGHT, _STRAIGHT, _CURLED, (8, 0, 0, 6), (0, 15)),
    "three_thumb": _gesture(_THUMB_OUT, _STRAIGHT, _STRAIGHT, _CURLED, _CURLED, (12, -5, 4, 6), (5, 10)),
    "l_sign": _gesture(_THUMB_SPREAD, _STRAIGHT, _CURLED, _CURLED, _CURLED, (5, 0, 4, 6), (5, 10)),
    "four": _gesture(_THUMB_ACROSS_PALM, _STRAIGHT, _STRAIGHT, _STRAIGHT, _STRAIGHT, (8, 0, 5, 10)),
    "thumbs_up": _gesture(_THUMB_UP, _CURLED, _CURLED, _CURLED, _CURLED, _CURLED_SPREAD, (5, 10)),
    "call_me": _gesture(_THUMB_SPREAD, _CURLED, _CURLED, _CURLED, _STRAIGHT, (3, 0, 4, 20), (8, 10)),
    "rock": _gesture(_THUMB_ROCK, _STRAIGHT, _CURLED, _CURLED, _STRAIGHT, (10, 0, 4, 15), (8, 10)),
    "pinch": _gesture(_THUMB_PINCH, (51, 42, 23), (30, 20, 10), (25, 15, 10), (20, 15, 10), (0, 0, 5, 10)),
    "ok": _gesture(_THUMB_OK, (42, 52, 33), _STRAIGHT, (5, 5, 0), (10, 5, 5), (0, 0, 8, 15)),
    "grasp": _gesture(_THUMB_GRASP, _HALF, _HALF, _HALF, _HALF, cupping=(5, 10)),
    "claw": _gesture(_THUMB_GRASP, _HOOK, _HOOK, _HOOK, _HOOK, (10, 0, 8, 15)),
    "bent": _gesture(_THUMB_OUT, _BENT, _BENT, _BENT, _BENT, _CURLED_SPREAD),
}


# ---------------------------------------------------------------------------------------------
# Sampling.

# Gaussian noise added to gesture angles, degrees: a part shared by the four fingers (the same
# joint of every finger moves together) plus an independent part; the thumb's is independent.
_NOISE_KIND = np.array([name if name.startswith("thumb") else name.split("_", 1)[1] for name in POSE_PARAMETER_NAMES])
_NOISE_GROUP = np.unique(_NOISE_KIND, return_inverse=True)[1]
_IS_ABDUCTION = np.char.endswith(_NOISE_KIND, "_abd")
_IS_THUMB = np.char.startswith(_NOISE_KIND, "thumb")
_NOISE_SHARED_DEG = np.where(_IS_THUMB, 0.0, np.where(_IS_ABDUCTION, 2.0, 4.0))
_NOISE_OWN_DEG = np.where(_IS_THUMB, 6.0, np.where(_IS_ABDUCTION, 2.0, 3.0))
# Random prior: finger curls (thumb, index, middle, ring, little) are uniform on [0, 1] through
# a Gaussian copula with correlation rho^|i - j| between fingers i and j (neighbours 0.6).
_CURL_CORRELATION = 0.6 ** np.abs(np.subtract.outer(np.arange(5), np.arange(5)))
_CURL_CHOLESKY = np.linalg.cholesky(_CURL_CORRELATION)
_DIP_PIP_RATIO = 2.0 / 3.0  # DIP flexion follows PIP flexion (shared flexor tendon, ORL)


def sample_random_angles(rng: np.random.Generator) -> np.ndarray:
    """P angles (degrees) from the joint-limited random prior.

    Each finger gets a curl u in [0, 1] (uniform marginals, correlated between neighbouring
    fingers); MCP and PIP flexion follow u with independent jitter, DIP ~ 2/3 PIP, abduction
    follows one hand-wide spread and narrows as the MCP flexes, the ring and little CMCs cup
    with the curl; the thumb mixes its curl (MCP, IP) with an opposition level (CMC flexion,
    palmar abduction, pronation). Everything is clipped to `POSE_LIMITS_DEG`.
    """
    angles = np.zeros(NUM_POSE_PARAMETERS)
    low, high = POSE_LIMITS_DEG[:, 0].astype(np.float64), POSE_LIMITS_DEG[:, 1].astype(np.float64)

    def fraction(name: str, value: float) -> None:
        i = _INDEX[name]
        angles[i] = low[i] + (high[i] - low[i]) * np.clip(value, 0.0, 1.0)

    curl = ndtr(_CURL_CHOLESKY @ rng.standard_normal(5))
    spread = rng.uniform(-0.3, 1.0)
    for finger, u in zip(FINGERS[1:], curl[1:]):
        mcp = 90.0 * np.clip(u + rng.normal(0.0, 0.15), 0.0, 1.0) + rng.normal(0.0, 6.0)
        pip = 110.0 * np.clip(u + rng.normal(0.0, 0.15), 0.0, 1.0)
        angles[_INDEX[f"{finger}_mcp_flex"]] = mcp
        angles[_INDEX[f"{finger}_pip_flex"]] = pip
        angles[_INDEX[f"{finger}_dip_flex"]] = _DIP_PIP_RATIO * pip + rng.normal(0.0, 6.0)
        abduction = high[_INDEX[f"{finger}_mcp_abd"]] if spread > 0 else -low[_INDEX[f"{finger}_mcp_abd"]]
        narrowing = 1.0 - 0.8 * np.clip(mcp / 90.0, 0.0, 1.0)
        angles[_INDEX[f"{finger}_mcp_abd"]] = spread * abduction * narrowing + rng.normal(0.0, 3.0)
        if f"{finger}_cmc_flex" in _INDEX:
            fraction(f"{finger}_cmc_flex", u + rng.normal(0.0, 0.2))
    opposition = rng.uniform()
    thumb_curl = curl[0]
    fraction("thumb_cmc_flex", 0.5 * opposition + 0.5 * thumb_curl + rng.normal(0.0, 0.15))
    fraction("thumb_cmc_abd", opposition + rng.normal(0.0, 0.2))
    fraction("thumb_cmc_pron", opposition + rng.normal(0.0, 0.2))
    fraction("thumb_mcp_flex", thumb_curl + rng.normal(0.0, 0.2))
    fraction("thumb_ip_flex", thumb_curl + rng.normal(0.0, 0.2))
    return np.clip(angles, low, high).astype(np.float32)


def sample_pose(
    rng: np.random.Generator,
    template: HandTemplate,
    *,
    gesture_probability: float = 0.5,
    gestures: Sequence[str] | None = None,
    max_tries: int = 200,
) -> HandPose:
    """Samples a collision-free anatomical pose.

    With probability `gesture_probability` a gesture of `gestures` (default: all of `GESTURES`),
    chosen uniformly, plus Gaussian noise clipped to the limits (flexions: 4 deg shared by the
    four fingers + 3 deg each, so the same joint of neighbouring fingers differs by ~4 deg;
    abductions 2 + 2 deg; thumb angles 6 deg); otherwise `sample_random_angles`. Draws with
    `pose_collisions` are redrawn from the same gesture (or the prior).

    Args:
      rng: the random generator (the only source of randomness).
      template: the (right or left, possibly shape-varied) template to pose.
      gesture_probability: in [0, 1].
      gestures: names from `GESTURES` to draw from.
      max_tries: draws before giving up.

    Returns:
      HandPose(rotations R x 3 x 3, angles P degrees, gesture name or "random").

    Raises:
      ValueError: bad probability, unknown gesture names or max_tries < 1.
      RuntimeError: no collision-free pose in max_tries draws.
    """
    if not 0.0 <= gesture_probability <= 1.0:
        raise ValueError(f"gesture_probability must be in [0, 1]; received {gesture_probability}")
    names = tuple(GESTURES) if gestures is None else tuple(gestures)
    unknown = [name for name in names if name not in GESTURES]
    if unknown or not names:
        raise ValueError(f"unknown gestures {unknown or names}; expected a non-empty subset of {list(GESTURES)}")
    if max_tries < 1:
        raise ValueError(f"max_tries must be >= 1; received {max_tries}")
    capsules = hand_capsules(template)
    low, high = POSE_LIMITS_DEG[:, 0], POSE_LIMITS_DEG[:, 1]
    # The gesture is chosen once, so collisions do not change how often each one appears.
    gesture = names[rng.integers(len(names))] if rng.uniform() < gesture_probability else "random"
    collisions: list[str] = []
    for _ in range(max_tries):
        if gesture == "random":
            angles = sample_random_angles(rng)
        else:
            shared = rng.standard_normal(_NOISE_GROUP.max() + 1)[_NOISE_GROUP]
            noise = _NOISE_SHARED_DEG * shared + _NOISE_OWN_DEG * rng.standard_normal(NUM_POSE_PARAMETERS)
            angles = np.clip(GESTURES[gesture] + noise, low, high).astype(np.float32)
        rotations = pose_rotations(angles, template)
        collisions = pose_collisions(joint_positions(template, rotations), capsules)
        if not collisions:
            return HandPose(rotations=rotations, angles=angles, gesture=gesture)
    raise RuntimeError(f"no collision-free pose for {gesture!r} in {max_tries} draws; last draw: {collisions[:3]}")
