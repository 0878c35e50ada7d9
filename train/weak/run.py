"""One fine-tuning run: open the init model, evaluate it, train, evaluate, report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from handshape_tf.config_utils import ConfigError, merge, to_dict
from handshape_tf.evaluation.plots import plot_pck_curves
from handshape_tf.inference.backends import load_keras_model
from train import checkpoints
from train.evaluate import to_millimetres
from train.weak.config import (
    InitRun,
    WeakConfig,
)
from train.weak.data import WeakData, read_batch
from train.weak.evaluation import MeshPlausibility, comparison_figure, evaluate_crops, has_uvd_mesh, predicted_meshes
from train.weak.pseudo_gt import cached_pseudo_gt
from train.weak.trainer import WeakTrainer

SOURCES_FILE = "sources.json"
BEFORE_FILE = "evaluation-before.json"
COMPARE_DIR = "no-pseudo-mesh"


def load_init_model(init: InitRun):
    """The run's model.keras as a Keras model (`handshape_tf.inference.backends.load_keras_model`)."""
    return load_keras_model(init.model_path)


def _check_sources(run_dir: Path, init: InitRun, data: WeakData) -> None:
    """Writes sources.json, or checks that a resumed run had the same init run and data."""
    sources = {
        "init": str(init.folder.resolve()),
        "train": str(Path(data.train.folder).resolve()),
        "test": str(Path(data.test.folder).resolve()),
    }
    path = Path(run_dir) / SOURCES_FILE
    if path.is_file():
        old = json.loads(path.read_text())
        if old != sources:
            raise ConfigError(
                f"{run_dir} holds a run of other sources ({old}); requested {sources}. Resume it with "
                "the same --init and --data, or choose a new --run-dir"
            )
    else:
        checkpoints.write_json_atomically(sources, path)


def evaluate_before(run_dir: Path, model, init: InitRun, data: WeakData, config: WeakConfig) -> dict[str, Any]:
    """The init model's test evaluation, cached in <run_dir>/evaluation-before.json."""
    path = Path(run_dir) / BEFORE_FILE
    key = {"init": init.describe(), "test": str(Path(data.test.folder).resolve()), "limit": config.evaluation.limit}
    if path.is_file():
        cached = json.loads(path.read_text())
        if cached.get("key") == key:
            return cached["evaluation"]
    evaluation = evaluate_crops(model, data.test, config)
    checkpoints.write_json_atomically({"key": key, "evaluation": evaluation}, path)
    return evaluation


def run_weak(
    config: WeakConfig, run_dir: Path, init: InitRun, data: WeakData, *, progress: bool = True, keep_meshes: int = 0
) -> dict[str, Any]:
    """Fine-tunes (or resumes) one run and evaluates it before and after.

    Args:
      config: resolved WeakConfig.
      run_dir: the run folder.
      init: the run to start from.
      data: training and test crop sets.
      progress: progress bars.
      keep_meshes: predicted test meshes (before and after) to return for figures.

    Returns:
      The report (also written to <run_dir>/report.json); with keep_meshes, "meshes" holds
      {"before": K x V x 3, "after": K x V x 3} (not written).

    Raises:
      ConfigError: the folder holds a run with another fixed configuration or other sources.
      train.loop.TrainingDiverged: non-finite loss.
    """

    run_dir = Path(run_dir)
    checkpoints.prepare_run_dir(run_dir, config)
    _check_sources(run_dir, init, data)
    model = load_init_model(init)
    before = evaluate_before(run_dir, model, init, data, config)
    pseudo_gt, pseudo_plausibility = None, None
    if config.loss.pseudo_mesh:
        pseudo_gt = cached_pseudo_gt(run_dir, model, init, data.train, config, progress)
        pseudo_plausibility = MeshPlausibility()
        batch = read_batch(data.train, np.arange(min(len(data.train), 512)))
        meshes_mm = to_millimetres(pseudo_gt[: len(batch["scale"])], batch, config.model.image_size, "uvd")
        pseudo_plausibility.update(meshes_mm, batch["scale"])
        pseudo_plausibility = pseudo_plausibility.summary()
    meshes = {}
    if keep_meshes and has_uvd_mesh(model):
        meshes["before"] = predicted_meshes(model, data.test, keep_meshes, config)
    trainer = WeakTrainer(config, run_dir, model, data.train, pseudo_gt, progress)
    summary = trainer.train()
    model_path = checkpoints.save_model_atomically(model, run_dir / checkpoints.MODEL_FILE)
    curve = checkpoints.plot_learning_curve(trainer.history.rows(), run_dir / checkpoints.CURVE_FILE)
    after = evaluate_crops(model, data.test, config)
    if meshes:
        meshes["after"] = predicted_meshes(model, data.test, keep_meshes, config)
    pck = plot_pck_curves(
        {"before": before["metrics"]["pose"], "after": after["metrics"]["pose"]},
        run_dir / "pck.png",
        title=f"3D PCK on {data.name} test ({len(data.test)} crops)",
    )
    report = {
        "run_dir": str(run_dir),
        "init": init.describe(),
        "data": data.describe(),
        "config": to_dict(config),
        "training": summary,
        "evaluation": {"before": before["headline"], "after": after["headline"]},
        "plausibility": {
            "before": before["plausibility"],
            "after": after["plausibility"],
            "pseudo_gt": pseudo_plausibility,
            "ground_truth": after["ground_truth_plausibility"],
        },
        "metrics": {"before": before["metrics"], "after": after["metrics"]},
        "files": {
            "model": str(model_path),
            "learning_curve": None if curve is None else str(curve),
            "pck": str(pck),
            "config": str(run_dir / checkpoints.CONFIG_FILE),
            "tensorboard": str(run_dir / checkpoints.LOGS),
            "checkpoints": str(run_dir / checkpoints.CHECKPOINTS),
        },
    }
    checkpoints.write_json_atomically(report, run_dir / checkpoints.REPORT_FILE)
    if meshes:
        report["meshes"] = meshes
    return report


def run_command(
    config: WeakConfig, run_dir: Path, init: InitRun, data: WeakData, runs: int, progress: bool = True
) -> tuple[dict[str, Any], dict[str, Any] | None, Path | None]:
    """`python -m train.weak_stb`: the fine-tuning run and, with runs=2, the same without L_pM in
    <run_dir>/no-pseudo-mesh; writes the comparison figure and the report.

    Returns:
      (report, the comparison run's report or None, the meshes figure or None).
    """
    keep = config.evaluation.figure_samples
    report = run_weak(config, run_dir, init, data, progress=progress, keep_meshes=keep)
    comparison = None
    if runs == 2:
        compare_config = merge(config, {"loss.pseudo_mesh": False}).validated()
        comparison = run_weak(compare_config, run_dir / COMPARE_DIR, init, data, progress=progress, keep_meshes=keep)
    figure = None
    meshes = report.pop("meshes", None)
    if meshes:
        columns = {"pretrained": meshes["before"], "weak": meshes["after"]}
        if "vertices_xyz" in data.test.fields:  # rendered sets know the true mesh
            truth = read_batch(data.test, np.arange(len(meshes["before"])))["vertices_xyz"]
            columns = {"ground truth": truth, **columns}
        if comparison is not None:
            columns["weak, no L_pM"] = comparison.pop("meshes")["after"]
        figure = comparison_figure(run_dir / "meshes.png", data.test, columns)
        report["files"]["meshes"] = str(figure)
    if comparison is not None:
        keys = ("run_dir", "evaluation", "plausibility")
        report["comparison_without_pseudo_mesh"] = {key: comparison[key] for key in keys}
    checkpoints.write_json_atomically(report, run_dir / checkpoints.REPORT_FILE)
    return report, comparison, figure
