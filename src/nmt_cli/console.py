"""Rendering the core's progress and results with rich. Only the CLI imports this module."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from nmt_cli.progress import Reporter

stdout = Console()
stderr = Console(stderr=True)


class _RichTask:
    def __init__(self, progress: Progress, task_id: int):
        self._progress, self._id = progress, task_id

    def advance(self, amount: float = 1, **fields: object) -> None:
        self._progress.update(self._id, advance=amount, fields=_format_fields(fields))

    def reset(self, total: float | None = None, description: str | None = None) -> None:
        self._progress.reset(self._id, total=total, description=description or self._progress.tasks[self._id].description)


def _format_fields(fields: dict[str, object]) -> str:
    return "  ".join(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}" for key, value in fields.items())


class RichReporter(Reporter):
    """Progress bars on stderr, so stdout stays clean for results and pipes."""

    def __init__(self, console: Console = stderr):
        self.console = console

    @contextmanager
    def task(self, description: str, total: float | None = None, unit: str = "") -> Iterator[_RichTask]:
        if unit == "bytes":
            columns = [TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn()]
        else:
            columns = [
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TaskProgressColumn(),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[fields]}"),
            ]
        # Off when stderr is not a terminal: a log file gets the notes and results, not redraws.
        with Progress(*columns, console=self.console, transient=True, disable=not self.console.is_terminal) as progress:
            yield _RichTask(progress, progress.add_task(description, total=total, fields=""))

    def note(self, message: str) -> None:
        self.console.print(f"[cyan]note:[/] {message}")

    def warn(self, message: str) -> None:
        self.console.print(f"[yellow]warning:[/] {message}")

    def epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        columns = "  ".join(f"{key} {_short(value)}" for key, value in metrics.items())
        self.console.print(f"[bold]epoch {epoch}[/]  {columns}")


def _short(value: float) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def prepare_summary(manifest: dict, rebuilt: bool, data_dir: str) -> Table:
    langs = manifest["languages"]["source"], manifest["languages"]["target"]
    title = f"{data_dir}: " + ("prepared" if rebuilt else "already up to date (use --force to rebuild)")
    table = Table(title=title)
    table.add_column("split")
    table.add_column("pairs", justify="right")
    table.add_column("dropped", justify="right")
    for lang in langs:
        table.add_column(f"{lang} pieces mean / p95 / max", justify="right")
    for split, info in manifest["splits"].items():
        dropped = info.get("dropped")
        dropped_text = ", ".join(f"{count} {reason.replace('_', ' ')}" for reason, count in dropped.items()) if dropped else "-"
        if info.get("held_out_from_train"):
            dropped_text = "held out from train"
        lengths = manifest["token_lengths"][split]
        table.add_row(
            split,
            str(info["pairs"]),
            dropped_text,
            *(f"{lengths[lang]['mean']:.1f} / {lengths[lang]['p95']:.0f} / {lengths[lang]['max']}" for lang in langs),
        )
    vocab = manifest["vocabulary"]
    table.caption = "vocabulary: " + ", ".join(
        f"{lang} {vocab[lang]['actual']} (asked {vocab[lang]['requested']})" for lang in langs
    ) + "; special ids: " + ", ".join(f"{k}={v}" for k, v in manifest["special_ids"].items())
    return table
