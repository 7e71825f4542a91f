"""Damaged, mixed and mistaken files and options: each is found, reported in one line, and
never spreads to files that were good."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import RecordingReporter, assert_one_line_error, nmt, run_training
from nmt_cli.checkpoints import BestStamp, inference_models_of_best
from nmt_cli.errors import UserError
from nmt_cli.history import read_history
from nmt_cli.plan import TrainRequest
from nmt_cli.workspace import Workspace

SMALL = {"arch": "seq2seq", "units": 16, "embedding_dim": 8, "dropout": 0.0}
MODEL_OPTIONS = {*SMALL, "layers"}


def train(model_dir: Path, data_dir: Path | None, epochs: int, reporter=None, **options):
    """Train SMALL (or resume, without data_dir) to `epochs`; `options` may be model or training options."""
    training = {"epochs": epochs, "save_every": 1, "batch_size": 32, "best_by": "loss"}
    training.update({k: v for k, v in options.items() if k not in MODEL_OPTIONS})
    model = {**SMALL, **{k: v for k, v in options.items() if k in MODEL_OPTIONS}} if data_dir else {}
    return run_training(TrainRequest(model_dir, data_dir, model, training), reporter)


@pytest.fixture
def data_copy(tmp_path, reversal_data) -> Path:
    """A copy of the reversal data that a test may damage."""
    return Path(shutil.copytree(reversal_data, tmp_path / "data"))


@pytest.mark.parametrize("best_by", ["loss", "bleu"])
def test_a_damaged_tokenizer_in_the_data_never_replaces_the_models_copy(tmp_path, data_copy, best_by):
    model_dir = tmp_path / "model"
    train(model_dir, data_copy, epochs=1, best_by=best_by)
    good = Workspace(model_dir).tokenizer("ja").read_bytes()
    (data_copy / "spm.ja.model").write_bytes(b"\x00 not a sentencepiece model")
    train(model_dir, None, epochs=2)  # the model's own copy is good: training goes on with it
    assert Workspace(model_dir).tokenizer("ja").read_bytes() == good
    (data_copy / "spm.ja.model").write_bytes(Workspace(model_dir).tokenizer("en").read_bytes())  # loads, but is not it
    Workspace(model_dir).tokenizer("ja").unlink()
    with pytest.raises(UserError, match="is not the tokenizer .* names"):
        train(model_dir, None, epochs=3)


def test_a_model_copy_of_the_tokenizer_that_went_bad_is_restored_from_the_data(tmp_path, data_copy):
    model_dir = tmp_path / "model"
    train(model_dir, data_copy, epochs=1)
    mine = Workspace(model_dir).tokenizer("ja")
    mine.write_bytes(b"damaged")
    train(model_dir, None, epochs=2)
    assert mine.read_bytes() == (data_copy / "spm.ja.model").read_bytes()


def test_a_damaged_latest_checkpoint_is_skipped_with_a_warning(tmp_path, data_copy):
    model_dir = tmp_path / "model"
    train(model_dir, data_copy, epochs=2)
    latest = Workspace(model_dir).checkpoint(2)
    latest.write_bytes(latest.read_bytes()[:1000])  # truncated, as by a full disk
    # The newest checkpoint that loads: epoch 2's best.keras where epoch 2 was the best, else epoch 1.
    newest_good = 2 if BestStamp.read(Workspace(model_dir)).epoch == 2 else 1
    reporter = RecordingReporter()
    train(model_dir, None, epochs=3, reporter=reporter)
    (warning,) = reporter.warnings
    assert warning.startswith(f"skipped {latest}") and "damaged" in warning
    assert warning.endswith("the file is renamed epoch-002.keras.unloadable")
    assert any(f"resuming from the end of epoch {newest_good}" in note for note in reporter.notes)
    assert [row.epoch for row in read_history(Workspace(model_dir).history)] == [1, 2, 3]
    # The damaged file was set aside, as the warning says.
    assert latest.with_name(latest.name + ".unloadable").stat().st_size == 1000
    translated = nmt("translate", "--model-dir", model_dir, "--checkpoint", "last", "a b")
    assert translated.returncode == 0, translated.stderr


def test_a_truncated_checkpoint_is_reported_as_damaged(tmp_path, data_copy):
    model_dir = tmp_path / "model"
    train(model_dir, data_copy, epochs=1)
    checkpoint = Workspace(model_dir).checkpoint(1)
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    error = assert_one_line_error(nmt("translate", "--model-dir", model_dir, "--checkpoint", "epoch-1", "a b"))
    assert str(checkpoint) in error and "damaged" in error and "not found" not in error.lower()


def test_a_gap_in_the_history_is_reported(tmp_path, data_copy):
    model_dir = tmp_path / "model"
    train(model_dir, data_copy, epochs=3)
    history = Workspace(model_dir).history
    lines = history.read_text().splitlines(keepends=True)
    history.write_text("".join(lines[:2] + lines[3:]))  # the header, epoch 1, epoch 3
    reporter = RecordingReporter()
    train(model_dir, None, epochs=4, reporter=reporter)
    assert reporter.warnings == [f"{history} has no row for epoch 2: it goes on without them"]


def test_a_damaged_data_manifest_beside_the_model_says_how_to_restore_it(tmp_path, data_copy):
    model_dir = tmp_path / "model"
    train(model_dir, data_copy, epochs=1)
    copy = Workspace(model_dir).data_manifest
    copy.write_text("{ damaged")
    error = assert_one_line_error(nmt("translate", "--model-dir", model_dir, "a b"))
    assert f"restore it with: cp {data_copy / 'manifest.json'} {copy}" in error
    shutil.copyfile(data_copy / "manifest.json", copy)
    assert nmt("translate", "--model-dir", model_dir, "a b").returncode == 0


@pytest.mark.parametrize(
    "other, says", [({"units": 24}, "of shape"), ({"layers": 2}, "which config.json's model has not")]
)
def test_a_checkpoint_of_another_model_is_refused_by_name(tmp_path, data_copy, other, says):
    model_dir, other_dir = tmp_path / "model", tmp_path / "other"
    train(model_dir, data_copy, epochs=1)
    train(other_dir, data_copy, epochs=1, **other)
    stranger = Workspace(model_dir).checkpoint(2)
    shutil.copyfile(Workspace(other_dir).checkpoint(1), stranger)
    error = assert_one_line_error(nmt("translate", "--model-dir", model_dir, "--checkpoint", "epoch-2", "a b"))
    assert f"{stranger} does not fit config.json" in error and says in error
    # Resuming skips it for the newest checkpoint that does fit.
    reporter = RecordingReporter()
    train(model_dir, None, epochs=3, reporter=reporter)
    assert reporter.warnings and reporter.warnings[0].startswith(f"skipped {stranger}")


def test_inference_models_of_different_epochs_are_never_used_together(tmp_path, data_copy):
    from nmt_cli.translation import Translator

    model_dir = tmp_path / "model"
    workspace = Workspace(model_dir)
    train(model_dir, data_copy, epochs=1, learning_rate=0.01)
    old_decoder = workspace.decoder.read_bytes()
    train(model_dir, None, epochs=2)
    assert BestStamp.read(workspace).epoch == 2 and inference_models_of_best(workspace)
    workspace.decoder.write_bytes(old_decoder)  # as if a kill had left epoch 1's decoder beside epoch 2's encoder
    assert not inference_models_of_best(workspace)
    mixed = Translator.open(model_dir)
    from_checkpoint = Translator.open(model_dir, "epoch-2")
    lines = ["a b c", "d e f g h"]
    assert [t.text for t in mixed.translate(lines)] == [t.text for t in from_checkpoint.translate(lines)]


@pytest.mark.parametrize("command", ["train", "summary"])
def test_a_model_too_big_for_memory_is_one_line_with_the_figure(tmp_path, reversal_data, command):
    args = ["--data-dir", reversal_data, "--units", "100000"]
    if command == "train":
        args += ["--model-dir", tmp_path / "model"]
    error = assert_one_line_error(nmt(command, *args))
    assert "parameters needs about" in error and "GB" in error and "--units" in error


@pytest.mark.parametrize("option", ["--learning-rate", "--clipnorm", "--dropout", "--label-smoothing"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_numbers_that_are_not_finite_are_refused(tmp_path, reversal_data, option, value):
    args = ["--data-dir", reversal_data, "--model-dir", tmp_path / "model", option, value]
    error = assert_one_line_error(nmt("train", *args, before_tensorflow=True))
    assert option in error
    assert not (tmp_path / "model").exists()


def test_a_loss_that_becomes_nan_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, data_copy):
    model_dir = tmp_path / "model"
    train(model_dir, data_copy, epochs=1)
    saved = {path.name: path.read_bytes() for path in Workspace(model_dir).checkpoints.iterdir()}
    request = TrainRequest(model_dir, None, {}, {"epochs": 2, "learning_rate": 3e38, "clipnorm": 0.0})
    with pytest.raises(UserError, match=r"the training loss became (nan|inf) at epoch 2, batch \d+"):
        run_training(request)
    assert {path.name: path.read_bytes() for path in Workspace(model_dir).checkpoints.iterdir()} == saved


def test_a_checkpoint_carrying_a_lambda_layer_is_refused(tmp_path, data_copy):
    """A .keras file can carry Python code in a Lambda layer: safe_mode refuses to run it, in
    `translate` and in a resume alike."""
    import keras

    model_dir = tmp_path / "model"
    train(model_dir, data_copy, epochs=1)
    inputs = keras.Input((3,))
    keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs)).save(Workspace(model_dir).checkpoint(2))
    error = assert_one_line_error(nmt("translate", "--model-dir", model_dir, "--checkpoint", "epoch-2", "a b"))
    assert "cannot load" in error and "Traceback" not in error
    reporter = RecordingReporter()
    train(model_dir, None, epochs=3, reporter=reporter)
    assert reporter.warnings[0].startswith(f"skipped {Workspace(model_dir).checkpoint(2)}")


def test_a_foreign_checkpoint_beyond_the_history_is_no_claim_of_progress(tmp_path, data_copy):
    """A foreign epoch-004.keras beside history rows 1-3: `--epochs 4` trains epoch 4, saying it
    skipped that file, rather than answering that 4 epochs are done."""
    model_dir, other_dir = tmp_path / "model", tmp_path / "other"
    train(model_dir, data_copy, epochs=3)
    train(other_dir, data_copy, epochs=1, units=24)
    stranger = Workspace(model_dir).checkpoint(4)
    shutil.copyfile(Workspace(other_dir).checkpoint(1), stranger)
    reporter = RecordingReporter()
    train(model_dir, None, epochs=4, reporter=reporter)
    assert reporter.warnings[0].startswith(f"skipped {stranger}")
    assert reporter.warnings[0].endswith("the file is renamed epoch-004.keras.unloadable")
    assert [row.epoch for row in read_history(Workspace(model_dir).history)] == [1, 2, 3, 4]
