"""nmt_cli.history: the one definition of an epoch's row, in history.csv, TensorBoard and the console."""

from __future__ import annotations

import math

import pytest

from nmt_cli.errors import UserError
from nmt_cli.history import COLUMNS, HistoryRow, best_row, read_history, write_history


def row(epoch: int, val_loss: float, val_bleu: float = math.nan) -> HistoryRow:
    return HistoryRow(epoch, 2.0, 0.5, val_loss, 0.6, val_bleu, 1e-3, 3.0, 100.0, epoch * 10)


def test_rows_round_trip_through_the_csv(tmp_path):
    rows = [row(1, 2.5, 10.0), row(2, 2.25)]
    write_history(tmp_path / "history.csv", rows)
    assert (tmp_path / "history.csv").read_text().splitlines()[0] == ",".join(COLUMNS)
    again = read_history(tmp_path / "history.csv")
    assert [r.epoch for r in again] == [1, 2] and isinstance(again[0].epoch, int)
    assert again[0].val_bleu == 10.0 and math.isnan(again[1].val_bleu) and again[1].steps == 20


def test_a_damaged_file_is_named(tmp_path):
    (tmp_path / "history.csv").write_text("epoch,loss\nthree,x\n")
    with pytest.raises(UserError, match="history.csv is damaged"):
        read_history(tmp_path / "history.csv")


def test_the_best_row_by_loss_or_bleu_skips_rows_without_the_figure():
    rows = [row(1, 3.0, 12.0), row(2, 2.0), row(3, 2.0, 11.0)]
    assert best_row(rows, "loss").epoch == 2  # the first of equals
    assert best_row(rows, "bleu").epoch == 1
    assert best_row([row(1, 1.0)], "bleu") is None


def test_each_row_names_its_tensorboard_scalars_and_console_columns():
    scalars = row(4, 1.5, 20.0).scalars()
    assert scalars["validation"] == {"loss": 1.5, "accuracy": 0.6, "bleu": 20.0}
    assert set(scalars["train"]) == {"loss", "accuracy", "learning_rate", "tokens_per_second"}
    shown = row(4, 1.5, 20.0).shown()
    assert [title for title, _, _ in shown] == [
        "epoch", "loss", "acc", "val_loss", "val_acc", "val_bleu", "lr", "seconds", "tok/s", "step"
    ]  # fmt: skip
    assert shown[0][2] == "4" and shown[3][2] == "1.5000"
