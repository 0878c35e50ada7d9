"""Peer models measured under the project's protocol: MediaPipe Hands' landmark model.

MediaPipe's `hand_landmark_full.tflite` (Apache-2.0; in the mediapipe wheel, not shipped here:
README "Evaluate, predict, serve, export" has the two commands that fetch it) takes a 224 x 224 RGB crop in [0, 1] and
returns 21 landmarks in our keypoint order (wrist, then four joints per finger from the thumb
to the little finger): x, y in input pixels and z, depth relative to the wrist in about the
units of x (smaller is nearer), plus a hand-presence score, a handedness score and metric
"world" landmarks. `MediaPipeLandmarkBackend` turns them into the network's outputs, so that
`evaluate_model` (and `python -m handshape_tf.evaluate --model hand_landmark_full.tflite`) runs
it like one of our models, on the same crops, with the same ground-truth root depth and scale:

    u, v = x / 224, y / 224;   d_j = (z_j - z_wrist) / |L_9 - L_10|

(our uvd: u, v in [0, 1] of the crop, d depth relative to the root in units of the hand scale,
the wrist -> ... bone `SCALE_BONE` measured on the landmarks themselves in their pixel units).
Measured on 200 unseen-domain crops, this depth gives a lower error than the world landmarks'
z (PA 21.8 against 23.0 mm) or the opposite sign (27.3 mm). No mesh: mesh_uvd has 0 vertices,
so `evaluate_model` reports the pose alone. Per-joint confidence is the presence score. Left
hands arrive mirrored by `HandPredictor` like for our models.
"""

from __future__ import annotations

import os

import numpy as np

from handshape_tf.assets.template import ROOT_KEYPOINT, SCALE_BONE
from handshape_tf.geometry.camera import NUM_KEYPOINTS

MEDIAPIPE_INPUT_SIZE = 224
# Output sizes of hand_landmark_full.tflite, in its output order: landmarks, presence,
# handedness, world landmarks.
MEDIAPIPE_OUTPUT_SIZES = (3 * NUM_KEYPOINTS, 1, 1, 3 * NUM_KEYPOINTS)


def _has_mediapipe_layout(interpreter) -> bool:
    """One 224 x 224 x 3 float input; 63, 1, 1 and 63 outputs."""
    inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    return (
        len(inputs) == 1
        and tuple(inputs[0]["shape"]) == (1, MEDIAPIPE_INPUT_SIZE, MEDIAPIPE_INPUT_SIZE, 3)
        and np.dtype(inputs[0]["dtype"]) == np.float32
        and tuple(int(np.prod(d["shape"][1:])) for d in outputs) == MEDIAPIPE_OUTPUT_SIZES
    )


def is_mediapipe_landmark_model(path) -> bool:
    """Whether `path` is a .tflite file with MediaPipe's landmark model layout."""
    if not (os.fspath(path).endswith(".tflite") and os.path.isfile(path)):
        return False
    from ai_edge_litert.interpreter import Interpreter

    try:
        return _has_mediapipe_layout(Interpreter(model_path=os.fspath(path)))
    except ValueError:
        return False


def landmarks_to_uvd(landmarks: np.ndarray) -> np.ndarray:
    """B x 21 x 3 MediaPipe landmarks (x, y, z in input pixels) -> B x 21 x 3 uvd (module docstring)."""
    landmarks = np.asarray(landmarks, np.float64)
    scale = np.linalg.norm(landmarks[:, SCALE_BONE[0]] - landmarks[:, SCALE_BONE[1]], axis=-1)  # B
    depth = (landmarks[..., 2] - landmarks[:, ROOT_KEYPOINT : ROOT_KEYPOINT + 1, 2]) / np.maximum(scale, 1e-6)[:, None]
    uv = landmarks[..., :2] / MEDIAPIPE_INPUT_SIZE
    return np.concatenate([uv, depth[..., None]], axis=-1).astype(np.float32)


class MediaPipeLandmarkBackend:
    """MediaPipe's hand landmark model as a `HandPredictor` backend (module docstring).

    Args:
      path: hand_landmark_full.tflite (or .lite with the same layout).
      num_threads: interpreter threads (None: LiteRT's default).

    Raises:
      ValueError: the file does not have MediaPipe's landmark model layout.
    """

    image_size = MEDIAPIPE_INPUT_SIZE

    def __init__(self, path, num_threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter = Interpreter(model_path=os.fspath(path), num_threads=num_threads)
        if not _has_mediapipe_layout(self._interpreter):
            raise ValueError(
                f"{path} is not MediaPipe's hand landmark model (one 224 x 224 x 3 float input; "
                f"outputs of {MEDIAPIPE_OUTPUT_SIZES} values)"
            )
        self.description = f"MediaPipe hand landmark model {path}"
        self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._landmarks, self._presence = (d["index"] for d in self._interpreter.get_output_details()[:2])

    def run(self, crops: np.ndarray) -> dict[str, np.ndarray]:
        """B x 224 x 224 x 3 uint8 -> heatmaps B x 1 x 1 x 21 (the presence score), mesh_uvd
        B x 0 x 3, pose_uvd B x 21 x 3."""
        landmarks, presence = [], []
        for crop in np.asarray(crops, np.uint8):
            self._interpreter.set_tensor(self._input, crop[np.newaxis].astype(np.float32) / 255.0)
            self._interpreter.invoke()
            landmarks.append(self._interpreter.get_tensor(self._landmarks).reshape(NUM_KEYPOINTS, 3))
            presence.append(float(self._interpreter.get_tensor(self._presence).reshape(())))
        batch = len(landmarks)
        return {
            "heatmaps": np.repeat(np.asarray(presence, np.float32).reshape(batch, 1, 1, 1), NUM_KEYPOINTS, axis=-1),
            "mesh_uvd": np.zeros((batch, 0, 3), np.float32),
            "pose_uvd": landmarks_to_uvd(np.stack(landmarks)),
        }
