"""Rendering the core's progress and results with rich. Only the CLI imports this module."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from nmt_cli.config import DEFAULT_LOG_INTERVAL
from nmt_cli.history import HistoryRow, best_row
from nmt_cli.progress import Reporter

if TYPE_CHECKING:
    from nmt_cli.checkpoints import BestStamp

stdout = Console()
stderr = Console(stderr=True)


def say(text: str) -> None:
    """A plain result line: no markup (paths may hold [brackets]), no wrapping when piped."""
    stdout.print(text, markup=False, highlight=False, soft_wrap=True)


def tell(text: str) -> None:
    """A plain line on stderr, for what is not output (warnings, how a run stopped), as `say` prints."""
    stderr.print(text, markup=False, highlight=False, soft_wrap=True)


class _RichTask:
    def __init__(self, progress: Progress, task_id: int):
        self._progress, self._id = progress, task_id

    def advance(self, amount: float = 1, **fields: object) -> None:
        self._progress.update(self._id, advance=amount, fields=_format_fields(fields))


def _format_fields(fields: dict[str, object]) -> str:
    return "  ".join(
        f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}" for key, value in fields.items()
    )


class _LoggedTask:
    """A task's progress kept for the plain lines of a log (stderr not a terminal)."""

    def __init__(self, description: str, total: float | None, on_advance):
        self.description, self.total, self.done, self.fields = description, total, 0.0, {}
        self.started, self._on_advance = time.monotonic(), on_advance

    def advance(self, amount: float = 1, **fields: object) -> None:
        self.done += amount
        self.fields.update(fields)
        self._on_advance()

    def line(self, now: float) -> str:
        elapsed = now - self.started
        text = f"{self.description}: {self.done:g}"
        if self.total:
            text += f"/{self.total:g} ({100 * self.done / self.total:.0f}%)"
        text += f", {_duration(elapsed)} elapsed"
        if self.total and self.done:
            text += f", {_duration(elapsed / self.done * max(self.total - self.done, 0))} left"
        return text + (f", {_format_fields(self.fields)}" if self.fields else "")


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}"


class RichReporter(Reporter):
    """Progress bars on stderr, so stdout stays clean for results and pipes.

    Tasks may nest (a whole training run, and its current epoch): they share one live display,
    which rich requires, and each task's bar leaves when its task ends. When stderr is not a
    terminal (a batch job's log), there are no bars: every `log_interval` seconds of work one plain
    line gives every open task's count, elapsed and remaining time, and figures.
    """

    def __init__(self, console: Console = stderr, log_interval: float = DEFAULT_LOG_INTERVAL):
        self.console = console
        self._epoch_header_shown = False
        self._progress: Progress | None = None
        self._open_tasks = 0
        self.log_interval = log_interval
        self._logged: list[_LoggedTask] = []  # open tasks, outermost first (no terminal)
        self._last_line = time.monotonic()

    def _log_progress(self) -> None:
        now = time.monotonic()
        if now - self._last_line >= self.log_interval:
            self._last_line = now
            self.console.print(
                " | ".join(task.line(now) for task in self._logged), markup=False, highlight=False, soft_wrap=True
            )

    def _columns(self, unit: str) -> list:
        if unit == "bytes":
            return [
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
            ]
        # Narrow enough that description, counts, times and metrics fit in 80 columns.
        return [
            TextColumn("{task.description}"),
            BarColumn(bar_width=12),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[fields]}"),
        ]

    @contextmanager
    def task(self, description: str, total: float | None = None, unit: str = "") -> Iterator[_RichTask | _LoggedTask]:
        if not self.console.is_terminal:  # a log file gets plain lines, not redraws
            logged = _LoggedTask(description, total, self._log_progress)
            self._logged.append(logged)
            try:
                yield logged
            finally:
                self._logged.remove(logged)
            return
        if self._progress is None:
            self._progress = Progress(*self._columns(unit), console=self.console, transient=True)
            self._progress.start()
        progress = self._progress
        self._open_tasks += 1
        task_id = progress.add_task(description, total=total, fields="")
        try:
            yield _RichTask(progress, task_id)
        finally:
            progress.remove_task(task_id)
            self._open_tasks -= 1
            if not self._open_tasks:
                progress.stop()
                self._progress = None

    def note(self, message: str) -> None:
        self.console.print(f"note: {message}", markup=False, highlight=False, soft_wrap=True)

    def warn(self, message: str) -> None:
        self.console.print(f"warning: {message}", markup=False, highlight=False, soft_wrap=True)

    def saved(self, what: str) -> None:
        if not self.console.is_terminal:  # a log says when each save happened; a terminal's summary says where
            self.console.print(f"saved {what}", markup=False, highlight=False, soft_wrap=True)

    def epoch_end(self, row: HistoryRow) -> None:
        columns = row.shown()
        # soft_wrap: a row stays one line in a log, whatever width rich assumes off a terminal.
        if not self._epoch_header_shown:
            header = "".join(f"{title:>{width}}" for title, width, _ in columns)
            self.console.print(f"[bold]{header}[/]", soft_wrap=True)
            self._epoch_header_shown = True
        self.console.print("".join(f"{value:>{width}}" for _, width, value in columns), soft_wrap=True)


def _lengths_cell(stats: dict) -> str:
    """A "pieces mean / p95 / max" table cell."""
    return f"{stats['mean']:.1f} / {stats['p95']:.0f} / {stats['max']}"


def prepare_summary(manifest, rebuilt: bool, data_dir: str) -> Table:
    langs = manifest.source_lang, manifest.target_lang
    title = f"{data_dir}: " + ("prepared" if rebuilt else "already up to date (use --force to rebuild)")
    table = Table(title=title)
    table.add_column("split")
    table.add_column("pairs", justify="right")
    table.add_column("dropped", justify="right")
    for lang in langs:
        table.add_column(f"{lang} pieces mean / p95 / max", justify="right")
    for split, info in manifest.splits.items():
        dropped = info.get("dropped")
        dropped_text = (
            ", ".join(f"{count} {reason.replace('_', ' ')}" for reason, count in dropped.items()) if dropped else "-"
        )
        if info.get("held_out_from_train"):
            dropped_text = "held out from train"
        lengths = manifest.token_lengths[split]
        table.add_row(
            split,
            str(info["pairs"]),
            dropped_text,
            *(_lengths_cell(lengths[lang]) for lang in langs),
        )
    vocab = manifest.vocabulary
    table.caption = (
        "vocabulary: "
        + ", ".join(f"{lang} {vocab[lang]['actual']} (asked {vocab[lang]['requested']})" for lang in langs)
        + "; special ids: "
        + ", ".join(f"{k}={v}" for k, v in manifest.special_ids.items())
    )
    return table


def training_summary(result, model_dir: str) -> str:
    last = result.history[-1]
    by = result.config.training.best_by
    best = best_row(result.history, by) or last
    figure = best.figure_text(by)
    stopped = f" (stopped by {result.stopped_by})" if result.stopped_by else ""
    return (
        f"trained {model_dir} to {result.position}{stopped}: val_loss {last.val_loss:.4f}, "
        f"val_bleu {last.val_bleu:.2f}; best {figure} at epoch {best.epoch} (checkpoints/best.keras)"
    )


def score_line(score, as_json: bool) -> str:
    """What `nmt score` writes for one pair: total log-probability, per token, perplexity."""
    import json

    if as_json:
        return _escape_line_breaks(json.dumps(score.to_dict(), ensure_ascii=False)) + "\n"
    if score.log_prob is None:
        return "nan\tnan\tnan\n"
    return f"{score.log_prob:.4f}\t{score.per_token:.4f}\t{score.perplexity:.4f}\n"


def translation_lines(
    result, n_best: int, as_json: bool, n_best_format: str = "tsv", line: int = 0, attention: bool = False
) -> str:
    """What `nmt translate` writes for input line number `line` (0-based); with `attention`, the
    best candidate's JSON record holds its attention too."""
    import json

    if as_json:
        records = []
        for rank, c in enumerate(result.candidates[:n_best] or [None]):
            score = round(c.score, 4) if c else None
            record = {"source": result.source, "translation": c.text if c else "", "score": score}
            if attention and rank == 0:
                record["attention"] = result.attention.to_json() if result.attention is not None else None
            records.append(json.dumps(record, ensure_ascii=False))
        return "".join(_escape_line_breaks(record) + "\n" for record in records)
    if n_best == 1:
        return result.text + "\n"
    if n_best_format == "moses":  # only the rows found: Moses n-best readers group rows by line number
        return "".join(f"{line} ||| {c.text} ||| {c.score:.4f}\n" for c in result.candidates)
    # Always N rows, so that a reader can count them; a row with no score fills in for a
    # translation the search did not find (an empty input, or fewer distinct texts than N).
    rows = [f"{rank}\t{c.score:.4f}\t{c.text}\n" for rank, c in enumerate(result.candidates, 1)]
    return "".join(rows + [f"{rank}\t\t\n" for rank in range(len(rows) + 1, n_best + 1)])


def listening_line(url: str, model) -> str:
    """What `nmt serve` says once it listens."""
    return (
        f"listening on {url}: {model.workspace.root} ({model.manifest.source_lang} to {model.manifest.target_lang}, "
        f"checkpoint {model.checkpoint_name}); the page at {url}/, the API at /translate and /v1/translate; "
        "Ctrl+C stops"
    )


def _escape_line_breaks(record: str) -> str:
    """JSON allows U+2028, U+2029 and U+0085 raw, but readers that split lines on them would cut
    a record in two: escape them."""
    return record.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").replace("\u0085", "\\u0085")


def scores_text(scores) -> str:
    return (
        f"BLEU {scores.bleu:.2f}  ({scores.bleu_signature})\n"
        f"chrF {scores.chrf:.2f}  ({scores.chrf_signature})\n"
        f"{scores.sentences} sentences"
    )


def evaluation_text(evaluation) -> str:
    return (
        f"{evaluation.split} split, checkpoint {evaluation.checkpoint}, beam {evaluation.beam_size}, "
        f"{evaluation.engine} engine\n"
        + scores_text(evaluation.scores)
        + f" in {evaluation.seconds:.2f} s: {evaluation.sentences_per_second:.1f} sentences/s, "
        f"{evaluation.tokens_per_second:.0f} tokens/s\nhypotheses: {evaluation.hypotheses_file}"
    )


# How training chose the epoch best.keras holds, by `--best-by`.
BEST_BY_TEXT = {"bleu": "the highest dev BLEU of greedy search", "loss": "the lowest validation loss"}


def checkpoint_table(evaluations, best: BestStamp | None, best_by: str) -> Table:
    """Scores per checkpoint. Two different "bests": the highest BLEU in this table (*), and the
    weights `best.keras` holds, which training chose by `best_by`: those of `epoch-N` only when
    it was saved at that epoch's end (a run stopped inside an epoch saves its best there)."""
    top = max(evaluations, key=lambda e: e.scores.bleu)
    table = Table(title=f"{evaluations[0].split} split, beam {evaluations[0].beam_size}")
    for column in ("checkpoint", "BLEU", "chrF", "sentences/s", "best.keras"):
        table.add_column(column, justify="right")
    for e in evaluations:
        epoch = e.checkpoint.removeprefix("epoch-")
        holds_best = "= best" if best is not None and epoch.isdigit() and best.holds_end_of(int(epoch)) else ""
        mark = " *" if e is top else ""
        table.add_row(
            e.checkpoint + mark,
            f"{e.scores.bleu:.2f}",
            f"{e.scores.chrf:.2f}",
            f"{e.sentences_per_second:.1f}",
            holds_best,
        )
    held = f"the weights at {best.position}" if best is not None and best.position is not None else "the weights"
    table.caption = (
        f"* highest BLEU here; best.keras (--checkpoint best) holds {held}, chosen by {BEST_BY_TEXT[best_by]}"
    )
    return table


def _shape_text(shape) -> str:
    if shape and isinstance(shape[0], list):
        return ", ".join(_shape_text(s) for s in shape)
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def print_summary(view: dict, console: Console = stdout) -> None:
    for key, title in (
        ("training", "training model"),
        ("encoder", "encoder inference model"),
        ("decoder", "decoder inference model (one step)"),
    ):
        model = view["models"][key]
        table = Table(title=f"{title}: {model['name']}", title_justify="left")
        for column, justify in (
            ("layer (type)", "left"),
            ("output shape", "left"),
            ("params", "right"),
            ("connected to", "left"),
        ):
            table.add_column(column, justify=justify)
        for row in model["layers"]:
            table.add_row(
                f"{row['name']} ({row['type']})",
                _shape_text(row["output_shape"]),
                f"{row['params']:,}",
                ", ".join(row["connected_to"]) or "-",
            )
        table.caption = (
            f"total {model['total_params']:,} parameters: {model['trainable_params']:,} trainable, "
            f"{model['non_trainable_params']:,} non-trainable"
        )
        console.print(table)
    data = view.get("data")
    if data:
        langs = data["languages"]
        console.print(
            f"vocabulary: {langs['source']} {data['vocabulary']['source']}, "
            f"{langs['target']} {data['vocabulary']['target']}; "
            "special ids: " + ", ".join(f"{k}={v}" for k, v in data["special_ids"].items())
        )
        splits = Table(title="data", title_justify="left")
        for column in (
            "split",
            "pairs",
            f"{langs['source']} pieces mean / p95 / max",
            f"{langs['target']} pieces mean / p95 / max",
        ):
            splits.add_column(column, justify="right")
        for split, info in data["splits"].items():
            lengths = data["token_lengths"][split]
            splits.add_row(
                split,
                str(info["pairs"]),
                *(_lengths_cell(lengths[lang]) for lang in (langs["source"], langs["target"])),
            )
        console.print(splits)
    parent = (view.get("config") or {}).get("parent")
    if parent:
        console.print(
            f"fine-tuned from {parent['model_dir']} (checkpoint {parent['checkpoint']}, "
            f"sha256 {parent['sha256'][:12]})",
            markup=False,
            highlight=False,
        )
    if view["history"]:
        by = view["config"]["training"]["best_by"]
        history = Table(title=f"training history (* best.keras: {BEST_BY_TEXT[by]})", title_justify="left")
        rows = [HistoryRow(**row) for row in view["history"]]
        for title, _, _ in rows[0].shown():
            history.add_column(title, justify="right")
        # An epoch validated more than once (--validate-every-steps): best.keras holds its best row.
        best = best_row([row for row in rows if row.epoch == view["best_epoch"]], by)
        for row in rows:
            (_, _, epoch), *values = row.shown()
            history.add_row(epoch + (" *" if row is best else ""), *(value for _, _, value in values))
        console.print(history)
    if view["checkpoints"]:
        checkpoints = Table(title="checkpoints", title_justify="left")
        checkpoints.add_column("file")
        checkpoints.add_column("size", justify="right")
        for item in view["checkpoints"]:
            checkpoints.add_row(item["name"], _size_text(item["bytes"]))
        console.print(checkpoints)
    elif view["model_dir"] is None:
        console.print("untrained: no history or checkpoints yet")
    if view.get("export"):
        console.print(_export_line(view["export"]))
    for path in view.get("plots", []):
        console.print(f"drew {path}")


def _size_text(size: int) -> str:
    for unit in ("bytes", "KB", "MB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


def _export_line(export: dict) -> str:
    held = export["checkpoint"] + (f" (epoch {export['epoch']})" if export["epoch"] is not None else "")
    state = "translates by default" if export["current"] else f"stale: {export['checkpoint']} changed since"
    return (
        f"CTranslate2 export: {export['path']}, {export['quantization']}, {_size_text(export['bytes'])}, "
        f"holds {held}; {state}"
    )


def export_text(folder, stamp, size: int) -> str:
    held = stamp.checkpoint + (f" (epoch {stamp.epoch})" if stamp.epoch is not None else "")
    return f"exported {held} to {folder}: CTranslate2, {stamp.quantization}, {_size_text(size)}"
