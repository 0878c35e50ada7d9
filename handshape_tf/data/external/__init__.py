"""Readers for public hand datasets a user may have on disk, in one sample schema.

`open_dataset(path)` picks the reader from the folder layout. Every reader is a sequence of
dicts of numpy arrays (image, intrinsics, joints_xyz, joints_uv, crop_box, root_depth, scale,
is_left, name, and depth / mask / vertices_xyz where the dataset has them): millimetres, OpenCV
camera axes, continuous pixel coordinates, the paper's 21-keypoint order. See `common` for the
schema and each module for its dataset's layout and the conversions made.
"""

from handshape_tf.data.external.common import ExternalDataset
from handshape_tf.data.external.detect import open_dataset
from handshape_tf.data.external.paper_real_world import PaperRealWorldDataset
from handshape_tf.data.external.paper_synthetic import PaperSyntheticDataset
from handshape_tf.data.external.rhd import RHDDataset
from handshape_tf.data.external.stb import STBCalibration, STBDataset

__all__ = [
    "ExternalDataset",
    "PaperRealWorldDataset",
    "PaperSyntheticDataset",
    "RHDDataset",
    "STBCalibration",
    "STBDataset",
    "open_dataset",
]
