"""Hands through a synthetic video: tracking against detecting every frame, and the clip itself.

    python -m handshape_tf.evaluation.clip                      # the shipped model and detector
    python -m handshape_tf.evaluation.clip --detector runs/detector/detector.tflite
    python -m handshape_tf.evaluation.clip --detector D.tflite --model M.tflite --frames 120 --out runs/clip

Shape shorthand: J = 21 keypoints, n hands in a frame.

The clip (`FrameComposer.clip`): two hands (a right and a left one) crossing a background photo
of the photo bank's test part, each changing pose twice, at `--width` x `--height`; the hands
are rendered for it (6 of them, seed `--seeds`; several seeds make several clips, and the
summary pools their hands). The mesh model (default: the shipped one) and the detector run
through `HandTracker` twice: tracking as the demo does (the detector every `--redetect-every`
frames or when a hand is lost) and with the detector on every frame, the baseline tracking must
not be worse than. Both smooth joints with the tracker's One Euro filter (`--no-filter`: raw).

Per frame, each labelled hand is matched to the predicted hand whose 2D joints' centre lies
closest to its box's centre (within half the box's larger side, each prediction used once).
Reported per run: the frames on which the detector ran, hands found / missed, the 2D joint
error of the found hands (mean over joints of the pixel distance, divided by the hand's box's
larger side: "joint error, % of hand size"), the jitter (mean over joints of the second
difference over three consecutive frames of the error vector, prediction minus truth, in % of
hand size: 0 for an error that is constant or changes steadily; what smoothing removes), and
the side accuracy of the found hands. Writes report.json, clip.gif (every `--gif-every`-th
overlay of the first clip's tracked run, at its real speed for a 30 frames/s clip) and
strip.png (every `--strip-every`-th overlay side by side) into --out.

Exit status: 0 done, 2 a missing model or detector or bad arguments.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from handshape_tf.assets import SHIPPED_DETECTOR, SHIPPED_MODEL, SHIPPED_SIDE
from handshape_tf.cli import EXIT_BAD_INPUT, add_verbose_argument, print_error, setup_logging

logger = logging.getLogger("handshape_tf.evaluation.clip")


def match_hands(hands, boxes: np.ndarray) -> list[tuple[int, int]]:
    """(hand index, label index) pairs: each labelled box (n x 4 x0, y0, w, h) to the unused hand
    (`TrackedHand`) whose joints' centre is closest to the box's centre, within half its larger side."""
    pairs, used = [], set()
    for label, box in enumerate(np.asarray(boxes, np.float64).reshape(-1, 4)):
        centre = box[:2] + box[2:] / 2
        distances = [
            np.inf if k in used else float(np.linalg.norm(hand.prediction.joints_uv.mean(axis=0) - centre))
            for k, hand in enumerate(hands)
        ]
        if distances and min(distances) <= box[2:].max() / 2:
            best = int(np.argmin(distances))
            used.add(best)
            pairs.append((best, label))
    return pairs


def track_clip(tracker, clips: list[list[dict[str, Any]]], overlays: bool = False) -> dict[str, Any]:
    """Runs `tracker` over each clip (a list of frames; the tracker is reset per clip); the
    summary of the module docstring over all their hands, plus the joint error of each clip
    ("joint_error_per_clip") and, when asked, "overlays": RGB frames of the first clip with the
    hands drawn."""
    from handshape_tf.inference.overlay import draw_hands

    errors, jitters, sides, missed, drawn, per_clip, runs = [], [], [], 0, [], [], 0
    for clip_index, frames in enumerate(clips):
        tracker.reset()
        clip_errors = []
        history: dict[int, list] = {}  # label -> its error vectors (J x 2, % of hand size; None: missed)
        for frame in frames:
            hands = tracker.update(frame["image"])
            found = {label: hand_index for hand_index, label in match_hands(hands, frame["boxes"])}
            missed += len(frame["boxes"]) - len(found)
            for label in range(len(frame["boxes"])):
                recent = history.setdefault(label, [])
                if label not in found:
                    recent.append(None)
                    continue
                hand = hands[found[label]]
                size = float(frame["boxes"][label][2:].max())
                offset = 100.0 * (hand.prediction.joints_uv - frame["joints_uv"][label]) / size
                recent.append(offset)
                clip_errors.append(float(np.linalg.norm(offset, axis=-1).mean()))
                sides.append(hand.is_left == bool(frame["is_left"][label]))
                if len(recent) >= 3 and recent[-2] is not None and recent[-3] is not None:
                    jitters.append(float(np.linalg.norm(recent[-1] - 2 * recent[-2] + recent[-3], axis=-1).mean()))
            if overlays and clip_index == 0:
                drawn.append(draw_hands(frame["image"], hands))
        runs += tracker.detector_runs
        errors += clip_errors
        per_clip.append(float(np.mean(clip_errors)) if clip_errors else None)
    frame_count = sum(len(frames) for frames in clips)
    labelled = sum(len(frame["boxes"]) for frames in clips for frame in frames)
    summary = {
        "frames": frame_count,
        "detector_runs": runs,
        "detector_fraction": runs / max(frame_count, 1),
        "hands_labelled": labelled,
        "hands_found": len(errors),
        "hands_missed": missed,
        "joint_error_percent_of_hand": float(np.mean(errors)) if errors else None,
        "joint_error_per_clip": per_clip,
        "jitter_percent_of_hand": float(np.mean(jitters)) if jitters else None,
        "side_accuracy": float(np.mean(sides)) if sides else None,
    }
    if overlays:
        summary["overlays"] = drawn
    return summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m handshape_tf.evaluation.clip",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument(
        "--detector", type=Path, default=SHIPPED_DETECTOR, help="hand detector (.tflite or .keras; default: shipped)"
    )
    parser.add_argument(
        "--side-model", type=Path, default=SHIPPED_SIDE, help="side classifier (.tflite or .keras; default: shipped)"
    )
    parser.add_argument("--model", type=Path, default=SHIPPED_MODEL, help="mesh model (default: the shipped one)")
    parser.add_argument("--out", type=Path, default=Path("runs") / "clip", help="report folder (runs/clip)")
    parser.add_argument("--frames", type=int, default=90, help="clip length (default 90)")
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0], help="one clip per seed, hands pooled in the summary (default 0)"
    )
    parser.add_argument("--redetect-every", type=int, default=10, help="the tracker's detector period (default 10)")
    parser.add_argument("--no-filter", action="store_true", help="no One Euro smoothing of the joints (both runs)")
    parser.add_argument("--strip-every", type=int, default=15, help="frames between strip.png's tiles (default 15)")
    parser.add_argument("--gif-every", type=int, default=2, help="frames between clip.gif's frames (default 2)")
    add_verbose_argument(parser)
    return parser


def make_clip(width: int, height: int, num_frames: int, seed: int) -> list[dict[str, Any]]:
    """The module docstring's clip, its hands rendered at 128 px (about a second)."""
    from handshape_tf.data.backgrounds import BackgroundSource
    from handshape_tf.data.domains import get_domain
    from handshape_tf.data.full_frames import FrameComposer, FrameConfig, render_hand_pool
    from handshape_tf.data.photo_bank import ensure_bank
    from handshape_tf.data.renderer import HandRenderer

    bank = ensure_bank() / "test"
    photo = get_domain("photo")
    pool = render_hand_pool(HandRenderer(128, BackgroundSource(bank), photo), seed, 6, "frontal")
    composer = FrameComposer(pool, BackgroundSource(bank), photo, FrameConfig(width=width, height=height))
    return composer.clip(seed, num_frames, num_hands=2, poses_per_hand=3)


def write_gif(frames: list[np.ndarray], path: Path, fps: float = 15.0) -> Path:
    """An animated GIF of RGB frames (through a temporary file and a rename)."""
    from PIL import Image

    images = [Image.fromarray(frame) for frame in frames]
    tmp = path.with_name(f".{path.name}.tmp")
    images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    tmp.replace(path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("frames", "width", "height", "redetect_every", "strip_every", "gif_every"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} is {getattr(args, name)}; expected >= 1")
    setup_logging(args.verbose)
    import cv2

    from handshape_tf.inference import load_predictor
    from handshape_tf.inference.detection import HandDetector
    from handshape_tf.inference.tracking import HandTracker

    try:
        predictor = load_predictor(args.model, batch_size=2)
        detector = HandDetector(args.detector, side=args.side_model)
    except (FileNotFoundError, ValueError) as error:
        print_error(error)
        return EXIT_BAD_INPUT
    clips = [make_clip(args.width, args.height, args.frames, seed) for seed in args.seeds]
    smoothing = {"filter_joints": not args.no_filter}
    runs = {
        "tracking": HandTracker(predictor, detector, redetect_every=args.redetect_every, **smoothing),
        "every_frame": HandTracker(predictor, detector, always_detect=True, **smoothing),
    }
    report: dict[str, Any] = {
        "model": str(args.model),
        "detector": str(args.detector),
        "clip": {"frames": args.frames, "width": args.width, "height": args.height, "seeds": args.seeds},
        "filter_joints": not args.no_filter,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    for name, tracker in runs.items():
        summary = track_clip(tracker, clips, overlays=name == "tracking")
        overlays = summary.pop("overlays", None)
        report[name] = summary
        print(
            f"{name}: detector on {summary['detector_runs']} of {summary['frames']} frames, "
            f"{summary['hands_found']} of {summary['hands_labelled']} hands found, joint error "
            f"{_percent(summary['joint_error_percent_of_hand'])} of hand size, jitter "
            f"{_percent(summary['jitter_percent_of_hand'])}, side accuracy {_percent(summary['side_accuracy'], 100)}"
        )
        if overlays:
            write_gif(overlays[:: args.gif_every], args.out / "clip.gif", fps=30.0 / args.gif_every)
            strip = np.hstack(overlays[:: args.strip_every])
            cv2.imwrite(str(args.out / "strip.png"), strip[..., ::-1])
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    logger.info("wrote %s, clip.gif and strip.png", args.out / "report.json")
    return 0


def _percent(value, factor: float = 1.0) -> str:
    return "-" if value is None else f"{factor * value:.1f}%"


if __name__ == "__main__":
    sys.exit(main())
