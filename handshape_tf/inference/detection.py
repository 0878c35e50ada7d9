"""Hand detection in numpy: training targets, decoding (peaks, boxes, NMS), letterboxing, and
`HandDetector` around a Keras or TFLite detector.

Shape shorthand: H x W frame, h x w detector output (stride R), n hands / detections.

The detector (`handshape_tf.models.detector`) predicts per output cell c = (i, j) (column i,
row j; cell i covers x in [i R, (i + 1) R)): a centre logit, a left-hand logit, the box
centre's offset from the cell's corner in cells (cx = (i + offset_x) R), and log(box width / R),
log(box height / R). `encode_targets` builds the training targets of one frame from its boxes;
`decode` is its inverse (peaks of the centre map that are 3 x 3 local maxima above a score
threshold, then non-maximum suppression) and is what Python (`predict`) and the LiteRT demo
share. The detector's own left logit is at chance (README, DETECTOR_CARD.md); given a
`SideClassifier` (`handshape_tf.models.side`), `HandDetector` takes each hand's side from it
instead, run on the hand's crop. No TensorFlow here: the TFLite path runs on ai_edge_litert alone.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from handshape_tf.data.crop import crop_and_resize

CENTRE, LEFT, OFFSET, SIZE = 0, 1, slice(2, 4), slice(4, 6)
NUM_CHANNELS = 6
DEFAULT_SCORE_THRESHOLD = 0.3
DEFAULT_IOU_THRESHOLD = 0.4
# Gaussian width of a hand's centre peak, in cells: max(_MIN_SIGMA, _SIGMA_FRACTION sqrt(w h) / R).
_MIN_SIGMA = 0.7
_SIGMA_FRACTION = 0.1
# Cells where a hand's Gaussian is at least this also learn its offset, size and side.
REGRESSION_LEVEL = 0.5
# Crop side / the larger side of a detector box (the mesh network saw 1.1-1.5 x the hand's box).
DETECTION_CROP_SCALE = 1.3


@dataclasses.dataclass(frozen=True)
class Detection:
    """One detected hand.

    Attributes:
      box: (4,) float32 (x0, y0, w, h) in frame pixels.
      score: centre confidence in [0, 1].
      left_probability: probability that it is a left hand.
    """

    box: np.ndarray
    score: float
    left_probability: float

    @property
    def is_left(self) -> bool:
        return self.left_probability >= 0.5

    @property
    def handedness(self) -> str:
        return "left" if self.is_left else "right"

    def to_dict(self) -> dict[str, Any]:
        return {
            "box": [float(v) for v in self.box],
            "score": float(self.score),
            "handedness": self.handedness,
            "left_probability": float(self.left_probability),
        }


def sigmoid(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return (0.5 * (1.0 + np.tanh(0.5 * x))).astype(np.float32)


def _sigma(box: np.ndarray, stride: int) -> float:
    return max(_MIN_SIGMA, _SIGMA_FRACTION * float(np.sqrt(max(box[2], 1e-6) * max(box[3], 1e-6))) / stride)


def encode_targets(
    boxes: np.ndarray, is_left: np.ndarray, output_shape: tuple[int, int], stride: int
) -> dict[str, np.ndarray]:
    """Training targets of one frame.

    Args:
      boxes: n x 4 (x0, y0, w, h) frame pixels, w, h > 0.
      is_left: n bools.
      output_shape: (h, w) of the detector's output.
      stride: R.

    Returns:
      heat: h x w float32, the max over hands of a Gaussian of peak 1 at the cell holding the
        box centre (CenterNet);
      regression: h x w x 4 float32 (offset_x, offset_y, log width, log height) of the hand
        owning each cell (the one with the largest Gaussian there);
      left: h x w float32, 1 where the owning hand is a left hand;
      weight: h x w float32, 1 where the owning hand's Gaussian is >= REGRESSION_LEVEL (where
        regression and side are learned), else 0.
    """
    rows, columns = output_shape
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    is_left = np.asarray(is_left, bool).reshape(-1)
    if len(boxes) != len(is_left):
        raise ValueError(f"{len(boxes)} boxes and {len(is_left)} is_left flags; expected one flag per box")
    heat = np.zeros((rows, columns), np.float32)
    regression = np.zeros((rows, columns, 4), np.float32)
    left = np.zeros((rows, columns), np.float32)
    weight = np.zeros((rows, columns), np.float32)
    cy, cx = np.mgrid[0:rows, 0:columns].astype(np.float64)
    for box, side in zip(boxes, is_left):
        if box[2] <= 0 or box[3] <= 0:
            raise ValueError(f"box {box.tolist()} has no area; expected w, h > 0")
        centre = (box[:2] + box[2:] / 2) / stride  # cells, continuous
        cell = np.clip(np.floor(centre), 0, [columns - 1, rows - 1])
        sigma = _sigma(box, stride)
        gaussian = np.exp(-((cx - cell[0]) ** 2 + (cy - cell[1]) ** 2) / (2 * sigma**2))
        owned = gaussian > heat
        heat = np.maximum(heat, gaussian).astype(np.float32)
        regression[owned, 0] = centre[0] - cx[owned]
        regression[owned, 1] = centre[1] - cy[owned]
        regression[owned, 2] = np.log(box[2] / stride)
        regression[owned, 3] = np.log(box[3] / stride)
        left[owned] = float(side)
        weight[owned] = (gaussian[owned] >= REGRESSION_LEVEL).astype(np.float32)
    return {"heat": heat, "regression": regression, "left": left, "weight": weight}


def local_maxima(scores: np.ndarray) -> np.ndarray:
    """h x w bool: cells whose score is the maximum of their 3 x 3 neighbourhood."""
    padded = np.pad(scores, 1, mode="constant", constant_values=-np.inf)
    neighbourhood = np.max(
        np.stack([padded[r : r + scores.shape[0], c : c + scores.shape[1]] for r in range(3) for c in range(3)]), axis=0
    )
    return scores >= neighbourhood


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one (4,) box with n x 4 boxes (x0, y0, w, h) -> (n,)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[0] + box[2], boxes[:, 0] + boxes[:, 2])
    y1 = np.minimum(box[1] + box[3], boxes[:, 1] + boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    union = box[2] * box[3] + boxes[:, 2] * boxes[:, 3] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def non_maximum_suppression(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of the kept boxes, by decreasing score: a box is dropped when its IoU with a kept,
    higher-scoring box exceeds `iou_threshold`."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    keep: list[int] = []
    for index in order:
        if not keep or iou(boxes[index], boxes[keep]).max() <= iou_threshold:
            keep.append(int(index))
    return np.array(keep, np.int64)


def decode(
    output: np.ndarray,
    stride: int,
    score_threshold: float = DEFAULT_SCORE_THRESHOLD,
    iou_threshold: float = DEFAULT_IOU_THRESHOLD,
    max_detections: int = 10,
) -> list[Detection]:
    """Detections in one h x w x 6 detector output (raw logits and regressions).

    Args:
      output: h x w x 6 (module docstring).
      stride: R.
      score_threshold: smallest centre probability kept.
      iou_threshold: NMS overlap.
      max_detections: at most this many, best first.

    Returns:
      Detections in the detector input's pixels, by decreasing score.
    """
    output = np.asarray(output, np.float32)
    if output.ndim != 3 or output.shape[-1] != NUM_CHANNELS:
        raise ValueError(f"output has shape {output.shape}; expected h x w x {NUM_CHANNELS}")
    if not 0.0 <= score_threshold <= 1.0:
        raise ValueError(f"score_threshold is {score_threshold!r}; expected a probability in [0, 1]")
    scores = sigmoid(output[..., CENTRE])
    rows, columns = np.nonzero(local_maxima(scores) & (scores >= score_threshold))
    if rows.size == 0:
        return []
    values = output[rows, columns]
    centres = np.stack([columns + values[:, 2], rows + values[:, 3]], axis=1) * stride
    sizes = np.exp(np.clip(values[:, SIZE], -10.0, 10.0)) * stride
    boxes = np.concatenate([centres - sizes / 2, sizes], axis=1)
    peak_scores = scores[rows, columns]
    keep = non_maximum_suppression(boxes, peak_scores, iou_threshold)[:max_detections]
    lefts = sigmoid(values[:, LEFT])
    return [Detection(boxes[k].astype(np.float32), float(peak_scores[k]), float(lefts[k])) for k in keep]


def box_from_detection(box, scale: float = DETECTION_CROP_SCALE) -> np.ndarray:
    """(4,) float32 square crop (x0, y0, s, s) centred on a detector box, s = scale x its larger side."""
    x0, y0, w, h = np.asarray(box, np.float64)
    side = scale * max(w, h)
    return np.array([x0 + w / 2 - side / 2, y0 + h / 2 - side / 2, side, side], np.float32)


@dataclasses.dataclass(frozen=True)
class Letterbox:
    """How a frame was fitted into the detector's input: x_in = x scale + left, same for y."""

    scale: float
    left: float
    top: float

    def to_frame(self, box: np.ndarray) -> np.ndarray:
        box = np.asarray(box, np.float64)
        return np.array(
            [
                (box[0] - self.left) / self.scale,
                (box[1] - self.top) / self.scale,
                box[2] / self.scale,
                box[3] / self.scale,
            ],
            np.float32,
        )


def letterbox(image: np.ndarray, height: int, width: int) -> tuple[np.ndarray, Letterbox]:
    """The frame resized to fit `height` x `width` (aspect kept), centred on black; and the map."""
    image = np.asarray(image)
    scale = min(height / image.shape[0], width / image.shape[1])
    new_h = max(1, int(round(image.shape[0] * scale)))
    new_w = max(1, int(round(image.shape[1] * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(np.ascontiguousarray(image), (new_w, new_h), interpolation=interpolation)
    top, left = (height - new_h) // 2, (width - new_w) // 2
    canvas = np.zeros((height, width, 3), np.uint8)
    canvas[top : top + new_h, left : left + new_w] = resized
    # Exact per-axis scale of the resize (continuous convention); one number since rounding is tiny.
    return canvas, Letterbox(scale=new_w / image.shape[1], left=float(left), top=float(top))


class ImageModel:
    """A model with one image input and one output, from a .keras or .tflite file or a Keras model.

    Args:
      model: a path to a .keras or .tflite file, or a Keras model.
      role: what the model is, for messages ("detector", "side classifier").
      output: the Keras model's output name (a .tflite file's first output is taken).
      num_threads: LiteRT threads for a .tflite model.

    Attributes:
      input_height, input_width: its input size; output_shape: its output's shape (batch first).
    """

    def __init__(self, model, role: str, output: str, num_threads: int | None = None):
        self.output = output
        self._interpreter = None
        self._keras = None
        if isinstance(model, (str, os.PathLike)):
            path = os.fspath(model)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{role} model {path} does not exist; expected a .keras or .tflite file")
            if path.endswith(".tflite"):
                from ai_edge_litert.interpreter import Interpreter

                self._interpreter = Interpreter(model_path=path, num_threads=num_threads)
                self._interpreter.allocate_tensors()
                shape = self._interpreter.get_input_details()[0]["shape"]
                self.output_shape = tuple(int(v) for v in self._interpreter.get_output_details()[0]["shape"])
                self.description = f"TFLite {role} {path}"
            elif path.endswith(".keras"):
                from handshape_tf.inference.backends import load_keras_model

                self._keras = load_keras_model(path)
                self.description = f"Keras {role} {path}"
            else:
                raise ValueError(f"{role} model {path}: expected a .keras or .tflite file")
        else:
            self._keras = model
            self.description = f"Keras {role} {getattr(model, 'name', 'model')}"
        if self._keras is not None:
            shape = tuple(self._keras.inputs[0].shape)
            self.output_shape = tuple(self._keras.outputs[0].shape)
        self.input_height, self.input_width = int(shape[1]), int(shape[2])

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        """B x H x W x 3 uint8 inputs -> B x ... float32 output."""
        images = np.asarray(inputs, np.float32) / 255.0
        if self._keras is not None:
            out = self._keras(images, training=False)
            return np.asarray(out[self.output] if isinstance(out, dict) else out, np.float32)
        interpreter = self._interpreter
        parts = []
        for image in images:
            interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image[None])
            interpreter.invoke()
            parts.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]))
        return np.concatenate(parts).astype(np.float32)


class SideClassifier:
    """Left or right from a hand's crop (`handshape_tf.models.side`; .keras, .tflite or Keras model).

    Example:
      side = SideClassifier("side.tflite")
      side.left_probabilities(rgb_frame, [square_box])  # -> (1,) float32
    """

    def __init__(self, model, num_threads: int | None = None):
        self._model = ImageModel(model, "side classifier", "side_logits", num_threads)
        self.description = self._model.description
        self.image_size = self._model.input_height
        if self._model.output_shape[1:] != (3,):
            raise ValueError(f"{self.description} has output shape {self._model.output_shape}; expected B x 3")

    def left_probabilities(self, image: np.ndarray, boxes) -> np.ndarray:
        """n float32 probabilities that the hands in `boxes` ((x0, y0, w, h) frame pixels, n x 4;
        square crops as the mesh network's) of an H x W x 3 uint8 RGB frame are left hands.

        Each crop is classified as seen and mirrored (a mirrored left hand is a right one), and
        the two answers averaged: P(left) = (p(crop) + 1 - p(mirrored crop)) / 2 (side accuracy
        on 1,000 held-out crops 0.881 -> 0.895, unseen domain 0.809 -> 0.814, the first model).
        """
        if len(boxes) == 0:
            return np.zeros(0, np.float32)
        crops = np.stack([crop_and_resize(image, box, self.image_size)[0] for box in boxes])
        left = sigmoid(self._model(np.concatenate([crops, crops[:, :, ::-1]]))[:, 0])
        return ((left[: len(crops)] + 1.0 - left[len(crops) :]) / 2).astype(np.float32)


class HandDetector:
    """Finds hands in full frames with a detector model (.keras, in-memory Keras model or .tflite).

    Args:
      model: a path to a .keras or .tflite detector, or a Keras model from `build_detector`.
      stride: the detector's output stride R (read from the output shape when None).
      score_threshold, iou_threshold: as `decode`.
      num_threads: LiteRT threads for a .tflite model.
      side: a `SideClassifier` (or its model) that names each hand's side from its crop
        (`box_from_detection`); None keeps the detector's own left logit.

    Example:
      detector = HandDetector("detector.tflite", side=SideClassifier("side.tflite"))
      for detection in detector.detect(rgb_frame, max_hands=2):
          detection.box, detection.score, detection.handedness
    """

    def __init__(
        self,
        model,
        stride: int | None = None,
        score_threshold: float = DEFAULT_SCORE_THRESHOLD,
        iou_threshold: float = DEFAULT_IOU_THRESHOLD,
        num_threads: int | None = None,
        side=None,
    ):
        self.score_threshold = score_threshold
        self.iou_threshold = iou_threshold
        self._model = ImageModel(model, "detector", "detections", num_threads)
        self.description = self._model.description
        self.input_height, self.input_width = self._model.input_height, self._model.input_width
        self.stride = int(stride) if stride is not None else self.input_height // int(self._model.output_shape[1])
        self.side = side if side is None or isinstance(side, SideClassifier) else SideClassifier(side, num_threads)

    def raw(self, inputs: np.ndarray) -> np.ndarray:
        """B x H x W x 3 uint8 detector inputs -> B x h x w x 6 float32 outputs."""
        return self._model(inputs)

    def detect(self, image: np.ndarray, max_hands: int = 2) -> list[Detection]:
        """Detections in one H x W x 3 uint8 RGB frame (frame pixels), best first, at most `max_hands`."""
        canvas, fit = letterbox(image, self.input_height, self.input_width)
        output = self.raw(canvas[None])[0]
        found = decode(output, self.stride, self.score_threshold, self.iou_threshold, max_detections=max_hands)
        return self.with_sides(image, [dataclasses.replace(d, box=fit.to_frame(d.box)) for d in found])

    def with_sides(self, image: np.ndarray, detections: list[Detection]) -> list[Detection]:
        """The detections in `image` with their sides from the side classifier (unchanged without one)."""
        if self.side is None or not detections:
            return detections
        lefts = self.side.left_probabilities(image, [box_from_detection(d.box) for d in detections])
        return [dataclasses.replace(d, left_probability=float(p)) for d, p in zip(detections, lefts)]


def average_precision(
    detections: Sequence[Sequence[Detection]], truths: Sequence[np.ndarray], iou_threshold: float = 0.5
) -> float:
    """Average precision (all-point interpolated, VOC 2010+) of detections over frames.

    Args:
      detections: per frame, its detections (any score).
      truths: per frame, n x 4 ground-truth boxes.
      iou_threshold: a detection is a true positive when it overlaps a not yet matched truth
        of its frame by at least this (greedy by score).

    Returns:
      AP in [0, 1]; 1.0 when there are no truths and no detections, 0.0 with truths but no
      detections.
    """
    records = []  # (score, is true positive)
    total = 0
    for found, boxes in zip(detections, truths, strict=True):
        total += len(np.asarray(boxes).reshape(-1, 4))
        hits = {index for index, _ in match_detections(found, boxes, iou_threshold)}
        records += [(detection.score, index in hits) for index, detection in enumerate(found)]
    if total == 0:
        return 1.0 if not records else 0.0
    if not records:
        return 0.0
    records.sort(key=lambda r: -r[0])
    hits = np.array([r[1] for r in records], np.float64)
    tp = np.cumsum(hits)
    precision = tp / np.arange(1, len(hits) + 1)
    recall = tp / total
    # Precision envelope, then the area under the step curve.
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    recall_steps = np.concatenate([[0.0], recall])
    return float(np.sum((recall_steps[1:] - recall_steps[:-1]) * envelope))


def match_detections(
    found: Sequence[Detection], boxes: np.ndarray, iou_threshold: float = 0.5
) -> list[tuple[int, int]]:
    """Greedy (by score) one-to-one matches (detection index, truth index) with IoU >= threshold."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    matched = np.zeros(len(boxes), bool)
    pairs = []
    for index in sorted(range(len(found)), key=lambda k: -found[k].score):
        if not len(boxes):
            break
        overlaps = iou(np.asarray(found[index].box, np.float64), boxes)
        overlaps[matched] = -1.0
        best = int(np.argmax(overlaps))
        if overlaps[best] >= iou_threshold:
            matched[best] = True
            pairs.append((index, best))
    return pairs
