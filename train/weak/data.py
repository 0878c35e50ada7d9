"""The RGB-D crops fine-tuning reads: the default real-like set or a user's, and their batches."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np

from handshape_tf.data import real_like, shards
from handshape_tf.data.shards import DatasetError, ShardSamples
from handshape_tf.data.synthetic import generate_dataset
from handshape_tf.geometry.heatmaps import sigma_for_side
from train.weak.config import (
    WeakConfig,
)

logger = logging.getLogger(__name__)

RENDER_WORKERS = 2  # processes rendering the real-like set
# The fields fine-tuning and evaluation read (plus vertices_xyz when a set has meshes).
READ_FIELDS = ("image", "sensor_depth", "joints_uv", "joints_xyz", "intrinsics", "root_depth", "scale")


@dataclasses.dataclass(frozen=True)
class WeakData:
    """Training and test RGB-D sets (`handshape_tf.data.shards.ShardSamples`) and their name."""

    train: Any
    test: Any
    name: str

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "train": repr(self.train), "test": repr(self.test)}


def prepare_data(data: Path | None, workdir: Path, config: WeakConfig, progress: bool = True) -> WeakData:
    """Opens, renders or crops the fine-tuning data (module docstring) and checks its size.

    Raises:
      FileNotFoundError, ValueError: an STB folder with missing sequences, labels or images, or
        depth PNGs of the wrong size or type (checked on the first frame of every sequence
        before anything is cropped); DatasetError: sets of another image size or without sensor
        depth.
    """

    size = config.model.image_size
    d = config.data
    if data is None:
        name = f"real-like-rgbd-{d.views}-{size}px-{d.real_like_train}+{d.real_like_test}-seed{d.real_like_seed}"
        folder = Path(workdir) / "data" / name
        parts = {"train": (d.real_like_train, d.real_like_seed), "test": (d.real_like_test, d.real_like_seed + 1)}
        for part, (count, seed) in parts.items():
            generate_dataset(
                folder / part,
                count,
                seed=seed,
                image_size=size,
                workers=RENDER_WORKERS,
                progress=progress,
                views=d.views,
                domain="real_like",
            )
        result = WeakData(ShardSamples(folder / "train"), ShardSamples(folder / "test"), "real-like")
    elif (Path(data) / "train" / shards.METADATA).is_file():
        folder = Path(data)
        result = WeakData(ShardSamples(folder / "train"), ShardSamples(folder / "test"), folder.name)
    else:
        frames = real_like.check_stb(data, size)
        logger.info("STB at %s: %d training and %d test frames", data, frames["train"], frames["test"])
        folder = Path(workdir) / "data" / f"stb-rgbd-{size}px"
        stride = d.stb_train_stride
        train = real_like.prepare_stb(
            data, folder / f"train-stride{stride}", "train", size, stride=stride, progress=progress
        )
        test = real_like.prepare_stb(data, folder / "test", "test", size, progress=progress)
        result = WeakData(train, test, "stb")
    for part in (result.train, result.test):
        if part.image_size != size:
            raise DatasetError(f"{part!r} holds {part.image_size} px crops; the model takes {size} px")
        missing = [name for name in READ_FIELDS if name not in part.fields]
        if missing:
            raise DatasetError(
                f"{part!r} has no {missing}: weak supervision needs RGB-D samples (a domain with a "
                "depth sensor, e.g. --domain real_like, or STB)"
            )
    if len(result.train) < config.batch_size:
        raise DatasetError(f"{result.train!r} has fewer samples than batch_size={config.batch_size}")
    return result


def pad_batch(array: np.ndarray, size: int) -> np.ndarray:
    """`array` (B x ...) with zero rows appended up to `size`: one batch shape, one trace."""
    return np.concatenate([array, np.zeros((size - len(array), *array.shape[1:]), array.dtype)])


def read_batch(samples, indices) -> dict[str, np.ndarray]:
    """The samples at `indices` of an RGB-D set as right hands (`shards.ShardSamples.batch`):
    READ_FIELDS, and vertices_xyz when the set has meshes."""
    fields = READ_FIELDS + (("vertices_xyz",) if "vertices_xyz" in samples.fields else ())
    return samples.batch(indices, fields)


def iterate_batches(samples, batch_size: int, *, seed: int, start: int = 0):
    """Endless shuffled batches of an RGB-D set, resumable: epoch e is the permutation drawn from
    `np.random.default_rng([seed, e])`, and `start` samples of the stream are skipped.

    Yields:
      `read_batch` dicts ("index": B int64 positions in the set).

    Raises:
      ValueError: batch_size exceeds the set's size.
    """
    count = len(samples)
    if batch_size > count:
        raise ValueError(f"batch_size {batch_size} exceeds the {count} samples of {samples!r}")
    epoch, offset = divmod(int(start), count)
    pending = np.zeros(0, np.int64)
    while True:
        order = np.random.default_rng([int(seed), epoch]).permutation(count)[offset:]
        pending = np.concatenate([pending, order])
        offset = 0
        epoch += 1
        while len(pending) >= batch_size:
            indices, pending = pending[:batch_size], pending[batch_size:]
            yield read_batch(samples, indices)


def heatmap_sigma(config: WeakConfig) -> float:
    """Heat-map Gaussian SD in pixels of the model's heat-maps."""
    return sigma_for_side(config.data.heatmap_sigma, config.model.heatmap_size)
