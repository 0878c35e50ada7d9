"""Drawing a prediction over its image: mesh wireframe, skeleton and crop box (OpenCV only)."""

from __future__ import annotations

import cv2
import numpy as np

from handshape_tf.assets.template import KEYPOINT_PARENTS, load_template
from handshape_tf.data.crop import to_rgb_uint8
from handshape_tf.inference.prediction import HandPrediction

# Sub-pixel precision of OpenCV drawing: coordinates are multiplied by 2**_SHIFT.
_SHIFT = 4
# RGB colour of each finger's bones (thumb, index, middle, ring, little).
_FINGER_COLOURS = ((255, 80, 80), (255, 200, 0), (60, 220, 60), (0, 170, 255), (200, 90, 255))


def draw_overlay(
    image,
    prediction: HandPrediction,
    mesh_colour=(200, 200, 200),
    box_colour=(255, 255, 0),
    draw_mesh: bool = True,
    channel_order: str = "rgb",
) -> np.ndarray:
    """The image with the predicted mesh wireframe, the 21-joint skeleton and the crop box.

    Args:
      image: the image the prediction was made on (anything `data.crop.to_rgb_uint8` takes).
      prediction: its `HandPrediction` (mesh_uv, joints_uv and box in its pixels).
      mesh_colour: RGB of the wireframe edges.
      box_colour: RGB of the crop box outline.
      draw_mesh: False draws only the skeleton and box (as for a prediction without a mesh, e.g.
        a peer's, `handshape_tf.evaluation.peers`).
      channel_order: "rgb" or "bgr", the channel order of `image`.

    Returns:
      H x W x 3 uint8 RGB copy of the image with the drawing (line width grows with the image).
    """
    canvas = to_rgb_uint8(image, channel_order=channel_order).copy()
    height, width = canvas.shape[:2]
    thickness = max(1, int(round(max(height, width) / 400)))
    scale = float(2**_SHIFT)

    def fixed(points):
        # OpenCV puts pixel centres on integers; far-off points are clamped to stay int32.
        shifted = np.round(np.asarray(points, np.float64) * scale - 0.5 * scale)
        return np.clip(shifted, -(2**28), 2**28).astype(np.int32)

    if draw_mesh and len(prediction.mesh_uv):
        edges = load_template().edges
        segments = fixed(prediction.mesh_uv)[edges]  # E x 2 x 2
        cv2.polylines(canvas, list(segments), False, mesh_colour, thickness, cv2.LINE_AA, _SHIFT)
    joints = fixed(prediction.joints_uv)
    for child, parent in enumerate(KEYPOINT_PARENTS):
        if parent < 0:
            continue
        colour = _FINGER_COLOURS[(child - 1) // 4]
        cv2.line(canvas, tuple(joints[parent]), tuple(joints[child]), colour, thickness + 1, cv2.LINE_AA, _SHIFT)
    for joint in joints:
        cv2.circle(canvas, tuple(joint), int((thickness + 2) * scale), (255, 0, 0), -1, cv2.LINE_AA, _SHIFT)
    x0, y0, w, h = np.asarray(prediction.box, np.float64)
    corners = fixed([[x0, y0], [x0 + w, y0], [x0 + w, y0 + h], [x0, y0 + h]])
    cv2.polylines(canvas, [corners], True, box_colour, thickness, cv2.LINE_AA, _SHIFT)
    return canvas


def draw_hands(image, hands, draw_mesh: bool = True, channel_order: str = "rgb") -> np.ndarray:
    """The image with every tracked or detected hand (`tracking.TrackedHand`): mesh, skeleton,
    crop box (magenta for left hands, cyan for right) and a "left 0.93" / "right 0.88" label
    (side and heat-map confidence). No hands: an unchanged RGB copy.

    Returns:
      H x W x 3 uint8 RGB.
    """
    canvas = to_rgb_uint8(image, channel_order=channel_order).copy()
    for hand in hands:
        colour = (255, 0, 255) if hand.is_left else (0, 255, 255)
        canvas = draw_overlay(canvas, hand.prediction, box_colour=colour, draw_mesh=draw_mesh)
        x0, y0 = (int(round(v)) for v in np.asarray(hand.box, np.float64)[:2])
        scale = max(0.4, max(canvas.shape[:2]) / 1000.0)
        cv2.putText(
            canvas,
            f"{hand.handedness} {hand.confidence:.2f}",
            (max(x0, 0) + 3, max(y0, 0) + int(16 * scale) + 2),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            colour,
            1,
            cv2.LINE_AA,
        )
    return canvas
