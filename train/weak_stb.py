"""Weakly supervised fine-tuning on real RGB-D crops (paper Sec. 4.4 and 5.4, Fig. 6 and 8).

    python -m train.weak_stb                        # fine-tune runs/synthetic-cpu on the rendered
                                                    # real-like set, 15 min, before/after report
    python -m train.weak_stb --data /data/STB --with-3d-pose --budget 60
    python -m train.weak_stb --init runs/synthetic-paper --no-compare --set batch_size=16

Starting point (`--init RUN_DIR`, default <workdir>/synthetic-<preset>): a `train.synthetic` run
folder with model.keras and config.yaml; its model sizes are the run's (a `--preset` that
differs, a missing run or a data set of another image size fail before anything is done).
Config: `WeakConfig` defaults with the run's model -> `--config` YAML -> `--with-3d-pose` ->
`--set key=value` (dotted keys; unknown keys fail), written to <run>/config.yaml.

Data (`--data`): an STB root (B2-B6 train, B1 test; cropped once into <workdir>/data, see
`handshape_tf.data.real_like.prepare_stb`), a folder holding train/ and test/ RGB-D shard
folders (samples with `sensor_depth`, `handshape_tf.data.shards`), or nothing: the real-like
domain is rendered into <workdir>/data (`handshape_tf.data.synthetic.generate_dataset` with
domain "real_like"). Samples are read by index (`shards.ShardSamples`, left hands mirrored into
right hands) in shuffled epochs (`iterate_batches`). Training reads images, the sensor depth
maps, 2D joints (heat-maps), the crop camera and the root depth and hand scale; 3D joints only
with `--with-3d-pose`; meshes never.

Losses (`WeakObjective`): L_weakly = 0.1 L_H + 0.1 L_D + 1 L_pM, + 10 L_J with 3D pose
(`handshape_tf.losses.weakly_supervised_loss`):
  * L_D: the predicted mesh (uvd) is placed in the camera with the crop intrinsics and the
    ground-truth root depth and hand scale (the paper's protocol: both are given, Sec. 5.1),
    rendered at R x R (32, `loss.depth_size`) with `handshape_tf.rendering.render_depth` inside
    the training step, and compared by smooth L1 with the reference depth resampled to R x R
    by `depth_sensor.nearest_depth`. Both maps are divided by the hand scale (units of s, like
    the network's d), so `loss.depth_delta` is in hand scales. A pixel counts when the
    reference has depth there within `loss.depth_band` hand scales of the root (the hand and
    what touches it, not the background) and the rendered mesh covers it (a pixel the mesh
    misses has no gradient: visibility is not differentiable).
  * L_pM: edge + 50 Laplacian (Eq. 4, 5) against pseudo-ground-truth meshes: the pretrained
    model's encoder and mesh decoder fed GROUND-TRUTH heat-maps (Gaussians at the 2D joints)
    with its own hourglass features, computed once and cached in the run folder. Meshes are
    compared in the camera frame divided by the hand scale, as in `train.objectives`.
  * L_J: joints in that same frame against (joints_xyz - wrist) / s.

Schedule: stage "heatmap" fine-tunes the hourglass with L_H, then stage "full" fine-tunes every
layer with L_weakly, BatchNorm layers kept as the init run's (`freeze_batch_norm`); RMSprop,
learning rate 1e-4, the stages sharing `budget_minutes` as in `train.config`, run by
`train.loop.StagedTrainer` (the loop of `train.synthetic`). Images get photometric augmentation
only (a geometric one would have to move the depth maps and pseudo meshes with them).

Without `--no-compare` the same fine-tuning also runs without L_pM (<run>/no-pseudo-mesh),
each run getting `--budget` (per run, as in every training command), and the report compares
mesh plausibility (Fig. 6): per predicted mesh, the median |log| ratio of its edge lengths to
the template's and the mean Laplacian (|v_i - mean of its neighbours|) relative to the
template's, all in hand scales.

Run folder (default <workdir>/weak-<data>-<preset>[-pose3d]; `train.checkpoints` layout,
resumable, a finished run is only re-evaluated): config.yaml, sources.json, checkpoints/,
logs/, history.jsonl, pseudo_gt/, model.keras, learning_curve.png, evaluation-before.json,
report.json, pck.png, meshes.png (Fig. 6-style comparison).

Exit codes (`handshape_tf.cli`): 0 done, 2 bad input (config, --init, data, run folder), 1 training
diverged, 130 stopped by Ctrl-C or SIGTERM (after a checkpoint: the same command resumes).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from handshape_tf.cli import (
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    add_overrides_argument,
    add_verbose_argument,
    format_number,
    print_error,
    setup_logging,
)
from handshape_tf.config_utils import ConfigError, parse_overrides
from train import checkpoints
from train.weak.config import DEFAULT_BUDGET_MINUTES, InitRun, WeakConfig, open_init, resolve


def build_parser(prog: str = "python -m train.weak_stb") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument("--init", type=Path, help="train.synthetic run folder (default <workdir>/synthetic-<preset>)")
    parser.add_argument(
        "--preset", help="model preset the --init run must have (default: the run's own; without --init, cpu)"
    )
    parser.add_argument(
        "--data",
        type=Path,
        help="STB root, or a folder with train/ and test/ RGB-D shard folders (default: render the real-like set)",
    )
    parser.add_argument("--with-3d-pose", action="store_true", help="add the 3D pose loss (10 L_J)")
    parser.add_argument("--no-compare", action="store_true", help="skip the run without the pseudo-GT mesh loss")
    parser.add_argument("--config", type=Path, help="YAML file of config values (e.g. a run's config.yaml)")
    add_overrides_argument(parser, "override config values, e.g. --set batch_size=16 loss.depth_size=64")
    parser.add_argument(
        "--budget",
        type=float,
        metavar="MINUTES",
        help=f"training minutes per run (default {DEFAULT_BUDGET_MINUTES:g}; the comparison is a second run)",
    )
    parser.add_argument("--workdir", type=Path, default=Path("runs"), help="where default data and runs go (./runs)")
    parser.add_argument("--run-dir", type=Path, help="run folder (default <workdir>/weak-<data>-<preset>[-pose3d])")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_verbose_argument(parser)
    return parser


def resolve_command(args) -> tuple[InitRun, WeakConfig, int]:
    """The init run, the config and the number of runs (2 with the comparison) of a command line.

    `--budget` is each run's training time (config budget_minutes; --set budget_minutes wins).
    """
    init = open_init(args.init or args.workdir / f"synthetic-{args.preset or 'cpu'}", args.preset)
    overrides = parse_overrides(args.overrides)
    if args.with_3d_pose:
        overrides = {"loss.pose": True, **overrides}
    if args.budget is not None:
        overrides = {"budget_minutes": args.budget, **overrides}
    config = resolve(init, args.config, overrides)
    runs = 2 if not args.no_compare and config.architecture == "graph" and config.loss.pseudo_mesh else 1
    return init, config, runs


def print_report(report: dict[str, Any], comparison: dict[str, Any] | None, figure: Path | None) -> None:
    columns = ("pose_error_mm", "pose_error_pa_mm", "auc_20_50", "mesh_error_mm")
    rows = {"pretrained": report["evaluation"]["before"], "weak (L_weakly)": report["evaluation"]["after"]}
    plausibility = {
        "pretrained": report["plausibility"]["before"],
        "weak (L_weakly)": report["plausibility"]["after"],
        "pseudo-GT meshes": report["plausibility"]["pseudo_gt"],
        "ground truth": report["plausibility"]["ground_truth"],
    }
    if comparison is not None:
        rows["weak without L_pM"] = comparison["evaluation"]["after"]
        plausibility["weak without L_pM"] = comparison["plausibility"]["after"]
    print(f"test set: {report['data']['test']} ({rows['pretrained']['samples']} samples)")
    print(f"  {'':22}" + "".join(f"{c:>18}" for c in columns))
    for name, values in rows.items():
        print(f"  {name:22}" + "".join(f"{format_number(values.get(c)):>18}" for c in columns))
    print("mesh plausibility vs the template (0, 0 and 1 = the template's proportions and smoothness):")
    print(f"  {'':22}" + "".join(f"{c:>18}" for c in ("edge_log_ratio", "edge_outliers", "laplacian_ratio")))
    for name, values in plausibility.items():
        if values:
            print(
                f"  {name:22}"
                + "".join(
                    f"{format_number(values[c]):>18}" for c in ("edge_log_ratio", "edge_outliers", "laplacian_ratio")
                )
            )
    for name, run in (("weak", report), ("weak without L_pM", comparison)):
        if run is not None:
            stages = ", ".join(f"{n} {s['steps']} steps" for n, s in run["training"]["stages"].items())
            print(
                f"{name}: {stages or 'already trained'}; {run['training']['training_seconds'] / 60:.1f} min; "
                f"report {Path(run['run_dir']) / checkpoints.REPORT_FILE}"
            )
    if figure is not None:
        print(f"meshes: {figure}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, timestamps=True)
    from handshape_tf.data.shards import DatasetError
    from train.interrupts import TrainingInterrupted
    from train.loop import TrainingDiverged
    from train.weak.data import prepare_data
    from train.weak.run import run_command

    progress = not args.no_progress
    try:
        init, config, runs = resolve_command(args)
        data = prepare_data(args.data, args.workdir, config, progress)
        suffix = "-pose3d" if config.loss.pose else ""
        run_dir = args.run_dir or args.workdir / f"weak-{data.name}-{args.preset or config.model.preset_name()}{suffix}"
        report, comparison, figure = run_command(config, Path(run_dir), init, data, runs, progress=progress)
    except (ConfigError, DatasetError, FileNotFoundError, ValueError) as error:
        print_error(error)
        return EXIT_BAD_INPUT
    except TrainingDiverged as error:
        print_error(error)
        return EXIT_FAILURE
    except TrainingInterrupted as error:
        print_error(error)
        return EXIT_INTERRUPTED
    print_report(report, comparison, figure)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
