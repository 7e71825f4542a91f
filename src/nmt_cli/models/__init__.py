"""Encoder-decoder architectures, each written as plain Keras functional graphs.

The registry below is the only list of `--arch` names. Importing this package loads no Keras:
the names serve `nmt --help` and option checks; an architecture's module is imported when a
model is built or loaded.
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING

from nmt_cli.errors import UserError

if TYPE_CHECKING:
    from nmt_cli.config import ModelConfig
    from nmt_cli.models.base import Architecture, Seq2SeqModels

# --arch name -> "module:class" in this package
ARCHITECTURES = {
    "seq2seq": "rnn:Seq2Seq",
    "attention": "rnn:Attention",
    "transformer": "transformer:Transformer",
}
ARCHITECTURE_NAMES = tuple(ARCHITECTURES)


def architecture(name: str) -> Architecture:
    if name not in ARCHITECTURES:
        raise UserError(f"unknown --arch {name!r}; choose one of: {', '.join(ARCHITECTURE_NAMES)}")
    module, cls = ARCHITECTURES[name].split(":")
    return getattr(import_module(f"{__name__}.{module}"), cls)()


def build_models(config: ModelConfig) -> Seq2SeqModels:
    """Fresh, untrained training, encoder and decoder models."""
    config.validate()
    return architecture(config.arch).build(config)


def load_keras_model(path: Path, compile: bool = True):
    """A saved model, loaded with `safe_mode` (no pickled code runs)."""
    import keras

    from nmt_cli import objectives  # noqa: F401  registers the loss and metrics checkpoints are compiled with

    if not Path(path).is_file():
        raise UserError(f"{path} is missing; retrain, or choose another --checkpoint")
    try:
        return keras.models.load_model(path, safe_mode=True, compile=compile)
    except Exception as error:  # noqa: BLE001 - Keras raises many kinds for a damaged archive
        problem = " ".join(str(error).split())[:200]
        raise UserError(
            f"cannot load {path} ({problem}); it may be damaged: choose another --checkpoint or retrain"
        ) from None


def load_checkpoint(path: Path, config: ModelConfig, compile: bool = True) -> Seq2SeqModels:
    """A training checkpoint with its encoder and decoder inference models."""
    return architecture(config.arch).from_training_model(load_keras_model(path, compile=compile), config)
