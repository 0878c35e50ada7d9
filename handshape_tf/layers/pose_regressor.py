"""Linear graph CNN from mesh vertices to 3D joints (paper Sec. 4.2, last paragraph).

Shape shorthand: B batch, V mesh vertices, N level-0 graph nodes (V real + fake), W_0, W_1
feature widths, J joints.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from handshape_tf.layers._common import (
    build_sequence,
    check_laplacian_sizes,
    check_node_of_vertex,
)
from handshape_tf.layers.cheb_conv import ChebConv
from handshape_tf.layers.graph_sampling import GraphPool

POOL_FACTOR = 4  # Each pooling skips two coarsening levels (binary tree: 4 children).


@keras.saving.register_keras_serializable(package="handshape_tf")
class PoseRegressor(keras.layers.Layer):
    """The paper's "simplified linear Graph CNN with two pooling layers and no non-linearity".

    mesh -> scatter to the level-0 graph (fake nodes 0, via a non-trainable `vertex_of_node`
    table whose fake entries point at an appended zero row) -> ChebConv(W_0) on L~_0 ->
    GraphPool(4) -> ChebConv(W_1) on L~_2 -> GraphPool(4) -> Dense(3 J) -> B x J x 3. No
    activation or normalisation anywhere, so the layer is affine in the mesh.

    The graph tables are not part of `get_config`: a regressor rebuilt from its config gets
    them back from its saved weights.

    Args:
        num_nodes: N, level-0 graph nodes, divisible by 16.
        widths: (W_0, W_1), output widths of the two graph convolutions.
        num_joints: J.
        order: K, Chebyshev order (3 in the paper).
        formulation: "sparse" (training) or "gather" (export), see `ChebConv`.
        max_degrees: (D_0, D_2), table widths of the level-0 and level-2 Laplacians; None: taken
            from `laplacians`.
        num_vertices: V; None: len(node_of_vertex).
        laplacians: (L~_0, L~_2): the N x N level-0 and N/4 x N/4 level-2 rescaled Laplacians, or
            None (a regressor rebuilt from config; weights fill the tables).
        node_of_vertex: V int array, level-0 node of each template vertex, or None.
        **kwargs: keras.layers.Layer arguments.

    Call:
        inputs: B x V x C mesh in template vertex order (C = 3: u, v, d).
        Returns: B x J x 3 joints.

    Example:
        >>> regressor = PoseRegressor(
        ...     num_nodes=16, widths=(8, 8), laplacians=(laplacian_16, laplacian_4),
        ...     node_of_vertex=np.arange(13))
        >>> regressor(np.zeros((2, 13, 3), np.float32)).shape
        TensorShape([2, 21, 3])
    """

    def __init__(
        self,
        num_nodes: int,
        widths=(32, 64),
        num_joints: int = 21,
        order: int = 3,
        formulation: str = "sparse",
        max_degrees=None,
        num_vertices: int | None = None,
        laplacians=None,
        node_of_vertex=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if num_nodes % POOL_FACTOR**2:
            raise ValueError(
                f"PoseRegressor pools twice by {POOL_FACTOR}: num_nodes must be divisible by "
                f"{POOL_FACTOR**2}, got {num_nodes}"
            )
        if len(widths) != 2:
            raise ValueError(f"widths needs 2 values (one per graph conv), got {list(widths)}")
        if laplacians is None:
            laplacians = (None, None)
            if max_degrees is None:
                raise ValueError("PoseRegressor needs laplacians or max_degrees, got neither")
        elif len(laplacians) != 2:
            raise ValueError(f"laplacians needs 2 matrices (levels 0 and 2), got {len(laplacians)}")
        check_laplacian_sizes(laplacians, (num_nodes, num_nodes // POOL_FACTOR), (0, 2))
        if max_degrees is None:
            max_degrees = (None, None)
        elif len(max_degrees) != 2:
            raise ValueError(f"max_degrees needs 2 values (levels 0 and 2), got {max_degrees}")
        self._initial_vertex_of_node = None
        if node_of_vertex is not None:
            table = check_node_of_vertex(node_of_vertex, num_nodes)
            if num_vertices is not None and num_vertices != table.size:
                raise ValueError(f"num_vertices={num_vertices} but node_of_vertex has {table.size} entries")
            num_vertices = table.size
            vertex_of_node = np.full(num_nodes, num_vertices, np.int32)  # Fake -> zero row.
            vertex_of_node[table] = np.arange(num_vertices)
            self._initial_vertex_of_node = vertex_of_node
        elif num_vertices is None:
            raise ValueError("PoseRegressor needs num_vertices or node_of_vertex, got neither")

        self.num_nodes = int(num_nodes)
        self.widths = tuple(int(width) for width in widths)
        self.num_joints = int(num_joints)
        self.order = int(order)
        self.formulation = formulation
        self.num_vertices = int(num_vertices)

        level_nodes = (self.num_nodes, self.num_nodes // POOL_FACTOR)
        self.graph_layers = []
        for width, laplacian, nodes, max_degree in zip(self.widths, laplacians, level_nodes, max_degrees):
            self.graph_layers += [
                ChebConv(
                    width,
                    order=self.order,
                    laplacian=laplacian,
                    num_nodes=nodes,
                    max_degree=max_degree,
                    formulation=self.formulation,
                ),
                GraphPool(POOL_FACTOR),
            ]
        self.max_degrees = tuple(layer.max_degree for layer in self.graph_layers if isinstance(layer, ChebConv))
        self.head = [
            keras.layers.Flatten(),
            keras.layers.Dense(3 * self.num_joints),
            keras.layers.Reshape((self.num_joints, 3)),
        ]

    def build(self, input_shape):
        if input_shape[1] != self.num_vertices:
            raise ValueError(
                f"PoseRegressor expects {self.num_vertices} vertices, got input shape {tuple(input_shape)}"
            )
        self.vertex_of_node = self.add_weight(
            name="vertex_of_node",
            shape=(self.num_nodes,),
            dtype="int32",
            initializer="zeros",
            trainable=False,
        )
        if self._initial_vertex_of_node is not None:
            self.vertex_of_node.assign(self._initial_vertex_of_node)
            self._initial_vertex_of_node = None
        graph_shape = (input_shape[0], self.num_nodes, input_shape[2])
        build_sequence([*self.graph_layers, *self.head], graph_shape)

    def call(self, inputs):
        padded = tf.pad(inputs, [[0, 0], [0, 1], [0, 0]])  # B x (V + 1) x C, last row zero
        x = tf.gather(padded, self.vertex_of_node, axis=1)  # B x N x C
        for layer in [*self.graph_layers, *self.head]:
            x = layer(x)
        return x  # B x J x 3

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_joints, 3)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_nodes": self.num_nodes,
                "widths": list(self.widths),
                "num_joints": self.num_joints,
                "order": self.order,
                "formulation": self.formulation,
                "max_degrees": list(self.max_degrees),
                "num_vertices": self.num_vertices,
            }
        )
        return config
