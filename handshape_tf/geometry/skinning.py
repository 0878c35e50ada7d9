"""Forward kinematics and linear blend skinning of the hand template (TensorFlow).

Shape shorthand: B batch, V mesh vertices (1159), R rig joints (25), J keypoints (21).

The rig is a joint tree (`joint_parents`, parents before children) with a rest (bind) frame per
joint, `rest_transforms` R x 4 x 4 in the model frame (metres). A pose is one LOCAL rotation
per joint, expressed in that joint's rest frame: joint j's posed frame is

    G_j = G_parent(j) @ inv(T_parent(j)) @ T_j @ [L_j 0; 0 1],     T = rest transforms,

so identity rotations give G_j = T_j. For the WebXR rig every joint's -z axis points along its
bone towards the fingertip and +y out of the back of the hand / the nail, so a rotation about
the local x axis flexes or extends the bone that starts at the joint (see
`handshape_tf.data.hand_poses`). The root (wrist) is then rotated by `global_rotation` about its
rest position and moved by `translation` (model frame, metres):

    G_root = [Rg, (I - Rg) p_root + t; 0 1] @ T_root @ [L_root 0; 0 1].

Vertices follow by linear blend skinning, x' = sum_j w_xj G_j inv(T_j) x, and the 21 keypoints
are `keypoint_regressor @ posed joints`. Shape variation (`handshape_tf.data.hand_shapes`)
changes the rest vertices and rest transforms before skinning: pass them as `rest_vertices`
and `rest_transforms`, shared (V x 3, R x 4 x 4) or one per batch item (B x V x 3, B x R x 4 x 4).

Everything is differentiable and runs inside tf.function. Rotations are given as matrices
(... x 3 x 3) or as axis-angle vectors (... x 3, angle = norm, radians), converted with
tensorflow_graphics' `rotation_matrix_3d.from_axis_angle`.

tensorflow_graphics' `linear_blend_skinning.blend` is not used for the vertices: it rotates
every vertex by every bone (a B x V x R x 3 intermediate) and broadcasts the vertex batch
dimensions against the bone batch dimensions as an outer product, so per-item rest meshes
(shape variation) would pair every mesh with every pose. Blending the 3 x 4 bone matrices
first (B x V x 3 x 4) is the same sum, cheaper, and pairs item b with item b; the tests check
it against `blend` on a shared mesh.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import tensorflow as tf
from tensorflow_graphics.geometry.transformation import rotation_matrix_3d

from handshape_tf.assets.template import HandTemplate

# Added in quadrature to axis-angle norms (radians): a zero vector then gives the identity with
# finite gradients (sin(a) / a -> 1) without a branch; negligible for any other rotation.
_AXIS_ANGLE_EPSILON = 1e-12


class PosedHand(NamedTuple):
    """The output of `pose_hand`.

    Attributes:
      vertices: B x V x 3 posed mesh vertices.
      joints: B x R x 3 posed rig joint positions.
      keypoints: B x J x 3 posed keypoints (paper order).
      joint_transforms: B x R x 4 x 4 posed joint frames G_j.
    """

    vertices: tf.Tensor
    joints: tf.Tensor
    keypoints: tf.Tensor
    joint_transforms: tf.Tensor


def axis_angle_to_matrix(axis_angle) -> tf.Tensor:
    """Rotation matrices from axis-angle vectors (direction = axis, norm = angle in radians).

    Args:
      axis_angle: ... x 3.

    Returns:
      ... x 3 x 3 rotation matrices; a zero vector gives the identity with finite gradients.
    """
    axis_angle = tf.convert_to_tensor(axis_angle, tf.float32)
    _check_last_dims("axis_angle", axis_angle, (3,))
    angle = tf.sqrt(tf.reduce_sum(tf.square(axis_angle), axis=-1, keepdims=True) + _AXIS_ANGLE_EPSILON**2)
    return rotation_matrix_3d.from_axis_angle(axis_angle / angle, angle)


def forward_kinematics(
    local_rotations,
    rest_transforms,
    joint_parents,
    global_rotation=None,
    translation=None,
) -> tf.Tensor:
    """Posed joint frames from local rotations.

    Args:
      local_rotations: B x R x 3 x 3 matrices or B x R x 3 axis-angle vectors, each joint's
        rotation in its own rest frame.
      rest_transforms: R x 4 x 4 or B x R x 4 x 4 rest frames in the model frame.
      joint_parents: R ints, -1 for the root; every parent must come before its children.
      global_rotation: B x 3 x 3 or B x 3 (axis-angle) rotation of the whole hand about the
        root's rest position, in the model frame; None for the identity.
      translation: B x 3 added after the global rotation; None for zero.

    Returns:
      B x R x 4 x 4 posed joint frames G_j.
    """
    parents = _check_parents(joint_parents)
    num_joints = len(parents)
    rotations = _as_rotation_matrices("local_rotations", local_rotations, rank=4)
    if rotations.shape[1] is not None and rotations.shape[1] != num_joints:
        raise ValueError(
            f"local_rotations has shape {rotations.shape}; expected B x {num_joints} x 3 x 3 "
            f"(one rotation per joint of joint_parents)"
        )
    rest = _batched("rest_transforms", rest_transforms, (num_joints, 4, 4))
    batch = tf.shape(rotations)[0]
    rest = tf.broadcast_to(rest, tf.stack([batch, num_joints, 4, 4]))  # B x R x 4 x 4
    rest_rotation, rest_position = rest[..., :3, :3], rest[..., :3, 3]

    if global_rotation is not None:
        global_rotation = _as_rotation_matrices("global_rotation", global_rotation, rank=3)
    if translation is not None:
        translation = tf.convert_to_tensor(translation, tf.float32)
        _check_last_dims("translation", translation, (3,))

    # Posed frame G_j = [A_j, p_j], built joint by joint from the parent's; the rest offset of
    # joint j in its parent's rest frame is inv(T_parent) T_j.
    posed_rotation, posed_position = [], []
    for joint, parent in enumerate(parents):
        if parent < 0:
            frame = tf.matmul(rest_rotation[:, joint], rotations[:, joint])  # B x 3 x 3
            position = rest_position[:, joint]  # B x 3: the global rotation is about this point
            if global_rotation is not None:
                frame = tf.matmul(global_rotation, frame)
            if translation is not None:
                position = position + translation
        else:
            relative_rotation = tf.matmul(rest_rotation[:, parent], rest_rotation[:, joint], transpose_a=True)
            offset = tf.linalg.matvec(
                rest_rotation[:, parent], rest_position[:, joint] - rest_position[:, parent], transpose_a=True
            )
            frame = tf.matmul(posed_rotation[parent], tf.matmul(relative_rotation, rotations[:, joint]))
            position = posed_position[parent] + tf.linalg.matvec(posed_rotation[parent], offset)
        posed_rotation.append(frame)
        posed_position.append(position)
    rotation = tf.stack(posed_rotation, axis=1)  # B x R x 3 x 3
    position = tf.stack(posed_position, axis=1)  # B x R x 3
    top = tf.concat([rotation, position[..., None]], axis=-1)  # B x R x 3 x 4
    bottom = tf.broadcast_to(tf.constant([0.0, 0.0, 0.0, 1.0]), tf.stack([batch, num_joints, 1, 4]))
    return tf.concat([top, bottom], axis=-2)


def linear_blend_skinning(rest_vertices, skin_weights, rest_transforms, joint_transforms) -> tf.Tensor:
    """Skins rest vertices with posed joint frames.

    Args:
      rest_vertices: V x 3 or B x V x 3 rest positions.
      skin_weights: V x R weights, rows summing to one.
      rest_transforms: R x 4 x 4 or B x R x 4 x 4 rest (bind) frames.
      joint_transforms: B x R x 4 x 4 posed frames (from `forward_kinematics`).

    Returns:
      B x V x 3 posed vertices, sum_j w_vj G_j inv(T_j) v.
    """
    joint_transforms = tf.convert_to_tensor(joint_transforms, tf.float32)
    _check_last_dims("joint_transforms", joint_transforms, (4, 4))
    if joint_transforms.shape.rank != 4:
        raise ValueError(f"joint_transforms has shape {joint_transforms.shape}; expected B x R x 4 x 4")
    skin_weights = tf.convert_to_tensor(skin_weights, tf.float32)
    num_joints = joint_transforms.shape[1]
    if skin_weights.shape.rank != 2 or (num_joints is not None and skin_weights.shape[1] != num_joints):
        raise ValueError(f"skin_weights has shape {skin_weights.shape}; expected V x {num_joints}")
    num_vertices = skin_weights.shape[0]
    rest_vertices = _batched("rest_vertices", rest_vertices, (num_vertices, 3))
    rest = _batched("rest_transforms", rest_transforms, (num_joints, 4, 4))

    # Bone matrix M_j = G_j inv(T_j) with inv(T_j) = [R^T, -R^T p] for a rigid rest frame.
    rest_rotation_t = tf.linalg.matrix_transpose(rest[..., :3, :3])  # (B) x R x 3 x 3
    rest_position = rest[..., :3, 3]
    bone_rotation = tf.matmul(joint_transforms[..., :3, :3], rest_rotation_t)  # B x R x 3 x 3
    bone_translation = joint_transforms[..., :3, 3] - tf.linalg.matvec(bone_rotation, rest_position)  # B x R x 3
    bones = tf.concat([bone_rotation, bone_translation[..., None]], axis=-1)  # B x R x 3 x 4
    blended = tf.einsum("vr,brij->bvij", skin_weights, bones)  # B x V x 3 x 4
    return tf.linalg.matvec(blended[..., :3], rest_vertices) + blended[..., 3]


def pose_hand(
    template: HandTemplate,
    local_rotations,
    global_rotation=None,
    translation=None,
    rest_vertices=None,
    rest_transforms=None,
) -> PosedHand:
    """Poses the hand template: forward kinematics, skinning and keypoints.

    Args:
      template: the hand template (its skin weights, joint tree and keypoint regressor).
      local_rotations: B x R x 3 x 3 or B x R x 3 (axis-angle) per-joint local rotations.
      global_rotation: B x 3 x 3 or B x 3 rotation about the root's rest position; None = I.
      translation: B x 3 added to everything; None for zero.
      rest_vertices: V x 3 or B x V x 3 rest mesh (after shape variation); None for the
        template's.
      rest_transforms: R x 4 x 4 or B x R x 4 x 4 rest frames (after shape variation); None for
        the template's.

    Returns:
      PosedHand(vertices B x V x 3, joints B x R x 3, keypoints B x J x 3,
      joint_transforms B x R x 4 x 4).
    """
    if rest_vertices is None:
        rest_vertices = template.vertices
    if rest_transforms is None:
        rest_transforms = template.rest_transforms
    transforms = forward_kinematics(
        local_rotations, rest_transforms, template.joint_parents, global_rotation, translation
    )
    vertices = linear_blend_skinning(rest_vertices, template.skin_weights, rest_transforms, transforms)
    joints = transforms[..., :3, 3]
    keypoints = tf.einsum("kr,brc->bkc", tf.constant(template.keypoint_regressor, tf.float32), joints)
    return PosedHand(vertices=vertices, joints=joints, keypoints=keypoints, joint_transforms=transforms)


def _check_parents(joint_parents) -> list[int]:
    parents = [int(p) for p in np.asarray(joint_parents).reshape(-1)]
    for joint, parent in enumerate(parents):
        if not -1 <= parent < joint or (parent == -1) != (joint == 0):
            raise ValueError(
                f"joint_parents must list the root first (-1) and every parent before its "
                f"children; joint {joint} has parent {parent} in {parents}"
            )
    return parents


def _check_last_dims(name: str, tensor: tf.Tensor, dims: tuple[int, ...]) -> None:
    shape = tensor.shape
    if shape.rank is None:
        return
    if shape.rank < len(dims) or any(
        have is not None and have != want for have, want in zip(shape[-len(dims) :], dims)
    ):
        raise ValueError(f"{name} has shape {shape}; expected ... x {' x '.join(map(str, dims))}")


def _as_rotation_matrices(name: str, rotations, rank: int) -> tf.Tensor:
    """Rotation matrices of rank `rank` from matrices (rank) or axis-angle vectors (rank - 1)."""
    rotations = tf.convert_to_tensor(rotations, tf.float32)
    if rotations.shape.rank == rank and rotations.shape[-2:] == (3, 3):
        return rotations
    if rotations.shape.rank == rank - 1 and rotations.shape[-1] == 3:
        return axis_angle_to_matrix(rotations)
    letters = "B x R" if rank == 4 else "B"
    raise ValueError(
        f"{name} has shape {rotations.shape}; expected {letters} x 3 x 3 rotation matrices or "
        f"{letters} x 3 axis-angle vectors"
    )


def _batched(name: str, tensor, item_shape: tuple) -> tf.Tensor:
    """`tensor` as item_shape or B x item_shape (float32), with its shape checked."""
    tensor = tf.convert_to_tensor(tensor, tf.float32)
    shape = tensor.shape
    ok = shape.rank in (len(item_shape), len(item_shape) + 1) and all(
        have is None or want is None or have == want for have, want in zip(shape[-len(item_shape) :], item_shape)
    )
    if not ok:
        expected = " x ".join("?" if d is None else str(d) for d in item_shape)
        raise ValueError(f"{name} has shape {shape}; expected {expected} or B x {expected}")
    return tensor
