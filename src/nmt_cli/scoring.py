"""How likely the model finds a given translation (forced decoding): what filtering, reranking
and back-translation ask of a model. Each target is fed to the decoder token by token, exactly
as search feeds its own choices, so a hypothesis search found scores as search scored it."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from itertools import islice

from nmt_cli.tokenizer import normalize
from nmt_cli.translation import CHUNK_LINES, Translator, longest_part


@dataclass(frozen=True)
class Score:
    source: str
    target: str
    log_prob: float | None  # the target's total log-probability, `<eos>` included; None: not scored
    tokens: int  # target pieces, `<eos>` included

    @property
    def per_token(self) -> float | None:
        """The mean log-probability: what search reports as a hypothesis' score."""
        return None if self.log_prob is None else self.log_prob / self.tokens

    @property
    def perplexity(self) -> float | None:
        return None if self.log_prob is None else math.exp(-self.log_prob / self.tokens)

    def to_dict(self) -> dict:
        return {**asdict(self), "per_token": self.per_token, "perplexity": self.perplexity}


def score_pairs(
    translator: Translator,
    pairs: Iterable[tuple[str, str]],
    normalize_input: bool = True,
    on_skipped: Callable[[str, str], None] | None = None,
) -> Iterator[Score]:
    """Scores of (source, target) text pairs, in order, `CHUNK_LINES` at a time.

    Both sides are brought to the training corpus' form (unless `normalize_input` is off). A pair
    with an empty source, or a side longer than a line `nmt translate` would split, is not scored
    (`on_skipped(source, why)` hears of it): the work of any one pair stays bounded.
    """
    limit = longest_part(translator.trained_max_length)
    pairs = iter(pairs)
    while chunk := list(islice(pairs, CHUNK_LINES)):
        if normalize_input:
            texts = [(normalize(s, translator.source_style), normalize(t, translator.target_style)) for s, t in chunk]
        else:
            texts = [(s.strip(), t.strip()) for s, t in chunk]
        sources = [list(ids) for ids in translator.source_tokenizer.encode([s for s, _ in texts])]
        targets = [list(ids) for ids in translator.target_tokenizer.encode([t for _, t in texts])]
        scored = [i for i in range(len(chunk)) if sources[i] and max(len(sources[i]), len(targets[i])) <= limit]
        log_probs = translator.engine.score_all([sources[i] for i in scored], [targets[i] for i in scored])
        total = dict(zip(scored, (sum(values) for values in log_probs)))
        for i, (source, target) in enumerate(chunk):
            if i not in total and on_skipped is not None:
                why = "its source is empty" if not sources[i] else f"a side has more than {limit} pieces"
                on_skipped(source, why)
            yield Score(source, target, total.get(i), len(targets[i]) + 1)
