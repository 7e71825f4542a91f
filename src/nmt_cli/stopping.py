"""The stop rule of a training run, in plain Python: stop signals, the time budget, patience,
and a loss that is no longer a number. SIGINT and SIGTERM ask a run to stop at the next step
boundary; a second one kills the process at once."""

from __future__ import annotations

import math
import os
import signal
from dataclasses import dataclass
from enum import IntEnum
from types import TracebackType

from nmt_cli.errors import UserError

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """Catches the stop signals while in a `with` block; `received` is the first one caught."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        self._previous = {number: signal.getsignal(number) for number in STOP_SIGNALS}
        self.catch()
        return self

    def catch(self) -> None:
        """Take the stop signals (again): TensorFlow's cluster server puts in a SIGTERM handler of
        its own, which ignores the signal."""
        for number in STOP_SIGNALS:
            signal.signal(number, self._ask)

    def _ask(self, signal_number: int, frame: object) -> None:
        if self.received is not None:
            signal.signal(signal_number, signal.SIG_DFL)
            os.kill(os.getpid(), signal_number)
        self.received = signal_number

    def __exit__(self, kind: type | None, error: BaseException | None, traceback: TracebackType | None) -> None:
        for number, handler in self._previous.items():
            # A handler installed outside Python reads as None: the default is the nearest to it.
            signal.signal(number, signal.SIG_DFL if handler is None else handler)


class StopReason(IntEnum):
    """Why a run stops before its last epoch. When workers ask for different ones, the strongest
    (highest) wins, so that all stop together for the same reason."""

    NONE = 0
    TIME_BUDGET = 1
    PATIENCE = 2
    SIGNAL = 3

    def describe(self, patience: int, signal_number: int | None) -> str:
        """What `nmt train` reports the run was stopped by."""
        if self is StopReason.SIGNAL:
            return signal.Signals(signal_number or signal.SIGTERM).name
        return {StopReason.TIME_BUDGET: "time budget", StopReason.PATIENCE: f"--patience {patience}"}[self]


FIRST_RESERVE_SECONDS = 30.0  # kept for the final validation before any has been timed


@dataclass
class StopRule:
    """When a run stops early, asked at every step and epoch end.

    A stop signal stops at the next step. The time budget and patience count only in the process
    that `decides` (the chief of several workers, whose clock and figures count): the budget stops
    once what is left of it would not cover `reserve`, the time the last epoch's end took
    (validation, BLEU, saving), so that the final validation and checkpoint fit in it; patience
    stops after `patience` epochs without a better figure (0: never).
    """

    deadline: float  # time.monotonic() at which the budget is spent (math.inf: no budget)
    patience: int
    signals: StopSignals
    decides: bool = True
    reserve: float = FIRST_RESERVE_SECONDS

    def request(self, now: float | None = None, epochs_without_better: int | None = None) -> StopReason:
        """What this process asks for at a step's end (`now`) or an epoch's end (with the count of
        epochs without a better figure); `now` is None where the budget has stopped the run already."""
        if self.signals.received is not None:
            return StopReason.SIGNAL
        if not self.decides:
            return StopReason.NONE
        if epochs_without_better is not None and self.patience and epochs_without_better >= self.patience:
            return StopReason.PATIENCE
        if now is not None and now + self.reserve >= self.deadline:
            return StopReason.TIME_BUDGET
        return StopReason.NONE


def refuse_non_finite(what: str, value: float, where: object) -> None:
    """A loss that is no longer a number ends the run: nothing from that step on can be saved."""
    if not math.isfinite(value):
        raise UserError(
            f"the {what} became {value} at {where}; nothing from this step on was saved: "
            "resume from the last checkpoint with a lower --learning-rate (or more --warmup)"
        )
