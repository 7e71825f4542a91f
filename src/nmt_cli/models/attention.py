"""Encoder-decoder with attention (Luong's "general" score or Bahdanau's additive score).

The encoder returns its whole output sequence; at every target position the decoder's LSTM
output attends over it (padding masked out), and [decoder output; context] is combined by a
tanh layer before the output projection. No input feeding, so training stays one parallel pass.
"""

from __future__ import annotations

import keras
from keras import layers as kl

from nmt_cli.config import ModelConfig
from nmt_cli.models.common import (
    decoder_input,
    lstm_name,
    make_embeddings_and_decoder,
    next_token_log_probs,
    run_decoder_stack,
    source_input,
    state_inputs,
)


def make_layers(config: ModelConfig) -> dict[str, kl.Layer]:
    made = make_embeddings_and_decoder(config)
    for i in range(config.layers):
        name = lstm_name("encoder", i)
        if config.bidirectional:
            # Half the units each way, so the concatenated states fit the decoder.
            lstm = kl.LSTM(config.units // 2, return_sequences=True, return_state=True)
            made[name] = kl.Bidirectional(lstm, name=name)
            made[f"{name}_state_h"] = kl.Concatenate(name=f"{name}_state_h")
            made[f"{name}_state_c"] = kl.Concatenate(name=f"{name}_state_c")
        else:
            made[name] = kl.LSTM(config.units, return_sequences=True, return_state=True, name=name)
    made["attention_keys"] = kl.Dense(config.units, use_bias=False, name="attention_keys")
    if config.attention == "luong":
        made["attention"] = kl.Attention(name="attention")
    else:
        made["attention"] = kl.AdditiveAttention(name="attention")
    made["attention_concat"] = kl.Concatenate(name="attention_concat")
    made["attention_combine"] = kl.Dense(config.units, activation="tanh", name="attention_combine")
    return made


def encode(made: dict[str, kl.Layer], config: ModelConfig, source_ids, training_graph: bool):
    """(encoder outputs, attention keys, source mask, final [state_h, state_c] of every layer)."""
    source_mask = made["encoder_embedding"].compute_mask(source_ids)
    x = made["encoder_embedding"](source_ids)
    states = []
    for i in range(config.layers):
        if training_graph:
            x = made["encoder_dropout"](x)
        name = lstm_name("encoder", i)
        if config.bidirectional:
            x, forward_h, forward_c, backward_h, backward_c = made[name](x)
            states += [made[f"{name}_state_h"]([forward_h, backward_h]), made[f"{name}_state_c"]([forward_c, backward_c])]
        else:
            x, h, c = made[name](x)
            states += [h, c]
    return x, made["attention_keys"](x), source_mask, states


def attend(made: dict[str, kl.Layer], decoder_outputs, encoder_outputs, keys, source_mask):
    context = made["attention"]([decoder_outputs, encoder_outputs, keys], mask=[None, source_mask])
    return made["attention_combine"](made["attention_concat"]([decoder_outputs, context]))


def training_model(made: dict[str, kl.Layer], config: ModelConfig) -> keras.Model:
    encoder_inputs, decoder_inputs = source_input(), decoder_input()
    encoder_outputs, keys, source_mask, states = encode(made, config, encoder_inputs, training_graph=True)
    decoder_outputs, _ = run_decoder_stack(made, config, decoder_inputs, states, training_graph=True)
    features = attend(made, decoder_outputs, encoder_outputs, keys, source_mask)
    logits = made["output_projection"](made["output_dropout"](features))
    return keras.Model([encoder_inputs, decoder_inputs], logits, name="attention_seq2seq")


def inference_models(made: dict[str, kl.Layer], config: ModelConfig) -> tuple[keras.Model, keras.Model]:
    encoder_inputs = source_input()
    encoder_outputs, keys, source_mask, states = encode(made, config, encoder_inputs, training_graph=False)
    encoder_model = keras.Model(encoder_inputs, [encoder_outputs, keys, source_mask, *states], name="encoder")

    token = keras.Input(shape=(1,), dtype="int32", name="previous_token")
    memory = keras.Input(shape=(None, config.units), name="encoder_outputs")
    memory_keys = keras.Input(shape=(None, config.units), name="attention_keys")
    memory_mask = keras.Input(shape=(None,), dtype="bool", name="source_mask")
    step_states = state_inputs(config)
    decoder_outputs, new_states = run_decoder_stack(made, config, token, step_states, training_graph=False)
    features = attend(made, decoder_outputs, memory, memory_keys, memory_mask)
    decoder_model = keras.Model(
        [token, memory, memory_keys, memory_mask, *step_states],
        [next_token_log_probs(made, features), *new_states],
        name="decoder",
    )
    return encoder_model, decoder_model
