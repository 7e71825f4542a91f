"""What an architecture provides, and the step contract its inference models keep.

An architecture makes its layers once (`make_layers`), then wires the same layer objects into
three Keras functional graphs, so the three share every weight:

* the training model: `[source_ids, decoder_input_ids] -> next-token logits` (teacher forcing);
* the encoder inference model: `source_ids -> {name: tensor}`, the *state* decoding starts from;
* the decoder inference model, one step:
  `{"previous_token", "step", **state} -> {"log_probs", **new cache}`, and `"attention"` where
  the architecture attends over the source.

The state holds two kinds of tensors, told apart by the decoder's outputs alone:

* *cache*: what the decoder updates every step (LSTM states, a Transformer's keys and values),
  returned under the same names it came in with;
* *memory*: what stays as the encoder made it (the encoder outputs that attention reads,
  the source mask).

`previous_token` is `(batch, 1)` int32 (`<bos>` first), `step` is `(batch, 1)` int32 (0 first),
and `log_probs` is `(batch, target vocabulary)`. `attention`, where there is one, is `(batch,
source length)` float32: how much this step's prediction drew on each source position (a row of
the tutorial's attention plot; padding gets 0). Every state tensor has the batch on its first
axis and its features on its last; the other axes may change from step to step (a cache that
grows by one position per step). That is all decoding needs to know: search (`decoding.py`)
repeats the state for each beam and reorders every cache tensor by beam parent with one
`tf.nest.map_structure`, whatever the architecture.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING

import keras
from keras import layers as kl
from keras import ops

if TYPE_CHECKING:
    from nmt_cli.config import ModelConfig

PREVIOUS_TOKEN, STEP, LOG_PROBS, ATTENTION = "previous_token", "step", "log_probs", "attention"


@dataclass
class Seq2SeqModels:
    training: keras.Model  # [source_ids, decoder_input_ids] -> next-token logits
    encoder: keras.Model  # source_ids -> {name: state tensor}
    decoder: keras.Model  # one step: {previous_token, step, **state} -> {log_probs, **new cache, [attention]}


class Architecture(abc.ABC):
    """One architecture: its layers, and the three graphs built from them."""

    @abc.abstractmethod
    def parameter_count(self, config: ModelConfig) -> int:
        """How many weights `make_layers` would make: known before any memory is taken."""

    @abc.abstractmethod
    def make_layers(self, config: ModelConfig) -> dict[str, kl.Layer]:
        """Every layer with weights, by name: the names are the saved layers' names."""

    @abc.abstractmethod
    def training_model(self, made: dict[str, kl.Layer], config: ModelConfig) -> keras.Model:
        """The teacher-forcing graph."""

    @abc.abstractmethod
    def inference_models(self, made: dict[str, kl.Layer], config: ModelConfig) -> tuple[keras.Model, keras.Model]:
        """The encoder and one-step decoder graphs of the step contract."""

    def build(self, config: ModelConfig) -> Seq2SeqModels:
        made = self.make_layers(config)
        return Seq2SeqModels(self.training_model(made, config), *self.inference_models(made, config))

    def from_training_model(self, model: keras.Model, config: ModelConfig) -> Seq2SeqModels:
        """The inference models of a trained (for example, loaded) training model, sharing its layers."""
        made = {layer.name: layer for layer in model.layers}
        return Seq2SeqModels(model, *self.inference_models(made, config))


def source_input() -> keras.KerasTensor:
    return keras.Input(shape=(None,), dtype="int32", name="source_ids")


def decoder_input() -> keras.KerasTensor:
    return keras.Input(shape=(None,), dtype="int32", name="decoder_input_ids")


def step_inputs() -> dict[str, keras.KerasTensor]:
    """The two inputs every one-step decoder takes besides the state."""
    return {
        PREVIOUS_TOKEN: keras.Input(shape=(1,), dtype="int32", name=PREVIOUS_TOKEN),
        STEP: keras.Input(shape=(1,), dtype="int32", name=STEP),
    }


def state_input_like(name: str, tensor: keras.KerasTensor) -> keras.KerasTensor:
    """A decoder input for the state tensor `tensor` that the encoder (or a step) makes."""
    return keras.Input(shape=tensor.shape[1:], dtype=tensor.dtype, name=name)


def next_token_log_probs(logits) -> keras.KerasTensor:
    """One step's logits `(batch, 1, vocab)` as float32 log-probabilities `(batch, vocab)`, whatever
    the precision policy: search adds them up over many steps."""
    vocab = logits.shape[-1]
    log_probs = kl.Activation("log_softmax", dtype="float32", name="next_token_log_softmax")(logits)
    return kl.Reshape((vocab,), dtype="float32", name=LOG_PROBS)(log_probs)


def attention_row(weights) -> keras.KerasTensor:
    """One step's attention weights `(batch, [heads,] 1, source length)` as the float32 `attention`
    output `(batch, source length)`, heads averaged."""
    return ops.cast(ops.mean(weights, axis=tuple(range(1, len(weights.shape) - 1))), "float32")
