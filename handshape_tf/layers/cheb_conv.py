"""Chebyshev spectral graph convolution (Defferrard et al. 2016; paper Sec. 4.2, Eq. 1).

Shape shorthand: B batch, N graph nodes, D stored entries per row of the rescaled Laplacian
(neighbours plus the node itself, padded), K Chebyshev order, F features.

The rescaled Laplacian L~ = 2 L / lambda_max - I is kept in a padded-neighbour form: row n of
L~ is `sum_d weights[n, d] * e_{neighbors[n, d]}`, padding entries point at n itself with weight
0. Both formulations below read these two tables, so they compute the same numbers:
"sparse" turns them into a `tf.SparseTensor` (fast to train), "gather" uses `tf.gather` and a
weighted sum, which converts to TFLite builtin ops and quantises.
"""

from __future__ import annotations

import keras
import numpy as np
import scipy.sparse
import tensorflow as tf

FORMULATIONS = ("sparse", "gather")


def neighbor_tables(laplacian, max_degree: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Padded-neighbour tables of a sparse matrix (its diagonal included).

    Args:
        laplacian: N x N scipy.sparse matrix or dense array, e.g. a rescaled Laplacian L~.
        max_degree: D, entries per row of the tables; at least the largest number of non-zeros
            in a row. None: exactly that number (at least 1).

    Returns:
        neighbors: N x D int32, column index of each stored entry; padding repeats the row index.
        weights: N x D float32, value of each stored entry; 0 on padding.

    Example:
        >>> neighbors, weights = neighbor_tables(scipy.sparse.eye(3) * 2.0)
        >>> neighbors[:, 0].tolist(), weights[:, 0].tolist()
        ([0, 1, 2], [2.0, 2.0, 2.0])
    """
    matrix = scipy.sparse.csr_matrix(laplacian, dtype=np.float64)
    if matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"laplacian must be square (N x N), got shape {matrix.shape}")
    matrix.sum_duplicates()
    matrix.eliminate_zeros()
    if not np.all(np.isfinite(matrix.data)):
        raise ValueError("laplacian has non-finite entries (NaN or inf)")
    num_nodes = matrix.shape[0]
    counts = np.diff(matrix.indptr)
    needed = max(int(counts.max(initial=0)), 1)
    if max_degree is None:
        max_degree = needed
    elif max_degree < needed:
        raise ValueError(
            f"max_degree={max_degree} is too small: a row of the laplacian has {needed} "
            "non-zero entries (diagonal included)"
        )
    rows = np.repeat(np.arange(num_nodes), counts)
    slots = np.arange(matrix.nnz) - np.repeat(matrix.indptr[:-1], counts)
    neighbors = np.repeat(np.arange(num_nodes, dtype=np.int32)[:, None], max_degree, axis=1)
    weights = np.zeros((num_nodes, max_degree), np.float32)
    neighbors[rows, slots] = matrix.indices
    weights[rows, slots] = matrix.data
    return neighbors, weights


def chebyshev_basis_sparse(signal, neighbors, weights, order: int):
    """Chebyshev terms T_k(L~) f, k < order, with `tf.sparse.sparse_dense_matmul` (training).

    T_0 f = f, T_1 f = L~ f, T_k f = 2 L~ T_{k-1} f - T_{k-2} f.

    Args:
        signal: B x N x F float tensor f.
        neighbors: N x D int tensor, column indices of L~ (see `neighbor_tables`).
        weights: N x D float tensor, values of L~, 0 on padding.
        order: K >= 1.

    Returns:
        B x N x (K F) tensor, [T_0 f | T_1 f | ... | T_{K-1} f] along the last axis.
    """
    num_nodes = signal.shape[1]
    num_features = signal.shape[2]
    max_degree = neighbors.shape[1]
    rows = tf.repeat(tf.range(num_nodes, dtype=tf.int64), max_degree)
    columns = tf.cast(tf.reshape(neighbors, [-1]), tf.int64)
    laplacian = tf.sparse.SparseTensor(
        indices=tf.stack([rows, columns], axis=1),
        values=tf.reshape(tf.cast(weights, signal.dtype), [-1]),
        dense_shape=[num_nodes, num_nodes],
    )
    x0 = tf.reshape(tf.transpose(signal, [1, 0, 2]), [num_nodes, -1])  # N x B*F
    terms = [x0]
    if order > 1:
        terms.append(tf.sparse.sparse_dense_matmul(laplacian, x0))
    for _ in range(2, order):
        terms.append(2.0 * tf.sparse.sparse_dense_matmul(laplacian, terms[-1]) - terms[-2])
    stacked = tf.reshape(tf.stack(terms), [order, num_nodes, -1, num_features])  # K x N x B x F
    stacked = tf.transpose(stacked, [2, 1, 0, 3])  # B x N x K x F
    return tf.reshape(stacked, [-1, num_nodes, order * num_features])


def chebyshev_basis_gather(signal, neighbors, weights, order: int):
    """Chebyshev terms T_k(L~) f, k < order, with gathers and a weighted sum (export).

    Same arguments and result as `chebyshev_basis_sparse`; only TFLite builtin ops (GATHER, MUL,
    SUM, SUB, CONCATENATION).
    """
    weights = tf.cast(weights, signal.dtype)[None, :, :, None]  # 1 x N x D x 1

    def propagate(x):
        return tf.reduce_sum(tf.gather(x, neighbors, axis=1) * weights, axis=2)  # B x N x F

    terms = [signal]
    if order > 1:
        terms.append(propagate(signal))
    for _ in range(2, order):
        terms.append(2.0 * propagate(terms[-1]) - terms[-2])
    return tf.concat(terms, axis=-1)  # B x N x K*F


@keras.saving.register_keras_serializable(package="handshape_tf")
class ChebConv(keras.layers.Layer):
    """Chebyshev graph convolution f_out = sum_{k<K} T_k(L~) f_in theta_k (+ bias).

    The graph is stored once, as two non-trainable weights: `neighbors` (N x D int32) and
    `neighbor_weights` (N x D float32), the padded-neighbour form of the rescaled Laplacian L~
    (see `neighbor_tables`). `get_config` holds only N and D: a layer rebuilt from its config
    has zero tables until weights are loaded (`load_weights`, `.keras` loading or
    `set_weights`). The two formulations share the weight layout, so weights can be copied
    from a "sparse" (training) layer into a "gather" (export) layer.

    Args:
        filters: F_out, output features per node.
        order: K >= 1, number of Chebyshev terms (the paper's support K = 3).
        laplacian: N x N rescaled Laplacian L~ (scipy.sparse or dense), or None to build empty
            tables from `num_nodes` and `max_degree`.
        num_nodes: N; must equal the laplacian size when both are given.
        max_degree: D, entries per table row; None: the largest row of the laplacian.
        formulation: "sparse" (tf.sparse.sparse_dense_matmul) or "gather" (builtin-only ops).
        use_bias: add a bias of F_out values.
        kernel_initializer: initializer of the K x F_in x F_out kernel theta.
        bias_initializer: initializer of the bias.
        kernel_regularizer: optional regularizer of the kernel.
        **kwargs: keras.layers.Layer arguments (name, dtype, ...).

    Call:
        inputs: B x N x F_in float tensor.
        Returns: B x N x F_out.

    Example:
        >>> path = scipy.sparse.diags([[0.5] * 4, [0.5] * 4], [-1, 1], shape=(5, 5))
        >>> layer = ChebConv(8, order=3, laplacian=path)
        >>> layer(np.zeros((2, 5, 3), np.float32)).shape
        TensorShape([2, 5, 8])

    Reference:
        Defferrard, Bresson, Vandergheynst, "Convolutional Neural Networks on Graphs with Fast
        Localized Spectral Filtering", NeurIPS 2016.
    """

    def __init__(
        self,
        filters: int,
        order: int = 3,
        laplacian=None,
        num_nodes: int | None = None,
        max_degree: int | None = None,
        formulation: str = "sparse",
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if order < 1:
            raise ValueError(f"order must be >= 1, got {order}")
        if formulation not in FORMULATIONS:
            raise ValueError(f"formulation must be one of {FORMULATIONS}, got {formulation!r}")
        self._initial_tables = None
        if laplacian is not None:
            neighbors, weights = neighbor_tables(laplacian, max_degree)
            if num_nodes is not None and num_nodes != neighbors.shape[0]:
                raise ValueError(f"num_nodes={num_nodes} does not match the laplacian shape {laplacian.shape}")
            num_nodes, max_degree = neighbors.shape
            self._initial_tables = (neighbors, weights)
        elif num_nodes is None or max_degree is None:
            raise ValueError(
                "ChebConv needs a laplacian, or num_nodes and max_degree to build empty tables "
                f"that weight loading fills; got num_nodes={num_nodes}, max_degree={max_degree}"
            )
        self.filters = int(filters)
        self.order = int(order)
        self.num_nodes = int(num_nodes)
        self.max_degree = int(max_degree)
        self.formulation = formulation
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

    def build(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"ChebConv expects inputs B x N x F, got shape {input_shape}")
        if input_shape[1] != self.num_nodes:
            raise ValueError(
                f"ChebConv graph has {self.num_nodes} nodes but the input has "
                f"{input_shape[1]} (input shape {input_shape})"
            )
        table_shape = (self.num_nodes, self.max_degree)
        self.neighbors = self.add_weight(
            name="neighbors",
            shape=table_shape,
            dtype="int32",
            initializer="zeros",
            trainable=False,
        )
        self.neighbor_weights = self.add_weight(
            name="neighbor_weights",
            shape=table_shape,
            dtype="float32",
            initializer="zeros",
            trainable=False,
            autocast=False,
        )
        if self._initial_tables is not None:
            self.neighbors.assign(self._initial_tables[0])
            self.neighbor_weights.assign(self._initial_tables[1])
            self._initial_tables = None
        self.kernel = self.add_weight(
            name="kernel",
            shape=(self.order, input_shape[2], self.filters),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
        )
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer=self.bias_initializer)
        else:
            self.bias = None

    def call(self, inputs):
        if self.formulation == "sparse":
            basis_fn = chebyshev_basis_sparse
        else:
            basis_fn = chebyshev_basis_gather
        basis = basis_fn(inputs, self.neighbors, self.neighbor_weights, self.order)
        in_features = inputs.shape[2]
        stacked = tf.reshape(basis, [-1, self.order * in_features])  # B*N x K*F_in
        kernel = tf.reshape(tf.cast(self.kernel, inputs.dtype), [self.order * in_features, -1])
        outputs = tf.matmul(stacked, kernel)  # B*N x F_out
        if self.bias is not None:
            outputs = outputs + tf.cast(self.bias, inputs.dtype)
        return tf.reshape(outputs, [-1, self.num_nodes, self.filters])

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1], self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "order": self.order,
                "num_nodes": self.num_nodes,
                "max_degree": self.max_degree,
                "formulation": self.formulation,
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            }
        )
        return config
