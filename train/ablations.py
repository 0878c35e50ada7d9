"""Loss ablations (paper Table 1) and mesh baselines (Table 2) with equal training budgets.

    python -m train.ablations --budget 10            # 7 runs x 10 min on the default data
    python -m train.ablations --budget 5 --variants full no_edge direct_lbs --data DIR

Variants (each a run folder <workdir>/ablations-<preset>/<variant>, resumable like
`train.synthetic` runs; a finished one is only re-evaluated):
  full          our network with L_fully (Eq. 6);
  no_normal, no_edge, no_laplacian, no_pose
                the same without one term (the pose regressor is still trained in stage 2;
                no_pose drops L_J from stage 3, as in Table 1);
  direct_lbs    latent -> MLP -> joints -> inverse kinematics + skinning of the template
                (`handshape_tf.models.baselines`), trained with L_H and L_J;
  parametric    latent -> MLP -> rig pose and shape -> skinning (our rig in place of MANO),
                trained with L_fully.
Every variant gets `--budget` minutes of training (so the whole command takes about
variants x budget plus data rendering and evaluation) and the same config otherwise; all are
evaluated on the same held-out samples by `train.evaluate.heldout_metrics`, next to the
trivial mean-mesh baseline. Writes ablations.md and ablations.json beside the run folders.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from handshape_tf.cli import EXIT_BAD_INPUT, EXIT_INTERRUPTED, print_error, setup_logging
from handshape_tf.config_utils import ConfigError, merge
from train import checkpoints
from train.synthetic import build_parser, prepare_data, resolve, train_run

logger = logging.getLogger("train.ablations")

VARIANTS: dict[str, dict[str, Any]] = {
    "full": {},
    "no_normal": {"loss.normal": False},
    "no_edge": {"loss.edge": False},
    "no_laplacian": {"loss.laplacian": False},
    "no_pose": {"loss.pose": False},
    "direct_lbs": {"architecture": "direct_lbs"},
    "parametric": {"architecture": "parametric"},
}
COLUMNS = (
    ("mesh_error_mm", "mesh error (mm)"),
    ("mesh_error_pa_mm", "PA mesh error (mm)"),
    ("pose_error_mm", "pose error (mm)"),
    ("pose_error_pa_mm", "PA pose error (mm)"),
    ("auc_20_50", "AUC 20-50 mm"),
)


def heldout_evaluation(model, config, data, run_dir, model_path) -> dict[str, Any]:
    """`train.synthetic.train_run` evaluation hook: metrics of `train.evaluate.heldout_metrics`."""
    from train.evaluate import headline, heldout_metrics

    e = config.evaluation
    metrics = heldout_metrics(
        model,
        data.heldout,
        config.data,
        image_size=config.model.image_size,
        heatmap_size=config.model.heatmap_size,
        batch_size=e.batch_size,
        limit=e.limit or None,
    )
    return {"model": headline(metrics), "model_metrics": metrics}


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """A markdown table of the variants' headline metrics and training throughput."""
    header = ["variant"] + [title for _, title in COLUMNS] + ["training steps", "images/s (stage 3)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["variant"]]
        for key, _ in COLUMNS:
            value = row["metrics"].get(key)
            cells.append("-" if value is None else f"{value:.3f}" if key.startswith("auc") else f"{value:.2f}")
        cells += [
            str(row.get("steps", "-")),
            "-" if row.get("images_per_second") is None else f"{row['images_per_second']:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def variants_parser(prog: str, doc: str, variants: dict[str, Any]):
    """`train.synthetic`'s parser for a command that trains named variants (`--variants`)."""
    parser = build_parser(prog)
    parser.description = doc.split("\n")[0]
    parser.epilog = doc
    parser.add_argument(
        "--variants", nargs="+", choices=tuple(variants), default=list(variants), help="variants to run (default: all)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = variants_parser("python -m train.ablations", __doc__, VARIANTS).parse_args(argv)
    setup_logging(args.verbose, timestamps=True)
    from handshape_tf.data.shards import DatasetError
    from train.evaluate import headline, mean_baseline_metrics
    from train.interrupts import TrainingInterrupted
    from train.loop import TrainingDiverged, make_environment

    try:
        base = resolve(args)
        configs = {name: merge(base, VARIANTS[name]).validated() for name in args.variants}
        environment = make_environment(args.strategy)
        progress = not args.no_progress
        # Checked against the most demanding variant (meshes for the mesh terms and stage 2).
        data = prepare_data(args, configs.get("full", base), environment.chief, progress)
    except (ConfigError, DatasetError, FileNotFoundError, ValueError) as error:
        print_error(error)
        return EXIT_BAD_INPUT
    folder = args.run_dir or args.workdir / f"ablations-{args.preset}"
    rows = []
    for name, config in configs.items():
        logger.info("variant %s (%d of %d)", name, len(rows) + 1, len(configs))
        try:
            report = train_run(
                config, folder / name, data, environment, progress=progress, evaluate_fn=heldout_evaluation
            )
        except TrainingDiverged as error:
            logger.error("variant %s diverged: %s", name, error)
            rows.append({"variant": name, "metrics": {}, "diverged": str(error)})
            continue
        except ConfigError as error:
            print_error(error)
            return EXIT_BAD_INPUT
        except TrainingInterrupted as error:
            print_error(error)
            return EXIT_INTERRUPTED
        if not environment.chief:
            continue
        stages = report["training"]["stages"]
        rows.append(
            {
                "variant": name,
                "metrics": report["evaluation"]["model"] if report["evaluation"] else {},
                "steps": report["training"]["global_step"],
                "images_per_second": (stages.get("full") or {}).get("images_per_second"),
                "run_dir": str(folder / name),
            }
        )
    if not environment.chief:
        return 0
    e = base.evaluation
    mean = mean_baseline_metrics(
        data.train,
        data.heldout,
        base.data,
        image_size=base.model.image_size,
        heatmap_size=base.model.heatmap_size,
        batch_size=e.batch_size,
        fit_samples=e.mean_baseline_samples,
        limit=e.limit or None,
    )
    rows.append({"variant": "mean mesh (trivial)", "metrics": headline(mean)})
    table = markdown_table(rows)
    intro = (
        f"Held-out set: {data.describe()['heldout']}; {args.budget or base.budget_minutes:g} min of training per "
        f"variant, preset {args.preset!r}. PA = after Procrustes alignment.\n\n"
    )
    (folder / "ablations.md").write_text(intro + table)
    checkpoints.write_json_atomically(
        {"budget_minutes": base.budget_minutes, "preset": args.preset, "data": data.describe(), "rows": rows},
        folder / "ablations.json",
    )
    print(intro + table)
    print(f"written: {folder / 'ablations.md'}, {folder / 'ablations.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
