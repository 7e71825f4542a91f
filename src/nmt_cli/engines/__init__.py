"""Inference engines: one small interface for "source ids in, n-best ids and scores (and attention) out".

    keras        the trained Keras encoder and decoder step models, searched by `decoding.py`
                 (TensorFlow); any architecture, any checkpoint
    ctranslate2  a CTranslate2 export of a Transformer checkpoint (`export.py`): no TensorFlow,
                 int8 or float32 weights, batched beam search in C++

`translation.py` and `evaluation.py` see only `Engine`. Both engines keep the same search:
`LengthRule` steps at most (`<eos>` forced at the last), beam search with finished hypotheses
leaving the beam, scores that are log-probabilities over length**alpha (length counting `<eos>`;
alpha is the length penalty, 1 by default). Asked for attention, both give the last decoder
layer's attention over the source, its heads averaged (the LSTM with attention: its one).

Importing this package loads neither TensorFlow nor CTranslate2: `open_engine` imports the one
it needs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from nmt_cli.errors import UserError

if TYPE_CHECKING:
    from pathlib import Path

    from nmt_cli.trained import TrainedModel

ENGINES = ("auto", "ctranslate2", "keras")

# (target ids without <bos>/<eos>, score), best first; with attention asked for, (ids, score,
# weights): weights a float32 array (len(ids) + 1, source length), the row of each target id and
# of the <eos> after them, each row summing to 1.
NBest = list[tuple]


@dataclass(frozen=True)
class LengthRule:
    """At most `ratio * source length + extra` target steps; `<eos>` is forced at the last one."""

    ratio: float = 2.0
    extra: int = 10

    def steps(self, source_length: int) -> int:
        return int(source_length * self.ratio) + self.extra


LENGTH_RULE = LengthRule()  # nmt's rule: 2n + 10


@dataclass(frozen=True)
class Sampling:
    """Draw each token at random instead of taking the most likely: among the `topk` most likely
    (0: all), within the smallest set whose probability reaches `topp`, from the distribution
    sharpened (`temperature` below 1) or flattened (above 1); `seed` makes the draws repeatable.
    One draw per line: it replaces beam search."""

    topk: int = 0
    topp: float = 1.0
    temperature: float = 1.0
    seed: int = 0


class Engine(Protocol):
    name: str  # "keras" or "ctranslate2"

    def search_all(
        self,
        sources: list[list[int]],
        beam_size: int,
        n_best: int = 1,
        on_progress: Callable[[int], None] | None = None,
        attention: bool = False,
    ) -> list[NBest]:
        """Id sequences in, n-best lists out, in order; an empty sequence gets an empty list.
        `on_progress(sentences)` hears after each batch how many it translated. With `attention`,
        each hypothesis comes with its attention weights (see `NBest`)."""

    def score_all(self, sources: list[list[int]], targets: list[list[int]]) -> list[list[float]]:
        """Forced decoding: for each (source, target) pair, the log-probability of each target
        token and of the `<eos>` after them, as search would have scored them."""

    def load_checkpoint(self, checkpoint: Path) -> None:
        """Search with the weights of another checkpoint of the same model from now on."""


def open_engine(
    model: TrainedModel,
    threads: int = 0,
    warn: Callable[[str], None] | None = None,
    length_penalty: float = 1.0,
    sampling: Sampling | None = None,
) -> Engine:
    """The engine `model.engine_name` names, ready to search with that length penalty (or to
    sample, with `sampling`).

    A CTranslate2 export chosen by `auto` that does not load (damaged) is left for the Keras
    engine, with a warning through `warn`; asked for by name, it is an error.
    """
    if model.engine_name == "ctranslate2":
        from nmt_cli.engines.ctranslate2 import CTranslate2Engine

        try:
            return CTranslate2Engine(model.workspace.export, threads, length_penalty=length_penalty, sampling=sampling)
        except UserError as damaged:
            if model.requested_engine != "auto":
                raise
            if warn is not None:
                warn(f"warning: {damaged}; translating with the Keras engine instead")
    from nmt_cli.engines.keras import KerasEngine

    return KerasEngine(model, threads, length_penalty, sampling)
