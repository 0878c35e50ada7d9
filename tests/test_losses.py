"""Tests for handshape_tf.losses on hand-computed tiny meshes, the hand template and edge cases."""

import numpy as np
import pytest
import tensorflow as tf

from handshape_tf.assets.template import load_template
from handshape_tf.losses import (
    MESH_TERMS,
    MeshTopology,
    depth_map_loss,
    edge_loss,
    face_normals,
    fully_supervised_loss,
    heatmap_loss,
    laplacian_loss,
    mesh_loss,
    normal_loss,
    pose_loss,
    pseudo_gt_mesh_loss,
    smooth_l1,
    vertex_loss,
    weakly_supervised_loss,
)

TRIANGLE = MeshTopology.from_faces(np.array([[0, 1, 2]]), 3)
# Ground truth: right triangle in the z = 0 plane (normal +z); prediction lifts vertex 2 by 1.
TRIANGLE_TARGET = np.array([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]], np.float32)
TRIANGLE_PRED = np.array([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]], np.float32)
TETRAHEDRON_FACES = np.array([[0, 2, 1], [0, 1, 3], [1, 2, 3], [0, 3, 2]])


@pytest.fixture(scope="module")
def template_topology():
    template = load_template()
    return template, MeshTopology.from_faces(template.faces, template.num_vertices)


def _laplacian_loss_dense(pred, target, faces, num_vertices):
    """Reference implementation with a dense adjacency matrix."""
    adjacency = np.zeros((num_vertices, num_vertices))
    for a, b in ((0, 1), (1, 2), (2, 0)):
        adjacency[faces[:, a], faces[:, b]] = 1
        adjacency[faces[:, b], faces[:, a]] = 1
    np.fill_diagonal(adjacency, 0)
    degree = adjacency.sum(axis=1, keepdims=True)
    offset = target - pred
    mean = np.divide(adjacency @ offset, degree, out=np.zeros_like(offset), where=degree > 0)
    return np.mean(np.sum((offset - mean) ** 2, axis=-1))


def _gradient(loss_fn, pred, *args):
    variable = tf.Variable(pred, dtype=tf.float32)
    with tf.GradientTape() as tape:
        loss = loss_fn(variable, *args)
    return loss, tape.gradient(loss, variable)


# ----------------------------------------------------------------------------- topology


def test_topology_tables_two_triangles_and_isolated_vertex():
    topology = MeshTopology.from_faces(np.array([[0, 1, 2], [1, 3, 2]]), 5)
    np.testing.assert_array_equal(topology.edges, [[0, 1], [0, 2], [1, 2], [1, 3], [2, 3]])
    np.testing.assert_array_equal(topology.neighbor_counts, [2, 3, 3, 2, 0])
    np.testing.assert_array_equal(topology.neighbors, [[1, 2, 5], [0, 2, 3], [0, 1, 3], [1, 2, 5], [5, 5, 5]])
    np.testing.assert_allclose(topology.neighbor_weights[:, 0], [0.5, 1 / 3, 1 / 3, 0.5, 0.0])
    assert topology.num_vertices == 5
    assert topology.faces.dtype == np.int32 and not topology.faces.flags.writeable


def test_topology_tetrahedron_and_template(template_topology):
    tetrahedron = MeshTopology.from_faces(TETRAHEDRON_FACES, 4)
    assert len(tetrahedron.edges) == 6
    np.testing.assert_array_equal(tetrahedron.neighbor_counts, [3, 3, 3, 3])
    np.testing.assert_array_equal(tetrahedron.neighbors[0], [1, 2, 3])
    template, topology = template_topology
    np.testing.assert_array_equal(topology.edges, template.edges)
    assert topology.neighbor_counts.sum() == 2 * len(template.edges)
    # Closed surface: Euler characteristic V - E + F = 2.
    assert template.num_vertices - len(topology.edges) + len(topology.faces) == 2


def test_topology_drops_repeated_vertex_sides():
    topology = MeshTopology.from_faces(np.array([[0, 1, 1]]), 2)
    np.testing.assert_array_equal(topology.edges, [[0, 1]])
    np.testing.assert_array_equal(topology.neighbor_counts, [1, 1])


def test_topology_errors():
    with pytest.raises(ValueError, match=r"faces has dtype float64 and shape \(1, 3\); expected a non-empty F x 3"):
        MeshTopology.from_faces(np.zeros((1, 3)), 3)
    with pytest.raises(ValueError, match=r"shape \(0, 3\); expected a non-empty"):
        MeshTopology.from_faces(np.zeros((0, 3), int), 3)
    with pytest.raises(ValueError, match=r"num_vertices is 0; expected a positive int"):
        MeshTopology.from_faces([[0, 1, 2]], 0)
    with pytest.raises(ValueError, match=r"faces index vertices in \[0, 3\]; expected indices in \[0, 3\)"):
        MeshTopology.from_faces([[0, 1, 3]], 3)
    with pytest.raises(ValueError, match=r"faces \[\[1, 1, 1\]\] have no side between distinct vertices"):
        MeshTopology.from_faces([[1, 1, 1]], 3)


# ----------------------------------------------------------------------------- mesh terms, hand computed


def test_triangle_terms_hand_computed():
    # Normal: sides 0-1 (1,0,0), 1-2 (-1,1,1), 2-0 (0,-1,-1) against n = (0,0,1): 0 + 1 + 1.
    assert normal_loss(TRIANGLE_PRED, TRIANGLE_TARGET, TRIANGLE).numpy() == pytest.approx(2.0)
    # Edge: squared lengths target (1, 1, 2), pred (1, 2, 3) for edges 01, 02, 12 -> (0+1+1)/3.
    assert edge_loss(TRIANGLE_PRED, TRIANGLE_TARGET, TRIANGLE).numpy() == pytest.approx(2 / 3)
    # Laplacian: delta = (0, 0, (0,0,-1)); residuals (0,0,.5), (0,0,.5), (0,0,-1) -> (.25+.25+1)/3.
    assert laplacian_loss(TRIANGLE_PRED, TRIANGLE_TARGET, TRIANGLE).numpy() == pytest.approx(0.5)
    # Vertex: only d differs, by 1 at one vertex of three.
    assert vertex_loss(TRIANGLE_PRED, TRIANGLE_TARGET).numpy() == pytest.approx(1 / 3)
    total, values = mesh_loss(TRIANGLE_PRED, TRIANGLE_TARGET, TRIANGLE)
    assert set(values) == set(MESH_TERMS)
    assert total.numpy() == pytest.approx(1 / 3 + 2 + 2 / 3 + 50 * 0.5)


def test_vertex_loss_counts_uv_twice():
    offset = np.array([0.1, 0.2, 0.3], np.float32)
    # 3D (uvd) + 2D (uv): 2 (0.01 + 0.04) + 0.09 per vertex.
    assert vertex_loss(TRIANGLE_TARGET + offset, TRIANGLE_TARGET).numpy() == pytest.approx(0.19)


def test_face_normals_unit_and_oriented():
    normals = face_normals(TRIANGLE_TARGET, TRIANGLE.faces).numpy()
    np.testing.assert_allclose(normals, [[[0.0, 0.0, 1.0]]])
    flipped = face_normals(TRIANGLE_TARGET * 3.0, TRIANGLE.faces[:, ::-1]).numpy()
    np.testing.assert_allclose(flipped, [[[0.0, 0.0, -1.0]]])


def test_laplacian_matches_dense_reference_on_template(template_topology):
    template, topology = template_topology
    rng = np.random.default_rng(0)
    target = template.vertices[None] + rng.normal(scale=0.01, size=(2, template.num_vertices, 3))
    pred = template.vertices[None] + rng.normal(scale=0.01, size=(2, template.num_vertices, 3))
    expected = _laplacian_loss_dense(pred, target, template.faces, template.num_vertices)
    actual = laplacian_loss(pred, target, topology).numpy()
    assert actual == pytest.approx(expected, rel=1e-4)


def test_losses_are_zero_for_perfect_prediction(template_topology):
    template, topology = template_topology
    mesh = np.repeat(template.vertices[None], 2, axis=0)
    total, values = mesh_loss(mesh, mesh, topology)
    assert total.numpy() == pytest.approx(0.0, abs=1e-15)  # normals: rounding in the dot products
    assert all(values[term].numpy() == 0.0 for term in ("vertex", "edge", "laplacian"))
    joints = np.random.default_rng(1).normal(size=(2, 21, 3))
    assert pose_loss(joints, joints).numpy() == 0.0
    maps = np.random.default_rng(2).uniform(size=(2, 8, 8, 21))
    assert heatmap_loss(maps, maps).numpy() == 0.0
    total, _ = pseudo_gt_mesh_loss(mesh, mesh, topology)
    assert total.numpy() == 0.0


def test_laplacian_ignores_a_common_offset(template_topology):
    template, topology = template_topology
    mesh = template.vertices[None]
    shifted = mesh + np.array([0.1, -0.2, 0.3], np.float32)
    assert laplacian_loss(shifted, mesh, topology).numpy() == pytest.approx(0.0, abs=1e-10)
    assert edge_loss(shifted, mesh, topology).numpy() == pytest.approx(0.0, abs=1e-12)
    assert normal_loss(shifted, mesh, topology).numpy() == pytest.approx(0.0, abs=1e-10)


@pytest.mark.parametrize(
    "pred, target",
    [
        (np.zeros((2, 4, 3)), np.zeros((2, 4, 3))),  # all-zero meshes
        (np.random.default_rng(3).normal(size=(2, 4, 3)), np.zeros((2, 4, 3))),  # zero-area targets
        (np.zeros((2, 4, 3)), np.random.default_rng(4).normal(size=(2, 4, 3))),  # collapsed prediction
        (  # collinear (zero-area) target faces
            np.random.default_rng(5).normal(size=(1, 4, 3)),
            np.array([[[0.0, 0, 0], [1, 1, 1], [2, 2, 2], [3, 3, 3]]]),
        ),
    ],
)
def test_degenerate_meshes_give_finite_loss_and_gradients(pred, target):
    topology = MeshTopology.from_faces(TETRAHEDRON_FACES, 4)
    for name in MESH_TERMS:
        loss, gradient = _gradient(lambda p, t, name=name: mesh_loss(p, t, topology, terms=[name])[0], pred, target)
        assert np.isfinite(loss.numpy()), name
        assert np.all(np.isfinite(gradient.numpy())), name


def test_normal_loss_gradient_does_not_reach_target():
    target = tf.Variable(TRIANGLE_TARGET)
    with tf.GradientTape() as tape:
        loss = normal_loss(TRIANGLE_PRED, target, TRIANGLE)
    assert tape.gradient(loss, target) is None


def test_mesh_gradients_match_finite_differences():
    topology = MeshTopology.from_faces(TETRAHEDRON_FACES, 4)
    rng = np.random.default_rng(6)
    target = rng.normal(size=(1, 4, 3))
    pred = rng.normal(size=(1, 4, 3))
    _, gradient = _gradient(lambda p, t: mesh_loss(p, t, topology)[0], pred, target)
    step = 1e-3
    for index in [(0, 0, 0), (0, 2, 1), (0, 3, 2)]:
        plus, minus = pred.copy(), pred.copy()
        plus[index] += step
        minus[index] -= step
        difference = mesh_loss(plus, target, topology)[0] - mesh_loss(minus, target, topology)[0]
        numeric = difference.numpy() / (2 * step)
        assert gradient.numpy()[index] == pytest.approx(numeric, rel=2e-2, abs=2e-2)


# ----------------------------------------------------------------------------- ablations and combinations


def test_mesh_loss_switches_remove_terms():
    full, values = mesh_loss(TRIANGLE_PRED, TRIANGLE_TARGET, TRIANGLE)
    for dropped in MESH_TERMS:
        kept = [term for term in MESH_TERMS if term != dropped]
        total, partial = mesh_loss(TRIANGLE_PRED, TRIANGLE_TARGET, TRIANGLE, terms=kept)
        assert dropped not in partial
        weight = 50.0 if dropped == "laplacian" else 1.0
        assert total.numpy() == pytest.approx(full.numpy() - weight * values[dropped].numpy())
    total, _ = mesh_loss(TRIANGLE_PRED, TRIANGLE_TARGET, TRIANGLE, weights={"laplacian": 0.0})
    assert total.numpy() == pytest.approx(1 / 3 + 2 + 2 / 3)


def test_pseudo_gt_mesh_loss_is_edge_plus_50_laplacian():
    total, values = pseudo_gt_mesh_loss(TRIANGLE_PRED, TRIANGLE_TARGET, TRIANGLE)
    assert set(values) == {"edge", "laplacian"}
    assert total.numpy() == pytest.approx(2 / 3 + 50 * 0.5)


def test_heatmap_and_pose_loss_hand_computed():
    target = np.zeros((1, 2, 2, 2), np.float32)
    target[..., 0] = 1.0
    # Joint 0: 4 pixels off by 1 -> 4; joint 1: 0; mean over joints 2.
    assert heatmap_loss(np.zeros_like(target), target).numpy() == pytest.approx(2.0)
    assert heatmap_loss([np.zeros_like(target), np.zeros_like(target)], target).numpy() == pytest.approx(4.0)
    pred = np.zeros((1, 2, 3), np.float32)
    target = np.array([[[1.0, 2.0, 2.0], [0.0, 0.0, 0.0]]], np.float32)
    assert pose_loss(pred, target).numpy() == pytest.approx(9 / 2)


def test_fully_supervised_loss_weights_and_ablations():
    maps_target = np.zeros((1, 2, 2, 2), np.float32)
    maps_target[..., 0] = 1.0
    pose_pred = np.zeros((1, 2, 3), np.float32)
    pose_target = np.array([[[1.0, 2.0, 2.0], [0.0, 0.0, 0.0]]], np.float32)
    inputs = dict(
        heatmaps_pred=np.zeros_like(maps_target),
        heatmaps_target=maps_target,
        mesh_pred=TRIANGLE_PRED,
        mesh_target=TRIANGLE_TARGET,
        pose_pred=pose_pred,
        pose_target=pose_target,
        topology=TRIANGLE,
    )
    mesh_total = 1 / 3 + 2 + 2 / 3 + 25
    total, values = fully_supervised_loss(**inputs)
    assert total.numpy() == pytest.approx(0.5 * 2.0 + mesh_total + 4.5)
    assert set(values) == {"heatmap", "mesh", "pose", *MESH_TERMS}
    inputs.update(pose_pred=None, pose_target=None)
    total, values = fully_supervised_loss(**inputs, terms=("heatmap", "mesh"), mesh_terms=("vertex", "edge"))
    assert total.numpy() == pytest.approx(0.5 * 2.0 + 1 / 3 + 2 / 3)
    assert set(values) == {"heatmap", "mesh", "vertex", "edge"}


def test_weakly_supervised_loss_weights():
    rendered = np.full((1, 2, 2), 3.0, np.float32)
    reference = np.zeros((1, 2, 2), np.float32)
    valid = np.ones((1, 2, 2), bool)
    maps = np.zeros((1, 2, 2, 1), np.float32)
    common = dict(
        heatmaps_pred=maps + 1.0,
        heatmaps_target=maps,
        rendered_depth=rendered,
        reference_depth=reference,
        depth_valid=valid,
        mesh_pred=TRIANGLE_PRED,
        mesh_pseudo_target=TRIANGLE_TARGET,
        topology=TRIANGLE,
    )
    pseudo = 2 / 3 + 50 * 0.5
    total, values = weakly_supervised_loss(**common)
    # L_H = 4, L_D = smooth_l1(3) = 2.5.
    assert total.numpy() == pytest.approx(0.1 * 4 + 0.1 * 2.5 + pseudo)
    assert set(values) == {"heatmap", "depth", "pseudo_mesh", "edge", "laplacian"}
    joints = np.zeros((1, 21, 3), np.float32)
    total, values = weakly_supervised_loss(
        **common,
        pose_pred=joints + 1.0,
        pose_target=joints,
        terms=("heatmap", "depth", "pseudo_mesh", "pose"),
    )
    assert total.numpy() == pytest.approx(0.1 * 4 + 0.1 * 2.5 + pseudo + 10 * 3)


def test_losses_run_inside_tf_function(template_topology):
    template, topology = template_topology
    rng = np.random.default_rng(7)
    noise = rng.normal(scale=0.01, size=(2, template.num_vertices, 3))
    pred = (template.vertices[None] + noise).astype(np.float32)
    target = np.repeat(template.vertices[None], 2, axis=0)

    @tf.function(input_signature=[tf.TensorSpec([None, template.num_vertices, 3])] * 2)
    def compiled(p, t):
        return mesh_loss(p, t, topology)[0]

    eager = mesh_loss(pred, target, topology)[0].numpy()
    assert compiled(pred, target).numpy() == pytest.approx(eager, rel=1e-5)


# ----------------------------------------------------------------------------- depth


def test_smooth_l1_hand_computed():
    np.testing.assert_allclose(smooth_l1([-3.0, -0.5, 0.0, 0.5, 2.0]).numpy(), [2.5, 0.125, 0.0, 0.125, 1.5])
    np.testing.assert_allclose(smooth_l1([0.5, 4.0], delta=2.0).numpy(), [0.0625, 3.0])


def test_depth_map_loss_masks_invalid_pixels():
    rendered = tf.Variable([[[1.0, 5.0], [0.0, np.nan]]])
    reference = np.array([[[0.5, 1.0], [100.0, np.inf]]], np.float32)
    valid = np.array([[[True, True], [False, False]]])
    with tf.GradientTape() as tape:
        loss = depth_map_loss(rendered, reference, valid)
    # (smooth_l1(0.5) + smooth_l1(4)) / 2 valid pixels.
    assert loss.numpy() == pytest.approx((0.125 + 3.5) / 2)
    np.testing.assert_array_equal(tape.gradient(loss, rendered).numpy(), [[[0.25, 0.5], [0.0, 0.0]]])
    four_d = depth_map_loss(rendered[..., None], reference[..., None], valid[..., None])
    assert four_d.numpy() == pytest.approx(loss.numpy())


def test_depth_map_loss_without_valid_pixels_is_zero_and_finite():
    rendered = tf.Variable(np.full((2, 4, 4), np.nan, np.float32))
    with tf.GradientTape() as tape:
        loss = depth_map_loss(rendered, np.zeros((2, 4, 4)), np.zeros((2, 4, 4), bool))
    assert loss.numpy() == 0.0
    assert np.all(tape.gradient(loss, rendered).numpy() == 0.0)


# ----------------------------------------------------------------------------- errors


def test_loss_errors():
    with pytest.raises(ValueError, match=r"prediction has shape \(1, 3, 2\); expected B x V x 3 meshes"):
        vertex_loss(np.zeros((1, 3, 2)), np.zeros((1, 3, 2)))
    with pytest.raises(ValueError, match=r"prediction has shape \(1, 3, 3\) and target \(1, 4, 3\); expected"):
        vertex_loss(np.zeros((1, 3, 3)), np.zeros((1, 4, 3)))
    with pytest.raises(ValueError, match=r"mesh has shape \(1, 4, 3\); expected B x 3 x 3 to match"):
        edge_loss(np.zeros((1, 4, 3)), np.zeros((1, 4, 3)), TRIANGLE)
    with pytest.raises(ValueError, match=r"terms is \('vertex', 'curvature'\); expected a non-empty"):
        mesh_loss(TRIANGLE_PRED, TRIANGLE_TARGET, TRIANGLE, terms=("vertex", "curvature"))
    with pytest.raises(ValueError, match=r"terms is \(\); expected a non-empty selection"):
        mesh_loss(TRIANGLE_PRED, TRIANGLE_TARGET, TRIANGLE, terms=())
    with pytest.raises(ValueError, match=r"terms is the string 'edge'; expected a sequence"):
        mesh_loss(TRIANGLE_PRED, TRIANGLE_TARGET, TRIANGLE, terms="edge")
    with pytest.raises(ValueError, match=r"weights has unknown terms \['normal'\]; expected keys from \('edge', 'lap"):
        pseudo_gt_mesh_loss(TRIANGLE_PRED, TRIANGLE_TARGET, TRIANGLE, weights={"normal": 1.0})
    with pytest.raises(ValueError, match=r"term 'pose' is selected but \['pose_pred', 'pose_target'\]"):
        fully_supervised_loss(terms=("pose",))
    with pytest.raises(ValueError, match=r"prediction has shape \(1, 8, 8, 2\) and target \(1, 8, 8, 3\)"):
        heatmap_loss(np.zeros((1, 8, 8, 2)), np.zeros((1, 8, 8, 3)))
    with pytest.raises(ValueError, match=r"pred is an empty sequence"):
        heatmap_loss([], np.zeros((1, 8, 8, 3)))
    with pytest.raises(ValueError, match=r"valid_mask has shape \(1, 4, 4\); expected the depth maps' shape \(1, 8"):
        depth_map_loss(np.zeros((1, 8, 8)), np.zeros((1, 8, 8)), np.ones((1, 4, 4)))
    with pytest.raises(ValueError, match=r"delta is 0.0; expected a positive"):
        smooth_l1([1.0], delta=0.0)
