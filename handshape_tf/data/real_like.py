"""Real RGB-D hand crops for weak supervision: STB frames as shard folders.

Shape shorthand: N samples, S crop side, J = 21 keypoints.

Weakly supervised fine-tuning (paper Sec. 4.4, `train.weak_stb`) reads RGB-D samples from shard
folders (`handshape_tf.data.shards`: an image, the sensor's depth map `sensor_depth` in mm with
0 where it has none, 2D and 3D joints, the crop intrinsics, root depth and scale, is_left), one
folder per split, with `shards.ShardSamples`, which mirrors left hands into right hands as it
reads. Two producers write them:

* the rendered "real-like" domain: `python -m handshape_tf.data.synthetic --domain real_like`
  (`synthetic.generate_dataset(..., domain="real_like")`): the renderer's hands, poses, shapes
  and views seen by STB's RealSense colour camera at 300-650 mm, with an indoor look and a
  RealSense-like depth sensor (`handshape_tf.data.domains.REAL_LIKE`,
  `handshape_tf.data.depth_sensor`). Its 3D labels (joints_xyz, vertices_xyz) are for
  evaluation (and the "with 3D pose" setting); weak supervision itself reads only images,
  sensor depth, 2D joints, intrinsics, root depth and scale.
* `prepare_stb`: STB frames (`handshape_tf.data.external.STBDataset`) cropped to the reader's
  square box around the joints (colour: antialiased `crop_and_resize`; depth: the registered
  depth map sampled at the S x S pixel centres, nearest, 0 stays 0) into shards of
  `STB_SAMPLES_PER_SHARD` frames, resumable shard by shard. Only the depth pixels that can land
  in the box for depths within `STB_DEPTH_WINDOW_MM` of the wrist are registered (the full
  frame costs ~0.4 s): farther background may be missing near the crop border, which the depth
  loss ignores anyway. STB's hands are left hands (mirrored on reading).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from handshape_tf.data import shards
from handshape_tf.data.crop import crop_and_resize, crop_intrinsics_np

logger = logging.getLogger(__name__)

STB_GENERATOR = "handshape_tf.data.real_like.prepare_stb"
STB_GENERATOR_VERSION = 1  # bump whenever the crops of a frame change (resuming checks it)
STB_SAMPLES_PER_SHARD = 256
STB_FIELDS = shards.REQUIRED_FIELDS + ("sensor_depth",)
STB_DEPTH_WINDOW_MM = 400.0
_STB_RESUME_KEYS = (
    "generator",
    "generator_version",
    "source",
    "num_samples",
    "samples_per_shard",
    "image_size",
    "fields",
)


# ---------------------------------------------------------------------------------------------
# STB.


def _stb_depth_window(sample: dict[str, Any], calibration, shape: tuple[int, int]) -> tuple[slice, slice]:
    """Rows and columns of the depth image that can land in the crop box at depths within
    STB_DEPTH_WINDOW_MM of the wrist (corners of the box at the two extreme depths)."""
    x0, y0, w, h = np.asarray(sample["crop_box"], np.float64)
    fx, fy, cx, cy = np.asarray(sample["intrinsics"], np.float64)
    root = float(sample["root_depth"])
    corners = np.array([[x, y] for x in (x0, x0 + w) for y in (y0, y0 + h)])
    points = []
    for z in (max(root - STB_DEPTH_WINDOW_MM, 1.0), root + STB_DEPTH_WINDOW_MM):
        points.append(np.stack([(corners[:, 0] - cx) / fx * z, (corners[:, 1] - cy) / fy * z, np.full(4, z)], 1))
    color = np.concatenate(points)
    depth_frame = color @ calibration.rotation.T + np.asarray(calibration.translation)  # inverse of depth_to_color
    dfx, dfy, dcx, dcy = calibration.continuous(calibration.depth_intrinsics)
    u = dfx * depth_frame[:, 0] / depth_frame[:, 2] + dcx
    v = dfy * depth_frame[:, 1] / depth_frame[:, 2] + dcy
    height, width = shape
    columns = slice(int(np.clip(np.floor(u.min()) - 2, 0, width)), int(np.clip(np.ceil(u.max()) + 2, 0, width)))
    rows = slice(int(np.clip(np.floor(v.min()) - 2, 0, height)), int(np.clip(np.ceil(v.max()) + 2, 0, height)))
    return rows, columns


def crop_depth_nearest(depth: np.ndarray, box, size: int) -> np.ndarray:
    """S x S crop of an H x W depth map: each crop pixel takes the map pixel containing its
    centre (x0 + (i + 0.5) w / S, y0 + (j + 0.5) h / S); 0 outside the map."""
    x0, y0, w, h = np.asarray(box, np.float64)
    height, width = depth.shape
    cols = np.floor(x0 + (np.arange(size) + 0.5) * w / size).astype(np.int64)
    rows = np.floor(y0 + (np.arange(size) + 0.5) * h / size).astype(np.int64)
    inside = (rows[:, None] >= 0) & (rows[:, None] < height) & (cols[None] >= 0) & (cols[None] < width)
    values = depth[np.clip(rows, 0, height - 1)[:, None], np.clip(cols, 0, width - 1)[None]]
    return np.where(inside, values, 0).astype(np.float32)


def stb_crop(dataset, index: int, image_size: int) -> dict[str, Any]:
    """One STB frame as a shard sample (module docstring, `prepare_stb`).

    Args:
      dataset: an `STBDataset` opened with with_depth=False (depth is registered here, windowed).
      index: the frame.
      image_size: S.

    Raises:
      FileNotFoundError, ValueError: a missing or undecodable colour or depth PNG, or a depth
        PNG that is not 8-bit 3-channel of the calibration's size (as the reader's messages).
    """
    from handshape_tf.data.external.common import check_rgb_png, read_image
    from handshape_tf.data.external.stb import decode_depth, register_depth

    sample = dataset[index]
    calibration = dataset.calibration
    path = dataset.root / sample["name"].replace("SK_color_", "SK_depth_")
    encoded = read_image(path)
    check_rgb_png(encoded, path, "STB depth image", calibration.depth_size)
    depth = decode_depth(encoded)
    rows, columns = _stb_depth_window(sample, calibration, depth.shape)
    windowed = np.zeros_like(depth)
    windowed[rows, columns] = depth[rows, columns]
    registered = register_depth(
        windowed,
        calibration.continuous(calibration.depth_intrinsics),
        sample["intrinsics"],
        calibration.rotation,
        np.asarray(calibration.translation),
        sample["image"].shape[:2],
    )
    box = sample["crop_box"]
    image, _ = crop_and_resize(sample["image"], box, image_size)
    intrinsics = crop_intrinsics_np(sample["intrinsics"], box, image_size)
    fx, fy, cx, cy = intrinsics.astype(np.float64)
    joints = sample["joints_xyz"].astype(np.float64)
    uv = np.stack([fx * joints[:, 0] / joints[:, 2] + cx, fy * joints[:, 1] / joints[:, 2] + cy], axis=1)
    return {
        "image": image,
        "sensor_depth": crop_depth_nearest(registered, box, image_size),
        "joints_uv": uv.astype(np.float32),
        "joints_xyz": sample["joints_xyz"],
        "intrinsics": intrinsics,
        "root_depth": sample["root_depth"],
        "scale": sample["scale"],
        "is_left": sample["is_left"],
    }


def open_stb(root: str | Path, split: str, calibration=None, sequences: Sequence[str] | None = None):
    """`STBDataset` of a split (or of `sequences`) without the reader's own depth registration
    (`stb_crop` registers a window of it)."""
    from handshape_tf.data.external.stb import STBCalibration, STBDataset

    return STBDataset(root, split, sequences, with_depth=False, calibration=calibration or STBCalibration())


def check_stb(root: str | Path, image_size: int, calibration=None) -> dict[str, int]:
    """Opens both STB splits and crops the first frame of every sequence, so that a missing
    sequence, label file or image, or a depth PNG of the wrong size or type fails now.

    Returns:
      {"train": frames, "test": frames}.

    Raises:
      FileNotFoundError, ValueError: from the reader, naming what is missing or wrong.
    """
    from handshape_tf.data.external.stb import SPLITS

    sizes = {split: len(open_stb(root, split, calibration)) for split in ("train", "test")}
    for split in ("train", "test"):
        for sequence in SPLITS[split]:
            stb_crop(open_stb(root, split, calibration, [sequence]), 0, image_size)
    return sizes


def prepare_stb(
    root: str | Path,
    folder: str | Path,
    split: str,
    image_size: int,
    *,
    stride: int = 1,
    calibration=None,
    progress: bool = True,
) -> shards.ShardSamples:
    """Crops (or finishes cropping) every `stride`-th frame of an STB split into a shard folder.

    Args:
      root: the STB folder.
      folder: the shard folder.
      split: "train" (B2-B6) or "test" (B1).
      image_size: S.
      stride: keep frames 0, stride, 2 stride, ... of the split.
      calibration: an `STBCalibration` (default: the readme's).
      progress: show a progress bar.

    Returns:
      The finished folder, opened (`shards.ShardSamples`).

    Raises:
      FileNotFoundError, ValueError: see `check_stb`; DatasetError: the folder holds crops of
        another STB folder, split, stride or size.
    """
    from tqdm import tqdm

    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise ValueError(f"stride is {stride!r}; expected an int >= 1")
    dataset = open_stb(root, split, calibration)
    frames = list(range(0, len(dataset), stride))
    folder = Path(folder)
    source = {
        "dataset": "STB",
        "root": str(Path(root).resolve()),
        "split": split,
        "stride": stride,
        "calibration": json.loads(json.dumps(dataclasses.asdict(dataset.calibration))),
    }
    config = {
        "generator": STB_GENERATOR,
        "generator_version": STB_GENERATOR_VERSION,
        "source": source,
        "num_samples": len(frames),
        "samples_per_shard": STB_SAMPLES_PER_SHARD,
        "image_size": int(image_size),
        "fields": list(STB_FIELDS),
        "sensor_depth_unit_mm": shards.SENSOR_DEPTH_UNIT_MM,
        "camera_convention": "OpenCV: x right, y down, z forward, mm; pixel centres at i + 0.5",
    }
    shards.check_resumable(folder, config, _STB_RESUME_KEYS)
    folder.mkdir(parents=True, exist_ok=True)
    counts = shards.plan_shards(len(frames), STB_SAMPLES_PER_SHARD)
    done = shards.complete_shards(folder, counts)
    shards.write_metadata(folder, shards.folder_metadata(config, counts, done))
    missing = [(index, name) for index, name in enumerate(counts) if name not in done]
    if missing:
        logger.info("cropping %d STB %s frames into %s", sum(counts[n] for _, n in missing), split, folder)
        initial = sum(counts[name] for name in done)
        with tqdm(total=len(frames), initial=initial, unit="sample", disable=not progress, desc=f"STB {split}") as bar:
            for index, name in missing:
                first = index * STB_SAMPLES_PER_SHARD
                part = frames[first : first + counts[name]]
                shards.write_shard(folder / name, (stb_crop(dataset, i, image_size) for i in part), STB_FIELDS)
                done.add(name)
                shards.write_metadata(folder, shards.folder_metadata(config, counts, done))
                bar.update(len(part))
    return shards.ShardSamples(folder)
