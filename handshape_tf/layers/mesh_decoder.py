"""Graph CNN mesh decoder: latent vector -> mesh vertices in (u, v, d) (paper Sec. 4.2, Fig. 4).

Shape shorthand: B batch, Z latent size, L graph levels, N_l nodes at level l (level 0 finest,
N_l = 2 N_{l+1}), W_l features at level l, V mesh vertices (V <= N_0; the other level-0 nodes are
the coarsening's fake nodes).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from handshape_tf.layers._common import (
    batch_norm,
    build_sequence,
    check_laplacian_sizes,
    check_level_sizes,
    check_node_of_vertex,
)
from handshape_tf.layers.cheb_conv import ChebConv
from handshape_tf.layers.graph_sampling import GraphUpsample


@keras.saving.register_keras_serializable(package="handshape_tf")
class MeshDecoder(keras.layers.Layer):
    """Two dense layers to the coarsest graph, then upsample + Chebyshev conv level by level.

    latent -> Dense(fc_units) + BN + ReLU -> Dense(N_{L-1} W_{L-1}) + BN + ReLU -> reshape to
    B x N_{L-1} x W_{L-1}; for l = L-2 ... 0: GraphUpsample(2), ChebConv(W_l) + BN + ReLU; then
    ChebConv(output_channels) without BN or ReLU; finally the V real vertices are gathered
    (non-trainable `node_of_vertex` table), dropping fake nodes.

    The graph tables (`laplacians`, `node_of_vertex`) are not part of `get_config`: a decoder
    rebuilt from its config gets them back from its saved weights.

    Args:
        fc_units: width of the first dense layer (512 in the paper's code).
        level_sizes: [N_0, ..., N_{L-1}], finest first, each twice the next (paper: 1280 ... 80).
        widths: [W_0, ..., W_{L-1}]; W_{L-1} is the feature width of the coarsest graph (64),
            W_l for l < L-1 the width of the Chebyshev convolution at level l.
        output_channels: channels per vertex, 3 for (u, v, d).
        order: K, Chebyshev order of every graph convolution (3 in the paper).
        formulation: "sparse" (training) or "gather" (export), see `ChebConv`.
        max_degrees: [D_0, ..., D_{L-2}], table widths of the level 0 ... L-2 Laplacians (the
            coarsest level has no convolution); None: taken from `laplacians`.
        num_vertices: V; None: len(node_of_vertex).
        laplacians: [L~_0, ..., L~_{L-2}], N_l x N_l rescaled Laplacians (scipy.sparse or
            dense), or None (a decoder rebuilt from config; weights fill the tables).
        node_of_vertex: V int array, level-0 node of each template vertex, or None.
        **kwargs: keras.layers.Layer arguments.

    Call:
        inputs: B x Z latent vectors.
        Returns: B x V x output_channels, in template vertex order.

    Example:
        >>> decoder = MeshDecoder(
        ...     fc_units=32, level_sizes=[16, 8, 4], widths=[8, 8, 16],
        ...     laplacians=[laplacian_16, laplacian_8], node_of_vertex=np.arange(13))
        >>> decoder(np.zeros((2, 64), np.float32)).shape
        TensorShape([2, 13, 3])
    """

    def __init__(
        self,
        fc_units: int,
        level_sizes,
        widths,
        output_channels: int = 3,
        order: int = 3,
        formulation: str = "sparse",
        max_degrees=None,
        num_vertices: int | None = None,
        laplacians=None,
        node_of_vertex=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.level_sizes = check_level_sizes(level_sizes)
        num_levels = len(self.level_sizes)
        if len(widths) != num_levels:
            raise ValueError(f"widths needs one entry per level ({num_levels}), got {list(widths)}")
        conv_levels = num_levels - 1
        if laplacians is not None and len(laplacians) != conv_levels:
            raise ValueError(
                f"laplacians needs {conv_levels} matrices (levels 0 ... {conv_levels - 1}, finest "
                f"first, none for the coarsest level), got {len(laplacians)}"
            )
        if laplacians is None:
            laplacians = [None] * conv_levels
            if max_degrees is None:
                raise ValueError("MeshDecoder needs laplacians or max_degrees, got neither")
        check_laplacian_sizes(laplacians, self.level_sizes, range(conv_levels))
        if max_degrees is None:
            max_degrees = [None] * conv_levels
        elif len(max_degrees) != conv_levels:
            raise ValueError(
                f"max_degrees needs {conv_levels} values (levels 0 ... {conv_levels - 1}), got {list(max_degrees)}"
            )
        self._initial_node_of_vertex = None
        if node_of_vertex is not None:
            table = check_node_of_vertex(node_of_vertex, self.level_sizes[0])
            if num_vertices is not None and num_vertices != table.size:
                raise ValueError(f"num_vertices={num_vertices} but node_of_vertex has {table.size} entries")
            num_vertices = table.size
            self._initial_node_of_vertex = table
        elif num_vertices is None:
            raise ValueError("MeshDecoder needs num_vertices or node_of_vertex, got neither")

        self.fc_units = int(fc_units)
        self.widths = tuple(int(width) for width in widths)
        self.output_channels = int(output_channels)
        self.order = int(order)
        self.formulation = formulation
        self.num_vertices = int(num_vertices)

        coarsest = (self.level_sizes[-1], self.widths[-1])
        self.head = [
            keras.layers.Dense(self.fc_units, use_bias=False),
            batch_norm(),
            keras.layers.ReLU(),
            keras.layers.Dense(coarsest[0] * coarsest[1], use_bias=False),
            batch_norm(),
            keras.layers.ReLU(),
            keras.layers.Reshape(coarsest),  # B x N_{L-1} x W_{L-1}
        ]
        self.body = []
        for level in reversed(range(conv_levels)):
            self.body += [
                GraphUpsample(2),
                ChebConv(
                    self.widths[level],
                    order=self.order,
                    laplacian=laplacians[level],
                    num_nodes=self.level_sizes[level],
                    max_degree=max_degrees[level],
                    formulation=self.formulation,
                    use_bias=False,
                ),
                batch_norm(),
                keras.layers.ReLU(),
            ]
        self.output_conv = ChebConv(
            self.output_channels,
            order=self.order,
            laplacian=laplacians[0],
            num_nodes=self.level_sizes[0],
            max_degree=max_degrees[0],
            formulation=self.formulation,
        )
        graph_convs = [layer for layer in self.body if isinstance(layer, ChebConv)]
        self.max_degrees = tuple(conv.max_degree for conv in reversed(graph_convs))

    def build(self, input_shape):
        build_sequence([*self.head, *self.body, self.output_conv], input_shape)
        self.node_of_vertex = self.add_weight(
            name="node_of_vertex",
            shape=(self.num_vertices,),
            dtype="int32",
            initializer="zeros",
            trainable=False,
        )
        if self._initial_node_of_vertex is not None:
            self.node_of_vertex.assign(self._initial_node_of_vertex)
            self._initial_node_of_vertex = None

    def call(self, inputs):
        x = inputs
        for layer in [*self.head, *self.body, self.output_conv]:
            x = layer(x)  # ... -> B x N_0 x output_channels
        return tf.gather(x, self.node_of_vertex, axis=1)  # B x V x output_channels

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_vertices, self.output_channels)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "fc_units": self.fc_units,
                "level_sizes": list(self.level_sizes),
                "widths": list(self.widths),
                "output_channels": self.output_channels,
                "order": self.order,
                "formulation": self.formulation,
                "max_degrees": list(self.max_degrees),
                "num_vertices": self.num_vertices,
            }
        )
        return config
