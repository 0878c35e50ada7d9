"""Hand shape variation: blend-shape-like deformation of the rest mesh and rig before skinning.

Shape shorthand: V mesh vertices (1159), R rig joints (25), S shape parameters (14).

A shape is S positive factors (`SHAPE_PARAMETER_NAMES`, 1 = the template):

  scale                      overall size, about the wrist joint;
  {finger}_length            bone lengths of one finger (MCP to tip; the thumb from its CMC),
                             each bone scaled along its own axis, so children move with it;
  {finger}_thickness         finger girth: scaling perpendicular to the finger's bones;
  palm_width, palm_length,   the palm (wrist and metacarpal bones, with the forearm stub)
  palm_thickness             scaled along the palm's radial, distal and palmar axes about the
                             wrist; the fingers ride along with their MCP joints.

Every joint j gets an affine map S_j of the rest space: the palm's scaling for the wrist and
the finger metacarpals; for a finger bone from joint j to its child c,

    S_j(x) = S_parent(j)(p_j) + (t I + (l - t) d d^T)(x - p_j),   d = unit(p_c - p_j),

with l the finger's length and t its thickness factor, so S_j(p_c) = S_j(p_j) + l (p_c - p_j)
and the child joint lands where its parent's map sends it. Vertices are blended with the skin
weights, x' = sum_j w_xj S_j(x) (a vertex at a joint moves exactly with it), joint positions
follow the maps, frames keep their rest rotations (flexion axes are unchanged), and finally
everything is scaled by `scale` about the wrist. Keypoints follow the deformed joints through
the keypoint regressor.

Sampled ranges (`sample_shape`), with the anthropometric data they come from:

  hand length (wrist crease to middle fingertip): adults 50/50 men N(189, 10) mm and women
  N(174, 9) mm (Pheasant & Haslegrave, "Bodyspace", British adults aged 19-65), clipped to
  150..215 mm; with probability 0.15 a child, uniform 120..165 mm (about 5 to 12 years old;
  Snyder et al. 1977, "Anthropometry of infants, children and youths to age 18").
  The template measures 189.6 mm (wrist joint to the farthest vertex along the palm's distal
  axis: `template_hand_length`), an average man's hand, so scale = length / 189.6 mm,
  0.63..1.13.
  finger lengths: 1 + 0.03 shared + 0.025 per finger (Gaussian SDs), clipped to 0.88..1.12
  (finger-to-hand length ratios vary by a few percent; e.g. the 2D:4D ratio is 0.95-1.0
  with SD ~0.03, Manning et al. 1998).
  finger thickness: 1 + 0.07 shared + 0.03 per finger, clipped to 0.8..1.2 (finger breadth
  varies by ~7% SD at a given hand length, ANSUR / Greiner 1991).
  palm width 1 + N(0, 0.04) clipped to 0.9..1.1 (hand breadth 87 +- 5 mm in men, 76 +- 4 mm
  in women, Pheasant; ~4% beyond what length explains); palm length 1 + N(0, 0.03) clipped
  to 0.92..1.08; palm thickness 1 + N(0, 0.08) clipped to 0.85..1.2.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from handshape_tf.assets.template import HandTemplate
from handshape_tf.data.hand_poses import FINGERS, WEBXR_FINGER_PREFIX, palm_axes

SHAPE_PARAMETER_NAMES = (
    ("scale",)
    + tuple(f"{finger}_length" for finger in FINGERS)
    + tuple(f"{finger}_thickness" for finger in FINGERS)
    + ("palm_width", "palm_length", "palm_thickness")
)
NUM_SHAPE_PARAMETERS = len(SHAPE_PARAMETER_NAMES)
IDENTITY_SHAPE = np.ones(NUM_SHAPE_PARAMETERS, np.float32)

_ADULT_LENGTH_MM = ((189.0, 10.0), (174.0, 9.0))  # men, women: mean, SD
_ADULT_RANGE_MM = (150.0, 215.0)
_CHILD_RANGE_MM = (120.0, 165.0)
_CHILD_PROBABILITY = 0.15
TEMPLATE_HAND_LENGTH_MM = 189.6


def template_hand_length(template: HandTemplate) -> float:
    """Hand length in metres: wrist joint to the farthest vertex along the palm's distal axis."""
    joints = template.joint_positions.astype(np.float64)
    distal = palm_axes(joints, template.is_left)[0]
    return float(np.max((template.vertices - joints[0]) @ distal))


def sample_shape(rng: np.random.Generator) -> np.ndarray:
    """S shape factors drawn from the anthropometric ranges in the module docstring."""
    if rng.uniform() < _CHILD_PROBABILITY:
        length = rng.uniform(*_CHILD_RANGE_MM)
    else:
        mean, sd = _ADULT_LENGTH_MM[rng.integers(2)]
        length = np.clip(rng.normal(mean, sd), *_ADULT_RANGE_MM)
    fingers = len(FINGERS)
    finger_length = np.clip(1.0 + rng.normal(0.0, 0.03) + rng.normal(0.0, 0.025, fingers), 0.88, 1.12)
    thickness = np.clip(1.0 + rng.normal(0.0, 0.07) + rng.normal(0.0, 0.03, fingers), 0.8, 1.2)
    palm = np.clip(1.0 + rng.normal(0.0, [0.04, 0.03, 0.08]), [0.9, 0.92, 0.85], [1.1, 1.08, 1.2])
    return np.concatenate([[length / TEMPLATE_HAND_LENGTH_MM], finger_length, thickness, palm]).astype(np.float32)


def apply_shape(template: HandTemplate, params) -> tuple[np.ndarray, np.ndarray]:
    """Deforms the template's rest mesh and rig.

    Args:
      template: the (right or left) hand template.
      params: S positive shape factors (`SHAPE_PARAMETER_NAMES` order).

    Returns:
      (rest vertices V x 3 float32, rest transforms R x 4 x 4 float32), to pose with
      `handshape_tf.geometry.skinning.pose_hand(..., rest_vertices=, rest_transforms=)`.
    """
    params = np.asarray(params, np.float64)
    if params.shape != (NUM_SHAPE_PARAMETERS,) or not np.all(np.isfinite(params) & (params > 0)):
        raise ValueError(
            f"shape params must be {NUM_SHAPE_PARAMETERS} positive finite factors "
            f"{SHAPE_PARAMETER_NAMES}; received shape {params.shape}: {params.tolist()}"
        )
    value = dict(zip(SHAPE_PARAMETER_NAMES, params))
    joints = template.joint_positions.astype(np.float64)
    vertices = template.vertices.astype(np.float64)
    names = template.joint_names
    wrist = names.index("wrist")
    axes = palm_axes(joints, template.is_left)
    palm = axes.T @ np.diag([value["palm_length"], value["palm_width"], value["palm_thickness"]]) @ axes

    # Per-joint affine maps x -> linear[j] @ (x - joints[j]) + moved[j], built parents first.
    num_joints = len(joints)
    linear = np.empty((num_joints, 3, 3))
    moved = np.empty((num_joints, 3))
    children = {j: [c for c in range(num_joints) if template.joint_parents[c] == j] for j in range(num_joints)}
    finger_of = {}
    for finger in FINGERS:
        for j, name in enumerate(names):
            if name.startswith(WEBXR_FINGER_PREFIX[finger] + "-"):
                finger_of[j] = finger
    for j, parent in enumerate(template.joint_parents):
        moved[j] = joints[j] if parent < 0 else linear[parent] @ (joints[j] - joints[parent]) + moved[parent]
        finger = finger_of.get(j)
        is_palm = j == wrist or (names[j].endswith("metacarpal") and finger != "thumb")
        if is_palm:
            linear[j] = palm
        elif not children[j]:  # a tip: carries no bone of its own
            linear[j] = linear[parent]
        else:
            (child,) = children[j]
            direction = joints[child] - joints[j]
            direction /= np.linalg.norm(direction)
            length, thickness = value[f"{finger}_length"], value[f"{finger}_thickness"]
            linear[j] = thickness * np.eye(3) + (length - thickness) * np.outer(direction, direction)

    # Blend the maps, then apply: sum_j w_j (L_j x + m_j - L_j p_j).
    weights = template.skin_weights.astype(np.float64)
    blended_linear = (weights @ linear.reshape(num_joints, 9)).reshape(-1, 3, 3)  # V x 3 x 3
    blended_offset = weights @ (moved - np.einsum("rij,rj->ri", linear, joints))  # V x 3
    new_vertices = np.einsum("vij,vj->vi", blended_linear, vertices) + blended_offset

    scale = value["scale"]
    origin = joints[wrist]
    new_vertices = origin + scale * (new_vertices - origin)
    transforms = template.rest_transforms.astype(np.float64).copy()
    transforms[:, :3, 3] = origin + scale * (moved - origin)
    return new_vertices.astype(np.float32), transforms.astype(np.float32)


def shape_template(template: HandTemplate, params) -> HandTemplate:
    """The template with `apply_shape`'s rest mesh and rig (e.g. for `sample_pose`)."""
    vertices, transforms = apply_shape(template, params)
    return dataclasses.replace(template, vertices=vertices, rest_transforms=transforms)
