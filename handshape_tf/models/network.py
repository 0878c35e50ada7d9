"""The full network: image -> heat-maps -> latent -> mesh (u, v, d) -> 21 joints (paper Fig. 3).

Shape shorthand: B batch, S input side, M = S / 4 heat-map side, J = 21 keypoints, V = 1159
template vertices, T hourglass stacks.

Outputs of `build_model(config)` (a `HandshapeModel`: a functional Keras model that keeps its
config as `model.model_config` through saving and loading; dict of outputs):
  heatmaps: list of T tensors B x M x M x J, one per stack (intermediate supervision).
  mesh_uvd: B x V x 3, template vertex order, fake graph nodes dropped.
  pose_uvd: B x J x 3.
In uvd, u and v are normalised crop coordinates in [0, 1] (x / S, y / S with pixel centres at
i + 0.5) and d = (z - z_root) / s is the scale-invariant, root-relative depth (s: middle finger
MCP-PIP length). `handshape_tf.geometry.camera.uvd_to_xyz` turns them into camera space.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Literal

import keras

from handshape_tf.config_utils import merge, to_dict
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


def build_trunk(config: ModelConfig, trunk_precision: Precision = "float32"):
    """The front end the paper's network and the Table 2 baselines share: image -> stacked
    hourglass -> residual encoder, as symbolic Keras tensors.

    Returns:
      (images: the B x S x S x 3 input, heatmaps: T tensors B x M x M x J, latent: B x Z).
    """
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
    return images, heatmaps, encoder(heatmaps[-1], features)


def heatmap_outputs(heatmaps) -> list:
    """The named (float32) heat-map outputs heatmaps_0 ... heatmaps_{T-1}."""
    return [keras.layers.Identity(name=f"heatmaps_{i}")(h) for i, h in enumerate(heatmaps)]


def model_config_from(value: ModelConfig | dict[str, Any]) -> ModelConfig:
    """A ModelConfig from itself or from its dict (a saved model's config), validated."""
    if isinstance(value, ModelConfig):
        return value.validated()
    return merge(ModelConfig(), value).validated()


@keras.saving.register_keras_serializable(package="handshape_tf")
class HandshapeModel(keras.Model):
    """The paper's network (module docstring) as a functional Keras model that carries its
    sizes: `model_config` survives saving and loading (`get_config` is the constructor's
    arguments), so a loaded model says what it is without its run's config.yaml.

    Args:
      model_config: the sizes (a ModelConfig or its dict), default the "paper" preset.
      trunk_precision: see `build_model`.
    """

    def __init__(self, model_config=None, trunk_precision: Precision = "float32", **kwargs):
        config = model_config_from(model_config if model_config is not None else ModelConfig.preset("paper"))
        hierarchy = model_hierarchy(config)
        images, heatmaps, latent = build_trunk(config, trunk_precision)
        graph = dict(
            order=config.cheb_order, formulation=config.graph_formulation, node_of_vertex=hierarchy.node_of_vertex
        )
        mesh_uvd = MeshDecoder(
            fc_units=config.decoder_fc_units,
            level_sizes=hierarchy.level_sizes,
            # Finest level first; the coarsest entry is the feature width after the dense layers.
            widths=tuple(reversed(config.decoder_widths)) + (config.decoder_coarse_features,),
            laplacians=hierarchy.laplacians[:-1],
            name=MESH_DECODER,
            **graph,
        )(latent)
        pose_uvd = PoseRegressor(
            hierarchy.level_sizes[0],
            widths=config.pose_widths,
            num_joints=config.num_keypoints,
            laplacians=(hierarchy.laplacians[0], hierarchy.laplacians[2]),
            name=POSE_REGRESSOR,
            **graph,
        )(mesh_uvd)
        outputs = {
            "heatmaps": heatmap_outputs(heatmaps),
            "mesh_uvd": keras.layers.Identity(name="mesh_uvd")(mesh_uvd),
            "pose_uvd": keras.layers.Identity(name="pose_uvd")(pose_uvd),
        }
        kwargs.setdefault("name", "handshape")
        super().__init__(images, outputs, **kwargs)
        self.model_config = config
        self.trunk_precision = trunk_precision

    def get_config(self) -> dict[str, Any]:
        return {"model_config": to_dict(self.model_config), "trunk_precision": self.trunk_precision, "name": self.name}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> HandshapeModel:
        return cls(**config)


def build_model(config: ModelConfig | None = None, trunk_precision: Precision = "float32") -> HandshapeModel:
    """Builds the network for `config` (default: the "paper" preset).

    The model takes float32 RGB images in [0, 1], B x S x S x 3 with S = config.image_size, and
    returns the dict described in the module docstring (float32 tensors); `model.model_config`
    is `config`.

    Args:
      config: the sizes.
      trunk_precision: "mixed_bfloat16" computes the convolutional trunk (hourglass and encoder,
        nearly all of the FLOPs) in bfloat16 with float32 weights, for faster training on CPUs
        with AVX-512 BF16; the graph decoder and pose regressor stay float32. Weights are the
        same either way, so a float32 copy serves inference and export.
    """
    return HandshapeModel(config, trunk_precision)


def with_graph_formulation(model: keras.Model, formulation: str) -> keras.Model:
    """A copy of `model` whose graph convolutions use `formulation`, with the same weights.

    "gather" uses builtin ops only (TFLite, ONNX); "sparse" uses sparse-tensor products.
    """
    if formulation not in ("sparse", "gather"):
        raise ValueError(f"formulation {formulation!r}; expected 'sparse' or 'gather'")
    if isinstance(model, HandshapeModel):
        config = dataclasses.replace(model.model_config, graph_formulation=formulation)
        copy = HandshapeModel(config, model.trunk_precision, name=model.name)
        copy.set_weights(model.get_weights())
        return copy
    # A model saved before models carried their config: rebuild it layer by layer.

    def clone(layer):
        config = layer.get_config()
        if "formulation" in config:
            config["formulation"] = formulation
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy
