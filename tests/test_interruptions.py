"""Real `nmt train` processes interrupted as a user or a scheduler would: SIGINT, SIGTERM and
SIGKILL (also in the middle of a checkpoint write), two runs on one directory, and resuming
after each. Every process is bounded in time and killed if a test fails."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import free_local_ports
from nmt_cli import files
from nmt_cli.checkpoints import Position, resume_points
from nmt_cli.history import read_history
from nmt_cli.workspace import Workspace

# A model small enough that an epoch of the reversal task (250 batches of 8) takes a second or two.
TINY = ["--arch", "seq2seq", "--units", "16", "--embedding-dim", "8", "--batch-size", "8", "--best-by", "loss"]


@pytest.fixture
def runs():
    """Starts `nmt train` processes; whatever is still running at the end is killed."""
    started: list[subprocess.Popen] = []

    def start(*args, env=None) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, "-m", "nmt_cli", "train", *map(str, args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "COLUMNS": "200", **(env or {})},
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=30)


def wait_for(condition, seconds: float = 120, what: str = "") -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {seconds} s for {what}")
        time.sleep(0.05)


def finish(process: subprocess.Popen, seconds: float = 180) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=seconds)
    return process.returncode, out, err


def history_epochs(model_dir: Path) -> list[int]:
    return [row.epoch for row in read_history(Workspace(model_dir).history)]


@pytest.mark.parametrize("signal_number, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_saves_where_training_is_and_the_same_command_resumes(
    tmp_path, reversal_data, runs, signal_number, code
):
    model_dir = tmp_path / "model"
    command = ["--data-dir", reversal_data, "--model-dir", model_dir, *TINY, "--epochs", "3", "--save-every", "3"]
    process = runs(*command)
    workspace = Workspace(model_dir)
    wait_for(lambda: workspace.history.exists(), what="the end of epoch 1")  # no checkpoint before epoch 3
    process.send_signal(signal_number)
    returncode, _, err = finish(process)
    assert returncode == code, err
    # stderr is a pipe here, as in a batch job: the epoch's row and what was saved come as lines too.
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith((" ", "epoch", "saved "))]
    assert len(lines) == 1 and lines[0].startswith(f"stopped by {signal.Signals(signal_number).name} at "), err
    assert "run the same `nmt train` command to resume" in lines[0] and "Traceback" not in err
    (position, checkpoint), *_ = resume_points(workspace)
    assert position >= Position(1) and str(checkpoint) in lines[0]

    returncode, out, err = finish(runs(*command))
    assert returncode == 0, err
    assert f"resuming from {position}" in err
    assert history_epochs(model_dir) == [1, 2, 3]
    assert workspace.saved_epochs()[-1] == 3 and not workspace.resume_stamp.exists()


def test_a_second_ctrl_c_stops_at_once(tmp_path, reversal_data, runs):
    model_dir = tmp_path / "model"
    workspace = Workspace(model_dir)
    # Every model write waits 3 s before it takes its name. The second Ctrl-C comes within 0.05 s
    # of the start of the save the first one asked for (of the resume point, or of the epoch's
    # checkpoint at an epoch's end: none is due before epoch 5): it must end the process then, by
    # the signal, not after the save (exit 130). Sent together, two signals could reach Python's
    # handler as one.
    command = ["--data-dir", reversal_data, "--model-dir", model_dir, *TINY, "--epochs", "50"]
    process = runs(*command, env={"NMT_TEST_SLOW_WRITES": "3"})
    wait_for(lambda: workspace.history.exists(), what="the end of epoch 1")
    process.send_signal(signal.SIGINT)

    def saving_for_the_stop() -> bool:
        names = [p.name for p in workspace.checkpoints.iterdir() if files.PARTIAL.match(p.name)]
        # The resume point is written under its staged name first (checkpoints._save_together).
        return any(name.startswith(("..resume.next.keras.", ".epoch-")) for name in names)

    wait_for(saving_for_the_stop, what="the save the first Ctrl-C asked for")
    process.send_signal(signal.SIGINT)
    returncode, _, _ = finish(process, seconds=20)
    assert returncode == -signal.SIGINT


def test_sigkill_in_the_middle_of_a_checkpoint_write_loses_nothing_finished(tmp_path, reversal_data, runs):
    model_dir = tmp_path / "model"
    command = ["--data-dir", reversal_data, "--model-dir", model_dir, *TINY, "--epochs", "3", "--save-every", "1"]
    workspace = Workspace(model_dir)
    # Every checkpoint file waits 2 s before it takes its name: a kill lands inside a write.
    process = runs(*command, env={"NMT_TEST_SLOW_WRITES": "2"})

    def writing():
        return any(".partial" in path.name for path in workspace.checkpoints.glob("*"))

    wait_for(lambda: workspace.saved_epochs() == [1] and writing(), what="a write after epoch 1's checkpoint")
    process.kill()
    finish(process)
    assert resume_points(workspace)[0] == (Position(1), workspace.checkpoint(1))

    returncode, _, err = finish(runs(*command))
    assert returncode == 0, err
    assert history_epochs(model_dir) == [1, 2, 3]
    assert workspace.saved_epochs() == [1, 2, 3]
    assert not [p for p in workspace.checkpoints.iterdir() if ".partial" in p.name]


def test_one_run_per_model_directory(tmp_path, reversal_data, runs):
    model_dir = tmp_path / "model"
    first = runs("--data-dir", reversal_data, "--model-dir", model_dir, *TINY, "--epochs", "50")
    workspace = Workspace(model_dir)
    wait_for(lambda: workspace.config.exists(), what="the first run to start")
    config = workspace.config.read_text()

    # Another run, even one that would start over with another architecture, is refused at once.
    for other in (["--epochs", "60"], ["--restart", "--arch", "attention"]):
        returncode, _, err = finish(runs("--data-dir", reversal_data, "--model-dir", model_dir, *other))
        assert returncode == 2 and err.count("\n") == 1, err
        assert err.startswith(f"error: {model_dir} is being trained by nmt train (process {first.pid})"), err
    assert workspace.config.read_text() == config and first.poll() is None

    first.send_signal(signal.SIGTERM)
    assert finish(first)[0] == 143
    # The lock went with the process: the directory trains again.
    returncode, _, err = finish(runs("--data-dir", reversal_data, "--model-dir", model_dir, "--epochs", "2"))
    assert returncode == 0, err


def test_a_directory_with_a_config_is_never_silently_re_initialised(tmp_path, reversal_data, runs):
    model_dir = tmp_path / "model"
    process = runs("--data-dir", reversal_data, "--model-dir", model_dir, *TINY, "--epochs", "50")
    workspace = Workspace(model_dir)
    wait_for(lambda: workspace.config.exists(), what="the run to start")
    process.kill()  # before any checkpoint
    finish(process)
    config = json.loads(workspace.config.read_text())
    returncode, _, err = finish(runs("--model-dir", model_dir, "--units", "32", "--epochs", "1"))
    assert returncode == 2 and "holds a model with units=16, not 32" in err, err
    assert json.loads(workspace.config.read_text()) == config


def test_a_kill_in_epoch_3_keeps_the_best_model_and_resumes_from_it(tmp_path, reversal_data, runs):
    """SIGKILL (the OOM killer, a power cut) in epoch 3 of a run that saves an epoch checkpoint
    every 5: the best model of epoch 2 and the history are kept, translation works throughout,
    and the same command resumes from the end of epoch 2 (a resume point is saved at every
    epoch's end, best.keras being one)."""
    from nmt_cli.checkpoints import complete_best_position

    model_dir = tmp_path / "model"
    command = ["--data-dir", reversal_data, "--model-dir", model_dir, *TINY, "--epochs", "4", "--save-every", "5"]
    process = runs(*command)
    workspace = Workspace(model_dir)

    def in_epoch_3() -> bool:  # epoch 2's end is saved: its history row, and its resume point
        points = resume_points(workspace) if workspace.checkpoints.is_dir() else []
        return bool(points) and points[0][0] == Position(2) and history_epochs(model_dir) == [1, 2]

    wait_for(in_epoch_3, what="epoch 3")
    process.kill()
    finish(process)
    assert workspace.saved_epochs() == []  # no epoch checkpoint yet: --save-every 5
    best = complete_best_position(workspace)
    assert best is not None and best <= Position(2)
    kept = workspace.best.read_bytes()
    translated = subprocess.run(
        [sys.executable, "-m", "nmt_cli", "translate", "--model-dir", str(model_dir), "a b c"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert translated.returncode == 0 and translated.stdout.count("\n") == 1, translated.stderr  # 2 epochs: maybe empty
    returncode, _, err = finish(runs(*command))
    assert returncode == 0, err
    assert "resuming from the end of epoch 2" in err
    assert history_epochs(model_dir) == [1, 2, 3, 4]
    assert workspace.best.exists() and (complete_best_position(workspace) > best or workspace.best.read_bytes() == kept)


@pytest.mark.parametrize("distribute", ["none", "multi-worker"])
def test_a_resumed_epoch_has_the_row_of_an_uninterrupted_one(tmp_path, reversal_data, runs, distribute):
    """SIGTERM inside epoch 2, then the same command: epoch 2's loss and accuracy count the
    batches before the stop too (the resume point carries them), so the history is the one an
    uninterrupted run with the same seed writes. No dropout, so nothing random differs; what may
    is float summation order. Keras' `fit` and the multi-worker loop (here a cluster of one)
    keep their figures apart, and each carries its own."""
    common = ["--data-dir", reversal_data, *TINY, "--dropout", "0", "--epochs", "2", "--save-every", "5"]
    common += ["--distribute", distribute]
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"

    def run(model_dir: Path) -> subprocess.Popen:
        address = f"127.0.0.1:{free_local_ports(1)[0]}"
        tf_config = {"cluster": {"worker": [address]}, "task": {"type": "worker", "index": 0}}
        return runs(*common, "--model-dir", model_dir, env={"TF_CONFIG": json.dumps(tf_config)})

    returncode, _, err = finish(run(whole))
    assert returncode == 0, err
    process = run(resumed)
    wait_for(lambda: Workspace(resumed).history.exists(), what="the end of epoch 1")
    time.sleep(0.5)  # some batches into epoch 2
    process.send_signal(signal.SIGTERM)
    returncode, _, err = finish(process)
    assert returncode == 143, err
    (position, _), *_ = resume_points(Workspace(resumed))
    assert position.epochs == 1 and position.batches > 0, position
    returncode, _, err = finish(run(resumed))
    assert returncode == 0, err
    expected, found = (read_history(Workspace(d).history) for d in (whole, resumed))
    assert [row.epoch for row in found] == [1, 2]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert [getattr(row, key) for row in found] == pytest.approx([getattr(r, key) for r in expected], rel=1e-4), key
