"""The layout of a model directory, in one place.

    MODEL_DIR/config.json               every option, the data it was trained on, the tool version
    MODEL_DIR/history.csv               one row per epoch
    MODEL_DIR/checkpoints/epoch-005.keras  full checkpoints (weights + optimizer state)
    MODEL_DIR/checkpoints/best.keras    the epoch with the lowest validation loss
    MODEL_DIR/encoder.keras, decoder.keras  inference models of best.keras, loadable from plain Keras
    MODEL_DIR/logs/                     TensorBoard logs
    MODEL_DIR/spm.SRC.model, spm.TGT.model, data-manifest.json
                                        the tokenizers and data manifest, copied at training time
                                        so the directory translates on its own
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from nmt_cli.errors import UserError

_EPOCH_FILE = re.compile(r"^epoch-(\d+)\.keras$")


def write_text_atomic(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def save_model_atomic(model, path: Path) -> None:
    """`model.save` to a temporary name, then rename: a reader never sees half a file."""
    partial = path.with_name(path.stem + ".partial.keras")
    model.save(partial)
    os.replace(partial, path)


class Workspace:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.config = self.root / "config.json"
        self.history = self.root / "history.csv"
        self.checkpoints = self.root / "checkpoints"
        self.best = self.checkpoints / "best.keras"
        self.encoder = self.root / "encoder.keras"
        self.decoder = self.root / "decoder.keras"
        self.logs = self.root / "logs"
        self.data_manifest = self.root / "data-manifest.json"

    def tokenizer(self, lang: str) -> Path:
        return self.root / f"spm.{lang}.model"

    def checkpoint(self, epoch: int) -> Path:
        return self.checkpoints / f"epoch-{epoch:03d}.keras"

    def checkpoint_name(self, path: Path) -> str:
        """What `--checkpoint` calls a checkpoint file: best or epoch-N."""
        match = _EPOCH_FILE.match(Path(path).name)
        return f"epoch-{int(match.group(1))}" if match else Path(path).stem

    def saved_epochs(self) -> list[int]:
        if not self.checkpoints.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.checkpoints.iterdir() if (m := _EPOCH_FILE.match(p.name)))

    def resolve_checkpoint(self, choice: str = "best") -> Path:
        """`best`, `last` or `epoch-N` to a checkpoint file that exists."""
        if not self.root.is_dir():
            raise UserError(f"model directory {self.root} does not exist; train one with `nmt train --model-dir {self.root}`")
        epochs = self.saved_epochs()
        if choice == "best" and self.best.exists():
            return self.best
        if not epochs:
            raise UserError(f"{self.root} holds no checkpoint yet; run `nmt train --model-dir {self.root}`")
        if choice in ("best", "last"):
            return self.checkpoint(epochs[-1])
        match = re.fullmatch(r"epoch-(\d+)", choice)
        if not match:
            raise UserError(f"--checkpoint must be best, last or epoch-N, not {choice!r}")
        path = self.checkpoint(int(match.group(1)))
        if not path.exists():
            saved = ", ".join(f"epoch-{e}" for e in epochs)
            raise UserError(f"no checkpoint {choice} in {self.root}; saved: {saved}")
        return path

    def clear(self) -> None:
        """Remove everything training wrote, for `--restart`."""
        for path in (self.checkpoints, self.logs):
            shutil.rmtree(path, ignore_errors=True)
        for path in (self.config, self.history, self.encoder, self.decoder, self.data_manifest, *self.root.glob("spm.*.model")):
            path.unlink(missing_ok=True)

    def remove_partial_files(self) -> None:
        for folder in (self.root, self.checkpoints):
            if folder.is_dir():
                for path in folder.glob("*.partial*"):
                    path.unlink()
