"""Scores with sacreBLEU (BLEU and chrF with their signatures) and decoding speed."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sacrebleu.metrics import BLEU, CHRF

from nmt_cli import files
from nmt_cli.corpus import read_lines
from nmt_cli.datadir import DataDir, Manifest
from nmt_cli.errors import UserError
from nmt_cli.progress import Reporter
from nmt_cli.tokenizer import output_text, style

if TYPE_CHECKING:  # scoring files alone must not pull in TensorFlow
    from nmt_cli.translation import Translator
    from nmt_cli.workspace import Workspace


@dataclass
class Scores:
    bleu: float
    bleu_signature: str
    chrf: float
    chrf_signature: str
    sentences: int


@dataclass
class Evaluation:
    split: str
    checkpoint: str
    engine: str  # keras, or ctranslate2 with the export's quantization
    beam_size: int
    scores: Scores
    seconds: float
    sentences_per_second: float
    tokens_per_second: float
    hypotheses_file: str
    scores_file: str

    def to_dict(self) -> dict:
        return asdict(self)


def bleu_tokenizer(style_name: str, lang: str) -> str:
    """Word-split text is scored on its own words ("none"), so scores compare with published ones."""
    if style(style_name).words:
        return "none"
    return "char" if lang in ("ja", "zh") else "13a"


def score(hypotheses: list[str], references: list[str], tokenize: str) -> Scores:
    if len(hypotheses) != len(references):
        raise UserError(f"{len(hypotheses)} hypotheses but {len(references)} references: they must align line by line")
    if tokenize not in BLEU.TOKENIZERS:
        raise UserError(f"unknown --tokenize {tokenize!r}; sacreBLEU knows: {', '.join(BLEU.TOKENIZERS)}")
    try:
        bleu = BLEU(tokenize=tokenize)
    except (RuntimeError, ImportError) as error:
        raise UserError(f"sacreBLEU's {tokenize!r} tokenizer is not usable here: {error}") from None
    chrf = CHRF()
    bleu_score = bleu.corpus_score(hypotheses, [references])
    chrf_score = chrf.corpus_score(hypotheses, [references])
    return Scores(
        bleu=round(bleu_score.score, 2),
        bleu_signature=str(bleu.get_signature()),
        chrf=round(chrf_score.score, 2),
        chrf_signature=str(chrf.get_signature()),
        sentences=len(hypotheses),
    )


def score_files(hypotheses: Path, references: Path, tokenize: str | None, model: Workspace | None = None) -> Scores:
    """Score a hypothesis file; without `tokenize`, as `evaluate` scores `model`'s target language
    (so its own hypotheses files score the same), or with sacreBLEU's default where there is no model."""
    if tokenize is None:
        tokenize = "13a"
        if model is not None and model.data_manifest.is_file():
            manifest = Manifest.read(model.data_manifest)
            tokenize = bleu_tokenizer(manifest.target_style, manifest.target_lang)
    return score(read_lines(Path(hypotheses)), read_lines(Path(references)), tokenize)


def scores_file(hypotheses_file: Path) -> Path:
    """Where the scores of a hypotheses file go: beside it, never on it."""
    return hypotheses_file.with_name(hypotheses_file.stem + ".scores.json")


def default_split(data: DataDir) -> str:
    return "test" if data.has_split("test") else "dev"


def check_tokenizers_match(translator: Translator, data: DataDir) -> None:
    mine = {translator.source_lang: translator.source_tokenizer, translator.target_lang: translator.target_tokenizer}
    for lang, tokenizer in mine.items():
        theirs = data.tokenizer(lang)
        if not theirs.exists() or theirs.read_bytes() != tokenizer.model_proto:
            raise UserError(
                f"the tokenizers of {data.root} are not the ones {translator.workspace.root} was trained with"
            )


def evaluate(
    translator: Translator,
    data: DataDir,
    split: str,
    beam_size: int,
    output: Path | None = None,
    reporter: Reporter | None = None,
) -> Evaluation:
    """Translate a prepared split (its encoded source, exactly as training saw it) and score it."""
    reporter = reporter or Reporter()
    data.check_exists()
    check_tokenizers_match(translator, data)
    if not data.has_split(split):
        raise UserError(f"{data.root} has no {split} split; choose --split dev or prepare one")
    sources, _ = data.load_split(split)
    references = read_lines(data.text(split, translator.target_lang))

    name = translator.workspace.checkpoint_name(translator.checkpoint)
    started = time.perf_counter()
    with reporter.task(f"{name}: translate {split}", total=len(sources)) as task:
        results = translator.translate_ids([list(s) for s in sources], beam_size=beam_size, on_progress=task.advance)
    seconds = time.perf_counter() - started
    best_ids = [hypotheses[0][0] if hypotheses else [] for hypotheses in results]
    hypotheses = translator.output_texts(best_ids, tokenized=True)

    default = translator.workspace.evaluations / f"{split}-{name}-beam{beam_size}.txt"
    output = Path(output) if output else default
    # A device or a pipe has no folder of its own for the scores: they go where they would by default.
    scores_path = scores_file(default if files.is_special(output) else output)
    for folder in {output.parent, scores_path.parent}:
        folder.mkdir(parents=True, exist_ok=True)
    files.write_text(output, "".join(line + "\n" for line in hypotheses))
    scores = score(hypotheses, references, bleu_tokenizer(translator.target_style, translator.target_lang))
    evaluation = Evaluation(
        split=split,
        checkpoint=name,
        engine=translator.engine_label,
        beam_size=beam_size,
        scores=scores,
        seconds=round(seconds, 3),
        sentences_per_second=round(len(sources) / seconds, 1),
        tokens_per_second=round(sum(len(ids) + 1 for ids in best_ids) / seconds, 1),
        hypotheses_file=str(output),
        scores_file=str(scores_path),
    )
    files.write_text(scores_path, json.dumps(evaluation.to_dict(), indent=2) + "\n")
    return evaluation


def evaluate_checkpoints(
    translator: Translator,
    checkpoints: list[str],
    data: DataDir,
    split: str | None,
    beam_size: int,
    output: Path | None = None,
    reporter: Reporter | None = None,
) -> list[Evaluation]:
    """Evaluate each named checkpoint of the translator's model directory on one split, swapping
    weights into the same engine."""
    results = []
    for checkpoint in checkpoints:
        if checkpoint != translator.model.checkpoint_name:
            translator.use_checkpoint(checkpoint)
        results.append(evaluate(translator, data, split or default_split(data), beam_size, output, reporter))
    return results


class SplitScorer:
    """BLEU of a prepared split under given inference models, by greedy search: how training
    follows translation quality epoch by epoch (the weights change; the compiled search stays)."""

    def __init__(self, encoder, decoder, data: DataDir, target_tokenizer: Path, split: str = "dev"):
        from nmt_cli.decoding import Searcher
        from nmt_cli.tokenizer import Tokenizer

        manifest = data.manifest()
        self.searcher = Searcher(encoder, decoder)
        self.sources = [list(ids) for ids in data.load_split(split)[0]]
        self.references = read_lines(data.text(split, manifest.target_lang))
        self.tokenizer = Tokenizer.load(target_tokenizer)
        self.bleu_tokenize = bleu_tokenizer(manifest.target_style, manifest.target_lang)

    def bleu(self) -> float:
        results = self.searcher.search_all(self.sources, beam_size=1)
        best_ids = [n_best[0][0] if n_best else [] for n_best in results]  # each source's (ids, score) list
        hypotheses = self.tokenizer.decode(best_ids)
        return score(
            [output_text(text, "raw", tokenized=True) for text in hypotheses], self.references, self.bleu_tokenize
        ).bleu
