"""Early stopping on the smoothed training loss (Decisions: Architecture).

The per-step data loss (1/2 MSE, without the L2 term, which keeps falling as weights shrink)
on 32 frames is too noisy to stop on; an exponential moving average of it is watched instead.
"""

from __future__ import annotations

import math

from dlga.training.checkpoints import TrainState


class EarlyStopping:
    """Stop when the smoothed per-step data loss has not reached a new minimum for ``patience`` steps.

    The watched value is an exponential moving average with factor ``smoothing`` (0: the raw
    loss); the first step starts it. ``patience`` 0 never stops.
    """

    def __init__(self, patience: int, smoothing: float):
        self.patience = int(patience)
        self.smoothing = float(smoothing)
        self.ema = math.nan
        self.best = math.inf
        self.since_best = 0

    def update(self, loss: float) -> bool:
        """Take one step's loss; True when training should stop."""
        self.ema = loss if math.isnan(self.ema) else self.smoothing * self.ema + (1 - self.smoothing) * loss
        if self.ema < self.best:
            self.best, self.since_best = self.ema, 0
        else:
            self.since_best += 1
        return bool(self.patience) and self.since_best >= self.patience

    def load(self, state: TrainState) -> None:
        self.ema = float(state["ema_loss"].numpy())
        self.best = float(state["best_ema_loss"].numpy())
        self.since_best = int(state["since_best"].numpy())

    def store(self, state: TrainState) -> None:
        state["ema_loss"].assign(self.ema)
        state["best_ema_loss"].assign(self.best)
        state["since_best"].assign(self.since_best)
