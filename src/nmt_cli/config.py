"""Model and training options: defaults, a TOML/YAML options file, and the saved config.json."""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from nmt_cli import __version__
from nmt_cli.errors import UserError

ARCHS = ("seq2seq", "attention")
ATTENTION_STYLES = ("luong", "bahdanau")


_TYPES = {"int": int, "float": (int, float), "bool": bool, "str": str}


def _check_types(options) -> None:
    """Values read from files must have their field's type (bool is not an int here)."""
    for item in fields(options):
        value, expected = getattr(options, item.name), _TYPES[item.type]
        if not isinstance(value, expected) or (isinstance(value, bool) and item.type != "bool"):
            raise UserError(f"{item.name.replace('_', '-')} must be {item.type}, not {value!r}")


@dataclass
class ModelConfig:
    arch: str = "attention"
    units: int = 256
    embedding_dim: int = 256
    layers: int = 1
    dropout: float = 0.2
    bidirectional: bool = False
    attention: str = "luong"
    source_vocab_size: int = 0
    target_vocab_size: int = 0

    def validate(self) -> None:
        _check_types(self)
        if self.source_vocab_size < 1 or self.target_vocab_size < 1:
            raise UserError("vocabulary sizes must be at least 1: take them from a prepared --data-dir")
        if self.arch not in ARCHS:
            raise UserError(f"unknown --arch {self.arch!r}; choose one of: {', '.join(ARCHS)}")
        if self.attention not in ATTENTION_STYLES:
            raise UserError(f"unknown --attention {self.attention!r}; choose one of: {', '.join(ATTENTION_STYLES)}")
        if self.bidirectional and self.arch != "attention":
            raise UserError("--bidirectional needs --arch attention")
        if self.bidirectional and self.units % 2:
            raise UserError("--bidirectional splits --units between two directions: give an even number")
        for name in ("units", "embedding_dim", "layers"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError("--dropout must be in [0, 1)")


@dataclass
class TrainingConfig:
    epochs: int = 20
    save_every: int = 5
    batch_size: int = 64
    learning_rate: float = 1e-3
    clipnorm: float = 1.0
    label_smoothing: float = 0.1
    seed: int = 1234
    jit_compile: bool = False  # XLA; Keras turns it off under op determinism, so it costs reproducibility

    def validate(self) -> None:
        _check_types(self)
        if self.epochs < 1 or self.save_every < 1 or self.batch_size < 1:
            raise UserError("--epochs, --save-every and --batch-size must be at least 1")
        if self.learning_rate <= 0:
            raise UserError("--learning-rate must be positive")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise UserError("--label-smoothing must be in [0, 1)")
        if self.clipnorm < 0:
            raise UserError("--clipnorm must be 0 (no clipping) or positive")
        if not 0 <= self.seed < 2**32:
            raise UserError("--seed must be between 0 and 4294967295")


@dataclass
class RunConfig:
    """Everything needed to rebuild, resume or reproduce a model: saved as config.json."""

    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    data_dir: str = "data/prepared"
    data_manifest_sha256: str = ""
    tool_version: str = __version__

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "RunConfig":
        raw = json.loads(text)
        return cls(
            model=ModelConfig(**raw["model"]),
            training=TrainingConfig(**raw["training"]),
            data_dir=raw["data_dir"],
            data_manifest_sha256=raw["data_manifest_sha256"],
            tool_version=raw["tool_version"],
        )


def load_config(path: Path) -> RunConfig:
    try:
        return RunConfig.from_json(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path} not found: is this a model directory made by `nmt train`?") from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UserError(f"cannot read {path}: {error}") from None


OPTION_NAMES = {f.name for cls in (ModelConfig, TrainingConfig) for f in fields(cls)} | {"data_dir"}


def read_options_file(path: Path) -> dict[str, Any]:
    """Options from a TOML or YAML file: option names as keys, flat or under [model]/[training]."""
    path = Path(path)
    if path.suffix not in (".toml", ".yaml", ".yml"):
        raise UserError(f"config file {path} must end in .toml, .yaml or .yml")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise UserError(f"cannot read config file {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise UserError(f"config file {path} is not UTF-8 text") from None
    import yaml

    try:
        raw = tomllib.loads(text) if path.suffix == ".toml" else (yaml.safe_load(text) or {})
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as error:
        problem = " ".join(str(error).split())
        raise UserError(f"config file {path} is not valid: {problem}") from None
    if not isinstance(raw, dict):
        raise UserError(f"config file {path} must hold a mapping of option names to values")
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if key in ("model", "training") and isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    options = {key.replace("-", "_"): value for key, value in flat.items()}
    unknown = sorted(set(options) - OPTION_NAMES)
    if unknown:
        raise UserError(f"config file {path}: unknown option {unknown[0]!r}")
    if not isinstance(options.get("data_dir", ""), str):
        raise UserError(f"config file {path}: data_dir must be a path in quotes")
    return options


def split_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Separate a flat option mapping into ModelConfig and TrainingConfig keyword arguments."""
    model_keys = {f.name for f in fields(ModelConfig)}
    training_keys = {f.name for f in fields(TrainingConfig)}
    return (
        {k: v for k, v in options.items() if k in model_keys},
        {k: v for k, v in options.items() if k in training_keys},
    )
