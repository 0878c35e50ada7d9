"""Evaluation figures: 3D PCK curves (matplotlib, Agg) and a sheet of predictions (OpenCV).

Shape shorthand: T thresholds, S tile side, J = 21 keypoints, V mesh vertices.

matplotlib is used through its object API with the Agg canvas, so nothing here touches the
global pyplot state or needs a display.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from handshape_tf.assets.template import KEYPOINT_PARENTS
from handshape_tf.evaluation.metrics import AUC_RANGE_MM
from handshape_tf.inference.overlay import draw_overlay

# RGB colours of the sheet (the prediction's skeleton has draw_overlay's finger colours).
MESH_COLOUR = (120, 190, 255)
GT_COLOUR = (255, 255, 255)
OUTLINE_COLOUR = (0, 0, 0)
_SHIFT = 4  # sub-pixel bits of cv2 drawing calls


def plot_pck_curves(curves: dict[str, dict[str, Any]], path: str | Path, title: str = "3D PCK") -> Path:
    """Writes a PNG of one or more 3D PCK curves.

    Args:
      curves: label -> {"pck": {"thresholds_mm": T, "values": T}, "auc_20_50": float}, e.g.
        the "pose" and "pose_aligned" entries of `ErrorAccumulator.summary()`.
      path: the PNG file to write (parent folders are created).
      title: the figure title.

    Returns:
      `path` as a Path.

    Raises:
      ValueError: no curves, or a curve whose thresholds and values differ in length.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not curves:
        raise ValueError("curves is empty; expected at least one label -> summary entry")
    figure = Figure(figsize=(6.0, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for label, summary in curves.items():
        thresholds = np.asarray(summary["pck"]["thresholds_mm"], np.float64)
        values = np.asarray(summary["pck"]["values"], np.float64)
        if thresholds.shape != values.shape:
            raise ValueError(
                f"curve {label!r}: {thresholds.size} thresholds and {values.size} values; expected the same number"
            )
        axes.plot(thresholds, values, linewidth=2, label=f"{label} (AUC 20-50 mm: {summary['auc_20_50']:.3f})")
    axes.axvspan(*AUC_RANGE_MM, color="0.94", zorder=0, label="AUC range")
    axes.set(xlabel="error threshold (mm)", ylabel="3D PCK", title=title, ylim=(0.0, 1.02))
    axes.set_xlim(thresholds[0], thresholds[-1])
    axes.grid(True, alpha=0.4)
    axes.legend(loc="best", fontsize=8)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


def draw_skeleton(image: np.ndarray, joints: np.ndarray, colour, thickness: int = 1) -> None:
    """Draws the 21-keypoint skeleton (bones to KEYPOINT_PARENTS, dots on joints) in place, with
    a dark outline so it stays visible on light and dark pixels.

    Args:
      image: S x S x 3 uint8 RGB, modified in place.
      joints: J x 2 keypoints, pixels of `image` (continuous convention).
      colour: RGB triple.
      thickness: bone width, pixels.
    """
    points = np.round((np.asarray(joints, np.float64) - 0.5) * (1 << _SHIFT))
    points = np.clip(points, -(2**28), 2**28).astype(np.int32)  # far-off points stay int32
    for width, paint in ((thickness + 2, OUTLINE_COLOUR), (thickness, colour)):
        for child, parent in enumerate(KEYPOINT_PARENTS):
            if parent >= 0:
                cv2.line(image, tuple(points[parent]), tuple(points[child]), paint, width, cv2.LINE_AA, _SHIFT)
        for point in points:
            cv2.circle(image, tuple(point), width << _SHIFT, paint, -1, cv2.LINE_AA, _SHIFT)


def _put_text(image: np.ndarray, text: str, origin: tuple[int, int], max_width: int, size: float = 0.4) -> None:
    """Black text at `origin` (baseline left), trimmed from the left to fit `max_width` pixels."""
    while text and cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, size, 1)[0][0] > max_width:
        text = "..." + text[4:] if text.startswith("...") else "..." + text[1:]
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, size, (0, 0, 0), 1, cv2.LINE_AA)


def prediction_sheet(tiles: list[dict[str, Any]], path: str | Path, columns: int = 4) -> Path:
    """Writes a grid of crops with the predicted mesh and skeleton and the ground-truth skeleton.

    The prediction is drawn by `handshape_tf.inference.draw_overlay` (mesh wireframe, skeleton
    in finger colours, red joints), the ground-truth skeleton on top in white.

    Args:
      tiles: per sample {"image": S x S x 3 uint8 RGB crop, "prediction": a HandPrediction in
        pixels of the crop, "gt_joints": J x 2 pixels of the crop, "caption": str}; all crops
        the same size.
      path: the PNG file to write (parent folders are created).
      columns: tiles per row (fewer when there are fewer tiles).

    Returns:
      `path` as a Path.

    Raises:
      ValueError: no tiles, or crops of different sizes.
    """
    if not tiles:
        raise ValueError("tiles is empty; expected at least one sample to draw")
    side = tiles[0]["image"].shape[0]
    if any(tile["image"].shape != (side, side, 3) for tile in tiles):
        shapes = sorted({tile["image"].shape for tile in tiles})
        raise ValueError(f"crops have shapes {shapes}; expected all ({side}, {side}, 3)")
    columns = max(1, min(columns, len(tiles)))
    rows = math.ceil(len(tiles) / columns)
    caption, header, gap = 18, 40, 4
    width = columns * (side + gap) + gap
    sheet = np.full((header + rows * (side + caption + gap), width, 3), 255, np.uint8)
    _put_text(sheet, "prediction: mesh (blue), skeleton (finger colours, red joints)", (gap, 15), width - gap)
    _put_text(sheet, "ground truth: skeleton (white)", (gap, 32), width - gap)
    for index, tile in enumerate(tiles):
        image = draw_overlay(tile["image"], tile["prediction"], mesh_colour=MESH_COLOUR, box_colour=OUTLINE_COLOUR)
        draw_skeleton(image, tile["gt_joints"], GT_COLOUR, max(1, round(side / 200)))
        row, column = divmod(index, columns)
        top = header + row * (side + caption + gap)
        left = gap + column * (side + gap)
        sheet[top : top + side, left : left + side] = image
        _put_text(sheet, tile["caption"], (left, top + side + 13), side)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write the prediction sheet to {path}")
    return path
