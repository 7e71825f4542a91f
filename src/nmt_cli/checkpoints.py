"""What is saved when, and where a resumed run starts.

Training moves through positions: complete epochs, and batches into the next one. At the end
of every epoch, in this order:

1. `history.csv`, with every epoch so far;
2. if the epoch is the best so far (highest validation BLEU, or lowest validation loss, as
   `--best-by` says): `checkpoints/best.keras`, the inference models `encoder.keras` and
   `decoder.keras`, then `checkpoints/best.json` naming the epoch, its position and its figure,
   then (for a Transformer) its CTranslate2 export `ctranslate2/`, stamped with best.keras' digest;
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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nmt_cli import files
from nmt_cli.export import export
from nmt_cli.workspace import Workspace, write_history

if TYPE_CHECKING:
    from nmt_cli.config import ModelConfig
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


def resume_points(workspace: Workspace) -> list[tuple[Position, Path]]:
    """Every saved position with its checkpoint file, the newest first.

    A complete best.keras is one of them: it holds the optimizer state as every checkpoint does,
    and it is the most valuable file here, so a resume never starts from before it while it loads.
    """
    points = [(Position(epoch), workspace.checkpoint(epoch)) for epoch in workspace.saved_epochs()]
    best = complete_best_position(workspace)
    if best is not None and workspace.best.is_file():
        points.append((best, workspace.best))
    stamp = _read_json(workspace.resume_stamp)
    if stamp is not None and not stamp.get("committing") and workspace.resume_checkpoint.is_file():
        try:
            points.append((Position(int(stamp["epochs"]), int(stamp["batches"])), workspace.resume_checkpoint))
        except (KeyError, TypeError, ValueError):
            pass
    return sorted(points, reverse=True)


def epoch_so_far(workspace: Workspace, position: Position) -> dict | None:
    """What the resume point at `position` (inside an epoch) carries of that epoch's figures."""
    stamp = _read_json(workspace.resume_stamp) or {}
    if Position(stamp.get("epochs", -1), stamp.get("batches", -1)) != position:
        return None
    carried = stamp.get("epoch_so_far")
    return carried if isinstance(carried, dict) else None


def best_position(workspace: Workspace) -> Position | None:
    """Where the weights of best.keras were saved (stamps from before positions: an epoch's end)."""
    stamp = _read_json(workspace.best_stamp)
    try:
        return Position(**stamp["position"]) if "position" in stamp else Position(int(stamp["epoch"]))
    except (KeyError, TypeError, ValueError):
        return None


def complete_best_position(workspace: Workspace) -> Position | None:
    """Where best.keras was saved, if its stamp says the save completed (it lists the digests of
    the files saved together); None for a save cut short, or a stamp from before digests."""
    stamp = _read_json(workspace.best_stamp)
    if stamp is None or stamp.get("saving") or stamp.get("committing") or "sha256" not in stamp:
        return None
    return best_position(workspace)


def _staged(path: Path) -> Path:
    """Where a file of a stamped set is written whole before the set's stamp moves it into place."""
    return path.with_name(f".{path.stem}.next{path.suffix}")


def _stamped_sets(workspace: Workspace) -> tuple[tuple[Path, tuple[Path, ...]], ...]:
    best = (workspace.best, workspace.encoder, workspace.decoder)
    return (workspace.best_stamp, best), (workspace.resume_stamp, (workspace.resume_checkpoint,))


def _save_together(stamp_path: Path, saves: list[tuple[object, Path]], stamp: dict) -> dict[str, str]:
    """Save models as one set with the stamp that makes them count, and return their digests.

    Each file is written whole under a staged name; the stamp then names the new set with its
    digests, marked "committing"; only then do the files move into place, and the mark goes. A
    kill before that stamp leaves the previous set whole; a kill after it leaves a set the next
    run completes (`finish_saves`).
    """
    digests = {}
    for model, path in saves:
        files.save_model(model, _staged(path))
        digests[path.name] = files.sha256(_staged(path))
    files.write_text(stamp_path, json.dumps({**stamp, "sha256": digests, "committing": True}) + "\n")
    _move_in(stamp_path, [path for _, path in saves], {**stamp, "sha256": digests})
    return digests


def _move_in(stamp_path: Path, paths: list[Path], stamp: dict) -> None:
    for path in paths:
        if _staged(path).exists():
            files.commit(_staged(path), path)
    files.write_text(stamp_path, json.dumps(stamp) + "\n")


def finish_saves(workspace: Workspace) -> None:
    """Complete the saves a kill cut short once their stamps had named the new files, and remove
    the staged files of saves cut short before: run by the process that trains a directory, under
    its lock, before it looks for resume points."""
    for stamp_path, paths in _stamped_sets(workspace):
        stamp = _read_json(stamp_path)
        if stamp is not None and stamp.pop("committing", False):
            digests = stamp.get("sha256") if isinstance(stamp.get("sha256"), dict) else {}
            newest = {path: _staged(path) if _staged(path).exists() else path for path in paths}
            if all(file.is_file() and files.sha256(file) == digests.get(path.name) for path, file in newest.items()):
                _move_in(stamp_path, list(paths), stamp)
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
    stamp = _read_json(workspace.best_stamp) or {}
    best = best_position(workspace)
    if stamp.get("saving") or stamp.get("committing") or (best is not None and best > position):
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


def figure_of(row: dict[str, float], best_by: str) -> float:
    """The figure `--best-by` ranks epochs by, as a score where higher is better."""
    return row["val_bleu"] if best_by == "bleu" else -row["val_loss"]


class CheckpointPolicy:
    """Writes the files above; `history` holds the rows of the epochs before the run's start."""

    def __init__(
        self,
        workspace: Workspace,
        models: Seq2SeqModels,
        history: list[dict],
        save_every: int,
        best_by: str,
        writes: bool = True,
        export: ModelConfig | None = None,
    ):
        self.workspace, self.models, self.history = workspace, models, history
        self.export = export  # the model's options, when each new best is also exported to CTranslate2
        self.save_every, self.best_by = save_every, best_by
        self.writes = writes  # False for every worker but the chief: it keeps count, writes nothing
        figures = [figure_of(row, best_by) for row in history]
        figures = [f for f in figures if not math.isnan(f)]
        # Without best.keras (a resume dropped it) the next epoch is the best there is.
        self.best = max(figures, default=-math.inf) if workspace.best.exists() else -math.inf
        self.epochs_since_best = 0

    def improves(self, row: dict[str, float]) -> bool:
        return figure_of(row, self.best_by) > self.best

    def epoch_end(
        self, row: dict[str, float], position: Position, last: bool, epoch_so_far: dict | None = None
    ) -> None:
        """Record an epoch (or, at a position inside an epoch, the part of it that ran, whose
        figures so far `epoch_so_far` holds for the resumed run)."""
        self.history.append(row)
        improves = self.improves(row)
        self.best, self.epochs_since_best = (
            (figure_of(row, self.best_by), 0) if improves else (self.best, self.epochs_since_best + 1)
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

    def _save_best(self, row: dict[str, float], position: Position) -> None:
        stamp = {"epoch": int(row["epoch"]), "position": position.to_json(), "by": self.best_by, "figure": self.best}
        saves = [(self.models.training, self.workspace.best), *self._inference_files()]
        saved = _save_together(self.workspace.best_stamp, saves, stamp)
        if self.export is not None:
            # Its stamp names best.keras' digest: if a later best.keras is not exported (a kill), the
            # export no longer matches it, and translation uses the Keras engine until it does.
            export(
                self.models.training,
                self.export,
                self.workspace,
                self.workspace.best,
                "best",
                int(row["epoch"]),
                checkpoint_sha256=saved[self.workspace.best.name],
            )

    def _inference_files(self):
        return ((self.models.encoder, self.workspace.encoder), (self.models.decoder, self.workspace.decoder))

    def save_epoch(self, position: Position) -> None:
        """The checkpoint of a complete epoch, if not saved yet; a resume point it passes goes."""
        path = self.workspace.checkpoint(position.epochs)
        if not self.writes:
            return
        if not path.exists():
            files.save_model(self.models.training, path)
        self._drop_resume_point()

    def _drop_resume_point(self) -> None:
        self.workspace.resume_stamp.unlink(missing_ok=True)
        self.workspace.resume_checkpoint.unlink(missing_ok=True)

    def save_resume_point(self, position: Position, epoch_so_far: dict | None = None) -> Path:
        """The model (weights and optimizer state) at `position`, with its stamp, which carries
        `epoch_so_far` (what the epoch's figures add up to by then, for its row)."""
        if not self.writes:
            return self.workspace.resume_checkpoint
        stamp = {**position.to_json(), **({"epoch_so_far": epoch_so_far} if epoch_so_far else {})}
        _save_together(self.workspace.resume_stamp, [(self.models.training, self.workspace.resume_checkpoint)], stamp)
        return self.workspace.resume_checkpoint
