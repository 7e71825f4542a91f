"""Stop signals: SIGINT and SIGTERM ask a run to stop at the next step boundary; a second one
kills the process at once."""

from __future__ import annotations

import os
import signal
from types import TracebackType

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
