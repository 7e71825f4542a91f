"""Pieces both architectures share: the model triple, the recurrent stacks and the inputs."""

from __future__ import annotations

from dataclasses import dataclass

import keras
from keras import layers as kl

from nmt_cli.config import ModelConfig


@dataclass
class Seq2SeqModels:
    training: keras.Model  # [source_ids, decoder_input_ids] -> next-token logits
    encoder: keras.Model  # source_ids -> what the decoder starts from
    decoder: keras.Model  # one step: previous token + states (+ encoder outputs) -> log-probs + new states


def lstm_name(side: str, index: int) -> str:
    return f"{side}_lstm" if index == 0 else f"{side}_lstm_{index + 1}"


def make_embeddings_and_decoder(config: ModelConfig) -> dict[str, kl.Layer]:
    """Embeddings, dropouts, the decoder LSTM stack and the output projection."""
    made: dict[str, kl.Layer] = {
        "encoder_embedding": kl.Embedding(config.source_vocab_size, config.embedding_dim, mask_zero=True, name="encoder_embedding"),
        "encoder_dropout": kl.Dropout(config.dropout, name="encoder_dropout"),
        "decoder_embedding": kl.Embedding(config.target_vocab_size, config.embedding_dim, mask_zero=True, name="decoder_embedding"),
        "decoder_dropout": kl.Dropout(config.dropout, name="decoder_dropout"),
        "output_dropout": kl.Dropout(config.dropout, name="output_dropout"),
        "output_projection": kl.Dense(config.target_vocab_size, name="output_projection"),
    }
    for i in range(config.layers):
        name = lstm_name("decoder", i)
        made[name] = kl.LSTM(config.units, return_sequences=True, return_state=True, name=name)
    return made


def source_input() -> keras.KerasTensor:
    return keras.Input(shape=(None,), dtype="int32", name="source_ids")


def decoder_input() -> keras.KerasTensor:
    return keras.Input(shape=(None,), dtype="int32", name="decoder_input_ids")


def state_inputs(config: ModelConfig) -> list[keras.KerasTensor]:
    """One (h, c) pair of inputs per decoder layer, for one-step decoding."""
    return [
        keras.Input(shape=(config.units,), name=f"state_{kind}_{i + 1}")
        for i in range(config.layers)
        for kind in ("h", "c")
    ]


def run_decoder_stack(made: dict[str, kl.Layer], config: ModelConfig, token_ids, states: list, training_graph: bool):
    """Embed target tokens and run the decoder LSTMs from `states`; returns (outputs, new states)."""
    x = made["decoder_embedding"](token_ids)
    if training_graph:
        x = made["decoder_dropout"](x)
    new_states = []
    for i in range(config.layers):
        if i and training_graph:
            x = made["decoder_dropout"](x)
        x, h, c = made[lstm_name("decoder", i)](x, initial_state=states[2 * i : 2 * i + 2])
        new_states += [h, c]
    return x, new_states


def next_token_log_probs(made: dict[str, kl.Layer], features):
    """Project one decoder step's features (batch, 1, units) to log-probabilities (batch, 1, vocab)."""
    return kl.Activation("log_softmax", name="next_token_log_probs")(made["output_projection"](features))
