"""The Transformer (Vaswani et al., 2017), pre-norm, as plain Keras functional graphs.

    encoder: source ids -> Embedding * sqrt(d) + sinusoidal positions
             -> N x [LayerNorm -> self-attention -> +, LayerNorm -> feed-forward -> +] -> LayerNorm
    decoder: target ids -> Embedding * sqrt(d) + sinusoidal positions
             -> N x [LayerNorm -> causal self-attention -> +, LayerNorm -> attention over the
                     encoder output -> +, LayerNorm -> feed-forward -> +] -> LayerNorm -> Dense(vocab)

Dropout is where fairseq puts its `--dropout`: on the embeddings and on each block's output
before it joins the residual stream; none on attention weights or inside the feed-forward
block: random masks are not cheap on a CPU, and those two cost a sixth of a bfloat16 training
step here.

Attention is written out from `Dense` layers and `keras.ops` rather than `MultiHeadAttention`,
so that the one-step decoder can reuse the very projections the training graph learnt: it
projects only the new token, appends its keys and values to a cache that grows by one position
per step, and attends over the encoder's keys and values, which the encoder inference model
computes once per sentence. No custom layer is involved, so the saved inference models load
with plain Keras.

In the step contract (models/base.py) the cache is `self_keys_N`/`self_values_N` of every
decoder layer, `(batch, steps so far, units)`; the memory is `source_mask` and the encoder's
`cross_keys_N`/`cross_values_N` for every decoder layer; `attention` is the last decoder layer's
attention over the source, its heads averaged.

With `--tie-embeddings` the decoder's embedding matrix also scores the vocabulary (Press and
Wolf, 2017): one registered layer, `ReversibleEmbedding`, as in KerasHub. Those models need
`import nmt_cli.models.transformer` before plain Keras loads them; untied ones (the default) need nothing.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import keras
import numpy as np
from keras import layers as kl
from keras import ops

from nmt_cli.models.base import (
    ATTENTION,
    LOG_PROBS,
    PREVIOUS_TOKEN,
    STEP,
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

MASKED = -1e4  # added to the scores of masked positions: exp() makes it 0, and it fits in float16


@keras.saving.register_keras_serializable(package="nmt")
class ReversibleEmbedding(kl.Embedding):
    """`layer(ids)` embeds; `layer(vectors, reverse=True)` gives float32 logits over the
    vocabulary, `vectors @ embeddings.T`: the same matrix at the decoder's input and output."""

    def call(self, inputs, reverse=False):
        if reverse:
            return ops.matmul(ops.cast(inputs, "float32"), ops.transpose(ops.cast(self.embeddings, "float32")))
        return super().call(inputs)

    def compute_output_spec(self, inputs, reverse=False):
        if reverse:
            return keras.KerasTensor((*inputs.shape[:-1], self.input_dim), dtype="float32")
        return super().compute_output_spec(inputs)


def positional_encoding(positions, units: int):
    """Sinusoidal encodings `(batch, length, units)` of integer positions `(batch, length)`."""
    frequencies = np.exp(-math.log(10000.0) * np.arange(0, units, 2) / units).astype("float32")
    angles = ops.expand_dims(ops.cast(positions, "float32"), -1) * frequencies
    return ops.concatenate([ops.sin(angles), ops.cos(angles)], axis=-1)


def positions_of(token_ids):
    """0, 1, 2, ... along each row: what the training graph encodes its tokens' places with."""
    return ops.cumsum(ops.ones_like(token_ids), axis=1) - 1


class Transformer(Architecture):
    def parameter_count(self, config: ModelConfig) -> int:
        d, ff = config.units, config.ff_units
        attention = 4 * d * d + 4 * d  # query, key and value projections and the output, with biases
        feed_forward = 2 * d * ff + ff + d
        norm = 2 * d
        encoder_layer = attention + feed_forward + 2 * norm
        decoder_layer = 2 * attention + feed_forward + 3 * norm
        embeddings = (config.source_vocab_size + config.target_vocab_size) * d
        output = 0 if config.tie_embeddings else (d + 1) * config.target_vocab_size
        return config.layers * (encoder_layer + decoder_layer) + embeddings + 2 * norm + output

    def make_layers(self, config: ModelConfig) -> dict[str, kl.Layer]:
        units, ff = config.units, config.ff_units
        made: dict[str, kl.Layer] = {
            "encoder_embedding": kl.Embedding(config.source_vocab_size, units, name="encoder_embedding"),
            "decoder_embedding": (ReversibleEmbedding if config.tie_embeddings else kl.Embedding)(
                config.target_vocab_size, units, name="decoder_embedding"
            ),
            "encoder_norm": kl.LayerNormalization(epsilon=1e-6, name="encoder_norm"),
            "decoder_norm": kl.LayerNormalization(epsilon=1e-6, name="decoder_norm"),
        }
        if not config.tie_embeddings:
            # Logits in float32 whatever the precision policy: the softmax over the vocabulary needs it.
            made["output_projection"] = kl.Dense(config.target_vocab_size, dtype="float32", name="output_projection")
        for side, count in (("encoder", config.layers), ("decoder", config.layers)):
            for i in range(1, count + 1):
                block = f"{side}_layer_{i}"
                made[f"{block}_self_attention_norm"] = kl.LayerNormalization(
                    epsilon=1e-6, name=f"{block}_self_attention_norm"
                )
                made[f"{block}_self_attention_qkv"] = kl.Dense(3 * units, name=f"{block}_self_attention_qkv")
                made[f"{block}_self_attention_output"] = kl.Dense(units, name=f"{block}_self_attention_output")
                if side == "decoder":
                    made[f"{block}_cross_attention_norm"] = kl.LayerNormalization(
                        epsilon=1e-6, name=f"{block}_cross_attention_norm"
                    )
                    made[f"{block}_cross_attention_query"] = kl.Dense(units, name=f"{block}_cross_attention_query")
                    made[f"{block}_cross_attention_kv"] = kl.Dense(2 * units, name=f"{block}_cross_attention_kv")
                    made[f"{block}_cross_attention_output"] = kl.Dense(units, name=f"{block}_cross_attention_output")
                made[f"{block}_ffn_norm"] = kl.LayerNormalization(epsilon=1e-6, name=f"{block}_ffn_norm")
                made[f"{block}_ffn_inner"] = kl.Dense(ff, activation="relu", name=f"{block}_ffn_inner")
                made[f"{block}_ffn_outer"] = kl.Dense(units, name=f"{block}_ffn_outer")
        return made

    # -- pieces -------------------------------------------------------------------------------

    @staticmethod
    def _split_heads(x, heads: int):
        """(batch, length, units) -> (batch, length, heads, units / heads)."""
        return kl.Reshape((-1, heads, x.shape[-1] // heads))(x)

    def _attend(self, config: ModelConfig, query, keys, values, bias):
        """Scaled dot-product attention of every head: (context, weights `(batch, heads, queries,
        keys)`); `bias` (None: none) is added to the scores."""
        heads = config.heads
        q, k, v = (self._split_heads(x, heads) for x in (query, keys, values))
        q = q * (1.0 / math.sqrt(config.units // heads))
        scores = ops.einsum("bqhd,bkhd->bhqk", q, k)
        if bias is not None:
            scores = scores + ops.cast(bias, q.dtype)
        weights = ops.softmax(scores, axis=-1)
        context = ops.einsum("bhqk,bkhd->bqhd", weights, v)
        return kl.Reshape((-1, config.units))(context), weights

    @staticmethod
    def _padding_bias(source_mask):
        """(batch, source length) booleans -> (batch, 1, 1, source length) score offsets."""
        return ops.expand_dims(ops.expand_dims(ops.where(source_mask, 0.0, MASKED), 1), 1)

    @staticmethod
    def _causal_bias(token_ids):
        """Each target position attends to itself and those before it: (batch, 1, length, length)."""
        positions = positions_of(token_ids)
        later = ops.greater(ops.expand_dims(positions, 1), ops.expand_dims(positions, 2))
        return ops.expand_dims(ops.where(later, MASKED, 0.0), 1)

    def _embed(self, made, side: str, config: ModelConfig, token_ids, positions, dropout: float):
        x = made[f"{side}_embedding"](token_ids) * math.sqrt(config.units)
        x = x + ops.cast(positional_encoding(positions, config.units), x.dtype)
        return kl.Dropout(dropout)(x) if dropout else x

    def _feed_forward(self, made, block: str, x, dropout: float):
        h = made[f"{block}_ffn_outer"](made[f"{block}_ffn_inner"](made[f"{block}_ffn_norm"](x)))
        return self._residual(x, h, dropout)

    def _residual(self, x, h, dropout: float):
        return x + (kl.Dropout(dropout)(h) if dropout else h)

    def encode(self, made, config: ModelConfig, source_ids, dropout: float):
        """(encoder output, source mask)."""
        source_mask = ops.not_equal(source_ids, 0)
        bias = self._padding_bias(source_mask)
        x = self._embed(made, "encoder", config, source_ids, positions_of(source_ids), dropout)
        for i in range(1, config.layers + 1):
            block = f"encoder_layer_{i}"
            x = self._self_attention(made, config, block, x, bias, dropout)
            x = self._feed_forward(made, block, x, dropout)
        return made["encoder_norm"](x), source_mask

    def _self_attention(self, made, config: ModelConfig, block: str, x, bias, dropout: float):
        q, k, v = ops.split(made[f"{block}_self_attention_qkv"](made[f"{block}_self_attention_norm"](x)), 3, axis=-1)
        context, _ = self._attend(config, q, k, v, bias)
        return self._residual(x, made[f"{block}_self_attention_output"](context), dropout)

    def _cross_attention(self, made, config: ModelConfig, block: str, y, keys, values, bias, dropout: float):
        """(the block's output, its attention weights over the source `(batch, heads, target, source)`)."""
        query = made[f"{block}_cross_attention_query"](made[f"{block}_cross_attention_norm"](y))
        context, weights = self._attend(config, query, keys, values, bias)
        return self._residual(y, made[f"{block}_cross_attention_output"](context), dropout), weights

    @staticmethod
    def _logits(made, y):
        """Float32 scores of the next token over the vocabulary, from the last decoder layer."""
        y = made["decoder_norm"](y)
        if "output_projection" in made:
            return made["output_projection"](y)
        return made["decoder_embedding"](y, reverse=True)

    # -- graphs -------------------------------------------------------------------------------

    def training_model(self, made, config: ModelConfig) -> keras.Model:
        dropout = config.dropout
        source_ids, decoder_ids = source_input(), decoder_input()
        memory, source_mask = self.encode(made, config, source_ids, dropout)
        source_bias, causal_bias = self._padding_bias(source_mask), self._causal_bias(decoder_ids)
        y = self._embed(made, "decoder", config, decoder_ids, positions_of(decoder_ids), dropout)
        for i in range(1, config.layers + 1):
            block = f"decoder_layer_{i}"
            y = self._self_attention(made, config, block, y, causal_bias, dropout)
            keys, values = ops.split(made[f"{block}_cross_attention_kv"](memory), 2, axis=-1)
            y, _ = self._cross_attention(made, config, block, y, keys, values, source_bias, dropout)
            y = self._feed_forward(made, block, y, dropout)
        return keras.Model([source_ids, decoder_ids], self._logits(made, y), name="transformer")

    def inference_models(self, made, config: ModelConfig) -> tuple[keras.Model, keras.Model]:
        source_ids = source_input()
        memory, source_mask = self.encode(made, config, source_ids, dropout=0.0)
        state = {"source_mask": source_mask}
        nothing_yet = ops.zeros_like(memory[:, :0, :])  # (batch, 0, units): no step decoded
        for i in range(1, config.layers + 1):
            block = f"decoder_layer_{i}"
            state[f"cross_keys_{i}"], state[f"cross_values_{i}"] = ops.split(
                made[f"{block}_cross_attention_kv"](memory), 2, axis=-1
            )
            state[f"self_keys_{i}"] = state[f"self_values_{i}"] = nothing_yet
        encoder = keras.Model(source_ids, state, name="encoder")

        inputs = step_inputs()
        state_in = {name: state_input_like(name, tensor) for name, tensor in state.items()}
        source_bias = self._padding_bias(state_in["source_mask"])
        y = self._embed(made, "decoder", config, inputs[PREVIOUS_TOKEN], inputs[STEP], dropout=0.0)
        cache = {}
        for i in range(1, config.layers + 1):
            block = f"decoder_layer_{i}"
            q, k, v = ops.split(
                made[f"{block}_self_attention_qkv"](made[f"{block}_self_attention_norm"](y)), 3, axis=-1
            )
            # Every cached position is at or before this one: no mask is needed.
            keys = cache[f"self_keys_{i}"] = ops.concatenate([state_in[f"self_keys_{i}"], k], axis=1)
            values = cache[f"self_values_{i}"] = ops.concatenate([state_in[f"self_values_{i}"], v], axis=1)
            context, _ = self._attend(config, q, keys, values, None)
            y = y + made[f"{block}_self_attention_output"](context)
            y, cross_weights = self._cross_attention(
                made, config, block, y, state_in[f"cross_keys_{i}"], state_in[f"cross_values_{i}"], source_bias, 0.0
            )
            y = self._feed_forward(made, block, y, 0.0)
        logits = self._logits(made, y)
        # The last layer's attention over the source, as CTranslate2 reports it (export.py).
        outputs = {LOG_PROBS: next_token_log_probs(logits), **cache, ATTENTION: attention_row(cross_weights)}
        decoder = keras.Model({**inputs, **state_in}, outputs, name="decoder")
        return encoder, decoder
