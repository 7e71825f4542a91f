"""The CTranslate2 engine: an export (`export.py`) searched in C++, without TensorFlow.

CTranslate2 takes pieces, not ids: the export's vocabularies (the SentencePiece pieces in id
order) map between the two. Its search is asked for what the Keras engine does: EOS allowed from
the first step (`min_decoding_length=0`), no input truncated, beam search that goes on until
`beam_size` hypotheses have finished (patience 1), scores divided by length (alpha 1). Its
length limit applies to a whole call, so sentences are searched in groups of one source length,
each with the `LengthRule` of that length.

Batches are translated in parallel, one thread each (`--threads` of them, by default one per core
this process may use): for models this size, batches side by side use a CPU better than threads
inside one batch, int8 most of all (bench/translate_speed.py measures it; see the README).
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import ctranslate2

from nmt_cli.engines import LENGTH_RULE, LengthRule, NBest, Sampling
from nmt_cli.errors import UserError

BATCH_SENTENCES = 64  # sentences per batch


class CTranslate2Engine:
    name = "ctranslate2"

    def __init__(
        self,
        export_dir: Path,
        threads: int = 0,
        length_rule: LengthRule = LENGTH_RULE,
        length_penalty: float = 1.0,
        sampling: Sampling | None = None,
    ):
        self.export_dir, self.length_rule, self.length_penalty = Path(export_dir), length_rule, length_penalty
        self.sampling = sampling
        if sampling is not None:
            ctranslate2.set_random_seed(sampling.seed)
        try:
            self.source_pieces = self._vocabulary("source")
            self.target_pieces = self._vocabulary("target")
            self.target_ids = {piece: i for i, piece in enumerate(self.target_pieces)}
            workers = threads or len(os.sched_getaffinity(0))
            if sampling is not None:
                # Workers that take batches in whatever order they come would each draw from their
                # own random stream: one worker takes them in order, so a seed repeats.
                workers = 1
            self.translator = ctranslate2.Translator(
                str(export_dir), device="cpu", inter_threads=workers, intra_threads=1
            )
        except (OSError, ValueError, RuntimeError) as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise UserError(f"the CTranslate2 export in {export_dir} does not load ({reason})") from None

    def _vocabulary(self, side: str) -> list[str]:
        path = self.export_dir / f"{side}_vocabulary.json"
        if not path.exists():  # CTranslate2 saves two equal vocabularies as one
            path = self.export_dir / "shared_vocabulary.json"
        pieces = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(pieces, list) or not all(isinstance(piece, str) for piece in pieces):
            raise ValueError(f"{side}_vocabulary.json is not a list of pieces")
        return pieces

    def search_all(
        self,
        sources: list[list[int]],
        beam_size: int,
        n_best: int = 1,
        on_progress: Callable[[int], None] | None = None,
    ) -> list[NBest]:
        results: list[NBest] = [[] for _ in sources]
        by_length: dict[int, list[int]] = defaultdict(list)
        for i, ids in enumerate(sources):
            if len(ids):
                by_length[len(ids)].append(i)
        # Every batch is queued at once, and the translator's workers take them in parallel.
        queued = []
        for length in sorted(by_length):
            rows = by_length[length]
            for start in range(0, len(rows), BATCH_SENTENCES):
                batch = rows[start : start + BATCH_SENTENCES]
                found = self.translator.translate_batch(
                    [[self.source_pieces[t] for t in sources[i]] for i in batch],
                    **self._drawing(beam_size),
                    num_hypotheses=n_best,
                    length_penalty=self.length_penalty,
                    min_decoding_length=0,
                    # The last step is the one where <eos> is forced: CTranslate2 stops before it.
                    max_decoding_length=self.length_rule.steps(length) - 1,
                    max_input_length=0,
                    return_scores=True,
                    asynchronous=True,
                )
                queued.append((batch, found))
        for batch, found in queued:
            for i, waiting in zip(batch, found):
                result = waiting.result()
                results[i] = [(self._ids(pieces), score) for pieces, score in zip(result.hypotheses, result.scores)]
            if on_progress is not None:
                on_progress(len(batch))
        return results

    def _drawing(self, beam_size: int) -> dict:
        """How each step picks its token: the beam, or a random draw (`Sampling`)."""
        if self.sampling is None:
            return {"beam_size": beam_size}
        sampling = self.sampling
        return {
            "beam_size": 1,
            # CTranslate2 reads 1 as "the most likely token"; nmt's 0 is "any token".
            "sampling_topk": sampling.topk or len(self.target_pieces),
            "sampling_topp": sampling.topp,
            "sampling_temperature": sampling.temperature,
        }

    def score_all(self, sources: list[list[int]], targets: list[list[int]]) -> list[list[float]]:
        # CTranslate2 sorts the pairs by length into batches of that many and spreads them over
        # its workers itself: scoring has no per-length rule that would ask for batches of our own.
        found = self.translator.score_batch(
            [[self.source_pieces[t] for t in ids] for ids in sources],
            [[self.target_pieces[t] for t in ids] for ids in targets],
            max_batch_size=BATCH_SENTENCES,
            max_input_length=0,
        )
        return [list(result.log_probs) for result in found]

    def _ids(self, pieces: list[str]) -> list[int]:
        return [self.target_ids[piece] for piece in pieces]

    def load_checkpoint(self, checkpoint: Path) -> None:
        raise UserError("the CTranslate2 engine holds one exported checkpoint: use --engine keras to change weights")
