"""Estimates 3D hand pose and shape on image files and writes JSON, OBJ meshes and overlays.

    python -m handshape_tf.predict hand.png --out results      # the shipped model
    python -m handshape_tf.predict hand.png --model exported/handshape.tflite --out results
    python -m handshape_tf.predict frame.jpg --model model.keras --box 210,80,260,260 \\
        --intrinsics 607.9,607.9,314.8,236.4 --root-depth 480 --scale 28 --json

An IMAGE may be a folder: its image files (by extension, not recursive) are used in name
order. For each image it writes into --out: <name>.json (box, joints and vertices in image pixels,
uvd and 3D, confidences), <name>.obj (the mesh in 3D: camera frame in mm with --intrinsics,
--root-depth and --scale, the paper's protocol; otherwise root-relative in units of the hand
scale s) and <name>_overlay.png (mesh wireframe and skeleton). <name> is the image's file name
without extension (prefixed with its position when two images share a name). --json also
prints one JSON list with all results to stdout. --box applies to every image; without it the
crop is the square centred on the image with side max(H, W) (for images that are hand crops).
--left marks every image as a left hand.

With --detector [FILE] (the shipped hand detector, or one from `python -m train.detector`) and no
--box, each image is a full photo: up to --max-hands hands are found anywhere in it, left hands mirrored into the
network and back, and <name>.json holds {"image", "files", "hands": [per hand: box, handedness,
left_probability, score, confidence, hand (as above)]} ("hands": [] when none is found, with
an overlay that is the unchanged photo), one <name>_hand<k>.obj per hand, and the overlay shows
every hand's box, side, mesh and joints.

Exit status: 0 on success; 2 for bad arguments, a model path that is missing, corrupt or of an
unknown format, an --out that is a file or cannot be written (all checked before the model
runs), or input files that are not images: those are skipped with a message naming each, the
others are still processed, and the exit status is 2 at the end.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

from handshape_tf.assets import SHIPPED_MODEL
from handshape_tf.cli import add_detector_arguments, add_verbose_argument, setup_logging
from handshape_tf.data.crop import read_image

logger = logging.getLogger("handshape_tf.predict")

EXIT_USAGE = 2
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".jp2")


def _numbers(count: int, what: str):
    def parse(text: str) -> list[float]:
        try:
            values = [float(part) for part in text.split(",")]
        except ValueError:
            values = []
        if len(values) != count or not all(np.isfinite(values)):
            raise argparse.ArgumentTypeError(f"{text!r} is not {count} comma-separated finite numbers ({what})")
        return values

    return parse


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (np.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number > 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m handshape_tf.predict", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "images", nargs="+", type=Path, metavar="IMAGE", help="image files (PNG, JPEG, ...) or folders of them"
    )
    parser.add_argument(
        "--model",
        type=Path,
        default=SHIPPED_MODEL,
        help=".keras file, SavedModel directory or .tflite file (default: the shipped model, "
        "handshape_tf/assets/MODEL_CARD.md)",
    )
    parser.add_argument("--out", type=Path, default=Path("predictions"), help="output directory (default: predictions)")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON to stdout")
    parser.add_argument("--box", type=_numbers(4, "x0,y0,w,h"), metavar="x0,y0,w,h", help="hand box in image pixels")
    parser.add_argument(
        "--intrinsics", type=_numbers(4, "fx,fy,cx,cy"), metavar="fx,fy,cx,cy", help="camera intrinsics, pixels"
    )
    parser.add_argument("--root-depth", type=_positive, metavar="MM", help="depth of the wrist, mm")
    parser.add_argument("--scale", type=_positive, metavar="MM", help="hand scale s (middle finger MCP-PIP length), mm")
    parser.add_argument("--left", action="store_true", help="the images show left hands")
    add_detector_arguments(parser, "find hands in full photos (see above; --box overrides it)")
    parser.add_argument("--batch-size", type=int, default=8, help="crops per model call (default: 8)")
    parser.add_argument("--threads", type=int, default=None, help="interpreter threads for .tflite models")
    add_verbose_argument(parser)
    return parser


def output_names(paths: list[Path]) -> list[str]:
    """File-name stems, prefixed with their position where two images share a stem."""
    counts = Counter(path.stem for path in paths)
    return [path.stem if counts[path.stem] == 1 else f"{index:03d}_{path.stem}" for index, path in enumerate(paths)]


def expand_folders(paths: list[Path]) -> list[Path]:
    """`paths` with each folder replaced by its image files (IMAGE_SUFFIXES), sorted by name.

    Raises:
      ValueError: a folder that holds no image file.
    """
    expanded = []
    for path in paths:
        if not path.is_dir():
            expanded.append(path)
            continue
        files = sorted(child for child in path.iterdir() if child.is_file() and child.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"{path} is a folder without image files ({', '.join(IMAGE_SUFFIXES)})")
        expanded.extend(files)
    return expanded


def check_output_folder(out: Path) -> None:
    """Checks that `out` can be created (it is not, so a failed run leaves nothing behind) or, if
    it exists, written into.

    Raises:
      OSError: `out` is a file, or the folder cannot be created or written (the message says which).
    """
    if out.exists() and not out.is_dir():
        raise OSError(f"--out {out} is a file; expected a folder for the results")
    existing = next(parent for parent in [out, *out.absolute().parents] if parent.exists())
    try:
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise OSError(f"cannot write into --out {out}: {error.strerror or error}") from None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    camera = [args.intrinsics, args.root_depth, args.scale]
    if any(value is not None for value in camera) and not all(value is not None for value in camera):
        parser.error("--intrinsics, --root-depth and --scale must be given together")
    if args.batch_size < 1:
        parser.error(f"--batch-size is {args.batch_size}; expected >= 1")
    if args.max_hands < 1:
        parser.error(f"--max-hands is {args.max_hands}; expected >= 1")
    use_detector = args.detector is not None and args.box is None
    if use_detector and (args.left or args.intrinsics is not None):
        parser.error(
            "--left and --intrinsics/--root-depth/--scale apply to given crops: use them with --box, not --detector"
        )
    setup_logging(args.verbose)

    try:
        paths = expand_folders(args.images)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    images, readable = [], []
    for path in paths:
        try:
            images.append(read_image(path))
            readable.append(path)
        except (FileNotFoundError, ValueError) as error:
            print(f"error: skipping {error}", file=sys.stderr)
    skipped = len(paths) - len(readable)
    if not images:
        print(f"error: none of the {len(paths)} inputs is a readable image", file=sys.stderr)
        return EXIT_USAGE
    try:
        check_output_folder(args.out)
    except OSError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE

    from handshape_tf.inference import draw_overlay, load_predictor, mesh_faces, save_obj
    from handshape_tf.inference.detection import HandDetector
    from handshape_tf.inference.overlay import draw_hands
    from handshape_tf.inference.tracking import detect_hands

    try:
        predictor = load_predictor(args.model, batch_size=args.batch_size, num_threads=args.threads)
        detector = HandDetector(args.detector, num_threads=args.threads, side=args.side_model) if use_detector else None
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    if detector is not None:
        hands_per_image = [detect_hands(predictor, detector, image, max_hands=args.max_hands) for image in images]
    else:
        try:
            predictions = predictor.predict(
                images,
                boxes=args.box,
                intrinsics=args.intrinsics,
                root_depth=args.root_depth,
                scale=args.scale,
                is_left=args.left,
            )
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return EXIT_USAGE

    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for index, (path, name, image) in enumerate(zip(readable, output_names(readable), images, strict=True)):
        files = {"json": args.out / f"{name}.json", "overlay": args.out / f"{name}_overlay.png"}
        if detector is not None:
            hands = hands_per_image[index]
            meshes = {f"obj_hand{k}": args.out / f"{name}_hand{k}.obj" for k in range(len(hands))}
            for hand, mesh_path in zip(hands, meshes.values()):
                save_obj(mesh_path, hand.prediction.vertices_xyz, mesh_faces(hand.is_left))
            files.update(meshes)
            content = {"hands": [hand.to_dict() for hand in hands]}
            overlay = draw_hands(image, hands)
        else:
            prediction = predictions[index]
            files["obj"] = args.out / f"{name}.obj"
            save_obj(files["obj"], prediction.vertices_xyz, mesh_faces(prediction.is_left))
            content = prediction.to_dict()
            overlay = draw_overlay(image, prediction)
        result = {"image": str(path), "files": {key: str(value) for key, value in files.items()}, **content}
        files["json"].write_text(json.dumps(result) + "\n", encoding="utf-8")
        if not cv2.imwrite(str(files["overlay"]), cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write {files['overlay']}")
        logger.info("%s -> %s.json, %s", path, args.out / name, files["overlay"].name)
        results.append(result)
    if args.json:
        json.dump(results, sys.stdout)
        sys.stdout.write("\n")
    if skipped:
        print(f"error: {skipped} of {len(paths)} inputs could not be read (see above)", file=sys.stderr)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())
