"""Trains the side classifier (left or right hand, from a crop) within a time budget, then evaluates it.

    python -m train.side                              # 20 min, runs/side: the shipped recipe
    python -m train.side --budget 3 --run-dir runs/side-try --tflite
    python -m train.side --data runs/data/<set> --set width=24

Data (`--data`: a folder holding train/ and heldout/ shard folders): by default the synthetic
trainer's default set rendered from every view direction (`SIDE_DATA`: views "full", 30,000
training crops) under --workdir, rendered first if missing, with its unseen-domain test set;
loaded into memory as seen (left hands not mirrored). Each sample's targets are
`chirality.side_cues`: the side, and the two cues that decide it (palm towards the camera, the
hand's turn in the picture), which keep the network off the chance plateau
(`handshape_tf.models.side`). Each batch mirrors half its crops (side and turn flip, the palm's
facing does not) and turns, zooms and shifts every crop (`jitter`: none of the three targets
changes). The defaults are the shipped classifier's recipe: against frontal crops without the
jitter, it names the side of far more of the detector's hands (every view direction) at some
cost on frontal crops (assets/DETECTOR_CARD.md has both); `--data` with the mesh network's
frontal set and `--set rotation_deg=0 "scale=[1,1]" shift=0` give the frontal one.

Adam with a linear warm-up, constant until `decay_start` of the budget, then half a cosine down
to `final_rate_fraction` (as `train.detector`). Run folder: config.yaml, checkpoints/ (resume
with the same command), history.jsonl, side.keras (atomic), report.json (side accuracy and cue
accuracies on the held-out and unseen-domain crops; with --detector-run, the side accuracy of
that `train.detector` run's detector + this classifier on its held-out and unseen-domain frames,
i.e. on the detector's boxes), side.tflite with --tflite (builtin ops, checked against Keras).

Exit codes: 0 done, 2 bad input (config, run folder, data), 130 stopped by Ctrl-C or SIGTERM
(after a checkpoint: the same command resumes).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import sys
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
from handshape_tf.data.shards import DatasetError
from handshape_tf.models.side import SIDE_OUTPUTS, SideConfig
from train.interrupts import TrainingInterrupted

logger = logging.getLogger("train.side")

MODEL_FILE = "side.keras"
TFLITE_FILE = "side.tflite"


@dataclasses.dataclass(frozen=True)
class SideTrainConfig:
    """Everything `train.side` needs; `--set key=value` overrides any field.

    Attributes:
      cue_weight: weight of each cue's cross-entropy beside the side's (0: the side alone).
      max_train_samples: use at most this many training crops (0: all).
      rotation_deg, scale, shift: `jitter`'s in-plane turn (uniform within +- degrees), zoom
        (uniform in [low, high], > 1 enlarges the hand) and shift (uniform within +- this
        fraction of the crop, per axis).
    """

    model: SideConfig = SideConfig()
    seed: int = 0
    batch_size: int = 64
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    decay_start: float = 0.7
    final_rate_fraction: float = 0.05
    budget_minutes: float = 20.0
    checkpoint_minutes: float = 2.0
    log_every: int = 50
    cue_weight: float = 1.0
    max_train_samples: int = 0
    rotation_deg: float = 180.0
    scale: tuple[float, float] = (0.85, 1.2)
    shift: float = 0.1

    def __post_init__(self):
        low, high = self.scale
        if not 0 < low <= high:
            raise ValueError(f"scale is {self.scale!r}; expected 0 < low <= high")
        if self.rotation_deg < 0 or self.shift < 0:
            raise ValueError(f"rotation_deg {self.rotation_deg!r} and shift {self.shift!r}; expected >= 0")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m train.side",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument("--budget", type=float, metavar="MINUTES", help="training budget (config budget_minutes)")
    parser.add_argument("--run-dir", type=Path, default=Path("runs") / "side", help="run folder (runs/side)")
    parser.add_argument("--data", type=Path, help="folder with train/ and heldout/ shard folders (default: rendered)")
    parser.add_argument(
        "--unseen", type=Path, help="unseen-domain shard folder to report (default: with the default data)"
    )
    parser.add_argument("--workdir", type=Path, default=Path("runs"), help="where the default data lives (runs)")
    parser.add_argument(
        "--detector-run",
        type=Path,
        help="a train.detector run folder: also report its detector's frames with this side classifier",
    )
    add_overrides_argument(parser, "override config values, e.g. --set width=24 batch_size=128")
    parser.add_argument("--tflite", action="store_true", help="also export side.tflite (builtin ops, checked)")
    add_verbose_argument(parser)
    return parser


# ---------------------------------------------------------------------------------------------
# Data.


def load_crops(folder: Path, size: int, limit: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(crops N x size x size x 3 uint8 as seen, targets N x 3 float32 `side_cues`) of a shard folder.

    Raises:
      DatasetError: see `shards.read_dataset`.
    """
    from handshape_tf.data.crop import crop_and_resize, image_box
    from handshape_tf.data.shards import read_dataset
    from handshape_tf.geometry.chirality import side_cues

    crops, xyz, uv, left = [], [], [], []
    samples = read_dataset(folder)
    for sample in samples.take(limit) if limit else samples:
        image, joints_uv = sample["image"].numpy(), sample["joints_uv"].numpy()
        if image.shape[0] != size:
            image = crop_and_resize(image, image_box(image.shape[1], image.shape[0]), size)[0]
        crops.append(image)
        xyz.append(sample["joints_xyz"].numpy())
        uv.append(joints_uv)
        left.append(bool(sample["is_left"].numpy()))
    if not crops:
        raise DatasetError(f"{folder} holds no samples")
    return np.stack(crops), side_cues(np.stack(xyz), np.stack(uv), np.array(left))


def mirror(crops: np.ndarray, targets: np.ndarray, flip: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirrors the crops where `flip` (N bool): side and turn change, the palm's facing does not."""
    crops = np.where(flip[:, None, None, None], crops[:, :, ::-1], crops)
    targets = targets.copy()
    for column in (SIDE_OUTPUTS.index("left"), SIDE_OUTPUTS.index("counter_clockwise")):
        targets[flip, column] = 1.0 - targets[flip, column]
    return crops, targets


def jitter(crops: np.ndarray, rng: np.random.Generator, config: SideTrainConfig) -> np.ndarray:
    """Each N x S x S x 3 crop turned about its centre, zoomed and shifted (`SideTrainConfig`),
    the borders filled by reflection."""
    import cv2

    size = crops.shape[1]
    out = np.empty_like(crops)
    angles = rng.uniform(-config.rotation_deg, config.rotation_deg, len(crops))
    scales = rng.uniform(*config.scale, len(crops))
    shifts = rng.uniform(-config.shift, config.shift, (len(crops), 2)) * size
    for k, crop in enumerate(crops):
        affine = cv2.getRotationMatrix2D((size / 2 - 0.5, size / 2 - 0.5), angles[k], scales[k])
        affine[:, 2] += shifts[k]
        out[k] = cv2.warpAffine(crop, affine, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return out


# The default data's changes to the `cpu` preset's dataset (`train.datasets`): hands from every
# view direction, as the detector finds them, and three times the mesh default's crops.
SIDE_DATA = {"dataset.views": "full", "dataset.train_samples": 30000}


def default_data(workdir: Path) -> tuple[Path, Path | None]:
    """The `SIDE_DATA` set (rendered now if missing) and its unseen-domain set."""
    from train.config import preset_config
    from train.datasets import default_dataset_dir, is_complete, render_default_dataset, unseen_dataset_dir

    config = merge(preset_config("cpu"), SIDE_DATA)
    folder, unseen = default_dataset_dir(workdir, config), unseen_dataset_dir(workdir, config)
    if not is_complete(folder, unseen):
        render_default_dataset(folder, config, unseen_folder=unseen)
    return folder, unseen


# ---------------------------------------------------------------------------------------------
# Training and evaluation.


def accuracies(model, crops: np.ndarray, targets: np.ndarray, batch_size: int = 256) -> dict[str, float]:
    """{side output: accuracy} of the Keras model on crops (N x S x S x 3 uint8)."""
    from handshape_tf.inference.detection import ImageModel

    run = ImageModel(model, "side classifier", "side_logits")
    logits = np.concatenate([run(crops[i : i + batch_size]) for i in range(0, len(crops), batch_size)])
    correct = (logits > 0) == (targets > 0.5)
    return {name: float(correct[:, k].mean()) for k, name in enumerate(SIDE_OUTPUTS)}


def frame_report(side_model, detector_run: Path) -> dict[str, Any]:
    """`train.detector.evaluate` of a detector run's detector with `side_model` naming the sides,
    on that run's held-out and unseen-domain frames (the frames its own report used)."""
    from handshape_tf.config_utils import load_yaml
    from handshape_tf.inference.detection import HandDetector
    from train import detector as train_detector

    config = merge(train_detector.DetectorTrainConfig(), load_yaml(detector_run / "config.yaml"))
    specs = train_detector.composer_specs(detector_run, config)
    detector = HandDetector(detector_run / train_detector.MODEL_FILE, side=side_model)
    report = {}
    for name in ("heldout", "unseen"):
        frames = specs[name].build().frames(config.seed + 1000, range(config.data.heldout_frames))
        report[name] = train_detector.evaluate(detector, frames)
    return report


def train(
    config: SideTrainConfig,
    run_dir: Path,
    data: Path,
    unseen: Path | None = None,
    *,
    tflite: bool = False,
    detector_run: Path | None = None,
) -> dict[str, Any]:
    import tensorflow as tf

    from handshape_tf.models.side import build_side_classifier
    from train import checkpoints
    from train.budgeted_run import BudgetedRun

    size = config.model.image_size
    train_crops, train_targets = load_crops(data / "train", size, config.max_train_samples)
    held_crops, held_targets = load_crops(data / "heldout", size)
    logger.info("%d training and %d held-out crops from %s", len(train_crops), len(held_crops), data)
    checkpoints.prepare_run_dir(run_dir, config)
    tf.keras.utils.set_random_seed(config.seed)
    model = build_side_classifier(config.model)
    run = BudgetedRun(model, run_dir, config)
    weights = tf.constant([1.0] + [config.cue_weight] * (len(SIDE_OUTPUTS) - 1))

    @tf.function(reduce_retracing=True)
    def train_step(images, targets):
        with tf.GradientTape() as tape:
            logits = model(tf.cast(images, tf.float32) / 255.0, training=True)["side_logits"]
            terms = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits), axis=0)
            total = tf.reduce_sum(weights * terms)
        gradients = tape.gradient(total, model.trainable_variables)
        run.optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return total, terms

    with run:  # SIGTERM / Ctrl-C: a checkpoint, then TrainingInterrupted
        while run.training:
            rng = np.random.default_rng([config.seed, int(run.step)])  # batch k is the same on resume
            rows = rng.integers(0, len(train_crops), config.batch_size)
            images, targets = mirror(train_crops[rows], train_targets[rows], rng.uniform(size=len(rows)) < 0.5)
            if config.rotation_deg or config.shift or tuple(config.scale) != (1.0, 1.0):
                images = jitter(images, rng, config)
            with run.step_clock():
                total, terms = train_step(tf.constant(images), tf.constant(targets))
                if not math.isfinite(float(total)):
                    raise FloatingPointError(f"training loss is {float(total)} at step {int(run.step)}; lower the rate")
            if int(run.step) % config.log_every == 0:
                row = {
                    "global_step": int(run.step),
                    "stage": "side",
                    "loss": float(total),
                    **{name: float(terms[k]) for k, name in enumerate(SIDE_OUTPUTS)},
                    "minutes": run.minutes,
                    "learning_rate": run.learning_rate,
                }
                run.history.append(row)
                logger.info(
                    "step %d  loss %.3f  side %.3f  palm %.3f  turn %.3f  %.1f / %.1f min",
                    int(run.step),
                    row["loss"],
                    *terms.numpy(),
                    row["minutes"],
                    config.budget_minutes,
                )
            run.save_every_so_often()
    run.save()
    checkpoints.save_model_atomically(model, run_dir / MODEL_FILE)
    checkpoints.plot_learning_curve(run.history.rows(), run_dir / checkpoints.CURVE_FILE)

    report: dict[str, Any] = {
        "training": {"steps": int(run.step), "minutes": run.minutes, "crops_seen": int(run.step) * config.batch_size},
        "data": {"train": str(data / "train"), "heldout": str(data / "heldout"), "unseen": unseen and str(unseen)},
        "heldout": accuracies(model, held_crops, held_targets),
    }
    if unseen is not None:
        report["unseen"] = accuracies(model, *load_crops(unseen, size))
    if detector_run is not None:
        report["frames"] = frame_report(model, detector_run)
    if tflite:
        from export.tflite import export_checked_image_model

        report["tflite"] = export_checked_image_model(
            model, run_dir / TFLITE_FILE, held_crops[:32], "side classifier", "side_logits"
        )
    checkpoints.write_json_atomically(report, run_dir / checkpoints.REPORT_FILE)
    return report


def resolve(args) -> SideTrainConfig:
    return merge(SideTrainConfig(), command_line_updates(args.budget, args.overrides))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, timestamps=True)
    try:
        config = resolve(args)
        if args.data is None:
            data, unseen = default_data(args.workdir)
        else:
            data, unseen = args.data, args.unseen
        for folder in (data / "train", data / "heldout"):
            if not folder.is_dir():
                raise DatasetError(f"{folder} does not exist; --data must hold train/ and heldout/ shard folders")
        if args.detector_run is not None and not (args.detector_run / "config.yaml").is_file():
            raise FileNotFoundError(f"{args.detector_run} is not a train.detector run folder (no config.yaml)")
        report = train(
            config, args.run_dir, data, args.unseen or unseen, tflite=args.tflite, detector_run=args.detector_run
        )
    except (ConfigError, DatasetError, FileNotFoundError, ValueError) as error:
        print_error(error)
        return EXIT_BAD_INPUT
    except TrainingInterrupted as error:
        print_error(error)
        return EXIT_INTERRUPTED
    logger.info("report: %s", args.run_dir / "report.json")
    for name in ("heldout", "unseen"):
        if name in report:
            print(
                f"{name}: side accuracy {report[name]['left']:.3f}  "
                + "  ".join(f"{cue} {report[name][cue]:.3f}" for cue in SIDE_OUTPUTS[1:])
            )
    for name, frames in report.get("frames", {}).items():
        print(f"{name} frames (detector's boxes): side accuracy {frames['handedness_accuracy']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
