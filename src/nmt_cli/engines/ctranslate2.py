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

Attention (`return_attention`) is that of the last decoder layer, heads averaged, as `export.py`
sets it. CTranslate2's beam search gives a batch's sentences each other's first row (a shorter
source in a padded batch gets zeros): that row, the same for every hypothesis of a sentence (all
start with `<bos>`), is taken from one greedy step instead, which gets it right.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import ctranslate2
import numpy as np

from nmt_cli.engines import LENGTH_RULE, LengthRule, NBest, Sampling
from nmt_cli.errors import UserError
from nmt_cli.tokenizer import EOS_ID

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
        attention: bool = False,
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
                pieces = [[self.source_pieces[t] for t in sources[i]] for i in batch]
                found = self.translator.translate_batch(
                    pieces,
                    **self._drawing(beam_size),
                    num_hypotheses=n_best,
                    length_penalty=self.length_penalty,
                    min_decoding_length=0,
                    # The last step is the one where <eos> is forced: CTranslate2 stops before it.
                    max_decoding_length=self.length_rule.steps(length) - 1,
                    max_input_length=0,
                    return_scores=True,
                    return_attention=attention,
                    return_end_token=attention,  # with the row of its step
                    asynchronous=True,
                )
                first_steps = self._steps_after(pieces, [[]] * len(batch)) if attention else found
                queued.append((batch, pieces, found, first_steps))
        for batch, pieces, found, first_steps in queued:
            for i, source, waiting, first_step in zip(batch, pieces, found, first_steps):
                result = waiting.result()
                if attention:
                    results[i] = self._with_attention(source, result, first_step.result().attention[0][0])
                else:
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

    def _with_attention(self, source: list[str], result, first_row: list[float]) -> NBest:
        """(ids, score, attention rows) of each hypothesis of one source, the first row
        `first_row`. A hypothesis cut at the length limit has no `<eos>`, nor its row, where the
        Keras engine forces `<eos>` at the last step: it gets the row of the step after it."""
        eos = self.target_pieces[EOS_ID]
        found = []
        for pieces, score, rows in zip(result.hypotheses, result.scores, result.attention):
            if pieces and pieces[-1] == eos:
                pieces = pieces[:-1]
            else:
                rows = rows + [self._steps_after([source], [pieces])[0].result().attention[0][-1]]
            found.append((self._ids(pieces), score, np.asarray([first_row, *rows[1:]], np.float32)))
        return found

    def _steps_after(self, sources: list[list[str]], prefixes: list[list[str]]) -> list:
        """Waiting results of one greedy step after each target prefix (all of one length): the
        last row of each result's attention is that step's."""
        return self.translator.translate_batch(
            sources,
            prefixes,
            beam_size=1,
            min_decoding_length=0,
            max_decoding_length=len(prefixes[0]) + 1,
            max_input_length=0,
            return_attention=True,
            return_end_token=True,
            asynchronous=True,
        )

    def _ids(self, pieces: list[str]) -> list[int]:
        return [self.target_ids[piece] for piece in pieces]

    def load_checkpoint(self, checkpoint: Path) -> None:
        raise UserError("the CTranslate2 engine holds one exported checkpoint: use --engine keras to change weights")
