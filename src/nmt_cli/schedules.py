"""Learning-rate schedules: functions of the optimizer's step count.

A schedule holds no state of its own: the optimizer's step count, saved in every checkpoint,
is where a resumed run picks it up, so the rate after a resume is the rate it would have been.
Registered with Keras so that checkpoints load with `safe_mode`.
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="nmt")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to `peak` over `warmup` steps, then `constant` (stays at `peak`) or
    `inverse_sqrt` (`peak * sqrt(warmup / step)`, the Transformer's "Noam" decay)."""

    def __init__(self, kind: str, peak: float, warmup: int = 0):
        self.kind, self.peak, self.warmup = kind, peak, warmup

    def __call__(self, step):
        step = ops.cast(step, "float32") + 1.0  # the rate of the step about to be taken
        warmup = float(max(self.warmup, 1))
        rate = self.peak * ops.minimum(1.0, step / warmup)
        if self.kind == "inverse_sqrt":
            rate = rate * ops.minimum(1.0, ops.sqrt(warmup / step))
        return rate

    def get_config(self):
        return {"kind": self.kind, "peak": self.peak, "warmup": self.warmup}
