"""What each `--arch` is, without Keras: the catalogue that options, help, precision, export
and `models/` all read. It imports nothing of this package.

Adding an architecture is an entry here, its module in `models/`, and its tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# How the learning rate changes with the step count (schedules.py): `constant` after warm-up, or
# `inverse_sqrt`, the Transformer's decay.
SCHEDULES = ("constant", "inverse_sqrt")


@dataclass(frozen=True)
class ArchitectureInfo:
    name: str
    builder: str  # "module:Class" in nmt_cli.models: the class that builds it with Keras
    recurrent: bool  # LSTMs: CTranslate2 has no LSTM decoder, and they gain nothing from bfloat16 on a CPU
    attends: bool  # its decoder attends over the source, so a translation can show where (--attention)
    own_options: frozenset[str] = field(default_factory=frozenset)  # options that only some architectures take
    defaults: dict[str, Any] = field(default_factory=dict)  # where option defaults differ by architecture

    @property
    def exportable(self) -> bool:
        """Whether CTranslate2 can run it (`nmt export`)."""
        return not self.recurrent


_RNN_DEFAULTS = {
    "layers": 1,
    "dropout": 0.2,
    "batch_tokens": 0,
    "learning_rate": 1e-3,
    "schedule": "constant",
    "warmup": 0,
}
ARCHITECTURES = {
    info.name: info
    for info in (
        ArchitectureInfo(
            "seq2seq",
            "rnn:Seq2Seq",
            recurrent=True,
            attends=False,
            own_options=frozenset({"embedding_dim"}),
            defaults=_RNN_DEFAULTS,
        ),
        ArchitectureInfo(
            "attention",
            "rnn:Attention",
            recurrent=True,
            attends=True,
            own_options=frozenset({"embedding_dim", "bidirectional", "attention"}),
            defaults=_RNN_DEFAULTS,
        ),
        ArchitectureInfo(
            "transformer",
            "transformer:Transformer",
            recurrent=False,
            attends=True,
            own_options=frozenset({"heads", "ff_units", "tie_embeddings"}),
            defaults={
                "layers": 3,
                "dropout": 0.1,
                "batch_tokens": 4000,
                "learning_rate": 1e-3,
                "schedule": "inverse_sqrt",
                "warmup": 800,
            },
        ),
    )
}
ARCHITECTURE_NAMES = tuple(ARCHITECTURES)
EXPORTABLE = tuple(name for name, info in ARCHITECTURES.items() if info.exportable)


def taking(option: str) -> tuple[str, ...]:
    """The architectures an option of only some of them applies to."""
    return tuple(name for name, info in ARCHITECTURES.items() if option in info.own_options)


def defaults_of(option: str) -> dict[str, Any]:
    """Each architecture's default of an option whose default differs by architecture."""
    return {name: info.defaults[option] for name, info in ARCHITECTURES.items()}
