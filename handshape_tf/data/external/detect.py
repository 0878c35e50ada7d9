"""`open_dataset`: recognise a dataset folder by its layout and open the matching reader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from handshape_tf.data.external.common import ExternalDataset
from handshape_tf.data.external.paper_real_world import PaperRealWorldDataset
from handshape_tf.data.external.paper_synthetic import PaperSyntheticDataset
from handshape_tf.data.external.rhd import SPLITS as RHD_SPLITS
from handshape_tf.data.external.rhd import RHDDataset
from handshape_tf.data.external.stb import STBDataset

# (reader, what identifies it, test on the folder), tried in this order.
LAYOUTS = (
    (
        PaperSyntheticDataset,
        "3D_labels/camPosition.txt (paper synthetic set)",
        lambda p: (p / "3D_labels" / "camPosition.txt").is_file(),
    ),
    (
        PaperRealWorldDataset,
        "params.mat + pose_gt.mat (paper real-world set)",
        lambda p: (p / "params.mat").is_file() and (p / "pose_gt.mat").is_file(),
    ),
    (STBDataset, "labels/*_SK.mat (STB)", lambda p: (p / "labels").is_dir() and any((p / "labels").glob("*_SK.mat"))),
    (
        RHDDataset,
        "training/anno_training.pickle or evaluation/anno_evaluation.pickle (RHD)",
        lambda p: any((p / s / f"anno_{s}.pickle").is_file() for s in RHD_SPLITS),
    ),
)


def open_dataset(path: str | Path, **kwargs: Any) -> ExternalDataset:
    """Opens the external dataset at `path` with the reader its layout matches.

    Args:
      path: a dataset root folder; for RHD also a split folder (`.../training`), which opens that
        split.
      **kwargs: passed to the reader (e.g. split="test" for STB).

    Returns:
      A PaperSyntheticDataset, PaperRealWorldDataset, STBDataset or RHDDataset.

    Raises:
      FileNotFoundError: `path` is not a directory.
      ValueError: no known layout matches (the message lists them).
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    if root.name in RHD_SPLITS and (root / f"anno_{root.name}.pickle").is_file():
        return RHDDataset(root.parent, **{"split": root.name, **kwargs})
    for reader, _, matches in LAYOUTS:
        if matches(root):
            return reader(root, **kwargs)
    known = "; ".join(description for _, description, _ in LAYOUTS)
    raise ValueError(f"{root} matches no known dataset layout; expected one of: {known}")
