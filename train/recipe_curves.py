"""Accuracy against training minutes: the checkpoints of finished runs on their held-out and
unseen-domain sets, one line per run, in one PNG.

    python -m train.recipe_curves runs/recipe-12min/base runs/recipe-12min/cosine \
        --out docs/recipe_curves.png

Each run folder is a finished `train.synthetic` run (its report.json names the held-out and
unseen-domain sets) trained with checkpoints kept along the way (e.g. --set checkpoint.keep=100
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


def run_points(run_dir: Path, limit: int, batch_size: int) -> dict[str, Any]:
    """Metrics of every kept checkpoint of `run_dir` and of its final model.

    Returns:
      {"run": name, "points": [{"minutes", "final", "heldout": headline, "unseen": headline}, ...]}
      ordered by training minutes.

    Raises:
      FileNotFoundError: no report.json (the run has not finished) or no checkpoints.
    """
    import tensorflow as tf

    from handshape_tf.data.pipeline import ShardSource
    from handshape_tf.evaluation.report import evaluate_model
    from train import checkpoints
    from train.config import resolve_config
    from train.evaluate import headline
    from train.loop import Trainer, make_environment

    report_path = run_dir / checkpoints.REPORT_FILE
    if not report_path.is_file():
        raise FileNotFoundError(f"{report_path} not found: {run_dir} is not a finished train.synthetic run")
    report = json.loads(report_path.read_text())
    sets = {"heldout": report["data"]["heldout_path"], "unseen": report["data"].get("unseen_path")}
    state = tf.train.get_checkpoint_state(str(run_dir / checkpoints.CHECKPOINTS))
    if state is None or not state.all_model_checkpoint_paths:
        raise FileNotFoundError(f"no checkpoints in {run_dir / checkpoints.CHECKPOINTS}")
    train_folder = Path(sets["heldout"]).parent / "train"
    if not train_folder.is_dir():
        raise FileNotFoundError(f"{train_folder} not found: the BatchNorm statistics are re-estimated on it")
    config = resolve_config(config_file=run_dir / checkpoints.CONFIG_FILE)
    # The run's own trainer restores a checkpoint exactly as a resumed run would.
    trainer = Trainer(config, run_dir, ShardSource(train_folder), make_environment("default"), progress=False)
    points = []
    for path in state.all_model_checkpoint_paths:
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
    evaluation = report.get("evaluation") or {}
    final = {
        "minutes": round(report["training"]["training_seconds"] / 60, 2),
        "final": True,
        "heldout": evaluation.get("model"),
        "unseen": evaluation.get("unseen"),
    }
    return {
        "run": run_dir.name,
        "run_dir": str(run_dir),
        "points": sorted(points + [final], key=lambda p: p["minutes"]),
    }


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
    add_verbose_argument(parser)
    args = parser.parse_args(argv)
    setup_logging(args.verbose, timestamps=True)
    if args.limit < 1:
        parser.error(f"--limit {args.limit}: expected >= 1")
    from handshape_tf.config_utils import ConfigError
    from train import checkpoints

    try:
        runs = [run_points(run, args.limit, args.batch_size) for run in args.runs]
    except (ConfigError, FileNotFoundError) as error:
        print_error(error)
        return EXIT_BAD_INPUT
    plot_curves(runs, args.out)
    checkpoints.write_json_atomically({"limit": args.limit, "runs": runs}, args.out.with_suffix(".json"))
    print(f"written: {args.out}, {args.out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
