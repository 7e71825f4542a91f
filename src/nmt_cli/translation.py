"""Text in, text out: normalise, tokenize, search (with either engine), detokenize."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from nmt_cli.engines import Engine, NBest, open_engine
from nmt_cli.tokenizer import EOS_ID, normalize, output_text

if TYPE_CHECKING:
    from nmt_cli.trained import TrainedModel
    from nmt_cli.workspace import Workspace

CHUNK_LINES = 512  # lines read, translated and written at a time: memory stays constant
LONG_INPUT_FACTOR, LONG_INPUT_FLOOR = 4, 64  # a line is split past max(4 x the longest training sentence, 64) pieces
# Parts of one line that are translated; the rest is left out (with a warning), so that the work
# of any line is bounded and one hostile line cannot hold a batch job or a server for long.
MAX_PARTS = 16
SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+|(?<=[。！？])")


@dataclass
class Candidate:
    text: str
    score: float


@dataclass
class Attention:
    """Where the best translation of a line looked: `weights[i][j]` is how much target piece i drew
    on source piece j (each row sums to 1), as the tutorial plots it.

    A line translated in parts has its parts' matrices one after the other along the diagonal,
    each part's target ending in its own `</s>`; the weights between parts are 0.
    """

    source: list[str]  # the source SentencePiece pieces of the line
    target: list[str]  # the target pieces of the best translation, then "</s>"
    weights: list[list[float]]

    def to_json(self) -> dict:
        """{"source": [...], "target": [...], "weights": [[...]]}, weights to 4 decimals: what
        `nmt translate --json --attention` and `nmt serve` answer."""
        weights = [[round(weight, 4) for weight in row] for row in self.weights]
        return {"source": self.source, "target": self.target, "weights": weights}


@dataclass
class Translation:
    source: str
    candidates: list[Candidate]  # best first; empty for an empty input line
    attention: Attention | None = None  # the best candidate's, when asked for (none for an empty line)

    @property
    def text(self) -> str:
        return self.candidates[0].text if self.candidates else ""


def longest_part(trained_max_length: int) -> int:
    """Lines longer than this many pieces are translated in parts (see `Translator.segments`)."""
    return max(LONG_INPUT_FACTOR * trained_max_length, LONG_INPUT_FLOOR)


class Translator:
    """Text in, text out with one opened model directory and one engine."""

    def __init__(self, model: TrainedModel, engine: Engine):
        self.model, self.engine = model, engine
        manifest = model.manifest
        self.source_lang, self.target_lang = manifest.source_lang, manifest.target_lang
        self.source_style, self.target_style = manifest.source_style, manifest.target_style
        self.trained_max_length = manifest.longest_training_source()
        self.source_tokenizer, self.target_tokenizer = model.source_tokenizer, model.target_tokenizer

    @classmethod
    def open(
        cls,
        model_dir: Path,
        checkpoint: str = "best",
        engine: str = "auto",
        threads: int = 0,
        warn: Callable[[str], None] | None = None,
    ) -> Translator:
        """Open a model directory and load its engine (see `trained.TrainedModel.open`)."""
        from nmt_cli.trained import TrainedModel

        model = TrainedModel.open(model_dir, checkpoint, engine)
        return cls(model, open_engine(model, threads, warn))

    @property
    def workspace(self) -> Workspace:
        return self.model.workspace

    @property
    def checkpoint(self) -> Path:
        return self.model.checkpoint

    @property
    def engine_label(self) -> str:
        """keras, or ctranslate2 and the quantization of its export: "ctranslate2 int8"."""
        if self.engine.name == "ctranslate2" and self.model.export is not None:
            return f"ctranslate2 {self.model.export.quantization}"
        return self.engine.name

    def use_checkpoint(self, checkpoint: str) -> None:
        """Translate with the weights of another checkpoint of the same model from now on."""
        model = self.model.with_checkpoint(checkpoint)
        self.engine.load_checkpoint(model.checkpoint)
        self.model = model

    def translate_ids(
        self,
        sources: list[list[int]],
        beam_size: int,
        n_best: int = 1,
        on_progress: Callable[[int], None] | None = None,
        attention: bool = False,
    ) -> list[NBest]:
        """Id sequences in, n-best (ids, score[, attention]) lists out, in order (see `engines.Engine`)."""
        return self.engine.search_all(sources, beam_size, n_best, on_progress, attention)

    def output_texts(self, hypotheses: list[list[int]], tokenized: bool = False) -> list[str]:
        """Target ids to text (see `tokenizer.output_text`)."""
        return [output_text(text, self.target_style, tokenized) for text in self.target_tokenizer.decode(hypotheses)]

    @property
    def longest_segment(self) -> int:
        return longest_part(self.trained_max_length)

    def segments(self, text: str) -> list[list[int]]:
        """The source ids of a (prepared) line, in parts of at most `longest_segment` pieces.

        A line far longer than any training sentence would cost time that grows faster than its
        length and translate badly: it is split at sentence ends (. ! ? 。 ！ ？) into parts as
        long as allowed, and a sentence longer than that is cut every `longest_segment` pieces.
        """
        ids = self.source_tokenizer.encode([text])[0]
        limit = self.longest_segment
        if len(ids) <= limit:
            return [list(ids)]
        parts: list[list[int]] = [[]]
        for sentence in SENTENCE_END.split(text):
            sentence_ids = list(self.source_tokenizer.encode([sentence])[0])
            for start in range(0, len(sentence_ids), limit):
                piece = sentence_ids[start : start + limit]
                if len(parts[-1]) + len(piece) > limit:
                    parts.append([])
                parts[-1] += piece
        return [part for part in parts if part]

    def translate(
        self,
        lines: Iterable[str],
        beam_size: int = 5,
        n_best: int = 1,
        normalize_input: bool = True,
        tokenized_output: bool = False,
        on_long_input=None,
        chunk_lines: int | None = None,
        attention: bool = False,
    ) -> Iterator[Translation]:
        """Translations of `lines`, in order, reading and yielding `chunk_lines` (default CHUNK_LINES) at a time.

        `on_long_input(line, pieces, longest trained, parts)` hears of every line longer than any
        training sentence, and in how many parts it is split; only the first `MAX_PARTS` are
        translated. A line translated in parts gets one candidate: the parts' best translations
        joined, scored by their mean. With `attention`, each translation carries its best
        candidate's `Attention`.
        """
        if attention:
            self.model.check_attention()
        lines = iter(lines)
        while chunk := list(islice(lines, chunk_lines or CHUNK_LINES)):
            prepared = [normalize(line, self.source_style) if normalize_input else line.strip() for line in chunk]
            parts = [self.segments(text) for text in prepared]
            if on_long_input is not None:
                for line, segments in zip(chunk, parts):
                    pieces = sum(len(segment) for segment in segments)
                    if pieces > self.trained_max_length:
                        on_long_input(line, pieces, self.trained_max_length, len(segments))
            parts = [segments[:MAX_PARTS] for segments in parts]
            # For n-best lists every finished hypothesis is fetched: several can read the same once
            # detokenised (different pieces, same text), and only distinct texts are kept.
            searched = iter(
                self.translate_ids(
                    [s for line in parts for s in line], beam_size, beam_size if n_best > 1 else 1, attention=attention
                )
            )
            for line, segments in zip(chunk, parts):
                found = [next(searched) for _ in segments]
                translation = Translation(line, self._candidates(found, n_best, tokenized_output))
                if attention and translation.candidates:
                    translation.attention = self._attention(segments, [hypotheses[0] for hypotheses in found])
                yield translation

    def _candidates(self, found: list[NBest], n_best: int, tokenized: bool) -> list[Candidate]:
        if len(found) > 1:
            best = [hypotheses[0] for hypotheses in found if hypotheses]
            text = " ".join(self.output_texts([ids for ids, *_ in best], tokenized=True))
            score = sum(score for _, score, *_ in best) / max(len(best), 1)
            return [Candidate(output_text(text, self.target_style, tokenized), score)]
        hypotheses = found[0]
        texts = self.output_texts([ids for ids, *_ in hypotheses], tokenized)
        distinct: dict[str, float] = {}
        for text, (_, score, *_) in zip(texts, hypotheses):
            distinct.setdefault(text, score)  # best first, so the first is the best score
        return [Candidate(text, score) for text, score in distinct.items()][:n_best]

    def _attention(self, segments: list[list[int]], best: list[tuple]) -> Attention:
        """The `Attention` of a line's best translation, from the (ids, score, weights) of each part's best."""
        source = [self.source_tokenizer.piece(t) for segment in segments for t in segment]
        target = [self.target_tokenizer.piece(t) for ids, *_ in best for t in [*ids, EOS_ID]]
        weights = np.zeros((len(target), len(source)), np.float32)
        row = column = 0
        for segment, (_, _, part) in zip(segments, best):
            weights[row : row + len(part), column : column + len(segment)] = part
            row, column = row + len(part), column + len(segment)
        return Attention(source, target, weights.tolist())
