"""What each part of the rendered look contributes: equal-budget runs on data rendered without it.

    python -m train.domain_ablations --budget 12                 # 9 runs x 12 min
    python -m train.domain_ablations --budget 8 --variants full no_photos online_composite

Variants (each a run folder <workdir>/domain-ablations-<preset>/<variant>, resumable like
`train.synthetic` runs; a finished one is only re-evaluated):
  full              the training domain ("photo", `handshape_tf.data.domains`);
  no_photos         procedural textures instead of photographs behind the hand;
  no_camera         no camera effects (white balance, exposure, vignetting, blur, noise,
                    chromatic aberration, JPEG);
  no_occluders      nothing in front of the hand;
  no_lighting       no third light and no ambient coloured by the background;
  no_skin_detail    no pores and freckles;
  no_framing        no detector boxes that cut the hand;
  no_framing_occluders  neither (every finger in the crop and in sight);
  online_composite  the first datasets' recipe: the hand alone (no forearm, occluders or camera
                    effects) pasted during training over 256 procedural backgrounds
                    (data.composite=true on the "procedural" domain).
Each variant renders its own training set (the `dataset.*` sizes; rendering is not part of the
budget), trains `--budget` minutes, and is evaluated on the same two sets: the held-out set of
the full training domain and the unseen-domain set (`dataset.unseen_*`), next to the mean-mesh
baseline. Writes domain_ablations.md and domain_ablations.json beside the run folders.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from typing import Any

from handshape_tf.cli import EXIT_BAD_INPUT, EXIT_INTERRUPTED, print_error, setup_logging
from handshape_tf.config_utils import ConfigError, merge
from train import checkpoints
from train.ablations import variants_parser
from train.synthetic import evaluate, prepare_data, resolve, train_run

logger = logging.getLogger("train.domain_ablations")

VARIANTS: dict[str, dict[str, Any]] = {
    "full": {},
    "no_photos": {"dataset.domain": "photo-without-photos"},
    "no_camera": {"dataset.domain": "photo-without-camera"},
    "no_occluders": {"dataset.domain": "photo-without-occluders"},
    "no_lighting": {"dataset.domain": "photo-without-extra_light-environment_light"},
    "no_skin_detail": {"dataset.domain": "photo-without-skin_detail"},
    "no_framing": {"dataset.domain": "photo-without-framing"},
    "no_framing_occluders": {"dataset.domain": "photo-without-framing-occluders"},
    "online_composite": {"dataset.domain": "procedural", "data.composite": True},
}
COLUMNS = (
    ("pose_error_mm", "pose (mm)"),
    ("pose_error_pa_mm", "PA pose (mm)"),
    ("mesh_error_mm", "mesh (mm)"),
    ("auc_20_50", "AUC 20-50"),
)


def _cells(metrics: dict[str, Any] | None) -> list[str]:
    metrics = metrics or {}
    return [
        "-" if metrics.get(key) is None else f"{metrics[key]:.3f}" if key.startswith("auc") else f"{metrics[key]:.2f}"
        for key, _ in COLUMNS
    ]


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Held-out and unseen-domain headline metrics of each variant, side by side."""
    header = (
        ["variant"]
        + [f"held-out {title}" for _, title in COLUMNS]
        + [f"unseen {title}" for _, title in COLUMNS]
        + ["steps"]
    )
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["variant"]] + _cells(row.get("heldout")) + _cells(row.get("unseen")) + [str(row.get("steps", "-"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = variants_parser("python -m train.domain_ablations", __doc__, VARIANTS)
    args = parser.parse_args(argv)
    setup_logging(args.verbose, timestamps=True)
    if args.data is not None:
        parser.error("--data: every variant renders its own data; this command takes no --data")
    from handshape_tf.data.shards import DatasetError
    from train.interrupts import TrainingInterrupted
    from train.loop import TrainingDiverged, make_environment

    try:
        base = resolve(args)
        configs = {name: merge(base, VARIANTS[name]).validated() for name in args.variants}
        environment = make_environment(args.strategy)
        progress = not args.no_progress
        reference = prepare_data(args, base, environment.chief, progress)  # the sets every variant is judged on
        if reference.unseen_path is None:
            raise ConfigError("dataset.unseen_samples is 0; the ablation needs the unseen-domain set")
    except (ConfigError, DatasetError, FileNotFoundError, ValueError) as error:
        print_error(error)
        return EXIT_BAD_INPUT

    def judged_on_reference(model, config, data, run_dir, model_path):
        return evaluate(model, config, dataclasses.replace(reference, train=data.train), run_dir, model_path)

    folder = args.run_dir or args.workdir / f"domain-ablations-{args.preset}"
    rows = []
    for name, config in configs.items():
        logger.info("variant %s (%d of %d): %s", name, len(rows) + 1, len(configs), VARIANTS[name] or "defaults")
        try:
            data = prepare_data(args, config, environment.chief, progress)
            report = train_run(
                config, folder / name, data, environment, progress=progress, evaluate_fn=judged_on_reference
            )
        except TrainingDiverged as error:
            logger.error("variant %s diverged: %s", name, error)
            rows.append({"variant": name, "diverged": str(error)})
            continue
        except (ConfigError, DatasetError, ValueError) as error:
            print_error(error)
            return EXIT_BAD_INPUT
        except TrainingInterrupted as error:
            print_error(error)
            return EXIT_INTERRUPTED
        if not environment.chief:
            continue
        evaluation = report["evaluation"] or {}
        rows.append(
            {
                "variant": name,
                "overrides": VARIANTS[name],
                "heldout": evaluation.get("model"),
                "unseen": evaluation.get("unseen"),
                "mean_baseline": evaluation.get("mean_baseline"),
                "steps": report["training"]["global_step"],
                "run_dir": str(folder / name),
            }
        )
    if not environment.chief:
        return 0
    baseline = next((row["mean_baseline"] for row in rows if row.get("mean_baseline")), None)
    rows.append({"variant": "mean mesh (trivial)", "heldout": baseline})
    table = markdown_table(rows)
    intro = (
        f"Held-out: {reference.heldout_path} ({base.dataset.domain} domain); unseen: {reference.unseen_path}; "
        f"{args.budget or base.budget_minutes:g} min of training per variant, preset {args.preset!r}. "
        "PA = after Procrustes alignment.\n\n"
    )
    (folder / "domain_ablations.md").write_text(intro + table)
    checkpoints.write_json_atomically(
        {"budget_minutes": base.budget_minutes, "preset": args.preset, "rows": rows}, folder / "domain_ablations.json"
    )
    print(intro + table)
    print(f"written: {folder / 'domain_ablations.md'}, {folder / 'domain_ablations.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
