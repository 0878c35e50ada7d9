"""`BudgetedRun`: one model trained by Adam for a training-clock budget, checkpointed and
resumable; the single-stage runs (`train.detector`, `train.side`) drive their own steps with it.
The staged runs use `train.loop.StagedTrainer` instead."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import keras
import tensorflow as tf

from train import checkpoints
from train.interrupts import StopSignals, TrainingInterrupted
from train.schedules import StageSchedule

logger = logging.getLogger(__name__)


class BudgetedRun:
    """One model trained by Adam for a training-clock budget, checkpointed and resumable: the
    single-stage runs (`train.detector`, `train.side`).

    The rate follows `StageSchedule` over the budget (warm-up, constant until `decay_start`,
    half a cosine down to `final_rate_fraction`). The checkpoint holds the model, the optimizer,
    `step` and `seconds` (the training clock: time spent in steps); the latest is restored here.

    Args:
      model: the Keras model.
      run_dir: the run folder (`checkpoints.prepare_run_dir` already called).
      config: anything with learning_rate, warmup_steps, final_rate_fraction, decay_start,
        budget_minutes and checkpoint_minutes.

    Inside `with run:`, SIGTERM or SIGINT makes `training` save a checkpoint and raise
    `TrainingInterrupted` (`train.interrupts`).

    Example:
      run = BudgetedRun(model, run_dir, config)
      with run:
          while run.training:
              with run.step_clock():
                  loss = train_step(run.optimizer, batch)
              run.save_every_so_often()
    """

    def __init__(self, model: keras.Model, run_dir: Path, config):
        self.config = config
        self.budget_seconds = config.budget_minutes * 60.0
        self._budget_used = tf.Variable(0.0, dtype=tf.float32, trainable=False, name="budget_used")
        self.schedule = StageSchedule(
            config.learning_rate, config.warmup_steps, self._budget_used, config.final_rate_fraction, config.decay_start
        )
        self.optimizer = keras.optimizers.Adam(self.schedule)
        self.optimizer.build(model.trainable_variables)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="seconds")
        checkpoint = tf.train.Checkpoint(
            **checkpoints.model_checkpoint_items(model), optimizer=self.optimizer, step=self.step, seconds=self.seconds
        )
        self.manager = tf.train.CheckpointManager(checkpoint, str(run_dir / checkpoints.CHECKPOINTS), max_to_keep=2)
        if self.manager.latest_checkpoint:
            checkpoint.restore(self.manager.latest_checkpoint).expect_partial()
            logger.info("resumed %s at step %d (%.1f min trained)", run_dir, int(self.step), self.minutes)
        self.history = checkpoints.History(run_dir / checkpoints.HISTORY_FILE)
        self.history.truncate(int(self.step))
        self._last_save = time.monotonic()
        self._signals = StopSignals()

    def __enter__(self) -> BudgetedRun:
        self._signals.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._signals.__exit__(*exc)

    @property
    def training(self) -> bool:
        """Whether the training clock is still within the budget.

        Raises:
          TrainingInterrupted: a stop signal came (inside `with run:`); a checkpoint was saved.
        """
        if self._signals.received:
            self.save()
            raise TrainingInterrupted(
                f"training stopped by {self._signals.received} at step {int(self.step)} ({self.minutes:.1f} "
                "training minutes); a checkpoint was saved: run the same command again to resume"
            )
        return float(self.seconds) < self.budget_seconds

    @property
    def minutes(self) -> float:
        return float(self.seconds) / 60

    @property
    def learning_rate(self) -> float:
        return float(self.schedule(self.optimizer.iterations))

    def step_clock(self):
        """A context for one training step: sets the schedule's progress before it, counts the
        step and its time after it."""
        run = self

        class _Clock:
            def __enter__(self):
                run._budget_used.assign(min(float(run.seconds) / run.budget_seconds, 1.0))
                self.start = time.monotonic()

            def __exit__(self, kind, value, traceback):
                if kind is None:
                    run.step.assign_add(1)
                    run.seconds.assign_add(time.monotonic() - self.start)

        return _Clock()

    def save_every_so_often(self) -> None:
        """A checkpoint when `checkpoint_minutes` have passed since the last one."""
        if time.monotonic() - self._last_save >= self.config.checkpoint_minutes * 60:
            self.save()

    def save(self) -> None:
        self.manager.save()
        self._last_save = time.monotonic()
