"""TFLite export (float32, float16 weights or full int8), builtin ops only, verified in LiteRT.

    python -m export.tflite --model runs/cpu/model.keras --out model.tflite
    python -m export.tflite --model runs/cpu/model.keras --out model_fp16.tflite --quantize fp16

Graph convolutions use the gather formulation (the sparse one needs Flex ops, which the LiteRT
interpreter lacks); a converted model that still names a Flex or custom op is rejected.
The model has one signature, serving_default:
  input `image`, B x S x S x 3 (B resizable, 1 as converted):
    none / fp16: float32 RGB in [0, 1];
    int8: uint8 RGB pixels 0..255 (quantisation scale 1/255, zero point 0, checked here, so
      raw pixels go in unchanged);
  outputs float32 in every variant: heatmaps (B x S/4 x S/4 x 21, last stack), mesh_uvd
    (B x 1159 x 3), pose_uvd (B x 21 x 3).
Quantisation:
  none: float32 weights and activations.
  fp16: float16 weights, float32 computation (about half the file size).
  int8 (experimental): weights and activations int8, post-training, calibrated on
    `--calibration-count` crops of `--calibration-data` (required: a shard folder of training
    crops). The trained `cpu` model has not passed the parity check with any calibration set
    tried (procedural textures, another shard folder, the run's own training set), so no file
    is written; use fp16 for a small model. The first calibration crop gets one black and one
    white pixel so the input range calibrates to exactly [0, 1].
The file is written beside `--out`, loaded back in the LiteRT interpreter, compared with the
Keras model (bounds per quantisation in `export.parity`) and only then renamed to `--out`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

from export import common, parity

QUANTIZATIONS = ("none", "fp16", "int8")
# Tolerance of each quantisation in export.parity.TOLERANCES.
TOLERANCE_OF = {"none": "fp32", "fp16": "fp16", "int8": "int8"}
PIXEL_SCALE = 1.0 / 255.0


def convert_saved_model(directory, quantize: str = "none", calibration=None, integer_input: bool = False) -> bytes:
    """Converts a SavedModel's serving_default signature to a TFLite flatbuffer.

    Args:
      directory: SavedModel directory (e.g. from `common.write_float_saved_model`).
      quantize: "none", "fp16" or "int8" (see the module docstring).
      calibration: for int8, a sequence of {input name: 1 x ... float32} samples.
      integer_input: for int8, make the inputs uint8 instead of float32 (outputs stay float32).

    Returns:
      The .tflite file contents.
    """
    import tensorflow as tf

    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize is {quantize!r}; expected one of {QUANTIZATIONS}")
    converter = tf.lite.TFLiteConverter.from_saved_model(os.fspath(directory))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":
        if not calibration:
            raise ValueError("int8 quantisation needs calibration samples; received none")
        samples = list(calibration)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: iter(samples)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if integer_input:
            converter.inference_input_type = tf.uint8
    with warnings.catch_warnings():
        # int8 calibration runs TensorFlow's own tf.lite.Interpreter, which warns that it is deprecated.
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
        return converter.convert()


def convert_keras(model, quantize: str = "none", calibration=None, integer_input: bool = False) -> bytes:
    """Converts a Keras model (flat or `build_model` outputs) through a temporary SavedModel.

    Args: as `convert_saved_model`; calibration samples are keyed by the model's input names.
    """
    with tempfile.TemporaryDirectory(prefix="handshape-tflite-") as temporary:
        directory = Path(temporary) / "saved_model"
        common.write_float_saved_model(model, directory)
        return convert_saved_model(directory, quantize, calibration, integer_input)


def operator_names(content: bytes) -> list[str]:
    """Sorted operator names of a .tflite flatbuffer: builtin names, "CUSTOM:<code>" for others."""
    from ai_edge_litert import schema_py_generated as schema

    builtin = {value: name for name, value in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    model = schema.Model.GetRootAs(content, 0)
    names = set()
    for index in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(index)
        # Codes above 127 live in builtin_code; the deprecated field is capped at 127.
        value = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if value == schema.BuiltinOperator.CUSTOM:
            names.add(f"CUSTOM:{(code.CustomCode() or b'').decode()}")
        else:
            names.add(builtin.get(value, f"BUILTIN_{value}"))
    return sorted(names)


def check_builtin_ops(content: bytes) -> list[str]:
    """The operator names of a flatbuffer; raises ExportError if any is a Flex or custom op."""
    names = operator_names(content)
    foreign = [name for name in names if name.startswith("CUSTOM:") or "Flex" in name]
    if foreign:
        raise common.ExportCheckError(
            f"the TFLite model uses non-builtin ops {foreign}; expected builtin ops only (the LiteRT interpreter "
            "has no Flex delegate): export the gather graph formulation"
        )
    return names


def export_checked_image_model(model, path: Path, images: np.ndarray, role: str, output: str) -> dict:
    """Writes a one-input, one-output Keras model (the detector, the side classifier) to `path` as
    float32 TFLite with builtin ops only, atomically and only when LiteRT matches Keras within
    1e-3 on `images` (B x H x W x 3 uint8).

    Returns:
      {file, bytes, max_abs_difference, operators}.

    Raises:
      ExportError: non-builtin ops, or a difference above 1e-3.
    """
    from handshape_tf.inference.detection import ImageModel

    content = convert_keras(model)
    operators = check_builtin_ops(content)
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.tflite")
    tmp.write_bytes(content)
    try:
        keras_out = ImageModel(model, role, output)(images)
        lite_out = ImageModel(tmp, role, output)(images)
        difference = float(np.abs(keras_out - lite_out).max())
        if difference > 1e-3:
            raise common.ExportCheckError(
                f"TFLite {role} differs from Keras by {difference:.2e} (max abs); expected <= 1e-3"
            )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return {"file": str(path), "bytes": len(content), "max_abs_difference": difference, "operators": operators}


def check_pixel_input(content: bytes) -> None:
    """Raises ExportError unless the uint8 input is quantised as raw pixels (1/255, zero point 0)."""
    from ai_edge_litert.interpreter import Interpreter

    (detail,) = Interpreter(model_content=content).get_input_details()
    scale, zero_point = detail["quantization"]
    if np.dtype(detail["dtype"]) != np.uint8 or zero_point != 0 or not np.isclose(scale, PIXEL_SCALE, rtol=1e-5):
        raise common.ExportCheckError(
            f"int8 model input is {np.dtype(detail['dtype'])} with scale {scale} and zero point {zero_point}; "
            f"expected uint8 pixels (scale 1/255, zero point 0)"
        )


def calibration_samples(crops: np.ndarray, input_name: str = "image") -> list[dict[str, np.ndarray]]:
    """{input: 1 x S x S x 3 float32 in [0, 1]} per crop, the first with a black and a white pixel."""
    images = crops.astype(np.float32) / 255.0  # B x S x S x 3
    images[0, 0, 0] = 0.0
    images[0, 0, -1] = 1.0
    return [{input_name: image[np.newaxis]} for image in images]


def check_int8_data(quantize: str, data) -> None:
    """Raises ExportError for int8 without calibration data (procedural textures fail parity)."""
    if quantize == "int8" and data is None:
        raise common.ExportError(
            "--quantize int8 needs --calibration-data: a shard folder of training crops (calibrating on procedural "
            "textures gives a model that fails the parity check); int8 is experimental, fp16 is the small model "
            "that passes"
        )


def export_tflite(model, out, quantize: str, crops: np.ndarray, calibration_crops: np.ndarray | None = None) -> str:
    """Writes the verified TFLite model of `model` (a `build_model` Keras model) to `out`.

    Args:
      model: the Keras model (either graph formulation; converted with gather).
      out: output .tflite path; replaced only when the new export passes.
      quantize: "none", "fp16" or "int8".
      crops: B x S x S x 3 uint8 crops to compare on.
      calibration_crops: N x S x S x 3 uint8 crops for int8 (default: `crops`).

    Returns:
      The parity report and the operator list.

    Raises:
      common.ExportError: Flex/custom ops, a wrong int8 input quantisation, or outputs beyond
        the bounds of `quantize`.
    """
    from handshape_tf.inference.backends import KerasBackend, TFLiteBackend

    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize is {quantize!r}; expected one of {QUANTIZATIONS}")
    twin = common.export_twin(model)
    reference = KerasBackend(model).run(crops)
    calibration = None
    if quantize == "int8":
        calibration = calibration_samples(
            crops if calibration_crops is None else calibration_crops, twin.inputs[0].name
        )
    operators: list[str] = []

    def write(path: Path) -> None:
        content = convert_keras(twin, quantize, calibration, integer_input=quantize == "int8")
        operators.extend(check_builtin_ops(content))
        if quantize == "int8":
            check_pixel_input(content)
        path.write_bytes(content)

    report = common.export_verified(
        out,
        write=write,
        open_backend=TFLiteBackend,
        reference=reference,
        crops=crops,
        tolerance=parity.TOLERANCES[TOLERANCE_OF[quantize]],
        label=f"TFLite {quantize} {Path(out).name}",
    )
    return f"{report}\n  builtin ops: {', '.join(operators)}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m export.tflite", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common.add_common_arguments(parser)
    parser.add_argument(
        "--quantize", choices=QUANTIZATIONS, default="none", help="none, fp16 (half the size) or int8 (experimental)"
    )
    parser.add_argument("--calibration-data", dest="data", help="same as --data (required for int8)")
    parser.add_argument("--calibration-count", type=int, default=64, help="crops for int8 calibration")
    args = parser.parse_args(argv)

    def run() -> str:
        common.check_file_output(args.out)
        check_int8_data(args.quantize, args.data)
        model = common.load_model(args.model)
        size = common.image_size(model)
        crops = common.sample_crops(size, args.data, args.verify_count)
        calibration = None
        if args.quantize == "int8":
            calibration = common.sample_crops(size, args.data, args.calibration_count, seed=1)
        report = export_tflite(model, args.out, args.quantize, crops, calibration)
        return f"{report}\nwrote {os.fspath(args.out)} ({Path(args.out).stat().st_size / 1e6:.2f} MB)"

    return common.run_cli(run, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
