"""Accuracy against training minutes: the checkpoints of finished runs on their held-out and
unseen-domain sets, one line per run, in one PNG.

    python -m train.recipe_curves runs/recipe-12min/base runs/recipe-12min/cosine \
        --out docs/recipe_curves.png

Each run folder is a `train.synthetic` run, finished (its report.json names the held-out and
unseen-domain sets) or still in progress (its default sets under --workdir), trained with
checkpoints kept along the way (e.g. --set checkpoint.keep=100
checkpoint.every_seconds=120). Every kept checkpoint is restored by the run's trainer, its
BatchNorm statistics re-estimated as `train.synthetic` does for the final model, and evaluated
on the first `--limit` samples of both sets at the training-clock minute it was written; the
final model is the last point, from its report.json (all samples). Writes the PNG and a JSON of
the points beside it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from handshape_tf.cli import EXIT_BAD_INPUT, add_verbose_argument, print_error, setup_logging

logger = logging.getLogger("train.recipe_curves")

PANELS = (
    ("heldout", "pose_error_mm", "held-out pose error (mm)"),
    ("heldout", "pose_error_pa_mm", "held-out PA pose error (mm)"),
    ("unseen", "pose_error_mm", "unseen-domain pose error (mm)"),
    ("unseen", "pose_error_pa_mm", "unseen-domain PA pose error (mm)"),
)


def run_points(
    run_dir: Path, limit: int, batch_size: int, workdir: Path = Path("runs"), last: int = 0
) -> dict[str, Any]:
    """Metrics of the kept checkpoints of `run_dir` and of its final model.

    Args:
      run_dir: a train.synthetic run folder, finished (its report.json names the sets) or not
        (its default data sets under `workdir` are used, and there is no final point).
      limit: samples of each set per checkpoint.
      batch_size: images per model call.
      workdir: where an unfinished run's default data is (train.synthetic --workdir).
      last: only the last `last` checkpoints (0: all).

    Returns:
      {"run": name, "points": [{"minutes", "final", "heldout": headline, "unseen": headline}, ...]}
      ordered by training minutes.

    Raises:
      FileNotFoundError: no checkpoints, or no data to evaluate on.
    """
    import tensorflow as tf

    from handshape_tf.data.sources import ShardSource
    from handshape_tf.evaluation.report import evaluate_model
    from train import checkpoints
    from train.config import resolve_config
    from train.datasets import HELDOUT, TRAIN, default_dataset_dir, unseen_dataset_dir
    from train.evaluate import headline
    from train.loop import Trainer, make_environment

    if not (run_dir / checkpoints.CONFIG_FILE).is_file():
        raise FileNotFoundError(
            f"{run_dir / checkpoints.CONFIG_FILE} not found: {run_dir} is not a train.synthetic run"
        )
    config = resolve_config(config_file=run_dir / checkpoints.CONFIG_FILE)
    report_path = run_dir / checkpoints.REPORT_FILE
    report = json.loads(report_path.read_text()) if report_path.is_file() else None
    if report is not None:
        sets = {"heldout": report["data"]["heldout_path"], "unseen": report["data"].get("unseen_path")}
    else:  # a run in progress: its default data
        unseen = unseen_dataset_dir(workdir, config)
        sets = {"heldout": str(default_dataset_dir(workdir, config) / HELDOUT), "unseen": unseen and str(unseen)}
    state = tf.train.get_checkpoint_state(str(run_dir / checkpoints.CHECKPOINTS))
    if state is None or not state.all_model_checkpoint_paths:
        raise FileNotFoundError(f"no checkpoints in {run_dir / checkpoints.CHECKPOINTS}")
    train_folder = Path(sets["heldout"]).parent / TRAIN
    if not train_folder.is_dir():
        raise FileNotFoundError(f"{train_folder} not found: the BatchNorm statistics are re-estimated on it")
    # The run's own trainer restores a checkpoint exactly as a resumed run would.
    trainer = Trainer(config, run_dir, ShardSource(train_folder), make_environment("default"), progress=False)
    points = []
    for path in list(state.all_model_checkpoint_paths)[-last if last else 0 :]:
        trainer.checkpoint.restore(path).expect_partial()
        trainer.recalibrate_batch_norm()
        model = trainer.inference_model()
        point: dict[str, Any] = {"minutes": round(float(trainer.seconds.numpy()) / 60, 2), "final": False}
        for name, folder in sets.items():
            if folder:
                result = evaluate_model(model, folder, limit=limit, batch_size=batch_size, sheet_size=0)
                point[name] = headline(result["metrics"])
        logger.info(
            "%s %s: %.1f min, PA pose %s",
            run_dir.name,
            Path(path).name,
            point["minutes"],
            {name: round(point[name]["pose_error_pa_mm"], 2) for name in sets if name in point},
        )
        points.append(point)
    if report is not None:
        evaluation = report.get("evaluation") or {}
        points.append(
            {
                "minutes": round(report["training"]["training_seconds"] / 60, 2),
                "final": True,
                "heldout": evaluation.get("model"),
                "unseen": evaluation.get("unseen"),
            }
        )
    return {"run": run_dir.name, "run_dir": str(run_dir), "points": sorted(points, key=lambda p: p["minutes"])}


def plot_curves(runs: list[dict[str, Any]], path: Path) -> Path:
    """A 2 x 2 figure (held-out / unseen x pose / PA pose error) against training minutes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 2, figsize=(11, 8), sharex=True)
    for axis, (split, key, title) in zip(axes.flat, PANELS):
        for index, run in enumerate(runs):
            colour = f"C{index}"
            points = [p for p in run["points"] if p.get(split)]
            axis.plot(
                [p["minutes"] for p in points if not p["final"]],
                [p[split][key] for p in points if not p["final"]],
                "o-",
                color=colour,
                label=run["run"],
            )
            for p in points:
                if p["final"]:
                    axis.plot(p["minutes"], p[split][key], "*", color=colour, markersize=14)
        axis.set_title(title)
        axis.grid(alpha=0.3)
    for axis in axes[1]:
        axis.set_xlabel("training minutes (2-core CPU)")
    axes[0, 0].legend(fontsize=8)
    figure.suptitle("Checkpoints (dots, first --limit samples) and final models (stars, all samples)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m train.recipe_curves",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument("runs", nargs="+", type=Path, help="finished run folders")
    parser.add_argument("--out", type=Path, default=Path("docs/recipe_curves.png"), help="the PNG (JSON beside it)")
    parser.add_argument("--limit", type=int, default=300, help="samples of each set per checkpoint (default 300)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--last", type=int, default=0, help="only each run's last N checkpoints (default: all)")
    parser.add_argument(
        "--workdir", type=Path, default=Path("runs"), help="an unfinished run's train.synthetic --workdir (./runs)"
    )
    add_verbose_argument(parser)
    args = parser.parse_args(argv)
    setup_logging(args.verbose, timestamps=True)
    if args.limit < 1:
        parser.error(f"--limit {args.limit}: expected >= 1")
    from handshape_tf.config_utils import ConfigError
    from train import checkpoints

    try:
        runs = [run_points(run, args.limit, args.batch_size, args.workdir, args.last) for run in args.runs]
    except (ConfigError, FileNotFoundError) as error:
        print_error(error)
        return EXIT_BAD_INPUT
    plot_curves(runs, args.out)
    checkpoints.write_json_atomically({"limit": args.limit, "runs": runs}, args.out.with_suffix(".json"))
    print(f"written: {args.out}, {args.out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
