"""Stopping a training run cleanly: SIGTERM (a scheduler or session ending) or SIGINT (Ctrl-C)
while a run trains is remembered instead of ending the process, so the loop finishes the step in
flight, saves a checkpoint and raises `TrainingInterrupted`; the same command resumes with
nothing lost. A second signal ends the process as before. Used by `train.loop.StagedTrainer`
and `train.budgeted_run.BudgetedRun`; the entry points exit with `cli.EXIT_INTERRUPTED`.
"""

from __future__ import annotations

import logging
import signal
import threading

logger = logging.getLogger(__name__)

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class TrainingInterrupted(Exception):
    """Training stopped on SIGTERM or SIGINT after saving a checkpoint."""


class StopSignals:
    """While entered, SIGTERM and SIGINT set `received` (the signal's name) instead of ending
    the process (module docstring). A signal the process ignores (SIGINT in a background job)
    stays ignored; outside the main thread, where Python cannot install handlers, it does nothing.

    Example:
      with StopSignals() as signals:
          while training and not signals.received:
              step()
    """

    def __init__(self):
        self.received: str | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for number in _SIGNALS:
                if signal.getsignal(number) is not signal.SIG_IGN:
                    self._previous[number] = signal.signal(number, self._handle)
        return self

    def _handle(self, number, frame) -> None:
        if self.received is not None:  # the second one: what the process did before
            signal.signal(number, self._previous[number])
            signal.raise_signal(number)
            return
        self.received = signal.Signals(number).name
        logger.warning("%s: stopping after this step with a checkpoint (send it again to stop at once)", self.received)

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}
