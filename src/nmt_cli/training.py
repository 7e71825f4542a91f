"""`nmt train`: build or load the model, compile it, fit it, and report as it goes.

What the run is (options, data, starting epoch) was decided by `plan.py`; what is saved when is
`checkpoints.py`'s business. Progress reaches the user only through a `Reporter`; Keras' own
progress bar is off.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import keras
import tensorflow as tf

from nmt_cli import files
from nmt_cli.checkpoints import CheckpointPolicy, forget_after
from nmt_cli.config import RunConfig, TrainingConfig
from nmt_cli.dataset import ParallelBatches
from nmt_cli.models import build_models, load_checkpoint
from nmt_cli.objectives import MaskedCrossEntropy, MaskedTokenAccuracy, TargetTokens
from nmt_cli.plan import TrainPlan
from nmt_cli.progress import Reporter
from nmt_cli.workspace import read_history


@dataclass
class TrainResult:
    config: RunConfig
    history: list[dict[str, float]]


def set_determinism(seed: int, deterministic_ops: bool) -> None:
    keras.utils.set_random_seed(seed)
    if deterministic_ops:
        tf.config.experimental.enable_op_determinism()


def make_optimizer(training: TrainingConfig) -> keras.optimizers.Optimizer:
    return keras.optimizers.Adam(learning_rate=training.learning_rate, clipnorm=training.clipnorm or None)


def restore_optimizer_state(
    optimizer: keras.optimizers.Optimizer, saved: keras.optimizers.Optimizer, model: keras.Model
) -> None:
    """Give a fresh optimizer a checkpoint's step count and moments, keeping its own settings.

    The learning rate (a value or a schedule of the step count) comes from the options given now.
    """
    optimizer.build(model.trainable_variables)
    for mine, theirs in zip(optimizer.variables, saved.variables, strict=True):
        if not mine.path.endswith("learning_rate"):
            mine.assign(theirs)


def current_learning_rate(optimizer: keras.optimizers.Optimizer) -> float:
    """The rate the next step uses, whether the optimizer holds a value or a schedule."""
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


def compile_model(
    model: keras.Model, training: TrainingConfig, optimizer: keras.optimizers.Optimizer | None = None
) -> None:
    model.compile(
        optimizer=optimizer or make_optimizer(training),
        loss=MaskedCrossEntropy(label_smoothing=training.label_smoothing),
        metrics=[MaskedTokenAccuracy(), TargetTokens()],
        jit_compile=training.jit_compile,
    )


def _copy_data_description(plan: TrainPlan) -> None:
    """Tokenizers and manifest beside the model, so translating needs no data directory."""
    manifest = plan.data.manifest()
    for lang in (manifest.source_lang, manifest.target_lang):
        files.write_bytes(plan.workspace.tokenizer(lang), plan.data.tokenizer(lang).read_bytes())
    files.write_bytes(plan.workspace.data_manifest, plan.data.manifest_path.read_bytes())


def train(plan: TrainPlan, reporter: Reporter | None = None) -> TrainResult:
    reporter = reporter or Reporter()
    workspace, config, done = plan.workspace, plan.config, plan.done
    if plan.restart:
        workspace.clear()  # only once the new run's options and data are known to be good
    workspace.checkpoints.mkdir(parents=True, exist_ok=True)
    workspace.remove_partial_files()

    # XLA and op determinism exclude each other in Keras: --jit trades reproducibility for speed.
    set_determinism(config.training.seed + done, deterministic_ops=not config.training.jit_compile)
    optimizer = make_optimizer(config.training)
    if done:
        models = load_checkpoint(workspace.checkpoint(done), config.model)
        reporter.note(f"resuming from epoch {done} of {workspace.root}")
        restore_optimizer_state(optimizer, models.training.optimizer, models.training)
    else:
        models = build_models(config.model)
    compile_model(models.training, config.training, optimizer)
    files.write_text(workspace.config, config.to_json())
    _copy_data_description(plan)

    batch_size, seed = config.training.batch_size, config.training.seed
    train_batches = ParallelBatches(*plan.data.load_split("train"), batch_size, seed, shuffle=True)
    dev_batches = ParallelBatches(*plan.data.load_split("dev"), batch_size, seed, shuffle=False)

    history = [row for row in read_history(workspace.history) if row["epoch"] <= done]
    forget_after(workspace, done)
    policy = CheckpointPolicy(workspace, models, history, config.training.save_every, config.training.epochs)
    epochs = range(done + 1, config.training.epochs + 1)
    monitor = _EpochMonitor(policy, ScalarLog(workspace.logs), epochs, train_batches.batches_per_epoch, reporter)
    try:
        models.training.fit(
            train_batches.dataset(first_epoch=done),
            validation_data=dev_batches.dataset(),
            epochs=config.training.epochs,
            initial_epoch=done,
            callbacks=[monitor],
            shuffle=False,  # the batch plan shuffles, epoch by epoch
            verbose=0,
        )
    finally:
        monitor.close()
    return TrainResult(config=config, history=policy.history)


class ScalarLog:
    """Each epoch's figures as TensorBoard scalars: `logs/train` and `logs/validation`, as Keras
    lays them out, but written as plain scalar values, which every TensorBoard reader lists
    (TensorFlow 2's `tf.summary.scalar` writes tensors that older readers do not)."""

    def __init__(self, folder: Path):
        self.writers = {side: tf.summary.create_file_writer(str(folder / side)) for side in ("train", "validation")}

    def epoch_end(self, row: dict[str, float]) -> None:
        from tensorboard.compat.proto.summary_pb2 import Summary

        sides = {
            "train": {key: row[key] for key in ("loss", "accuracy", "learning_rate", "tokens_per_second")},
            "validation": {"loss": row["val_loss"], "accuracy": row["val_accuracy"]},
        }
        for side, values in sides.items():
            summary = Summary(value=[Summary.Value(tag=f"epoch_{k}", simple_value=v) for k, v in values.items()])
            with self.writers[side].as_default():
                tf.summary.experimental.write_raw_pb(summary.SerializeToString(), step=int(row["epoch"]))
            self.writers[side].flush()


class _EpochMonitor(keras.callbacks.Callback):
    """Per-batch progress, and each epoch's history row handed to the checkpoint policy."""

    def __init__(
        self, policy: CheckpointPolicy, scalars: ScalarLog, epochs: range, batches_per_epoch: int, reporter: Reporter
    ):
        super().__init__()
        self.policy, self.scalars, self.reporter = policy, scalars, reporter
        self.epochs, self.batches_per_epoch = epochs, batches_per_epoch
        self.run_stack, self.epoch_stack = ExitStack(), ExitStack()

    def close(self) -> None:
        """End the progress display of a run cut short by an error or Ctrl-C."""
        self.epoch_stack.close()
        self.run_stack.close()

    def on_train_begin(self, logs=None):
        # The whole run's bar: its time remaining is the ETA of the last epoch.
        total = len(self.epochs) * self.batches_per_epoch
        self.run = self.run_stack.enter_context(self.reporter.task(f"epochs to {self.epochs.stop - 1}", total=total))

    def on_train_end(self, logs=None):
        self.close()

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()
        self.task = self.epoch_stack.enter_context(
            self.reporter.task(f"epoch {epoch + 1}/{self.epochs.stop - 1}", total=self.batches_per_epoch)
        )

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        elapsed = time.perf_counter() - self.started
        self.run.advance(1)
        self.task.advance(
            1,
            loss=float(logs.get("loss", 0.0)),
            acc=float(logs.get("accuracy", 0.0)),
            **{"tok/s": round(float(logs.get("target_tokens", 0.0)) / elapsed)},
        )

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        seconds = time.perf_counter() - self.started
        self.epoch_stack.close()
        row = {
            "epoch": epoch + 1,
            "loss": float(logs["loss"]),
            "accuracy": float(logs["accuracy"]),
            "val_loss": float(logs["val_loss"]),
            "val_accuracy": float(logs["val_accuracy"]),
            "learning_rate": current_learning_rate(self.model.optimizer),
            "seconds": seconds,
            "tokens_per_second": float(logs["target_tokens"]) / seconds,
        }
        self.policy.epoch_end(row)
        self.scalars.epoch_end(row)
        self.reporter.epoch_end(epoch + 1, {k: v for k, v in row.items() if k != "epoch"})
