"""What is saved when, and where a resumed run starts.

Training moves through positions: complete epochs, and batches into the next one. At the end
of every epoch, in this order:

1. `history.csv`, with every epoch so far;
2. if the epoch is the best so far (highest validation BLEU, or lowest validation loss, as
   `--best-by` says): `checkpoints/best.keras`, the inference models `encoder.keras` and
   `decoder.keras`, then `checkpoints/best.json` naming the epoch, its position and its figure,
   then whatever the run asks of a new best (`after_best`: training exports a Transformer's to
   CTranslate2, `ctranslate2/`, stamped with best.keras' digest);
3. every `save_every` epochs, and after the run's last: `checkpoints/epoch-N.keras`.

At the end of an epoch that saves neither `epoch-N.keras` nor `best.keras`, and when a run
stops inside an epoch (its time budget is spent, or it is interrupted), it saves
`checkpoints/resume.keras`, with `resume.json` naming its position: there is one resume point at
most, the newest, and a kill never costs more than the epoch under way.

A checkpoint file is written before the stamp or name that makes it count, and a stamped set
(the best model and its inference models; the resume point) replaces the previous one only once
the new one is whole (`_save_together`), so whatever a killed run leaves, the newest complete
checkpoint is where the next run resumes (`resume_points`), and what a killed run wrote after it
(history rows, a best model from later) is dropped (`forget_after`). Every file goes through
`files`, so none is ever seen half-written.

The policy is plain Python, called by whatever loop trains (Keras `fit` through a callback, or a
custom distributed loop): it imports no TensorFlow, so a run can be planned before loading it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from nmt_cli import files
from nmt_cli.history import HistoryRow, best_row, write_history
from nmt_cli.workspace import Workspace

if TYPE_CHECKING:
    from nmt_cli.models.base import Seq2SeqModels


@dataclass(frozen=True, order=True)
class Position:
    """How far training has got: `epochs` complete, and `batches` into the next one."""

    epochs: int = 0
    batches: int = 0

    def __str__(self) -> str:
        if not self.batches:
            return f"the end of epoch {self.epochs}"
        return f"epoch {self.epochs + 1}, batch {self.batches}"

    def to_json(self) -> dict[str, int]:
        return {"epochs": self.epochs, "batches": self.batches}


def _read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


@dataclass(frozen=True, kw_only=True)
class _Stamp:
    """What makes a set of saved files count: the digests of the files saved together, and
    whether the save that wrote them is unfinished (see `_save_together`)."""

    sha256: dict[str, str] | None = None
    unfinished: bool = False

    def _marks(self) -> dict:
        return {"sha256": self.sha256, **({"committing": True} if self.unfinished else {})}

    @staticmethod
    def _marks_of(raw: dict) -> dict:
        digests = raw.get("sha256")
        ok = isinstance(digests, dict) and all(isinstance(v, str) for v in digests.values())
        return {"sha256": digests if ok else None, "unfinished": bool(raw.get("committing"))}


@dataclass(frozen=True)
class BestStamp(_Stamp):
    """`checkpoints/best.json`: where best.keras' weights were saved, the epoch whose history row
    made them the best and by which figure. Without digests (an older directory's, see
    `migration.py`) its files were never checked as a set; without a position, an unfinished
    save named none."""

    position: Position | None
    epoch: int | None
    by: str | None = None
    figure: float | None = None

    @staticmethod
    def files_of(workspace: Workspace) -> tuple[Path, tuple[Path, ...]]:
        """The stamp's path, and the files it covers."""
        return workspace.best_stamp, (workspace.best, workspace.encoder, workspace.decoder)

    @property
    def complete(self) -> bool:
        return self.position is not None and self.sha256 is not None and not self.unfinished

    def holds_end_of(self, epoch: int) -> bool:
        """Whether best.keras holds the weights `epoch-N.keras` of that epoch holds."""
        return self.position == Position(epoch)

    def to_json(self) -> dict:
        position = self.position.to_json() if self.position is not None else None
        return {"epoch": self.epoch, "position": position, "by": self.by, "figure": self.figure} | self._marks()

    @classmethod
    def read(cls, workspace: Workspace) -> BestStamp | None:
        raw = _read_json(workspace.best_stamp)
        if raw is None:
            return None
        try:
            epoch = None if raw["epoch"] is None else int(raw["epoch"])
            position = None if raw["position"] is None else Position(**raw["position"])
        except (KeyError, TypeError, ValueError):
            return None
        figure = raw.get("figure")
        figure = float(figure) if isinstance(figure, (int, float)) else None
        return cls(position, epoch, raw.get("by"), figure, **cls._marks_of(raw))


@dataclass(frozen=True)
class ResumeStamp(_Stamp):
    """`checkpoints/resume.json`: the position resume.keras was saved at, and what that epoch's
    figures added up to by then (for its history row)."""

    position: Position
    epoch_so_far: dict | None = None

    @staticmethod
    def files_of(workspace: Workspace) -> tuple[Path, tuple[Path, ...]]:
        return workspace.resume_stamp, (workspace.resume_checkpoint,)

    def to_json(self) -> dict:
        carried = {"epoch_so_far": self.epoch_so_far} if self.epoch_so_far else {}
        return self.position.to_json() | carried | self._marks()

    @classmethod
    def read(cls, workspace: Workspace) -> ResumeStamp | None:
        raw = _read_json(workspace.resume_stamp)
        try:
            position = Position(int(raw["epochs"]), int(raw["batches"]))
        except (KeyError, TypeError, ValueError):
            return None
        carried = raw.get("epoch_so_far")
        return cls(position, carried if isinstance(carried, dict) else None, **cls._marks_of(raw))


_AnyStamp = TypeVar("_AnyStamp", BestStamp, ResumeStamp)


def resume_points(workspace: Workspace) -> list[tuple[Position, Path]]:
    """Every saved position with its checkpoint file, the newest first.

    A complete best.keras is one of them: it holds the optimizer state as every checkpoint does,
    and it is the most valuable file here, so a resume never starts from before it while it loads.
    """
    points = [(Position(epoch), workspace.checkpoint(epoch)) for epoch in workspace.saved_epochs()]
    best = complete_best_position(workspace)
    if best is not None and workspace.best.is_file():
        points.append((best, workspace.best))
    stamp = ResumeStamp.read(workspace)
    if stamp is not None and not stamp.unfinished and workspace.resume_checkpoint.is_file():
        points.append((stamp.position, workspace.resume_checkpoint))
    return sorted(points, reverse=True)


def epoch_so_far(workspace: Workspace, position: Position) -> dict | None:
    """What the resume point at `position` (inside an epoch) carries of that epoch's figures."""
    stamp = ResumeStamp.read(workspace)
    return stamp.epoch_so_far if stamp is not None and stamp.position == position else None


def best_position(workspace: Workspace) -> Position | None:
    """Where the weights of best.keras were saved."""
    stamp = BestStamp.read(workspace)
    return stamp.position if stamp is not None else None


def complete_best_position(workspace: Workspace) -> Position | None:
    """Where best.keras was saved, if its stamp says the save completed (it lists the digests of
    the files saved together); None for a save cut short, or a stamp from before digests."""
    stamp = BestStamp.read(workspace)
    return stamp.position if stamp is not None and stamp.complete else None


def epoch_held_by(workspace: Workspace, checkpoint: Path) -> int | None:
    """The epoch whose history row a checkpoint's weights belong to (best.keras: its stamp's)."""
    if checkpoint == workspace.best:
        stamp = BestStamp.read(workspace)
        return stamp.epoch if stamp is not None else None
    return workspace.epoch_of(checkpoint)


def inference_models_of_best(workspace: Workspace) -> bool:
    """Whether encoder.keras and decoder.keras are the ones saved with best.keras."""
    stamp = BestStamp.read(workspace)
    if stamp is None or not stamp.complete:
        return False
    paths = (workspace.encoder, workspace.decoder)
    return all(path.is_file() and files.sha256(path) == stamp.sha256.get(path.name) for path in paths)


def _staged(path: Path) -> Path:
    """Where a file of a stamped set is written whole before the set's stamp moves it into place."""
    return path.with_name(f".{path.stem}.next{path.suffix}")


def _save_together(stamp: _AnyStamp, workspace: Workspace, models: list) -> _AnyStamp:
    """Save `models` as the set of files `stamp` covers, with the stamp, and return the stamp
    written (with the files' digests).

    Each file is written whole under a staged name; the stamp then names the new set with its
    digests, marked unfinished; only then do the files move into place, and the mark goes. A
    kill before that stamp leaves the previous set whole; a kill after it leaves a set the next
    run completes (`finish_saves`).
    """
    _, paths = stamp.files_of(workspace)
    for model, path in zip(models, paths, strict=True):
        files.save_model(model, _staged(path))
    stamp = replace(stamp, sha256={path.name: files.sha256(_staged(path)) for path in paths}, unfinished=True)
    _write(stamp, workspace)
    stamp = replace(stamp, unfinished=False)
    _move_in(stamp, workspace)
    return stamp


def _write(stamp: _AnyStamp, workspace: Workspace) -> None:
    files.write_text(stamp.files_of(workspace)[0], json.dumps(stamp.to_json()) + "\n")


def _move_in(stamp: _AnyStamp, workspace: Workspace) -> None:
    for path in stamp.files_of(workspace)[1]:
        if _staged(path).exists():
            files.commit(_staged(path), path)
    _write(stamp, workspace)


def finish_saves(workspace: Workspace) -> None:
    """Complete the saves a kill cut short once their stamps had named the new files, and remove
    the staged files of saves cut short before: run by the process that trains a directory, under
    its lock, before it looks for resume points."""
    for kind in (BestStamp, ResumeStamp):
        stamp, (_, paths) = kind.read(workspace), kind.files_of(workspace)
        if stamp is not None and stamp.unfinished and stamp.sha256 is not None:
            newest = {path.name: _staged(path) if _staged(path).exists() else path for path in paths}
            if all(file.is_file() and files.sha256(file) == stamp.sha256.get(name) for name, file in newest.items()):
                _move_in(replace(stamp, unfinished=False), workspace)
        for path in paths:
            _staged(path).unlink(missing_ok=True)


def set_aside(workspace: Workspace, checkpoint: Path) -> Path:
    """Rename a checkpoint that does not load to `*.unloadable` (kept, out of the way), with the
    stamp that made it count."""
    aside = checkpoint.with_name(checkpoint.name + ".unloadable")
    checkpoint.replace(aside)
    stamp = {workspace.best: workspace.best_stamp, workspace.resume_checkpoint: workspace.resume_stamp}.get(checkpoint)
    if stamp is not None:
        stamp.unlink(missing_ok=True)
    return aside


def forget_after(workspace: Workspace, position: Position) -> None:
    """A resume from `position` drops what came later: a best model (or one whose save a kill cut
    short), a newer resume point. Checkpoints of later epochs did not load (or the resume would
    have started there): they are renamed `*.unloadable`, out of the way but not deleted."""
    stamp = BestStamp.read(workspace)
    if stamp is not None and (stamp.unfinished or stamp.position > position):
        for path in (workspace.best_stamp, workspace.best, workspace.encoder, workspace.decoder):
            path.unlink(missing_ok=True)
    for epoch in workspace.saved_epochs():
        if epoch > position.epochs:
            path = workspace.checkpoint(epoch)
            path.replace(path.with_name(path.name + ".unloadable"))
    newest = resume_points(workspace)
    if newest and newest[0][0] > position:
        workspace.resume_stamp.unlink(missing_ok=True)
        workspace.resume_checkpoint.unlink(missing_ok=True)


class CheckpointPolicy:
    """Writes the files above; `history` holds the rows of the epochs before the run's start."""

    def __init__(
        self,
        workspace: Workspace,
        models: Seq2SeqModels,
        history: list[HistoryRow],
        save_every: int,
        best_by: str,
        writes: bool = True,
        after_best: Callable[[BestStamp], None] | None = None,
        on_saved: Callable[[str], None] | None = None,
    ):
        self.workspace, self.models, self.history = workspace, models, history
        self.after_best = after_best  # what else a new best brings (training exports it to CTranslate2)
        self.on_saved = on_saved or (lambda what: None)  # told of each checkpoint written
        self.save_every, self.best_by = save_every, best_by
        self.writes = writes  # False for every worker but the chief: it keeps count, writes nothing
        best = best_row(history, best_by)
        # Without best.keras (a resume dropped it) the next epoch is the best there is.
        self.best = best.figure(best_by) if best is not None and workspace.best.exists() else -math.inf
        self.epochs_since_best = 0

    def improves(self, row: HistoryRow) -> bool:
        return row.figure(self.best_by) > self.best

    def epoch_end(self, row: HistoryRow, position: Position, last: bool, epoch_so_far: dict | None = None) -> None:
        """Record an epoch (or, at a position inside an epoch, the part of it that ran, whose
        figures so far `epoch_so_far` holds for the resumed run)."""
        self.history.append(row)
        improves = self.improves(row)
        self.best, self.epochs_since_best = (
            (row.figure(self.best_by), 0) if improves else (self.best, self.epochs_since_best + 1)
        )
        if not self.writes:
            return
        write_history(self.workspace.history, self.history)
        if improves:
            self._save_best(row, position)
        if position.batches:
            self.save_resume_point(position, epoch_so_far)
        elif position.epochs % self.save_every == 0 or last:
            self.save_epoch(position)
        elif improves:
            self._drop_resume_point()  # best.keras, saved here, is the newest resume point now
        else:
            # Every epoch end is a resume point, so that a kill costs at most the epoch under way.
            self.save_resume_point(position)

    def _save_best(self, row: HistoryRow, position: Position) -> None:
        models = [self.models.training, self.models.encoder, self.models.decoder]
        stamp = _save_together(BestStamp(position, row.epoch, self.best_by, self.best), self.workspace, models)
        figure = row.figure_text(self.best_by)
        self.on_saved(f"{self.workspace.best.name} with its inference models ({position}, {figure})")
        if self.after_best is not None:
            self.after_best(stamp)

    def save_epoch(self, position: Position) -> None:
        """The checkpoint of a complete epoch, if not saved yet; a resume point it passes goes."""
        path = self.workspace.checkpoint(position.epochs)
        if not self.writes:
            return
        if not path.exists():
            files.save_model(self.models.training, path)
            self.on_saved(path.name)
        self._drop_resume_point()

    def _drop_resume_point(self) -> None:
        self.workspace.resume_stamp.unlink(missing_ok=True)
        self.workspace.resume_checkpoint.unlink(missing_ok=True)

    def save_resume_point(self, position: Position, epoch_so_far: dict | None = None) -> Path:
        """The model (weights and optimizer state) at `position`, with its stamp, which carries
        `epoch_so_far` (what the epoch's figures add up to by then, for its row)."""
        if not self.writes:
            return self.workspace.resume_checkpoint
        _save_together(ResumeStamp(position, epoch_so_far), self.workspace, [self.models.training])
        self.on_saved(f"{self.workspace.resume_checkpoint.name} ({position})")
        return self.workspace.resume_checkpoint
