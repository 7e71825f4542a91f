"""The layout of a model directory, in one place. It describes paths; it builds no models.

MODEL_DIR/config.json               every option, the data it was trained on, the tool version
MODEL_DIR/history.csv               one row per epoch
MODEL_DIR/checkpoints/epoch-005.keras  full checkpoints (weights + optimizer state)
MODEL_DIR/checkpoints/best.keras    the best epoch so far (best.json: which, and by what)
MODEL_DIR/encoder.keras, decoder.keras  inference models of best.keras, loadable from plain Keras
MODEL_DIR/ctranslate2/              a CTranslate2 export of a checkpoint (best.keras, when training makes it)
MODEL_DIR/logs/                     TensorBoard logs
MODEL_DIR/eval/                     `nmt evaluate`'s hypotheses and scores
MODEL_DIR/spm.SRC.model, spm.TGT.model, data-manifest.json
                                    the tokenizers and data manifest, copied at training time
                                    so the directory translates on its own
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from nmt_cli import files
from nmt_cli.datadir import MANIFEST, Manifest, tokenizer_file
from nmt_cli.errors import UserError

if TYPE_CHECKING:
    from nmt_cli.config import RunConfig

_EPOCH_FILE = re.compile(r"^epoch-(\d+)\.keras$")


class Workspace:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.evaluations = self.root / "eval"
        self.config = self.root / "config.json"
        self.history = self.root / "history.csv"
        self.checkpoints = self.root / "checkpoints"
        self.best = self.checkpoints / "best.keras"
        self.best_stamp = self.checkpoints / "best.json"  # which epoch best.keras and the inference models hold
        self.resume_checkpoint = self.checkpoints / "resume.keras"  # a run stopped inside an epoch
        self.resume_stamp = self.checkpoints / "resume.json"  # ... and where inside it
        self.encoder = self.root / "encoder.keras"
        self.decoder = self.root / "decoder.keras"
        self.logs = self.root / "logs"
        self.data_manifest = self.root / "data-manifest.json"
        self.lock_file = self.root / "train.lock"  # held by the run training this directory
        self.export = self.root / "ctranslate2"  # the CTranslate2 model of a checkpoint (export.py)

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the model directory for one training run: a second run refuses at once.

        An OS lock (`flock`) on `train.lock`: the system releases it when its process ends, however
        it ends, so a lock left by a dead run never blocks. A folder made only to hold the lock of
        a run that did not start is removed again.
        """
        made = not self.root.exists()
        self.root.mkdir(parents=True, exist_ok=True)
        if self.lock_file.is_symlink():
            self.lock_file.unlink()  # the lock is this tool's own file: never written through a link
        descriptor = os.open(self.lock_file, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        stream = open(descriptor, "a+", encoding="utf-8")
        try:
            try:
                fcntl.flock(stream, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                stream.seek(0)
                holder = stream.read().strip() or "another process"
                raise UserError(
                    f"{self.root} is being trained by {holder}; wait for that run to end, or choose another --model-dir"
                ) from None
            stream.seek(0)
            stream.truncate()
            stream.write(f"nmt train (process {os.getpid()})\n")
            stream.flush()
            try:
                yield
            finally:
                if made and [p.name for p in self.root.iterdir()] == [self.lock_file.name]:
                    self.lock_file.unlink()
                    self.root.rmdir()
        finally:
            stream.close()  # closing releases the lock

    def tokenizer(self, lang: str) -> Path:
        return self.root / tokenizer_file(lang)

    def checkpoint(self, epoch: int) -> Path:
        return self.checkpoints / f"epoch-{epoch:03d}.keras"

    def checkpoint_name(self, path: Path) -> str:
        """What `--checkpoint` calls a checkpoint file: best or epoch-N."""
        epoch = self.epoch_of(path)
        return Path(path).stem if epoch is None else f"epoch-{epoch}"

    def epoch_of(self, checkpoint: Path) -> int | None:
        """N for `epoch-N.keras`; None for any other file."""
        match = _EPOCH_FILE.match(Path(checkpoint).name)
        return int(match.group(1)) if match else None

    def saved_epochs(self) -> list[int]:
        if not self.checkpoints.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.checkpoints.iterdir() if (m := _EPOCH_FILE.match(p.name)))

    def check_exists(self) -> None:
        """A clear error, before anything slow, when there is no model directory here."""
        if not self.root.is_dir():
            raise UserError(
                f"model directory {self.root} does not exist; train one with `nmt train --model-dir {self.root}`"
            )

    def resolve_checkpoint(self, choice: str = "best") -> Path:
        """`best`, `last` or `epoch-N` to a checkpoint file that exists."""
        self.check_exists()
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

    def read_manifest(self, config: RunConfig) -> Manifest:
        """The data manifest copied at training time; a damaged one is named, with the way to
        restore it where the data directory still holds the original."""
        try:
            return Manifest.read(self.data_manifest)
        except UserError as damaged:
            original = config.resolve_data_dir(self.root) / MANIFEST
            if original.is_file() and files.sha256(original) == config.data_manifest_sha256:
                raise UserError(
                    f"{self.data_manifest} is damaged; restore it with: cp {original} {self.data_manifest}"
                ) from None
            raise damaged

    def clear(self) -> None:
        """Remove everything training wrote, for `--restart`."""
        for path in (self.checkpoints, self.logs, self.evaluations, self.export):
            shutil.rmtree(path, ignore_errors=True)
        for path in (
            self.config,
            self.history,
            self.encoder,
            self.decoder,
            self.data_manifest,
            *self.root.glob("spm.*.model"),
        ):
            path.unlink(missing_ok=True)

    def remove_partial_files(self) -> None:
        """Temporary files an interrupted run left."""
        for folder in (self.root, self.checkpoints):
            files.remove_partials(folder)
