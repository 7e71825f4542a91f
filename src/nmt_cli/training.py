"""`nmt train`: compile and fit the training model, save checkpoints on a schedule, resume.

Progress reaches the user only through a `Reporter`; Keras' own progress bar is off.
"""

from __future__ import annotations

import hashlib
import json
import time
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from nmt_cli import __version__
from nmt_cli.config import ModelConfig, RunConfig, TrainingConfig, load_config
from nmt_cli.dataset import ParallelBatches
from nmt_cli.errors import UserError
from nmt_cli.models import build_models
from nmt_cli.objectives import MaskedCrossEntropy, MaskedTokenAccuracy, TargetTokens
from nmt_cli.prepare import MANIFEST, load_encoded, load_manifest, tokenizer_file
from nmt_cli.progress import Reporter
from nmt_cli.workspace import Workspace, load_checkpoint, read_history, save_model_atomic, write_bytes_atomic, write_history, write_text_atomic

@dataclass
class TrainRequest:
    model_dir: Path = Path("models/default")
    data_dir: Path | None = None  # None: the one in config.json when resuming, else data/prepared
    model: dict[str, Any] = field(default_factory=dict)  # ModelConfig fields the user set
    training: dict[str, Any] = field(default_factory=dict)  # TrainingConfig fields the user set
    restart: bool = False


@dataclass
class TrainResult:
    config: RunConfig
    history: list[dict[str, float]]


def manifest_sha256(data_dir: Path) -> str:
    return hashlib.sha256((Path(data_dir) / MANIFEST).read_bytes()).hexdigest()


def set_determinism(seed: int, deterministic_ops: bool) -> None:
    keras.utils.set_random_seed(seed)
    if deterministic_ops:
        tf.config.experimental.enable_op_determinism()


def compile_model(model: keras.Model, training: TrainingConfig, optimizer: keras.optimizers.Optimizer | None = None) -> None:
    """Compile for training; pass a loaded `optimizer` to keep its state (moments, step count)."""
    if optimizer is None:
        optimizer = keras.optimizers.Adam(learning_rate=training.learning_rate, clipnorm=training.clipnorm or None)
    else:
        optimizer.learning_rate = training.learning_rate
        optimizer.clipnorm = training.clipnorm or None
    model.compile(
        optimizer=optimizer,
        loss=MaskedCrossEntropy(label_smoothing=training.label_smoothing),
        metrics=[MaskedTokenAccuracy(), TargetTokens()],
        jit_compile=training.jit_compile,
    )


def _copy_data_description(data_dir: Path, workspace: Workspace) -> None:
    """Tokenizers and manifest beside the model, so translating needs no data directory."""
    manifest = load_manifest(data_dir)
    for lang in manifest["languages"].values():
        write_bytes_atomic(workspace.tokenizer(lang), (data_dir / tokenizer_file(lang)).read_bytes())
    write_bytes_atomic(workspace.data_manifest, (data_dir / MANIFEST).read_bytes())


def _resolve(request: TrainRequest, workspace: Workspace) -> tuple[RunConfig, int]:
    """The effective config, and how many epochs are already done (0 for a fresh start)."""
    done = workspace.saved_epochs()
    if done and not request.restart:
        saved = load_config(workspace.config)
        changed = {k: v for k, v in request.model.items() if getattr(saved.model, k) != v}
        if changed:
            name, value = next(iter(changed.items()))
            raise UserError(
                f"{workspace.root} holds a model with {name}={getattr(saved.model, name)!r}, not {value!r}; "
                "use --restart to start over or another --model-dir"
            )
        data_dir = Path(request.data_dir or saved.data_dir)
        load_manifest(data_dir)  # says clearly when it is missing
        if manifest_sha256(data_dir) != saved.data_manifest_sha256:
            raise UserError(
                f"{data_dir} is not the data {workspace.root} was trained on; "
                "use --restart to start over or another --model-dir"
            )
        config = replace(saved, training=replace(saved.training, **request.training), data_dir=str(data_dir), tool_version=__version__)
        config.training.validate()
        if config.training.epochs <= done[-1]:
            raise UserError(
                f"{workspace.root} is already trained for {done[-1]} epochs; ask for more with --epochs (the total)"
            )
        return config, done[-1]
    data_dir = Path(request.data_dir or "data/prepared")
    manifest = load_manifest(data_dir)
    vocab = manifest["vocabulary"]
    model = ModelConfig(
        **{
            **request.model,
            "source_vocab_size": vocab[manifest["languages"]["source"]]["actual"],
            "target_vocab_size": vocab[manifest["languages"]["target"]]["actual"],
        }
    )
    model.validate()
    training = TrainingConfig(**request.training)
    training.validate()
    return RunConfig(model=model, training=training, data_dir=str(data_dir), data_manifest_sha256=manifest_sha256(data_dir)), 0


def train(request: TrainRequest, reporter: Reporter | None = None) -> TrainResult:
    reporter = reporter or Reporter()
    workspace = Workspace(request.model_dir)
    config, done = _resolve(request, workspace)
    if request.restart:
        workspace.clear()  # only once the new run's options and data are known to be good
    workspace.checkpoints.mkdir(parents=True, exist_ok=True)
    workspace.remove_partial_files()

    # XLA and op determinism exclude each other in Keras: --jit trades reproducibility for speed.
    set_determinism(config.training.seed + done, deterministic_ops=not config.training.jit_compile)
    if done:
        models = load_checkpoint(workspace.checkpoint(done), config.model)
        reporter.note(f"resuming from epoch {done} of {workspace.root}")
        # Re-compiling with the loaded optimizer keeps weights and optimizer state, and applies
        # the training options given now (learning rate, clipping, label smoothing).
        compile_model(models.training, config.training, optimizer=models.training.optimizer)
    else:
        models = build_models(config.model)
        compile_model(models.training, config.training)
    write_text_atomic(workspace.config, config.to_json())
    data_dir = Path(config.data_dir)
    _copy_data_description(data_dir, workspace)

    train_batches = ParallelBatches(*load_encoded(data_dir, "train"), config.training.batch_size, config.training.seed, shuffle=True)
    dev_batches = ParallelBatches(*load_encoded(data_dir, "dev"), config.training.batch_size, config.training.seed, shuffle=False)

    history = [row for row in read_history(workspace.history) if row["epoch"] <= done]
    workspace.forget_best_after(done)
    monitor = _EpochMonitor(workspace, models, config.training, train_batches, history, reporter)
    tensorboard = keras.callbacks.TensorBoard(log_dir=str(workspace.logs), write_graph=False, profile_batch=0)
    try:
        models.training.fit(
            train_batches.dataset(first_epoch=done),
            validation_data=dev_batches.dataset(),
            epochs=config.training.epochs,
            initial_epoch=done,
            callbacks=[monitor, tensorboard],
            shuffle=False,  # the batch plan shuffles, epoch by epoch
            verbose=0,
        )
    finally:
        monitor.close()
    return TrainResult(config=config, history=monitor.history)


class _EpochMonitor(keras.callbacks.Callback):
    """Per-batch progress, per-epoch history rows, and the checkpoint schedule."""

    def __init__(self, workspace, models, training, batches, history, reporter):
        super().__init__()
        self.workspace, self.models, self.training = workspace, models, training
        self.batches, self.history, self.reporter = batches, history, reporter
        valid = [row["val_loss"] for row in history]
        self.best_val_loss = min(valid) if valid else float("inf")
        self.task_stack = ExitStack()

    def close(self) -> None:
        """End the progress display of an epoch cut short by an error or Ctrl-C."""
        self.task_stack.close()

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()
        self.task = self.task_stack.enter_context(
            self.reporter.task(f"epoch {epoch + 1}/{self.training.epochs}", total=self.batches.batches_per_epoch)
        )

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        elapsed = time.perf_counter() - self.started
        self.task.advance(1, loss=float(logs.get("loss", 0.0)), acc=float(logs.get("accuracy", 0.0)), **{"tok/s": round(float(logs.get("target_tokens", 0.0)) / elapsed)})

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        seconds = time.perf_counter() - self.started
        self.task_stack.close()
        number = epoch + 1
        row = {
            "epoch": number,
            "loss": float(logs["loss"]),
            "accuracy": float(logs["accuracy"]),
            "val_loss": float(logs["val_loss"]),
            "val_accuracy": float(logs["val_accuracy"]),
            "learning_rate": float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)),
            "seconds": seconds,
            "tokens_per_second": float(logs["target_tokens"]) / seconds,
        }
        self.history.append(row)
        # History, then the best model, then the epoch checkpoint: the checkpoint is what marks
        # an epoch as done for a resume, so everything it implies is on disk before it.
        write_history(self.workspace.history, self.history)
        if row["val_loss"] < self.best_val_loss:
            self.best_val_loss = row["val_loss"]
            save_model_atomic(self.model, self.workspace.best)
            save_model_atomic(self.models.encoder, self.workspace.encoder)
            save_model_atomic(self.models.decoder, self.workspace.decoder)
            write_text_atomic(self.workspace.best_stamp, json.dumps({"epoch": number}) + "\n")
        if number % self.training.save_every == 0 or number == self.training.epochs:
            save_model_atomic(self.model, self.workspace.checkpoint(number))
        self.reporter.epoch_end(number, {k: v for k, v in row.items() if k != "epoch"})
