"""Left or right hand from 3D joints (`handshape_tf.geometry.chirality`)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from handshape_tf.assets.template import load_template
from handshape_tf.data import synthetic
from handshape_tf.data.hand_poses import joint_positions, pose_rotations
from handshape_tf.data.hand_shapes import shape_template
from handshape_tf.data.sample_params import sample_params
from handshape_tf.geometry.chirality import dataset_is_left, palm_side_scores

FLIP_X = np.array([-1.0, 1.0, 1.0])


def _posed_keypoints(count: int) -> tuple[np.ndarray, np.ndarray]:
    """count x 21 x 3 keypoints of hands drawn by the generator's shape and pose priors (both
    sides), randomly rotated, and their is_left flags."""
    templates = {False: load_template(), True: load_template(left=True)}
    keypoints, lefts = [], []
    for i in range(count):
        params = sample_params(synthetic.sample_rng(8, i), templates)
        shaped = shape_template(templates[params.is_left], params.shape)
        joints = joint_positions(shaped, pose_rotations(params.angles, shaped))  # R x 3 rig joints
        points = shaped.keypoint_regressor @ joints  # 21 x 3
        rotation = Rotation.random(random_state=i).as_matrix()
        keypoints.append(points @ rotation.T)
        lefts.append(params.is_left)
    return np.stack(keypoints), np.array(lefts)


def test_rest_template_and_its_mirror():
    right = load_template().keypoints
    assert palm_side_scores(right) < -0.3
    assert palm_side_scores(right * FLIP_X) > 0.3
    np.testing.assert_allclose(palm_side_scores(load_template(left=True).keypoints), -palm_side_scores(right))


def test_rotation_invariant_and_mirror_flips_the_sign():
    right = load_template().keypoints
    for seed in range(5):
        rotation = Rotation.random(random_state=seed).as_matrix()
        np.testing.assert_allclose(palm_side_scores(right @ rotation.T * 3.0 + 7.0), palm_side_scores(right))


def test_sides_of_posed_hands():
    keypoints, lefts = _posed_keypoints(60)
    scores = palm_side_scores(keypoints)
    assert np.mean((scores > 0) == lefts) >= 0.95
    assert dataset_is_left(keypoints[lefts])[0] and not dataset_is_left(keypoints[~lefts])[0]
    is_left, agreement = dataset_is_left(keypoints[lefts] * FLIP_X)
    assert not is_left and agreement >= 0.9


def test_bad_shape():
    with pytest.raises(ValueError, match=r"joints have shape \(20, 3\); expected N x 21 x 3"):
        palm_side_scores(np.zeros((20, 3)))
