"""Validation and resume points every N optimizer steps (`--validate-every-steps`,
`--save-every-steps`): history rows inside epochs, a best model chosen at any validation, and a
run killed inside an epoch that resumes to the history of one never killed."""

from __future__ import annotations

import math

import pytest

from conftest import RecordingReporter, run_training
from nmt_cli.checkpoints import BestStamp, Position, resume_points
from nmt_cli.history import read_history
from nmt_cli.plan import TrainRequest
from nmt_cli.workspace import Workspace

MODEL = {"arch": "attention", "units": 32, "embedding_dim": 16, "dropout": 0.0}
TRAINING = {"batch_size": 32, "best_by": "loss", "save_every": 5}
BATCHES_PER_EPOCH = 63  # 2,000 training pairs of the reversal data, 32 a batch


class Killed(BaseException):
    """Stands for SIGKILL: raised right after a save, it leaves the files as a kill would, and
    nothing in training catches it."""


class KilledAfter(RecordingReporter):
    def __init__(self, save: str):
        super().__init__()
        self.save = save

    def saved(self, what):
        super().saved(what)
        if what.startswith(self.save):
            raise Killed(what)


def test_validation_every_n_steps_writes_a_row_each_and_can_choose_the_best_inside_an_epoch(tmp_path, reversal_data):
    model_dir = tmp_path / "model"
    reporter = RecordingReporter()
    training = {**TRAINING, "epochs": 1, "validate_every_steps": 20}
    run_training(TrainRequest(model_dir, reversal_data, MODEL, training), reporter)
    history = read_history(Workspace(model_dir).history)
    assert [(row.epoch, row.steps) for row in history] == [(1, 20), (1, 40), (1, 60), (1, BATCHES_PER_EPOCH)]
    assert all(math.isfinite(row.val_loss) and row.seconds > 0 for row in history)
    # The first validation is the best so far, wherever it falls.
    assert reporter.saves[0].startswith("best.keras with its inference models (epoch 1, batch 20, val_loss")
    stamp = BestStamp.read(Workspace(model_dir))
    best = min(history, key=lambda row: row.val_loss)
    # history.csv keeps 6 significant digits; the stamp, the figure itself
    assert stamp.figure == pytest.approx(-best.val_loss, rel=1e-5) and stamp.epoch == best.epoch
    assert stamp.position == (Position(1) if best.steps == BATCHES_PER_EPOCH else Position(0, int(best.steps)))


def test_a_run_killed_inside_an_epoch_resumes_from_its_last_step_checkpoint_to_the_same_history(
    tmp_path, reversal_data
):
    training = {**TRAINING, "epochs": 2, "save_every_steps": 15, "validate_every_steps": 25, "seed": 7}
    whole = tmp_path / "whole"
    run_training(TrainRequest(whole, reversal_data, MODEL, training))

    killed = tmp_path / "killed"
    # Step 90 is batch 27 of epoch 2: a step checkpoint, after the validation at step 75.
    with pytest.raises(Killed):
        run_training(
            TrainRequest(killed, reversal_data, MODEL, training), KilledAfter("resume.keras (epoch 2, batch 27)")
        )
    workspace = Workspace(killed)
    assert resume_points(workspace)[0] == (Position(1, 27), workspace.resume_checkpoint)
    reporter = RecordingReporter()
    run_training(TrainRequest(killed, None, {}, {}), reporter)
    assert any("resuming from epoch 2, batch 27" in note for note in reporter.notes)

    expected, got = read_history(Workspace(whole).history), read_history(workspace.history)
    assert [(row.epoch, row.steps) for row in got] == [(row.epoch, row.steps) for row in expected]
    # With no dropout and deterministic ops, the resumed run takes the very steps of the whole one
    # (the same batches, weights and optimizer state). Only the epoch's training figures are summed
    # in another order: the resumed run adds what the resume point carried to its own sums, in
    # float32, which moves them by about 1e-7; the validation figures are the same arithmetic.
    for mine, theirs in zip(got, expected):
        assert mine.loss == pytest.approx(theirs.loss, rel=1e-5)
        assert mine.accuracy == pytest.approx(theirs.accuracy, rel=1e-5)
        assert mine.val_loss == pytest.approx(theirs.val_loss, rel=1e-6)
        assert mine.val_accuracy == theirs.val_accuracy and mine.learning_rate == theirs.learning_rate
