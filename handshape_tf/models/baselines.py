"""The mesh-reconstruction baselines of the paper's Table 2, on our hand rig (no MANO).

Shape shorthand: B batch, S input side, M = S / 4, J = 21 keypoints, R = 25 rig joints,
V = 1159 template vertices, K shape components, Q = 6 + 3 x 15 + K rig parameters.

Both share the paper network's front end (stacked hourglass + residual encoder, same layer
names) and replace the graph CNN (supplementary Sec. B, Fig. 12):

* "direct_lbs": latent -> MLP (two hidden FC layers + output) -> 21 joints; inverse kinematics
  on the rig (`InverseKinematicsSkinning`: the palm's rotation by Kabsch on the wrist, thumb
  CMC and four MCPs, then each bone swung, parents first, to point at its child keypoint, bone
  lengths kept from the template) and linear blend skinning of the template give the mesh.
  Trained with L_H and L_J only (the paper's setting); the mesh is not differentiated.
* "parametric" (the paper's "MANO-based" method with our rig): latent -> MLP -> a global
  rotation (6D representation, Zhou et al. 2019), axis-angle rotations of the 15 rig joints
  that carry a bone, and K shape coefficients of a linear shape space (`RigSkinning`: principal
  components of rest meshes and joints drawn from `hand_shapes.sample_shape`, like MANO's shape
  blend shapes) -> forward kinematics + linear blend skinning -> mesh and keypoints. Trained
  with the same L_fully as our network.

Outputs are in the root-relative, scale-normalised camera frame (xyz - xyz_wrist) / s with s
the middle finger's MCP-PIP length (see `train.objectives`), not uvd: the rig works in metric
space, and turning it into uvd needs the camera, which is not a model input:
  heatmaps: list of T tensors B x M x M x J.   mesh_xyz: B x V x 3.   pose_xyz: B x J x 3.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from handshape_tf.assets.template import KEYPOINT_RIG_JOINTS, RIG_JOINT_NAMES, SCALE_BONE, load_template
from handshape_tf.config_utils import to_dict
from handshape_tf.geometry.alignment import procrustes_transform
from handshape_tf.geometry.skinning import axis_angle_to_matrix, forward_kinematics, linear_blend_skinning
from handshape_tf.models.config import ARCHITECTURES, ModelConfig
from handshape_tf.models.network import build_trunk, heatmap_outputs, model_config_from

BASELINES = tuple(name for name in ARCHITECTURES if name != "graph")
MLP = "mlp"
RIG = "rig"
# Rig joint of each keypoint, and the keypoints that fix the palm's rotation.
KEYPOINT_JOINTS = tuple(RIG_JOINT_NAMES.index(name) for name in KEYPOINT_RIG_JOINTS)
PALM_KEYPOINTS = (0, 1, 5, 9, 13, 17)


def _rig_structure():
    """(parents R, child R (-1 for tips), swung R bool) of the WebXR rig.

    Swung joints get their own rotation: every joint with a child except the wrist (the palm
    rotation) and the four finger metacarpals (rigid in the palm); the thumb metacarpal is
    swung (the thumb's CMC joint is mobile).
    """
    template = load_template()
    parents = [int(p) for p in template.joint_parents]
    children = [-1] * len(parents)
    for joint, parent in enumerate(parents):
        if parent >= 0 and not RIG_JOINT_NAMES[joint].endswith("metacarpal"):
            children[parent] = joint
    children[RIG_JOINT_NAMES.index("thumb-metacarpal")] = RIG_JOINT_NAMES.index("thumb-phalanx-proximal")
    swung = [
        children[j] >= 0
        and parents[j] >= 0
        and not (RIG_JOINT_NAMES[j].endswith("metacarpal") and "thumb" not in RIG_JOINT_NAMES[j])
        for j in range(len(parents))
    ]
    return parents, children, swung


def _normalised_template():
    """Template rest vertices (V x 3) and rig joints (R x 3), root-relative, in units of s."""
    template = load_template()
    joints = template.joint_positions.astype(np.float64)
    keypoints = template.keypoint_regressor.astype(np.float64) @ joints
    scale = np.linalg.norm(keypoints[SCALE_BONE[1]] - keypoints[SCALE_BONE[0]])
    root = keypoints[0]
    return ((template.vertices - root) / scale).astype(np.float32), ((joints - root) / scale).astype(np.float32)


def _constant_weight(layer, name: str, value: np.ndarray):
    weight = layer.add_weight(
        name=name, shape=value.shape, dtype=str(value.dtype), initializer="zeros", trainable=False
    )
    weight.assign(value)
    return weight


def _swing(a, b) -> tf.Tensor:
    """B x 3 x 3 smallest rotations taking directions a to b (B x 3 each, any length)."""
    a = tf.math.l2_normalize(a, axis=-1)
    b = tf.math.l2_normalize(b, axis=-1)
    v = tf.linalg.cross(a, b)
    c = tf.reduce_sum(a * b, axis=-1)[:, None, None]
    zero = tf.zeros_like(v[:, 0])
    cross = tf.stack(
        [
            tf.stack([zero, -v[:, 2], v[:, 1]], -1),
            tf.stack([v[:, 2], zero, -v[:, 0]], -1),
            tf.stack([-v[:, 1], v[:, 0], zero], -1),
        ],
        axis=-2,
    )
    # Antiparallel directions (c = -1) have no unique smallest rotation: clamp (the IK singularity).
    return tf.eye(3, batch_shape=tf.shape(a)[:1]) + cross + tf.matmul(cross, cross) / tf.maximum(1.0 + c, 1e-6)


def kabsch_rotation(source, target) -> tf.Tensor:
    """B x 3 x 3 rotations R minimising sum |R (a_i - mean a) - (b_i - mean b)|^2 (the rotation
    of the Procrustes fit, `procrustes_transform`).

    Args:
      source: P x 3 or B x P x 3 points a.  target: B x P x 3 points b.
    """
    source = tf.broadcast_to(tf.convert_to_tensor(source, tf.float32), tf.shape(target))
    return procrustes_transform(source, target)[1]


@keras.saving.register_keras_serializable(package="handshape_tf")
class InverseKinematicsSkinning(keras.layers.Layer):
    """21 keypoints -> posed template mesh by inverse kinematics and linear blend skinning.

    Everything in the root-relative, scale-normalised frame (units of s). The palm (wrist and
    metacarpals) rotates rigidly by the Kabsch fit of the template's wrist, thumb CMC and MCP
    keypoints to the input's; each swung joint (see `_rig_structure`) then takes the smallest
    rotation that points its bone at the input position of its child keypoint, parents first.
    Bone lengths stay the template's. No gradient flows (inputs are stop-gradient).

    Args:
      **kwargs: keras.layers.Layer arguments.

    Call:
      keypoints: B x J x 3.
      Returns: B x V x 3 vertices.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.parents, self.children, self.swung = _rig_structure()

    def build(self, input_shape):
        vertices, joints = _normalised_template()
        self.rest_vertices = _constant_weight(self, "rest_vertices", vertices)
        self.rest_joints = _constant_weight(self, "rest_joints", joints)
        self.skin_weights = _constant_weight(self, "skin_weights", load_template().skin_weights.astype(np.float32))

    def call(self, keypoints):
        keypoints = tf.stop_gradient(tf.cast(keypoints, tf.float32))
        batch = tf.shape(keypoints)[0]
        rest = self.rest_joints
        rest_keypoints = tf.gather(rest, KEYPOINT_JOINTS)
        target = {joint: keypoints[:, k] for k, joint in enumerate(KEYPOINT_JOINTS)}
        palm = kabsch_rotation(tf.gather(rest_keypoints, PALM_KEYPOINTS), tf.gather(keypoints, PALM_KEYPOINTS, axis=1))
        rotations, positions = [], []
        for joint, parent in enumerate(self.parents):
            if parent < 0:
                rotation, position = palm, keypoints[:, 0]
            else:
                offset = rest[joint] - rest[parent]
                position = positions[parent] + tf.linalg.matvec(rotations[parent], tf.tile(offset[None], [batch, 1]))
                rotation = rotations[parent]
            if self.swung[joint]:
                child = self.children[joint]
                bone = tf.linalg.matvec(rotation, tf.tile((rest[child] - rest[joint])[None], [batch, 1]))
                rotation = tf.matmul(_swing(bone, target[child] - position), rotation)
            rotations.append(rotation)
            positions.append(position)
        rotation = tf.stack(rotations, axis=1)  # B x R x 3 x 3, world from rest
        translation = tf.stack(positions, axis=1) - tf.linalg.matvec(rotation, rest[None])  # B x R x 3
        blended_rotation = tf.einsum("vr,brij->bvij", self.skin_weights, rotation)  # B x V x 3 x 3
        blended_translation = tf.einsum("vr,bri->bvi", self.skin_weights, translation)
        return tf.linalg.matvec(blended_rotation, self.rest_vertices[None]) + blended_translation

    def compute_output_shape(self, input_shape):
        return (input_shape[0], len(load_template().vertices), 3)


def shape_space(num_components: int, num_samples: int, seed: int):
    """Principal components of normalised rest meshes and rig joints of random hand shapes.

    Shapes are drawn with `hand_shapes.sample_shape`, deformed with `apply_shape`, and made
    root-relative in units of their own s (overall size is not a shape in that frame).

    Returns:
      (mean vertices V x 3, mean joints R x 3, vertex basis K x V x 3, joint basis K x R x 3),
      float32; each component is scaled by its standard deviation (coefficients ~ N(0, 1)).
    """
    from handshape_tf.data.hand_shapes import apply_shape, sample_shape

    template = load_template()
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(num_samples):
        vertices, transforms = apply_shape(template, sample_shape(rng))
        joints = transforms[:, :3, 3].astype(np.float64)
        keypoints = template.keypoint_regressor @ joints
        scale = np.linalg.norm(keypoints[SCALE_BONE[1]] - keypoints[SCALE_BONE[0]])
        rows.append(np.concatenate([(vertices - keypoints[0]) / scale, (joints - keypoints[0]) / scale]).ravel())
    data = np.array(rows)
    mean = data.mean(axis=0)
    _, singular, components = np.linalg.svd(data - mean, full_matrices=False)
    basis = components[:num_components] * (singular[:num_components, None] / np.sqrt(max(num_samples - 1, 1)))
    num_vertices = len(template.vertices)
    mean = mean.reshape(-1, 3)
    basis = basis.reshape(num_components, -1, 3)
    return (
        mean[:num_vertices].astype(np.float32),
        mean[num_vertices:].astype(np.float32),
        basis[:, :num_vertices].astype(np.float32),
        basis[:, num_vertices:].astype(np.float32),
    )


def rotation_from_6d(values) -> tf.Tensor:
    """B x 6 -> B x 3 x 3 rotation matrices (Gram-Schmidt on two columns; Zhou et al. 2019)."""
    first = tf.math.l2_normalize(values[:, 0:3], axis=-1)
    second = values[:, 3:6] - tf.reduce_sum(first * values[:, 3:6], axis=-1, keepdims=True) * first
    second = tf.math.l2_normalize(second, axis=-1)
    third = tf.linalg.cross(first, second)
    return tf.stack([first, second, third], axis=-1)


@keras.saving.register_keras_serializable(package="handshape_tf")
class RigSkinning(keras.layers.Layer):
    """Rig parameters -> mesh and keypoints in the root-relative, scale-normalised frame.

    Parameters per item (Q = 6 + 3 x 15 + K): the root's rotation as 6 numbers added to
    (1, 0, 0, 0, 1, 0) (two columns of the matrix, so zeros mean the identity), an axis-angle
    rotation (radians) for each swung joint in rig order (local, in the joint's rest frame, as
    `geometry.skinning.forward_kinematics` takes them), and K shape coefficients of
    `shape_space`. All-zero parameters give the mean-shape template in its rest pose.

    Args:
      shape_components: K.
      shape_samples: shapes the basis is fitted on.
      seed: seeds the shape draws.
      **kwargs: keras.layers.Layer arguments.

    Call:
      params: B x Q.
      Returns: (vertices B x V x 3, keypoints B x J x 3).
    """

    def __init__(self, shape_components: int = 10, shape_samples: int = 256, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.shape_components = int(shape_components)
        self.shape_samples = int(shape_samples)
        self.seed = int(seed)
        self.parents, _, swung = _rig_structure()
        self.swung_joints = [j for j, s in enumerate(swung) if s]

    @property
    def num_params(self) -> int:
        return 6 + 3 * len(self.swung_joints) + self.shape_components

    def _check(self, shape) -> None:
        if shape[-1] is not None and shape[-1] != self.num_params:
            raise ValueError(f"RigSkinning expects B x {self.num_params} parameters, got {tuple(shape)}")

    def build(self, input_shape):
        self._check(input_shape)
        template = load_template()
        mean_vertices, mean_joints, vertex_basis, joint_basis = shape_space(
            self.shape_components, self.shape_samples, self.seed
        )
        self.mean_vertices = _constant_weight(self, "mean_vertices", mean_vertices)
        self.mean_joints = _constant_weight(self, "mean_joints", mean_joints)
        self.vertex_basis = _constant_weight(self, "vertex_basis", vertex_basis)
        self.joint_basis = _constant_weight(self, "joint_basis", joint_basis)
        self.rest_rotations = _constant_weight(self, "rest_rotations", template.rest_transforms[:, :3, :3].copy())
        self.skin_weights = _constant_weight(self, "skin_weights", template.skin_weights.astype(np.float32))

    def call(self, params):
        params = tf.cast(params, tf.float32)
        self._check(params.shape)
        batch = tf.shape(params)[0]
        count = len(self.swung_joints)
        root = rotation_from_6d(params[:, :6] + tf.constant([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))
        local = axis_angle_to_matrix(tf.reshape(params[:, 6 : 6 + 3 * count], [-1, count, 3]))  # B x n x 3 x 3
        coefficients = params[:, 6 + 3 * count :]
        identity = tf.eye(3, batch_shape=[batch])
        by_joint = {joint: local[:, i] for i, joint in enumerate(self.swung_joints)}
        rotations = tf.stack([root if j == 0 else by_joint.get(j, identity) for j in range(len(self.parents))], axis=1)
        vertices = self.mean_vertices + tf.einsum("bk,kvc->bvc", coefficients, self.vertex_basis)  # B x V x 3
        joints = self.mean_joints + tf.einsum("bk,krc->brc", coefficients, self.joint_basis)  # B x R x 3
        rest = tf.concat(
            [
                tf.concat(
                    [tf.broadcast_to(self.rest_rotations, [batch, len(self.parents), 3, 3]), joints[..., None]], -1
                ),
                tf.broadcast_to(tf.constant([[0.0, 0.0, 0.0, 1.0]]), [batch, len(self.parents), 1, 4]),
            ],
            axis=-2,
        )
        transforms = forward_kinematics(rotations, rest, self.parents)
        posed = linear_blend_skinning(vertices, self.skin_weights, rest, transforms)
        keypoints = tf.gather(transforms[..., :3, 3], KEYPOINT_JOINTS, axis=1)
        origin = keypoints[:, :1]
        scale = tf.norm(keypoints[:, SCALE_BONE[1]] - keypoints[:, SCALE_BONE[0]], axis=-1)[:, None, None]
        return (posed - origin) / scale, (keypoints - origin) / scale

    def compute_output_shape(self, input_shape):
        return (input_shape[0], len(load_template().vertices), 3), (input_shape[0], len(KEYPOINT_JOINTS), 3)

    def get_config(self):
        config = super().get_config()
        config.update(shape_components=self.shape_components, shape_samples=self.shape_samples, seed=self.seed)
        return config


def _mlp(units: tuple[int, ...], outputs: int, zero_output: bool = False) -> keras.Sequential:
    """Hidden ReLU layers of `units`, then a linear output layer (all-zero output at the start
    with `zero_output`)."""
    layers = [keras.layers.Dense(width, activation="relu") for width in units]
    layers.append(keras.layers.Dense(outputs, kernel_initializer="zeros" if zero_output else "glorot_uniform"))
    return keras.Sequential(layers, name=MLP)


@keras.saving.register_keras_serializable(package="handshape_tf")
class BaselineModel(keras.Model):
    """A Table 2 baseline (module docstring) as a functional Keras model that carries its
    arguments (`get_config`), so a loaded baseline knows its kind and sizes.

    Args:
      kind: "direct_lbs" or "parametric".
      model_config: the front end's sizes (hourglass, encoder; a ModelConfig or its dict),
        default the "paper" preset.
      mlp_units: hidden widths of the MLP (paper: three FC layers in all = two hidden + output).
      shape_components, shape_samples, seed: the parametric rig's shape space.

    Outputs: image B x S x S x 3 in [0, 1] -> dict heatmaps, mesh_xyz, pose_xyz.

    Raises:
      ValueError: unknown kind.
    """

    def __init__(
        self,
        kind: str,
        model_config=None,
        mlp_units=(512, 512),
        shape_components: int = 10,
        shape_samples: int = 256,
        seed: int = 0,
        **kwargs,
    ):
        if kind not in BASELINES:
            raise ValueError(f"baseline {kind!r}; expected one of {BASELINES}")
        config = model_config_from(model_config if model_config is not None else ModelConfig.preset("paper"))
        images, heatmaps, latent = build_trunk(config)
        if kind == "direct_lbs":
            joints = _mlp(tuple(mlp_units), 3 * config.num_keypoints)(latent)
            pose = keras.layers.Reshape((config.num_keypoints, 3), name="joints")(joints)
            mesh = InverseKinematicsSkinning(name=RIG)(pose)
        else:
            rig = RigSkinning(shape_components, shape_samples, seed, name=RIG)
            # Starts at the mean shape in the template's rest pose (all-zero parameters).
            mesh, pose = rig(_mlp(tuple(mlp_units), rig.num_params, zero_output=True)(latent))
        outputs = {
            "heatmaps": heatmap_outputs(heatmaps),
            "mesh_xyz": keras.layers.Identity(name="mesh_xyz")(mesh),
            "pose_xyz": keras.layers.Identity(name="pose_xyz")(pose),
        }
        kwargs.setdefault("name", kind)
        super().__init__(images, outputs, **kwargs)
        self.kind = kind
        self.model_config = config
        self.arguments = dict(
            mlp_units=[int(u) for u in mlp_units],
            shape_components=int(shape_components),
            shape_samples=int(shape_samples),
            seed=int(seed),
        )

    def get_config(self) -> dict[str, Any]:
        return {"kind": self.kind, "model_config": to_dict(self.model_config), **self.arguments, "name": self.name}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> BaselineModel:
        return cls(**config)


def build_baseline(
    kind: str,
    config: ModelConfig | None = None,
    *,
    mlp_units=(512, 512),
    shape_components: int = 10,
    shape_samples: int = 256,
    seed: int = 0,
) -> BaselineModel:
    """Builds the Table 2 baseline `kind` ("direct_lbs" or "parametric"; `BaselineModel`)."""
    return BaselineModel(
        kind,
        config,
        mlp_units=mlp_units,
        shape_components=shape_components,
        shape_samples=shape_samples,
        seed=seed,
    )
