"""How the core reports progress without knowing about terminals.

The core calls a `Reporter`; the CLI passes one that renders with rich, tests pass the silent
default or a recording one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from nmt_cli.history import HistoryRow


class Task(Protocol):
    def advance(self, amount: float = 1, **fields: object) -> None: ...


class _SilentTask:
    def advance(self, amount: float = 1, **fields: object) -> None:
        pass


class Reporter:
    """Receives progress from the core. The base class ignores everything."""

    @contextmanager
    def task(self, description: str, total: float | None = None, unit: str = "") -> Iterator[Task]:
        """A unit of work with an optional known size; `advance` as it proceeds."""
        yield _SilentTask()

    def note(self, message: str) -> None:
        """Something worth telling the user that is not a problem."""

    def warn(self, message: str) -> None:
        """Something the user should know is not as it should be, though the work goes on."""

    def saved(self, what: str) -> None:
        """A checkpoint (or export) was written: which, and where in training."""

    def epoch_end(self, row: HistoryRow) -> None:
        """One training epoch finished: its history row."""
