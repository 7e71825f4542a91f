"""nmt_cli.objectives: the masked loss and metrics, alone and through Keras compile/evaluate."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from keras import ops  # noqa: E402

from conftest import log_softmax  # noqa: E402
from nmt_cli.objectives import MaskedCrossEntropy, MaskedTokenAccuracy, TargetTokens  # noqa: E402
from nmt_cli.tokenizer import PAD_ID  # noqa: E402

VOCAB = 11


def reference_loss(y_true: np.ndarray, logits: np.ndarray, label_smoothing: float = 0.0) -> float:
    """Mean over the real (y_true != 0) tokens of the (smoothed) negative log-likelihood."""
    log_probs = log_softmax(logits)
    nll = -np.take_along_axis(log_probs, y_true[..., None].astype(np.int64), axis=-1)[..., 0]
    token_loss = (1 - label_smoothing) * nll - label_smoothing * log_probs.mean(axis=-1)
    real = y_true != PAD_ID
    return float(token_loss[real].sum() / real.sum())


def reference_accuracy(y_true: np.ndarray, logits: np.ndarray) -> float:
    real = y_true != PAD_ID
    return float((logits.argmax(-1) == y_true)[real].mean())


def make_targets(seed: int = 0, batch: int = 4, length: int = 9):
    """Targets with different numbers of real tokens per row (so the mean's weighting matters)."""
    rng = np.random.default_rng(seed)
    y_true = np.zeros((batch, length), np.int32)
    for row, n in enumerate([length, 1, 5, 3][:batch]):
        y_true[row, :n] = rng.integers(1, VOCAB, n)
    logits = rng.normal(scale=3.0, size=(batch, length, VOCAB)).astype(np.float32)
    return y_true, logits


def as_float(x) -> float:
    return float(ops.convert_to_numpy(x))


# --------------------------------------------------------------------------------------------
# The loss on its own
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 0.3])
def test_masked_cross_entropy_matches_reference(label_smoothing):
    y_true, logits = make_targets(seed=1)
    loss = MaskedCrossEntropy(label_smoothing=label_smoothing)
    got = as_float(loss(ops.convert_to_tensor(y_true), ops.convert_to_tensor(logits)))
    assert got == pytest.approx(reference_loss(y_true, logits, label_smoothing), rel=1e-5, abs=1e-6)


def test_reference_differs_from_naive_means():
    """Guards the test data: averaging over padding too, or per row, would give another number."""
    y_true, logits = make_targets(seed=1)
    log_probs = log_softmax(logits)
    nll = -np.take_along_axis(log_probs, y_true[..., None].astype(np.int64), axis=-1)[..., 0]
    real = y_true != PAD_ID
    per_token = reference_loss(y_true, logits)
    assert abs(per_token - nll.mean()) > 1e-3  # padding included
    assert abs(per_token - np.mean([nll[r][real[r]].mean() for r in range(len(y_true))])) > 1e-3  # per-row mean
    got = as_float(MaskedCrossEntropy()(ops.convert_to_tensor(y_true), ops.convert_to_tensor(logits)))
    assert got == pytest.approx(per_token, rel=1e-5)


def test_padding_logits_do_not_matter():
    y_true, logits = make_targets(seed=2)
    other = logits.copy()
    other[y_true == PAD_ID] = np.random.default_rng(9).normal(scale=50.0, size=other[y_true == PAD_ID].shape)
    for smoothing in (0.0, 0.2):
        loss = MaskedCrossEntropy(label_smoothing=smoothing)
        a = as_float(loss(ops.convert_to_tensor(y_true), ops.convert_to_tensor(logits)))
        b = as_float(loss(ops.convert_to_tensor(y_true), ops.convert_to_tensor(other)))
        assert a == pytest.approx(b, rel=1e-6)


def test_label_smoothing_formula_on_a_tiny_case():
    # One real token, uniform logits: nll = log V and mean(-log p) = log V, whatever the smoothing.
    y_true = np.array([[2, 0]], np.int32)
    logits = np.zeros((1, 2, VOCAB), np.float32)
    for smoothing in (0.0, 0.5):
        got = as_float(
            MaskedCrossEntropy(label_smoothing=smoothing)(ops.convert_to_tensor(y_true), ops.convert_to_tensor(logits))
        )
        assert got == pytest.approx(np.log(VOCAB), rel=1e-6)
    # A confident right answer: smoothing adds the mean negative log-probability over the vocabulary.
    logits = np.zeros((1, 2, VOCAB), np.float32)
    logits[0, 0, 2] = 10.0
    plain = reference_loss(y_true, logits)
    smoothed = as_float(
        MaskedCrossEntropy(label_smoothing=0.1)(ops.convert_to_tensor(y_true), ops.convert_to_tensor(logits))
    )
    assert smoothed > plain
    assert smoothed == pytest.approx(reference_loss(y_true, logits, 0.1), rel=1e-5)


def test_all_padding_gives_zero_not_nan():
    y_true = np.zeros((2, 3), np.int32)
    logits = np.random.default_rng(0).normal(size=(2, 3, VOCAB)).astype(np.float32)
    got = as_float(
        MaskedCrossEntropy(label_smoothing=0.1)(ops.convert_to_tensor(y_true), ops.convert_to_tensor(logits))
    )
    assert got == 0.0


def test_loss_config_round_trip_and_registration():
    loss = MaskedCrossEntropy(label_smoothing=0.25)
    again = MaskedCrossEntropy.from_config(loss.get_config())
    assert again.label_smoothing == 0.25
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss), safe_mode=True)
    assert isinstance(revived, MaskedCrossEntropy) and revived.label_smoothing == 0.25
    for metric in (MaskedTokenAccuracy(), TargetTokens()):
        revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(metric), safe_mode=True)
        assert type(revived) is type(metric) and revived.name == metric.name


# --------------------------------------------------------------------------------------------
# Through compile / evaluate, with a Keras mask on the output
# --------------------------------------------------------------------------------------------


def masked_logits_model(length: int, seed: int = 0) -> keras.Model:
    """Input ids -> Embedding(mask_zero=True) used directly as logits: the output carries a mask."""
    inputs = keras.Input(shape=(length,), dtype="int32")
    embedding = keras.layers.Embedding(VOCAB, VOCAB, mask_zero=True)
    outputs = embedding(inputs)
    model = keras.Model(inputs, outputs)
    table = np.random.default_rng(seed).normal(scale=2.0, size=(VOCAB, VOCAB)).astype(np.float32)
    embedding.set_weights([table])
    return model


def _inputs_and_targets(seed: int = 3, mask: str = "aligned"):
    """Inputs whose padding (hence the output's Keras mask) is like the targets' or deliberately not.

    aligned: like `<bos> y` and `y <eos>`; none: no padding in the inputs at all (mask all true);
    narrower: the inputs also pad some real target positions (mask false there).
    """
    y_true, _ = make_targets(seed=seed)
    rng = np.random.default_rng(seed + 100)
    ids = rng.integers(1, VOCAB, y_true.shape)
    if mask == "aligned":
        x = np.where(y_true != PAD_ID, ids, PAD_ID)
    elif mask == "none":
        x = ids
    else:
        x = np.where(y_true != PAD_ID, ids, PAD_ID)
        x[0, 4:] = PAD_ID
        x[2, 2:] = PAD_ID
    return x.astype(np.int32), y_true


@pytest.mark.parametrize("mask", ["aligned", "none", "narrower"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_compiled_evaluate_reports_the_reference_loss(label_smoothing, mask):
    """Whatever mask Keras sees on the output, the loss is the mean over `y_true != 0` tokens."""
    x, y_true = _inputs_and_targets(mask=mask)
    model = masked_logits_model(x.shape[1])
    # The model's output really carries a Keras mask: that is what could cause double masking.
    symbolic_mask = getattr(model.outputs[0], "_keras_mask", None)
    assert symbolic_mask is not None
    model.compile(
        optimizer="sgd",
        loss=MaskedCrossEntropy(label_smoothing=label_smoothing),
        metrics=[MaskedTokenAccuracy(), TargetTokens()],
    )
    logits = np.asarray(model.predict(x, verbose=0))
    results = model.evaluate(x, y_true, batch_size=len(x), verbose=0, return_dict=True)
    assert results["loss"] == pytest.approx(reference_loss(y_true, logits, label_smoothing), rel=1e-5)
    assert results["accuracy"] == pytest.approx(reference_accuracy(y_true, logits), rel=1e-6)
    assert results["target_tokens"] == pytest.approx(int((y_true != PAD_ID).sum()))


def test_compiled_train_on_batch_reports_the_reference_loss():
    x, y_true = _inputs_and_targets(seed=4)
    model = masked_logits_model(x.shape[1], seed=1)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0), loss=MaskedCrossEntropy(label_smoothing=0.1))
    logits = np.asarray(model.predict(x, verbose=0))
    loss = model.train_on_batch(x, y_true)
    loss = loss[0] if isinstance(loss, (list, tuple)) else loss
    assert float(loss) == pytest.approx(reference_loss(y_true, logits, 0.1), rel=1e-5)


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


def test_masked_token_accuracy_ignores_padding():
    y_true = np.array([[5, 6, 7, 0, 0], [8, 0, 0, 0, 0]], np.int32)
    predicted = np.array([[5, 1, 7, 0, 0], [8, 0, 0, 0, 0]])  # right at padding too: must not count
    logits = np.eye(VOCAB, dtype=np.float32)[predicted] * 5.0
    metric = MaskedTokenAccuracy()
    metric.update_state(ops.convert_to_tensor(y_true), ops.convert_to_tensor(logits))
    assert as_float(metric.result()) == pytest.approx(3 / 4)

    wrong_at_padding = np.array([[5, 1, 7, 9, 9], [8, 9, 9, 9, 9]])
    metric.reset_state()
    metric.update_state(
        ops.convert_to_tensor(y_true), ops.convert_to_tensor(np.eye(VOCAB, dtype=np.float32)[wrong_at_padding])
    )
    assert as_float(metric.result()) == pytest.approx(3 / 4)


def test_masked_token_accuracy_weights_batches_by_tokens():
    metric = MaskedTokenAccuracy()
    # Batch 1: 4 real tokens, all right. Batch 2: 1 real token, wrong. Token mean: 4/5 (not 1/2).
    y1 = np.array([[4, 5, 6, 7]], np.int32)
    metric.update_state(ops.convert_to_tensor(y1), ops.convert_to_tensor(np.eye(VOCAB, dtype=np.float32)[y1]))
    y2 = np.array([[4, 0, 0, 0]], np.int32)
    metric.update_state(
        ops.convert_to_tensor(y2), ops.convert_to_tensor(np.eye(VOCAB, dtype=np.float32)[np.array([[5, 0, 0, 0]])])
    )
    assert as_float(metric.result()) == pytest.approx(4 / 5)


def test_masked_token_accuracy_matches_reference_on_random_data():
    y_true, logits = make_targets(seed=8)
    metric = MaskedTokenAccuracy()
    metric.update_state(ops.convert_to_tensor(y_true), ops.convert_to_tensor(logits))
    assert as_float(metric.result()) == pytest.approx(reference_accuracy(y_true, logits))


def test_target_tokens_counts_real_tokens():
    metric = TargetTokens()
    y_true, logits = make_targets(seed=5)
    metric.update_state(ops.convert_to_tensor(y_true), ops.convert_to_tensor(logits))
    assert as_float(metric.result()) == int((y_true != PAD_ID).sum()) == 9 + 1 + 5 + 3
    metric.update_state(
        ops.convert_to_tensor(np.array([[1, 2, 0]], np.int32)),
        ops.convert_to_tensor(np.zeros((1, 3, VOCAB), np.float32)),
    )
    assert as_float(metric.result()) == 18 + 2
    metric.reset_state()
    assert as_float(metric.result()) == 0
