"""Loss and metrics over padded target sequences: padding (id 0) never counts.

Registered with Keras so that checkpoints load with `safe_mode` and no pickled code.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from nmt_cli.tokenizer import PAD_ID


def _not_padding(y_true):
    return ops.cast(ops.not_equal(y_true, PAD_ID), "float32")


def token_loss_sum(y_true, y_pred, label_smoothing: float = 0.0):
    """(summed loss, number of real tokens) of a batch: what a mean over real tokens divides.

    Training across several workers divides each worker's sum by the global batch's token count,
    so that the workers' losses add up to the one-worker mean.
    """
    y_true = ops.cast(y_true, "int32")
    logits = ops.cast(y_pred, "float32")
    token_loss = target_cross_entropy(y_true, logits)
    if label_smoothing:
        # Minus the mean log-probability over the vocabulary: logsumexp - mean(logits).
        uniform = ops.logsumexp(logits, axis=-1) - ops.mean(logits, axis=-1)
        token_loss = (1.0 - label_smoothing) * token_loss + label_smoothing * uniform
    weights = _not_padding(y_true)
    return ops.sum(token_loss * weights), ops.sum(weights)


def target_cross_entropy(y_true, logits):
    """-log p(target) at every position, from float32 logits `(..., vocabulary)`.

    On a CPU, TensorFlow's fused kernel, which is deterministic there: with op determinism on,
    `tf.nn.sparse_softmax_cross_entropy_with_logits` would take the target's log-probability with
    a gather instead, whose gradient scatters into a zero tensor of the logits' size, one of the
    costliest operations of a Transformer's training step. On a GPU the fused kernel is not
    deterministic, and the public function chooses.
    """
    if tf.config.list_logical_devices("GPU"):
        return tf.nn.sparse_softmax_cross_entropy_with_logits(y_true, logits)
    vocabulary = tf.shape(logits)[-1]
    losses, _ = tf.raw_ops.SparseSoftmaxCrossEntropyWithLogits(
        features=tf.reshape(logits, [-1, vocabulary]), labels=tf.reshape(y_true, [-1])
    )
    return tf.reshape(losses, tf.shape(y_true))


@keras.saving.register_keras_serializable(package="nmt")
class MaskedCrossEntropy(keras.losses.Loss):
    """Sparse cross-entropy from logits with optional label smoothing, averaged over real tokens.

    Never builds one-hot targets: the smoothing term is the mean negative log-probability over
    the vocabulary, which needs no target tensor of vocabulary size.
    """

    def __init__(self, label_smoothing: float = 0.0, name: str = "masked_cross_entropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = label_smoothing

    def __call__(self, y_true, y_pred, sample_weight=None):
        # The average is over real tokens already; Keras' own mask reduction would apply it twice.
        # What Keras' reduction would still do: divide by the replicas in sync (MirroredStrategy
        # adds up their gradients, and Keras multiplies the logged loss back).
        replica = tf.distribute.get_replica_context()
        replicas = replica.num_replicas_in_sync if replica is not None else 1
        return self.call(y_true, y_pred) / replicas

    def call(self, y_true, y_pred):
        total, tokens = token_loss_sum(y_true, y_pred, self.label_smoothing)
        return total / ops.maximum(tokens, 1.0)

    def get_config(self):
        return {"label_smoothing": self.label_smoothing, "name": self.name}


@keras.saving.register_keras_serializable(package="nmt")
class MaskedTokenAccuracy(keras.metrics.Mean):
    """Share of real (non-padding) target tokens predicted exactly: "word accuracy"."""

    def __init__(self, name: str = "accuracy", **kwargs):
        super().__init__(name=name, **kwargs)

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(predicted_exactly(y_true, y_pred), sample_weight=_not_padding(y_true))


def predicted_exactly(y_true, y_pred):
    """1.0 where the most likely token is the target token, else 0.0 (padding included)."""
    return ops.cast(ops.equal(ops.cast(ops.argmax(y_pred, axis=-1), "int32"), ops.cast(y_true, "int32")), "float32")


def correct_tokens(y_true, y_pred):
    """How many real target tokens are predicted exactly."""
    return ops.sum(predicted_exactly(y_true, y_pred) * _not_padding(y_true))


@keras.saving.register_keras_serializable(package="nmt")
class TargetTokens(keras.metrics.Sum):
    """How many real target tokens the epoch has seen, for tokens-per-second figures."""

    def __init__(self, name: str = "target_tokens", **kwargs):
        super().__init__(name=name, **kwargs)

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(ops.sum(_not_padding(y_true)))
