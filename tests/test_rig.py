"""The hand rig: skinning, anatomical poses and shape variation of the WebXR hand template."""

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_graphics.geometry.transformation import linear_blend_skinning

from handshape_tf.assets.template import load_template
from handshape_tf.data import hand_poses, hand_shapes
from handshape_tf.geometry import skinning

FLIP = np.diag([-1.0, 1.0, 1.0]).astype(np.float32)
INDEX_PIP = 7  # rig joint "index-finger-phalanx-intermediate"
INDEX_TIP_KEYPOINT, INDEX_MCP_KEYPOINT = 8, 5


@pytest.fixture(scope="module")
def right():
    return load_template()


@pytest.fixture(scope="module")
def left():
    return load_template(left=True)


def _angles(**values):
    angles = np.zeros(hand_poses.NUM_POSE_PARAMETERS, np.float32)
    for name, value in values.items():
        angles[hand_poses.POSE_PARAMETER_NAMES.index(name)] = value
    return angles


def _posed_joints(template, angles):
    return hand_poses.joint_positions(template, hand_poses.pose_rotations(angles, template))


def _random_rotations(rng, batch, joints, max_angle=1.0):
    axis_angle = rng.uniform(-max_angle, max_angle, (batch, joints, 3)).astype(np.float32)
    return skinning.axis_angle_to_matrix(axis_angle).numpy()


def _bone_lengths(template, joints):
    parents = template.joint_parents
    return np.linalg.norm(joints[..., 1:, :] - joints[..., parents[1:], :], axis=-1)


# ------------------------------------------------------------------------------------ skinning


def test_rest_pose_reproduces_the_template(right, left):
    for template in (right, left):
        eye = np.tile(np.eye(3, dtype=np.float32), (2, 25, 1, 1))
        for rotations in (eye, np.zeros((2, 25, 3), np.float32)):
            posed = skinning.pose_hand(template, rotations)
            np.testing.assert_allclose(posed.vertices[1], template.vertices, atol=1e-6)
            np.testing.assert_allclose(posed.joints[0], template.joint_positions, atol=1e-6)
            np.testing.assert_allclose(posed.keypoints[0], template.keypoints, atol=1e-6)
            np.testing.assert_allclose(posed.joint_transforms[0], template.rest_transforms, atol=1e-6)


def test_global_rotation_is_about_the_wrist_then_translation(right):
    rng = np.random.default_rng(1)
    global_rotation = _random_rotations(rng, 1, 1)[:, 0]
    translation = np.array([[0.1, -0.2, 0.3]], np.float32)
    posed = skinning.pose_hand(right, np.zeros((1, 25, 3)), global_rotation, translation)
    wrist = right.joint_positions[0]
    expected = (right.vertices - wrist) @ global_rotation[0].T + wrist + translation
    np.testing.assert_allclose(posed.vertices[0], expected, atol=1e-6)


def test_skinning_matches_tensorflow_graphics_blend(right):
    rng = np.random.default_rng(2)
    transforms = skinning.forward_kinematics(_random_rotations(rng, 3, 25), right.rest_transforms, right.joint_parents)
    ours = skinning.linear_blend_skinning(right.vertices, right.skin_weights, right.rest_transforms, transforms)
    # Reference: tfg's blend with bone transforms G_j inv(T_j).
    bones = tf.matmul(transforms, tf.linalg.inv(tf.constant(right.rest_transforms)))
    reference = linear_blend_skinning.blend(right.vertices, right.skin_weights, bones[..., :3, :3], bones[..., :3, 3])
    np.testing.assert_allclose(ours, reference, atol=2e-6)


def test_tensorflow_and_numpy_kinematics_agree(right, left):
    rng = np.random.default_rng(3)
    for template in (right, left):
        rotations = _random_rotations(rng, 4, 25)
        joints = skinning.pose_hand(template, rotations).joints.numpy()
        for b in range(4):
            np.testing.assert_allclose(hand_poses.joint_positions(template, rotations[b]), joints[b], atol=1e-6)


def test_flexing_the_index_pip_moves_only_the_distal_index_and_keeps_bone_lengths(right):
    rotations = hand_poses.pose_rotations(_angles(index_pip_flex=90.0), right)
    posed = skinning.pose_hand(right, rotations[None])
    vertices, joints = posed.vertices.numpy()[0], posed.joints.numpy()[0]
    distal = [INDEX_PIP, INDEX_PIP + 1, INDEX_PIP + 2]  # intermediate, distal, tip
    driven = right.skin_weights[:, distal].sum(axis=1)
    moved = np.linalg.norm(vertices - right.vertices, axis=1)
    assert np.all(moved[driven == 0] < 1e-6)
    assert np.all(moved[driven > 0.5] > 1e-3)
    assert np.all(moved[right.skin_weights[:, INDEX_PIP + 1] == 1] > 0.02)  # the fingertip swings
    unchanged = [j for j in range(25) if j not in distal]
    np.testing.assert_allclose(joints[unchanged], right.joint_positions[unchanged], atol=1e-6)
    np.testing.assert_allclose(_bone_lengths(right, joints), _bone_lengths(right, right.joint_positions), atol=1e-6)
    # The intermediate phalanx turns by 90 degrees, towards the palm.
    before = right.joint_positions[INDEX_PIP + 1] - right.joint_positions[INDEX_PIP]
    after = joints[INDEX_PIP + 1] - joints[INDEX_PIP]
    cosine = before @ after / np.linalg.norm(before) / np.linalg.norm(after)
    assert np.degrees(np.arccos(cosine)) == pytest.approx(90.0, abs=0.01)
    palmar = hand_poses.palm_axes(right.joint_positions)[2]
    assert (joints[INDEX_PIP + 2] - right.joint_positions[INDEX_PIP + 2]) @ palmar > 0.02


def test_mirrored_template_with_mirrored_parameters_is_the_mirror_image(right, left):
    rng = np.random.default_rng(4)
    angles = hand_poses.sample_pose(rng, right).angles
    global_rotation = _random_rotations(rng, 1, 1)[:, 0]
    translation = np.array([[0.05, 0.01, -0.3]], np.float32)
    shape = hand_shapes.sample_shape(rng)
    right_rest = hand_shapes.apply_shape(right, shape)
    left_rest = hand_shapes.apply_shape(left, shape)
    posed_right = skinning.pose_hand(
        right, hand_poses.pose_rotations(angles, right)[None], global_rotation, translation, *right_rest
    )
    posed_left = skinning.pose_hand(
        left,
        hand_poses.pose_rotations(angles, left)[None],
        FLIP @ global_rotation @ FLIP,
        translation @ FLIP,
        *left_rest,
    )
    np.testing.assert_allclose(posed_left.vertices, posed_right.vertices.numpy() @ FLIP, atol=1e-6)
    np.testing.assert_allclose(posed_left.keypoints, posed_right.keypoints.numpy() @ FLIP, atol=1e-6)


def test_batched_shapes_inside_tf_function_match_eager(right):
    rng = np.random.default_rng(5)
    rests = [hand_shapes.apply_shape(right, hand_shapes.sample_shape(rng)) for _ in range(2)]
    vertices = np.stack([r[0] for r in rests])
    transforms = np.stack([r[1] for r in rests])
    rotations = _random_rotations(rng, 2, 25, 0.5)
    run = tf.function(lambda r, v, t: skinning.pose_hand(right, r, rest_vertices=v, rest_transforms=t))
    batched = run(tf.constant(rotations), tf.constant(vertices), tf.constant(transforms))
    for b in range(2):
        single = skinning.pose_hand(
            right, rotations[b : b + 1], rest_vertices=vertices[b], rest_transforms=transforms[b]
        )
        np.testing.assert_allclose(batched.vertices[b], single.vertices[0], atol=1e-6)
        np.testing.assert_allclose(batched.keypoints[b], single.keypoints[0], atol=1e-6)


def test_gradients_are_finite_at_zero_and_match_finite_differences(right):
    axis_angle = tf.Variable(np.zeros((1, 25, 3), np.float32))
    with tf.GradientTape() as tape:
        tip = skinning.pose_hand(right, axis_angle).keypoints[0, INDEX_TIP_KEYPOINT, 0]
    gradient = tape.gradient(tip, axis_angle).numpy()
    assert np.all(np.isfinite(gradient))
    step = 1e-3
    for joint, axis in ((INDEX_PIP, 0), (INDEX_PIP - 1, 1), (0, 2)):
        delta = np.zeros((1, 25, 3), np.float32)
        delta[0, joint, axis] = step
        plus = skinning.pose_hand(right, delta).keypoints[0, INDEX_TIP_KEYPOINT, 0]
        minus = skinning.pose_hand(right, -delta).keypoints[0, INDEX_TIP_KEYPOINT, 0]
        assert gradient[0, joint, axis] == pytest.approx(float(plus - minus) / (2 * step), abs=2e-4)


def test_skinning_errors(right):
    with pytest.raises(ValueError, match=r"local_rotations has shape \(1, 24, 3, 3\); expected B x 25"):
        skinning.pose_hand(right, np.zeros((1, 24, 3, 3)))
    with pytest.raises(ValueError, match="local_rotations has shape .*expected B x R x 3 x 3 rotation"):
        skinning.pose_hand(right, np.zeros((1, 25, 4)))
    with pytest.raises(ValueError, match="global_rotation has shape"):
        skinning.pose_hand(right, np.zeros((1, 25, 3)), global_rotation=np.zeros((1, 2, 2)))
    with pytest.raises(ValueError, match="rest_vertices has shape \\(10, 3\\); expected 1159 x 3"):
        skinning.pose_hand(right, np.zeros((1, 25, 3)), rest_vertices=np.zeros((10, 3)))
    with pytest.raises(ValueError, match="joint 2 has parent 3"):
        skinning.forward_kinematics(np.zeros((1, 3, 3)), np.tile(np.eye(4), (3, 1, 1)), [-1, 0, 3])


# --------------------------------------------------------------------------------------- poses


def test_sampled_poses_are_within_limits_and_collision_free(right):
    rng = np.random.default_rng(6)
    capsules = hand_poses.hand_capsules(right)
    low, high = hand_poses.POSE_LIMITS_DEG.T
    gestures = set()
    for _ in range(300):
        pose = hand_poses.sample_pose(rng, right)
        gestures.add(pose.gesture)
        assert pose.rotations.shape == (25, 3, 3) and pose.angles.dtype == np.float32
        assert np.all(pose.angles >= low) and np.all(pose.angles <= high)
        assert hand_poses.pose_collisions(hand_poses.joint_positions(right, pose.rotations), capsules) == []
        np.testing.assert_allclose(pose.rotations, hand_poses.pose_rotations(pose.angles, right), atol=1e-6)
    assert "random" in gestures and len(gestures) > 10


def test_gestures_are_within_limits_and_collision_free(right):
    capsules = hand_poses.hand_capsules(right)
    low, high = hand_poses.POSE_LIMITS_DEG.T
    for name, angles in hand_poses.GESTURES.items():
        assert np.all(angles >= low) and np.all(angles <= high), name
        assert hand_poses.pose_collisions(_posed_joints(right, angles), capsules) == [], name


def test_same_seed_same_poses(right, left):
    def draw(seed, template):
        rng = np.random.default_rng(seed)
        return [hand_poses.sample_pose(rng, template) for _ in range(20)]

    first, again, other, mirrored = draw(7, right), draw(7, right), draw(8, right), draw(7, left)
    for a, b, m in zip(first, again, mirrored):
        assert a.gesture == b.gesture == m.gesture
        np.testing.assert_array_equal(a.angles, b.angles)
        np.testing.assert_array_equal(a.angles, m.angles)
        np.testing.assert_allclose(m.rotations, FLIP @ a.rotations @ FLIP, atol=1e-6)
    assert not np.allclose(np.stack([p.angles for p in first]), np.stack([p.angles for p in other]))


def test_flexion_is_towards_the_palm_for_every_joint(right, left):
    tips = {"thumb": 4, "index": 9, "middle": 14, "ring": 19, "little": 24}
    for template in (right, left):
        _, radial, palmar = hand_poses.palm_axes(template.joint_positions, template.is_left)
        for name in hand_poses.POSE_PARAMETER_NAMES:
            if name.endswith("_flex"):
                finger = name.split("_")[0]
                joints = _posed_joints(template, _angles(**{name: 30.0}))
                moved = joints[tips[finger]] - template.joint_positions[tips[finger]]
                # The thumb flexes across the palm, towards the little finger.
                towards = palmar - radial if finger == "thumb" else palmar
                assert moved @ towards > 0.003, name


def test_collision_check_finds_crossed_fingers_and_fingers_in_the_palm(right, left):
    capsules = hand_poses.hand_capsules(right)
    crossed = _angles(index_mcp_abd=-10.0, middle_mcp_abd=15.0)
    found = hand_poses.pose_collisions(_posed_joints(right, crossed), capsules)
    assert any("index-finger-phalanx-proximal hits middle-finger-phalanx-proximal" in f for f in found)
    squeezed = {}
    for finger in ("index", "middle", "ring", "little"):
        squeezed.update({f"{finger}_mcp_flex": 90.0, f"{finger}_pip_flex": 110.0, f"{finger}_dip_flex": 85.0})
    for template in (right, left):
        joints = _posed_joints(template, _angles(**squeezed))
        found = hand_poses.pose_collisions(joints, hand_poses.hand_capsules(template))
        assert any("middle-finger-phalanx-distal sinks" in f for f in found), found


def test_segment_distance_matches_dense_sampling():
    rng = np.random.default_rng(9)
    p0, p1, q0, q1 = rng.normal(size=(4, 200, 3))
    q1[:20] = q0[:20] + 2.0 * (p1[:20] - p0[:20])  # parallel segments
    fast = hand_poses._segment_distances(p0, p1, q0, q1)
    t = np.linspace(0, 1, 201)[:, None]
    dense = np.array(
        [
            np.linalg.norm((a + t * (b - a))[:, None] - (c + t * (d - c))[None], axis=-1).min()
            for a, b, c, d in zip(p0, p1, q0, q1)
        ]
    )
    assert np.all(fast <= dense + 1e-9) and np.all(dense - fast < 1e-2)


def test_pose_errors(right):
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"angles has shape \(3,\); expected \(23,\)"):
        hand_poses.pose_rotations(np.zeros(3), right)
    with pytest.raises(ValueError, match=r"unknown gestures \['wave'\]"):
        hand_poses.sample_pose(rng, right, gestures=["fist", "wave"])
    with pytest.raises(ValueError, match="gesture_probability must be in"):
        hand_poses.sample_pose(rng, right, gesture_probability=1.5)
    with pytest.raises(ValueError, match=r"rotations has shape \(25, 3\)"):
        hand_poses.joint_positions(right, np.zeros((25, 3)))


# -------------------------------------------------------------------------------------- shapes


def test_identity_shape_is_the_template(right):
    vertices, transforms = hand_shapes.apply_shape(right, hand_shapes.IDENTITY_SHAPE)
    np.testing.assert_allclose(vertices, right.vertices, atol=1e-7)
    np.testing.assert_array_equal(transforms, right.rest_transforms)


def test_scale_multiplies_every_length(right):
    params = hand_shapes.IDENTITY_SHAPE.copy()
    params[0] = 0.7
    vertices, transforms = hand_shapes.apply_shape(right, params)
    edges = right.edges
    np.testing.assert_allclose(
        np.linalg.norm(vertices[edges[:, 0]] - vertices[edges[:, 1]], axis=1),
        0.7 * np.linalg.norm(right.vertices[edges[:, 0]] - right.vertices[edges[:, 1]], axis=1),
        rtol=1e-4,
    )
    np.testing.assert_allclose(
        _bone_lengths(right, transforms[:, :3, 3]), 0.7 * _bone_lengths(right, right.joint_positions), rtol=1e-5
    )
    np.testing.assert_array_equal(transforms[:, :3, :3], right.rest_transforms[:, :3, :3])
    shaped = hand_shapes.shape_template(right, params)
    assert hand_shapes.template_hand_length(shaped) == pytest.approx(0.7 * hand_shapes.template_hand_length(right))


def test_finger_length_moves_the_fingertip_by_the_expected_amount(right):
    params = hand_shapes.IDENTITY_SHAPE.copy()
    params[hand_shapes.SHAPE_PARAMETER_NAMES.index("index_length")] = 1.1
    shaped = hand_shapes.shape_template(right, params)
    rest = right.keypoints
    expected = rest.copy()
    expected[INDEX_MCP_KEYPOINT : INDEX_TIP_KEYPOINT + 1] += 0.1 * (
        rest[INDEX_MCP_KEYPOINT : INDEX_TIP_KEYPOINT + 1] - rest[INDEX_MCP_KEYPOINT]
    )
    np.testing.assert_allclose(shaped.keypoints, expected, atol=1e-6)
    tip_shift = np.linalg.norm(shaped.keypoints[INDEX_TIP_KEYPOINT] - rest[INDEX_TIP_KEYPOINT])
    finger = np.linalg.norm(rest[INDEX_TIP_KEYPOINT] - rest[INDEX_MCP_KEYPOINT])
    assert tip_shift == pytest.approx(0.1 * finger, rel=1e-4)
    # Vertices driven only by other fingers or the palm stay put.
    untouched = right.skin_weights[:, 6:10].sum(axis=1) == 0
    np.testing.assert_allclose(shaped.vertices[untouched], right.vertices[untouched], atol=1e-7)


def test_thickness_and_palm_keep_finger_joints_consistent(right):
    params = hand_shapes.IDENTITY_SHAPE.copy()
    for name, value in (("index_thickness", 1.2), ("palm_width", 1.1), ("palm_thickness", 0.85)):
        params[hand_shapes.SHAPE_PARAMETER_NAMES.index(name)] = value
    shaped = hand_shapes.shape_template(right, params)
    # Phalanges keep their lengths (the finger metacarpals are palm); the index and little MCPs
    # move apart by ~10%.
    names, parents = right.joint_names, right.joint_parents
    fingers = [j for j in range(25) if parents[j] > 0 and not names[parents[j]].endswith("finger-metacarpal")]
    np.testing.assert_allclose(
        _bone_lengths(right, shaped.joint_positions)[np.array(fingers) - 1],
        _bone_lengths(right, right.joint_positions)[np.array(fingers) - 1],
        rtol=1e-5,
    )
    spread = np.linalg.norm(shaped.joint_positions[6] - shaped.joint_positions[21])
    assert spread / np.linalg.norm(right.joint_positions[6] - right.joint_positions[21]) == pytest.approx(1.1, abs=0.01)
    # A shaped hand still rests exactly at its rest pose, and flexion keeps its bone lengths.
    posed = skinning.pose_hand(shaped, np.zeros((1, 25, 3)))
    np.testing.assert_allclose(posed.vertices[0], shaped.vertices, atol=1e-6)
    joints = _posed_joints(shaped, hand_poses.GESTURES["fist"])
    np.testing.assert_allclose(_bone_lengths(shaped, joints), _bone_lengths(shaped, shaped.joint_positions), atol=1e-6)


def test_sampled_shapes_cover_children_to_large_adults(right):
    measured = hand_shapes.template_hand_length(right) * 1000
    assert measured == pytest.approx(hand_shapes.TEMPLATE_HAND_LENGTH_MM, abs=0.05)
    rng = np.random.default_rng(10)
    shapes = np.stack([hand_shapes.sample_shape(rng) for _ in range(2000)])
    np.testing.assert_array_equal(hand_shapes.sample_shape(np.random.default_rng(10)), shapes[0])
    lengths = shapes[:, 0] * hand_shapes.TEMPLATE_HAND_LENGTH_MM
    assert 120 <= lengths.min() < 130 and 205 < lengths.max() <= 215
    assert 0.07 < np.mean(lengths < 150) < 0.13  # children: 15% uniform on 120..165 mm
    assert np.all(shapes[:, 1:] >= 0.8) and np.all(shapes[:, 1:] <= 1.2)


def test_shape_errors(right):
    with pytest.raises(ValueError, match=r"shape params must be 14 positive finite factors .* received shape \(3,\)"):
        hand_shapes.apply_shape(right, np.ones(3))
    with pytest.raises(ValueError, match="positive finite"):
        hand_shapes.apply_shape(right, -hand_shapes.IDENTITY_SHAPE)
