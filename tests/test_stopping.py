"""nmt_cli.stopping: the stop rule and the stop signals, without TensorFlow."""

from __future__ import annotations

import math
import os
import signal

import pytest

from nmt_cli.errors import UserError
from nmt_cli.stopping import StopReason, StopRule, StopSignals, refuse_non_finite


def rule(deadline: float = math.inf, patience: int = 0, decides: bool = True, reserve: float = 5.0) -> StopRule:
    return StopRule(deadline, patience, StopSignals(), decides=decides, reserve=reserve)


def test_the_budget_stops_once_what_is_left_would_not_cover_the_reserve():
    budget = rule(deadline=100.0, reserve=5.0)
    assert budget.request(now=94.9) is StopReason.NONE
    assert budget.request(now=95.0) is StopReason.TIME_BUDGET
    assert budget.request() is StopReason.NONE  # inside an epoch the budget has cut short already
    assert rule().request(now=1e12) is StopReason.NONE  # no budget


def test_patience_counts_only_at_an_epochs_end():
    patient = rule(patience=2)
    assert patient.request(now=0.0, epochs_without_better=1) is StopReason.NONE
    assert patient.request(now=0.0, epochs_without_better=2) is StopReason.PATIENCE
    assert patient.request(now=0.0) is StopReason.NONE
    assert rule(patience=0).request(now=0.0, epochs_without_better=99) is StopReason.NONE


def test_a_signal_is_the_strongest_request_and_any_process_may_make_it():
    worker = rule(deadline=0.0, patience=1, decides=False)
    assert worker.request(now=10.0, epochs_without_better=5) is StopReason.NONE  # the chief decides those
    worker.signals.received = signal.SIGTERM
    assert worker.request(now=10.0) is StopReason.SIGNAL
    chief = rule(deadline=0.0, patience=1)
    chief.signals.received = signal.SIGINT
    assert chief.request(now=10.0, epochs_without_better=5) is StopReason.SIGNAL
    assert max(StopReason) is StopReason.SIGNAL and StopReason.PATIENCE > StopReason.TIME_BUDGET > StopReason.NONE


def test_each_reason_says_what_stopped_the_run():
    assert StopReason.TIME_BUDGET.describe(3, None) == "time budget"
    assert StopReason.PATIENCE.describe(3, None) == "--patience 3"
    assert StopReason.SIGNAL.describe(3, signal.SIGINT) == "SIGINT"
    assert StopReason.SIGNAL.describe(3, None) == "SIGTERM"  # another worker's signal


def test_a_loss_that_is_not_a_number_ends_the_run_naming_where():
    refuse_non_finite("training loss", 1.5, "epoch 2, batch 7")
    with pytest.raises(UserError, match="the training loss became nan at epoch 2, batch 7"):
        refuse_non_finite("training loss", math.nan, "epoch 2, batch 7")
    with pytest.raises(UserError, match="lower --learning-rate"):
        refuse_non_finite("validation loss", math.inf, "the end of epoch 3")


def test_stop_signals_are_caught_inside_the_block_and_given_back_after():
    before = signal.getsignal(signal.SIGTERM)
    with StopSignals() as signals:
        os.kill(os.getpid(), signal.SIGTERM)
        assert signals.received == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == before
