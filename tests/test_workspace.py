"""nmt_cli.workspace: checkpoint names, listing, `--checkpoint` resolution, history files."""

from __future__ import annotations

import pytest

from nmt_cli.errors import UserError
from nmt_cli.history import read_history
from nmt_cli.workspace import Workspace


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


@pytest.fixture
def workspace(tmp_path):
    ws = Workspace(tmp_path / "model")
    ws.root.mkdir()
    return ws


def test_layout(tmp_path):
    ws = Workspace(tmp_path / "m")
    assert ws.config == tmp_path / "m" / "config.json"
    assert ws.checkpoints == tmp_path / "m" / "checkpoints"
    assert ws.best == tmp_path / "m" / "checkpoints" / "best.keras"
    assert ws.encoder.name == "encoder.keras" and ws.decoder.name == "decoder.keras"


@pytest.mark.parametrize(
    "epoch, name", [(1, "epoch-001.keras"), (5, "epoch-005.keras"), (42, "epoch-042.keras"), (1234, "epoch-1234.keras")]
)
def test_checkpoint_naming(workspace, epoch, name):
    assert workspace.checkpoint(epoch) == workspace.checkpoints / name


def test_saved_epochs_sorted_numerically_and_ignores_other_files(workspace):
    assert workspace.saved_epochs() == []  # no checkpoints folder yet
    for epoch in (10, 2, 1000, 30):
        touch(workspace.checkpoint(epoch))
    for other in (
        "best.keras",
        "epoch-004.partial.keras",
        "epoch-005.keras.partial",
        "epoch-x.keras",
        "epoch-006.h5",
        "notes-epoch-007.keras",
    ):
        touch(workspace.checkpoints / other)
    assert workspace.saved_epochs() == [2, 10, 30, 1000]


def test_resolve_best_last_and_epoch(workspace):
    for epoch in (5, 10, 15):
        touch(workspace.checkpoint(epoch))
    # No best.keras yet: "best" falls back to the last epoch.
    assert workspace.resolve_checkpoint("best") == workspace.checkpoint(15)
    assert workspace.resolve_checkpoint() == workspace.checkpoint(15)
    touch(workspace.best)
    assert workspace.resolve_checkpoint("best") == workspace.best
    assert workspace.resolve_checkpoint("last") == workspace.checkpoint(15)
    assert workspace.resolve_checkpoint("epoch-10") == workspace.checkpoint(10)
    assert workspace.resolve_checkpoint("epoch-010") == workspace.checkpoint(10)
    assert workspace.resolve_checkpoint("epoch-5") == workspace.checkpoint(5)


def test_resolve_missing_model_dir(tmp_path):
    ws = Workspace(tmp_path / "absent")
    with pytest.raises(UserError, match="does not exist"):
        ws.resolve_checkpoint("best")


def test_resolve_without_checkpoints(workspace):
    with pytest.raises(UserError, match="no checkpoint"):
        workspace.resolve_checkpoint("last")
    workspace.checkpoints.mkdir()
    touch(workspace.checkpoints / "epoch-003.partial.keras")
    with pytest.raises(UserError, match="no checkpoint"):
        workspace.resolve_checkpoint("best")


@pytest.mark.parametrize(
    "spec", ["first", "epoch", "epoch-", "epoch-2x", "epoch--1", "5", "Epoch-5", "epoch-5.keras", ""]
)
def test_resolve_bad_spec(workspace, spec):
    touch(workspace.checkpoint(5))
    with pytest.raises(UserError, match="best, last or epoch-N"):
        workspace.resolve_checkpoint(spec)


def test_resolve_missing_epoch_lists_saved_ones(workspace):
    for epoch in (5, 10):
        touch(workspace.checkpoint(epoch))
    with pytest.raises(UserError, match="epoch-7") as caught:
        workspace.resolve_checkpoint("epoch-7")
    assert "epoch-5" in str(caught.value) and "epoch-10" in str(caught.value)


def test_remove_partial_files_and_clear(workspace):
    touch(workspace.checkpoint(1))
    touch(workspace.checkpoints / ".epoch-002.keras.4242.partial.keras")
    touch(workspace.root / ".config.json.4242.partial")
    touch(workspace.root / "notes.partial.txt")  # not ours: stays
    workspace.remove_partial_files()
    assert sorted(p.name for p in workspace.checkpoints.iterdir()) == ["epoch-001.keras"]
    assert not (workspace.root / ".config.json.4242.partial").exists()
    assert (workspace.root / "notes.partial.txt").exists()
    touch(workspace.config)
    touch(workspace.encoder)
    touch(workspace.logs / "events")
    workspace.clear()
    assert not workspace.checkpoints.exists() and not workspace.logs.exists()
    assert not workspace.config.exists() and not workspace.encoder.exists()


def test_damaged_history_is_a_user_error(workspace):
    workspace.history.write_text("epoch,loss\n1,not-a-number\n")
    with pytest.raises(UserError, match="damaged"):
        read_history(workspace.history)


def test_a_lock_file_that_is_a_link_is_never_written_through(tmp_path):
    """train.lock is the tool's own file: a link there (to a user's file) is replaced, not followed."""
    precious = tmp_path / "precious.txt"
    precious.write_text("the user's words\n")
    workspace = Workspace(tmp_path / "model")
    workspace.root.mkdir()
    workspace.lock_file.symlink_to(precious)
    with workspace.lock():
        assert not workspace.lock_file.is_symlink() and "nmt train" in workspace.lock_file.read_text()
    assert precious.read_text() == "the user's words\n"
