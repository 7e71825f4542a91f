"""nmt_cli.models: shapes, layer names, masking, inference equivalence, shared weights, saving."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from keras import ops  # noqa: E402

from conftest import log_softmax  # noqa: E402
from nmt_cli import models  # noqa: E402
from nmt_cli.architectures import ARCHITECTURES  # noqa: E402
from nmt_cli.config import ModelConfig  # noqa: E402
from nmt_cli.errors import UserError  # noqa: E402
from nmt_cli.models.base import ATTENTION, LOG_PROBS, PREVIOUS_TOKEN, STEP, Seq2SeqModels  # noqa: E402
from nmt_cli.tokenizer import BOS_ID, EOS_ID, PAD_ID  # noqa: E402

SOURCE_VOCAB, TARGET_VOCAB = 20, 30

CONFIGS = {
    "seq2seq": dict(arch="seq2seq"),
    "seq2seq-2layers": dict(arch="seq2seq", layers=2),
    "luong": dict(arch="attention", attention="luong"),
    "bahdanau": dict(arch="attention", attention="bahdanau"),
    "bidirectional": dict(arch="attention", attention="luong", bidirectional=True),
    "attention-2layers": dict(arch="attention", attention="bahdanau", layers=2),
    "bidirectional-2layers": dict(arch="attention", attention="luong", bidirectional=True, layers=2),
    "transformer": dict(arch="transformer", heads=2, ff_units=32, layers=2),
    "transformer-1layer": dict(arch="transformer", heads=4, ff_units=24, layers=1),
    "transformer-tied": dict(arch="transformer", heads=2, ff_units=32, layers=1, tie_embeddings=True),
}


def make_config(**overrides) -> ModelConfig:
    values = dict(
        units=16,
        dropout=0.2,  # must be inert outside training
        source_vocab_size=SOURCE_VOCAB,
        target_vocab_size=TARGET_VOCAB,
    )
    if overrides.get("arch") != "transformer":
        values["embedding_dim"] = 8
    values.update(overrides)
    return ModelConfig(**values)


_BUILT: dict[str, tuple[ModelConfig, Seq2SeqModels]] = {}


def built(name: str) -> tuple[ModelConfig, Seq2SeqModels]:
    """Models of one named config, built once per test session (the tests never mutate them)."""
    if name not in _BUILT:
        keras.utils.set_random_seed(sorted(CONFIGS).index(name) + 1)
        config = make_config(**CONFIGS[name])
        _BUILT[name] = (config, models.build_models(config))
    return _BUILT[name]


# A small batch: sources of lengths 5, 3, 7 and targets of lengths 4, 6, 2 (no <bos>/<eos>).
SOURCE_LENGTHS = [5, 3, 7]
TARGET_LENGTHS = [4, 6, 2]


def make_batch(seed: int = 0, source_width: int = 8, target_width: int = 8):
    """(source ids, decoder input `<bos> y`, number of real decoder positions per row), padded with 0."""
    rng = np.random.default_rng(seed)
    batch = len(SOURCE_LENGTHS)
    source = np.full((batch, source_width), PAD_ID, np.int32)
    decoder_in = np.full((batch, target_width), PAD_ID, np.int32)
    for row, (s_len, t_len) in enumerate(zip(SOURCE_LENGTHS, TARGET_LENGTHS)):
        source[row, :s_len] = rng.integers(EOS_ID + 1, SOURCE_VOCAB, s_len)
        decoder_in[row, 0] = BOS_ID
        decoder_in[row, 1 : t_len + 1] = rng.integers(EOS_ID + 1, TARGET_VOCAB, t_len)
    real = [t_len + 1 for t_len in TARGET_LENGTHS]  # <bos> + y
    return source, decoder_in, real


def training_logits(model: keras.Model, source: np.ndarray, decoder_in: np.ndarray) -> np.ndarray:
    out = model([ops.convert_to_tensor(source), ops.convert_to_tensor(decoder_in)], training=False)
    return np.asarray(ops.convert_to_numpy(out))


def strip_mask(x):
    """The same values as a new tensor without Keras' `_keras_mask` attribute."""
    return ops.convert_to_tensor(np.asarray(ops.convert_to_numpy(x)))


def step_by_step_log_probs(
    config: ModelConfig, encoder: keras.Model, decoder: keras.Model, source: np.ndarray, decoder_in: np.ndarray
) -> np.ndarray:
    """Teacher-forced one-token-at-a-time decoding with the inference models: (B, T, V) log-probs."""
    return step_by_step(config, encoder, decoder, source, decoder_in)[0]


def step_by_step(
    config: ModelConfig, encoder: keras.Model, decoder: keras.Model, source: np.ndarray, decoder_in: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None]:
    """Teacher-forced one-token-at-a-time decoding with the inference models: (B, T, V) log-probs,
    and the (B, T, source width) attention of a decoder that gives it (else None).

    It keeps the step contract as any user of the saved models would: the state is a dict, and
    each step's outputs other than the log-probs and attention replace the state entries of the same name.
    """
    # Fresh tensors: eager outputs can carry a Keras mask attribute that would reach the decoder's
    # attention on its own; a real decoder (beam search gathers and tiles) loses it, so the
    # decoder must work from its explicit source_mask input.
    state = {name: strip_mask(x) for name, x in encoder(ops.convert_to_tensor(source), training=False).items()}
    steps, rows = [], []
    for t in range(decoder_in.shape[1]):
        token = ops.convert_to_tensor(decoder_in[:, t : t + 1].astype(np.int32))
        step = ops.convert_to_tensor(np.full((source.shape[0], 1), t, np.int32))
        outputs = dict(decoder({PREVIOUS_TOKEN: token, STEP: step, **state}, training=False))
        log_probs = outputs.pop(LOG_PROBS)
        if ATTENTION in outputs:
            rows.append(np.asarray(ops.convert_to_numpy(outputs.pop(ATTENTION)))[:, None, :])
        assert tuple(log_probs.shape) == (decoder_in.shape[0], config.target_vocab_size)
        assert set(outputs) <= set(state)
        state.update(outputs)
        steps.append(np.asarray(ops.convert_to_numpy(log_probs))[:, None, :])
    return np.concatenate(steps, axis=1), np.concatenate(rows, axis=1) if rows else None


def assert_equivalent(config, trio: Seq2SeqModels, source, decoder_in, real, atol=1e-4):
    expected = log_softmax(training_logits(trio.training, source, decoder_in))
    got = step_by_step_log_probs(config, trio.encoder, trio.decoder, source, decoder_in)
    assert got.shape == expected.shape
    for row, n in enumerate(real):
        np.testing.assert_allclose(got[row, :n], expected[row, :n], atol=atol, rtol=0)


# --------------------------------------------------------------------------------------------
# Shapes and names
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CONFIGS))
def test_training_output_shape(name):
    config, trio = built(name)
    source, decoder_in, _ = make_batch(source_width=8, target_width=16)
    logits = training_logits(trio.training, source, decoder_in)
    assert logits.shape == (3, 16, TARGET_VOCAB)
    assert np.all(np.isfinite(logits))


@pytest.mark.parametrize("name", [name for name in CONFIGS if CONFIGS[name]["arch"] == "transformer"])
def test_transformer_layer_names(name):
    config, trio = built(name)
    names = {layer.name for layer in trio.training.layers}
    for side in ("encoder", "decoder"):
        for i in range(1, config.layers + 1):
            assert f"{side}_layer_{i}_self_attention_qkv" in names and f"{side}_layer_{i}_ffn_inner" in names
        assert f"{side}_layer_{config.layers + 1}_ffn_inner" not in names
        assert {f"{side}_embedding", f"{side}_norm"} <= names
    assert f"decoder_layer_{config.layers}_cross_attention_kv" in names
    assert "encoder_layer_1_cross_attention_kv" not in names
    if config.tie_embeddings:
        assert "output_projection" not in names
    else:
        assert trio.training.get_layer("output_projection").units == TARGET_VOCAB


def test_tied_embeddings_score_the_vocabulary_with_the_decoder_embedding():
    keras.utils.set_random_seed(98)
    config = make_config(**CONFIGS["transformer-tied"])
    trio = models.build_models(config)  # a private copy: this test changes weights
    untied = models.build_models(make_config(**{**CONFIGS["transformer-tied"], "tie_embeddings": False}))
    assert untied.training.count_params() - trio.training.count_params() == (config.units + 1) * TARGET_VOCAB
    source, decoder_in, real = make_batch(seed=7)
    before = training_logits(trio.training, source, decoder_in)
    embedding = trio.training.get_layer("decoder_embedding")
    assert trio.decoder.get_layer("decoder_embedding") is embedding
    (table,) = embedding.get_weights()
    # Change the row of <eos>, which make_batch never feeds in: only its output score can move.
    assert EOS_ID not in decoder_in
    table[EOS_ID] += np.random.default_rng(0).normal(size=table.shape[1]).astype(table.dtype)
    embedding.set_weights([table])
    after = training_logits(trio.training, source, decoder_in)
    changed = np.abs(after - before).max(axis=(0, 1))
    assert changed[EOS_ID] > 1e-3 and np.delete(changed, EOS_ID).max() < 1e-6
    assert_equivalent(config, trio, source, decoder_in, real)


@pytest.mark.parametrize("name", [name for name in CONFIGS if CONFIGS[name]["arch"] != "transformer"])
def test_layer_names(name):
    config, trio = built(name)
    names = {layer.name for layer in trio.training.layers}
    wanted = {"encoder_embedding", "encoder_lstm", "decoder_embedding", "decoder_lstm", "output_projection"}
    if config.arch == "attention":
        wanted.add("attention")
    if config.layers == 2:
        wanted |= {"encoder_lstm_2", "decoder_lstm_2"}
    assert wanted <= names, sorted(wanted - names)
    if config.layers == 1:
        assert "encoder_lstm_2" not in names and "decoder_lstm_2" not in names
    if config.arch == "seq2seq":
        assert "attention" not in names
    if config.bidirectional:
        assert isinstance(trio.training.get_layer("encoder_lstm"), keras.layers.Bidirectional)
    assert trio.training.get_layer("output_projection").units == TARGET_VOCAB


# --------------------------------------------------------------------------------------------
# Padding
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CONFIGS))
def test_padding_changes_nothing(name):
    config, trio = built(name)
    source, decoder_in, real = make_batch(seed=3, source_width=8, target_width=8)
    base = training_logits(trio.training, source, decoder_in)

    more_source = np.pad(source, ((0, 0), (0, 5)), constant_values=PAD_ID)
    more_target = np.pad(decoder_in, ((0, 0), (0, 4)), constant_values=PAD_ID)
    for src, dec in ((more_source, decoder_in), (source, more_target), (more_source, more_target)):
        padded = training_logits(trio.training, src, dec)
        assert padded.shape == (3, dec.shape[1], TARGET_VOCAB)
        for row, n in enumerate(real):
            np.testing.assert_allclose(padded[row, :n], base[row, :n], atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_source_padding_is_not_just_ignored_content(name):
    """A guard for the padding test: changing a *real* source token does change the logits."""
    config, trio = built(name)
    source, decoder_in, real = make_batch(seed=3)
    base = training_logits(trio.training, source, decoder_in)
    changed = source.copy()
    changed[0, 0] = EOS_ID + 1 if changed[0, 0] != EOS_ID + 1 else EOS_ID + 2
    other = training_logits(trio.training, changed, decoder_in)
    assert np.abs(other[0, : real[0]] - base[0, : real[0]]).max() > 1e-6
    # Other rows of the batch are untouched.
    np.testing.assert_allclose(other[1:], base[1:], atol=1e-6, rtol=0)


# --------------------------------------------------------------------------------------------
# Inference models
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CONFIGS))
def test_inference_models_match_training_model(name):
    config, trio = built(name)
    source, decoder_in, real = make_batch(seed=5)
    assert_equivalent(config, trio, source, decoder_in, real)


@pytest.mark.parametrize("name", ["luong", "bahdanau", "bidirectional", "transformer"])
def test_decoder_honours_its_source_mask_input(name):
    """Extra source padding, masked by the source_mask input, changes no decoder output; without
    the mask (all true) it would."""
    config, trio = built(name)
    source, decoder_in, real = make_batch(seed=19)
    wide = np.pad(source, ((0, 0), (0, 6)), constant_values=PAD_ID)
    narrow_steps = step_by_step_log_probs(config, trio.encoder, trio.decoder, source, decoder_in)
    wide_steps = step_by_step_log_probs(config, trio.encoder, trio.decoder, wide, decoder_in)
    for row, n in enumerate(real):
        np.testing.assert_allclose(wide_steps[row, :n], narrow_steps[row, :n], atol=1e-5, rtol=0)

    state = {name: strip_mask(x) for name, x in trio.encoder(ops.convert_to_tensor(wide), training=False).items()}
    mask = state["source_mask"]
    assert mask.shape[1] == wide.shape[1] and mask.dtype == "bool"
    np.testing.assert_array_equal(ops.convert_to_numpy(mask), wide != PAD_ID)
    step = {PREVIOUS_TOKEN: ops.convert_to_tensor(decoder_in[:, :1]), STEP: ops.zeros((wide.shape[0], 1), "int32")}
    masked = ops.convert_to_numpy(trio.decoder({**step, **state}, training=False)[LOG_PROBS])
    unmasked = ops.convert_to_numpy(
        trio.decoder({**step, **state, "source_mask": ops.ones_like(mask)}, training=False)[LOG_PROBS]
    )
    assert np.abs(masked - unmasked).max() > 1e-6


@pytest.mark.parametrize("name", ["seq2seq", "luong", "bidirectional-2layers", "transformer"])
def test_models_share_weights(name):
    keras.utils.set_random_seed(99)
    config = make_config(**CONFIGS[name])
    trio = models.build_models(config)  # a private copy: this test changes weights
    source, decoder_in, real = make_batch(seed=7)
    before = step_by_step_log_probs(config, trio.encoder, trio.decoder, source, decoder_in)

    projection = trio.training.get_layer("output_projection")
    kernel, bias = projection.get_weights()
    rng = np.random.default_rng(0)
    projection.set_weights(
        [rng.normal(size=kernel.shape).astype(kernel.dtype), rng.normal(size=bias.shape).astype(bias.dtype)]
    )
    assert trio.decoder.get_layer("output_projection") is projection

    after = step_by_step_log_probs(config, trio.encoder, trio.decoder, source, decoder_in)
    assert np.abs(after - before).max() > 1e-2
    assert_equivalent(config, trio, source, decoder_in, real)

    # An encoder-side change reaches the encoder inference model too.
    embedding = trio.training.get_layer("encoder_embedding")
    (table,) = embedding.get_weights()
    embedding.set_weights([rng.normal(size=table.shape).astype(table.dtype)])
    changed = step_by_step_log_probs(config, trio.encoder, trio.decoder, source, decoder_in)
    assert np.abs(changed - after).max() > 1e-3
    assert_equivalent(config, trio, source, decoder_in, real)


# --------------------------------------------------------------------------------------------
# Saving and loading
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CONFIGS))
def test_save_and_load_with_safe_mode(name, tmp_path):
    config, trio = built(name)
    paths = {}
    for part in ("training", "encoder", "decoder"):
        paths[part] = tmp_path / f"{part}.keras"
        getattr(trio, part).save(paths[part])
    loaded = {part: keras.models.load_model(path, safe_mode=True) for part, path in paths.items()}

    source, decoder_in, real = make_batch(seed=11)
    np.testing.assert_allclose(
        training_logits(loaded["training"], source, decoder_in),
        training_logits(trio.training, source, decoder_in),
        atol=1e-6,
        rtol=0,
    )

    # The loaded encoder and decoder behave like the originals, and together still match.
    original_encoded = trio.encoder(ops.convert_to_tensor(source), training=False)
    loaded_encoded = loaded["encoder"](ops.convert_to_tensor(source), training=False)
    assert set(loaded_encoded) == set(original_encoded)
    for name in original_encoded:
        np.testing.assert_allclose(
            ops.convert_to_numpy(loaded_encoded[name]), ops.convert_to_numpy(original_encoded[name]), atol=1e-6, rtol=0
        )
    got, attention = step_by_step(config, loaded["encoder"], loaded["decoder"], source, decoder_in)
    expected = log_softmax(training_logits(trio.training, source, decoder_in))
    for row, n in enumerate(real):
        np.testing.assert_allclose(got[row, :n], expected[row, :n], atol=1e-4, rtol=0)
    # The attention output, where there is one, survives the round trip.
    _, original_attention = step_by_step(config, trio.encoder, trio.decoder, source, decoder_in)
    if original_attention is None:
        assert attention is None
    else:
        np.testing.assert_allclose(attention, original_attention, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_decoder_steps_give_attention_over_the_real_source(name):
    """An architecture that attends gives every step a distribution over the source's real
    positions, padding 0, the same with more padding; seq2seq gives none."""
    config, trio = built(name)
    source, decoder_in, real = make_batch(seed=17, source_width=8)
    _, attention = step_by_step(config, trio.encoder, trio.decoder, source, decoder_in)
    if not ARCHITECTURES[config.arch].attends:
        assert attention is None and ATTENTION not in trio.decoder.output
        return
    assert attention.shape == (len(source), decoder_in.shape[1], source.shape[1])
    for row, (source_length, n) in enumerate(zip(SOURCE_LENGTHS, real)):
        np.testing.assert_allclose(attention[row, :n].sum(axis=-1), 1.0, atol=1e-5)
        assert np.all(attention[row, :n, source_length:] < 1e-6)
    wider, _, _ = make_batch(seed=17, source_width=12)
    _, padded_more = step_by_step(config, trio.encoder, trio.decoder, wider, decoder_in)
    for row, n in enumerate(real):
        np.testing.assert_allclose(padded_more[row, :n, :8], attention[row, :n], atol=1e-5)


@pytest.mark.parametrize("name", ["seq2seq-2layers", "bahdanau", "bidirectional", "transformer"])
def test_from_training_model_on_loaded_model(name, tmp_path):
    config, trio = built(name)
    path = tmp_path / "checkpoint.keras"
    trio.training.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    rebuilt = models.architecture(config.arch).from_training_model(loaded, config)
    assert rebuilt.training is loaded
    assert rebuilt.decoder.get_layer("output_projection") is loaded.get_layer("output_projection")
    source, decoder_in, real = make_batch(seed=13)
    assert_equivalent(config, rebuilt, source, decoder_in, real)
    # ... and they agree with the models the checkpoint was saved from.
    np.testing.assert_allclose(
        step_by_step_log_probs(config, rebuilt.encoder, rebuilt.decoder, source, decoder_in),
        step_by_step_log_probs(config, trio.encoder, trio.decoder, source, decoder_in),
        atol=1e-5,
        rtol=0,
    )


def test_loaded_training_model_can_train_and_stays_equivalent(tmp_path):
    """A loaded checkpoint keeps training (a couple of steps) and its inference models follow it."""
    from nmt_cli.objectives import MaskedCrossEntropy

    keras.utils.set_random_seed(5)
    config = make_config(**CONFIGS["luong"])
    trio = models.build_models(config)
    trio.training.compile(optimizer=keras.optimizers.Adam(1e-2), loss=MaskedCrossEntropy())
    path = tmp_path / "checkpoint.keras"
    trio.training.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    rebuilt = models.architecture(config.arch).from_training_model(loaded, config)

    source, decoder_in, real = make_batch(seed=17)
    target = np.zeros_like(decoder_in)
    for row, n in enumerate(real):
        target[row, : n - 1] = decoder_in[row, 1:n]
        target[row, n - 1] = EOS_ID
    before = step_by_step_log_probs(config, rebuilt.encoder, rebuilt.decoder, source, decoder_in)
    for _ in range(2):
        loaded.train_on_batch([source, decoder_in], target)
    after = step_by_step_log_probs(config, rebuilt.encoder, rebuilt.decoder, source, decoder_in)
    assert np.abs(after - before).max() > 1e-4
    assert_equivalent(config, rebuilt, source, decoder_in, real)


# --------------------------------------------------------------------------------------------
# Config validation
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(arch="seq2seq", bidirectional=True), "bidirectional"),
        (dict(arch="attention", bidirectional=True, units=15), "even"),
        (dict(arch="gru"), "arch"),
        (dict(arch="attention", attention="dot"), "attention"),
        (dict(units=0), "units"),
        (dict(dropout=1.0), "dropout"),
    ],
)
def test_model_config_validate_errors(overrides, message):
    config = make_config(**overrides)
    with pytest.raises(UserError, match=message):
        config.validate()
    with pytest.raises(UserError):
        models.build_models(config)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_parameter_count_is_known_before_building(name):
    config, trio = built(name)
    assert models.architecture(config.arch).parameter_count(config) == trio.training.count_params()
