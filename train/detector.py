"""Trains the hand detector on composited full frames within a time budget, then evaluates it.

    python -m train.detector                         # 20 min, runs/detector
    python -m train.detector --budget 5 --run-dir runs/detector-try
    python -m train.detector --set batch_size=32 --set learning_rate=1e-3 --tflite

Data (`handshape_tf.data.full_frames`): hands are rendered once into pools under
<run-dir>/data (`data.pool_size` training hands over the photo bank's train part;
`data.heldout_pool_size` other hands, another seed, for held-out frames over the bank's test
part; the same number in the "unseen" domain for the unseen-domain frames), cached as .npz and
reused on resume (rendering is not part of the budget). Training frames are composited on the
fly by `workers` spawned processes (compositing, not the small network, bounds the step),
frame i of the stream from `full_frames.frame_rng(seed, i)`, so a resumed run continues the same
stream where it stopped.

Loss (CenterNet): penalty-reduced focal loss on the centre map, L1 on the centre offset and
log box size, and binary cross-entropy on handedness, the last three where a hand's Gaussian is
>= `detection.REGRESSION_LEVEL`. Adam with a linear warm-up, constant until `decay_start` of the
budget, then half a cosine down to `final_rate_fraction` of the rate at the budget's end.

Run folder: config.yaml (resolved config; a resume must keep model, seed, data and batch
size), checkpoints/ (model, optimizer, step; atomic, every `checkpoint_minutes` and at the
end), history.jsonl, detector.keras (atomic), report.json (held-out AP@0.5, handedness
accuracy, precision/recall at the default threshold, per domain), detections.png (a sheet of
held-out frames with the detections), detector.tflite with --tflite (builtin ops only,
checked against Keras on the held-out frames).

Exit codes: 0 done, 2 bad input (config, run folder), 130 stopped by Ctrl-C or SIGTERM (after a
checkpoint: the same command resumes).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import itertools
import logging
import math
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from handshape_tf.cli import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    add_overrides_argument,
    add_verbose_argument,
    print_error,
    setup_logging,
)
from handshape_tf.config_utils import ConfigError, command_line_updates, merge
from handshape_tf.models.detector import DetectorConfig
from train.interrupts import TrainingInterrupted

logger = logging.getLogger("train.detector")

MODEL_FILE = "detector.keras"
TFLITE_FILE = "detector.tflite"
# Detections kept per frame for AP (all scores down to this, so the PR curve is complete).
_AP_SCORE_THRESHOLD = 0.05


@dataclasses.dataclass(frozen=True)
class DetectorData:
    """Pools and frames (module docstring)."""

    pool_size: int = 1200
    heldout_pool_size: int = 200
    heldout_frames: int = 300
    crop_size: int = 128
    views: str = "full"


@dataclasses.dataclass(frozen=True)
class DetectorTrainConfig:
    """Everything `train.detector` needs; `--set key=value` overrides any field. `workers`
    processes composite the training frames (0: a thread of the training process); unlike
    model, data, seed and batch size it may change when a run resumes."""

    model: DetectorConfig = DetectorConfig()
    data: DetectorData = DetectorData()
    seed: int = 0
    batch_size: int = 16
    learning_rate: float = 2e-3
    warmup_steps: int = 100
    decay_start: float = 0.7
    final_rate_fraction: float = 0.05
    budget_minutes: float = 20.0
    checkpoint_minutes: float = 2.0
    log_every: int = 25
    loss_size: float = 1.0
    loss_offset: float = 1.0
    loss_left: float = 1.0
    workers: int = 2

    def __post_init__(self):
        if self.workers < 0:
            raise ValueError(f"workers is {self.workers!r}; expected 0 (a thread) or more processes")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m train.detector",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument("--budget", type=float, metavar="MINUTES", help="training budget (config budget_minutes)")
    parser.add_argument("--run-dir", type=Path, default=Path("runs") / "detector", help="run folder (runs/detector)")
    add_overrides_argument(parser, "override config values, e.g. --set batch_size=32 data.pool_size=2000")
    parser.add_argument("--tflite", action="store_true", help="also export detector.tflite (builtin ops, checked)")
    parser.add_argument("--no-progress", action="store_true", help="log less often")
    add_verbose_argument(parser)
    return parser


# ---------------------------------------------------------------------------------------------
# Data.


def hand_pool(path: Path, size: int, seed: int, count: int, views: str, domain_name: str, split: str):
    """The pool at `path` (.npz), rendered and saved first when missing."""
    from handshape_tf.data.full_frames import HandPool, render_hand_pool

    if path.is_file():
        pool = HandPool.load(path)
        if len(pool) == count and pool.rgba.shape[1] == size:
            return pool
        logger.info(
            "%s holds %d hands of %d px; re-rendering %d of %d px", path, len(pool), pool.rgba.shape[1], count, size
        )
    from handshape_tf.data.backgrounds import BackgroundSource
    from handshape_tf.data.domains import get_domain
    from handshape_tf.data.photo_bank import ensure_bank
    from handshape_tf.data.renderer import HandRenderer

    start = time.monotonic()
    renderer = HandRenderer(size, BackgroundSource(ensure_bank() / split), get_domain(domain_name))

    def progress(done, total):
        if done % 100 == 0 or done == total:
            logger.info("rendering %s: %d / %d hands (%.0f s)", path.name, done, total, time.monotonic() - start)

    pool = render_hand_pool(renderer, seed, count, views, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    pool.save(path)
    return pool


@dataclasses.dataclass(frozen=True)
class ComposerSpec:
    """What a `FrameComposer` is built from, small enough to send to a worker process."""

    pool_path: str
    backgrounds: str | None  # a folder of photos, or None for procedural backgrounds
    domain: str
    width: int
    height: int

    def build(self):
        from handshape_tf.data.backgrounds import BackgroundSource
        from handshape_tf.data.domains import get_domain
        from handshape_tf.data.full_frames import FrameComposer, FrameConfig, HandPool

        frame = FrameConfig(width=self.width, height=self.height)
        return FrameComposer(
            HandPool.load(self.pool_path), BackgroundSource(self.backgrounds), get_domain(self.domain), frame
        )


def composer_specs(run_dir: Path, config: DetectorTrainConfig) -> dict[str, ComposerSpec]:
    """{"train", "heldout", "unseen"} composer specs, their hand pools rendered first when missing
    (module docstring)."""
    from handshape_tf.data.photo_bank import ensure_bank

    data = config.data
    folder = run_dir / "data"
    bank = ensure_bank()
    parts = {  # name: (pool seed, pool size, domain, photo bank part)
        "train": (config.seed, data.pool_size, "photo", "train"),
        "heldout": (config.seed + 1, data.heldout_pool_size, "photo", "test"),
        "unseen": (config.seed + 2, data.heldout_pool_size, "unseen", "test"),
    }
    specs = {}
    for name, (seed, size, domain, split) in parts.items():
        path = folder / f"pool-{name}.npz"
        hand_pool(path, data.crop_size, seed, size, data.views, domain, split)
        specs[name] = ComposerSpec(
            str(path), str(bank / split), domain, config.model.input_width, config.model.input_height
        )
    return specs


def compose_batch(composer, config: DetectorTrainConfig, start_frame: int) -> tuple[np.ndarray, ...]:
    """Frames start_frame .. start_frame + batch_size - 1 of the training stream and their targets:
    (images B x H x W x 3 uint8, heat, regression, left, weight) as `encode_targets` maps."""
    from handshape_tf.inference.detection import encode_targets

    images, targets = [], []
    for index in range(start_frame, start_frame + config.batch_size):
        frame = composer.frame(config.seed, index)
        images.append(frame["image"])
        targets.append(encode_targets(frame["boxes"], frame["is_left"], config.model.output_shape, config.model.stride))
    maps = (np.stack([t[key] for t in targets]) for key in ("heat", "regression", "left", "weight"))
    return (np.stack(images), *maps)


_worker: dict[str, Any] = {}  # a batch worker process's composer and config


def _init_batch_worker(spec: ComposerSpec, config: DetectorTrainConfig) -> None:
    import cv2

    cv2.setNumThreads(1)
    _worker["composer"], _worker["config"] = spec.build(), config


def _worker_batch(start_frame: int) -> tuple[np.ndarray, ...]:
    return compose_batch(_worker["composer"], _worker["config"], start_frame)


def training_batches(spec: ComposerSpec, config: DetectorTrainConfig, start_frame: int, depth: int = 4):
    """Endless `compose_batch` batches from frame `start_frame` on, in stream order.

    With `workers` > 0 the batches are composed by that many spawned processes, `depth`
    batches ahead (compositing, not the small network, bounds the step otherwise); with 0, by a
    background thread of this process.
    """
    stride = config.batch_size
    if config.workers == 0:
        composer = spec.build()
        starts = itertools.count(start_frame, stride)
        yield from prefetched((compose_batch(composer, config, start) for start in starts), depth)
        return
    from handshape_tf.data.synthetic import single_threaded_children

    context = multiprocessing.get_context("spawn")
    with single_threaded_children():
        executor = ProcessPoolExecutor(
            config.workers, mp_context=context, initializer=_init_batch_worker, initargs=(spec, config)
        )
    try:
        pending = collections.deque(executor.submit(_worker_batch, start_frame + k * stride) for k in range(depth))
        next_start = start_frame + depth * stride
        while True:
            batch = pending.popleft().result()
            pending.append(executor.submit(_worker_batch, next_start))
            next_start += stride
            yield batch
    finally:
        executor.shutdown(wait=False, cancel_futures=True)


def prefetched(iterator, depth: int = 4):
    """Items of `iterator` produced by a background thread, `depth` ahead, in order (OpenCV and
    numpy release the GIL, so compositing overlaps the training step)."""
    import queue
    import threading

    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce():
        try:
            for item in iterator:
                while not stop.is_set():
                    try:
                        items.put(item, timeout=0.5)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as error:  # handed to the consumer
            items.put(error)

    thread = threading.Thread(target=produce, daemon=True, name="frames")
    thread.start()
    try:
        while True:
            item = items.get()
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


# ---------------------------------------------------------------------------------------------
# Loss.


def detection_loss(output, heat, regression, left, weight, config: DetectorTrainConfig):
    """(total, parts dict) of a batch: B x h x w x 6 outputs against `encode_targets` maps."""
    import tensorflow as tf

    logits = output[..., 0]
    probability = tf.clip_by_value(tf.sigmoid(logits), 1e-4, 1.0 - 1e-4)
    positive = tf.cast(heat >= 1.0 - 1e-6, tf.float32)
    count = tf.maximum(tf.reduce_sum(positive), 1.0)
    focal = -(
        positive * (1.0 - probability) ** 2 * tf.math.log(probability)
        + (1.0 - positive) * (1.0 - heat) ** 4 * probability**2 * tf.math.log(1.0 - probability)
    )
    focal = tf.reduce_sum(focal) / count
    cells = tf.maximum(tf.reduce_sum(weight), 1.0)
    offset = tf.reduce_sum(weight[..., None] * tf.abs(output[..., 2:4] - regression[..., 0:2])) / cells
    size = tf.reduce_sum(weight[..., None] * tf.abs(output[..., 4:6] - regression[..., 2:4])) / cells
    side = tf.nn.sigmoid_cross_entropy_with_logits(labels=left, logits=output[..., 1])
    side = tf.reduce_sum(weight * side) / cells
    total = focal + config.loss_offset * offset + config.loss_size * size + config.loss_left * side
    return total, {"focal": focal, "offset": offset, "size": size, "left": side}


# ---------------------------------------------------------------------------------------------
# Evaluation.


def evaluate(detector, frames: list[dict[str, Any]]) -> dict[str, Any]:
    """Held-out metrics of a `HandDetector` on composited frames.

    AP@0.5 over every detection with score >= 0.05; at the detector's own threshold:
    precision, recall, handedness accuracy of the true positives (from the detector's side
    classifier when it has one), and false positives on frames without a hand.
    """
    from handshape_tf.inference.detection import average_precision, decode, match_detections

    everything, at_threshold = [], []
    for frame in frames:
        canvas = frame["image"]
        raw = detector.raw(canvas[None])[0]
        everything.append(decode(raw, detector.stride, _AP_SCORE_THRESHOLD, detector.iou_threshold, 20))
        at_threshold.append(
            detector.with_sides(canvas, [d for d in everything[-1] if d.score >= detector.score_threshold])
        )
    truths = [frame["boxes"] for frame in frames]
    matched = correct = positives = found = 0
    empty_false = 0
    for detections, frame in zip(at_threshold, frames):
        pairs = match_detections(detections, frame["boxes"], 0.5)
        matched += len(pairs)
        correct += sum(detections[d].is_left == bool(frame["is_left"][t]) for d, t in pairs)
        positives += len(frame["boxes"])
        found += len(detections)
        if len(frame["boxes"]) == 0:
            empty_false += len(detections)
    return {
        "frames": len(frames),
        "hands": positives,
        "ap50": average_precision(everything, truths, 0.5),
        "ap75": average_precision(everything, truths, 0.75),
        "score_threshold": detector.score_threshold,
        "precision": matched / found if found else None,
        "recall": matched / positives if positives else None,
        "handedness_accuracy": correct / matched if matched else None,
        "false_positives_on_empty_frames": empty_false,
        "empty_frames": sum(len(f["boxes"]) == 0 for f in frames),
    }


def detection_sheet(detector, frames: list[dict[str, Any]], path: Path, count: int = 12) -> Path:
    import cv2

    from handshape_tf.data.full_frames import draw_labels

    tiles = []
    for frame in frames[:count]:
        found = detector.detect(frame["image"], max_hands=4)
        tile = draw_labels(frame["image"], frame["boxes"], frame["is_left"])
        tile = tile // 2 + frame["image"] // 2  # ground truth faint
        tile = draw_labels(tile, [d.box for d in found], [d.is_left for d in found], [d.score for d in found])
        tiles.append(tile)
    while len(tiles) % 4:
        tiles.append(np.zeros_like(tiles[0]))
    sheet = np.vstack([np.hstack(tiles[i : i + 4]) for i in range(0, len(tiles), 4)])
    tmp = path.with_name(path.stem + ".tmp.png")
    cv2.imwrite(str(tmp), sheet[..., ::-1])
    tmp.replace(path)
    return path


# ---------------------------------------------------------------------------------------------
# Training.


def train(config: DetectorTrainConfig, run_dir: Path, *, tflite: bool = False, progress: bool = True) -> dict[str, Any]:
    import tensorflow as tf

    from handshape_tf.inference.detection import HandDetector
    from handshape_tf.models.detector import build_detector
    from train import checkpoints
    from train.budgeted_run import BudgetedRun

    resumed = checkpoints.prepare_run_dir(run_dir, config)
    tf.keras.utils.set_random_seed(config.seed)
    specs = composer_specs(run_dir, config)
    model = build_detector(config.model)
    run = BudgetedRun(model, run_dir, config)
    if resumed and not run.manager.latest_checkpoint:
        logger.info("%s has a config but no checkpoint; starting from step 0", run_dir)

    @tf.function(reduce_retracing=True)
    def train_step(images, heat, regression, left, weight):
        with tf.GradientTape() as tape:
            output = model(tf.cast(images, tf.float32) / 255.0, training=True)["detections"]
            total, parts = detection_loss(output, heat, regression, left, weight, config)
        gradients = tape.gradient(total, model.trainable_variables)
        run.optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return total, parts

    batches = training_batches(specs["train"], config, int(run.step) * config.batch_size)
    running = None
    log_every = config.log_every if progress else config.log_every * 4
    with run:  # SIGTERM / Ctrl-C: a checkpoint, then TrainingInterrupted
        while run.training:
            batch = next(batches)
            with run.step_clock():
                total, parts = train_step(*(tf.constant(part) for part in batch))
                total = float(total)
                if not math.isfinite(total):
                    raise FloatingPointError(
                        f"training loss is {total} at step {int(run.step)}; lower the learning rate"
                    )
            running = total if running is None else 0.9 * running + 0.1 * total
            if int(run.step) % log_every == 0:
                row = {
                    "global_step": int(run.step),
                    "stage": "detector",
                    "loss": total,
                    **{k: float(v) for k, v in parts.items()},
                    "minutes": run.minutes,
                    "learning_rate": run.learning_rate,
                }
                run.history.append(row)
                logger.info(
                    "step %d  loss %.3f (avg %.3f)  focal %.3f  size %.3f  left %.3f  %.1f / %.0f min",
                    int(run.step),
                    total,
                    running,
                    row["focal"],
                    row["size"],
                    row["left"],
                    row["minutes"],
                    config.budget_minutes,
                )
            run.save_every_so_often()
    batches.close()
    run.save()
    checkpoints.save_model_atomically(model, run_dir / MODEL_FILE)
    checkpoints.plot_learning_curve(run.history.rows(), run_dir / checkpoints.CURVE_FILE)

    detector = HandDetector(model)
    steps = int(run.step)
    report: dict[str, Any] = {
        "training": {"steps": steps, "minutes": run.minutes, "frames_seen": steps * config.batch_size}
    }
    frames = {
        name: specs[name].build().frames(config.seed + 1000, range(config.data.heldout_frames))
        for name in ("heldout", "unseen")
    }
    for name, held in frames.items():
        report[name] = evaluate(detector, held)
        logger.info(
            "%s: AP@0.5 %.3f  AP@0.75 %.3f  handedness %s  precision %s  recall %s",
            name,
            report[name]["ap50"],
            report[name]["ap75"],
            _fmt(report[name]["handedness_accuracy"]),
            _fmt(report[name]["precision"]),
            _fmt(report[name]["recall"]),
        )
    detection_sheet(detector, frames["heldout"], run_dir / "detections.png")
    if tflite:
        report["tflite"] = export_tflite(model, run_dir / TFLITE_FILE, frames["heldout"][:16])
    checkpoints.write_json_atomically(report, run_dir / checkpoints.REPORT_FILE)
    return report


def export_tflite(model, path: Path, frames: list[dict[str, Any]]) -> dict[str, Any]:
    """detector.tflite (float32, builtin ops only), written only when it matches Keras on `frames`."""
    from export.tflite import export_checked_image_model

    result = export_checked_image_model(model, path, np.stack([f["image"] for f in frames]), "detector", "detections")
    logger.info(
        "wrote %s (%.2f MB, max |Keras - TFLite| %.1e, ops %s)",
        path,
        result["bytes"] / 2**20,
        result["max_abs_difference"],
        ", ".join(result["operators"]),
    )
    return result


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def resolve(args) -> DetectorTrainConfig:
    return merge(DetectorTrainConfig(), command_line_updates(args.budget, args.overrides))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, timestamps=True)
    try:
        config = resolve(args)
        report = train(config, args.run_dir, tflite=args.tflite, progress=not args.no_progress)
    except (ConfigError, FileNotFoundError, ValueError) as error:
        print_error(error)
        return EXIT_BAD_INPUT
    except TrainingInterrupted as error:
        print_error(error)
        return EXIT_INTERRUPTED
    logger.info("report: %s", args.run_dir / "report.json")
    for name in ("heldout", "unseen"):
        accuracy = _fmt(report[name]["handedness_accuracy"])
        print(f"{name}: AP@0.5 {report[name]['ap50']:.3f}, handedness accuracy {accuracy}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
