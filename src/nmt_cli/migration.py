"""Model directories written by earlier versions, turned into today's layout when opened.

This is the one module that knows older layouts; everything else reads today's. Each step
rewrites one file, whole (through `files`), and only when the file is older, so opening a
current directory writes nothing:

* `config.json`: options added since are written out with the values the model was trained
  with (their defaults then, which are today's for its architecture); a data directory stored
  relative to where `nmt train` ran (as it once was) is stored relative to the model directory.
* `history.csv`: columns added since (`val_bleu`, `steps`) are written as NaN: unknown.
* `checkpoints/best.json`: a stamp without digests gets those of its files (before digests, a
  stamp was written only once its files were all saved: they belong together), so an older best
  model is a resume point, never dropped by a resume; one that names only an epoch is that
  epoch's end; `{"saving": true}`, a save cut short before saves were staged, is an unfinished
  stamp that names no files.

A directory with no `config.json` is not a model directory: nothing is done.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import MISSING, fields
from pathlib import Path

from nmt_cli import files
from nmt_cli.checkpoints import BestStamp, Position
from nmt_cli.config import ModelConfig, RunConfig, TrainingConfig, load_config
from nmt_cli.errors import UserError
from nmt_cli.history import COLUMNS
from nmt_cli.workspace import Workspace

_ADDED_HISTORY_COLUMNS = ("val_bleu", "steps")


def open_config(workspace: Workspace) -> RunConfig:
    """The config of an existing model directory, once the directory is today's (`migrate`)."""
    migrate(workspace)
    return load_config(workspace.config)


def migrate(workspace: Workspace) -> list[Path]:
    """Bring the files of an older model directory up to date; returns the files rewritten."""
    if not workspace.config.is_file():
        return []
    steps = ((workspace.config, _config), (workspace.history, _history), (workspace.best_stamp, _best_stamp))
    rewritten = []
    for path, upgrade in steps:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue  # absent, or damaged: its reader names it
        today = upgrade(text, workspace)
        if today is None or today == text:
            continue
        try:
            files.write_text(path, today)
        except OSError as error:
            raise UserError(
                f"{path} was written by an earlier nmt and must be updated once, but cannot be written "
                f"({error.strerror}): make {workspace.root} writable, or open a writable copy"
            ) from None
        rewritten.append(path)
    return rewritten


def _defaults(options: type) -> dict:
    return {item.name: item.default for item in fields(options) if item.default is not MISSING}


def _config(text: str, workspace: Workspace) -> str | None:
    try:
        raw = json.loads(text)
        sections = {"model": ModelConfig, "training": TrainingConfig}
        if not all(isinstance(raw[name], dict) for name in sections):
            return None
    except (ValueError, KeyError, TypeError):
        return None  # damaged: load_config names it
    upgraded = {
        **raw,
        **{name: _defaults(options) | raw[name] for name, options in sections.items()},
        "parent": raw.get("parent"),
    }
    stored = Path(str(raw.get("data_dir", "")))
    beside = Path(os.path.normpath(workspace.root.absolute() / stored))
    relative_to_where_trained = not stored.is_absolute() and not beside.exists() and stored.exists()
    if upgraded == raw and not relative_to_where_trained:
        return None
    try:
        config = RunConfig.from_json(json.dumps(upgraded))  # today's defaults for the architecture fill the rest
    except (ValueError, KeyError, TypeError):
        return None
    if relative_to_where_trained:
        config = config.with_data_dir(stored, workspace.root)
    return config.to_json()


def _history(text: str, workspace: Workspace) -> str | None:
    rows = list(csv.DictReader(io.StringIO(text)))
    header = text.split("\n", 1)[0].split(",")
    missing = [name for name in COLUMNS if name not in header]
    if not missing or not set(missing) <= set(_ADDED_HISTORY_COLUMNS):
        return None  # today's, or damaged: read_history names it
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows({**dict.fromkeys(missing, "nan"), **row} for row in rows)
    return out.getvalue()


def _best_stamp(text: str, workspace: Workspace) -> str | None:
    try:
        raw = json.loads(text)
    except ValueError:
        return None
    if not isinstance(raw, dict) or "sha256" in raw:
        return None
    if raw.get("saving"):
        stamp = BestStamp(None, None, unfinished=True)
    else:
        try:
            epoch = int(raw["epoch"])
            position = Position(**raw["position"]) if "position" in raw else Position(epoch)
        except (KeyError, TypeError, ValueError):
            return None
        _, paths = BestStamp.files_of(workspace)
        digests = {path.name: files.sha256(path) for path in paths} if all(p.is_file() for p in paths) else None
        stamp = BestStamp(position, epoch, raw.get("by"), raw.get("figure"), sha256=digests)
    return json.dumps(stamp.to_json()) + "\n"
