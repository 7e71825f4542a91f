"""`nmt train`: build or load the model, compile it, fit it, and report as it goes.

What the run is (options, data, the position it starts from) was decided by `plan.py`; what is
saved when is `checkpoints.py`'s business. Progress reaches the user only through a `Reporter`;
Keras' own progress bar is off.

A run ends when its epochs are done, or earlier, always at a step boundary: when its time
budget is spent (the last validation's duration is kept in reserve, so that the final
validation and checkpoint fit in the budget), when `--patience` epochs bring no improvement, or
when SIGINT/SIGTERM asks it to (a second signal kills it at once).
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from nmt_cli import files
from nmt_cli.architectures import ARCHITECTURES
from nmt_cli.checkpoints import BestStamp, CheckpointPolicy, Position, epoch_so_far, forget_after, set_aside
from nmt_cli.config import RunConfig, TrainingConfig
from nmt_cli.dataset import ParallelBatches
from nmt_cli.distribute import DEFAULT_CLUSTER_TIMEOUT, ClusterRole, auto_precision, make_strategy, this_task
from nmt_cli.errors import UserError
from nmt_cli.evaluation import SplitScorer
from nmt_cli.export import export
from nmt_cli.history import HistoryRow, read_history
from nmt_cli.models import architecture, build_models, check_fits_in_memory, load_checkpoint
from nmt_cli.models.base import Seq2SeqModels
from nmt_cli.objectives import MaskedCrossEntropy, MaskedTokenAccuracy, TargetTokens, correct_tokens, token_loss_sum
from nmt_cli.plan import TrainPlan
from nmt_cli.progress import Reporter
from nmt_cli.schedules import WarmupSchedule
from nmt_cli.stopping import StopReason, StopRule, StopSignals, refuse_non_finite
from nmt_cli.tokenizer import Tokenizer


@dataclass
class TrainResult:
    config: RunConfig
    history: list[dict[str, float]]
    position: Position  # where the run ended
    stopped_by: str | None  # None: every epoch asked for is done


class Interrupted(Exception):
    """SIGINT or SIGTERM stopped training; its state at `position` was saved to `checkpoint`."""

    def __init__(self, signal_number: int, position: Position, checkpoint: Path):
        super().__init__(f"{signal.Signals(signal_number).name} at {position}")
        self.signal_number, self.position, self.checkpoint = signal_number, position, checkpoint


def set_determinism(seed: int, deterministic_ops: bool) -> None:
    keras.utils.set_random_seed(seed)
    if deterministic_ops:
        tf.config.experimental.enable_op_determinism()


def make_optimizer(training: TrainingConfig, precision: str) -> keras.optimizers.Optimizer:
    """Adam with the schedule and clipping of `training`; `precision` is the policy in force
    (`training.precision` may say "auto")."""
    rate = training.learning_rate
    if training.schedule != "constant" or training.warmup:
        rate = WarmupSchedule(training.schedule, training.learning_rate, training.warmup)
    optimizer = keras.optimizers.Adam(learning_rate=rate, clipnorm=training.clipnorm or None)
    if precision == "mixed_float16":
        # float16 gradients underflow without it; bfloat16 has float32's range and needs none.
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def restore_optimizer_state(
    optimizer: keras.optimizers.Optimizer, saved: keras.optimizers.Optimizer, model: keras.Model
) -> None:
    """Give a fresh optimizer a checkpoint's step count and moments, keeping its own settings.

    The learning rate (a value or a schedule of the step count) comes from the options given now,
    and so does loss scaling: of a LossScaleOptimizer (float16), only the Adam inside counts, so a
    run may resume in another precision.
    """
    optimizer.build(model.trainable_variables)
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    saved = getattr(saved, "inner_optimizer", saved)
    for mine, theirs in zip(inner.variables, saved.variables, strict=True):
        if not mine.path.endswith("learning_rate"):
            mine.assign(theirs)


def current_learning_rate(optimizer: keras.optimizers.Optimizer) -> float:
    """The rate the next step uses, whether the optimizer holds a value or a schedule."""
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


def compile_model(model: keras.Model, training: TrainingConfig, optimizer: keras.optimizers.Optimizer) -> None:
    model.compile(
        optimizer=optimizer,
        loss=MaskedCrossEntropy(label_smoothing=training.label_smoothing),
        metrics=[MaskedTokenAccuracy(), TargetTokens()],
        jit_compile=training.jit_compile,
    )


def _copy_data_description(plan: TrainPlan) -> None:
    """Tokenizers and manifest beside the model, so translating needs no data directory.

    A tokenizer is copied only once it loads and is the one the manifest names (its SHA-256);
    a good copy beside the model is never replaced by a different one.
    """
    manifest = plan.data.manifest()
    for lang in (manifest.source_lang, manifest.target_lang):
        theirs, mine = plan.data.tokenizer(lang), plan.workspace.tokenizer(lang)
        wanted = manifest.tokenizer_sha256(lang)
        if wanted and mine.is_file() and files.sha256(mine) == wanted:
            continue
        Tokenizer.load(theirs)
        if wanted and files.sha256(theirs) != wanted:
            raise UserError(
                f"{theirs} is not the tokenizer {plan.data.manifest_path} names; rebuild it with `nmt prepare --force`"
            )
        if mine.is_file() and not wanted and mine.read_bytes() != theirs.read_bytes():
            raise UserError(f"{theirs} differs from {mine}, which {plan.workspace.root} was trained with")
        files.write_bytes(mine, theirs.read_bytes())
    files.write_bytes(plan.workspace.data_manifest, plan.data.manifest_path.read_bytes())


def train(
    plan: TrainPlan,
    reporter: Reporter | None = None,
    started: float | None = None,
    distribute: str = "none",
    cluster_timeout: float = DEFAULT_CLUSTER_TIMEOUT,
) -> TrainResult:
    """Run the plan. `started` (time.monotonic()) is when the time budget began: now if None.

    `distribute` names the tf.distribute strategy (distribute.py). With several workers only the
    chief writes to the model directory; every worker trains, validates and stops together, once
    all have started (within `cluster_timeout` seconds).
    """
    with StopSignals() as signals:
        return _train(plan, reporter or Reporter(), started, distribute, cluster_timeout, signals)


def _train(
    plan: TrainPlan,
    reporter: Reporter,
    started: float | None,
    distribute: str,
    cluster_timeout: float,
    signals: StopSignals,
) -> TrainResult:
    """The story of a run: where it trains, the model it starts from, what it saves, the loop."""
    started = time.monotonic() if started is None else started
    config, training, task = plan.config, plan.config.training, this_task(distribute)
    strategy = _strategy(distribute, task, cluster_timeout, reporter, signals)
    across_workers = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    check_fits_in_memory(architecture(config.model.arch).parameter_count(config.model), copies=4, what="to train")
    if task.is_chief:
        _prepare_workspace(plan)
    precision = _precision(training.precision, config.model.arch, across_workers)
    with strategy.scope():
        position, models, optimizer = _restore_or_build(plan, precision, reporter, writes=task.is_chief)
    if task.is_chief:
        files.write_text(plan.workspace.config, config.to_json())
        _copy_data_description(plan)
    train_batches, dev_batches = _batches(plan, "train"), _batches(plan, "dev")
    steps = int(optimizer.iterations.numpy())  # restored with the resume point: where its history ends
    policy = _checkpoint_policy(plan, models, position, steps, reporter, writes=task.is_chief)
    deadline = started + training.time_budget * 60 if training.time_budget else math.inf
    monitor = _EpochMonitor(
        policy,
        ScalarLog(plan.workspace.logs) if task.is_chief else None,
        _bleu_scorer(plan, models) if training.best_by == "bleu" and task.is_chief else None,
        train_batches,
        _dev_figures(models.training, dev_batches, training.label_smoothing),
        position,
        training,
        StopRule(deadline, training.patience, signals, decides=task.is_chief),
        reporter,
        # Keras' metrics hold an epoch's figures; the multi-worker loop keeps sums of its own.
        _EpochSums() if across_workers else _KerasMetrics(models.training),
        consensus=_consensus(strategy) if across_workers else None,
        carried=epoch_so_far(plan.workspace, position) if position.batches else None,
    )
    with _out_of_memory_explained():
        try:
            if across_workers:
                _fit_across_workers(strategy, models, optimizer, training, train_batches, monitor)
            else:
                _fit(models, training, train_batches, monitor)
        finally:
            monitor.close()
    return TrainResult(config=config, history=policy.history, position=monitor.position, stopped_by=monitor.stopped_by)


def _strategy(distribute: str, task: ClusterRole, cluster_timeout: float, reporter: Reporter, signals: StopSignals):
    # MultiWorkerMirroredStrategy must come before TensorFlow sets up its devices: first of all.
    strategy = make_strategy(distribute, cluster_timeout, reporter.note, signals)
    if (
        isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        and strategy.num_replicas_in_sync != task.workers
    ):
        # Each worker's dataset yields one share of every global batch: one replica per worker.
        raise UserError(
            f"--distribute multi-worker trains one replica per worker, but these {task.workers} workers have "
            f"{strategy.num_replicas_in_sync} devices: start one worker per GPU (CUDA_VISIBLE_DEVICES)"
        )
    return strategy


def _prepare_workspace(plan: TrainPlan) -> None:
    if plan.restart:
        plan.workspace.clear()  # only once the new run's options and data are known to be good
    plan.workspace.checkpoints.mkdir(parents=True, exist_ok=True)
    plan.workspace.remove_partial_files()


def _precision(asked: str, arch: str, across_workers: bool) -> str:
    """The Keras precision policy a run trains in, set for the models about to be built."""
    precision = auto_precision(arch) if asked == "auto" else asked
    if across_workers and precision == "mixed_float16":
        if asked == "auto":
            precision = "float32"
        else:
            # Loss scaling decides from each worker's own gradients whether to skip a step; workers
            # that disagree would stop taking part in the same all-reduces.
            raise UserError("--precision mixed_float16 cannot train across workers: use mixed_bfloat16 or float32")
    if precision == "mixed_float16" and not tf.config.list_physical_devices("GPU"):
        # A CPU has no float16 arithmetic: each operation converts to float32 and back, steps crawl,
        # and a stop signal, which takes effect between steps, waits as long.
        raise UserError("--precision mixed_float16 needs a GPU; on a CPU use mixed_bfloat16 or float32")
    keras.mixed_precision.set_dtype_policy(precision)
    return precision


def _restore_or_build(plan: TrainPlan, precision: str, reporter: Reporter, writes: bool):
    """(position, models, optimizer): from the newest resume point that loads, else fresh, compiled."""
    training = plan.config.training
    position, models = _load_newest(plan, reporter, writes)
    # XLA and op determinism exclude each other in Keras: --jit trades reproducibility for speed.
    set_determinism(training.seed + position.epochs, deterministic_ops=not training.jit_compile)
    optimizer = make_optimizer(training, precision)
    if models is None:
        models = build_models(plan.config.model)
        if plan.init_weights is not None:
            models.training.load_weights(plan.init_weights)
            reporter.note(f"starting from the weights of {plan.init_weights}, with a fresh optimizer")
    else:
        reporter.note(f"resuming from {position} of {plan.workspace.root}")
        restore_optimizer_state(optimizer, models.training.optimizer, models.training)
    compile_model(models.training, training, optimizer)
    return position, models, optimizer


def _batches(plan: TrainPlan, split: str) -> ParallelBatches:
    training = plan.config.training
    source, target = plan.data.load_split(split)
    return ParallelBatches(
        source, target, training.batch_size, training.seed, shuffle=split == "train", batch_tokens=training.batch_tokens
    )


def _checkpoint_policy(
    plan: TrainPlan, models: Seq2SeqModels, position: Position, steps: int, reporter: Reporter, writes: bool
) -> CheckpointPolicy:
    """The policy that saves this run's checkpoints, given the history up to `position` (`steps`
    optimizer steps in); the process that `writes` first drops what a killed run wrote after it."""
    workspace, config = plan.workspace, plan.config
    history = [
        row
        for row in read_history(workspace.history)
        if row.epoch <= position.epochs or (row.epoch == position.epochs + 1 and row.steps <= steps)
    ]
    missing = sorted(set(range(1, position.epochs + 1)) - {row.epoch for row in history})
    if missing:
        reporter.warn(
            f"{workspace.history} has no row for epoch {', '.join(map(str, missing))}: it goes on without them"
        )
    if writes:
        forget_after(workspace, position)

    def export_best(stamp: BestStamp) -> None:
        # The export's stamp names best.keras' digest: if a later best.keras is not exported (a
        # kill), the export no longer matches it, and translation uses Keras until it does.
        digest = stamp.sha256[workspace.best.name]
        export(models.training, config.model, workspace, workspace.best, "best", stamp.epoch, checkpoint_sha256=digest)
        reporter.saved(f"{workspace.export.name}/, the CTranslate2 export of {workspace.best.name}")

    exportable = ARCHITECTURES[config.model.arch].exportable
    training = config.training
    return CheckpointPolicy(
        workspace,
        models,
        history,
        training.save_every,
        training.best_by,
        writes=writes,
        after_best=export_best if exportable else None,
        on_saved=reporter.saved,
    )


def _bleu_scorer(plan: TrainPlan, models: Seq2SeqModels) -> SplitScorer:
    target_tokenizer = plan.workspace.tokenizer(plan.data.manifest().target_lang)
    return SplitScorer(models.encoder, models.decoder, plan.data, target_tokenizer)


def _fit(models: Seq2SeqModels, training: TrainingConfig, train_batches, monitor: _EpochMonitor) -> None:
    """Keras' own loop, one `fit` per epoch: every epoch's plan has its own length (and a resumed
    one is shorter), which Keras takes from the dataset only once per call. The monitor validates
    (`_dev_figures`), inside epochs too, where `fit` cannot."""
    start = monitor.start
    for epoch in range(start.epochs, training.epochs):
        models.training.fit(
            train_batches.dataset(epoch, start.batches if epoch == start.epochs else 0),
            epochs=epoch + 1,
            initial_epoch=epoch,
            callbacks=[monitor],
            shuffle=False,  # the batch plan shuffles, epoch by epoch
            verbose=0,
        )
        if monitor.stopped_by is not None:
            break


def _fit_across_workers(strategy, models, optimizer, training, train_batches, monitor) -> None:
    """The same training as `_fit` for several workers, where Keras' `fit` cannot go
    (MultiWorkerMirroredStrategy): a step per global batch, each worker on its share of it, with
    the same model, loss, metrics, optimizer and monitor.

    Each worker's summed loss is divided by the global batch's real target tokens, so the
    gradients the optimizer adds up across workers are those of the one-worker mean loss.
    """
    model, smoothing = models.training, training.label_smoothing

    def replica_step(inputs, target, global_tokens):
        with tf.GradientTape() as tape:
            logits = model(inputs, training=True)
            total, tokens = token_loss_sum(target, logits, smoothing)
            loss = optimizer.scale_loss(total / global_tokens)
        optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
        return total, correct_tokens(target, logits), tokens

    @tf.function
    def train_step(batch):
        per_replica = strategy.run(replica_step, args=batch)
        return [strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None) for value in per_replica]

    def shares(epoch: int, skip: int):
        return strategy.distribute_datasets_from_function(
            lambda context: train_batches.worker_dataset(
                epoch, skip, context.input_pipeline_id, context.num_input_pipelines
            )
        )

    model.stop_training = False
    monitor.set_model(model)
    monitor.on_train_begin()
    start, figures = monitor.start, monitor.figures
    for epoch in range(start.epochs, training.epochs):
        monitor.on_epoch_begin(epoch)
        figures.reset()
        for index, batch in enumerate(shares(epoch, start.batches if epoch == start.epochs else 0)):
            figures.add([float(value) for value in train_step(batch)])
            monitor.on_train_batch_end(index, figures.logs())
            if model.stop_training:
                break
        monitor.on_epoch_end(epoch, figures.logs())
        if model.stop_training:
            break


def _dev_figures(model: keras.Model, dev_batches: ParallelBatches, label_smoothing: float):
    """Validation on the whole dev split, as one function of no arguments: `{"val_loss",
    "val_accuracy"}` over its real target tokens. Both loops call it, at epoch ends and inside
    epochs alike, so every history row is measured the same way (and across workers, every
    worker validates on the whole split: the same figures everywhere)."""

    # Dev batches come in many lengths: one trace that generalises over them, not one per length.
    @tf.function(reduce_retracing=True)
    def evaluate_step(inputs, target):
        logits = model(inputs, training=False)
        total, tokens = token_loss_sum(target, logits, label_smoothing)
        return total, correct_tokens(target, logits), tokens

    def figures() -> dict[str, float]:
        sums = [0.0, 0.0, 0.0]
        for inputs, target in dev_batches.dataset():
            sums = [total + float(value) for total, value in zip(sums, evaluate_step(inputs, target))]
        loss, correct, tokens = sums
        return {"val_loss": loss / max(tokens, 1.0), "val_accuracy": correct / max(tokens, 1.0)}

    return figures


class _KerasMetrics:
    """The state of the training metrics Keras' `fit` keeps: what a resume point carries."""

    def __init__(self, model: keras.Model):
        self.model = model

    def state(self) -> list:
        return [np.asarray(variable.numpy()).tolist() for variable in self.model.metrics_variables]

    def add(self, saved: list) -> None:
        variables = self.model.metrics_variables
        if len(saved) == len(variables):  # else saved by another kind of loop: the row covers this run's batches
            for variable, value in zip(variables, saved):
                variable.assign(variable + np.asarray(value, dtype=variable.dtype))


class _EpochSums:
    """The multi-worker loop's figures of the epoch so far: summed token loss, correct tokens and
    target tokens, over every worker."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """A new epoch: nothing summed yet."""
        self.sums = [0.0, 0.0, 0.0]

    def state(self) -> list:
        return list(self.sums)

    def add(self, saved: list) -> None:
        if len(saved) == len(self.sums):
            self.sums = [mine + float(theirs) for mine, theirs in zip(self.sums, saved)]

    def logs(self) -> dict[str, float]:
        loss, correct, tokens = self.sums
        return {"loss": loss / max(tokens, 1.0), "accuracy": correct / max(tokens, 1.0), "target_tokens": tokens}


def _consensus(strategy):
    """Across workers, the strongest stop request any of them makes (see _EpochMonitor)."""

    @tf.function
    def count(request):
        votes = tf.one_hot(request, len(StopReason))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(tf.identity, args=(votes,)), axis=None)

    def agree(request: int) -> int:
        votes = count(tf.constant(request)).numpy()
        return max(reason for reason, votes_for in enumerate(votes) if votes_for > 0 or reason == 0)

    return agree


def _load_newest(plan: TrainPlan, reporter: Reporter, writes: bool) -> tuple[Position, Seq2SeqModels | None]:
    """The newest resume point whose checkpoint loads; one that does not is skipped, with a
    warning, and (by the process that `writes`) renamed `*.unloadable`."""
    for position, path in plan.resume_points:
        try:
            return position, load_checkpoint(path, plan.config.model, compile=True)
        except UserError as error:
            what = f"renamed {set_aside(plan.workspace, path).name}" if writes else "left to the chief"
            reporter.warn(
                f"skipped {path}: {error}; training goes on from an earlier checkpoint, and the file is {what}"
            )
    if plan.resume_points:
        raise UserError(f"no checkpoint in {plan.workspace.checkpoints} loads; start over with --restart")
    return Position(), None


@contextmanager
def _out_of_memory_explained() -> Iterator[None]:
    try:
        yield
    except tf.errors.ResourceExhaustedError:
        raise UserError(
            "training ran out of memory: choose a smaller --batch-tokens or --batch-size (or a smaller model)"
        ) from None


class ScalarLog:
    """Each validation's figures as TensorBoard scalars: `logs/train` and `logs/validation`, as
    Keras lays them out, but written as plain scalar values, which every TensorBoard reader lists
    (TensorFlow 2's `tf.summary.scalar` writes tensors that older readers do not). Their step is
    the optimizer's, as other toolkits plot it: validations inside epochs fall between epochs."""

    def __init__(self, folder: Path):
        self.writers = {side: tf.summary.create_file_writer(str(folder / side)) for side in ("train", "validation")}

    def epoch_end(self, row: HistoryRow) -> None:
        from tensorboard.compat.proto.summary_pb2 import Summary

        for side, values in row.scalars().items():
            summary = Summary(value=[Summary.Value(tag=f"epoch_{k}", simple_value=v) for k, v in values.items()])
            with self.writers[side].as_default():
                tf.summary.experimental.write_raw_pb(summary.SerializeToString(), step=int(row.steps))
            self.writers[side].flush()


class _EpochMonitor(keras.callbacks.Callback):
    """Progress, validation, stopping early, and each validation's history row for the checkpoint
    policy: at every epoch's end, and inside epochs every `--validate-every-steps` steps (with a
    resume point every `--save-every-steps`).

    Whether to stop is agreed at every step and validation: each process asks its `rule`,
    `consensus` turns the requests into one decision, the same in every process. A lone process
    agrees with itself; several workers take the strongest request any of them made.
    """

    def __init__(
        self,
        policy: CheckpointPolicy,
        scalars: ScalarLog | None,
        scorer: SplitScorer | None,
        batches: ParallelBatches,
        validate: Callable[[], dict[str, float]],
        start: Position,
        training: TrainingConfig,
        rule: StopRule,
        reporter: Reporter,
        figures: _KerasMetrics | _EpochSums,
        consensus=None,
        carried: dict | None = None,
    ):
        super().__init__()
        self.policy, self.scalars, self.scorer, self.batches = policy, scalars, scorer, batches
        self.validate, self.training, self.rule, self.reporter = validate, training, rule, reporter
        self.figures = figures
        self.consensus = consensus or (lambda request: request)
        self.position, self.start = start, start
        self.run_stack, self.epoch_stack = ExitStack(), ExitStack()
        self.stopped_by: str | None = None
        self.stop_signal: int | None = None  # the signal training stops for, once agreed
        self.carried = carried  # the figures of the start position's epoch before it (resume.json)
        self.to_carry: dict | None = None
        self.stopped_epoch_so_far: dict | None = None
        self.validated_at: Position | None = None  # the last validation inside an epoch
        self.run = None

    def close(self) -> None:
        """End the progress display of a run cut short by an error or a signal."""
        self.epoch_stack.close()
        self.run_stack.close()

    def _batches_in(self, epoch: int) -> int:
        """How many batches epoch `epoch` (0-based) runs in this run."""
        skipped = self.start.batches if epoch == self.start.epochs else 0
        return len(self.batches.plan(epoch)) - skipped

    def on_train_begin(self, logs=None):
        if self.run is None:  # the first of the run's `fit` calls
            # An estimate (with --batch-tokens, epochs differ by a few batches): counting every
            # epoch's plan would take as long as the epoch count is large.
            total = (self.training.epochs - self.start.epochs) * self.batches.batches_per_epoch - self.start.batches
            self.run = self.run_stack.enter_context(
                self.reporter.task(f"epochs to {self.training.epochs}", total=total)
            )

    def on_epoch_begin(self, epoch, logs=None):
        self.started = self.last_batch_end = time.monotonic()
        self.to_carry = self.carried if epoch == self.start.epochs else None
        if self.to_carry:  # a resumed epoch: its row counts the time before the resume too
            self.started -= float(self.to_carry.get("seconds", 0.0))
        self.epoch, self.done_batches = epoch, 0
        self.skipped = self.start.batches if epoch == self.start.epochs else 0
        self.epoch_batches = self._batches_in(epoch)
        self.task = self.epoch_stack.enter_context(
            self.reporter.task(f"epoch {epoch + 1}/{self.training.epochs}", total=self.epoch_batches)
        )

    def _here(self) -> Position:
        if self.done_batches == self.epoch_batches:
            return Position(self.epoch + 1)
        return Position(self.epoch, self.skipped + self.done_batches)

    def _agree(self, request: StopReason) -> StopReason:
        agreed = StopReason(self.consensus(int(request)))
        if agreed is StopReason.SIGNAL:
            self.stop_signal = self.rule.signals.received or signal.SIGTERM  # a worker's signal stops all
        return agreed

    def _carry_in(self) -> None:
        """Add what the epoch's figures added up to before a resume to this run's (after its first
        batch, once `fit` has built and reset its metrics), so the epoch's row covers all its batches."""
        self.figures.add(self.to_carry.get("metrics", []))
        self.to_carry = None

    def epoch_so_far(self) -> dict:
        """The training figures' state and the seconds of the epoch so far: a resume point carries them."""
        return {"seconds": time.monotonic() - self.started, "metrics": self.figures.state()}

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        if self.to_carry:
            self._carry_in()
        self.done_batches += 1
        self.last_batch_end = time.monotonic()
        loss = float(logs.get("loss", 0.0))
        refuse_non_finite("training loss", loss, self._here())
        rate = round(float(logs.get("target_tokens", 0.0)) / max(self.last_batch_end - self.started, 1e-9))
        optimizer = self.model.optimizer
        step = int(optimizer.iterations.numpy())
        figures = {"loss": loss, "acc": float(logs.get("accuracy", 0.0)), "tok/s": rate}
        self.task.advance(1, **figures, lr=current_learning_rate(optimizer), step=step)
        self.run.advance(1)
        agreed = self._agree(self.rule.request(now=self.last_batch_end))
        if self.done_batches == self.epoch_batches:
            return  # the epoch's end saves what a stop needs
        if agreed is StopReason.SIGNAL:
            self.position = self._here()
            checkpoint = self.policy.save_resume_point(self.position, self.epoch_so_far())
            raise Interrupted(self.stop_signal, self.position, checkpoint)
        if agreed is StopReason.TIME_BUDGET:
            self.stopped_by = agreed.describe(self.training.patience, None)
            self.model.stop_training = True
            self.stopped_epoch_so_far = self.epoch_so_far()  # before validation takes the metrics over
        elif _every(self.training.validate_every_steps, step):
            self._validate_inside_epoch(logs, step)
        elif _every(self.training.save_every_steps, step):
            self.position = self._here()
            self.policy.save_resume_point(self.position, self.epoch_so_far())

    def _row(self, logs: dict, seconds: float) -> HistoryRow:
        """The history row of a validation now, with the training figures of the epoch so far."""
        return HistoryRow(
            epoch=self.epoch + 1,
            loss=float(logs["loss"]),
            accuracy=float(logs["accuracy"]),
            val_loss=float(logs["val_loss"]),
            val_accuracy=float(logs["val_accuracy"]),
            val_bleu=self.scorer.bleu() if self.scorer is not None else math.nan,
            learning_rate=current_learning_rate(self.model.optimizer),
            seconds=seconds,
            tokens_per_second=float(logs["target_tokens"]) / seconds,
            steps=int(self.model.optimizer.iterations.numpy()),
        )

    def _record(self, row: HistoryRow, last: bool, epoch_so_far: dict | None) -> None:
        self.reporter.epoch_end(row)
        self.policy.epoch_end(row, self.position, last=last, epoch_so_far=epoch_so_far)
        if self.scalars is not None:
            self.scalars.epoch_end(row)

    def _validate_inside_epoch(self, logs: dict, step: int) -> None:
        """A validation between steps: its row, perhaps a new best.keras, a resume point; a
        patience or signal stop agreed here ends the run at this position."""
        self.position = self.validated_at = self._here()
        validation = self.validate()
        refuse_non_finite("validation loss", validation["val_loss"], self.position)
        epoch_so_far = self.epoch_so_far()
        row = self._row({**logs, **validation}, time.monotonic() - self.started)
        without_better = 0 if self.policy.improves(row) else self.policy.epochs_since_best + 1
        agreed = self._agree(self.rule.request(time.monotonic(), without_better))
        if agreed:
            self.stopped_by = agreed.describe(self.training.patience, self.stop_signal)
            self.model.stop_training = True
        self._record(row, last=False, epoch_so_far=epoch_so_far)
        if self.stop_signal is not None:
            raise Interrupted(self.stop_signal, self.position, self.policy.workspace.resume_checkpoint)
        self.rule.reserve = time.monotonic() - self.last_batch_end

    def on_epoch_end(self, epoch, logs=None):
        self.position = self._here()
        if self.position == self.validated_at:  # a stop agreed at a validation inside the epoch
            self.epoch_stack.close()
            return
        validation = self.validate()
        # The epoch's last step may have left weights that only validation shows to be broken.
        refuse_non_finite("validation loss", validation["val_loss"], self.position)
        seconds = time.monotonic() - self.started
        self.epoch_stack.close()
        complete = not self.position.batches
        row = self._row({**(logs or {}), **validation}, seconds)
        without_better = 0 if self.policy.improves(row) else self.policy.epochs_since_best + 1
        # An epoch cut short has stopped for the budget already: only a signal can add to that.
        request = self.rule.request(time.monotonic(), without_better) if complete else self.rule.request()
        agreed = self._agree(request)
        if agreed is StopReason.SIGNAL or (agreed and self.stopped_by is None):
            self.stopped_by = agreed.describe(self.training.patience, self.stop_signal)
        last = self.position.epochs == self.training.epochs or self.stopped_by is not None
        self._record(row, last=last, epoch_so_far=self.stopped_epoch_so_far)
        if self.stop_signal is not None:  # perhaps received while this epoch's files were written
            if self.position.batches:
                checkpoint = self.policy.save_resume_point(self.position, self.stopped_epoch_so_far)
            else:
                self.policy.save_epoch(self.position)
                checkpoint = self.policy.workspace.checkpoint(self.position.epochs)
            raise Interrupted(self.stop_signal, self.position, checkpoint)
        if self.stopped_by is not None:
            self.model.stop_training = True
        # What this epoch's end cost (validation, BLEU, saving) is what the next must keep in reserve.
        self.rule.reserve = time.monotonic() - self.last_batch_end


def _every(interval: int, step: int) -> bool:
    """Whether `step` is one of every `interval` steps (an interval of 0: none is)."""
    return interval > 0 and step % interval == 0
