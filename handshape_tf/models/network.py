"""The full network: image -> heat-maps -> latent -> mesh (u, v, d) -> 21 joints (paper Fig. 3).

Shape shorthand: B batch, S input side, M = S / 4 heat-map side, J = 21 keypoints, V = 1159
template vertices, T hourglass stacks.

Outputs of `build_model(config)` (a functional Keras model, dict of outputs):
  heatmaps: list of T tensors B x M x M x J, one per stack (intermediate supervision).
  mesh_uvd: B x V x 3, template vertex order, fake graph nodes dropped.
  pose_uvd: B x J x 3.
In uvd, u and v are normalised crop coordinates in [0, 1] (x / S, y / S with pixel centres at
i + 0.5) and d = (z - z_root) / s is the scale-invariant, root-relative depth (s: middle finger
MCP-PIP length). `handshape_tf.geometry.camera.uvd_to_xyz` turns them into camera space.
"""

from __future__ import annotations

import contextlib
from typing import Literal

import keras

from handshape_tf.graph.hierarchy import MeshHierarchy, template_hierarchy
from handshape_tf.layers import MeshDecoder, PoseRegressor, ResidualEncoder, StackedHourglass
from handshape_tf.models.config import ModelConfig

# Layer names, stable: training stages and benchmarks select sub-networks by them.
HOURGLASS = "hourglass"
ENCODER = "encoder"
MESH_DECODER = "mesh_decoder"
POSE_REGRESSOR = "pose_regressor"


def model_hierarchy(config: ModelConfig) -> MeshHierarchy:
    """The template's graph hierarchy for a model config."""
    return template_hierarchy(levels=config.graph_levels, seed=config.graph_seed)


Precision = Literal["float32", "mixed_bfloat16"]


@contextlib.contextmanager
def dtype_policy(name: Precision):
    """Layers created inside take the Keras dtype policy `name` (their sub-layers too, which a
    layer's own `dtype` argument does not reach)."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def build_model(config: ModelConfig | None = None, trunk_precision: Precision = "float32") -> keras.Model:
    """Builds the network for `config` (default: the "paper" preset).

    The model takes float32 RGB images in [0, 1], B x S x S x 3 with S = config.image_size, and
    returns the dict described in the module docstring (float32 tensors).

    Args:
      config: the sizes.
      trunk_precision: "mixed_bfloat16" computes the convolutional trunk (hourglass and encoder,
        nearly all of the FLOPs) in bfloat16 with float32 weights, for faster training on CPUs
        with AVX-512 BF16; the graph decoder and pose regressor stay float32. Weights are the
        same either way, so a float32 copy (`with_precision`) serves inference and export.
    """
    config = (config or ModelConfig.preset("paper")).validated()
    hierarchy = model_hierarchy(config)
    size = config.image_size

    images = keras.Input((size, size, 3), name="image")
    centred = keras.layers.Rescaling(1.0, offset=-0.5, name="centre")(images)
    with dtype_policy(trunk_precision):
        hourglass = StackedHourglass(
            config.num_stacks,
            depth=config.hourglass_depth,
            filters=config.hourglass_filters,
            num_heatmaps=config.num_keypoints,
            num_modules=config.hourglass_modules,
            name=HOURGLASS,
        )
        encoder = ResidualEncoder(
            config.encoder_filters,
            num_residual=config.encoder_residuals,
            num_pools=config.encoder_pools,
            name=ENCODER,
        )
    heatmaps, features = hourglass(centred)
    latent = encoder(heatmaps[-1], features)
    mesh_uvd = MeshDecoder(
        fc_units=config.decoder_fc_units,
        level_sizes=hierarchy.level_sizes,
        # Finest level first; the coarsest entry is the feature width after the dense layers.
        widths=tuple(reversed(config.decoder_widths)) + (config.decoder_coarse_features,),
        order=config.cheb_order,
        formulation=config.graph_formulation,
        laplacians=hierarchy.laplacians[:-1],
        node_of_vertex=hierarchy.node_of_vertex,
        name=MESH_DECODER,
    )(latent)
    pose_uvd = PoseRegressor(
        hierarchy.level_sizes[0],
        widths=config.pose_widths,
        num_joints=config.num_keypoints,
        order=config.cheb_order,
        formulation=config.graph_formulation,
        laplacians=(hierarchy.laplacians[0], hierarchy.laplacians[2]),
        node_of_vertex=hierarchy.node_of_vertex,
        name=POSE_REGRESSOR,
    )(mesh_uvd)
    outputs = {
        "heatmaps": [keras.layers.Identity(name=f"heatmaps_{i}")(h) for i, h in enumerate(heatmaps)],
        "mesh_uvd": keras.layers.Identity(name="mesh_uvd")(mesh_uvd),
        "pose_uvd": keras.layers.Identity(name="pose_uvd")(pose_uvd),
    }
    return keras.Model(images, outputs, name="handshape")


def with_graph_formulation(model: keras.Model, formulation: str) -> keras.Model:
    """A copy of `model` whose graph convolutions use `formulation`, with the same weights.

    "gather" uses builtin ops only (TFLite, ONNX); "sparse" uses sparse-tensor products.
    """
    if formulation not in ("sparse", "gather"):
        raise ValueError(f"formulation {formulation!r}; expected 'sparse' or 'gather'")

    def clone(layer):
        config = layer.get_config()
        if "formulation" in config:
            config["formulation"] = formulation
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy
