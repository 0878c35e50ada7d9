"""Self-comparison of paper Table 3 / Fig. 8: two baselines and the full model, fine-tuned on
real RGB-D crops with and without 3D pose supervision, each within the same budget.

    python -m train.weak_table3                     # 6 runs x 10 min on the real-like set
    python -m train.weak_table3 --data /data/STB --budget 30 --variants full full_pose3d

Variants (run folders <workdir>/weak-table3-<data>-<preset>/<variant>, resumable like
`train.weak_stb` runs; a finished one is only re-evaluated):
  baseline1   im -> heat-maps + features -> pose (MLP), no depth loss: the Table 2
              "direct_lbs" network of `train.ablations` (its IK mesh is not used), fine-tuned
              with L_H (and 10 L_J);
  baseline2   im -> heat-maps + features -> mesh -> pose, no depth loss: our network with
              0.1 L_H + 1 L_pM (+ 10 L_J);
  full        the same with the depth map loss: L_weakly (+ 10 L_J);
  *_pose3d    the same with 3D pose supervision (`train.weak_stb --with-3d-pose`).
Starting points: `--init` (default <workdir>/synthetic-<preset>, from `python -m
train.synthetic`) for baseline2 and full; `--baseline1-init` (default
<workdir>/ablations-<preset>/direct_lbs, from `python -m train.ablations --variants direct_lbs`)
for baseline1. All are evaluated on the same test crops (pose error with the ground-truth root
depth and scale, AUC over 20-50 mm), next to the two starting points before fine-tuning.
Writes table3.md, table3.json and the PCK curves with and without 3D pose supervision
(pck_with_3d_pose.png, pck_without_3d_pose.png) beside the run folders.

Exit codes: 0 done, 2 bad input, 1 a variant diverged (the others still run), 130 stopped by Ctrl-C or
SIGTERM (after a checkpoint: the same command resumes).
"""

from __future__ import annotations

import argparse
import logging
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
    print_error,
    setup_logging,
)
from handshape_tf.config_utils import ConfigError, parse_overrides
from train import checkpoints
from train.weak.config import InitRun, open_init, resolve

logger = logging.getLogger("train.weak_table3")

DEFAULT_BUDGET_MINUTES = 10.0
# variant -> (init run: "graph" or "baseline1", config overrides, pipeline, depth loss, 3D pose)
VARIANTS: dict[str, tuple[str, dict[str, Any], str, bool, bool]] = {
    "baseline1": (
        "baseline1",
        {"loss.depth": False, "loss.pseudo_mesh": False},
        "im -> hm + feat -> pose",
        False,
        False,
    ),
    "baseline2": ("graph", {"loss.depth": False}, "im -> hm + feat -> mesh -> pose", False, False),
    "full": ("graph", {}, "im -> hm + feat -> mesh -> pose", True, False),
    "baseline1_pose3d": (
        "baseline1",
        {"loss.depth": False, "loss.pseudo_mesh": False, "loss.pose": True},
        "im -> hm + feat -> pose",
        False,
        True,
    ),
    "baseline2_pose3d": (
        "graph",
        {"loss.depth": False, "loss.pose": True},
        "im -> hm + feat -> mesh -> pose",
        False,
        True,
    ),
    "full_pose3d": ("graph", {"loss.pose": True}, "im -> hm + feat -> mesh -> pose", True, True),
}
COLUMNS = (
    ("pose_error_mm", "pose error (mm)"),
    ("pose_error_pa_mm", "PA pose error (mm)"),
    ("auc_20_50", "AUC 20-50 mm"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m train.weak_table3",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument("--init", type=Path, help="train.synthetic run (default <workdir>/synthetic-<preset>)")
    parser.add_argument(
        "--baseline1-init",
        type=Path,
        help="direct_lbs run for Baseline 1 (default <workdir>/ablations-<preset>/direct_lbs)",
    )
    parser.add_argument("--preset", default="cpu", help="model preset of both init runs (default cpu)")
    parser.add_argument(
        "--data",
        type=Path,
        help="STB root or a folder of train/ and test/ RGB-D shard folders (default: the real-like set)",
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=tuple(VARIANTS),
        default=list(VARIANTS),
        help="variants to run (default: all six)",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=DEFAULT_BUDGET_MINUTES,
        metavar="MINUTES",
        help=f"training minutes per variant (default {DEFAULT_BUDGET_MINUTES:g})",
    )
    add_overrides_argument(parser, "config overrides applied to every variant")
    parser.add_argument("--workdir", type=Path, default=Path("runs"), help="where default data and runs go (./runs)")
    parser.add_argument(
        "--run-dir", type=Path, help="folder of the variants (default <workdir>/weak-table3-<data>-<preset>)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_verbose_argument(parser)
    return parser


def open_inits(args, variants: list[str]) -> dict[str, InitRun]:
    """The init runs the variants need, checked (architecture, preset) before anything runs.

    Raises:
      FileNotFoundError: a missing run (the message names the command that makes it).
      ConfigError: a run of another preset or architecture.
    """
    needed = {VARIANTS[name][0] for name in variants}
    inits = {}
    if "graph" in needed:
        folder = args.init or args.workdir / f"synthetic-{args.preset}"
        inits["graph"] = open_init(folder, args.preset)
    if "baseline1" in needed:
        folder = args.baseline1_init or args.workdir / f"ablations-{args.preset}" / "direct_lbs"
        command = f"python -m train.ablations --preset {args.preset} --variants direct_lbs"
        inits["baseline1"] = open_init(folder, args.preset, command, "--baseline1-init")
    for kind, architecture in (("graph", "graph"), ("baseline1", "direct_lbs")):
        if kind in inits and inits[kind].config.architecture != architecture:
            raise ConfigError(
                f"{inits[kind].folder} is a {inits[kind].config.architecture!r} run; the {kind} variants "
                f"start from a {architecture!r} run"
            )
    return inits


def _format(value, key: str) -> str:
    return "-" if value is None else f"{value:.3f}" if key.startswith("auc") else f"{value:.2f}"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of the variants: pipeline, losses, metrics, mesh smoothness, steps."""
    header = ["variant", "pipeline", "depth map loss", "3D pose supervision"] + [t for _, t in COLUMNS]
    header += ["Laplacian / template", "training steps"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [
            row["variant"],
            row["pipeline"],
            "yes" if row["depth_loss"] else "no",
            "-" if row["pose3d"] is None else "yes" if row["pose3d"] else "no",
        ]
        cells += [_format(row["metrics"].get(key), key) for key, _ in COLUMNS]
        laplacian = (row.get("plausibility") or {}).get("laplacian_ratio")
        cells += [_format(laplacian, "laplacian"), str(row.get("steps", "-"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, timestamps=True)
    from handshape_tf.data.shards import DatasetError
    from handshape_tf.evaluation.plots import plot_pck_curves
    from train.interrupts import TrainingInterrupted
    from train.loop import TrainingDiverged
    from train.weak.data import prepare_data
    from train.weak.run import run_weak

    progress = not args.no_progress
    try:
        inits = open_inits(args, args.variants)
        overrides = {**parse_overrides(args.overrides), "budget_minutes": args.budget}
        configs = {}
        for name in args.variants:
            kind, variant_overrides, *_ = VARIANTS[name]
            configs[name] = resolve(inits[kind], None, {**overrides, **variant_overrides})
        data = prepare_data(args.data, args.workdir, next(iter(configs.values())), progress)
    except (ConfigError, DatasetError, FileNotFoundError, ValueError) as error:
        print_error(error)
        return EXIT_BAD_INPUT
    folder = args.run_dir or args.workdir / f"weak-table3-{data.name}-{args.preset}"
    rows, failed = [], False
    befores: dict[str, dict[str, Any]] = {}
    curves: dict[bool, dict[str, Any]] = {False: {}, True: {}}
    for name in args.variants:
        kind, _, pipeline, depth_loss, pose3d = VARIANTS[name]
        logger.info("variant %s (%d of %d)", name, len(rows) + 1, len(args.variants))
        try:
            report = run_weak(configs[name], folder / name, inits[kind], data, progress=progress)
        except TrainingDiverged as error:
            logger.error("variant %s diverged: %s", name, error)
            rows.append(
                {
                    "variant": name,
                    "pipeline": pipeline,
                    "depth_loss": depth_loss,
                    "pose3d": pose3d,
                    "metrics": {},
                    "diverged": str(error),
                }
            )
            failed = True
            continue
        except ConfigError as error:
            print_error(error)
            return EXIT_BAD_INPUT
        except TrainingInterrupted as error:
            print_error(error)
            return EXIT_INTERRUPTED
        befores.setdefault(
            kind,
            {
                "evaluation": report["evaluation"]["before"],
                "plausibility": report["plausibility"]["before"],
                "pose": report["metrics"]["before"]["pose"],
            },
        )
        curves[pose3d][name] = report["metrics"]["after"]["pose"]
        rows.append(
            {
                "variant": name,
                "pipeline": pipeline,
                "depth_loss": depth_loss,
                "pose3d": pose3d,
                "metrics": report["evaluation"]["after"],
                "plausibility": report["plausibility"]["after"],
                "steps": report["training"]["global_step"],
                "run_dir": str(folder / name),
            }
        )
    for kind, before in befores.items():
        pipeline = VARIANTS["baseline1" if kind == "baseline1" else "full"][2]
        rows.append(
            {
                "variant": f"{'baseline1' if kind == 'baseline1' else 'ours'} before fine-tuning",
                "pipeline": pipeline,
                "depth_loss": False,
                "pose3d": None,
                "metrics": before["evaluation"],
                "plausibility": before["plausibility"],
            }
        )
        for pose3d in (False, True):
            if curves[pose3d]:
                curves[pose3d][f"{kind} before fine-tuning"] = before["pose"]
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for pose3d, title in ((True, "with"), (False, "without")):
        if curves[pose3d]:
            files[f"pck_{title}_3d_pose"] = str(
                plot_pck_curves(
                    curves[pose3d],
                    folder / f"pck_{title}_3d_pose.png",
                    title=f"3D PCK on {data.name} test, fine-tuned {title} 3D pose supervision",
                )
            )
    table = markdown_table(rows)
    intro = (
        f"Test set: {data.describe()['test']}; {args.budget:g} min of fine-tuning per variant, preset "
        f"{args.preset!r}. Pose errors in mm with the ground-truth root depth and hand scale; PA = after "
        "Procrustes alignment; Laplacian / template: mean |v - neighbour mean| of the predicted meshes relative "
        "to the template's (1 = as smooth).\n\n"
    )
    (folder / "table3.md").write_text(intro + table)
    checkpoints.write_json_atomically(
        {
            "budget_minutes": args.budget,
            "preset": args.preset,
            "data": data.describe(),
            "inits": {k: v.describe() for k, v in inits.items()},
            "rows": rows,
            "files": files,
        },
        folder / "table3.json",
    )
    print(intro + table)
    print(f"written: {folder / 'table3.md'}, {folder / 'table3.json'}, " + ", ".join(files.values()))
    return EXIT_FAILURE if failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
