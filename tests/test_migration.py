"""nmt_cli.migration: model directories written by earlier versions open as today's."""

from __future__ import annotations

import json
import math
import shutil

import pytest

from nmt_cli import files
from nmt_cli.checkpoints import (
    BestStamp,
    Position,
    best_position,
    forget_after,
    inference_models_of_best,
    resume_points,
)
from nmt_cli.config import ModelConfig, RunConfig, load_config
from nmt_cli.errors import UserError
from nmt_cli.history import COLUMNS, read_history
from nmt_cli.migration import migrate, open_config
from nmt_cli.workspace import Workspace

OLD_HISTORY_HEADER = "epoch,loss,accuracy,val_loss,val_accuracy,learning_rate,seconds,tokens_per_second"


def older(config: RunConfig, drop_model=(), drop_training=(), **top) -> str:
    """config.json as an earlier version wrote it: without options added since, and `top` set."""
    raw = json.loads(config.to_json())
    for name in drop_model:
        del raw["model"][name]
    for name in drop_training:
        del raw["training"][name]
    del raw["parent"]
    return json.dumps({**raw, **top})


@pytest.fixture
def workspace(tmp_path) -> Workspace:
    workspace = Workspace(tmp_path / "model")
    workspace.checkpoints.mkdir(parents=True)
    config = RunConfig(model=ModelConfig(arch="attention", source_vocab_size=30, target_vocab_size=30))
    workspace.config.write_text(config.with_data_dir(tmp_path / "data", workspace.root).to_json())
    return workspace


def test_a_directory_from_before_today_opens_as_today_and_is_written_once(workspace):
    today = workspace.config.read_text()
    config = load_config(workspace.config)
    workspace.config.write_text(older(config, drop_model=("layers", "tie_embeddings"), drop_training=("schedule",)))
    workspace.history.write_text(f"{OLD_HISTORY_HEADER}\n1,2,0.5,2.5,0.6,0.001,3,100\n2,1.5,0.6,2.0,0.7,0.001,3,110\n")
    workspace.best_stamp.write_text('{"epoch": 2}\n')
    with pytest.raises(UserError, match="history.csv is damaged"):
        read_history(workspace.history)  # today's reader knows only today's columns

    assert set(migrate(workspace)) == {workspace.config, workspace.history, workspace.best_stamp}
    assert workspace.config.read_text() == today  # the options come back as the model was trained
    rows = read_history(workspace.history)
    assert workspace.history.read_text().splitlines()[0] == ",".join(COLUMNS)
    assert [row.epoch for row in rows] == [1, 2] and rows[1].val_loss == 2.0
    assert all(math.isnan(row.val_bleu) and math.isnan(row.steps) for row in rows)
    stamp = BestStamp.read(workspace)
    assert stamp.position == Position(2) and stamp.epoch == 2 and not stamp.complete  # its files are not all here
    assert migrate(workspace) == []  # today's directory: nothing written


def test_an_older_best_model_becomes_a_resume_point_that_a_resume_keeps(workspace):
    # Before digests, best.json was written once its three files were saved: they belong together.
    for path in (workspace.best, workspace.encoder, workspace.decoder):
        path.write_text(path.name)
    workspace.checkpoint(1).write_text("epoch 1")
    workspace.best_stamp.write_text('{"epoch": 2, "position": {"epochs": 2, "batches": 0}, "by": "loss"}\n')
    migrate(workspace)
    stamp = BestStamp.read(workspace)
    assert stamp.complete and stamp.sha256 == {
        p.name: files.sha256(p) for p in (workspace.best, workspace.encoder, workspace.decoder)
    }
    assert resume_points(workspace)[0] == (Position(2), workspace.best)
    forget_after(workspace, Position(2))  # where a resume then starts
    assert workspace.best.read_text() == "best.keras" and inference_models_of_best(workspace)


def test_a_current_directory_is_left_as_it_is(workspace):
    before = {path: path.stat().st_mtime_ns for path in (workspace.config,)}
    assert migrate(workspace) == []
    assert {path: path.stat().st_mtime_ns for path in before} == before
    assert migrate(Workspace(workspace.root.parent / "absent")) == []


def test_a_best_save_cut_short_before_saves_were_staged_is_no_resume_point_and_goes(workspace):
    for path in (workspace.best, workspace.encoder, workspace.decoder):
        path.write_bytes(b"x")
    workspace.best_stamp.write_text('{"saving": true}\n')
    migrate(workspace)
    stamp = BestStamp.read(workspace)
    assert stamp.unfinished and stamp.position is None and best_position(workspace) is None
    assert resume_points(workspace) == []
    forget_after(workspace, Position(1))
    assert not any(path.exists() for path in (workspace.best, workspace.encoder, workspace.decoder))


def test_a_data_directory_stored_relative_to_where_training_ran_is_found(tmp_path, workspace, monkeypatch):
    # config.json used to hold the data directory as typed, relative to where `nmt train` ran.
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    config = load_config(workspace.config)
    workspace.config.write_text(older(config, data_dir="data"))
    assert open_config(workspace).resolve_data_dir(workspace.root) == (tmp_path / "data").resolve()
    monkeypatch.chdir(workspace.root)  # once stored relative to the model, from anywhere
    assert load_config(workspace.config).resolve_data_dir(workspace.root) == (tmp_path / "data").resolve()


def test_a_directory_that_cannot_be_written_is_named_in_one_line(workspace, monkeypatch):
    workspace.history.write_text(f"{OLD_HISTORY_HEADER}\n1,2,0.5,2.5,0.6,0.001,3,100\n")

    def refuse(path, text):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(files, "write_text", refuse)
    with pytest.raises(UserError, match=r"history.csv was written by an earlier nmt .* make .* writable"):
        migrate(workspace)


def test_a_trained_directory_from_before_translates_as_it_did(trained_model, reference, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(trained_model("attention"), model_dir)
    workspace = Workspace(model_dir)
    today = workspace.config.read_text()
    history = read_history(workspace.history)
    workspace.config.write_text(older(load_config(workspace.config), drop_model=("tie_embeddings",)))
    lines = [",".join(COLUMNS[:-1])] + [",".join(f"{getattr(row, name)}" for name in COLUMNS[:-1]) for row in history]
    workspace.history.write_text("\n".join(lines) + "\n")
    epoch = json.loads(workspace.best_stamp.read_text())["epoch"]
    workspace.best_stamp.write_text(json.dumps({"epoch": epoch}))
    sentences = ["a b c d", "j i h"]

    assert reference(model_dir, sentences) == reference(trained_model("attention"), sentences)
    assert workspace.config.read_text() == today
    assert [row.epoch for row in read_history(workspace.history)] == [row.epoch for row in history]
    assert BestStamp.read(workspace).epoch == epoch
