"""Keras layers of the network (paper Sec. 4.1-4.2): hourglass, encoder, graph CNNs."""

from handshape_tf.layers.cheb_conv import (
    ChebConv,
    chebyshev_basis_gather,
    chebyshev_basis_sparse,
    neighbor_tables,
)
from handshape_tf.layers.encoder import ResidualEncoder
from handshape_tf.layers.graph_sampling import GraphPool, GraphUpsample
from handshape_tf.layers.hourglass import Hourglass, StackedHourglass
from handshape_tf.layers.mesh_decoder import MeshDecoder
from handshape_tf.layers.pose_regressor import PoseRegressor
from handshape_tf.layers.residual import Residual

__all__ = [
    "ChebConv",
    "GraphPool",
    "GraphUpsample",
    "Hourglass",
    "MeshDecoder",
    "PoseRegressor",
    "Residual",
    "ResidualEncoder",
    "StackedHourglass",
    "chebyshev_basis_gather",
    "chebyshev_basis_sparse",
    "neighbor_tables",
]
