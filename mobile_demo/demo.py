"""On-device demo: a TFLite hand model in the LiteRT interpreter, mesh and skeleton drawn live.

    python -m mobile_demo                                  # assets/example.png, the shipped model
    python -m mobile_demo --images hand1.jpg hand2.png --out overlays/
    python -m mobile_demo --video clip.mp4 --threads 2
    python -m mobile_demo --camera 0 --max-frames 300
    python -m mobile_demo --benchmark                      # per-stage latency on the first frame
    python -m mobile_demo --video clip.mp4 --detector --max-hands 2   # the shipped detector

Runs on numpy, OpenCV and ai_edge_litert only: TensorFlow is never imported (as on a phone).
Per frame: the crop box (`--box`, default the centred square of side max(H, W) of the frame,
so the hand should fill the middle of the picture) is cut and resized to the model's input,
the model runs, and its mesh (wireframe), 21-joint skeleton, crop box and frame rate are drawn
over the frame (`handshape_tf.inference`: `HandPredictor` with its `TFLiteBackend`, and
`draw_overlay`). With `--detector` (the shipped detector, or a .tflite from `python -m
train.detector --tflite`) the frame is a full picture instead: up to `--max-hands` hands are
found anywhere, each with its side (left hands mirrored through the model), and in a video or
camera stream they are tracked (`handshape_tf.inference.tracking.HandTracker`: the next crop
from the previous joints, the detector again only every `--redetect-every` frames or when a
hand is lost, One Euro smoothing); the log says on how many frames the detector ran. Outputs go to `--out`:
<image>_overlay.png per image, <video>_overlay.mp4 for a video or camera.

The shipped model is the package's (`handshape_tf/assets/model.tflite`, made from a trained
.keras model by `python -m mobile_demo.make_assets`, see its MODEL_CARD.md); the example
(`mobile_demo/assets/example.png`) is a rendered hand (a synthetic sample whose ground-truth
joints are in example.json), not a photograph. Any TFLite export of
`python -m export.tflite` (float32, fp16 or int8) works with --model.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from handshape_tf.assets import SHIPPED_MODEL
from handshape_tf.cli import add_detector_arguments, add_verbose_argument, setup_logging

logger = logging.getLogger(__name__)

ASSETS = Path(__file__).with_name("assets")
DEFAULT_MODEL = SHIPPED_MODEL
DEFAULT_IMAGE = ASSETS / "example.png"
DEFAULT_OUT = Path("runs") / "mobile_demo"
# Weight of the newest frame in the smoothed frame rate of a video.
_FPS_SMOOTHING = 0.1


class MissingAssetError(FileNotFoundError):
    """A model or image the demo needs is not there; the message says how to make it."""


class _Stopwatch:
    """The seconds spent in `_timed` calls since the last `take_seconds`."""

    seconds = 0.0

    def _timed(self, function, *args, **kwargs):
        start = time.perf_counter()
        result = function(*args, **kwargs)
        self.seconds += time.perf_counter() - start
        return result

    def take_seconds(self) -> float:
        seconds, self.seconds = self.seconds, 0.0
        return seconds


class TimedDetector(_Stopwatch):
    """Wraps a `HandDetector`, timing its calls."""

    def __init__(self, detector):
        self.detector = detector
        self.description = detector.description

    def detect(self, frame, max_hands: int):
        return self._timed(self.detector.detect, frame, max_hands=max_hands)


class TimedBackend(_Stopwatch):
    """Wraps a backend (`run(crops)`), timing its calls."""

    def __init__(self, backend):
        self.backend = backend
        self.image_size = backend.image_size
        self.description = backend.description

    def run(self, crops):
        return self._timed(self.backend.run, crops)


def check_model(path: Path) -> Path:
    """`path` if it exists; otherwise MissingAssetError saying how to create the model."""
    if path.is_file():
        return path
    if path == DEFAULT_MODEL:
        raise MissingAssetError(
            f"no demo model at {path}. Create it from a trained .keras model (from `python -m train.synthetic`): "
            f"`python -m mobile_demo.make_assets --model path/to/model.keras`, or pass --model F.tflite "
            f"(made by `python -m export.tflite`)"
        )
    raise MissingAssetError(f"model {path} does not exist; expected a .tflite file from `python -m export.tflite`")


def check_detector(path: Path, what: str = "detector") -> Path:
    """`path` if it exists; otherwise MissingAssetError saying how to make a detector or side classifier."""
    if path.is_file():
        return path
    command = "train.side" if what == "side classifier" else "train.detector"
    raise MissingAssetError(f"{what} {path} does not exist; make one with `python -m {command} --tflite`")


def check_images(paths: list[Path]) -> list[Path]:
    """`paths` if they all exist; otherwise MissingAssetError naming the missing ones."""
    missing = [path for path in paths if not path.is_file()]
    if missing == [DEFAULT_IMAGE]:
        raise MissingAssetError(
            f"no example image at {DEFAULT_IMAGE}. Pass --images PHOTO (a photo whose centre shows a right hand), "
            f"or add one with `python -m mobile_demo.make_assets --example PHOTO`"
        )
    if missing:
        raise MissingAssetError(f"images not found: {', '.join(str(p) for p in missing)}")
    return paths


class Demo:
    """The per-frame pipeline: predict, draw the overlay and the frame rate.

    Args:
      model: .tflite path.
      threads: LiteRT interpreter threads (None: LiteRT's default).
      box: (x0, y0, w, h) crop box in frame pixels, or None for the centred square.
      left: the hand is a left hand (mirrored through the right-hand model).
      detector: a detector .tflite: find and track hands in full frames (box and left unused).
      side_model: with a detector, the side classifier .tflite that names each hand left or right.
      max_hands, redetect_every: as `HandTracker`.
      smooth_joints: with a detector, smooth each hand's joints and mesh over frames (One Euro).
    """

    def __init__(
        self,
        model: Path,
        threads: int | None = None,
        box=None,
        left: bool = False,
        detector: Path | None = None,
        side_model: Path | None = None,
        max_hands: int = 2,
        redetect_every: int = 10,
        smooth_joints: bool = True,
    ):
        from handshape_tf.inference import HandPredictor, TFLiteBackend
        from handshape_tf.inference.detection import HandDetector
        from handshape_tf.inference.tracking import HandTracker

        self.backend = TimedBackend(TFLiteBackend(check_model(Path(model)), num_threads=threads))
        self.predictor = HandPredictor(self.backend, batch_size=1)
        self.threads = threads
        self.box = box
        self.left = left
        self.tracker = None
        if detector is not None:
            self.tracker = HandTracker(
                self.predictor,
                TimedDetector(
                    HandDetector(
                        check_detector(Path(detector)),
                        num_threads=threads,
                        side=None if side_model is None else check_detector(Path(side_model), "side classifier"),
                    )
                ),
                max_hands=max_hands,
                redetect_every=redetect_every,
                filter_joints=smooth_joints,
            )
        self.fps: float | None = None
        # Warm-up on a blank frame: the first pass allocates the interpreter's tensors, packs the
        # weights for XNNPACK and loads the mesh template, several times slower than the next.
        size = self.backend.image_size
        self.process(np.zeros((size, size, 3), np.uint8))
        self.fps = None
        self.new_stream()

    def new_stream(self) -> None:
        """Forgets tracked hands (before a new video, or between unrelated images)."""
        if self.tracker is not None:
            self.tracker.reset()

    def process(self, frame: np.ndarray, smooth: bool = False) -> tuple[np.ndarray, dict[str, float]]:
        """H x W x 3 uint8 BGR frame -> (annotated BGR frame, seconds per stage).

        Stages: "inference" (LiteRT, the mesh model: every hand's crop), "pre_post" (crop, resize,
        uv -> pixels, 3D lift, tracking), "detector" (with a detector: 0 on frames where the
        tracker did not run it), "draw" (overlay), "total". With `smooth`, the displayed frame rate is a
        running average over frames (video); otherwise that of this frame.
        """
        from handshape_tf.inference import draw_overlay
        from handshape_tf.inference.overlay import draw_hands

        start = time.perf_counter()
        if self.tracker is not None:
            hands = self.tracker.update(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            predicted = time.perf_counter()
            canvas = cv2.cvtColor(draw_hands(frame, hands, channel_order="bgr"), cv2.COLOR_RGB2BGR)
        else:
            hand = self.predictor.predict(frame, boxes=self.box, is_left=self.left, channel_order="bgr")
            predicted = time.perf_counter()
            canvas = cv2.cvtColor(draw_overlay(frame, hand, channel_order="bgr"), cv2.COLOR_RGB2BGR)
        drawn = time.perf_counter()
        total = drawn - start
        fps = 1.0 / max(total, 1e-9)
        self.fps = fps if self.fps is None or not smooth else (1 - _FPS_SMOOTHING) * self.fps + _FPS_SMOOTHING * fps
        self._draw_rate(canvas, total)
        inference = self.backend.take_seconds()
        detection = self.tracker.detector.take_seconds() if self.tracker is not None else 0.0
        return canvas, {
            "detector": detection,
            "inference": inference,
            "pre_post": predicted - start - inference - detection,
            "draw": drawn - predicted,
            "total": total,
        }

    def _draw_rate(self, canvas: np.ndarray, seconds: float) -> None:
        threads = "" if self.threads is None else f" x{self.threads}"
        text = f"{self.fps:.1f} FPS  {1e3 * seconds:.1f} ms  LiteRT{threads}"
        scale = max(0.4, max(canvas.shape[:2]) / 800)  # font scale: 0.4 up to 320 px, 0.8 at 640 px ...
        origin = (int(10 * scale) + 2, int(30 * scale) + 4)
        thickness = max(1, int(round(2 * scale)))
        for colour, width in (((0, 0, 0), thickness + 2), ((255, 255, 255), thickness)):
            cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, width, cv2.LINE_AA)


def read_image(path: Path) -> np.ndarray:
    """H x W x 3 uint8 BGR image from a file."""
    frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if frame is None:
        raise ValueError(f"{path} is not an image OpenCV can decode")
    return frame


def run_images(demo: Demo, paths: list[Path], out: Path) -> list[Path]:
    """Annotates each image; returns the written PNG paths (an undecodable image is skipped and logged)."""
    written = []
    for path in paths:
        try:
            frame = read_image(path)
        except ValueError as error:
            logger.error("mobile_demo: skipping %s", error)
            continue
        demo.new_stream()  # unrelated images: nothing to track
        canvas, seconds = demo.process(frame)
        target = out / f"{path.stem}_overlay.png"
        if not cv2.imwrite(str(target), canvas):
            raise OSError(f"could not write {target}")
        logger.info("%s -> %s (%.1f ms)", path, target, 1e3 * seconds["total"])
        written.append(target)
    return written


def run_stream(demo: Demo, capture: cv2.VideoCapture, target: Path, max_frames: int | None) -> int:
    """Annotates frames of a video or camera into an .mp4; returns the number of frames."""
    rate = capture.get(cv2.CAP_PROP_FPS)
    writer = None
    count = 0
    demo.new_stream()
    try:
        while max_frames is None or count < max_frames:
            ok, frame = capture.read()
            if not ok:
                break
            canvas, _ = demo.process(frame, smooth=True)
            if writer is None:
                height, width = canvas.shape[:2]
                writer = cv2.VideoWriter(
                    str(target), cv2.VideoWriter_fourcc(*"mp4v"), rate if rate > 0 else 30.0, (width, height)
                )
                if not writer.isOpened():
                    raise OSError(f"OpenCV cannot write the video {target}")
            writer.write(canvas)
            count += 1
    finally:
        capture.release()
        if writer is not None:
            writer.release()
    logger.info("%d frames -> %s (%.1f FPS at the end)", count, target, demo.fps or 0.0)
    if demo.tracker is not None:
        logger.info("the detector ran on %d of %d frames", demo.tracker.detector_runs, demo.tracker.frames)
    return count


def benchmark(demo: Demo, frame: np.ndarray, runs: int) -> str:
    """Median / p90 milliseconds per stage over `runs` passes on one frame (after one warm-up).

    With a detector, every pass runs it (the worst case of tracking, as on a frame where a hand
    was lost) and its own time is a stage ("detector", part of "pre_post").
    """
    stages = ["pre_post", "inference", "draw", "total"]
    if demo.tracker is not None:
        demo.tracker.always_detect = True
        stages.insert(0, "detector")
    demo.process(frame)
    records = [demo.process(frame)[1] for _ in range(runs)]
    description = demo.backend.description
    if demo.tracker is not None:
        demo.tracker.always_detect = False
        description += f" + {demo.tracker.detector.description}, {len(demo.tracker.tracks)} hand(s) found"
    lines = [
        f"{description}, {frame.shape[1]} x {frame.shape[0]} frame, {runs} runs",
        f"{'stage':10} {'median ms':>10} {'p90 ms':>8}",
    ]
    for stage in stages:
        times = 1e3 * np.array([record[stage] for record in records])
        lines.append(f"{stage:10} {np.median(times):>10.2f} {np.percentile(times, 90):>8.2f}")
    total = np.median([record["total"] for record in records])
    lines.append(f"{1 / total:.1f} frames/s end to end")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mobile_demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="a .tflite model (default: the shipped one)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--images", type=Path, nargs="+", help="image files (default: the shipped example)")
    source.add_argument("--video", type=Path, help="a video file")
    source.add_argument("--camera", type=int, help="camera index (OpenCV VideoCapture)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the annotated outputs")
    parser.add_argument(
        "--box",
        type=float,
        nargs=4,
        metavar=("X0", "Y0", "W", "H"),
        help="hand crop box in frame pixels (default: centred square)",
    )
    parser.add_argument("--left", action="store_true", help="the hand is a left hand")
    add_detector_arguments(parser, "find and track hands in full frames")
    parser.add_argument(
        "--redetect-every", type=int, default=10, help="with --detector, detect at least every N frames (default: 10)"
    )
    parser.add_argument(
        "--no-filter", action="store_true", help="with --detector, no One Euro smoothing of the joints over frames"
    )
    parser.add_argument("--threads", type=int, default=None, help="LiteRT threads (default: LiteRT's choice)")
    parser.add_argument("--max-frames", type=int, default=None, help="stop a video/camera after this many frames")
    parser.add_argument("--benchmark", action="store_true", help="print per-stage latency on the first frame")
    parser.add_argument("--runs", type=int, default=50, help="passes of --benchmark")
    add_verbose_argument(parser)
    args = parser.parse_args(argv)
    setup_logging(args.verbose)

    problems = []
    for check, path in ((check_model, args.model), (check_detector, args.detector)):
        try:
            if path is not None:
                check(path)
        except MissingAssetError as error:
            problems.append(str(error))
    images = []
    if args.video is None and args.camera is None:
        try:
            images = check_images(args.images or [DEFAULT_IMAGE])
        except MissingAssetError as error:
            problems.append(str(error))
    elif args.video is not None and not args.video.is_file():
        problems.append(f"video {args.video} does not exist")
    if problems:
        for problem in problems:
            print(f"mobile_demo: {problem}", file=sys.stderr)
        return 2
    try:
        demo = Demo(
            args.model,
            threads=args.threads,
            box=args.box,
            left=args.left,
            detector=args.detector,
            side_model=args.side_model,
            max_hands=args.max_hands,
            redetect_every=args.redetect_every,
            smooth_joints=not args.no_filter,
        )
    except ValueError as error:  # a corrupt .tflite, or a model that does not take B x S x S x 3 images
        print(f"mobile_demo: {error}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    if args.video is not None or args.camera is not None:
        capture = cv2.VideoCapture(str(args.video) if args.video is not None else args.camera)
        if not capture.isOpened():
            print(f"mobile_demo: cannot open {args.video or f'camera {args.camera}'}", file=sys.stderr)
            return 2
        name = args.video.stem if args.video is not None else f"camera{args.camera}"
        if args.benchmark:
            ok, frame = capture.read()
            if not ok:
                print(f"mobile_demo: {name} has no frame", file=sys.stderr)
                return 2
            print(benchmark(demo, frame, args.runs))
            capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
        run_stream(demo, capture, args.out / f"{name}_overlay.mp4", args.max_frames)
        return 0
    if args.benchmark:
        try:
            print(benchmark(demo, read_image(images[0]), args.runs))
        except ValueError as error:
            print(f"mobile_demo: {error}", file=sys.stderr)
            return 2
    written = run_images(demo, images, args.out)
    if len(written) < len(images):
        print(
            f"mobile_demo: {len(images) - len(written)} of {len(images)} images could not be decoded", file=sys.stderr
        )
        return 2
    return 0
