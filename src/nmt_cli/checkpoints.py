"""What is saved when, and where a resumed run starts.

At the end of every epoch, in this order:

1. `history.csv`, with every epoch so far;
2. if the epoch is the best so far (lowest validation loss): `checkpoints/best.keras`, the
   inference models `encoder.keras` and `decoder.keras`, then `checkpoints/best.json` naming the
   epoch;
3. every `save_every` epochs, and after the last one: `checkpoints/epoch-N.keras`.

An epoch checkpoint is written last because it is what marks an epoch complete: a run resumes
from the latest one (`resume_point`), and whatever a killed run wrote after it (history rows,
a best model of a later epoch) is dropped (`forget_after`). Every file goes through `files`, so
none is ever seen half-written.

The policy is plain Python, called by whatever loop trains (Keras `fit` through a callback, or a
custom distributed loop): it imports no TensorFlow, so a run can be planned before loading it.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from nmt_cli import files
from nmt_cli.workspace import Workspace, write_history

if TYPE_CHECKING:
    from nmt_cli.models.base import Seq2SeqModels


def resume_point(workspace: Workspace) -> int:
    """The latest complete epoch: 0 when none is."""
    epochs = workspace.saved_epochs()
    return epochs[-1] if epochs else 0


def forget_after(workspace: Workspace, epoch: int) -> None:
    """A resume from `epoch` drops later epochs: a best model from one of them goes too."""
    best = workspace.best_epoch()
    if best is not None and best > epoch:
        for path in (workspace.best_stamp, workspace.best, workspace.encoder, workspace.decoder):
            path.unlink(missing_ok=True)


class CheckpointPolicy:
    """Writes the files above at the end of each epoch; `history` holds the rows of earlier epochs."""

    def __init__(self, workspace: Workspace, models: Seq2SeqModels, history: list[dict], save_every: int, epochs: int):
        self.workspace, self.models, self.history = workspace, models, history
        self.save_every, self.epochs = save_every, epochs
        self.best_val_loss = min((row["val_loss"] for row in history), default=float("inf"))

    def epoch_end(self, row: dict[str, float]) -> None:
        self.history.append(row)
        number = int(row["epoch"])
        write_history(self.workspace.history, self.history)
        if row["val_loss"] < self.best_val_loss:
            self.best_val_loss = row["val_loss"]
            files.save_model(self.models.training, self.workspace.best)
            files.save_model(self.models.encoder, self.workspace.encoder)
            files.save_model(self.models.decoder, self.workspace.decoder)
            files.write_text(self.workspace.best_stamp, json.dumps({"epoch": number}) + "\n")
        if number % self.save_every == 0 or number == self.epochs:
            files.save_model(self.models.training, self.workspace.checkpoint(number))
