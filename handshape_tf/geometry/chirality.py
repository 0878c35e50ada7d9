"""Which hand a 3D skeleton is: left or right, from the joints alone (numpy).

Shape shorthand: N skeletons, J = 21 keypoints (the project's order: wrist, thumb CMC-MCP-IP-tip,
then index, middle, ring and little finger MCP-PIP-DIP-tip).

A mirror image changes a hand's chirality and nothing a rotation can undo, so a right-hand model
fed a left hand (or the other way round) gets every finger's side wrong. With W the wrist and
I, M, L the index, middle and little MCP joints, n = (M - W) x (I - L) is normal to the palm:
it points out of the back of a right hand and out of the palm of a left one. Which side is the
palm shows in the pose: the thumb tip sits in front of the palm and the fingers flex towards it.
`palm_side_scores` measures both along n (in units of the wrist-middle MCP length and of each
finger's length): negative for a right hand, positive for a left one. On 1000 rendered hands
of the project's pose prior (any gesture, any view) its sign named the hand correctly every
time; a flat, fully spread hand scores near 0, so a dataset's side is best taken by majority
(`dataset_is_left`).

From an image the side is harder: a mirror image of a right hand is a left hand seen the same
way, so neither the outline nor the colours alone tell the side. Two things an image does show
decide it together (`side_cues`): whether the palm faces the camera (its lighter skin, no nails)
and which way the wrist -> index MCP -> little MCP triangle turns in the picture. A right hand
turns counter-clockwise (as seen) with its palm to the camera and clockwise with its back to it;
a left hand the other way round: left = (palm towards camera) != (counter-clockwise). A
classifier taught only "left or right" sits at chance for a long time (neither cue alone
correlates with the label: an XOR); one taught the two cues as well learns all three
(`handshape_tf.models.side`).
"""

from __future__ import annotations

import numpy as np

_FINGERS = ((5, 8), (9, 12), (13, 16), (17, 20))  # (MCP, tip) of index, middle, ring, little
_THUMB_TIP, _WRIST, _INDEX_MCP, _MIDDLE_MCP, _LITTLE_MCP = 4, 0, 5, 9, 17


def palm_side_scores(joints: np.ndarray) -> np.ndarray:
    """N scores, < 0 for right hands and > 0 for left hands (module docstring).

    Args:
      joints: N x 21 x 3 or 21 x 3 keypoints in any right-handed metric frame (e.g. camera mm).

    Returns:
      N float64 (a scalar array for one skeleton).

    Raises:
      ValueError: not ... x 21 x 3.
    """
    joints = np.asarray(joints, np.float64)
    if joints.shape[-2:] != (21, 3):
        raise ValueError(f"joints have shape {joints.shape}; expected N x 21 x 3")
    wrist, middle = joints[..., _WRIST, :], joints[..., _MIDDLE_MCP, :]
    normal = np.cross(middle - wrist, joints[..., _INDEX_MCP, :] - joints[..., _LITTLE_MCP, :])
    normal /= np.maximum(np.linalg.norm(normal, axis=-1, keepdims=True), 1e-12)
    palm_length = np.maximum(np.linalg.norm(middle - wrist, axis=-1), 1e-12)
    thumb = np.sum((joints[..., _THUMB_TIP, :] - wrist) * normal, axis=-1) / palm_length
    flexion = np.mean(
        [
            np.sum((joints[..., tip, :] - joints[..., mcp, :]) * normal, axis=-1)
            / np.maximum(np.linalg.norm(joints[..., tip, :] - joints[..., mcp, :], axis=-1), 1e-12)
            for mcp, tip in _FINGERS
        ],
        axis=0,
    )
    return thumb + flexion


def side_cues(joints_xyz: np.ndarray, joints_uv: np.ndarray, is_left: np.ndarray) -> np.ndarray:
    """N x 3 float32 targets (is_left, palm towards the camera, counter-clockwise; 0 or 1) of
    hands seen by a camera at the origin (module docstring).

    Args:
      joints_xyz: N x 21 x 3 keypoints in camera coordinates (OpenCV: z forward).
      joints_uv: N x 21 x 2 the same keypoints in the image (pixels, v down).
      is_left: N bool.
    """
    joints_xyz = np.asarray(joints_xyz, np.float64)
    joints_uv = np.asarray(joints_uv, np.float64)
    is_left = np.asarray(is_left, bool)
    wrist = joints_xyz[:, _WRIST]
    normal = np.cross(joints_xyz[:, _MIDDLE_MCP] - wrist, joints_xyz[:, _INDEX_MCP] - joints_xyz[:, _LITTLE_MCP])
    palm_out = np.where(is_left[:, None], normal, -normal)  # n leaves the back of a right hand
    towards_camera = np.sum(palm_out * -wrist, axis=1) > 0
    index, little = joints_uv[:, _INDEX_MCP] - joints_uv[:, _WRIST], joints_uv[:, _LITTLE_MCP] - joints_uv[:, _WRIST]
    counter_clockwise = index[:, 0] * little[:, 1] - index[:, 1] * little[:, 0] < 0
    return np.stack([is_left, towards_camera, counter_clockwise], axis=1).astype(np.float32)


def dataset_is_left(joints: np.ndarray) -> tuple[bool, float]:
    """Whether a set of skeletons (N x 21 x 3) is mostly left hands, and the fraction that agrees."""
    left = palm_side_scores(joints) > 0
    is_left = bool(np.mean(left) > 0.5)
    return is_left, float(np.mean(left == is_left))
