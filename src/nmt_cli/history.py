"""A run's history: one row per validation (at every epoch's end, every `--validate-every-steps`
steps, and where a run stops inside an epoch), kept in `history.csv`, written to TensorBoard
and printed as training goes. `HistoryRow` is the one definition of a row: the CSV's columns are its fields
in order, and each field's metadata says how the console shows it."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

from nmt_cli import files
from nmt_cli.errors import UserError


def _shown(title: str, width: int, spec: str, default=MISSING):
    return field(default=default, metadata={"title": title, "width": width, "format": spec})


@dataclass(frozen=True)
class HistoryRow:
    epoch: int = _shown("epoch", 6, "d")  # the epoch validated: complete, or under way
    loss: float = _shown("loss", 9, ".4f")  # the masked cross-entropy of the epoch's training batches so far
    accuracy: float = _shown("acc", 8, ".4f")
    val_loss: float = _shown("val_loss", 10, ".4f")
    val_accuracy: float = _shown("val_acc", 9, ".4f")
    val_bleu: float = _shown("val_bleu", 9, ".2f")  # greedy dev BLEU; NaN unless --best-by bleu
    learning_rate: float = _shown("lr", 10, ".2e")  # at the validation
    seconds: float = _shown("seconds", 9, ".1f")
    tokens_per_second: float = _shown("tok/s", 9, ".0f")  # real (not padding) target tokens
    steps: float = _shown("step", 8, ".0f", default=math.nan)  # optimizer steps so far, over every run; NaN: unknown

    def figure(self, best_by: str) -> float:
        """The figure `--best-by` ranks epochs by, as a score where higher is better."""
        return self.val_bleu if best_by == "bleu" else -self.val_loss

    def figure_text(self, best_by: str) -> str:
        """That figure as people read it: "val_bleu 31.20" or "val_loss 1.2345"."""
        return f"val_bleu {self.val_bleu:.2f}" if best_by == "bleu" else f"val_loss {self.val_loss:.4f}"

    def scalars(self) -> dict[str, dict[str, float]]:
        """The TensorBoard scalars of the validation, on Keras' two sides."""
        train = {"loss": self.loss, "accuracy": self.accuracy, "learning_rate": self.learning_rate}
        validation = {"loss": self.val_loss, "accuracy": self.val_accuracy, "bleu": self.val_bleu}
        return {"train": {**train, "tokens_per_second": self.tokens_per_second}, "validation": validation}

    def shown(self) -> list[tuple[str, int, str]]:
        """(title, width, formatted value) of each column the console shows."""
        return [
            (f.metadata["title"], f.metadata["width"], format(getattr(self, f.name), f.metadata["format"]))
            for f in fields(self)
            if f.metadata
        ]


COLUMNS = tuple(f.name for f in fields(HistoryRow))


def best_row(rows: list[HistoryRow], best_by: str) -> HistoryRow | None:
    """The row with the best `best_by` figure (the first of equals); one without it never is."""
    scored = [row for row in rows if not math.isnan(row.figure(best_by))]
    return max(scored, key=lambda row: row.figure(best_by), default=None)


def read_history(path: Path) -> list[HistoryRow]:
    if not path.exists():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as stream:
            rows = [{name: float(line[name]) for name in COLUMNS} for line in csv.DictReader(stream)]
        return [HistoryRow(**{**row, "epoch": int(row["epoch"])}) for row in rows]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise UserError(f"{path} is damaged: restore it, or start over with `nmt train --restart`") from None


def write_history(path: Path, rows: list[HistoryRow]) -> None:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        steps = "nan" if math.isnan(row.steps) else int(row.steps)
        writer.writerow([row.epoch, *(f"{getattr(row, name):.6g}" for name in COLUMNS[1:-1]), steps])
    files.write_text(path, out.getvalue())
