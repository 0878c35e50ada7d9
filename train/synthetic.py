"""Fully supervised training on synthetic hands (paper Sec. 4.3), evaluated on held-out data.

    python -m train.synthetic                       # render the default set if needed, train
                                                    # the "cpu" preset for 30 min, evaluate
    python -m train.synthetic --preset paper --budget 600 --data DIR --run-dir runs/paper
    python -m train.synthetic --set stages.full.learning_rate=5e-4 --set loss.normal=false

Config: preset (`--preset`) -> YAML file (`--config`, e.g. a run's config.yaml) -> `--budget`
-> `--set key=value` (dotted keys of `train.config.TrainConfig`; unknown keys fail).

Data: without `--data`, <workdir>/data/synthetic-<S>px-<n>+<m>-seed<k>/{train,heldout} is
rendered with `handshape_tf.data.synthetic.generate_dataset` at the model's input size
(dataset.* config values; rendering resumes if interrupted and is not part of the budget).
See `train.datasets` for the layouts `--data` accepts. Stored crops of another size are resized
(data.resize=true); with data.resize=false they must match the model's input size.

After the last stage the BatchNorm statistics are re-estimated over `batch_norm.samples` stored
training images (`train.batch_norm.recalibrate_batch_norm`) before model.keras is written.

Run folder (default <workdir>/synthetic-<preset>, see `train.checkpoints`): starting the same
command again resumes from the last checkpoint (same stage, step, optimizer state and input
position); a finished run is only re-calibrated and re-evaluated, unless `--budget` grew: then
its last stage trains on until the new budget (`StagedTrainer`). Outputs: config.yaml,
checkpoints/, logs/ (TensorBoard), model.keras, learning_curve.png, report.json, evaluation/
(report, PCK curve and prediction sheet of `handshape_tf.evaluation`) and
evaluation-mean-baseline/.

Exit codes (`handshape_tf.cli`): 0 done, 2 bad input (config, data, run folder), 1 training diverged,
130 stopped by Ctrl-C or SIGTERM (after a checkpoint of the step in flight: the same command resumes).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from handshape_tf.cli import (
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    add_overrides_argument,
    add_verbose_argument,
    format_number,
    print_error,
    setup_logging,
)
from handshape_tf.config_utils import ConfigError, command_line_updates, to_dict
from train import checkpoints
from train.config import resolve_config
from train.datasets import (
    RunData,
    check_run_data,
    default_dataset_dir,
    is_complete,
    open_run_data,
    render_default_dataset,
    unseen_dataset_dir,
)


def build_parser(prog: str = "python -m train.synthetic") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument("--preset", default="cpu", help="model preset: paper, cpu or tiny (default cpu)")
    parser.add_argument("--config", type=Path, help="YAML file of config values (e.g. a run's config.yaml)")
    add_overrides_argument(parser, "override config values, e.g. --set batch_size=16 stages.full.max_steps=100")
    parser.add_argument("--budget", type=float, metavar="MINUTES", help="training budget (config budget_minutes)")
    parser.add_argument("--data", type=Path, help="training data folder (default: render the synthetic set)")
    parser.add_argument("--heldout", type=Path, help="held-out shard folder when --data is a single shard folder")
    parser.add_argument("--workdir", type=Path, default=Path("runs"), help="where default data and runs go (./runs)")
    parser.add_argument("--run-dir", type=Path, help="run folder (default <workdir>/synthetic-<preset>)")
    parser.add_argument(
        "--strategy",
        choices=("default", "mirrored", "multi_worker"),
        default="default",
        help="tf.distribute strategy; multi_worker reads TF_CONFIG",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_verbose_argument(parser)
    return parser


def resolve(args) -> Any:
    """The TrainConfig of the command line (preset -> --config -> --budget -> --set)."""
    return resolve_config(args.preset, args.config, command_line_updates(args.budget, args.overrides))


def prepare_data(args, config, chief: bool, progress: bool) -> RunData:
    """Opens (rendering the default set first if needed) and checks the run's data."""
    if args.data is not None:
        data = open_run_data(args.data, args.heldout)
    else:
        folder = default_dataset_dir(args.workdir, config)
        unseen = unseen_dataset_dir(args.workdir, config)
        if not is_complete(folder, unseen):
            if not chief or args.strategy == "multi_worker":
                raise ValueError(
                    f"{folder} is not rendered; with --strategy multi_worker render it first (python -m "
                    "train.synthetic on one machine, or python -m handshape_tf.data.synthetic) and pass --data"
                )
            render_default_dataset(folder, config, progress, unseen)
        data = dataclasses.replace(open_run_data(folder), unseen_path=unseen)
    check_run_data(data, config)
    return data


def evaluate(model, config, data: RunData, run_dir: Path, model_path: Path) -> dict[str, Any]:
    """Held-out metrics of the model and the mean baseline (see `train.evaluate`), and the
    model's metrics on the unseen-domain set (`unseen`, when the run has one)."""
    result = evaluate_heldout(model, config, data, run_dir, model_path)
    if data.unseen_path is not None:
        from handshape_tf.evaluation.report import evaluate_model
        from train.evaluate import headline

        e = config.evaluation
        report = evaluate_model(
            model,
            data.unseen_path,
            run_dir / "evaluation-unseen",
            limit=e.limit or None,
            batch_size=e.batch_size,
            sheet_size=e.sheet_size,
            model_path=model_path,
        )
        result["unseen"] = headline(report["metrics"])
    return result


def evaluate_heldout(model, config, data: RunData, run_dir: Path, model_path: Path) -> dict[str, Any]:
    """Held-out metrics of the model and the mean baseline (see `train.evaluate`)."""
    from handshape_tf.assets.template import load_template
    from handshape_tf.data.pipeline import evaluation_dataset
    from handshape_tf.evaluation.metrics import MeanUVDPredictor
    from train.evaluate import headline, heldout_metrics, mean_baseline_metrics

    e = config.evaluation
    limit = e.limit or None
    size, heatmap_size = config.model.image_size, config.model.heatmap_size
    if config.architecture != "graph":
        kwargs = dict(image_size=size, heatmap_size=heatmap_size, batch_size=e.batch_size, limit=limit)
        model_metrics = heldout_metrics(model, data.heldout, config.data, **kwargs)
        mean_metrics = mean_baseline_metrics(
            data.train, data.heldout, config.data, fit_samples=e.mean_baseline_samples, **kwargs
        )
        return {
            "model": headline(model_metrics),
            "mean_baseline": headline(mean_metrics),
            "model_metrics": model_metrics,
            "mean_baseline_metrics": mean_metrics,
        }
    from handshape_tf.evaluation.report import evaluate_model

    report = evaluate_model(
        model,
        data.heldout_path,
        run_dir / "evaluation",
        limit=limit,
        batch_size=e.batch_size,
        sheet_size=e.sheet_size,
        model_path=model_path,
    )
    result = {
        "model": headline(report["metrics"]),
        "mean_baseline": None,
        "reports": {"model": report["files"].get("report")},
        "mesh_note": report.get("mesh_note"),
    }
    if data.train.num_vertices != load_template().num_vertices:
        return result  # the mean baseline averages meshes of our topology
    baseline = MeanUVDPredictor(size)
    for batch in evaluation_dataset(
        data.train,
        config.data,
        image_size=size,
        heatmap_size=heatmap_size,
        batch_size=e.batch_size,
        limit=e.mean_baseline_samples,
    ):
        baseline.update(batch["pose_uvd"].numpy(), batch["mesh_uvd"].numpy())
    mean_report = evaluate_model(
        baseline,
        data.heldout_path,
        run_dir / "evaluation-mean-baseline",
        limit=limit,
        batch_size=e.batch_size,
        sheet_size=0,
    )
    result["mean_baseline"] = headline(mean_report["metrics"])
    result["reports"]["mean_baseline"] = mean_report["files"].get("report")
    return result


def train_run(
    config, run_dir: Path, data: RunData, environment, *, progress: bool = True, bank=None, evaluate_fn=evaluate
) -> dict[str, Any]:
    """Trains (or resumes) a run, then writes model.keras, learning_curve.png and report.json.

    Args:
      config: resolved TrainConfig.
      run_dir: the run folder.
      data: opened training / held-out data.
      environment: `train.loop.Environment`.
      progress: progress bars.
      bank: backgrounds for compositing (None: drawn from BackgroundSource).
      evaluate_fn: (model, config, data, run_dir, model_path) -> evaluation dict.

    Returns:
      The report (only the training summary on non-chief workers).

    Raises:
      train.loop.TrainingDiverged: non-finite loss.
      ConfigError: the run folder holds a run with another fixed configuration.
    """
    from train.loop import Trainer

    run_dir = Path(run_dir)
    checkpoints.prepare_run_dir(run_dir, config, chief=environment.chief)
    trainer = Trainer(config, run_dir, data.train, environment, bank=bank, progress=progress)
    summary = trainer.train()
    if not environment.chief:
        return {"training": summary}
    summary["batch_norm_batches"] = trainer.recalibrate_batch_norm()  # the saved model's statistics
    model = trainer.inference_model()
    model_path = checkpoints.save_model_atomically(model, run_dir / checkpoints.MODEL_FILE)
    curve = checkpoints.plot_learning_curve(trainer.history.rows(), run_dir / checkpoints.CURVE_FILE)
    evaluation = evaluate_fn(model, config, data, run_dir, model_path) if data.heldout is not None else None
    report = {
        "run_dir": str(run_dir),
        "config": to_dict(config),
        "data": data.describe(),
        "training": summary,
        "evaluation": evaluation,
        "files": {
            "model": str(model_path),
            "learning_curve": None if curve is None else str(curve),
            "config": str(run_dir / checkpoints.CONFIG_FILE),
            "checkpoints": str(run_dir / checkpoints.CHECKPOINTS),
            "tensorboard": str(run_dir / checkpoints.LOGS),
        },
    }
    checkpoints.write_json_atomically(report, run_dir / checkpoints.REPORT_FILE)
    return report


def print_summary(report: dict[str, Any]) -> None:
    files = report["files"]
    print(f"model:  {files['model']}\nreport: {Path(report['run_dir']) / checkpoints.REPORT_FILE}")
    for name, stage in report["training"]["stages"].items():
        print(
            f"stage {name:8} {stage['steps']:6d} steps, {stage['images_per_second'] or 0:.1f} images/s, "
            f"final loss {format_number(stage['final_loss'])}"
        )
    print(
        f"training time {report['training']['training_seconds'] / 60:.1f} min, "
        f"peak memory {report['training']['peak_memory_mb']:.0f} MB, BatchNorm statistics from "
        f"{report['training'].get('batch_norm_batches', 0)} batches of training images"
    )
    evaluation = report.get("evaluation")
    if not evaluation:
        return
    columns = ("mesh_error_mm", "mesh_error_pa_mm", "pose_error_mm", "pose_error_pa_mm", "auc_20_50")
    print(f"held-out ({evaluation['model']['samples']} samples; unseen: the unseen-domain set):")
    print(f"  {'':14}" + "".join(f"{c:>18}" for c in columns))
    for name in ("model", "mean_baseline", "unseen"):
        if evaluation.get(name):
            print(f"  {name:14}" + "".join(f"{format_number(evaluation[name].get(c)):>18}" for c in columns))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, timestamps=True)
    from handshape_tf.data.shards import DatasetError

    try:
        config = resolve(args)
    except ConfigError as error:
        print_error(error)
        return EXIT_BAD_INPUT
    from train.interrupts import TrainingInterrupted
    from train.loop import TrainingDiverged, make_environment

    try:
        environment = make_environment(args.strategy)
        progress = not args.no_progress
        data = prepare_data(args, config, environment.chief, progress)
        run_dir = args.run_dir or args.workdir / f"synthetic-{args.preset}"
        report = train_run(config, run_dir, data, environment, progress=progress)
    except (ConfigError, DatasetError, FileNotFoundError, ValueError) as error:
        print_error(error)
        return EXIT_BAD_INPUT
    except TrainingDiverged as error:
        print_error(error)
        return EXIT_FAILURE
    except TrainingInterrupted as error:
        print_error(error)
        return EXIT_INTERRUPTED
    if environment.chief:
        print_summary(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
