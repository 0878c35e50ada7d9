"""Makes the demo's shipped assets: model.tflite from a trained model, example.png from a photo.

    python -m mobile_demo.make_assets --model runs/cpu/model.keras                 # float32
    python -m mobile_demo.make_assets --model runs/cpu/model.keras --quantize fp16 --data data/val
    python -m mobile_demo.make_assets --example my_hand_photo.jpg

The model goes through `export.tflite` (gather graph formulation, builtin ops only, checked in
LiteRT against Keras before it replaces handshape_tf/assets/model.tflite, the shipped model that
every entry point uses by default; describe it in MODEL_CARD.md beside it). Ship only a model
trained by the project (`python -m train.synthetic`), never random weights. The example photo
is cut to its centred square and resized to at most `--example-size` pixels (the demo's default
crop is that square, so the hand should fill the middle of the photo).
This script needs TensorFlow (for the export); the demo itself does not.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import cv2

from mobile_demo.demo import DEFAULT_IMAGE, DEFAULT_MODEL


def make_model(model_path: Path, quantize: str, data, out: Path = DEFAULT_MODEL) -> str:
    """Exports a .keras model to `out` (verified, see `export.tflite`); returns the report."""
    from export import common
    from export.tflite import check_int8_data, export_tflite

    check_int8_data(quantize, data)
    model = common.load_model(model_path)
    size = common.image_size(model)
    crops = common.sample_crops(size, data, 8)
    calibration = common.sample_crops(size, data, 64, seed=1) if quantize == "int8" else None
    return export_tflite(model, out, quantize, crops, calibration)


def make_example(photo: Path, max_size: int, out: Path = DEFAULT_IMAGE) -> Path:
    """Writes the centred square of `photo`, at most max_size pixels wide, as a PNG."""
    image = cv2.imread(str(photo), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{photo} is not an image OpenCV can decode")
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = image[top : top + side, left : left + side]
    if side > max_size:
        square = cv2.resize(square, (max_size, max_size), interpolation=cv2.INTER_AREA)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), square):
        raise OSError(f"could not write {out}")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="trained .keras model -> handshape_tf/assets/model.tflite")
    parser.add_argument("--quantize", choices=("none", "fp16", "int8"), default="none")
    parser.add_argument("--data", help="crops for verification and int8 calibration (see export.tflite)")
    parser.add_argument("--example", type=Path, help="an image whose centre shows a right hand -> assets/example.png")
    parser.add_argument("--example-size", type=int, default=512)
    args = parser.parse_args(argv)
    if args.model is None and args.example is None:
        parser.error("nothing to do: give --model and/or --example")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.model is not None:
        from export.common import run_cli

        run_cli(lambda: f"{make_model(args.model, args.quantize, args.data)}\nwrote {DEFAULT_MODEL}")
    if args.example is not None:
        print(f"wrote {make_example(args.example, args.example_size)}")


if __name__ == "__main__":
    main()
