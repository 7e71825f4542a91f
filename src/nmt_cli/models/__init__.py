"""Encoder-decoder architectures, each written as plain Keras functional graphs.

Which architectures there are is `architectures.py`'s catalogue; this package builds them.
Importing it loads no Keras: an architecture's module is imported when a model is built or
loaded.
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING

from nmt_cli.architectures import ARCHITECTURE_NAMES, ARCHITECTURES
from nmt_cli.errors import UserError

if TYPE_CHECKING:
    from nmt_cli.config import ModelConfig
    from nmt_cli.models.base import Architecture, Seq2SeqModels


def architecture(name: str) -> Architecture:
    if name not in ARCHITECTURES:
        raise UserError(f"unknown --arch {name!r}; choose one of: {', '.join(ARCHITECTURE_NAMES)}")
    module, cls = ARCHITECTURES[name].builder.split(":")
    return getattr(import_module(f"{__name__}.{module}"), cls)()


def build_models(config: ModelConfig) -> Seq2SeqModels:
    """Fresh, untrained training, encoder and decoder models."""
    config.validate()
    arch = architecture(config.arch)
    check_fits_in_memory(arch.parameter_count(config), copies=1, what="to build")
    return arch.build(config)


def check_fits_in_memory(parameters: int, copies: int, what: str) -> None:
    """Refuse, with the figures, a model whose `copies` float32 copies of its weights exceed the
    memory free now (training holds four: weights, gradients and Adam's two moments)."""
    needed = parameters * 4 * copies
    free = _free_memory()
    if free is not None and needed > free:
        raise UserError(
            f"a model of {parameters:,} parameters needs about {needed / 1e9:.1f} GB {what}, more than the "
            f"{free / 1e9:.1f} GB free here: choose a smaller --units, --layers or vocabulary"
        )


def _free_memory() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def load_keras_model(path: Path, compile: bool = False):
    """A saved model, loaded with `safe_mode` (no pickled code runs). With `compile`, its loss,
    metrics and optimizer too: the caller has imported the modules that register them (training)."""
    import keras

    from nmt_cli.models import transformer  # noqa: F401  registers ReversibleEmbedding

    if not Path(path).is_file():
        raise UserError(f"{path} is missing; retrain, or choose another --checkpoint")
    try:
        return keras.models.load_model(path, safe_mode=True, compile=compile)
    except Exception:  # noqa: BLE001 - Keras raises many kinds for a damaged archive, some misleading
        raise UserError(f"cannot load {path}: it is damaged, or not a model saved by Keras") from None


def load_checkpoint(path: Path, config: ModelConfig, compile: bool = False) -> Seq2SeqModels:
    """A training checkpoint with its encoder and decoder inference models.

    Its weights must be those of the model `config` describes (a checkpoint copied from, or
    left by, a model of another size is refused, naming the first layer that differs).
    """
    loaded = load_keras_model(path, compile=compile)
    arch = architecture(config.arch)
    expected = {weight.path: tuple(weight.shape) for weight in arch.build(config).training.weights}
    found = {weight.path: tuple(weight.shape) for weight in loaded.weights}
    for name, shape in expected.items():
        if found.get(name) != shape:
            has = f"has {name} of shape {found[name]}" if name in found else f"has no {name}"
            raise UserError(
                f"{path} does not fit config.json: it {has}, where config.json's model has {shape}; "
                "it was saved by another model: move it away, or retrain with --restart"
            )
    extra = sorted(set(found) - set(expected))
    if extra:
        raise UserError(
            f"{path} does not fit config.json: it has {extra[0]}, which config.json's model has not; "
            "it was saved by another model: move it away, or retrain with --restart"
        )
    return arch.from_training_model(loaded, config)
