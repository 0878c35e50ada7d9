"""Training and held-out data of a run: the default rendered set, or a folder the user gives.

Layouts `--data DIR` accepts:
  * DIR/train and DIR/heldout shard folders (what `default_dataset` renders);
  * a shard folder (metadata.json) for training, with `--heldout` naming the held-out folder;
  * the paper's synthetic set (images/, 3D_labels/): its "train" and "val" camera splits.
Everything is opened (and so checked) before training starts.

Importing this module does not import TensorFlow (`handshape_tf.data.sources` is imported where
data is opened), so entry points answer --help without it.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from handshape_tf.assets.template import load_template
from handshape_tf.data.shards import METADATA, DatasetError
from train.config import TrainConfig

logger = logging.getLogger(__name__)

TRAIN, HELDOUT = "train", "heldout"


@dataclasses.dataclass(frozen=True)
class RunData:
    """Opened data of a run.

    Attributes:
      train: source of training samples.
      heldout: source of held-out samples (None: no evaluation).
      heldout_path: what `handshape_tf.evaluation.evaluate_model` opens for the held-out set.
      unseen_path: the unseen-domain test set's folder (None: not evaluated).
    """

    train: Any
    heldout: Any
    heldout_path: Path | None
    unseen_path: Path | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "train": repr(self.train),
            "heldout": repr(self.heldout),
            "heldout_path": None if self.heldout_path is None else str(self.heldout_path),
            "unseen_path": None if self.unseen_path is None else str(self.unseen_path),
        }


def _domain_tag(name: str) -> str:
    """<name>-<8 hex digits of the domain's values>: a changed domain renders into a new folder."""
    import hashlib
    import json

    from handshape_tf.data.domains import get_domain

    values = json.dumps(get_domain(name).as_dict(), sort_keys=True).encode()
    return f"{name}-{hashlib.sha256(values).hexdigest()[:8]}"


def default_dataset_dir(workdir: Path, config: TrainConfig) -> Path:
    """workdir/data/<domain>-<hash>-<views>-<S>px-<train>+<heldout>-seed<seed> (train/ and heldout/ inside)."""
    d = config.dataset
    name = (
        f"{_domain_tag(d.domain)}-{d.views}-{config.model.image_size}px-{d.train_samples}+{d.heldout_samples}"
        f"-seed{d.seed}"
    )
    return Path(workdir) / "data" / name


def unseen_dataset_dir(workdir: Path, config: TrainConfig) -> Path | None:
    """workdir/data/unseen-<hash>-<views>-<S>px-<n>-seed<seed + 2>: the unseen-domain test set (None: none)."""
    d = config.dataset
    if d.unseen_samples == 0:
        return None
    name = f"{_domain_tag('unseen')}-{d.views}-{d.unseen_image_size}px-{d.unseen_samples}-seed{d.seed + 2}"
    return Path(workdir) / "data" / name


def render_default_dataset(
    folder: Path, config: TrainConfig, progress: bool = True, unseen_folder: Path | None = None
) -> None:
    """Renders (or completes: generation resumes) the default set at the model's image size, and
    the unseen-domain test set into `unseen_folder` (when given)."""
    from handshape_tf.data.synthetic import generate_dataset

    d = config.dataset
    parts = [
        (folder / TRAIN, d.train_samples, d.seed, config.model.image_size, d.domain),
        (folder / HELDOUT, d.heldout_samples, d.seed + 1, config.model.image_size, d.domain),
    ]
    if unseen_folder is not None:
        parts.append((unseen_folder, d.unseen_samples, d.seed + 2, d.unseen_image_size, "unseen"))
    for path, count, seed, size, domain in parts:
        if is_complete_part(path):
            continue
        logger.info("rendering %d %s samples (%s domain, %d px) into %s", count, path.name, domain, size, path)
        generate_dataset(
            path,
            count,
            seed=seed,
            image_size=size,
            workers=d.workers,
            domain=domain,
            samples_per_shard=d.samples_per_shard,
            progress=progress,
            views=d.views,
        )


def is_complete_part(folder: Path) -> bool:
    """Whether a shard folder is fully rendered."""
    import json

    path = Path(folder) / METADATA
    return path.is_file() and json.loads(path.read_text()).get("complete", False)


def is_complete(folder: Path, unseen_folder: Path | None = None) -> bool:
    """Whether both parts of a default dataset folder (and the unseen set, if given) are fully rendered."""
    parts = [Path(folder) / TRAIN, Path(folder) / HELDOUT] + ([unseen_folder] if unseen_folder is not None else [])
    return all(is_complete_part(part) for part in parts)


def open_run_data(data: Path, heldout: Path | None = None) -> RunData:
    """Opens `--data` (and `--heldout`) in one of the layouts of the module docstring.

    Raises:
      DatasetError: missing folder, no shards, no held-out set for a lone shard folder, or an
        unknown layout.
    """
    from handshape_tf.data.sources import PaperSyntheticSource, open_source

    data = Path(data)
    if not data.is_dir():
        raise DatasetError(f"data folder {data} does not exist")
    if (data / TRAIN).is_dir() and heldout is None:
        train = open_source(data / TRAIN)
        return RunData(train, open_source(data / HELDOUT), data / HELDOUT)
    source = open_source(data)
    if isinstance(source, PaperSyntheticSource):
        if heldout is not None:
            return RunData(source, open_source(heldout), Path(heldout))
        return RunData(source, PaperSyntheticSource(data, "val"), data)
    if heldout is None:
        raise DatasetError(
            f"{data} is a single shard folder; name the held-out folder with --heldout, or give a folder "
            f"holding {TRAIN}/ and {HELDOUT}/"
        )
    return RunData(source, open_source(heldout), Path(heldout))


def check_run_data(data: RunData, config: TrainConfig) -> None:
    """Fails fast on data that cannot train `config` (image size, meshes for the mesh terms).

    Raises:
      DatasetError: naming the folder, what it holds and what the config needs.
    """
    from handshape_tf.data.sources import ShardSource, check_image_size

    size = config.model.image_size
    for source in (data.train, data.heldout):
        if source is not None:
            check_image_size(source, size, config.data.resize)
    num_vertices = load_template().num_vertices
    loss = config.loss
    needs_mesh = config.architecture != "direct_lbs" and (loss.vertex or loss.normal or loss.edge or loss.laplacian)
    if config.architecture == "graph" and (config.stages.pose.time_fraction > 0 or config.stages.pose.max_steps > 0):
        needs_mesh = True
    have = data.train.num_vertices
    if needs_mesh and have != num_vertices:
        held = "no meshes" if have is None else f"meshes of {have} vertices"
        raise DatasetError(
            f"{data.train!r} has {held}; the mesh loss terms and the pose stage need meshes in our hand "
            f"template's topology ({num_vertices} vertices). Train on our shards, or switch them off: "
            "--set loss.vertex=false loss.normal=false loss.edge=false loss.laplacian=false "
            "stages.pose.time_fraction=0 stages.pose.max_steps=0"
        )
    if isinstance(data.train, ShardSource) and not data.train.metadata.get("complete", True):
        logger.warning(
            "%s is not completely rendered: training on its %d finished samples",
            data.train.folder,
            data.train.num_samples,
        )
