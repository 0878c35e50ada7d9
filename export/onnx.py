"""ONNX export (tf2onnx, opset 17), verified in onnxruntime.

    python -m export.onnx --model runs/cpu/model.keras --out model.onnx

Graph convolutions use the gather formulation. The model takes `image`, B x S x S x 3
float32 RGB in [0, 1] (B dynamic), and returns float32 heatmaps (B x S/4 x S/4 x 21, last
stack), mesh_uvd (B x 1159 x 3) and pose_uvd (B x 21 x 3).
tf2onnx reports success (and exits 0) even when an op did not convert, so the file is always
loaded in onnxruntime and compared with the Keras model (fp32 bounds of `export.parity`)
before it is renamed to `--out`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from export import common, parity

OPSET = 17


def convert(model, path, opset: int = OPSET) -> None:
    """Writes a Keras model (flat or `build_model` outputs) as ONNX to `path` with tf2onnx."""
    import tf2onnx

    function, specs = common.float_endpoint(model)
    tf2onnx.convert.from_function(function, input_signature=specs, opset=opset, output_path=os.fspath(path))


def open_session(path, num_threads: int | None = None):
    """An onnxruntime CPU session for `path` (intra-op threads: `num_threads`, None: default)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if num_threads:
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
    try:
        return onnxruntime.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types for invalid graphs
        raise common.ExportCheckError(f"onnxruntime cannot load {path}: {error}") from None


class OnnxBackend:
    """Runs an exported hand model in onnxruntime, with the interface of `inference.backends`.

    Args:
      path: the .onnx file.
      num_threads: intra-op threads (None: onnxruntime's default).
    """

    def __init__(self, path, num_threads: int | None = None):
        self.description = f"ONNX model {path}"
        self._session = open_session(path, num_threads)
        (self._input,) = self._session.get_inputs()
        self.image_size = int(self._input.shape[1])
        self._names = [output.name for output in self._session.get_outputs()]

    def run(self, crops: np.ndarray) -> dict[str, np.ndarray]:
        """B x S x S x 3 uint8 -> {output name: B x ... float32}."""
        images = np.asarray(crops, np.float32) / 255.0
        return dict(zip(self._names, self._session.run(self._names, {self._input.name: images})))


def export_onnx(model, out, crops: np.ndarray, opset: int = OPSET) -> str:
    """Writes the verified ONNX model of `model` (a `build_model` Keras model) to `out`.

    Args:
      model: the Keras model (either graph formulation; converted with gather).
      out: output .onnx path; replaced only when the new export passes.
      crops: B x S x S x 3 uint8 crops to compare on.
      opset: ONNX opset.

    Returns:
      The parity report.

    Raises:
      common.ExportError: onnxruntime cannot load the result, or it differs from the Keras
        model beyond the fp32 bounds.
    """
    from handshape_tf.inference.backends import KerasBackend

    twin = common.export_twin(model)
    reference = KerasBackend(model).run(crops)
    return common.export_verified(
        out,
        write=lambda path: convert(twin, path, opset),
        open_backend=OnnxBackend,
        reference=reference,
        crops=crops,
        tolerance=parity.TOLERANCES["fp32"],
        label=f"ONNX opset {opset} {Path(out).name}",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m export.onnx", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common.add_common_arguments(parser)
    parser.add_argument("--opset", type=int, default=OPSET)
    args = parser.parse_args(argv)

    def run() -> str:
        common.check_file_output(args.out)
        model = common.load_model(args.model)
        crops = common.sample_crops(common.image_size(model), args.data, args.verify_count)
        report = export_onnx(model, args.out, crops, args.opset)
        return f"{report}\nwrote {os.fspath(args.out)} ({Path(args.out).stat().st_size / 1e6:.2f} MB)"

    return common.run_cli(run, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
