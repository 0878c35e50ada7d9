"""Learning-rate schedules (Keras LearningRateSchedules) of the training runs.

`LinearWarmup` ramps the rate up over the first steps; `StageSchedule` warms up, then follows
half a cosine over a stage's progress (a variable the training loop sets before each step). The
staged trainers (`train.loop`) and `train.budgeted_run.BudgetedRun` build their optimizers on them.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import tensorflow as tf


class LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """Learning rate rate * min(1, (t + 1) / steps) at the optimizer's step t."""

    def __init__(self, rate: float, steps: int):
        self.rate = rate
        self.steps = steps

    def __call__(self, step):
        return self.rate * keras.ops.minimum(1.0, (keras.ops.cast(step, "float32") + 1.0) / self.steps)

    def get_config(self) -> dict[str, Any]:
        return {"rate": self.rate, "steps": self.steps}


class StageSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """A stage's learning rate: linear warm-up over the optimizer's first `warmup_steps` steps
    times 1 until the stage's `progress` (a variable in [0, 1] the training loop sets before each
    step: the share of the stage's time or steps used) reaches `decay_start`, then half a cosine
    down to `final_fraction` at progress 1 (decay_start 0: cosine over the whole stage)."""

    def __init__(
        self, rate: float, warmup_steps: int, progress: tf.Variable, final_fraction: float, decay_start: float = 0.0
    ):
        self.rate = rate
        self.warmup_steps = warmup_steps
        self.progress = progress
        self.final_fraction = final_fraction
        self.decay_start = decay_start

    def __call__(self, step):
        warmup = keras.ops.minimum(1.0, (keras.ops.cast(step, "float32") + 1.0) / max(self.warmup_steps, 1))
        progress = keras.ops.cast(self.progress, "float32")
        phase = keras.ops.clip((progress - self.decay_start) / max(1.0 - self.decay_start, 1e-6), 0.0, 1.0)
        cosine = self.final_fraction + (1.0 - self.final_fraction) * 0.5 * (1.0 + keras.ops.cos(math.pi * phase))
        return self.rate * warmup * cosine

    def get_config(self) -> dict[str, Any]:
        return {
            "rate": self.rate,
            "warmup_steps": self.warmup_steps,
            "final_fraction": self.final_fraction,
            "decay_start": self.decay_start,
        }
