"""Training on the digit-reversal task: learning, checkpoint schedule, resume, reproducibility."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from conftest import run_training
from nmt_cli.config import load_config
from nmt_cli.datadir import DataDir
from nmt_cli.dataset import ParallelBatches
from nmt_cli.errors import UserError
from nmt_cli.history import COLUMNS, read_history
from nmt_cli.plan import TrainRequest
from nmt_cli.workspace import Workspace

# The LSTM with attention: training's mechanics are the same for every architecture, and it is the
# quickest to train.
SMALL = {"arch": "attention", "units": 32, "embedding_dim": 16, "dropout": 0.0}


def _train(model_dir: Path, data_dir: Path | None, epochs: int, save_every: int, **options) -> list[dict]:
    model_options = ("arch", "units", "embedding_dim", "dropout", "attention")
    model = {**SMALL, **{k: v for k, v in options.items() if k in model_options}}
    # By validation loss unless a test says otherwise: BLEU every epoch costs a search.
    training = {"epochs": epochs, "save_every": save_every, "batch_size": 32, "best_by": "loss"}
    training.update(
        {k: v for k, v in options.items() if k in ("seed", "learning_rate", "label_smoothing", "best_by", "patience")}
    )
    request = TrainRequest(
        model_dir=model_dir, data_dir=data_dir, model=model, training=training, restart=options.get("restart", False)
    )
    return run_training(request).history


@pytest.mark.parametrize("arch", ["seq2seq", "attention"])
def test_learns_digit_reversal(tmp_path, reversal_data, arch):
    # The attention model as conftest's fixture trains it (see there why Bahdanau's score).
    attention = {"attention": "bahdanau", "embedding_dim": 64} if arch == "attention" else {}
    history = _train(
        tmp_path / "model",
        reversal_data,
        epochs=20,
        save_every=20,
        arch=arch,
        units=64,
        learning_rate=0.01,
        label_smoothing=0.0,
        **attention,
    )
    assert history[-1].val_accuracy > 0.95, history[-1]


@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16"])
def test_the_transformer_learns_digit_reversal_in_either_precision(tmp_path, reversal_data, precision):
    import keras

    from nmt_cli.distribute import cpu_has_bfloat16

    if precision == "mixed_bfloat16" and not cpu_has_bfloat16():
        # oneDNN held below bfloat16 (ONEDNN_MAX_CPU_ISA) aborts the process on a bfloat16 matmul.
        pytest.skip("needs a CPU with bfloat16 instructions that oneDNN may use (AMX or AVX512_BF16)")

    model_dir = tmp_path / "model"
    model = {"arch": "transformer", "units": 32, "heads": 2, "ff_units": 64, "layers": 2, "dropout": 0.0}
    training = {"epochs": 12, "save_every": 12, "batch_tokens": 0, "batch_size": 32, "learning_rate": 0.005}
    training.update(warmup=50, label_smoothing=0.0, best_by="loss", precision=precision)
    history = run_training(TrainRequest(model_dir=model_dir, data_dir=reversal_data, model=model, training=training))
    assert history.history[-1].val_accuracy > 0.9, history.history[-1]
    keras.mixed_precision.set_dtype_policy("float32")  # a fresh process: the saved file must say it all
    decoder = keras.models.load_model(Workspace(model_dir).decoder, safe_mode=True)
    assert decoder.get_layer("output_projection").dtype_policy.name == "float32"
    compute = {layer.dtype_policy.name for layer in decoder.layers if layer.name.startswith("decoder_")}
    assert precision in compute


@pytest.mark.parametrize("saved_precision, precision", [("float32", "mixed_float16"), ("mixed_float16", "float32")])
def test_optimizer_state_carries_over_to_another_precision(saved_precision, precision):
    """A LossScaleOptimizer (float16) holds Adam inside: its moments and step count are what carry
    over, whichever side has loss scaling."""
    import keras
    import numpy as np

    from nmt_cli.config import TrainingConfig
    from nmt_cli.training import make_optimizer, restore_optimizer_state

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    training = TrainingConfig(learning_rate=1e-3, schedule="constant", warmup=0)
    saved = make_optimizer(training, saved_precision)
    saved.build(model.trainable_variables)
    inner = getattr(saved, "inner_optimizer", saved)
    for variable in inner.variables:
        variable.assign(np.full(variable.shape, 7, variable.dtype))
    fresh = make_optimizer(training, precision)
    restore_optimizer_state(fresh, saved, model)
    restored = getattr(fresh, "inner_optimizer", fresh)
    assert int(restored.iterations.numpy()) == 7
    moments = [v for v in restored.variables if "momentum" in v.path or "velocity" in v.path]
    assert moments and all(np.all(keras.ops.convert_to_numpy(v) == 7) for v in moments)


def test_checkpoint_schedule_and_files(tmp_path, reversal_data):
    model_dir = tmp_path / "model"
    _train(model_dir, reversal_data, epochs=3, save_every=2)
    workspace = Workspace(model_dir)
    assert workspace.saved_epochs() == [2, 3]
    assert workspace.best.exists() and workspace.encoder.exists() and workspace.decoder.exists()
    config = json.loads(workspace.config.read_text())
    assert config["training"]["epochs"] == 3 and config["model"]["units"] == SMALL["units"]
    assert load_config(workspace.config).resolve_data_dir(model_dir) == reversal_data
    assert len(config["data_manifest_sha256"]) == 64
    with open(workspace.history) as stream:
        rows = list(csv.DictReader(stream))
    assert [int(row["epoch"]) for row in rows] == [1, 2, 3]
    assert tuple(rows[0]) == COLUMNS
    assert all(float(row["tokens_per_second"]) > 0 and float(row["seconds"]) > 0 for row in rows)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    history_rows = read_history(workspace.history)  # TensorBoard's step is the optimizer's
    for side, tags in (("train", {"epoch_loss", "epoch_learning_rate"}), ("validation", {"epoch_loss"})):
        events = EventAccumulator(str(workspace.logs / side)).Reload()
        assert tags <= set(events.Tags()["scalars"]), side
        assert [event.step for event in events.Scalars("epoch_loss")] == [int(row.steps) for row in history_rows]
    train_losses = [e.value for e in EventAccumulator(str(workspace.logs / "train")).Reload().Scalars("epoch_loss")]
    assert train_losses == pytest.approx([row.loss for row in read_history(workspace.history)], rel=1e-5)
    assert not list(model_dir.rglob("*.partial*"))


def test_resume_continues_at_the_next_epoch(tmp_path, reversal_data):
    model_dir = tmp_path / "model"
    first = _train(model_dir, reversal_data, epochs=2, save_every=1)
    resumed = _train(model_dir, None, epochs=3, save_every=1)
    assert [row.epoch for row in resumed] == [1, 2, 3]
    assert [row.loss for row in resumed[:2]] == pytest.approx([row.loss for row in first], rel=1e-5)
    assert Workspace(model_dir).saved_epochs() == [1, 2, 3]
    assert [row.epoch for row in read_history(Workspace(model_dir).history)] == [1, 2, 3]
    # The resumed epoch starts from the trained weights, not from scratch.
    assert resumed[2].loss < first[0].loss


def test_resume_refuses_a_different_model_or_data(tmp_path, reversal_data, synthetic_corpus):
    model_dir = tmp_path / "model"
    _train(model_dir, reversal_data, epochs=1, save_every=1)
    with pytest.raises(UserError, match="arch"):
        _train(model_dir, None, epochs=2, save_every=1, arch="seq2seq")
    with pytest.raises(UserError, match="already trained for 1 epochs"):
        _train(model_dir, None, epochs=1, save_every=1)
    from nmt_cli.config import PrepareOptions
    from nmt_cli.prepare import prepare

    other = tmp_path / "other-data"
    prepare(PrepareOptions(data_dir=other, source=str(synthetic_corpus.folder)))
    with pytest.raises(UserError, match="not the data"):
        _train(model_dir, other, epochs=2, save_every=1)


def test_restart_starts_over(tmp_path, reversal_data):
    model_dir = tmp_path / "model"
    _train(model_dir, reversal_data, epochs=2, save_every=1)
    history = _train(model_dir, reversal_data, epochs=1, save_every=1, arch="seq2seq", restart=True)
    assert [row.epoch for row in history] == [1]
    assert Workspace(model_dir).saved_epochs() == [1]


def test_same_seed_same_losses(tmp_path, reversal_data):
    first = _train(tmp_path / "a", reversal_data, epochs=2, save_every=2, seed=7)
    second = _train(tmp_path / "b", reversal_data, epochs=2, save_every=2, seed=7)
    other = _train(tmp_path / "c", reversal_data, epochs=1, save_every=1, seed=8)
    assert [row.loss for row in first] == [row.loss for row in second]
    assert [row.val_loss for row in first] == [row.val_loss for row in second]
    assert other[0].loss != first[0].loss


def test_restart_with_bad_options_keeps_the_old_model(tmp_path, reversal_data):
    model_dir = tmp_path / "model"
    _train(model_dir, reversal_data, epochs=1, save_every=1)
    with pytest.raises(UserError, match="not a prepared data directory"):
        _train(model_dir, tmp_path / "missing-data", epochs=1, save_every=1, restart=True)
    assert Workspace(model_dir).saved_epochs() == [1]


def test_progress_has_a_bar_for_the_whole_run_and_one_per_epoch(tmp_path, reversal_data):
    from conftest import RecordingReporter

    reporter = RecordingReporter()
    model_dir = tmp_path / "model"
    _train(model_dir, reversal_data, epochs=1, save_every=1)
    request = TrainRequest(model_dir=model_dir, training={"epochs": 3, "save_every": 1, "batch_size": 32})
    run_training(request, reporter)
    whole, *epochs = reporter.tasks
    assert [task["description"] for task in epochs] == ["epoch 2/3", "epoch 3/3"]
    assert whole["total"] == whole["done"] == sum(task["total"] for task in epochs) > 0
    assert not any(task["open"] for task in reporter.tasks)
    assert reporter.epochs == [2, 3] and any("resuming from the end of epoch 1" in note for note in reporter.notes)
    assert [what for what in reporter.saves if what.startswith("epoch-")] == ["epoch-002.keras", "epoch-003.keras"]


def test_the_data_directory_is_found_from_anywhere(tmp_path, reversal_data, monkeypatch):
    import shutil

    project = tmp_path / "project"
    shutil.copytree(reversal_data, project / "data" / "prepared")
    monkeypatch.chdir(project)
    _train(Path("models/m"), Path("data/prepared"), epochs=1, save_every=1)  # relative paths, as users type them
    config = load_config(project / "models/m/config.json")
    assert not Path(config.data_dir).is_absolute()  # the project folder can move as a whole
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert config.resolve_data_dir(project / "models/m") == (project / "data/prepared").resolve()
    history = _train(project / "models/m", None, epochs=2, save_every=1)  # resumes with the saved data
    assert [row.epoch for row in history] == [1, 2]


def test_time_budget_stops_inside_an_epoch_and_a_resume_goes_on_from_there(tmp_path, reversal_data):
    from conftest import RecordingReporter
    from nmt_cli.checkpoints import Position, resume_points

    model_dir = tmp_path / "model"
    # 6 s of budget is less than the 30 s kept in reserve for the final validation before any
    # has been timed: the run stops after its first step.
    training = {"epochs": 2, "batch_size": 32, "best_by": "loss"}
    stopped = run_training(TrainRequest(model_dir, reversal_data, SMALL, {**training, "time_budget": 0.1}))
    assert stopped.stopped_by == "time budget" and stopped.position == Position(0, 1)
    workspace = Workspace(model_dir)
    assert resume_points(workspace)[0] == (Position(0, 1), workspace.resume_checkpoint)
    assert workspace.best.exists() and [row.epoch for row in stopped.history] == [1]

    reporter = RecordingReporter()
    finished = run_training(TrainRequest(model_dir, None, {}, {"time_budget": 0.0}), reporter)
    assert finished.stopped_by is None and finished.position == Position(2)
    first_epoch, second_epoch = reporter.tasks[1:]
    plan = len(ParallelBatches(*DataDir(reversal_data).load_split("train"), 32, 1234, shuffle=True).plan(0))
    assert first_epoch["total"] == first_epoch["done"] == plan - 1  # the batches the first run had not reached
    assert second_epoch["done"] == plan
    # One row per validation: the stop's, inside epoch 1, stays, before the rows of both epochs' ends.
    history = read_history(workspace.history)
    assert [(row.epoch, row.steps) for row in history] == [(1, 1), (1, plan), (2, 2 * plan)]
    assert not workspace.resume_checkpoint.exists() and not workspace.resume_stamp.exists()
    assert any("resuming from epoch 1, batch 1" in note for note in reporter.notes)


def test_validation_bleu_is_recorded_and_picks_the_best(tmp_path, reversal_data):
    import json

    model_dir = tmp_path / "model"
    history = _train(model_dir, reversal_data, epochs=3, save_every=3, best_by="bleu", learning_rate=0.01)
    bleus = [row.val_bleu for row in history]
    assert all(0 <= bleu <= 100 for bleu in bleus)
    stamp = json.loads(Workspace(model_dir).best_stamp.read_text())
    assert stamp["by"] == "bleu" and stamp["figure"] == max(bleus)
    assert stamp["epoch"] == 1 + bleus.index(max(bleus))


def test_patience_stops_when_the_figure_stops_improving(tmp_path, reversal_data):
    # At a learning rate of 1e-7 the translations, and so BLEU, do not change after epoch 1.
    history = _train(
        tmp_path / "model", reversal_data, epochs=10, save_every=10, learning_rate=1e-7, patience=2, best_by="bleu"
    )
    assert len(history) == 3
    assert Workspace(tmp_path / "model").saved_epochs() == [3]


def test_mixed_float16_is_refused_on_a_cpu(tmp_path, reversal_data):
    """A CPU has no float16 arithmetic: such a run crawled and heard SIGTERM only between steps."""
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU is where mixed_float16 belongs")
    training = {"epochs": 1, "precision": "mixed_float16"}
    request = TrainRequest(model_dir=tmp_path / "model", data_dir=reversal_data, model=SMALL, training=training)
    with pytest.raises(UserError, match="mixed_float16 needs a GPU; on a CPU use mixed_bfloat16 or float32"):
        run_training(request)


def test_a_batch_jobs_log_gets_progress_lines_before_the_first_epoch_ends(tmp_path, reversal_data):
    """stderr to a file, as Slurm and nohup run it: no bars, but a plain line every --log-interval
    seconds (here 0: at every step, so that the count does not depend on this machine's speed)
    with both open tasks, their counts and times, and the step's figures."""
    import re
    import subprocess
    import sys

    log = tmp_path / "train.log"
    command = [sys.executable, "-m", "nmt_cli", "train", "--data-dir", reversal_data, "--model-dir", tmp_path / "m"]
    command += ["--arch", "seq2seq", "--units", "16", "--embedding-dim", "8", "--batch-size", "8", "--epochs", "1"]
    with open(log, "w") as stream:
        completed = subprocess.run(list(map(str, command + ["--log-interval", "0"])), stderr=stream, timeout=300)
    assert completed.returncode == 0, log.read_text()
    lines = log.read_text().splitlines()
    before_epoch_end = lines[: next(i for i, line in enumerate(lines) if line.split()[:2] == ["epoch", "loss"])]
    pattern = re.compile(
        r"epochs to 1: (\d+)/250 \(\d+%\), \d+:\d\d:\d\d elapsed.* \| epoch 1/1: (\d+)/250 \(\d+%\), "
        r"\d+:\d\d:\d\d elapsed, \d+:\d\d:\d\d left, "
        r"loss ([\d.]+)  acc ([\d.]+)  tok/s (\d+)  lr ([\d.e-]+)  step (\d+)"
    )
    progress = [pattern.fullmatch(line) for line in before_epoch_end]
    assert len(progress) >= 250 and all(progress), before_epoch_end[:5]
    steps = [int(match.group(7)) for match in progress]
    assert steps == sorted(steps) and steps[0] == 1 and steps[-1] == 250
    assert all(float(match.group(3)) > 0 for match in progress)
    after = lines[len(before_epoch_end) + 2 :]  # the header and epoch 1's row, then what was saved
    assert after[0].startswith("saved best.keras with its inference models (the end of epoch 1, val_bleu ")
    assert after[1] == "saved epoch-001.keras"
