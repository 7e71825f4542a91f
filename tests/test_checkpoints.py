"""nmt_cli.checkpoints: the resume point and what a resume forgets."""

from __future__ import annotations

from nmt_cli.checkpoints import forget_after, resume_point
from nmt_cli.workspace import Workspace


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_resume_point_is_the_latest_epoch_checkpoint(tmp_path):
    workspace = Workspace(tmp_path / "model")
    assert resume_point(workspace) == 0
    touch(workspace.best)
    assert resume_point(workspace) == 0
    for epoch in (5, 10):
        touch(workspace.checkpoint(epoch))
    assert resume_point(workspace) == 10


def test_forget_after_drops_a_best_model_from_later_epochs(tmp_path):
    workspace = Workspace(tmp_path / "model")
    for path in (workspace.best, workspace.encoder, workspace.decoder):
        touch(path)
    workspace.best_stamp.write_text('{"epoch": 7}\n')
    forget_after(workspace, 7)
    assert workspace.best.exists() and workspace.best_epoch() == 7
    forget_after(workspace, 5)
    assert not any(p.exists() for p in (workspace.best, workspace.encoder, workspace.decoder, workspace.best_stamp))
