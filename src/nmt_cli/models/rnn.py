"""LSTM encoder-decoders: the tutorial's seq2seq, and the same with attention.

`--arch seq2seq`, the classic encoder-decoder: the encoder's final LSTM states start the decoder.

    encoder: source ids -> Embedding -> LSTM(return_state) -> [state_h, state_c]
    decoder: target ids -> Embedding -> LSTM(initial_state=encoder states) -> Dense(vocab)

`--arch attention` keeps the encoder's whole output sequence; at every target position the
decoder's LSTM output attends over it (Luong's "general" score or Bahdanau's additive score,
padding masked out), and [decoder output; context] is combined by a tanh layer before the output
projection. No input feeding, so training stays one parallel pass.

In the step contract (models/base.py) the LSTM states `state_h_N`, `state_c_N` of every decoder
layer are the cache; the attention model's `encoder_outputs`, `attention_keys` and `source_mask`
are memory, and its step gives its attention weights as `attention` (seq2seq has none).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import keras
from keras import layers as kl

from nmt_cli.models.base import (
    ATTENTION,
    LOG_PROBS,
    PREVIOUS_TOKEN,
    Architecture,
    attention_row,
    decoder_input,
    next_token_log_probs,
    source_input,
    state_input_like,
    step_inputs,
)

if TYPE_CHECKING:
    from nmt_cli.config import ModelConfig


def lstm_name(side: str, index: int) -> str:
    return f"{side}_lstm" if index == 0 else f"{side}_lstm_{index + 1}"


def state_names(layers: int) -> list[str]:
    """The cache's names: the (h, c) states of each decoder layer, in order."""
    return [f"state_{kind}_{i + 1}" for i in range(layers) for kind in ("h", "c")]


def lstm_weights(inputs: int, units: int) -> int:
    return 4 * ((inputs + units) * units + units)


class Seq2Seq(Architecture):
    graph_name = "seq2seq"

    def parameter_count(self, config: ModelConfig) -> int:
        embedding, units = config.embedding_dim, config.units
        count = (config.source_vocab_size + config.target_vocab_size) * embedding
        count += (units + 1) * config.target_vocab_size  # output projection
        for i in range(config.layers):
            count += lstm_weights(embedding if i == 0 else units, units)  # decoder
        return count + self.encoder_parameter_count(config)

    def encoder_parameter_count(self, config: ModelConfig) -> int:
        return sum(
            lstm_weights(config.embedding_dim if i == 0 else config.units, config.units) for i in range(config.layers)
        )

    def make_layers(self, config: ModelConfig) -> dict[str, kl.Layer]:
        made: dict[str, kl.Layer] = {
            "encoder_embedding": kl.Embedding(
                config.source_vocab_size, config.embedding_dim, mask_zero=True, name="encoder_embedding"
            ),
            "encoder_dropout": kl.Dropout(config.dropout, name="encoder_dropout"),
            "decoder_embedding": kl.Embedding(
                config.target_vocab_size, config.embedding_dim, mask_zero=True, name="decoder_embedding"
            ),
            "decoder_dropout": kl.Dropout(config.dropout, name="decoder_dropout"),
            "output_dropout": kl.Dropout(config.dropout, name="output_dropout"),
            # Logits in float32 whatever the precision policy: the softmax over the vocabulary needs it.
            "output_projection": kl.Dense(config.target_vocab_size, dtype="float32", name="output_projection"),
        }
        for i in range(config.layers):
            name = lstm_name("decoder", i)
            made[name] = kl.LSTM(config.units, return_sequences=True, return_state=True, name=name)
        made.update(self.make_encoder_layers(config))
        return made

    def make_encoder_layers(self, config: ModelConfig) -> dict[str, kl.Layer]:
        made = {}
        for i in range(config.layers):
            name = lstm_name("encoder", i)
            last = i == config.layers - 1
            made[name] = kl.LSTM(config.units, return_sequences=not last, return_state=True, name=name)
        return made

    def encode(self, made, config: ModelConfig, source_ids, training_graph: bool) -> tuple[dict, list]:
        """(memory, the final [state_h, state_c] of every encoder layer)."""
        x = made["encoder_embedding"](source_ids)
        states = []
        for i in range(config.layers):
            if training_graph:
                x = made["encoder_dropout"](x)
            x, h, c = made[lstm_name("encoder", i)](x)
            states += [h, c]
        return {}, states

    def decode(self, made, config: ModelConfig, token_ids, states: list, training_graph: bool) -> tuple:
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

    def features(self, made, decoder_outputs, memory: dict) -> tuple:
        """(what the output projection reads, the attention weights `(batch, target, source)` that
        chose it, or None without attention): here the decoder outputs themselves, and None."""
        return decoder_outputs, None

    def training_model(self, made, config: ModelConfig) -> keras.Model:
        source_ids, decoder_ids = source_input(), decoder_input()
        memory, states = self.encode(made, config, source_ids, training_graph=True)
        outputs, _ = self.decode(made, config, decoder_ids, states, training_graph=True)
        features, _ = self.features(made, outputs, memory)
        logits = made["output_projection"](made["output_dropout"](features))
        return keras.Model([source_ids, decoder_ids], logits, name=self.graph_name)

    def inference_models(self, made, config: ModelConfig) -> tuple[keras.Model, keras.Model]:
        source_ids = source_input()
        memory, states = self.encode(made, config, source_ids, training_graph=False)
        cache = dict(zip(state_names(config.layers), states))
        encoder = keras.Model(source_ids, {**memory, **cache}, name="encoder")

        inputs = step_inputs()
        memory_in = {name: state_input_like(name, tensor) for name, tensor in memory.items()}
        cache_in = {name: state_input_like(name, tensor) for name, tensor in cache.items()}
        outputs, new_states = self.decode(
            made, config, inputs[PREVIOUS_TOKEN], list(cache_in.values()), training_graph=False
        )
        features, attention = self.features(made, outputs, memory_in)
        step_outputs = {LOG_PROBS: next_token_log_probs(made["output_projection"](features))}
        step_outputs.update(zip(cache_in, new_states))
        if attention is not None:
            step_outputs[ATTENTION] = attention_row(attention)
        decoder = keras.Model({**inputs, **memory_in, **cache_in}, step_outputs, name="decoder")
        return encoder, decoder


class Attention(Seq2Seq):
    graph_name = "attention_seq2seq"

    def encoder_parameter_count(self, config: ModelConfig) -> int:
        units, count = config.units, 0
        for i in range(config.layers):
            inputs = config.embedding_dim if i == 0 else units
            count += 2 * lstm_weights(inputs, units // 2) if config.bidirectional else lstm_weights(inputs, units)
        keys, combine = units * units, (2 * units + 1) * units
        scale = 0 if config.attention == "luong" else units  # Bahdanau's additive score learns a scale vector
        return count + keys + combine + scale

    def make_layers(self, config: ModelConfig) -> dict[str, kl.Layer]:
        made = super().make_layers(config)
        made["attention_keys"] = kl.Dense(config.units, use_bias=False, name="attention_keys")
        made["attention"] = (
            kl.Attention(name="attention") if config.attention == "luong" else kl.AdditiveAttention(name="attention")
        )
        made["attention_concat"] = kl.Concatenate(name="attention_concat")
        made["attention_combine"] = kl.Dense(config.units, activation="tanh", name="attention_combine")
        return made

    def make_encoder_layers(self, config: ModelConfig) -> dict[str, kl.Layer]:
        made = {}
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
        return made

    def encode(self, made, config: ModelConfig, source_ids, training_graph: bool) -> tuple[dict, list]:
        source_mask = made["encoder_embedding"].compute_mask(source_ids)
        x = made["encoder_embedding"](source_ids)
        states = []
        for i in range(config.layers):
            if training_graph:
                x = made["encoder_dropout"](x)
            name = lstm_name("encoder", i)
            if config.bidirectional:
                x, forward_h, forward_c, backward_h, backward_c = made[name](x)
                states += [
                    made[f"{name}_state_h"]([forward_h, backward_h]),
                    made[f"{name}_state_c"]([forward_c, backward_c]),
                ]
            else:
                x, h, c = made[name](x)
                states += [h, c]
        memory = {"encoder_outputs": x, "attention_keys": made["attention_keys"](x), "source_mask": source_mask}
        return memory, states

    def features(self, made, decoder_outputs, memory: dict) -> tuple:
        context, weights = made["attention"](
            [decoder_outputs, memory["encoder_outputs"], memory["attention_keys"]],
            mask=[None, memory["source_mask"]],
            return_attention_scores=True,
        )
        return made["attention_combine"](made["attention_concat"]([decoder_outputs, context])), weights
