"""Run folders: resolved config, training state checkpoints, atomic final files.

A run folder holds:
  config.yaml          the resolved TrainConfig (written before training starts);
  checkpoints/         tf.train.CheckpointManager files (model, the stage optimizers and the
                       run state: stage, step, samples consumed per input pipeline, seconds);
  logs/                TensorBoard summaries;
  history.jsonl        one line of losses per logged step (for learning_curve.png);
  model.keras          the final model (written atomically);
  report.json          training summary and held-out metrics;
  learning_curve.png   loss per stage against the step.

TensorFlow checkpoints are written under a new prefix and then registered in the `checkpoint`
state file, which is replaced atomically: a process killed while saving leaves the previous
checkpoint as the latest. Under multi-worker training only the chief writes the run folder;
every other worker writes its checkpoints to `workers/worker-<i>/checkpoints` (all workers must
save together, and those copies show that every replica holds the same weights).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import yaml

from handshape_tf.config_utils import ConfigError, save_yaml, to_dict

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
CHECKPOINTS = "checkpoints"
HISTORY_FILE = "history.jsonl"
MODEL_FILE = "model.keras"
REPORT_FILE = "report.json"
CURVE_FILE = "learning_curve.png"
LOGS = "logs"
# Sections whose change makes a checkpoint unloadable or its state meaningless.
_FIXED_SECTIONS = ("model", "architecture", "baseline", "seed", "data", "batch_size")


def _differences(old: Any, new: Any, prefix: str = "") -> dict[str, tuple[Any, Any]]:
    if isinstance(old, dict) and isinstance(new, dict):
        result = {}
        for key in sorted(set(old) | set(new)):
            result.update(_differences(old.get(key), new.get(key), f"{prefix}{key}."))
        return result
    return {} if old == new else {prefix.rstrip("."): (old, new)}


def prepare_run_dir(run_dir: Path, config, *, chief: bool = True) -> bool:
    """Creates or reopens a run folder and writes config.yaml (chief only).

    A folder that already holds config.yaml is a run to resume: its model, architecture,
    baseline, seed, data and batch size must equal the new config's (ConfigError otherwise,
    naming the differing keys); other changes (budget, stage steps and learning rates, loss
    weights, checkpoint and evaluation settings) are allowed, logged and saved.

    Returns:
      True when the folder held a previous run (resume), False for a new one.

    Raises:
      ConfigError: the folder holds a run with a different fixed configuration.
    """
    run_dir = Path(run_dir)
    path = run_dir / CONFIG_FILE
    existing = path.is_file()
    if existing:
        old = yaml.safe_load(path.read_text()) or {}
        changes = _differences(old, to_dict(config))
        fixed = {key: change for key, change in changes.items() if key.split(".")[0] in _FIXED_SECTIONS}
        if fixed:
            detail = "; ".join(f"{key}: run has {a!r}, requested {b!r}" for key, (a, b) in sorted(fixed.items())[:8])
            raise ConfigError(
                f"{run_dir} holds a run with another configuration ({detail}); resume it with the same "
                f"settings or choose a new --run-dir"
            )
        for key, (before, after) in sorted(changes.items()):
            logger.info("resuming %s with %s changed from %r to %r", run_dir, key, before, after)
    if chief:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_yaml(config, path)
    return existing


def checkpoint_dir(run_dir: Path, chief: bool, worker_index: int) -> Path:
    """Where this worker's checkpoints go (module docstring)."""
    if chief:
        return Path(run_dir) / CHECKPOINTS
    return Path(run_dir) / "workers" / f"worker-{worker_index}" / CHECKPOINTS


def model_checkpoint_items(model) -> dict[str, Any]:
    """tf.train.Checkpoint arguments that hold all of a Keras model's state.

    Keras 3 keeps sub-layers stored in Python lists (the hourglass' residual modules, ...) out of
    TensorFlow's object graph, so a checkpoint of `model` alone holds only the few variables of
    directly assigned sub-layers. Trainable weights still reached it through the optimizers, but
    the BatchNorm moving statistics were lost: a restored model predicted with initial statistics
    in inference mode (meshes collapsed to the crop corner or tens of crop widths away). The
    list of `model.variables` (a fixed order for a given architecture) holds every variable.
    """
    return {"model": model, "model_variables": list(model.variables)}


def save_model_atomically(model, path: Path) -> Path:
    """Saves a Keras model to `path` (.keras) through a temporary file and a rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.keras")
    model.save(tmp)
    os.replace(tmp, path)
    return path


def write_json_atomically(data: dict[str, Any], path: Path) -> Path:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_json_default))
    os.replace(tmp, path)
    return path


def _json_default(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


class History:
    """history.jsonl: one JSON object per logged step, truncated to a restored step on resume.

    Args:
      path: the file.
      enabled: False (non-chief workers) keeps nothing on disk.
    """

    def __init__(self, path: Path, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled

    def rows(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        rows = []
        for line in self.path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut by a kill: drop it and what follows
        return rows

    def truncate(self, global_step: int) -> None:
        """Keeps the rows up to `global_step` (those the restored checkpoint had seen)."""
        if not self.enabled or not self.path.is_file():
            return
        kept = [row for row in self.rows() if row["global_step"] <= global_step]
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(json.dumps(row) + "\n" for row in kept))
        os.replace(tmp, self.path)

    def append(self, row: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a") as stream:
                stream.write(json.dumps(row) + "\n")


def plot_learning_curve(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """learning_curve.png: total loss per stage (log scale) against the global step."""
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axis = pyplot.subplots(figsize=(7, 4), dpi=100)
    for stage in dict.fromkeys(row["stage"] for row in rows):
        points = [(row["global_step"], row["loss"]) for row in rows if row["stage"] == stage]
        axis.plot(*zip(*points), label=stage, linewidth=1)
    axis.set_yscale("log")
    axis.set_xlabel("step")
    axis.set_ylabel("training loss")
    axis.grid(True, alpha=0.3)
    axis.legend(title="stage")
    figure.tight_layout()
    tmp = Path(path).with_name(Path(path).stem + ".tmp.png")
    figure.savefig(tmp)
    pyplot.close(figure)
    os.replace(tmp, path)
    return Path(path)
