"""Mesh graph, Laplacians, Graclus coarsening and the template hierarchy."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse

from handshape_tf.assets.template import load_template
from handshape_tf.graph import (
    adjacency_from_faces,
    build_hierarchy,
    coarsen,
    graclus_levels,
    graclus_matching,
    largest_eigenvalue,
    normalized_laplacian,
    rescale_laplacian,
    template_hierarchy,
    tree_permutations,
)

TEMPLATE_SIZES = (1536, 768, 384, 192, 96)
TEMPLATE_CHECKSUM = "7f3e1448aa95cdb705321ce1bf23cabace36049714de06bb9ade692462c6822c"


def path_graph(size):
    """size x size adjacency of the path 0 - 1 - ... - (size - 1)."""
    rows = np.arange(size - 1)
    upper = scipy.sparse.csr_matrix((np.ones(size - 1), (rows, rows + 1)), shape=(size, size))
    return scipy.sparse.csr_matrix(upper + upper.T)


def ring_graph(size):
    """size x size adjacency of the cycle 0 - 1 - ... - (size - 1) - 0."""
    rows = np.arange(size)
    upper = scipy.sparse.csr_matrix((np.ones(size), (rows, (rows + 1) % size)), shape=(size, size))
    return scipy.sparse.csr_matrix(upper + upper.T)


def pair_sum(adjacency):
    """Coarse weights of a tree-ordered graph: sum over children pairs, self loops dropped."""
    size = adjacency.shape[0]
    pool = scipy.sparse.csr_matrix((np.ones(size), (np.arange(size), np.arange(size) // 2)))
    coarse = (pool.T @ adjacency @ pool).toarray()
    np.fill_diagonal(coarse, 0.0)
    return coarse


# ---- adjacency and Laplacians on tiny graphs ----------------------------------------------------


def test_adjacency_square_of_two_triangles():
    # Two triangles sharing edge 0-2, plus vertex 4 in no face.
    adjacency = adjacency_from_faces(np.array([[0, 1, 2], [0, 2, 3]]), 5)
    expected = np.array(
        [
            [0, 1, 1, 1, 0],
            [1, 0, 1, 0, 0],
            [1, 1, 0, 1, 0],
            [1, 0, 1, 0, 0],
            [0, 0, 0, 0, 0],
        ],
        np.float64,
    )
    assert isinstance(adjacency, scipy.sparse.csr_matrix)
    np.testing.assert_array_equal(adjacency.toarray(), expected)


def test_adjacency_degenerate_face_has_no_self_loop():
    adjacency = adjacency_from_faces(np.array([[0, 0, 1]]), 2)
    np.testing.assert_array_equal(adjacency.toarray(), [[0, 1], [1, 0]])


def test_laplacian_of_triangle_with_isolated_node():
    adjacency = adjacency_from_faces(np.array([[0, 1, 2]]), 4)
    laplacian = normalized_laplacian(adjacency).toarray()
    # Degrees 2: off-diagonal -1 / sqrt(2 * 2); node 3 is isolated: identity row.
    expected = np.array([[1, -0.5, -0.5, 0], [-0.5, 1, -0.5, 0], [-0.5, -0.5, 1, 0], [0, 0, 0, 1]])
    np.testing.assert_allclose(laplacian, expected, atol=1e-15)
    # Spectrum {0, 1.5, 1.5} for the triangle, 1 for the isolated node.
    assert largest_eigenvalue(laplacian) == pytest.approx(1.5, abs=1e-12)
    rescaled = rescale_laplacian(laplacian).toarray()
    # 2 L / 1.5 - I: diagonal 1/3, triangle edges -2/3.
    expected_rescaled = np.where(expected == -0.5, -2 / 3, 0.0) + np.eye(4) / 3
    np.testing.assert_allclose(rescaled, expected_rescaled, atol=1e-12)
    np.testing.assert_allclose(np.linalg.eigvalsh(rescaled), [-1, 1 / 3, 1, 1], atol=1e-12)


def test_laplacian_of_path_with_weights():
    # Weighted path 0 -(2)- 1 -(1)- 2: degrees 2, 3, 1.
    weights = np.array([[0, 2, 0], [2, 0, 1], [0, 1, 0]], np.float64)
    laplacian = normalized_laplacian(weights).toarray()
    expected = np.array([[1, -2 / np.sqrt(6), 0], [-2 / np.sqrt(6), 1, -1 / np.sqrt(3)], [0, -1 / np.sqrt(3), 1]])
    np.testing.assert_allclose(laplacian, expected, atol=1e-15)
    # A path is bipartite: lambda_max = 2, so L~ = L - I.
    np.testing.assert_allclose(rescale_laplacian(laplacian).toarray(), expected - np.eye(3), atol=1e-12)


def test_rescale_with_given_lambda_max():
    laplacian = normalized_laplacian(ring_graph(4))
    np.testing.assert_allclose(
        rescale_laplacian(laplacian, lambda_max=4.0).toarray(), laplacian.toarray() / 2 - np.eye(4)
    )


# ---- input errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "faces, num_vertices, match",
    [
        ([[0, 1, 3]], 3, r"face 0 is \[0, 1, 3\]: vertex indices must lie in \[0, 3\)"),
        ([[0, 1, 2], [-1, 1, 2]], 3, r"face 1 is \[-1, 1, 2\]: vertex indices must lie in \[0, 3\)"),
        ([[0, 1, 2, 3]], 4, r"shape \(1, 4\); expected an F x 3 integer array"),
        ([[0.0, 1.0, 2.0]], 3, r"dtype float64 .* expected an F x 3 integer array"),
        ([[0, 1, 2]], 0, r"num_vertices is 0; expected a positive integer"),
    ],
)
def test_adjacency_errors(faces, num_vertices, match):
    with pytest.raises(ValueError, match=match):
        adjacency_from_faces(np.array(faces), num_vertices)


def test_laplacian_errors():
    with pytest.raises(ValueError, match=r"not symmetric: max \|W - W\^T\| = 1"):
        normalized_laplacian(np.array([[0.0, 1.0], [0.0, 0.0]]))
    with pytest.raises(ValueError, match=r"negative weight -1.0; expected weights >= 0"):
        normalized_laplacian(np.array([[0.0, -1.0], [-1.0, 0.0]]))
    with pytest.raises(ValueError, match=r"shape \(2, 3\); expected a non-empty N x N matrix"):
        normalized_laplacian(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"lambda_max is 0.0; expected a finite value > 0"):
        rescale_laplacian(np.eye(2), lambda_max=0.0)


def test_coarsening_errors():
    with pytest.raises(ValueError, match=r"levels is 0; expected an integer >= 1"):
        coarsen(path_graph(4), levels=0)
    with pytest.raises(ValueError, match=r"levels is 0; expected an integer >= 1"):
        build_hierarchy(np.array([[0, 1, 2]]), 3, levels=0)
    with pytest.raises(ValueError, match=r"shape \(0, 0\); expected a non-empty N x N matrix"):
        graclus_levels(np.zeros((0, 0)), levels=1)
    with pytest.raises(ValueError, match=r"self loops; expected a zero diagonal"):
        graclus_levels(scipy.sparse.identity(3, format="csr"), levels=1)
    with pytest.raises(ValueError, match=r"order has shape \(3,\); expected a permutation of range\(4\)"):
        graclus_matching(path_graph(4), np.ones(4), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"face 0 is \[0, 1, 5\]"):
        build_hierarchy(np.array([[0, 1, 5]]), 3)


# ---- Graclus on hand-checked graphs ---------------------------------------------------------


@pytest.mark.parametrize(
    "order, expected",
    [
        # 2 ties between 1 and 3 (all degrees 2): lowest index wins; 0 and 5 are left alone.
        ([2, 0, 1, 3, 4, 5], [1, 0, 0, 2, 2, 3]),
        # 1 prefers the degree-1 end: 1 * (1/2 + 1/1) > 1 * (1/2 + 1/2).
        ([1, 0, 2, 3, 4, 5], [0, 0, 1, 1, 2, 2]),
        ([5, 4, 3, 2, 1, 0], [2, 2, 1, 1, 0, 0]),
    ],
)
def test_graclus_matching_on_path(order, expected):
    path = path_graph(6)
    volumes = np.asarray(path.sum(axis=1)).ravel()
    np.testing.assert_array_equal(graclus_matching(path, volumes, np.array(order)), expected)


def test_tree_permutations_on_path():
    # Level 0 as in the first matching case: clusters {1, 2}, {0}, {3, 4}, {5}, coarse path
    # c1 - c0 - c2 - c3 with volumes 4, 1, 4, 1; visiting c0..c3 in order pairs c0 with c1
    # (1/4 + 1/1 beats 1/4 + 1/4) and c2 with c3.
    level0 = np.array([1, 0, 0, 2, 2, 3])
    coarse = path_graph(4)[[1, 0, 2, 3]][:, [1, 0, 2, 3]]
    level1 = graclus_matching(coarse, np.array([4.0, 1.0, 4.0, 1.0]), np.arange(4))
    np.testing.assert_array_equal(level1, [0, 0, 1, 1])
    permutations = tree_permutations([level0, level1])
    # Children of c1 are [0, fake 6], of c3 [5, fake 7].
    np.testing.assert_array_equal(permutations[0], [1, 2, 0, 6, 3, 4, 5, 7])
    np.testing.assert_array_equal(permutations[1], [0, 1, 2, 3])
    np.testing.assert_array_equal(permutations[2], [0, 1])


def test_tree_permutations_fake_parent_has_fake_children():
    # Level 0: clusters {0, 1}, {2}; level 1: both clusters stay alone. Each level-1 node gets
    # a fake sibling (2, 3), and each of those fakes two fake children at level 0.
    permutations = tree_permutations([np.array([0, 0, 1]), np.array([0, 1])])
    np.testing.assert_array_equal(permutations[2], [0, 1])
    np.testing.assert_array_equal(permutations[1], [0, 2, 1, 3])
    np.testing.assert_array_equal(permutations[0], [0, 1, 3, 4, 2, 5, 6, 7])


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_coarsen_ring_is_a_binary_tree(seed):
    ring = ring_graph(10)
    adjacencies, permutations = coarsen(ring, levels=3, seed=seed)
    sizes = [a.shape[0] for a in adjacencies]
    assert sizes == [len(p) for p in permutations]
    assert all(fine == 2 * coarse for fine, coarse in zip(sizes, sizes[1:]))
    real = permutations[0][permutations[0] < 10]
    np.testing.assert_array_equal(np.sort(real), np.arange(10))
    fake = permutations[0] >= 10
    assert fake.sum() == sizes[0] - 10
    for level, (fine, coarse) in enumerate(zip(adjacencies, adjacencies[1:])):
        # Every coarse edge is the sum of the fine edges between the two children pairs.
        np.testing.assert_array_equal(pair_sum(fine), coarse.toarray(), err_msg=f"level {level}")
        assert np.all(np.asarray(fine.sum(axis=1)).ravel()[fake] == 0)
        fake = fake.reshape(-1, 2).all(axis=1)
    # Level 0 is the ring itself, reordered.
    real_nodes = np.flatnonzero(permutations[0] < 10)
    vertices = permutations[0][real_nodes]
    np.testing.assert_array_equal(
        adjacencies[0].toarray()[np.ix_(real_nodes, real_nodes)], ring.toarray()[np.ix_(vertices, vertices)]
    )


# ---- the hand template hierarchy ------------------------------------------------------------


@pytest.fixture(scope="module")
def hierarchy():
    return template_hierarchy()


@pytest.fixture(scope="module")
def template():
    return load_template()


def test_template_levels_and_checksum_are_pinned(hierarchy):
    assert hierarchy.level_sizes == TEMPLATE_SIZES
    assert hierarchy.num_vertices == 1159
    assert hierarchy.num_levels == 4
    np.testing.assert_allclose(hierarchy.lambda_max, [1.490600, 1.613828, 1.664418, 1.695222, 1.752208], atol=1e-6)
    assert hierarchy.checksum() == TEMPLATE_CHECKSUM


def test_template_hierarchy_is_deterministic(hierarchy, template):
    again = build_hierarchy(template.faces, template.num_vertices, levels=4, seed=0)
    assert again.checksum() == hierarchy.checksum()
    other = build_hierarchy(template.faces, template.num_vertices, levels=4, seed=1)
    assert other.checksum() != hierarchy.checksum()
    # The left hand only re-winds the faces: same graph, same hierarchy.
    left = load_template(left=True)
    assert build_hierarchy(left.faces, left.num_vertices).checksum() == hierarchy.checksum()
    assert template_hierarchy() is hierarchy


def test_vertex_node_maps_are_inverse(hierarchy):
    vertex_of_node, node_of_vertex = hierarchy.vertex_of_node, hierarchy.node_of_vertex
    assert vertex_of_node.dtype == node_of_vertex.dtype == np.int64
    np.testing.assert_array_equal(vertex_of_node[node_of_vertex], np.arange(1159))
    real = vertex_of_node >= 0
    np.testing.assert_array_equal(np.sort(vertex_of_node[real]), np.arange(1159))
    assert np.all(vertex_of_node[~real] == -1) and (~real).sum() == TEMPLATE_SIZES[0] - 1159
    with pytest.raises(ValueError, match="read-only"):
        node_of_vertex[0] = 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        hierarchy.num_vertices = 3


def test_level0_is_the_mesh_in_tree_order(hierarchy, template):
    mesh = adjacency_from_faces(template.faces, template.num_vertices)
    real = np.flatnonzero(hierarchy.vertex_of_node >= 0)
    vertices = hierarchy.vertex_of_node[real]
    level0 = hierarchy.adjacencies[0]
    assert (level0[real][:, real] != mesh[vertices][:, vertices]).nnz == 0
    assert level0.nnz == mesh.nnz == 2 * len(template.edges)
    # Graclus pairs are mesh edges: two real siblings are always neighbours.
    siblings = hierarchy.vertex_of_node.reshape(-1, 2)
    both = np.all(siblings >= 0, axis=1)
    assert np.all(mesh[siblings[both, 0], siblings[both, 1]] == 1)


def test_template_tree_and_fake_nodes(hierarchy):
    fake = hierarchy.vertex_of_node < 0
    for level, adjacency in enumerate(hierarchy.adjacencies):
        degree = np.asarray(adjacency.sum(axis=1)).ravel()
        assert np.all(degree[fake] == 0), f"level {level}: a fake node has edges"
        assert np.all(degree[~fake] > 0), f"level {level}: a real node is isolated"
        np.testing.assert_array_equal(adjacency.diagonal(), 0.0)
        if level + 1 < len(hierarchy.adjacencies):
            np.testing.assert_array_equal(pair_sum(adjacency), hierarchy.adjacencies[level + 1].toarray())
            fake = fake.reshape(-1, 2).all(axis=1)


def test_template_rescaled_spectrum(hierarchy):
    for level, (adjacency, rescaled, lambda_max) in enumerate(
        zip(hierarchy.adjacencies, hierarchy.laplacians, hierarchy.lambda_max)
    ):
        dense = normalized_laplacian(adjacency).toarray()
        # ARPACK (large levels) against the dense solver.
        assert lambda_max == pytest.approx(np.linalg.eigvalsh(dense)[-1], abs=1e-10), f"level {level}"
        spectrum = np.linalg.eigvalsh(rescaled.toarray())
        assert spectrum[0] >= -1 - 1e-9 and spectrum[-1] == pytest.approx(1.0, abs=1e-9), f"level {level}"
        np.testing.assert_allclose(rescaled.toarray(), 2 * dense / lambda_max - np.eye(len(dense)), atol=1e-12)
    # Computing lambda_max inside rescale_laplacian gives the same matrix.
    level0 = normalized_laplacian(hierarchy.adjacencies[0])
    assert abs(rescale_laplacian(level0) - hierarchy.laplacians[0]).max() < 1e-12


def test_graph_package_does_not_import_tensorflow():
    code = "import sys, handshape_tf.graph; assert 'tensorflow' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])
