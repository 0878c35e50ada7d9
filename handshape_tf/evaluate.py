"""Evaluates a trained model on a dataset and writes a report, a PCK plot and a prediction sheet.

    python -m handshape_tf.evaluate --model run/model.keras --data data/val [--out DIR]
        [--limit N] [--batch-size B]

--model: a .keras file, a SavedModel directory or a .tflite file; MediaPipe's
hand_landmark_full.tflite is measured as a peer on the same crops (pose only:
`handshape_tf.evaluation.peers`).
--data: one of our shard folders (metadata.json), or the root of the paper's synthetic set
(its "val" cameras are used), the paper's real-world set, RHD ("evaluation" split; a split
folder opens that split) or STB ("test" split: B1Counting + B1Random).
Predictions are converted to camera millimetres with the ground-truth root depth and hand scale
(the paper's protocol). Exit status 2 for a missing model or an unrecognised data folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from handshape_tf.cli import add_verbose_argument, setup_logging


def _format_metrics(report: dict) -> list[str]:
    metrics = report["metrics"]
    pose, aligned, mesh = metrics["pose"], metrics["pose_aligned"], metrics["mesh"]
    dataset = report["dataset"]
    name = " ".join(part for part in (dataset["kind"], dataset["split"]) if part)
    lines = [
        f"samples: {dataset['evaluated']} ({name}, {dataset['left_hands']} left hands)",
        f"pose error: mean {pose['mean_mm']:.2f} mm, median {pose['median_mm']:.2f} mm, "
        f"3D PCK AUC 20-50 mm {pose['auc_20_50']:.3f}",
        f"pose error after Procrustes alignment: mean {aligned['mean_mm']:.2f} mm, "
        f"AUC 20-50 mm {aligned['auc_20_50']:.3f}",
    ]
    joints_2d = metrics.get("joints_2d")
    if joints_2d is not None:
        lines.append(
            f"2D joint error: mean {joints_2d['mean_percent']:.2f}% of the crop, median "
            f"{joints_2d['median_percent']:.2f}%; {joints_2d['off_crop']} hands predicted off their crop"
        )
    confidence = report["confidence"]
    lines.append(
        f"confidence (mean joint heat-map peak, or a peer's hand presence): mean {confidence['mean']:.3f}, "
        f"above 0.5 for {100 * confidence['above_half']:.1f}% of the hands"
    )
    if mesh is None:
        lines.append(f"mesh error: not computed ({report['mesh_note']})")
    else:
        lines.append(f"mesh error: mean {mesh['mean_mm']:.2f} mm, after alignment {mesh['aligned_mean_mm']:.2f} mm")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m handshape_tf.evaluate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, type=Path, help=".keras file, SavedModel folder or .tflite file")
    parser.add_argument("--data", required=True, type=Path, help="shard folder or external dataset root")
    parser.add_argument("--out", type=Path, help="report folder (default: <model folder>/eval-<data folder name>)")
    parser.add_argument("--limit", type=int, help="evaluate only the first N samples")
    parser.add_argument("--batch-size", type=int, default=16, help="images per model call (default 16)")
    parser.add_argument("--sheet-size", type=int, default=16, help="samples on the prediction sheet (default 16)")
    parser.add_argument(
        "--no-mirror-left", action="store_true", help="feed left hands unmirrored (for a model trained on both hands)"
    )
    add_verbose_argument(parser)
    args = parser.parse_args(argv)
    for name in ("limit", "batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} is {value}; expected an integer >= 1")
    if args.sheet_size < 0:
        parser.error(f"--sheet-size is {args.sheet_size}; expected an integer >= 0")
    if not args.model.exists():
        parser.error(f"model not found: {args.model} (expected a .keras file, a SavedModel folder or a .tflite file)")
    setup_logging(args.verbose)

    from handshape_tf.evaluation.peers import MediaPipeLandmarkBackend, is_mediapipe_landmark_model
    from handshape_tf.evaluation.report import evaluate_model, open_evaluation_data
    from handshape_tf.inference.predictor import HandPredictor, load_predictor

    try:
        data = open_evaluation_data(args.data)
    except (FileNotFoundError, ValueError) as error:
        parser.error(f"cannot open --data {args.data}: {error}")
    try:
        if is_mediapipe_landmark_model(args.model):
            predictor = HandPredictor(MediaPipeLandmarkBackend(args.model), batch_size=args.batch_size)
        else:
            predictor = load_predictor(args.model, batch_size=args.batch_size)
    except (FileNotFoundError, ValueError) as error:
        parser.error(f"cannot load --model {args.model}: {error}")
    out = args.out or args.model.resolve().parent / f"eval-{args.data.resolve().name}"
    report = evaluate_model(
        predictor,
        data,
        out,
        limit=args.limit,
        batch_size=args.batch_size,
        mirror_left=not args.no_mirror_left,
        sheet_size=args.sheet_size,
        model_path=args.model,
    )
    for line in _format_metrics(report):
        print(line)
    print(f"report: {report['files']['report']}")
    for name in ("pck_curve", "sheet"):
        if name in report["files"]:
            print(f"{name.replace('_', ' ')}: {report['files'][name]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
