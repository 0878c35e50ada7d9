"""Runtimes that map a batch of hand crops to the network's raw outputs.

Shape shorthand: B batch, S crop side, M = S / 4 heat-map side, J = 21 keypoints, V = 1159
vertices.

Every backend has `image_size` (S), `description` (str) and `run(crops)`: B x S x S x 3 uint8
RGB -> dict of numpy float32 arrays heatmaps (B x M x M x J, last hourglass stack), mesh_uvd
(B x V x 3) and pose_uvd (B x J x 3). TensorFlow and Keras are imported only when a Keras or
SavedModel backend is created; the TFLite backend uses ai_edge_litert alone.

Model formats, told apart by `detect_format`:
  ".keras" file: a Keras model from `handshape_tf.models.build_model` (float32 input in [0, 1]).
  SavedModel directory (holds saved_model.pb): its "serving_default" signature takes one
    B x S x S x 3 image tensor, uint8 (0..255) or float32 ([0, 1]), and returns at least
    mesh_uvd, pose_uvd and heat-maps (`handshape_tf.inference.signature` writes such a model).
  ".tflite" file: same contract, through its "serving_default" signature when it has one,
    otherwise by output shapes.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from handshape_tf.cli import tf_error_text

logger = logging.getLogger(__name__)

FORMATS = ("keras", "saved_model", "tflite")
SERVING_SIGNATURE = "serving_default"
_TFLITE_MAGIC = b"TFL3"


class CorruptModelError(ValueError):
    """A model file that exists in a known format but cannot be read (truncated or damaged)."""

    def __init__(self, path, reason: str):
        super().__init__(f"corrupt model file {path}: {reason}")
        self.path = path


def load_keras_model(path):
    """The Keras model in a .keras file (compile=False), its zip archive checked first.

    Raises:
      CorruptModelError: the archive is truncated or damaged (Keras itself says "File not
        found" for a truncated archive).
    """
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise CorruptModelError(
            path, f"not a readable .keras zip archive ({error}); the file may be truncated"
        ) from None
    if damaged is not None:
        raise CorruptModelError(path, f"member {damaged} of the .keras archive fails its checksum")
    import keras

    # Registers the model classes (HandshapeModel, BaselineModel) and the custom layers.
    import handshape_tf.models.baselines  # noqa: F401

    return keras.saving.load_model(os.fspath(path), compile=False)


def detect_format(path) -> str:
    """ "keras", "saved_model" or "tflite" for a model path.

    Raises:
      FileNotFoundError: nothing exists at `path`.
      ValueError: `path` exists but is none of the three formats (the message says what it is).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"model not found: {path} does not exist (expected a .keras file, a SavedModel directory or a .tflite file)"
        )
    if path.is_dir():
        if (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file():
            return "saved_model"
        entries = sorted(entry.name for entry in path.iterdir())
        shown = ", ".join(entries[:8]) + (", ..." if len(entries) > 8 else "")
        raise ValueError(
            f"model directory {path} is not a SavedModel: it has no saved_model.pb (found "
            f"{len(entries)} entries: {shown or 'none'}); expected a SavedModel directory, a "
            f".keras file or a .tflite file"
        )
    suffix = path.suffix.lower()
    with open(path, "rb") as stream:
        head = stream.read(8)
    if suffix == ".tflite" or head[4:8] == _TFLITE_MAGIC:
        if head[4:8] != _TFLITE_MAGIC:
            raise ValueError(f"{path} has the .tflite suffix but is not a TFLite flatbuffer (no TFL3 identifier)")
        return "tflite"
    if suffix == ".keras":
        if not head.startswith(b"PK"):
            raise ValueError(f"{path} has the .keras suffix but is not a Keras archive (not a zip file)")
        return "keras"
    raise ValueError(
        f"unsupported model file {path} (suffix {suffix or 'none'!r}, {path.stat().st_size} bytes); "
        f"expected a .keras file, a SavedModel directory or a .tflite file"
    )


def _image_size_from_shape(shape, origin: str) -> int:
    """S from a B x S x S x 3 input shape (B may be None or -1)."""
    dims = [None if d is None or d < 0 else int(d) for d in shape]
    if len(dims) != 4 or dims[3] != 3 or dims[1] is None or dims[1] != dims[2]:
        raise ValueError(f"{origin} takes input of shape {list(shape)}; expected B x S x S x 3 images")
    return dims[1]


def _pick_outputs(outputs: dict[str, np.ndarray], origin: str) -> dict[str, np.ndarray]:
    """heatmaps / mesh_uvd / pose_uvd from named outputs (heat-maps: the last `heatmaps*`)."""
    missing = [name for name in ("mesh_uvd", "pose_uvd") if name not in outputs]
    heatmap_names = sorted(name for name in outputs if name.startswith("heatmaps"))
    if missing or not heatmap_names:
        raise ValueError(f"{origin} returns outputs {sorted(outputs)}; expected mesh_uvd, pose_uvd and heatmaps")
    return {
        "heatmaps": np.asarray(outputs[heatmap_names[-1]], np.float32),
        "mesh_uvd": np.asarray(outputs["mesh_uvd"], np.float32),
        "pose_uvd": np.asarray(outputs["pose_uvd"], np.float32),
    }


class KerasBackend:
    """Runs an in-memory Keras model (float32 input in [0, 1], dict outputs of `build_model`).

    Args:
      model: a keras.Model as built by `handshape_tf.models.build_model`.
      description: text naming the model in logs and errors.
    """

    def __init__(self, model, description: str = "Keras model"):
        self.model = model
        self.description = description
        self.image_size = _image_size_from_shape(tuple(model.inputs[0].shape), description)
        self._call = None

    @classmethod
    def load(cls, path) -> KerasBackend:
        """Loads a .keras file (imports Keras and registers the handshape_tf layers)."""
        return cls(load_keras_model(path), f"Keras model {path}")

    def run(self, crops: np.ndarray) -> dict[str, np.ndarray]:
        """B x S x S x 3 uint8 -> raw outputs (see the module docstring)."""
        if self._call is None:
            import tensorflow as tf

            size = self.image_size
            # One trace for every batch size.
            self._call = tf.function(
                lambda images: self.model(images, training=False),
                input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)],
            )
        outputs = self._call(np.asarray(crops, np.float32) / 255.0)
        heatmaps = outputs["heatmaps"]
        return {
            "heatmaps": np.asarray(heatmaps[-1] if isinstance(heatmaps, (list, tuple)) else heatmaps),
            "mesh_uvd": np.asarray(outputs["mesh_uvd"]),
            "pose_uvd": np.asarray(outputs["pose_uvd"]),
        }


class SavedModelBackend:
    """Runs the "serving_default" signature of a SavedModel directory.

    Args:
      path: the SavedModel directory.
      loaded: the SavedModel as `tf.saved_model.load` returned it, when already loaded (the
        REST server shares its copy).
    """

    def __init__(self, path, loaded=None):
        import tensorflow as tf

        self.description = f"SavedModel {path}"
        try:
            loaded = loaded if loaded is not None else tf.saved_model.load(os.fspath(path))
        except (OSError, tf.errors.OpError) as error:  # unparsable saved_model.pb, damaged variables
            raise CorruptModelError(path, f"TensorFlow cannot load the SavedModel ({tf_error_text(error)})") from None
        if SERVING_SIGNATURE not in loaded.signatures:
            raise ValueError(
                f"{self.description} has signatures {sorted(loaded.signatures)}; expected {SERVING_SIGNATURE!r}"
            )
        self._loaded = loaded  # keeps the variables alive
        self._function = loaded.signatures[SERVING_SIGNATURE]
        _, specs = self._function.structured_input_signature
        if len(specs) != 1:
            raise ValueError(
                f"{self.description}: {SERVING_SIGNATURE} takes inputs {sorted(specs)}; expected one image input"
            )
        ((self._input_name, spec),) = specs.items()
        if spec.dtype not in (tf.uint8, tf.float32):
            raise ValueError(
                f"{self.description}: input {self._input_name} has dtype {spec.dtype.name}; expected uint8 or float32"
            )
        self._float_input = spec.dtype == tf.float32
        self.image_size = _image_size_from_shape(spec.shape.as_list(), self.description)

    def run(self, crops: np.ndarray) -> dict[str, np.ndarray]:
        """B x S x S x 3 uint8 -> raw outputs (see the module docstring)."""
        images = np.asarray(crops, np.float32) / 255.0 if self._float_input else np.asarray(crops, np.uint8)
        outputs = self._function(**{self._input_name: images})
        return _pick_outputs({name: value.numpy() for name, value in outputs.items()}, self.description)


class TFLiteBackend:
    """Runs a .tflite model with the LiteRT interpreter (no TensorFlow import).

    Args:
      path: the .tflite file.
      num_threads: interpreter threads (None: LiteRT's default).
    """

    def __init__(self, path, num_threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        self.description = f"TFLite model {path}"
        try:
            self._interpreter = Interpreter(model_path=os.fspath(path), num_threads=num_threads)
        except ValueError as error:  # "The model is not a valid Flatbuffer buffer"
            raise CorruptModelError(path, f"LiteRT cannot read it ({error}); the file may be truncated") from None
        signatures = self._interpreter.get_signature_list()
        if SERVING_SIGNATURE in signatures:
            self._runner = self._interpreter.get_signature_runner(SERVING_SIGNATURE)
            inputs = self._runner.get_input_details()
            if len(inputs) != 1:
                raise ValueError(
                    f"{self.description}: {SERVING_SIGNATURE} takes inputs {sorted(inputs)}; expected one image input"
                )
            ((self._input_name, detail),) = inputs.items()
        else:
            self._runner = None
            details = self._interpreter.get_input_details()
            if len(details) != 1:
                raise ValueError(f"{self.description} has {len(details)} inputs; expected one image input")
            detail = details[0]
            self._input_name = detail["name"]
        self._input_dtype = np.dtype(detail["dtype"])
        if self._input_dtype not in (np.uint8, np.float32):
            raise ValueError(f"{self.description}: input has dtype {self._input_dtype}; expected uint8 or float32")
        self.image_size = _image_size_from_shape(detail["shape_signature"], self.description)
        self._batched = True

    def run(self, crops: np.ndarray) -> dict[str, np.ndarray]:
        """B x S x S x 3 uint8 -> raw outputs (see the module docstring).

        Runs the whole batch at once when the model's batch dimension can be resized, one
        crop at a time otherwise.
        """
        crops = np.asarray(crops, np.uint8)
        if self._batched:
            try:
                return self._invoke(crops)
            except (RuntimeError, ValueError) as error:
                if len(crops) == 1:
                    raise
                logger.info(
                    "%s: batch of %d failed (%s); running one crop at a time", self.description, len(crops), error
                )
                self._batched = False
        parts = [self._invoke(crops[i : i + 1]) for i in range(len(crops))]
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}

    def _invoke(self, crops: np.ndarray) -> dict[str, np.ndarray]:
        images = crops.astype(np.float32) / 255.0 if self._input_dtype == np.float32 else crops
        if self._runner is not None:
            return _pick_outputs(self._runner(**{self._input_name: images}), self.description)
        interpreter = self._interpreter
        index = interpreter.get_input_details()[0]["index"]
        interpreter.resize_tensor_input(index, list(images.shape))
        interpreter.allocate_tensors()
        interpreter.set_tensor(index, images)
        interpreter.invoke()
        return _outputs_by_shape(
            [interpreter.get_tensor(detail["index"]) for detail in interpreter.get_output_details()],
            self.description,
        )


def _outputs_by_shape(arrays: list[np.ndarray], origin: str) -> dict[str, np.ndarray]:
    """Outputs of a model without a signature, named by shape (B x V x 3, B x J x 3, rank 4)."""
    heatmaps = [a for a in arrays if a.ndim == 4]
    by_rows = {a.shape[1]: a for a in arrays if a.ndim == 3 and a.shape[2] == 3}
    if not heatmaps or len(by_rows) != 2:
        raise ValueError(
            f"{origin} has outputs of shapes {[a.shape for a in arrays]}; expected B x M x M x J "
            f"heat-maps, B x V x 3 mesh_uvd and B x J x 3 pose_uvd"
        )
    joints, vertices = sorted(by_rows)
    return {
        "heatmaps": np.asarray(heatmaps[-1], np.float32),
        "mesh_uvd": np.asarray(by_rows[vertices], np.float32),
        "pose_uvd": np.asarray(by_rows[joints], np.float32),
    }


def open_backend(path, num_threads: int | None = None):
    """The backend for a model path (see `detect_format`)."""
    model_format = detect_format(path)
    logger.info("loading %s model from %s", model_format, path)
    if model_format == "keras":
        return KerasBackend.load(path)
    if model_format == "saved_model":
        return SavedModelBackend(path)
    return TFLiteBackend(path, num_threads=num_threads)
