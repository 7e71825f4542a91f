"""The classic encoder-decoder: the encoder's final LSTM states start the decoder LSTM.

    encoder: source ids -> Embedding -> LSTM(return_state) -> [state_h, state_c]
    decoder: target ids -> Embedding -> LSTM(initial_state=encoder states) -> Dense(vocab)
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
        last = i == config.layers - 1
        made[name] = kl.LSTM(config.units, return_sequences=not last, return_state=True, name=name)
    return made


def encode(made: dict[str, kl.Layer], config: ModelConfig, source_ids, training_graph: bool) -> list:
    """The encoder's final [state_h, state_c] of every layer."""
    x = made["encoder_embedding"](source_ids)
    states = []
    for i in range(config.layers):
        if training_graph:
            x = made["encoder_dropout"](x)
        x, h, c = made[lstm_name("encoder", i)](x)
        states += [h, c]
    return states


def training_model(made: dict[str, kl.Layer], config: ModelConfig) -> keras.Model:
    encoder_inputs, decoder_inputs = source_input(), decoder_input()
    encoder_states = encode(made, config, encoder_inputs, training_graph=True)
    decoder_outputs, _ = run_decoder_stack(made, config, decoder_inputs, encoder_states, training_graph=True)
    logits = made["output_projection"](made["output_dropout"](decoder_outputs))
    return keras.Model([encoder_inputs, decoder_inputs], logits, name="seq2seq")


def inference_models(made: dict[str, kl.Layer], config: ModelConfig) -> tuple[keras.Model, keras.Model]:
    encoder_inputs = source_input()
    encoder_model = keras.Model(encoder_inputs, encode(made, config, encoder_inputs, training_graph=False), name="encoder")

    token = keras.Input(shape=(1,), dtype="int32", name="previous_token")
    states = state_inputs(config)
    features, new_states = run_decoder_stack(made, config, token, states, training_graph=False)
    decoder_model = keras.Model(
        [token, *states], [next_token_log_probs(made, features), *new_states], name="decoder"
    )
    return encoder_model, decoder_model
