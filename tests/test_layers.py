"""Tests of handshape_tf.layers: graph convolutions against dense numpy references, config and
.keras round trips, shapes of the image networks, and TFLite builtin-only conversion."""

import inspect

import keras
import numpy as np
import pytest
import scipy.sparse
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from handshape_tf.layers import (
    ChebConv,
    GraphPool,
    GraphUpsample,
    Hourglass,
    MeshDecoder,
    PoseRegressor,
    Residual,
    ResidualEncoder,
    StackedHourglass,
    neighbor_tables,
)

FORMULATIONS = ("sparse", "gather")


def rescaled_laplacian(adjacency):
    """Dense-computed L~ = 2 L / lambda_max - I, L = I - D^-1/2 W D^-1/2, as scipy csr."""
    adjacency = np.asarray(adjacency, np.float64)
    degree = adjacency.sum(axis=1)
    inv_sqrt = np.where(degree > 0, 1.0 / np.sqrt(np.maximum(degree, 1e-12)), 0.0)
    laplacian = np.eye(len(adjacency)) - inv_sqrt[:, None] * adjacency * inv_sqrt[None, :]
    lambda_max = np.linalg.eigvalsh(laplacian).max()
    return scipy.sparse.csr_matrix(2.0 * laplacian / lambda_max - np.eye(len(adjacency)))


def path_adjacency(num_nodes):
    adjacency = np.zeros((num_nodes, num_nodes))
    index = np.arange(num_nodes - 1)
    adjacency[index, index + 1] = adjacency[index + 1, index] = 1.0
    return adjacency


def ring_with_fakes(num_real, num_nodes):
    """Adjacency of a ring over the first num_real nodes; the other nodes are isolated."""
    adjacency = np.zeros((num_nodes, num_nodes))
    index = np.arange(num_real)
    adjacency[index, (index + 1) % num_real] = adjacency[(index + 1) % num_real, index] = 1.0
    return adjacency


def chebyshev_reference(laplacian, signal, kernel, bias):
    """Dense numpy Eq. 1: sum_k T_k(L~) f theta_k + b; also returns the T_k matrices."""
    dense = laplacian.toarray()
    polys = [np.eye(len(dense)), dense]
    while len(polys) < len(kernel):
        polys.append(2.0 * dense @ polys[-1] - polys[-2])
    polys = polys[: len(kernel)]
    out = sum(np.einsum("nm,bmf,fg->bng", t, signal, theta) for t, theta in zip(polys, kernel))
    return out + bias, polys


def set_random_weights(layer, seed):
    """Overwrites the trainable weights of a built layer with N(0, 0.5) values."""
    rng = np.random.default_rng(seed)
    for weight in layer.trainable_weights:
        weight.assign(rng.normal(0.0, 0.5, weight.shape).astype("float32"))


# ---------------------------------------------------------------------------- ChebConv


def test_neighbor_tables_hand_computed():
    matrix = scipy.sparse.csr_matrix(np.array([[1.0, 2.0, 0.0], [0.0, 0.0, 0.0], [3.0, 0.0, 4.0]]))
    neighbors, weights = neighbor_tables(matrix)
    np.testing.assert_array_equal(neighbors, [[0, 1], [1, 1], [0, 2]])
    np.testing.assert_array_equal(weights, [[1.0, 2.0], [0.0, 0.0], [3.0, 4.0]])
    neighbors, weights = neighbor_tables(matrix, max_degree=3)
    np.testing.assert_array_equal(neighbors, [[0, 1, 0], [1, 1, 1], [0, 2, 2]])
    np.testing.assert_array_equal(weights[:, 2], [0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="max_degree=1 is too small"):
        neighbor_tables(matrix, max_degree=1)
    with pytest.raises(ValueError, match=r"must be square .* got shape \(2, 3\)"):
        neighbor_tables(np.zeros((2, 3)))


@pytest.mark.parametrize("formulation", FORMULATIONS)
@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_cheb_conv_matches_dense_reference(formulation, order):
    laplacian = rescaled_laplacian(path_adjacency(5))
    rng = np.random.default_rng(order)
    signal = rng.normal(size=(2, 5, 3)).astype("float32")
    layer = ChebConv(4, order=order, laplacian=laplacian, formulation=formulation)
    layer.build(signal.shape)
    set_random_weights(layer, seed=order)
    expected, _ = chebyshev_reference(laplacian, signal, layer.kernel.numpy(), layer.bias.numpy())
    np.testing.assert_allclose(layer(signal).numpy(), expected, atol=1e-5)


@pytest.mark.parametrize("formulation", FORMULATIONS)
def test_cheb_conv_gradient_matches_analytic(formulation):
    laplacian = rescaled_laplacian(path_adjacency(5))
    rng = np.random.default_rng(0)
    signal = tf.constant(rng.normal(size=(2, 5, 3)).astype("float32"))
    upstream = rng.normal(size=(2, 5, 4)).astype("float32")
    layer = ChebConv(4, order=3, laplacian=laplacian, formulation=formulation)
    layer.build(signal.shape)
    set_random_weights(layer, seed=1)
    with tf.GradientTape() as tape:
        tape.watch(signal)
        loss = tf.reduce_sum(layer(signal) * upstream)
    grad_signal, grad_kernel, grad_bias = tape.gradient(loss, [signal, layer.kernel, layer.bias])
    kernel = layer.kernel.numpy()
    _, polys = chebyshev_reference(laplacian, signal.numpy(), kernel, 0.0)
    # loss = sum_k <G, T_k f theta_k>: d/df = sum_k T_k^T G theta_k^T, d/dtheta_k = (T_k f)^T G.
    expected_signal = sum(np.einsum("mn,bmg,fg->bnf", t, upstream, theta) for t, theta in zip(polys, kernel))
    expected_kernel = np.stack([np.einsum("nm,bmf,bng->fg", t, signal.numpy(), upstream) for t in polys])
    np.testing.assert_allclose(grad_signal.numpy(), expected_signal, atol=1e-4)
    np.testing.assert_allclose(grad_kernel.numpy(), expected_kernel, atol=1e-4)
    np.testing.assert_allclose(grad_bias.numpy(), upstream.sum(axis=(0, 1)), atol=1e-4)
    assert len(layer.non_trainable_weights) == 2  # The graph tables get no gradient.


def test_sparse_and_gather_agree_forward_and_backward():
    rng = np.random.default_rng(3)
    adjacency = np.triu(rng.random((12, 12)) < 0.3, 1).astype(float)
    adjacency = adjacency + adjacency.T
    adjacency[11, :] = adjacency[:, 11] = 0.0  # An isolated (fake) node.
    laplacian = rescaled_laplacian(adjacency)
    signal = tf.constant(rng.normal(size=(3, 12, 5)).astype("float32"))
    sparse = ChebConv(6, order=3, laplacian=laplacian, formulation="sparse")
    sparse.build(signal.shape)
    set_random_weights(sparse, seed=4)
    gather = ChebConv.from_config({**sparse.get_config(), "formulation": "gather"})
    gather.build(signal.shape)
    gather.set_weights(sparse.get_weights())
    results = []
    for layer in (sparse, gather):
        with tf.GradientTape() as tape:
            tape.watch(signal)
            outputs = layer(signal)
            loss = tf.reduce_sum(tf.sin(outputs))
        results.append([outputs, *tape.gradient(loss, [signal, layer.kernel])])
    for from_sparse, from_gather in zip(*results):
        np.testing.assert_allclose(from_sparse.numpy(), from_gather.numpy(), atol=1e-5)


def test_cheb_conv_errors():
    laplacian = rescaled_laplacian(path_adjacency(5))
    with pytest.raises(ValueError, match="order must be >= 1, got 0"):
        ChebConv(4, order=0, laplacian=laplacian)
    with pytest.raises(ValueError, match=r"formulation must be one of .* got 'dense'"):
        ChebConv(4, laplacian=laplacian, formulation="dense")
    with pytest.raises(ValueError, match="must be square"):
        ChebConv(4, laplacian=np.zeros((5, 4)))
    with pytest.raises(ValueError, match=r"num_nodes=6 does not match the laplacian shape \(5, 5"):
        ChebConv(4, laplacian=laplacian, num_nodes=6)
    with pytest.raises(ValueError, match="needs a laplacian, or num_nodes and max_degree"):
        ChebConv(4, num_nodes=5)
    with pytest.raises(ValueError, match="graph has 5 nodes but the input has 6"):
        ChebConv(4, laplacian=laplacian)(np.zeros((1, 6, 2), "float32"))


# ---------------------------------------------------------------------- graph sampling


def test_graph_upsample_and_pool_exact():
    signal = np.array([[[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [5.0, 50.0]]], "float32")
    np.testing.assert_array_equal(GraphUpsample(2)(signal[:, :2]).numpy(), [[[1, 10], [1, 10], [2, 20], [2, 20]]])
    np.testing.assert_array_equal(GraphUpsample(3)(signal[:, :1]).numpy(), [[[1, 10]] * 3])
    np.testing.assert_array_equal(GraphPool(2)(signal).numpy(), [[[1.5, 15], [4, 40]]])
    np.testing.assert_array_equal(GraphPool(4)(signal).numpy(), [[[2.75, 27.5]]])
    np.testing.assert_array_equal(GraphPool(2)(GraphUpsample(2)(signal)).numpy(), signal)
    with pytest.raises(ValueError, match=r"node count divisible by 4, got input shape \(1, 6, 2\)"):
        GraphPool(4)(np.zeros((1, 6, 2), "float32"))
    with pytest.raises(ValueError, match="factor must be a positive integer, got 0"):
        GraphUpsample(0)


# --------------------------------------------------------------------- image networks


def test_hourglass_shapes_and_divisibility_error():
    layer = StackedHourglass(num_stacks=1, depth=2, filters=16)
    heatmaps, features = layer(np.zeros((2, 32, 32, 3), "float32"))
    assert [tuple(h.shape) for h in heatmaps] == [(2, 8, 8, 21)]
    assert tuple(features.shape) == (2, 8, 8, 16)
    two_stacks = StackedHourglass(num_stacks=2, depth=1, filters=8, num_heatmaps=5)
    heatmaps, features = two_stacks(keras.Input((16, 24, 3)))
    assert [tuple(h.shape) for h in heatmaps] == [(None, 4, 6, 5)] * 2
    assert tuple(features.shape) == (None, 4, 6, 8)
    with pytest.raises(ValueError, match=r"divisible by 16, got input shape \(None, 40, 32, 3\)"):
        StackedHourglass(num_stacks=1, depth=2, filters=16)(keras.Input((40, 32, 3)))


def test_residual_skip_conv_only_when_channels_change():
    same, wider = Residual(8), Residual(16)
    same.build((None, 4, 4, 8))
    wider.build((None, 4, 4, 8))
    assert same.skip is None and wider.skip is not None
    # Branch: 3 BN (4 weights each) + 3 convs (kernel, bias); the skip adds 1 conv.
    assert len(same.weights) == 18 and len(wider.weights) == 20


def test_encoder_output_size_and_errors():
    encoder = ResidualEncoder(16, num_residual=2, num_pools=2)
    latent = encoder(np.zeros((2, 16, 16, 21), "float32"), np.ones((2, 16, 16, 8), "float32"))
    assert tuple(latent.shape) == (2, 4 * 4 * 16)
    paper = ResidualEncoder(256)
    assert paper.compute_output_shape((None, 64, 64, 21), (None, 64, 64, 256)) == (None, 4096)
    with pytest.raises(ValueError, match="num_residual=3, num_pools=2"):
        ResidualEncoder(16, num_residual=3, num_pools=2)
    with pytest.raises(ValueError, match=r"divisible by 4, got heatmaps shape \(None, 6, 8, 21\)"):
        ResidualEncoder(16, num_residual=2, num_pools=2)(keras.Input((6, 8, 21)), keras.Input((6, 8, 16)))


def test_paper_preset_parameter_counts():
    hourglass = StackedHourglass(num_stacks=2, depth=4, filters=256, num_heatmaps=21)
    hourglass.build((None, 256, 256, 3))
    encoder = ResidualEncoder(256)
    encoder.build((None, 64, 64, 21), (None, 64, 64, 256))
    assert hourglass.count_params() == 6_605_738
    assert encoder.count_params() == 1_795_840


# ------------------------------------------------------------------- graph decoders

LEVEL_SIZES = [16, 8, 4]
NUM_VERTICES = 13  # Level-0 nodes not in NODE_OF_VERTEX (3 of 16) are fake.
NODE_OF_VERTEX = np.array([5, 0, 7, 1, 2, 9, 3, 4, 8, 6, 11, 10, 15])


def graph_hierarchy():
    """Hand-made L~ for levels 16 (ring of real nodes + fakes), 8 and 4 (paths)."""
    real = np.zeros(16, bool)
    real[NODE_OF_VERTEX] = True
    adjacency = np.zeros((16, 16))
    order = np.flatnonzero(real)
    adjacency[order, np.roll(order, 1)] = adjacency[np.roll(order, 1), order] = 1.0
    return [rescaled_laplacian(adjacency), rescaled_laplacian(path_adjacency(8)), rescaled_laplacian(path_adjacency(4))]


def make_decoder(formulation="sparse"):
    laplacians = graph_hierarchy()
    return MeshDecoder(
        fc_units=12,
        level_sizes=LEVEL_SIZES,
        widths=[6, 5, 4],
        order=3,
        formulation=formulation,
        laplacians=laplacians[:2],
        node_of_vertex=NODE_OF_VERTEX,
    )


def make_regressor(formulation="sparse"):
    laplacians = graph_hierarchy()
    return PoseRegressor(
        num_nodes=16,
        widths=(4, 5),
        num_joints=21,
        formulation=formulation,
        laplacians=(laplacians[0], laplacians[2]),
        node_of_vertex=NODE_OF_VERTEX,
    )


def test_mesh_decoder_gathers_real_vertices_in_template_order():
    decoder = make_decoder()
    latent = np.random.default_rng(0).normal(size=(2, 7)).astype("float32")
    mesh = decoder(latent, training=False)
    assert tuple(mesh.shape) == (2, NUM_VERTICES, 3)
    nodes = latent
    for layer in [*decoder.head, *decoder.body, decoder.output_conv]:
        nodes = layer(nodes, training=False)  # -> B x 16 x 3 on the level-0 graph
    np.testing.assert_array_equal(mesh.numpy(), nodes.numpy()[:, NODE_OF_VERTEX])
    assert decoder.max_degrees == (3, 3)


def test_mesh_decoder_errors():
    laplacians = graph_hierarchy()
    kwargs = dict(fc_units=4, widths=[2, 2, 2], node_of_vertex=NODE_OF_VERTEX)
    with pytest.raises(ValueError, match=r"each twice the next .* got \[16, 8, 5\]"):
        MeshDecoder(level_sizes=[16, 8, 5], laplacians=laplacians[:2], **kwargs)
    with pytest.raises(ValueError, match="laplacians needs 2 matrices .* got 3"):
        MeshDecoder(level_sizes=LEVEL_SIZES, laplacians=laplacians, **kwargs)
    with pytest.raises(ValueError, match=r"level-1 laplacian must be 8 x 8, got shape \(4, 4\)"):
        MeshDecoder(level_sizes=LEVEL_SIZES, laplacians=[laplacians[0], laplacians[2]], **kwargs)
    with pytest.raises(ValueError, match=r"values must be in \[0, 16\), got range \[0, 16\]"):
        MeshDecoder(
            fc_units=4,
            level_sizes=LEVEL_SIZES,
            widths=[2, 2, 2],
            laplacians=laplacians[:2],
            node_of_vertex=[0, 16],
        )


def test_pose_regressor_scatters_to_nodes_and_is_affine():
    regressor = make_regressor()
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(2, 2, NUM_VERTICES, 3)).astype("float32")
    regressor(x)
    set_random_weights(regressor, seed=2)  # Non-zero biases too.
    f = lambda mesh: regressor(mesh).numpy()  # noqa: E731
    zero = f(np.zeros_like(x))
    np.testing.assert_allclose(f(2.0 * x - 3.0 * y) - zero, 2.0 * (f(x) - zero) - 3.0 * (f(y) - zero), atol=1e-4)
    nodes = np.zeros((2, 16, 3), "float32")
    nodes[:, NODE_OF_VERTEX] = x  # Fake nodes stay zero.
    for layer in [*regressor.graph_layers, *regressor.head]:
        nodes = layer(nodes)
    assert tuple(nodes.shape) == (2, 21, 3)
    np.testing.assert_allclose(f(x), nodes.numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="num_nodes must be divisible by 16, got 24"):
        PoseRegressor(num_nodes=24, max_degrees=(3, 3), num_vertices=20)
    laplacians = graph_hierarchy()
    with pytest.raises(ValueError, match=r"level-2 laplacian must be 4 x 4, got shape \(8, 8\)"):
        PoseRegressor(num_nodes=16, laplacians=laplacians[:2], node_of_vertex=NODE_OF_VERTEX)


# ----------------------------------------------------------- serialization and export


def layer_cases():
    """(name, factory, inputs) for every layer, small enough to run in a few hundred ms."""
    rng = np.random.default_rng(5)
    image = rng.normal(size=(2, 16, 16, 3)).astype("float32")
    maps = rng.normal(size=(2, 8, 8, 4)).astype("float32")
    graph = rng.normal(size=(2, 5, 3)).astype("float32")
    mesh = rng.normal(size=(2, NUM_VERTICES, 3)).astype("float32")
    path = rescaled_laplacian(path_adjacency(5))
    return [
        ("residual", lambda: Residual(6), (maps,)),
        ("hourglass", lambda: Hourglass(depth=2, filters=4), (maps,)),
        ("stacked_hourglass", lambda: StackedHourglass(2, depth=1, filters=8, num_heatmaps=3), (image,)),
        ("encoder", lambda: ResidualEncoder(4, num_residual=2, num_pools=1), (maps[..., :3], maps)),
        ("cheb_conv", lambda: ChebConv(4, order=3, laplacian=path), (graph,)),
        ("cheb_conv_gather", lambda: ChebConv(4, laplacian=path, formulation="gather"), (graph,)),
        ("graph_upsample", lambda: GraphUpsample(2), (graph,)),
        ("graph_pool", lambda: GraphPool(5), (graph,)),
        ("mesh_decoder", make_decoder, (graph[:, 0],)),
        ("pose_regressor", make_regressor, (mesh,)),
    ]


@pytest.mark.parametrize("name,factory,inputs", layer_cases(), ids=[c[0] for c in layer_cases()])
def test_config_round_trip(name, factory, inputs):
    layer = factory()
    expected = layer(*inputs, training=False)
    config = layer.get_config()
    tables = {"laplacian", "laplacians", "node_of_vertex", "kwargs", "self"}
    arguments = set(inspect.signature(type(layer).__init__).parameters) - tables
    assert set(config) - {"name", "trainable", "dtype"} == arguments
    clone = type(layer).from_config(config)
    clone(*inputs, training=False)
    clone.set_weights(layer.get_weights())
    for got, want in zip(keras.tree.flatten(clone(*inputs, training=False)), keras.tree.flatten(expected)):
        np.testing.assert_array_equal(got.numpy(), want.numpy())


def tiny_network(formulation="sparse"):
    """Functional model image 32x32 -> (heat-maps, mesh, joints) with every layer type."""
    images = keras.Input((32, 32, 3))
    heatmaps, features = StackedHourglass(num_stacks=1, depth=2, filters=8)(images)
    latent = ResidualEncoder(8, num_residual=2, num_pools=1)(heatmaps[-1], features)
    mesh = make_decoder(formulation)(latent)
    joints = make_regressor(formulation)(mesh)
    return keras.Model(images, {"heatmaps": heatmaps[-1], "mesh": mesh, "joints": joints})


def test_functional_model_saves_and_reloads(keras_round_trip):
    model = tiny_network()
    images = np.random.default_rng(6).normal(size=(2, 32, 32, 3)).astype("float32")
    reloaded = keras_round_trip(model, images)
    expected = model(images, training=False)
    traced = tf.function(lambda x: reloaded(x, training=False))(tf.constant(images))
    for key in ("heatmaps", "mesh", "joints"):
        np.testing.assert_allclose(traced[key].numpy(), expected[key].numpy(), atol=1e-6)
    decoder = next(layer for layer in reloaded.layers if isinstance(layer, MeshDecoder))
    np.testing.assert_array_equal(decoder.node_of_vertex.numpy(), NODE_OF_VERTEX)
    np.testing.assert_array_equal(decoder.output_conv.neighbors.numpy(), neighbor_tables(graph_hierarchy()[0])[0])


def test_gather_network_converts_to_builtin_tflite_ops():
    model = tiny_network("gather")
    for layer in model.layers:
        if isinstance(layer, (MeshDecoder, PoseRegressor)):
            set_random_weights(layer, seed=7)  # Non-zero biases and BN offsets.
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    interpreter = Interpreter(model_content=converter.convert())
    op_names = {op["op_name"] for op in interpreter._get_ops_details()}
    assert {"GATHER", "CONV_2D", "TILE"} <= op_names
    assert not {name for name in op_names if name.startswith("Flex") or name == "CUSTOM"}
    interpreter.allocate_tensors()
    images = np.random.default_rng(8).normal(size=(1, 32, 32, 3)).astype("float32")
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], images)
    interpreter.invoke()
    outputs = {
        tuple(detail["shape"]): interpreter.get_tensor(detail["index"]) for detail in interpreter.get_output_details()
    }
    expected = model(images, training=False)
    assert len(outputs) == 3
    for key in ("heatmaps", "mesh", "joints"):
        want = expected[key].numpy()
        np.testing.assert_allclose(outputs[want.shape], want, atol=1e-5, rtol=1e-5)
