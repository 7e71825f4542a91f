"""nmt_cli.checkpoints: positions, the resume points, what a resume forgets, and what the policy
saves when (with stand-in models that record their saves)."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest

from nmt_cli.checkpoints import (
    BestStamp,
    CheckpointPolicy,
    Position,
    best_position,
    finish_saves,
    forget_after,
    inference_models_of_best,
    resume_points,
)
from nmt_cli.files import sha256 as file_sha256
from nmt_cli.history import HistoryRow, read_history
from nmt_cli.workspace import Workspace


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


class StandIn:
    """Saves a small file where `model.save` would save a model."""

    def __init__(self, name: str):
        self.name = name

    def save(self, path):
        path.write_text(self.name)


@pytest.fixture
def workspace(tmp_path) -> Workspace:
    ws = Workspace(tmp_path / "model")
    ws.checkpoints.mkdir(parents=True)
    return ws


def models():
    return SimpleNamespace(training=StandIn("training"), encoder=StandIn("encoder"), decoder=StandIn("decoder"))


def row(epoch: int, val_loss: float, val_bleu: float) -> HistoryRow:
    values = dict(
        loss=1.0, accuracy=0.5, val_accuracy=0.5, learning_rate=1e-3, seconds=1.0, tokens_per_second=10.0, steps=epoch
    )
    return HistoryRow(epoch=epoch, val_loss=val_loss, val_bleu=val_bleu, **values)


def test_positions_order_by_epochs_then_batches():
    assert Position(2) < Position(2, 1) < Position(3) and Position() == Position(0, 0)
    assert str(Position(3)) == "the end of epoch 3" and str(Position(3, 40)) == "epoch 4, batch 40"


def test_resume_points_newest_first_with_a_point_inside_an_epoch(workspace):
    assert resume_points(workspace) == []
    touch(workspace.best)
    assert resume_points(workspace) == []
    for epoch in (5, 10):
        touch(workspace.checkpoint(epoch))
    touch(workspace.resume_checkpoint)
    assert resume_points(workspace)[0][0] == Position(10)  # no stamp: the file does not count yet
    workspace.resume_stamp.write_text(json.dumps({"epochs": 10, "batches": 7}))
    assert resume_points(workspace) == [
        (Position(10, 7), workspace.resume_checkpoint),
        (Position(10), workspace.checkpoint(10)),
        (Position(5), workspace.checkpoint(5)),
    ]
    workspace.resume_checkpoint.unlink()
    assert resume_points(workspace)[0] == (Position(10), workspace.checkpoint(10))


def test_forget_after_drops_a_best_model_from_later(workspace):
    for path in (workspace.best, workspace.encoder, workspace.decoder):
        touch(path)
    workspace.best_stamp.write_text(json.dumps({"epoch": 8, "position": {"epochs": 7, "batches": 30}}))
    forget_after(workspace, Position(7, 30))
    assert workspace.best.exists() and best_position(workspace) == Position(7, 30)
    forget_after(workspace, Position(7))
    assert not any(p.exists() for p in (workspace.best, workspace.encoder, workspace.decoder, workspace.best_stamp))


def test_forget_after_keeps_the_best_of_a_directory_from_before_stamps(workspace):
    for path in (workspace.best, workspace.encoder, workspace.decoder):
        touch(path)
    forget_after(workspace, Position(2))
    assert all(p.exists() for p in (workspace.best, workspace.encoder, workspace.decoder))


def test_forget_after_drops_a_best_model_whose_save_was_cut_short_and_sets_later_epochs_aside(workspace):
    later = (workspace.checkpoint(2), workspace.checkpoint(3))
    for path in (workspace.best, workspace.encoder, workspace.decoder, *later):
        touch(path)
    # killed while epoch 3's best.keras was saved, before saves named their files
    workspace.best_stamp.write_text(json.dumps(BestStamp(None, None, unfinished=True).to_json()))
    forget_after(workspace, Position(2))
    assert not any(p.exists() for p in (workspace.best, workspace.encoder, workspace.decoder))
    assert workspace.saved_epochs() == [2]
    assert (workspace.checkpoints / "epoch-003.keras.unloadable").read_bytes() == b"x"
    # The next epoch is then saved as the best, though the history holds a better figure.
    policy = CheckpointPolicy(workspace, models(), [row(1, 1.0, 30.0), row(2, 2.0, 20.0)], 5, best_by="bleu")
    policy.epoch_end(row(3, 3.0, 10.0), Position(3), last=False)
    assert json.loads(workspace.best_stamp.read_text())["epoch"] == 3


def test_policy_saves_best_by_bleu_on_schedule_and_at_the_last_epoch(workspace):
    policy = CheckpointPolicy(workspace, models(), [], save_every=2, best_by="bleu")
    policy.epoch_end(row(1, 3.0, 10.0), Position(1), last=False)
    assert json.loads(workspace.best_stamp.read_text())["epoch"] == 1
    assert workspace.saved_epochs() == []
    policy.epoch_end(row(2, 2.0, 9.0), Position(2), last=False)  # lower loss, lower BLEU: not best
    assert json.loads(workspace.best_stamp.read_text())["epoch"] == 1
    assert workspace.saved_epochs() == [2]
    policy.epoch_end(row(3, 2.5, 12.0), Position(3), last=True)
    stamp = json.loads(workspace.best_stamp.read_text())
    digests = stamp.pop("sha256")
    assert stamp == {"epoch": 3, "position": {"epochs": 3, "batches": 0}, "by": "bleu", "figure": 12.0}
    assert digests == {path.name: file_sha256(path) for path in (workspace.best, workspace.encoder, workspace.decoder)}
    assert workspace.saved_epochs() == [2, 3]
    assert [r.epoch for r in read_history(workspace.history)] == [1, 2, 3]
    assert workspace.encoder.read_text() == "encoder" and workspace.best.read_text() == "training"


def test_policy_by_loss_and_patience_count(workspace):
    policy = CheckpointPolicy(workspace, models(), [], save_every=5, best_by="loss")
    for epoch, loss in enumerate((3.0, 2.0, 2.5, 2.6), start=1):
        policy.epoch_end(row(epoch, loss, math.nan), Position(epoch), last=False)
    assert json.loads(workspace.best_stamp.read_text())["epoch"] == 2
    assert policy.epochs_since_best == 2


def test_a_stop_inside_an_epoch_saves_a_resume_point_that_a_later_epoch_removes(workspace):
    policy = CheckpointPolicy(workspace, models(), [], save_every=5, best_by="bleu")
    policy.epoch_end(row(4, 2.0, 20.0), Position(3, 17), last=True)
    here = (Position(3, 17), workspace.resume_checkpoint)
    assert resume_points(workspace) == [here, (Position(3, 17), workspace.best)]  # the best is one too
    assert best_position(workspace) == Position(3, 17)
    policy.epoch_end(row(4, 1.9, 21.0), Position(4), last=True)
    assert resume_points(workspace) == [(Position(4), workspace.checkpoint(4)), (Position(4), workspace.best)]
    assert not workspace.resume_stamp.exists() and not workspace.resume_checkpoint.exists()


def test_the_best_so_far_comes_from_the_history(workspace):
    earlier = [row(1, 2.0, 15.0), row(2, 1.8, math.nan)]
    touch(workspace.best)  # the best of those epochs
    policy = CheckpointPolicy(workspace, models(), list(earlier), save_every=5, best_by="bleu")
    assert not policy.improves(row(3, 1.0, 14.0)) and policy.improves(row(3, 1.0, 15.5))


def test_every_epoch_end_is_a_resume_point_and_only_the_newest_is_kept(workspace):
    """A kill never costs more than the epoch under way: each epoch's end leaves a resume point,
    best.keras (complete) being one, and resume.keras holds only the newest."""
    policy = CheckpointPolicy(workspace, models(), [], save_every=5, best_by="loss")
    policy.epoch_end(row(1, 2.0, math.nan), Position(1), last=False)  # the best: best.keras is the point
    assert resume_points(workspace) == [(Position(1), workspace.best)] and not workspace.resume_checkpoint.exists()
    policy.epoch_end(row(2, 3.0, math.nan), Position(2), last=False)  # no better, no epoch checkpoint
    assert resume_points(workspace) == [(Position(2), workspace.resume_checkpoint), (Position(1), workspace.best)]
    policy.epoch_end(row(3, 1.0, math.nan), Position(3), last=False)  # a new best: the older point goes
    assert resume_points(workspace) == [(Position(3), workspace.best)] and not workspace.resume_checkpoint.exists()
    policy.epoch_end(row(4, 1.5, math.nan), Position(4), last=False)
    policy.epoch_end(row(5, 1.6, math.nan), Position(5), last=False)  # --save-every 5
    assert resume_points(workspace) == [(Position(5), workspace.checkpoint(5)), (Position(3), workspace.best)]


def test_a_best_model_whose_save_was_cut_short_is_no_resume_point(workspace):
    touch(workspace.best)
    workspace.best_stamp.write_text(json.dumps(BestStamp(None, None, unfinished=True).to_json()))
    assert resume_points(workspace) == []
    workspace.best_stamp.write_text(json.dumps(BestStamp(Position(2), 2).to_json()))
    assert resume_points(workspace) == []  # a stamp from before digests: its files may not belong together
    workspace.best_stamp.write_text(json.dumps({"epoch": 2, "position": {"epochs": 2, "batches": 0}, "sha256": {}}))
    assert resume_points(workspace) == [(Position(2), workspace.best)]


def test_a_checkpoint_set_aside_takes_its_stamp_with_it(workspace):
    from nmt_cli.checkpoints import set_aside

    touch(workspace.resume_checkpoint)
    workspace.resume_stamp.write_text(json.dumps({"epochs": 3, "batches": 5}))
    aside = set_aside(workspace, workspace.resume_checkpoint)
    assert aside.name == "resume.keras.unloadable" and aside.exists() and not workspace.resume_stamp.exists()
    assert resume_points(workspace) == []


class Killed(Exception):
    """Stands for a SIGKILL: the save stops where it is."""


class DiesWhileSaving(StandIn):
    def save(self, path):
        path.write_text("half")
        raise Killed


def best_set(workspace) -> dict[str, str]:
    return {path.name: path.read_text() for path in (workspace.best, workspace.encoder, workspace.decoder)}


def test_a_kill_while_a_new_best_is_written_leaves_the_previous_best_whole(workspace):
    policy = CheckpointPolicy(workspace, models(), [], save_every=5, best_by="loss")
    policy.epoch_end(row(1, 2.0, math.nan), Position(1), last=False)
    before, stamp = best_set(workspace), workspace.best_stamp.read_text()
    policy.models = SimpleNamespace(training=StandIn("new"), encoder=StandIn("new"), decoder=DiesWhileSaving("new"))
    with pytest.raises(Killed):
        policy.epoch_end(row(2, 1.0, math.nan), Position(2), last=False)
    assert best_set(workspace) == before and workspace.best_stamp.read_text() == stamp
    assert resume_points(workspace) == [(Position(1), workspace.best)]
    finish_saves(workspace)
    assert sorted(p.name for p in workspace.checkpoints.iterdir()) == ["best.json", "best.keras"]
    assert best_set(workspace) == before and workspace.best_stamp.read_text() == stamp


@pytest.mark.parametrize("moved_before_the_kill", [0, 1, 2])
def test_a_kill_after_the_new_best_is_stamped_is_completed_next_time(workspace, monkeypatch, moved_before_the_kill):
    from nmt_cli import checkpoints

    policy = CheckpointPolicy(workspace, models(), [], save_every=5, best_by="loss")
    policy.epoch_end(row(1, 2.0, math.nan), Position(1), last=False)
    commit, moves = checkpoints.files.commit, []

    def killed_after(staged, path):
        if staged.name.startswith("." + path.stem + ".next"):  # a staged file moving into place
            if len(moves) == moved_before_the_kill:
                raise Killed
            moves.append(path)
        commit(staged, path)

    monkeypatch.setattr(checkpoints.files, "commit", killed_after)
    policy.models = SimpleNamespace(training=StandIn("new"), encoder=StandIn("new"), decoder=StandIn("new"))
    with pytest.raises(Killed):
        policy.epoch_end(row(2, 1.0, math.nan), Position(2), last=False)
    monkeypatch.setattr(checkpoints.files, "commit", commit)
    assert json.loads(workspace.best_stamp.read_text())["committing"]
    assert resume_points(workspace) == []  # files of two sets: not a resume point until completed
    finish_saves(workspace)
    assert best_set(workspace) == {"best.keras": "new", "encoder.keras": "new", "decoder.keras": "new"}
    stamp = json.loads(workspace.best_stamp.read_text())
    assert "committing" not in stamp and stamp["epoch"] == 2 and inference_models_of_best(workspace)
    assert resume_points(workspace) == [(Position(2), workspace.best)]
    assert not list(workspace.root.glob(".*.next.keras")) and not list(workspace.checkpoints.glob(".*.next.keras"))


def test_a_kill_while_a_resume_point_is_written_leaves_the_previous_one(workspace):
    policy = CheckpointPolicy(workspace, models(), [], save_every=5, best_by="loss")
    policy.save_resume_point(Position(1, 10), {"seconds": 1.0})
    policy.models = SimpleNamespace(training=DiesWhileSaving("new"))
    with pytest.raises(Killed):
        policy.save_resume_point(Position(1, 20), {"seconds": 2.0})
    assert resume_points(workspace) == [(Position(1, 10), workspace.resume_checkpoint)]
    assert workspace.resume_checkpoint.read_text() == "training"


def test_a_stamped_set_whose_files_do_not_match_is_not_completed(workspace):
    from nmt_cli.checkpoints import complete_best_position

    policy = CheckpointPolicy(workspace, models(), [], save_every=5, best_by="loss")
    policy.epoch_end(row(1, 2.0, math.nan), Position(1), last=False)
    stamp = json.loads(workspace.best_stamp.read_text())
    workspace.best_stamp.write_text(json.dumps({**stamp, "committing": True}))
    workspace.encoder.write_text("another")  # not the file the stamp names
    finish_saves(workspace)
    assert json.loads(workspace.best_stamp.read_text())["committing"] and complete_best_position(workspace) is None
