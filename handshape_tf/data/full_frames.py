"""Full frames for the hand detector: rendered hands composited over photographs.

Shape shorthand: H x W frame, N hand crop side, K hands in the pool, n hands in a frame,
J = 21 keypoints.

The mesh network's renderer (`renderer.HandRenderer`) draws one hand per square crop; a
detector needs whole frames with any number of hands anywhere. Rendering a full frame per
training sample would cost a rasterisation per hand per frame, so hands are rendered once into
a **pool** (`HandPool`: each hand's `image_rgba`, the hand alone with its anti-aliased alpha, its
2D joints and side) and frames are **composited** from it (`compose_frame`), as many as wanted:

1. Background: a crop of a photograph (`BackgroundSource`, e.g. the photo bank's train part
   for training and its test part for held-out frames), taken square at max(H, W) and cut to
   H x W, in linear RGB.
2. Distractors (`FrameConfig.distractors`, forearm-free): skin-coloured ellipses and bars (an
   arm, a face-like blob, with no hand attached: the detector must not fire on skin alone) and
   random grey or coloured shapes; a fraction of them is drawn after the hands (partly in front
   of them).
3. 0 .. max_hands hands (`FrameConfig.hand_counts` probabilities), each a pool hand, mirrored
   half the time (a mirrored right hand is a left hand: `is_left` flips), scaled so the larger
   side of its box is `hand_size` x the frame's shorter side (log-uniform), rotated in the
   image plane by up to `rotation_deg`, and placed anywhere with at most `max_outside` of its
   box outside the frame. Placements whose box overlaps an earlier hand's by IoU >
   `max_overlap` are redrawn (a hand may then be dropped). With `forearm_probability` a
   forearm (a tapered band in the hand's mean colour, or a sleeve colour, shaded across) is
   drawn first, leaving the picture from the wrist away from the middle finger's MCP.
4. Camera effects of the domain (`camera_effects.apply_camera`, once over the whole frame;
   a non-square frame is processed on its centred max(H, W) square canvas and cut back).

Labels per hand: `boxes` (x0, y0, w, h) in frame pixels (continuous convention: the box of the
pixels where the hand's visible alpha is >= 0.5, i.e. after later hands, forearms and
distractors in front of it, clipped to the frame), `is_left`, `joints_uv` (J x 2, frame
pixels, may lie outside the frame or under an occluder). Hands with fewer than
`min_visible_pixels` visible pixels are dropped from the labels (and usually from the frame:
only placement decides).

Frame i of a stream seeded with s draws from `np.random.default_rng([s, FRAME_STREAM, i])`: the
same (pool, seed, index, config) gives the same frame, whatever was composed before.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from handshape_tf.data.appearance import srgb_to_linear
from handshape_tf.data.backgrounds import BackgroundSource
from handshape_tf.data.camera_effects import apply_camera
from handshape_tf.data.domains import Domain

logger = logging.getLogger(__name__)

FRAME_STREAM = 0xF4A3E  # keys the frame stream's generators (beside the seed and index)
CLIP_STREAM = 0xC11B5  # keys a clip's generators (beside the seed and frame)
NUM_KEYPOINTS = 21
WRIST, MIDDLE_MCP, INDEX_MCP, LITTLE_MCP = 0, 9, 5, 17
ALPHA_THRESHOLD = 0.5  # a pixel belongs to a hand's box where its visible alpha is >= this


@dataclasses.dataclass(frozen=True)
class FrameConfig:
    """How full frames are composited (module docstring).

    Attributes:
      width, height: frame size in pixels.
      hand_counts: probabilities of 0, 1, 2, ... hands in a frame (sums to 1; its length - 1 is
        the most hands a frame holds).
      hand_size: (low, high) the larger side of a hand's box / the frame's shorter side.
      rotation_deg: in-plane rotation of a hand, uniform within +- this.
      max_outside: the largest fraction of a hand's box (per axis) that may lie outside the frame.
      max_overlap: the largest IoU between a new hand's box and an earlier one's.
      forearm_probability: probability that a hand has a forearm.
      distractors: (low, high) number of distractor shapes, inclusive.
      distractors_in_front: probability that a distractor is drawn after the hands.
      mirror_probability: probability that a pool hand is mirrored (the other side).
      min_visible_pixels: hands with fewer visible pixels are not labelled.
    """

    width: int = 256
    height: int = 256
    hand_counts: tuple[float, ...] = (0.15, 0.4, 0.3, 0.15)
    hand_size: tuple[float, float] = (0.12, 0.65)
    rotation_deg: float = 35.0
    max_outside: float = 0.2
    max_overlap: float = 0.15
    forearm_probability: float = 0.75
    distractors: tuple[int, int] = (0, 3)
    distractors_in_front: float = 0.2
    mirror_probability: float = 0.5
    min_visible_pixels: int = 24

    def __post_init__(self):
        if self.width < 32 or self.height < 32:
            raise ValueError(f"frame is {self.width} x {self.height}; expected at least 32 x 32 pixels")
        counts = np.asarray(self.hand_counts, np.float64)
        if counts.ndim != 1 or len(counts) < 1 or np.any(counts < 0) or abs(counts.sum() - 1.0) > 1e-6:
            raise ValueError(
                f"hand_counts is {self.hand_counts!r}; expected probabilities of 0, 1, ... hands summing to 1"
            )
        low, high = self.hand_size
        if not 0 < low <= high:
            raise ValueError(f"hand_size is {self.hand_size!r}; expected 0 < low <= high")
        if self.distractors[0] < 0 or self.distractors[1] < self.distractors[0]:
            raise ValueError(f"distractors is {self.distractors!r}; expected 0 <= low <= high")

    @property
    def max_hands(self) -> int:
        return len(self.hand_counts) - 1


@dataclasses.dataclass(frozen=True)
class HandPool:
    """Rendered hands to composite (module docstring).

    Attributes:
      rgba: K x N x N x 4 uint8, the hand alone (sRGB) with its alpha.
      joints_uv: K x J x 2 float32 crop pixels.
      is_left: K bool.
    """

    rgba: np.ndarray
    joints_uv: np.ndarray
    is_left: np.ndarray

    def __post_init__(self):
        k = len(self.rgba)
        if self.rgba.ndim != 4 or self.rgba.shape[-1] != 4 or k == 0:
            raise ValueError(f"rgba has shape {self.rgba.shape}; expected K x N x N x 4 with K >= 1")
        if self.joints_uv.shape != (k, NUM_KEYPOINTS, 2) or self.is_left.shape != (k,):
            raise ValueError(
                f"joints_uv {self.joints_uv.shape} and is_left {self.is_left.shape} do not match {k} hands; "
                f"expected ({k}, {NUM_KEYPOINTS}, 2) and ({k},)"
            )

    def __len__(self) -> int:
        return len(self.rgba)

    def save(self, path) -> None:
        """Writes the pool to an .npz file (through a temporary file and a rename)."""
        import os
        from pathlib import Path

        path = Path(path)
        tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.npz")
        np.savez(tmp, rgba=self.rgba, joints_uv=self.joints_uv, is_left=self.is_left)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path) -> HandPool:
        with np.load(path) as data:
            return cls(rgba=data["rgba"], joints_uv=data["joints_uv"], is_left=data["is_left"].astype(bool))


def render_hand_pool(renderer, seed: int, count: int, views: str = "full", progress=None) -> HandPool:
    """Renders `count` hands (samples 0 .. count - 1 of the dataset seeded with `seed`).

    Args:
      renderer: a `renderer.HandRenderer` (its image size is the pool's N).
      seed: the dataset seed (`synthetic.sample_rng`).
      count: K >= 1.
      views: the renderer's view distribution ("full" or "frontal").
      progress: optional callable(done, total).
    """
    from handshape_tf.data.synthetic import render_range

    if count < 1:
        raise ValueError(f"count is {count!r}; expected at least one hand")
    rgba, joints, left = [], [], []
    for sample in render_range(renderer, seed, 0, count, views):
        rgba.append(sample["image_rgba"])
        joints.append(sample["joints_uv"])
        left.append(bool(sample["is_left"]))
        if progress is not None:
            progress(len(rgba), count)
    return HandPool(np.stack(rgba), np.stack(joints).astype(np.float32), np.array(left, bool))


def frame_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of frame `index` of the stream seeded with `seed`."""
    return np.random.default_rng([int(seed), FRAME_STREAM, int(index)])


def mask_box(alpha: np.ndarray, threshold: float = ALPHA_THRESHOLD) -> np.ndarray | None:
    """(4,) float32 (x0, y0, w, h) of the pixels where alpha >= threshold (pixel edges), or None."""
    rows = np.flatnonzero((alpha >= threshold).any(axis=1))
    if rows.size == 0:
        return None
    columns = np.flatnonzero((alpha >= threshold).any(axis=0))
    return np.array([columns[0], rows[0], columns[-1] + 1 - columns[0], rows[-1] + 1 - rows[0]], np.float32)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes A x 4 and B x 4 (x0, y0, w, h) -> A x B."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 0] + a[:, None, 2], b[None, :, 0] + b[None, :, 2])
    y1 = np.minimum(a[:, None, 1] + a[:, None, 3], b[None, :, 1] + b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def _paint(radiance: np.ndarray, hands: list[dict[str, Any]], colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """`radiance` (H x W x 3) with a layer of `colour` over it by `alpha` (H x W); the placed
    hands' visible alpha shrinks where the layer covers them."""
    for hand in hands:
        hand["alpha"] *= 1.0 - alpha
    return colour * alpha[..., None] + radiance * (1.0 - alpha[..., None])


def _rotated_extent(box: np.ndarray, angle: float) -> np.ndarray:
    """(w, h) of the axis-aligned box around `box` (x0, y0, w, h) rotated by `angle` degrees."""
    cos, sin = abs(np.cos(np.radians(angle))), abs(np.sin(np.radians(angle)))
    return np.array([cos * box[2] + sin * box[3], sin * box[2] + cos * box[3]])


def _mean_colour(rgba: np.ndarray) -> np.ndarray:
    """Linear RGB mean of the pixels of an RGBA crop with alpha >= 0.5 (mid grey if none)."""
    solid = rgba[..., 3] >= 128
    if not solid.any():
        return np.full(3, 0.2, np.float32)
    return srgb_to_linear(rgba[solid, :3].astype(np.float32).mean(axis=0) / 255.0).astype(np.float32)


def _layer(height: int, width: int, draw) -> np.ndarray:
    """H x W float32 alpha of a shape drawn by `draw(canvas)` on a 4x supersampled uint8 canvas."""
    factor = 4
    canvas = np.zeros((height * factor, width * factor), np.uint8)
    draw(canvas, factor)
    return cv2.resize(canvas, (width, height), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def _band(start: np.ndarray, direction: np.ndarray, length: float, widths: tuple[float, float]):
    """Corners (4 x 2) of a tapered band from `start` along unit `direction`."""
    normal = np.array([-direction[1], direction[0]])
    end = start + length * direction
    return np.array(
        [
            start + widths[0] / 2 * normal,
            end + widths[1] / 2 * normal,
            end - widths[1] / 2 * normal,
            start - widths[0] / 2 * normal,
        ]
    )


def _shaded(colour: np.ndarray, alpha: np.ndarray, rng: np.random.Generator, direction: np.ndarray) -> np.ndarray:
    """H x W x 3 linear colour with a linear brightness gradient across `direction`."""
    height, width = alpha.shape
    rows, columns = np.mgrid[0:height, 0:width].astype(np.float32)
    t = (columns * direction[0] + rows * direction[1]) / max(height, width)
    gain = rng.uniform(0.6, 1.0) + rng.uniform(-0.3, 0.3) * t
    return np.clip(colour[None, None, :] * gain[..., None], 0.0, 1.0).astype(np.float32)


class FrameComposer:
    """Composites full frames from a hand pool (module docstring).

    Args:
      pool: the `HandPool`.
      backgrounds: a `BackgroundSource` (e.g. a photo bank part).
      domain: the camera effects come from `domain.camera`.
      config: the `FrameConfig`.

    Example:
      composer = FrameComposer(pool, BackgroundSource(bank / "train"), PHOTO, FrameConfig())
      frame = composer.frame(seed=0, index=17)
      frame["image"], frame["boxes"], frame["is_left"]
    """

    def __init__(
        self, pool: HandPool, backgrounds: BackgroundSource, domain: Domain, config: FrameConfig = FrameConfig()
    ):
        self.pool = pool
        self.backgrounds = backgrounds
        self.domain = domain
        self.config = config
        self._colours = np.stack([_mean_colour(rgba) for rgba in pool.rgba])  # K x 3 skin colours
        # K x 4 box of each pool hand's pixels in its crop (NaN for an empty crop), once.
        boxes = [mask_box(rgba[..., 3].astype(np.float32) / 255.0) for rgba in pool.rgba]
        self._boxes = np.array([np.full(4, np.nan) if box is None else box for box in boxes], np.float32)

    def frame(self, seed: int, index: int, return_alpha: bool = False) -> dict[str, Any]:
        """Frame `index` of the stream seeded with `seed` (`compose` with `frame_rng`)."""
        return self.compose(frame_rng(seed, index), return_alpha=return_alpha)

    def frames(self, seed: int, indices: Sequence[int]) -> list[dict[str, Any]]:
        return [self.frame(seed, i) for i in indices]

    def compose(self, rng: np.random.Generator, return_alpha: bool = False) -> dict[str, Any]:
        """One frame drawn from `rng`.

        Returns:
          dict with image (H x W x 3 uint8 sRGB), boxes (n x 4 float32 x0, y0, w, h),
          is_left (n bool), joints_uv (n x J x 2 float32 frame pixels) and, with
          `return_alpha`, alpha (n x H x W float32 visible alpha of each labelled hand).
        """
        config = self.config
        height, width = config.height, config.width
        side = max(height, width)
        top, left = (side - height) // 2, (side - width) // 2
        background = self.backgrounds.sample(rng, side)[top : top + height, left : left + width]
        radiance = srgb_to_linear(background.astype(np.float32) / 255.0).astype(np.float32)

        count = int(rng.choice(len(config.hand_counts), p=np.asarray(config.hand_counts) / sum(config.hand_counts)))
        num_distractors = int(rng.integers(config.distractors[0], config.distractors[1] + 1))
        in_front = rng.uniform(size=num_distractors) < config.distractors_in_front
        hands: list[dict[str, Any]] = []  # placed hands: visible alpha, box, is_left, joints

        def paint(colour: np.ndarray, alpha: np.ndarray) -> None:
            nonlocal radiance
            radiance = _paint(radiance, hands, colour, alpha)

        for _ in range(int((~in_front).sum())):
            paint(*self._distractor(rng, height, width))
        for _ in range(count):
            placed = self._place_hand(rng, hands)
            if placed is None:
                continue
            colour, alpha, forearm, hand = placed
            if forearm is not None:
                paint(*forearm)
            paint(colour, alpha)
            hands.append(hand)
        for _ in range(int(in_front.sum())):
            paint(*self._distractor(rng, height, width))

        return self._finish(rng, radiance, hands, return_alpha)

    def _finish(self, rng, radiance: np.ndarray, hands: list[dict[str, Any]], return_alpha: bool) -> dict[str, Any]:
        """The frame through the domain's camera, and the labels of the hands visible enough."""
        config = self.config
        height, width = config.height, config.width
        side = max(height, width)
        top, left = (side - height) // 2, (side - width) // 2
        # A non-square frame goes through the camera on its square canvas (reflected padding,
        # so vignetting and blur see no black border) and is cut back.
        canvas = cv2.copyMakeBorder(radiance, top, side - height - top, left, side - width - left, cv2.BORDER_REFLECT)
        image = apply_camera(rng, canvas, self.domain.camera, side)[top : top + height, left : left + width]

        labelled = []
        for hand in hands:
            box = mask_box(hand["alpha"])
            if box is None or int((hand["alpha"] >= ALPHA_THRESHOLD).sum()) < config.min_visible_pixels:
                continue
            labelled.append((box, hand))
        result = {
            "image": np.ascontiguousarray(image),
            "boxes": np.array([b for b, _ in labelled], np.float32).reshape(-1, 4),
            "is_left": np.array([h["is_left"] for _, h in labelled], bool),
            "joints_uv": np.array([h["joints_uv"] for _, h in labelled], np.float32).reshape(-1, NUM_KEYPOINTS, 2),
        }
        if any("hand_id" in h for _, h in labelled):
            result["hand_ids"] = np.array([h["hand_id"] for _, h in labelled], np.int64)
        if return_alpha:
            result["alpha"] = np.array([h["alpha"] for _, h in labelled], np.float32).reshape(-1, height, width)
        return result

    def clip(self, seed: int, num_frames: int, num_hands: int = 2, poses_per_hand: int = 3) -> list[dict[str, Any]]:
        """A synthetic video: `num_hands` hands moving over one background photo.

        Hand k keeps one side (right for even k, left for odd k) and shows `poses_per_hand`
        pool hands in turn (a gesture change every num_frames / poses_per_hand frames, mirrored
        to the hand's side); its box centre crosses the frame in a straight line (even k from
        left to right, odd k from right to left, so two hands cross) with a vertical sway, its
        size and in-plane angle oscillating; hand k + 1 is drawn over hand k, each with its
        forearm. The camera's effects are drawn anew per frame (noise changes as in a video).
        Frame t of the clip seeded with `seed` is the same whatever else was composed.

        Returns:
          num_frames dicts as `compose` returns, each with hand_ids (n,): which hand k each
          labelled hand is.
        """
        config = self.config
        height, width = config.height, config.width
        if num_frames < 1 or num_hands < 1 or poses_per_hand < 1:
            raise ValueError(
                f"num_frames {num_frames!r}, num_hands {num_hands!r}, poses_per_hand {poses_per_hand!r}; "
                "expected each >= 1"
            )
        rng = np.random.default_rng([int(seed), CLIP_STREAM])
        side = max(height, width)
        top, left = (side - height) // 2, (side - width) // 2
        background = self.backgrounds.sample(rng, side)[top : top + height, left : left + width]
        base = srgb_to_linear(background.astype(np.float32) / 255.0).astype(np.float32)
        tracks = []
        for k in range(num_hands):
            indices = rng.integers(len(self.pool), size=poses_per_hand)
            want_left = bool(k % 2)
            xs = (0.2 * width, 0.8 * width)
            tracks.append(
                {
                    "indices": indices,
                    "mirrored": [bool(self.pool.is_left[i]) != want_left for i in indices],
                    "size": rng.uniform(0.3, 0.45) * min(height, width),
                    "angle": rng.uniform(-20.0, 20.0),
                    "x": xs if k % 2 == 0 else xs[::-1],
                    "y": rng.uniform(0.35, 0.65) * height,
                    "phase": rng.uniform(0.0, 2.0 * np.pi),
                    "forearm_seed": int(rng.integers(2**32)),
                }
            )
        frames = []
        for t in range(num_frames):
            u = t / max(num_frames - 1, 1)
            radiance = base.copy()
            hands: list[dict[str, Any]] = []
            for k, track in enumerate(tracks):
                pose = min(int(u * poses_per_hand), poses_per_hand - 1)
                index, mirrored = int(track["indices"][pose]), track["mirrored"][pose]
                wave = np.sin(2.0 * np.pi * u + track["phase"])
                size = track["size"] * (1.0 + 0.15 * wave)
                angle = track["angle"] + 15.0 * np.sin(3.0 * np.pi * u + track["phase"])
                target = np.array(
                    [track["x"][0] + (track["x"][1] - track["x"][0]) * u, track["y"] + 0.08 * height * wave]
                )
                colour, alpha, hand = self._warp_hand(index, mirrored, size, angle, target)
                hand["hand_id"] = k
                same_forearm = np.random.default_rng(track["forearm_seed"])  # the same arm in every frame
                forearm = self._forearm(same_forearm, hand["joints_uv"], size, self._colours[index], height, width)
                if forearm is not None:
                    radiance = _paint(radiance, hands, *forearm)
                radiance = _paint(radiance, hands, colour, alpha)
                hands.append(hand)
            frames.append(self._finish(np.random.default_rng([int(seed), CLIP_STREAM, t]), radiance, hands, False))
        return frames

    def _place_hand(self, rng: np.random.Generator, hands: list[dict[str, Any]]):
        """(colour H x W x 3, alpha H x W, forearm (colour, alpha) or None, hand record) or None
        when no placement without overlap was found."""
        config = self.config
        height, width = config.height, config.width
        index = int(rng.integers(len(self.pool)))
        mirrored = bool(rng.uniform() < config.mirror_probability)
        if self._crop_box(index, mirrored) is None:
            return None
        size = np.exp(rng.uniform(*np.log(config.hand_size))) * min(height, width)
        angle = rng.uniform(-config.rotation_deg, config.rotation_deg)
        box_size = self._box_size(index, mirrored, size, angle)
        for _ in range(10):
            low = box_size / 2 - config.max_outside * box_size
            high = np.array([width, height]) - low
            target = rng.uniform(low, np.maximum(high, low + 1e-3))
            box = np.concatenate([target - box_size / 2, box_size])
            if not hands or box_iou(box, np.array([h["placed_box"] for h in hands])).max() <= config.max_overlap:
                break
        else:
            return None
        colour, alpha, hand = self._warp_hand(index, mirrored, size, angle, target)
        forearm = None
        if rng.uniform() < config.forearm_probability:
            forearm = self._forearm(rng, hand["joints_uv"], size, self._colours[index], height, width)
        return colour, alpha, forearm, hand

    def _oriented(self, index: int, mirrored: bool):
        """Pool hand `index` as placed: (rgba N x N x 4, joints J x 2 float64, is_left), mirrored
        (the other side) when asked."""
        rgba = self.pool.rgba[index]
        joints = self.pool.joints_uv[index].astype(np.float64)
        is_left = bool(self.pool.is_left[index])
        if mirrored:
            rgba = rgba[:, ::-1]
            joints = np.stack([rgba.shape[1] - joints[:, 0], joints[:, 1]], axis=1)
            is_left = not is_left
        return rgba, joints, is_left

    def _crop_box(self, index: int, mirrored: bool) -> np.ndarray | None:
        """The box of the oriented pool hand's pixels in its crop (None: an empty crop)."""
        box = self._boxes[index].copy()
        if np.isnan(box).any():
            return None
        if mirrored:
            box[0] = self.pool.rgba.shape[2] - box[0] - box[2]
        return box

    def _box_size(self, index: int, mirrored: bool, size: float, angle: float) -> np.ndarray:
        """(w, h) of the hand's box once rotated by `angle` degrees and scaled so its larger side is `size`."""
        extent = _rotated_extent(self._crop_box(index, mirrored), angle)
        return extent * (size / extent.max())

    def _warp_hand(self, index: int, mirrored: bool, size: float, angle: float, target: np.ndarray):
        """(colour H x W x 3 linear, alpha H x W, hand record) of the oriented pool hand rotated by
        `angle` degrees about its box's centre, scaled so the rotated box's larger side is `size`
        and moved so that centre lands on `target` (frame pixels)."""
        config = self.config
        rgba, joints, is_left = self._oriented(index, mirrored)
        crop_box = self._crop_box(index, mirrored)
        extent = _rotated_extent(crop_box, angle)
        scale = size / extent.max()
        box_size = extent * scale
        centre = crop_box[:2] + crop_box[2:] / 2
        matrix = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), angle, scale)
        matrix[:, 2] += target - centre  # the crop box's centre lands on target
        # warpAffine maps pixel centres (integers) while our points use continuous coordinates
        # (centres at i + 0.5): q -> M(q + 0.5) - 0.5 for the continuous map M = [A | b].
        pixel_matrix = matrix.copy()
        pixel_matrix[:, 2] += matrix[:, :2] @ [0.5, 0.5] - 0.5
        warped = (
            cv2.warpAffine(
                rgba,
                pixel_matrix,
                (config.width, config.height),
                flags=cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_CONSTANT,
                borderValue=(0, 0, 0, 0),
            ).astype(np.float32)
            / 255.0
        )
        alpha = warped[..., 3]
        colour = srgb_to_linear(warped[..., :3]).astype(np.float32)
        joints_frame = (np.hstack([joints, np.ones((NUM_KEYPOINTS, 1))]) @ matrix.T).astype(np.float32)
        box = np.concatenate([target - box_size / 2, box_size])
        hand = {"alpha": alpha.copy(), "placed_box": box, "is_left": is_left, "joints_uv": joints_frame}
        return colour, alpha, hand

    def _forearm(self, rng, joints: np.ndarray, size: float, skin: np.ndarray, height: int, width: int):
        """(colour, alpha) of a forearm leaving the wrist away from the middle MCP."""
        direction = joints[WRIST] - joints[MIDDLE_MCP]
        length = float(np.linalg.norm(direction))
        if length < 1e-3:
            return None
        direction = direction / length
        palm = max(float(np.linalg.norm(joints[INDEX_MCP] - joints[LITTLE_MCP])), 0.3 * length)
        start = joints[WRIST] - 0.3 * length * direction
        widths = (palm * rng.uniform(0.8, 1.1), palm * rng.uniform(1.0, 1.5))
        corners = _band(start, direction, size * rng.uniform(1.5, 4.0), widths)
        alpha = _layer(
            height, width, lambda canvas, f: cv2.fillConvexPoly(canvas, np.round(corners * f).astype(np.int32), 255)
        )
        colour = (
            skin * np.exp(rng.normal(0.0, 0.08, 3))
            if rng.uniform() < 0.5
            else srgb_to_linear(rng.uniform(0.05, 0.9, 3))
        )
        return _shaded(np.asarray(colour, np.float32), alpha, rng, np.array([-direction[1], direction[0]])), alpha

    def _distractor(self, rng, height: int, width: int):
        """(colour, alpha) of one forearm-free distractor: a skin-coloured ellipse or bar, or a shape."""
        kind = rng.uniform()
        skin = self._colours[int(rng.integers(len(self._colours)))] * np.exp(rng.normal(0.0, 0.1, 3))
        centre = rng.uniform(0, 1, 2) * [width, height]
        extent = rng.uniform(0.05, 0.4) * min(height, width)
        angle = rng.uniform(0, 180)
        if kind < 0.4:  # a face- or knee-like skin blob
            axes = (extent, extent * rng.uniform(0.5, 1.0))
            colour = skin

            def draw(canvas, f):
                cv2.ellipse(
                    canvas,
                    (int(centre[0] * f), int(centre[1] * f)),
                    (int(axes[0] * f), int(axes[1] * f)),
                    angle,
                    0,
                    360,
                    255,
                    -1,
                )
        elif kind < 0.7:  # an arm without a hand
            direction = np.array([np.cos(np.radians(angle)), np.sin(np.radians(angle))])
            corners = _band(centre, direction, extent * rng.uniform(2.0, 5.0), (extent * 0.4, extent * 0.6))
            colour = skin

            def draw(canvas, f):
                cv2.fillConvexPoly(canvas, np.round(corners * f).astype(np.int32), 255)
        else:  # any object
            colour = srgb_to_linear(rng.uniform(0.0, 1.0, 3))
            points = centre + rng.uniform(-extent, extent, (int(rng.integers(3, 7)), 2))

            def draw(canvas, f):
                cv2.fillPoly(canvas, [cv2.convexHull(np.round(points * f).astype(np.int32))], 255)

        alpha = _layer(height, width, draw)
        return _shaded(np.asarray(colour, np.float32), alpha, rng, np.array([np.cos(angle), np.sin(angle)])), alpha


def draw_labels(image: np.ndarray, boxes: np.ndarray, is_left: np.ndarray, scores=None) -> np.ndarray:
    """RGB copy of a frame with its boxes (left: magenta, right: cyan) and their labels."""
    canvas = np.ascontiguousarray(image).copy()
    for k, (box, left) in enumerate(zip(np.asarray(boxes).reshape(-1, 4), np.asarray(is_left).reshape(-1))):
        x0, y0, w, h = (int(round(v)) for v in box)
        colour = (255, 0, 255) if left else (0, 255, 255)
        cv2.rectangle(canvas, (x0, y0), (x0 + w - 1, y0 + h - 1), colour, 1)
        text = ("L" if left else "R") + ("" if scores is None else f" {float(scores[k]):.2f}")
        cv2.putText(canvas, text, (x0 + 2, max(y0 + 10, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.35, colour, 1, cv2.LINE_AA)
    return canvas


__all__ = [
    "FrameComposer",
    "FrameConfig",
    "HandPool",
    "box_iou",
    "draw_labels",
    "frame_rng",
    "mask_box",
    "render_hand_pool",
]
