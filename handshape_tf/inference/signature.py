"""The serving signatures of an exported model (TensorFlow; shared by the SavedModel exporter).

Shape shorthand: B batch, S crop side, M = S / 4 heat-map side, J = 21 keypoints, V = 1159
vertices.

Signatures (what `save_serving_model` writes and `handshape_tf.serve` serves):
  serving_default: images B x S x S x 3 uint8 RGB hand crops (0..255) ->
    heatmaps   B x M x M x J float32, the last hourglass stack,
    mesh_uvd   B x V x 3 float32 (u, v normalised in the crop, d = (z - z_root) / s),
    pose_uvd   B x J x 3 float32,
    joints_uv  B x J x 2 float32 joint positions in crop pixels (pose_uvd[..., :2] * S).
  predict_encoded (optional): image_bytes B string, each a PNG/JPEG/BMP/GIF file of any size ->
    the same outputs. Each image is padded with black to a centred square of side max(H, W)
    and resized to S x S (bilinear with anti-aliasing). This follows the predictor's default
    box (`data.crop.image_box`) to within half a pixel of padding (an odd H - W difference is
    split by whole pixels here) and with a different anti-aliasing filter, so the numbers are
    close to, not equal to, `HandPredictor.predict(image)`. Over TF Serving's REST API the
    strings travel base64-encoded as {"b64": "..."}.

The SavedModel's root object holds only the signature functions and the variables they read,
not the Keras model: that keeps `tf.lite.TFLiteConverter.from_saved_model(directory,
signature_keys=["serving_default"])` able to freeze the weights into constants (with the Keras
model tracked, the converter keeps them as resource variables and the LiteRT interpreter then
fails with "READ_VARIABLE ... variable != nullptr"). Use a "gather" graph-formulation model for
TFLite (`models.network.with_graph_formulation`); the sparse one needs Flex ops.
"""

from __future__ import annotations

import os
from pathlib import Path

import keras
import tensorflow as tf

SERVING_SIGNATURE = "serving_default"
ENCODED_SIGNATURE = "predict_encoded"
IMAGE_INPUT = "images"
ENCODED_INPUT = "image_bytes"
OUTPUT_NAMES = ("heatmaps", "mesh_uvd", "pose_uvd", "joints_uv")


def model_image_size(model: keras.Model) -> int:
    """S of a model taking B x S x S x 3 images; raises ValueError for any other input shape."""
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or shape[3] != 3 or shape[1] is None or shape[1] != shape[2]:
        raise ValueError(f"model takes input of shape {shape}; expected B x S x S x 3 images")
    return int(shape[1])


def serving_functions(model: keras.Model, encoded: bool = True) -> dict[str, tf.types.experimental.GenericFunction]:
    """tf.functions with fixed input signatures for the signatures above.

    Args:
      model: a keras.Model from `handshape_tf.models.build_model` (float32 input in [0, 1],
        dict outputs heatmaps (list per stack), mesh_uvd, pose_uvd).
      encoded: also return the predict_encoded function.

    Returns:
      {signature name: tf.function}; call `.get_concrete_function()` for tf.saved_model.save.

    Example:
      serve = serving_functions(model)[SERVING_SIGNATURE]
      serve(tf.zeros([2, 64, 64, 3], tf.uint8))["mesh_uvd"]  # 2 x 1159 x 3
    """
    size = model_image_size(model)

    def run(images):
        outputs = model(tf.cast(images, tf.float32) / 255.0, training=False)
        heatmaps = outputs["heatmaps"]
        pose_uvd = outputs["pose_uvd"]
        return {
            "heatmaps": heatmaps[-1] if isinstance(heatmaps, (list, tuple)) else heatmaps,
            "mesh_uvd": outputs["mesh_uvd"],
            "pose_uvd": pose_uvd,
            "joints_uv": pose_uvd[..., :2] * float(size),
        }

    def decode(data):
        image = tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)
        height, width = tf.shape(image)[0], tf.shape(image)[1]
        side = tf.maximum(height, width)
        square = tf.image.pad_to_bounding_box(image, (side - height) // 2, (side - width) // 2, side, side)
        resized = tf.image.resize(square, [size, size], method="bilinear", antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8, name=IMAGE_INPUT)])
    def serving_default(images):
        return run(images)

    functions = {SERVING_SIGNATURE: serving_default}
    if encoded:

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=ENCODED_INPUT)])
        def predict_encoded(image_bytes):
            images = tf.map_fn(decode, image_bytes, fn_output_signature=tf.TensorSpec([size, size, 3], tf.uint8))
            return serving_default(images)  # reuses serving_default's trace of the model

        functions[ENCODED_SIGNATURE] = predict_encoded
    return functions


def serving_module(model: keras.Model, encoded: bool = True) -> tuple[tf.Module, dict]:
    """The root object and signatures to pass to tf.saved_model.save.

    Args:
      model: see `serving_functions`.
      encoded: include the predict_encoded signature.

    Returns:
      (root, signatures): a tf.Module holding the signature functions and the variables they
      read (not the Keras model, see the module docstring), and {name: concrete function}.
    """
    functions = serving_functions(model, encoded=encoded)
    signatures = {name: function.get_concrete_function() for name, function in functions.items()}
    root = tf.Module()
    for name, function in functions.items():
        setattr(root, name, function)
    seen, variables = set(), []
    for concrete in signatures.values():
        for variable in concrete.variables:
            if id(variable) not in seen:
                seen.add(id(variable))
                variables.append(variable)
    root.model_variables = variables
    return root, signatures


def save_serving_model(model: keras.Model, directory, encoded: bool = True) -> Path:
    """Writes `model` as a SavedModel with the signatures of this module.

    Args:
      model: a keras.Model from `build_model` (either graph formulation).
      directory: output directory (created; TF Serving expects <base>/<version>).
      encoded: include the predict_encoded signature.

    Returns:
      The directory, loadable by `tf.saved_model.load`, `inference.load_predictor` and
      `handshape_tf.serve`.
    """
    root, signatures = serving_module(model, encoded=encoded)
    directory = Path(directory)
    tf.saved_model.save(root, os.fspath(directory), signatures=signatures)
    return directory
