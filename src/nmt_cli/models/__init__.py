"""Encoder-decoder architectures, each written as plain Keras functional graphs.

Every architecture module makes its layers once, then wires them into three graphs: the
training model (teacher forcing), and the encoder and decoder inference models that decode one
token at a time. The three share the very same layer objects, so they share weights.
"""

from __future__ import annotations

from types import ModuleType

import keras

from nmt_cli.config import ModelConfig
from nmt_cli.models import attention, seq2seq
from nmt_cli.models.common import Seq2SeqModels

ARCHITECTURES: dict[str, ModuleType] = {"seq2seq": seq2seq, "attention": attention}


def build_models(config: ModelConfig) -> Seq2SeqModels:
    """Fresh, untrained training, encoder and decoder models."""
    config.validate()
    arch = ARCHITECTURES[config.arch]
    layers = arch.make_layers(config)
    return Seq2SeqModels(arch.training_model(layers, config), *arch.inference_models(layers, config))


def from_training_model(model: keras.Model, config: ModelConfig) -> Seq2SeqModels:
    """The inference models of a trained (for example, loaded) training model, sharing its layers."""
    layers = {layer.name: layer for layer in model.layers}
    return Seq2SeqModels(model, *ARCHITECTURES[config.arch].inference_models(layers, config))


__all__ = ["ARCHITECTURES", "Seq2SeqModels", "build_models", "from_training_model"]
