"""Contact sheets of hand samples: images with the 2D skeleton and the projected mesh wireframe.

Shape shorthand: N image size, J = 21 keypoints, V mesh vertices, E mesh edges, K samples.

Each sample gets two tiles side by side: the image as stored, and the image with the mesh
wireframe (vertices_xyz projected with the crop intrinsics; thin white lines) and the 21
keypoints joined along the kinematic tree, one colour per finger. A good sample has the
wireframe sitting exactly on the rendered hand and the skeleton inside it.

`domain_sheet` puts the images of several datasets side by side instead (images only, one
block per dataset, titled with its domain): how far the training renders and the unseen-domain
test renders are from each other, and from photographs.

Command line: `python -m handshape_tf.data.preview DATASET_DIR [DATASET_DIR ...] [--out FILE] [--count K]`
(one folder: the contact sheet; several: the domain sheet).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from handshape_tf.assets.template import KEYPOINT_PARENTS, load_template

logger = logging.getLogger(__name__)

WIREFRAME_OPACITY = 0.25
# RGB colours: wrist, thumb, index, middle, ring, little.
FINGER_COLOURS = ((255, 255, 255), (255, 64, 64), (255, 192, 0), (64, 220, 64), (0, 176, 255), (200, 80, 255))


def _finger(keypoint: int) -> int:
    return 0 if keypoint == 0 else (keypoint - 1) // 4 + 1


def draw_sample(sample: dict[str, Any], edges: np.ndarray, tile: int) -> np.ndarray:
    """Two tiles (tile x 2 tile x 3 uint8 RGB): the image, and the image with mesh and skeleton.

    Args:
      sample: a sample dict (numpy) with image (N x N x 3), joints_uv (J x 2, pixels),
        vertices_xyz (V x 3, camera) and intrinsics (4).
      edges: E x 2 mesh edges (template vertex indices).
      tile: output tile size in pixels.
    """
    image = np.asarray(sample["image"], np.uint8)
    size = image.shape[0]
    k = tile / size
    plain = cv2.resize(image, (tile, tile), interpolation=cv2.INTER_AREA)
    overlay = plain.copy()
    fx, fy, cx, cy = np.asarray(sample["intrinsics"], np.float64)
    vertices = np.asarray(sample["vertices_xyz"], np.float64)
    uv = np.stack([fx * vertices[:, 0] / vertices[:, 2] + cx, fy * vertices[:, 1] / vertices[:, 2] + cy], axis=1)
    # Pixel centres sit at i + 0.5; cv2 draws at integer coordinates: shift by -0.5, 4 bits of subpixel.
    shift = 4
    points = np.round((uv * k - 0.5) * (1 << shift)).astype(np.int32)
    wire = overlay.copy()
    cv2.polylines(wire, [points[edge][:, None, :] for edge in edges], False, (255, 255, 255), 1, cv2.LINE_AA, shift)
    overlay = cv2.addWeighted(wire, WIREFRAME_OPACITY, overlay, 1.0 - WIREFRAME_OPACITY, 0.0)
    joints = np.round((np.asarray(sample["joints_uv"], np.float64) * k - 0.5) * (1 << shift)).astype(np.int32)
    for child, parent in enumerate(KEYPOINT_PARENTS):
        if parent >= 0:
            colour = FINGER_COLOURS[_finger(child)]
            cv2.line(overlay, tuple(joints[parent]), tuple(joints[child]), colour, 2, cv2.LINE_AA, shift)
    for index, point in enumerate(joints):
        cv2.circle(overlay, tuple(point), 3 << shift, FINGER_COLOURS[_finger(index)], -1, cv2.LINE_AA, shift)
    return np.concatenate([plain, overlay], axis=1)


def contact_sheet(samples: Sequence[dict[str, Any]], *, columns: int = 4, tile: int = 160) -> np.ndarray:
    """A grid of `draw_sample` pairs, `columns` samples per row.

    Args:
      samples: K sample dicts (see `draw_sample`).
      columns: samples per row.
      tile: size of each tile in pixels.

    Returns:
      rows * tile x columns * 2 tile x 3 uint8 RGB (gaps are black).
    """
    if not samples:
        raise ValueError("no samples to draw; expected at least one")
    edges = load_template().edges
    rows = -(-len(samples) // columns)
    sheet = np.zeros((rows * tile, columns * 2 * tile, 3), np.uint8)
    for i, sample in enumerate(samples):
        r, c = divmod(i, columns)
        sheet[r * tile : (r + 1) * tile, c * 2 * tile : (c + 1) * 2 * tile] = draw_sample(sample, edges, tile)
    return sheet


def read_samples(folder: str | Path, count: int) -> list[dict[str, np.ndarray]]:
    """The first `count` samples of a shard folder, as numpy dicts."""
    from handshape_tf.data.shards import read_dataset

    return [{name: value.numpy() for name, value in sample.items()} for sample in read_dataset(folder).take(count)]


_TITLE_HEIGHT = 28


def domain_sheet(
    blocks: Sequence[tuple[str, Sequence[np.ndarray]]], *, columns: int = 4, tile: int = 160
) -> np.ndarray:
    """Blocks of images side by side, each under its title.

    Args:
      blocks: (title, K images N x N x 3 uint8 RGB) per dataset.
      columns: images per row within a block.
      tile: size of each image in pixels.

    Returns:
      title + rows * tile x blocks * (columns * tile + gap) x 3 uint8 RGB.
    """
    if not blocks or not all(images for _, images in blocks):
        raise ValueError("no images to draw; expected at least one per dataset")
    gap = tile // 8
    rows = max(-(-len(images) // columns) for _, images in blocks)
    width = columns * tile
    sheet = np.full((_TITLE_HEIGHT + rows * tile, len(blocks) * (width + gap) - gap, 3), 255, np.uint8)
    for b, (title, images) in enumerate(blocks):
        left = b * (width + gap)
        cv2.putText(
            sheet, title, (left + 4, _TITLE_HEIGHT - 9), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA
        )
        for i, image in enumerate(images):
            r, c = divmod(i, columns)
            top = _TITLE_HEIGHT + r * tile
            sheet[top : top + tile, left + c * tile : left + (c + 1) * tile] = cv2.resize(
                image, (tile, tile), interpolation=cv2.INTER_AREA if image.shape[0] > tile else cv2.INTER_LINEAR
            )
    return sheet


def _write_png(sheet: np.ndarray, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), sheet[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise OSError(f"could not write the preview to {path}")
    return path


def write_preview(folder: str | Path, path: str | Path, *, count: int = 16, columns: int = 4, tile: int = 160) -> Path:
    """Writes a contact sheet PNG of the first `count` samples of a shard folder. Returns its path."""
    return _write_png(contact_sheet(read_samples(folder, count), columns=columns, tile=tile), path)


def write_domain_sheet(
    folders: Sequence[str | Path], path: str | Path, *, count: int = 16, columns: int = 4, tile: int = 128
) -> Path:
    """Writes the `domain_sheet` PNG of the first `count` images of each shard folder. Returns its path."""
    from handshape_tf.data.shards import read_metadata

    blocks = []
    for folder in folders:
        metadata = read_metadata(folder)
        title = f"{metadata.get('domain', 'procedural')} domain ({Path(folder).name})"
        blocks.append((title, [sample["image"] for sample in read_samples(folder, count)]))
    return _write_png(domain_sheet(blocks, columns=columns, tile=tile), path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m handshape_tf.data.preview", description=__doc__.split("\n")[0])
    parser.add_argument(
        "folders",
        type=Path,
        nargs="+",
        metavar="folder",
        help="shard folder (with metadata.json); several: their images side by side",
    )
    parser.add_argument("--out", type=Path, default=None, help="PNG path (default: FOLDER/preview.png)")
    parser.add_argument("--count", type=int, default=16)
    parser.add_argument("--columns", type=int, default=4)
    parser.add_argument("--tile", type=int, default=160)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out = args.out or args.folders[0] / "preview.png"
    if len(args.folders) == 1:
        path = write_preview(args.folders[0], out, count=args.count, columns=args.columns, tile=args.tile)
    else:
        path = write_domain_sheet(args.folders, out, count=args.count, columns=args.columns, tile=args.tile)
    logger.info("wrote %s", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
