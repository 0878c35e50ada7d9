"""SavedModel export for TF Serving and `handshape_tf.serve`, verified against Keras.

    python -m export.saved_model --model runs/cpu/model.keras --out exported/handshape/1
    saved_model_cli show --dir exported/handshape/1 --all
    python -m export.saved_model --model runs/cpu2/model.keras --out exported/handshape  # -> 2/

--out: a new or empty directory is written as is; an existing TF Serving base folder
(numbered version subdirectories) gets the next version, which TF Serving and
`handshape_tf.serve` then serve. Anything else that exists (a file, a SavedModel, a folder of
other files) is refused: the export never deletes data.

Signatures (`handshape_tf.inference.signature`): serving_default takes `images`, B x S x S x 3
uint8 RGB crops (0..255), and returns heatmaps (B x S/4 x S/4 x 21, last stack), mesh_uvd
(B x 1159 x 3), pose_uvd (B x 21 x 3) and joints_uv (B x 21 x 2 crop pixels), all float32;
predict_encoded takes PNG/JPEG bytes. Graph convolutions use the gather formulation.
The directory is written beside `--out`, loaded with `tf.saved_model.load`, compared with the
Keras model (fp32 bounds of `export.parity`) and only then renamed to `--out`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from export import common, parity


def export_saved_model(model, out, crops) -> str:
    """Writes the verified SavedModel of `model` (a `build_model` Keras model) to `out`.

    Args:
      model: the Keras model (either graph formulation; exported with gather).
      out: output directory; replaced only when the new export passes.
      crops: B x S x S x 3 uint8 crops to compare on.

    Returns:
      The parity report.

    Raises:
      common.ExportError: the export differs from the Keras model beyond the fp32 bounds.
    """
    from handshape_tf.inference.backends import KerasBackend, SavedModelBackend
    from handshape_tf.inference.signature import save_serving_model

    twin = common.export_twin(model)
    reference = KerasBackend(model).run(crops)
    return common.export_verified(
        out,
        write=lambda path: save_serving_model(twin, path),
        open_backend=SavedModelBackend,
        reference=reference,
        crops=crops,
        tolerance=parity.TOLERANCES["fp32"],
        label=f"SavedModel {Path(out).name}",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m export.saved_model", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common.add_common_arguments(parser)
    args = parser.parse_args(argv)

    def run() -> str:
        out = common.saved_model_output(args.out)
        model = common.load_model(args.model)
        crops = common.sample_crops(common.image_size(model), args.data, args.verify_count)
        report = export_saved_model(model, out, crops)
        return f"{report}\nwrote {os.fspath(out)}"

    return common.run_cli(run, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
