"""Steps shared by the exporters: load, sample crops, float SavedModel, atomic write, verify.

Shape shorthand: B batch, S crop side.

Every exporter writes to a temporary path beside the output, loads that file back in its own
runtime, compares it with the Keras model on B crops (`export.parity`) and only then renames it
to the output path; on any failure the temporary path is deleted, so the output path holds
either the previous file or a verified export, never a half-written or failing one. An export
never deletes a directory: a file export refuses an existing directory at its path, and a
SavedModel goes to a new or empty directory or the next version of a TF Serving base folder
(`saved_model_output`).

Crops for verification and int8 calibration (`sample_crops`):
  a shard folder (metadata.json, from `handshape_tf.data.shards`): its first images;
  a folder of image files (searched recursively) or one image file: the centred square
    (`data.crop.image_box`) of each, resized to S x S;
  nothing: deterministic procedural textures (`data.backgrounds.procedural_background`,
    seeded), so the check always runs, but with inputs unlike hands.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from export import parity
from handshape_tf.cli import EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_OK, add_verbose_argument, print_error, setup_logging

logger = logging.getLogger(__name__)


class ExportError(RuntimeError):
    """An export that could not be written: bad model, data or output path, or a failed check."""


class ExportCheckError(ExportError):
    """The written export failed its check: outputs beyond tolerance of the Keras model, ops
    outside the builtin set, a wrong input quantisation (nothing is left at the output)."""


def load_model(path):
    """The Keras model in a .keras file (compile=False), as saved (either graph formulation)."""
    from handshape_tf.inference.backends import CorruptModelError, load_keras_model

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"model file {path} does not exist; expected a .keras file from training")
    try:
        return load_keras_model(path)
    except CorruptModelError as error:
        raise ExportError(str(error)) from None


def export_twin(model):
    """`model` with gather-based graph convolutions (builtin ops only), same weights."""
    from handshape_tf.models.network import with_graph_formulation

    return with_graph_formulation(model, "gather")


def image_size(model) -> int:
    """S of a model taking B x S x S x 3 images."""
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or shape[3] != 3 or shape[1] is None or shape[1] != shape[2]:
        raise ExportError(f"model takes input of shape {shape}; expected B x S x S x 3 images")
    return int(shape[1])


def flat_outputs(outputs) -> dict:
    """A model's outputs as a flat {name: tensor} dict; a list (heat-maps per stack) -> its last."""
    if not isinstance(outputs, dict):
        raise ExportError(f"model returns {type(outputs).__name__}; expected a dict of named outputs")
    return {name: value[-1] if isinstance(value, (list, tuple)) else value for name, value in outputs.items()}


def float_endpoint(model):
    """(tf.function, input signature) running `model` in inference mode with flat outputs.

    Inputs keep the model's input names and shapes (batch dimension free), float32.
    """
    import tensorflow as tf

    specs = [tf.TensorSpec((None, *tensor.shape[1:]), tf.float32, name=tensor.name) for tensor in model.inputs]

    def endpoint(*inputs):
        return flat_outputs(model(inputs[0] if len(inputs) == 1 else list(inputs), training=False))

    return tf.function(endpoint, input_signature=specs), specs


def write_float_saved_model(model, directory) -> None:
    """Writes `model` as a SavedModel with a float32 "serving_default" signature.

    The source of the TFLite conversions and of the SavedModel timings. `model.export` cannot
    take the model's nested outputs, `TFLiteConverter.from_keras_model` does not work with
    Keras 3, and a tf.Module holding the Keras model itself saves variables that the TFLite
    converter leaves unfrozen (READ_VARIABLE ops that fail at run time); a module tracking the
    model's tf.Variables directly converts cleanly, and saves twice as fast as Keras'
    `ExportArchive`.
    """
    import tensorflow as tf

    function, _ = float_endpoint(model)
    variables = [variable.value for variable in model.variables]
    if not all(isinstance(variable, tf.Variable) for variable in variables):
        raise ExportError("the model's variables are not tf.Variables; expected Keras on the TensorFlow backend")
    module = tf.Module()
    module.model_variables = variables
    module.serve = function
    tf.saved_model.save(module, os.fspath(directory), signatures={"serving_default": function.get_concrete_function()})


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def check_file_output(path) -> Path:
    """`path` as a file output (.tflite, .onnx): a new path or an existing file to replace.

    Raises:
      ExportError: `path` is an existing directory (an export never deletes one).
    """
    path = Path(path)
    if path.is_dir():
        raise ExportError(
            f"--out {path} is an existing directory; expected a file path (the export never replaces a directory)"
        )
    return path


def saved_model_output(path) -> Path:
    """The directory a SavedModel export writes for `--out path`, deleting nothing.

    `path` that does not exist, or an empty directory: `path` itself. A TF Serving base
    folder (a directory with numbered subdirectories and no saved_model.pb): the next version,
    `path/<highest + 1>`, which TF Serving and `handshape_tf.serve` then pick up.

    Raises:
      ExportError: `path` is a file, a SavedModel, or a non-empty directory without versions.
    """
    path = Path(path)
    if not path.exists():
        return path
    if not path.is_dir():
        raise ExportError(f"--out {path} is an existing file; expected a new directory or a TF Serving base folder")
    if (path / "saved_model.pb").exists():
        raise ExportError(
            f"--out {path} already holds a SavedModel; pass its base folder ({path.parent}) to add the next "
            "version, or a new directory"
        )
    entries = list(path.iterdir())
    versions = [int(entry.name) for entry in entries if entry.name.isdigit() and entry.is_dir()]
    if versions:
        return path / str(max(versions) + 1)
    if entries:
        raise ExportError(
            f"--out {path} is a non-empty directory ({len(entries)} entries) without numbered versions; "
            "expected a new directory, an empty one or a TF Serving base folder (1/, 2/, ...)"
        )
    return path


@contextlib.contextmanager
def atomic_output(path):
    """Yields a temporary path beside `path`; renames it to `path` only if the block succeeds.

    A file replaces an existing file; a directory takes the place of a missing or empty one.
    Anything else already at `path` is never deleted: ExportError. On an exception the
    temporary path is removed and `path` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    _remove(partial)
    try:
        yield partial
        if not partial.exists():
            raise ExportError(f"the export wrote nothing to {partial}")
        if path.is_dir() != partial.is_dir() and path.exists():
            kind = "directory" if path.is_dir() else "file"
            raise ExportError(f"{path} is an existing {kind}; the export would replace it, so nothing was written")
        try:
            os.replace(partial, path)  # a directory replaces only an empty one
        except OSError as error:
            raise ExportError(
                f"cannot move the export to {path} ({error.strerror}); nothing there was changed"
            ) from None
    except BaseException:
        _remove(partial)
        raise


def _centre_crop(rgb: np.ndarray, size: int) -> np.ndarray:
    from handshape_tf.data.crop import crop_and_resize, image_box

    if rgb.shape[:2] == (size, size):
        return rgb
    crop, _ = crop_and_resize(rgb, image_box(rgb.shape[1], rgb.shape[0]), size)
    return crop


def sample_crops(size: int, source=None, count: int = 8, seed: int = 0) -> np.ndarray:
    """B x S x S x 3 uint8 RGB crops from `source` (see the module docstring), B <= count.

    Raises:
      ExportError: `source` does not exist or holds no image.
    """
    import cv2

    from handshape_tf.data.crop import to_rgb_uint8

    if count < 1:
        raise ExportError(f"count is {count}; expected at least one crop")
    if source is None:
        from handshape_tf.data.backgrounds import procedural_background

        return np.stack([procedural_background(np.random.default_rng([seed, i]), size) for i in range(count)])
    source = Path(source)
    if source.is_dir() and (source / "metadata.json").is_file():
        from handshape_tf.data.shards import read_dataset

        images = [sample["image"].numpy() for sample in read_dataset(source).take(count)]
    else:
        if source.is_file():
            paths = [source]
        elif source.is_dir():
            from handshape_tf.data.backgrounds import find_images

            paths = find_images(source)[:count]
        else:
            raise ExportError(
                f"sample data {source} does not exist; expected a shard folder, an image folder or an image"
            )
        images = []
        for path in paths:
            decoded = cv2.imread(os.fspath(path), cv2.IMREAD_COLOR)
            if decoded is None:
                logger.warning("skipping %s: OpenCV cannot decode it", path)
                continue
            images.append(to_rgb_uint8(decoded, channel_order="bgr"))
    if not images:
        raise ExportError(f"sample data {source} holds no readable image")
    if len(images) < count:
        logger.info("%s holds %d images; using them all (%d asked)", source, len(images), count)
    return np.stack([_centre_crop(image, size) for image in images])


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """--model, --out, --data and --verify-count, shared by the three exporters."""
    parser.add_argument("--model", required=True, help="trained .keras model")
    parser.add_argument(
        "--out", required=True, help="output path (written only by a verified export; never replaces a directory)"
    )
    parser.add_argument(
        "--data",
        default=None,
        help="crops to verify on (and calibrate int8 with): a shard folder, an image folder or an image; "
        "default: deterministic procedural textures",
    )
    parser.add_argument("--verify-count", type=int, default=8, help="crops the export is compared on")
    add_verbose_argument(parser)


def export_verified(
    out,
    write: Callable[[Path], None],
    open_backend: Callable[[Path], object],
    reference: dict,
    crops: np.ndarray,
    tolerance: parity.Tolerance,
    label: str,
) -> str:
    """Writes an export atomically after checking it against the Keras outputs.

    Args:
      out: output path (file or directory).
      write: writes the export to the path it is given.
      open_backend: loads the written export in its own runtime; the result has
        `run(crops) -> {"mesh_uvd": ..., "pose_uvd": ...}` (as `handshape_tf.inference.backends`).
      reference: the Keras model's outputs on `crops`.
      crops: B x S x S x 3 uint8 crops.
      tolerance: the bounds for this format.
      label: the format's name in messages.

    Returns:
      The parity report (text).

    Raises:
      ExportError: the export differs beyond `tolerance` (nothing is left at `out`).
    """
    with atomic_output(out) as partial:
        write(partial)
        candidate = open_backend(partial).run(crops)
        differences = parity.compare(reference, candidate, crops.shape[1])
        report = parity.format_report(label, differences, tolerance)
        problems = parity.violations(differences, tolerance)
        if problems:
            raise ExportCheckError(f"{label} does not match the Keras model ({'; '.join(problems)}):\n{report}")
    return report


def run_cli(main: Callable[[], str], verbose: bool = False) -> int:
    """Runs an exporter's body and prints its report; returns the exit status (`handshape_tf.cli`):
    EXIT_FAILURE when the export fails its check, EXIT_BAD_INPUT for other refusals."""
    from handshape_tf.data.shards import DatasetError

    setup_logging(verbose)
    try:
        print(main())
    except ExportCheckError as error:
        print_error(f"export failed: {error}")
        return EXIT_FAILURE
    except (ExportError, DatasetError) as error:
        print_error(f"export failed: {error}")
        return EXIT_BAD_INPUT
    return EXIT_OK
