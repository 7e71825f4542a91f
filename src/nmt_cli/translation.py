"""Text in, text out: normalise, tokenize, search, detokenize, with a trained model directory."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from nmt_cli.config import RunConfig, load_config
from nmt_cli.decoding import Searcher
from nmt_cli.prepare import read_manifest
from nmt_cli.tokenizer import PAD_ID, Tokenizer, detokenize, normalize
from nmt_cli.workspace import Workspace, load_checkpoint, load_keras_model

CHUNK_LINES = 512  # lines read, translated and written at a time: memory stays constant
BATCH_SENTENCES = 64


@dataclass
class Candidate:
    text: str
    score: float


@dataclass
class Translation:
    source: str
    candidates: list[Candidate]  # best first; empty for an empty input line

    @property
    def text(self) -> str:
        return self.candidates[0].text if self.candidates else ""


class Translator:
    def __init__(self, model_dir: Path, checkpoint: str = "best"):
        self.workspace = Workspace(model_dir)
        self.checkpoint = self.workspace.resolve_checkpoint(checkpoint)
        self.config: RunConfig = load_config(self.workspace.config)
        manifest = read_manifest(self.workspace.data_manifest)
        self.source_lang, self.target_lang = manifest["languages"]["source"], manifest["languages"]["target"]
        self.source_style = manifest["styles"][self.source_lang]
        self.target_style = manifest["styles"][self.target_lang]
        self.trained_max_length = manifest["token_lengths"]["train"][self.source_lang]["max"]
        self.source_tokenizer = Tokenizer.load(self.workspace.tokenizer(self.source_lang))
        self.target_tokenizer = Tokenizer.load(self.workspace.tokenizer(self.target_lang))
        if self.checkpoint == self.workspace.best and self.workspace.encoder.exists() and self.workspace.decoder.exists():
            # The saved inference models are best.keras' own: loading them skips the training graph.
            encoder, decoder = load_keras_model(self.workspace.encoder), load_keras_model(self.workspace.decoder)
        else:
            models = load_checkpoint(self.checkpoint, self.config.model)
            encoder, decoder = models.encoder, models.decoder
        self.searcher = Searcher(encoder, decoder, layers=self.config.model.layers)

    def translate_ids(self, sources: list[list[int]], beam_size: int, n_best: int = 1) -> list[list[tuple[list[int], float]]]:
        """Id sequences in, n-best (ids, score) lists out, in order; batched by similar length."""
        results: list[list[tuple[list[int], float]]] = [[] for _ in sources]
        order = sorted((i for i, ids in enumerate(sources) if ids), key=lambda i: len(sources[i]))
        for start in range(0, len(order), BATCH_SENTENCES):
            rows = order[start : start + BATCH_SENTENCES]
            batch = np.full((len(rows), max(len(sources[i]) for i in rows)), PAD_ID, np.int32)
            for r, i in enumerate(rows):
                batch[r, : len(sources[i])] = sources[i]
            for i, hypotheses in zip(rows, self.searcher.search(batch, beam_size=beam_size, n_best=n_best)):
                results[i] = [(h.ids, h.score) for h in hypotheses]
        return results

    def translate(
        self,
        lines: Iterable[str],
        beam_size: int = 5,
        n_best: int = 1,
        normalize_input: bool = True,
        tokenized_output: bool = False,
        on_long_input=None,
        chunk_lines: int | None = None,
    ) -> Iterator[Translation]:
        """Translations of `lines`, in order, reading and yielding `chunk_lines` (default CHUNK_LINES) at a time."""
        lines = iter(lines)
        while chunk := list(islice(lines, chunk_lines or CHUNK_LINES)):
            prepared = [normalize(line, self.source_style) if normalize_input else line.strip() for line in chunk]
            ids = self.source_tokenizer.encode(prepared)
            if on_long_input is not None:
                for line, seq in zip(chunk, ids):
                    if len(seq) > self.trained_max_length:
                        on_long_input(line, len(seq), self.trained_max_length)
            for line, hypotheses in zip(chunk, self.translate_ids([list(s) for s in ids], beam_size, n_best)):
                texts = self.target_tokenizer.decode([h for h, _ in hypotheses]) if hypotheses else []
                if not tokenized_output:
                    texts = [detokenize(text, self.target_style) for text in texts]
                yield Translation(line, [Candidate(text, score) for text, (_, score) in zip(texts, hypotheses)])
