"""The hand template asset: counts, topology, keypoints, mirroring and corrupt-file errors."""

import collections

import numpy as np
import pytest

from handshape_tf.assets.template import (
    KEYPOINT_NAMES,
    KEYPOINT_RIG_JOINTS,
    SCALE_BONE,
    TemplateError,
    load_template,
)


def _signed_volume(vertices, faces):
    v = vertices[faces].astype(np.float64)
    return np.einsum("ij,ij->i", v[:, 0], np.cross(v[:, 1], v[:, 2])).sum() / 6


def test_counts_and_closed_surface():
    template = load_template()
    assert template.vertices.shape == (1159, 3) and template.faces.shape == (2314, 3)
    assert template.skin_weights.shape == (1159, 25) and len(template.joint_names) == 25
    np.testing.assert_allclose(template.skin_weights.sum(axis=1), 1.0, atol=1e-5)
    # Every edge is shared by exactly two triangles and V - E + F = 2: a closed genus-0 surface.
    edge_uses = collections.Counter(
        map(
            tuple,
            np.sort(
                np.concatenate([template.faces[:, [0, 1]], template.faces[:, [1, 2]], template.faces[:, [2, 0]]]),
                axis=1,
            ).tolist(),
        )
    )
    assert set(edge_uses.values()) == {2}
    assert template.num_vertices - len(template.edges) + len(template.faces) == 2
    assert _signed_volume(template.vertices, template.faces) > 0  # faces wind outward


def test_keypoints_follow_the_paper_order():
    template = load_template()
    assert len(KEYPOINT_NAMES) == len(KEYPOINT_RIG_JOINTS) == 21
    assert KEYPOINT_RIG_JOINTS[:5] == (
        "wrist",
        "thumb-metacarpal",
        "thumb-phalanx-proximal",
        "thumb-phalanx-distal",
        "thumb-tip",
    )
    assert KEYPOINT_RIG_JOINTS[9:13] == (
        "middle-finger-phalanx-proximal",
        "middle-finger-phalanx-intermediate",
        "middle-finger-phalanx-distal",
        "middle-finger-tip",
    )
    keypoints = template.keypoints
    np.testing.assert_allclose(keypoints[0], template.joint_positions[0])
    # Tips are farther from the wrist than their MCPs; the scale bone is a few centimetres.
    for finger in range(5):
        base, tip = 1 + 4 * finger, 4 + 4 * finger
        assert np.linalg.norm(keypoints[tip] - keypoints[0]) > np.linalg.norm(keypoints[base] - keypoints[0])
    bone = np.linalg.norm(keypoints[SCALE_BONE[0]] - keypoints[SCALE_BONE[1]])
    assert 0.03 < bone < 0.06


def test_mirrored_template_is_a_left_hand():
    right = load_template()
    left = load_template(left=True)
    assert left.is_left and not right.is_left
    np.testing.assert_allclose(left.vertices[:, 0], -right.vertices[:, 0])
    np.testing.assert_allclose(left.keypoints, right.keypoints * [-1, 1, 1], atol=1e-6)
    assert _signed_volume(left.vertices, left.faces) > 0
    np.testing.assert_allclose(np.linalg.det(left.rest_transforms[:, :3, :3]), 1.0, atol=1e-5)
    np.testing.assert_allclose(left.mirrored().vertices, right.vertices)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(TemplateError, match="hand template not found at .*nothing.npz"):
        load_template(tmp_path / "nothing.npz")
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(TemplateError, match="not a readable .npz hand template"):
        load_template(corrupt)


def test_inconsistent_arrays_are_named(tmp_path):
    template = load_template()
    arrays = {
        "version": np.array("webxr-generic-hand-1.0.20/v1"),
        "vertices": template.vertices,
        "faces": template.faces,
        "skin_weights": template.skin_weights[:-1],
        "joint_names": np.array(template.joint_names),
        "joint_parents": template.joint_parents,
        "rest_transforms": template.rest_transforms,
        "keypoint_regressor": template.keypoint_regressor,
    }
    np.savez(tmp_path / "short.npz", **arrays)
    with pytest.raises(TemplateError, match=r"skin_weights has shape \(1158, 25\); expected \('V', 'R'\)"):
        load_template(tmp_path / "short.npz")
    np.savez(tmp_path / "old.npz", **{**arrays, "version": np.array("v0")})
    with pytest.raises(TemplateError, match="template version 'v0'; expected 'webxr-generic-hand-1.0.20/v1'"):
        load_template(tmp_path / "old.npz")
