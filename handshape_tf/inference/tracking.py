"""Hands through video: detect, then follow each hand with crops from its own joints.

Shape shorthand: H x W frame, J = 21 keypoints, V = 1159 vertices.

The MediaPipe scheme (Zhang et al., *MediaPipe Hands*, 2020) on our models: the detector
(`detection.HandDetector`) finds hands in the first frame; from then on each hand's crop comes
from the 2D joints the mesh network predicted in the previous frame (`box_from_joints`:
a square around them, expanded, its centre and side smoothed over frames and its size change
per frame bounded, `next_box`), and the detector runs again only

* every `redetect_every` frames (to pick up hands that entered the picture), or
* when a tracked hand is lost: its heat-map confidence (the mean over joints of the peak of
  each joint's heat-map, `HandPrediction.confidence`) fell below `min_confidence`, or its box
  left the frame.

Detections are matched to tracks by IoU; a matched detection re-centres its track's crop, an
unmatched detection starts a track (up to `max_hands`), a track that no detection confirms is
dropped (the detector is the authority whenever it runs: a crop that drifted off its hand keeps
a plausible confidence and would otherwise hold its slot; measured on the synthetic clip of
`handshape_tf.evaluation.clip`), and two tracks that converge on one hand (IoU >
`duplicate_iou`) are merged. Left hands are mirrored into the network and
back (`HandPredictor.predict(is_left=True)`); a track's side is the running mean of its
detections' left probabilities.

Against jitter, a One Euro filter (Casiez et al., CHI 2012; `OneEuroFilter`) per track smooths
joints and mesh, in 2D and 3D (switch off with `filter_joints=False`); a track keeps its
filter through re-detections (a new filter only for a new track), and the crop itself follows
the unfiltered joints so it does not lag.

Numpy and OpenCV only (no TensorFlow import here): the LiteRT demo uses it as is.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from handshape_tf.data.crop import square_box_around
from handshape_tf.inference.detection import Detection, box_from_detection, iou
from handshape_tf.inference.prediction import HandPrediction

# Margin of a joints crop: side = (1 + 2 margin) x the joints' larger extent. Measured on the
# synthetic clip (`python -m handshape_tf.evaluation.clip`, shipped model and detector, detector
# every 10 frames): joint error 22.6% of the hand's size at 0.3, 19.0 at 0.45, 17.5 at 0.6,
# 17.0 at 0.8 (15.8 detecting every frame): the model's joints fall short of the fingertips,
# so a tight crop shrinks from frame to frame.
JOINT_MARGIN = 0.6


class OneEuroFilter:
    """The One Euro filter (Casiez, Roussel and Vogel, CHI 2012) over arrays of any shape.

    A first-order low-pass filter whose cut-off rises with the signal's speed: f_c =
    min_cutoff + beta |dx/dt| (per element), so slow jitter is smoothed strongly and fast
    motion passes with little lag. The derivative is itself low-passed at `d_cutoff`.

    Args:
      min_cutoff: cut-off frequency at rest, Hz (lower: smoother, more lag when slow).
      beta: speed coefficient (higher: less lag when fast).
      d_cutoff: cut-off of the derivative's filter, Hz.

    Example:
      smooth = OneEuroFilter(min_cutoff=1.0, beta=0.05)
      for t, joints in enumerate(stream): filtered = smooth(joints, t / 30.0)
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.05, d_cutoff: float = 1.0):
        for name, value in (("min_cutoff", min_cutoff), ("d_cutoff", d_cutoff)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} is {value!r}; expected a frequency > 0 (Hz)")
        if not (math.isfinite(beta) and beta >= 0):
            raise ValueError(f"beta is {beta!r}; expected a number >= 0")
        self.min_cutoff = min_cutoff
        self.beta = beta
        self.d_cutoff = d_cutoff
        self.reset()

    def reset(self) -> None:
        self._x = None
        self._dx = None
        self._t = None

    @staticmethod
    def alpha(cutoff, dt: float):
        """Smoothing factor of a first-order low-pass at `cutoff` Hz for a step of dt seconds."""
        tau = 1.0 / (2.0 * np.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def __call__(self, x, t: float) -> np.ndarray:
        """The filtered value of sample `x` at time `t` (seconds, increasing)."""
        x = np.asarray(x, np.float64)
        if self._x is None:
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), float(t)
            return x.copy()
        if x.shape != self._x.shape:
            raise ValueError(f"sample has shape {x.shape}; the filter holds {self._x.shape} (reset it first)")
        dt = float(t) - self._t
        if dt <= 0:
            raise ValueError(f"time {t} is not after the previous sample's {self._t}; expected increasing times")
        dx = (x - self._x) / dt
        self._dx = self._dx + self.alpha(self.d_cutoff, dt) * (dx - self._dx)
        cutoff = self.min_cutoff + self.beta * np.abs(self._dx)
        self._x = self._x + self.alpha(cutoff, dt) * (x - self._x)
        self._t = float(t)
        return self._x.copy()


def box_from_joints(joints_uv, margin: float = JOINT_MARGIN, min_side: float = 8.0) -> np.ndarray:
    """(4,) float32 square crop around J x 2 joints (pixels): side (1 + 2 margin) x their larger extent."""
    return square_box_around(joints_uv, margin=margin, min_side=min_side)


def next_box(
    previous, joints_uv, margin: float = JOINT_MARGIN, smoothing: float = 0.3, max_change: float = 1.25
) -> np.ndarray:
    """The next frame's crop of a tracked hand from this frame's predicted joints.

    Args:
      previous: (4,) square crop of this frame.
      joints_uv: J x 2 joints predicted in it (frame pixels).
      margin: as `box_from_joints`.
      smoothing: weight of the previous crop's centre and side (0: follow the joints exactly).
      max_change: the side changes by at most this factor per frame (either way): a bad
        prediction (joints collapsed or spread) cannot shrink or blow up the crop at once.

    Returns:
      (4,) float32 square crop.
    """
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing is {smoothing!r}; expected a weight in [0, 1)")
    if max_change < 1.0:
        raise ValueError(f"max_change is {max_change!r}; expected a factor >= 1")
    previous = np.asarray(previous, np.float64)
    target = box_from_joints(joints_uv, margin).astype(np.float64)
    centre_prev = previous[:2] + previous[2:] / 2
    centre_new = target[:2] + target[2:] / 2
    side_prev = max(previous[2], previous[3])
    side = np.clip(smoothing * side_prev + (1 - smoothing) * target[2], side_prev / max_change, side_prev * max_change)
    centre = smoothing * centre_prev + (1 - smoothing) * centre_new
    return np.array([centre[0] - side / 2, centre[1] - side / 2, side, side], np.float32)


def overlaps_frame(box, width: int, height: int, minimum: float = 0.25) -> bool:
    """Whether at least `minimum` of the box's area lies inside the width x height frame."""
    x0, y0, w, h = np.asarray(box, np.float64)
    inside = max(0.0, min(x0 + w, width) - max(x0, 0.0)) * max(0.0, min(y0 + h, height) - max(y0, 0.0))
    return inside >= minimum * w * h


@dataclasses.dataclass
class Track:
    """A followed hand (mutable state of `HandTracker`)."""

    track_id: int
    box: np.ndarray
    left_probability: float
    score: float
    detections: int = 1
    lost: bool = False
    confidence: float = 1.0
    filter: OneEuroFilter | None = None


@dataclasses.dataclass(frozen=True)
class TrackedHand:
    """One hand in one frame.

    Attributes:
      track_id: stable id of the hand across frames.
      box: (4,) float32 crop the mesh network saw (x0, y0, w, h), frame pixels.
      handedness: "left" or "right" (the side the hand was mirrored for).
      left_probability: running mean of the detector's left-hand probability.
      score: the detector's score at the hand's last detection.
      confidence: mean heat-map confidence of this frame's prediction (0 .. ~1).
      detected: this frame's crop came from a detection (not from the previous joints).
      prediction: the `HandPrediction` (joints and mesh filtered when the tracker filters).
    """

    track_id: int
    box: np.ndarray
    handedness: str
    left_probability: float
    score: float
    confidence: float
    detected: bool
    prediction: HandPrediction

    @property
    def is_left(self) -> bool:
        return self.handedness == "left"

    def to_dict(self, include_mesh: bool = True) -> dict:
        result = {
            "track_id": self.track_id,
            "box": [float(v) for v in self.box],
            "handedness": self.handedness,
            "left_probability": float(self.left_probability),
            "score": float(self.score),
            "confidence": float(self.confidence),
            "detected": bool(self.detected),
        }
        hand = self.prediction.to_dict()
        if not include_mesh:
            hand = {k: v for k, v in hand.items() if k not in ("mesh_uv", "mesh_uvd", "vertices_xyz")}
        result["hand"] = hand
        return result


_FILTERED = ("joints_uv", "mesh_uv", "joints_xyz", "vertices_xyz")


class HandTracker:
    """Detect-then-track over a video (module docstring).

    Args:
      predictor: a `HandPredictor` (any backend).
      detector: a `detection.HandDetector` (anything with `detect(frame, max_hands)` returning
        `Detection`s in frame pixels).
      max_hands: most hands followed at once.
      redetect_every: the detector runs at least every this many frames (>= 1; 1 = every frame).
      min_confidence: a hand whose heat-map confidence falls below this is lost.
      filter_joints: smooth joints and mesh with a One Euro filter.
      min_cutoff, beta: the filter's parameters (`OneEuroFilter`).
      box_smoothing, max_box_change: as `next_box`.
      fps: frame rate assumed when `update` gets no timestamps.
      always_detect: run the detector on every frame (the baseline tracking is measured against).

    Attributes:
      frames: frames processed; detector_runs: frames on which the detector ran.
    """

    def __init__(
        self,
        predictor,
        detector,
        max_hands: int = 2,
        redetect_every: int = 10,
        min_confidence: float = 0.2,
        filter_joints: bool = True,
        min_cutoff: float = 1.0,
        beta: float = 0.05,
        box_smoothing: float = 0.3,
        max_box_change: float = 1.25,
        fps: float = 30.0,
        always_detect: bool = False,
        duplicate_iou: float = 0.5,
    ):
        if isinstance(max_hands, bool) or not isinstance(max_hands, int) or max_hands < 1:
            raise ValueError(f"max_hands is {max_hands!r}; expected an int >= 1")
        if isinstance(redetect_every, bool) or not isinstance(redetect_every, int) or redetect_every < 1:
            raise ValueError(f"redetect_every is {redetect_every!r}; expected an int >= 1 (frames)")
        if not fps > 0:
            raise ValueError(f"fps is {fps!r}; expected > 0")
        self.predictor = predictor
        self.detector = detector
        self.max_hands = max_hands
        self.redetect_every = redetect_every
        self.min_confidence = min_confidence
        self.filter_joints = filter_joints
        self.min_cutoff = min_cutoff
        self.beta = beta
        self.box_smoothing = box_smoothing
        self.max_box_change = max_box_change
        self.fps = fps
        self.always_detect = always_detect
        self.duplicate_iou = duplicate_iou
        self.reset()

    def reset(self) -> None:
        """Forgets every hand (a new video)."""
        self.tracks: list[Track] = []
        self.frames = 0
        self.detector_runs = 0
        self._next_id = 0
        self._last_detection = None

    def _needs_detection(self) -> bool:
        if self.always_detect or not self.tracks or any(t.lost for t in self.tracks):
            return True
        return self.frames - self._last_detection >= self.redetect_every

    def _detect(self, frame: np.ndarray) -> list[bool]:
        """Runs the detector and updates the tracks; returns which tracks got a detection's box."""
        self.detector_runs += 1
        self._last_detection = self.frames
        found = sorted(self.detector.detect(frame, max_hands=self.max_hands), key=lambda d: -d.score)
        crops = [box_from_detection(d.box) for d in found]
        used = set()
        fresh = []
        kept = []
        for track in self.tracks:
            best, overlap = None, 0.3
            for index, crop in enumerate(crops):
                if index in used:
                    continue
                value = float(iou(track.box.astype(np.float64), crop[None].astype(np.float64))[0])
                if value > overlap:
                    best, overlap = index, value
            if best is None:
                continue  # the detector no longer sees it: a hand that left, or a crop that drifted off
            used.add(best)
            detection = found[best]
            track.left_probability = (track.left_probability * track.detections + detection.left_probability) / (
                track.detections + 1
            )
            track.detections += 1
            track.score = detection.score
            track.box = crops[best]  # the detection re-centres the crop
            track.lost = False
            fresh.append(True)
            kept.append(track)
        for index, detection in enumerate(found):
            if index in used or len(kept) >= self.max_hands:
                continue
            kept.append(self._new_track(crops[index], detection))
            fresh.append(True)
        self.tracks = kept
        return fresh

    def _new_track(self, crop: np.ndarray, detection: Detection) -> Track:
        track = Track(self._next_id, crop, detection.left_probability, detection.score)
        self._next_id += 1
        if self.filter_joints:
            track.filter = OneEuroFilter(self.min_cutoff, self.beta)
        return track

    def update(self, frame: np.ndarray, timestamp: float | None = None) -> list[TrackedHand]:
        """The hands in the next frame (H x W x 3 uint8 RGB), by track id.

        Args:
          frame: the frame.
          timestamp: its time in seconds (default: frame count / fps).
        """
        frame = np.asarray(frame)
        height, width = frame.shape[:2]
        t = self.frames / self.fps if timestamp is None else float(timestamp)
        fresh = self._detect(frame) if self._needs_detection() else [False] * len(self.tracks)
        self.frames += 1
        alive = [(track, new) for track, new in zip(self.tracks, fresh) if overlaps_frame(track.box, width, height)]
        if not alive:
            self.tracks = []
            return []
        predictions = self.predictor.predict(
            [frame] * len(alive), boxes=[t.box for t, _ in alive], is_left=[t.left_probability >= 0.5 for t, _ in alive]
        )
        results = []
        for (track, new), raw in zip(alive, predictions):
            prediction = raw
            track.confidence = float(np.mean(prediction.confidence))
            track.lost = track.confidence < self.min_confidence
            if track.filter is not None:
                stacked = np.concatenate([getattr(prediction, name).reshape(-1) for name in _FILTERED])
                smooth = track.filter(stacked, t)
                parts, start = {}, 0
                for name in _FILTERED:
                    value = getattr(prediction, name)
                    parts[name] = smooth[start : start + value.size].reshape(value.shape).astype(np.float32)
                    start += value.size
                prediction = dataclasses.replace(prediction, **parts)
            results.append(
                TrackedHand(
                    track_id=track.track_id,
                    box=track.box.copy(),
                    handedness="left" if prediction.is_left else "right",
                    left_probability=track.left_probability,
                    score=track.score,
                    confidence=track.confidence,
                    detected=new,
                    prediction=prediction,
                )
            )
            track.box = next_box(track.box, raw.joints_uv, smoothing=self.box_smoothing, max_change=self.max_box_change)
            if not overlaps_frame(track.box, width, height):
                track.lost = True
        self.tracks = [track for track, _ in alive]
        self._merge_duplicates()
        return sorted(results, key=lambda hand: hand.track_id)

    def _merge_duplicates(self) -> None:
        """Drops the less confident of two tracks whose crops overlap by more than duplicate_iou."""
        order = sorted(self.tracks, key=lambda t: -t.confidence)
        kept: list[Track] = []
        for track in order:
            if all(
                float(iou(track.box.astype(np.float64), other.box[None].astype(np.float64))[0]) <= self.duplicate_iou
                for other in kept
            ):
                kept.append(track)
        self.tracks = sorted(kept, key=lambda t: t.track_id)


def detect_hands(predictor, detector, image: np.ndarray, max_hands: int = 2) -> list[TrackedHand]:
    """Every hand in one still image: detection, then the mesh network on each hand's crop."""
    tracker = HandTracker(predictor, detector, max_hands=max_hands, filter_joints=False, min_confidence=0.0)
    return tracker.update(image)
