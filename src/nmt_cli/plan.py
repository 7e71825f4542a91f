"""What `nmt train` will do: the effective options, the data and the epoch it starts from.

Everything here is decided and checked before TensorFlow loads, so that a mistake (a missing
data directory, an option that does not fit the saved model) is answered at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from nmt_cli import __version__, files
from nmt_cli.checkpoints import Position, finish_saves, resume_points
from nmt_cli.config import DEFAULT_DATA_DIR, DEFAULT_MODEL_DIR, ModelConfig, RunConfig, TrainingConfig, load_config
from nmt_cli.datadir import DataDir
from nmt_cli.errors import UserError
from nmt_cli.history import read_history
from nmt_cli.migration import migrate, open_config
from nmt_cli.workspace import Workspace

RETRAINABLE = ("dropout",)  # model options a fine-tuned model may change: they shape no weight


@dataclass
class TrainRequest:
    model_dir: Path = DEFAULT_MODEL_DIR
    data_dir: Path | None = None  # None: the one in config.json when resuming, else DEFAULT_DATA_DIR
    model: dict[str, Any] = field(default_factory=dict)  # ModelConfig fields the user set
    training: dict[str, Any] = field(default_factory=dict)  # TrainingConfig fields the user set
    restart: bool = False
    writes: bool = True  # False for a worker that is not the chief: it leaves the directory as it is
    init_from: Path | None = None  # a model directory whose weights a new model starts from
    init_checkpoint: str = "best"


@dataclass
class TrainPlan:
    workspace: Workspace
    config: RunConfig
    data: DataDir
    resume_points: list[tuple[Position, Path]]  # newest first; training starts from the newest that loads
    restart: bool
    init_weights: Path | None = None  # a fresh model starts from these weights (config.parent's checkpoint)


def plan_training(request: TrainRequest) -> TrainPlan:
    workspace = Workspace(request.model_dir)
    if workspace.root.exists() and not workspace.root.is_dir():
        raise UserError(f"--model-dir {workspace.root} is a file, not a folder; choose another --model-dir")
    if request.restart or not workspace.config.exists():
        if request.init_from is None:
            config, data = _fresh_config(request, workspace)
            return TrainPlan(workspace, config, data, [], request.restart)
        parent = _parent_config(request)
        config, data = _fresh_config(replace(request, model={"arch": parent.model.arch, **request.model}), workspace)
        config, weights = _fine_tuned(request, parent, config, data)
        return TrainPlan(workspace, config, data, [], request.restart, init_weights=weights)
    # A directory that holds a config.json goes on with it, even before its first checkpoint:
    # never re-initialised with other options unless --restart says so.
    if request.writes:
        migrate(workspace)
        finish_saves(workspace)
    points = resume_points(workspace)
    config, data = _resumed_config(request, workspace, points[0][0] if points else Position())
    return TrainPlan(workspace, config, data, points, restart=False)


def _resumed_config(request: TrainRequest, workspace: Workspace, start: Position) -> tuple[RunConfig, DataDir]:
    saved = load_config(workspace.config)
    parent = (saved.parent or {}).get("model_dir")
    if request.init_from is not None and parent != str(Path(request.init_from).resolve()):
        raise UserError(
            f"{workspace.root} holds a model already; --init-from starts a new one: choose another --model-dir, "
            "or --restart to replace it"
        )
    changed = {k: v for k, v in request.model.items() if getattr(saved.model, k) != v}
    if changed:
        name, value = next(iter(changed.items()))
        raise UserError(
            f"{workspace.root} holds a model with {name}={getattr(saved.model, name)!r}, not {value!r}; "
            "use --restart to start over or another --model-dir"
        )
    data = DataDir(request.data_dir or saved.resolve_data_dir(workspace.root))
    data.check_exists()
    if data.manifest_sha256() != saved.data_manifest_sha256:
        raise UserError(
            f"{data.root} is not the data {workspace.root} was trained on; "
            "use --restart to start over or another --model-dir"
        )
    config = replace(saved, training=replace(saved.training, **request.training), tool_version=__version__)
    config.training.validate()
    # Only when the history says training got there: a newest checkpoint that may not load (a
    # foreign or damaged file) does not make a claim; training then finds where it really is.
    trained = {row.epoch for row in read_history(workspace.history)}
    if config.training.epochs <= start.epochs and start.epochs in trained:
        raise UserError(
            f"{workspace.root} is already trained for {start.epochs} epochs; ask for more with --epochs (the total)"
        )
    return config.with_data_dir(data.root, workspace.root), data


def _parent_config(request: TrainRequest) -> RunConfig:
    """`--init-from`'s config; model options given that are not its own are refused by name."""
    parent = Workspace(request.init_from)
    parent.check_exists()
    parent_config = open_config(parent)
    for name, value in request.model.items():
        if name not in RETRAINABLE and getattr(parent_config.model, name) != value:
            raise UserError(
                f"--{name.replace('_', '-')} {value} differs from the {getattr(parent_config.model, name)} of "
                f"{parent.root}: --init-from keeps its architecture and sizes"
            )
    return parent_config


def _fine_tuned(
    request: TrainRequest, parent_config: RunConfig, config: RunConfig, data: DataDir
) -> tuple[RunConfig, Path]:
    """The run config of a model that starts from `--init-from`'s weights, and those weights: its
    architecture and sizes are the parent's, and the data must be encoded with its tokenizers."""
    parent = Workspace(request.init_from)
    manifest = data.manifest()
    for lang in (manifest.source_lang, manifest.target_lang):
        theirs = parent.tokenizer(lang)
        if not theirs.is_file() or files.sha256(theirs) != files.sha256(data.tokenizer(lang)):
            raise UserError(
                f"{data.root} was not encoded with {parent.root}'s {lang} tokenizer: prepare it with "
                f"`nmt prepare --tokenizers-from {parent.root}`"
            )
    weights = parent.resolve_checkpoint(request.init_checkpoint)
    lineage = {
        "model_dir": str(parent.root.resolve()),
        "checkpoint": request.init_checkpoint,
        "sha256": files.sha256(weights),
    }
    model = replace(parent_config.model, **{k: v for k, v in request.model.items() if k in RETRAINABLE})
    return replace(config, model=model, parent=lineage), weights


def _fresh_config(request: TrainRequest, workspace: Workspace) -> tuple[RunConfig, DataDir]:
    TrainingConfig(**request.training).validate()  # a wrong value is the first thing to hear of
    data = DataDir(request.data_dir or DEFAULT_DATA_DIR)
    manifest = data.manifest()
    model = ModelConfig(
        **request.model,
        source_vocab_size=manifest.vocab_size(manifest.source_lang),
        target_vocab_size=manifest.vocab_size(manifest.target_lang),
    )
    model.validate(given=set(request.model))
    config = RunConfig(
        model=model, training=TrainingConfig(**request.training), data_manifest_sha256=data.manifest_sha256()
    )
    config.training.validate()
    return config.with_data_dir(data.root, workspace.root), data
