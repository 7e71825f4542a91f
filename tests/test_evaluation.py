"""Scoring with sacreBLEU, and `evaluate()` on the reversal task's dev split."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import sacrebleu

from conftest import reversal_pairs
from nmt_cli.datadir import DataDir
from nmt_cli.errors import UserError
from nmt_cli.evaluation import bleu_tokenizer, default_split, evaluate, score, score_files


@pytest.fixture(scope="module")
def model_dir(trained_model) -> Path:
    return trained_model("attention")


@pytest.fixture(scope="module")
def translator(model_dir):
    from nmt_cli.translation import Translator

    return Translator.open(model_dir)


def dev_references(data_dir: Path) -> list[str]:
    return (data_dir / "dev.ja").read_text(encoding="utf-8").splitlines()


def sacrebleu_cli(references: Path, hypotheses: Path, tokenize: str) -> tuple[float, float]:
    """(BLEU, chrF) as sacreBLEU's own command line prints them, with 2 decimals."""
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "sacrebleu",
            str(references),
            "-i",
            str(hypotheses),
            "-m",
            "bleu",
            "chrf",
            "--tokenize",
            tokenize,
            "-b",
            "-w",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    # -b with several metrics prints a JSON list of the scores, in the order asked for.
    values = json.loads(completed.stdout)
    assert len(values) == 2, completed.stdout
    return float(values[0]), float(values[1])


# ----------------------------------------------------------------------------------------------
# evaluate() on the dev split
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("beam_size", [1, 5])
def test_evaluate_dev_split_scores_and_files(translator, reversal_data, tmp_path, beam_size):
    output = tmp_path / f"hyp-beam{beam_size}.txt"
    result = evaluate(translator, DataDir(reversal_data), "dev", beam_size, output=output)

    references = dev_references(reversal_data)
    assert len(references) == 100
    assert result.split == "dev"
    assert result.beam_size == beam_size
    assert result.checkpoint == "best"
    assert result.scores.sentences == 100
    assert result.scores.bleu > 90, result.scores
    assert result.scores.chrf > 90, result.scores
    assert result.sentences_per_second > 0
    assert result.tokens_per_second > 0
    assert result.hypotheses_file == str(output)

    hypotheses = output.read_text(encoding="utf-8").splitlines()
    assert len(hypotheses) == len(references)
    assert sum(h == r for h, r in zip(hypotheses, references)) >= 90
    # The reversal target is written raw "ja": scored on characters.
    assert "tok:char" in result.scores.bleu_signature

    report = json.loads(output.with_name(output.stem + ".scores.json").read_text(encoding="utf-8"))
    assert report["checkpoint"] == "best"
    assert report["beam_size"] == beam_size
    assert report["split"] == "dev"
    assert report["sentences_per_second"] > 0
    assert report["hypotheses_file"] == str(output)
    scores = report["scores"]
    assert scores["bleu"] == result.scores.bleu > 90
    assert scores["chrf"] == result.scores.chrf
    assert scores["bleu_signature"] == result.scores.bleu_signature
    assert scores["bleu_signature"].startswith("nrefs:1|")
    assert f"version:{sacrebleu.__version__}" in scores["bleu_signature"]
    assert scores["chrf_signature"] == result.scores.chrf_signature
    assert scores["chrf_signature"].startswith("nrefs:1|")
    assert scores["sentences"] == 100


def test_evaluate_default_output_beside_the_model(translator, model_dir, reversal_data):
    result = evaluate(translator, DataDir(reversal_data), "dev", 5)
    expected = model_dir / "eval" / "dev-best-beam5.txt"
    assert result.hypotheses_file == str(expected)
    assert len(expected.read_text(encoding="utf-8").splitlines()) == 100
    assert (
        json.loads(expected.with_name(expected.stem + ".scores.json").read_text(encoding="utf-8"))["scores"]["bleu"]
        == result.scores.bleu
    )
    assert not list((model_dir / "eval").glob("*.partial"))


def test_evaluate_an_earlier_checkpoint_names_it(model_dir, reversal_data, tmp_path):
    from nmt_cli.translation import Translator

    result = evaluate(
        Translator.open(model_dir, "epoch-10"), DataDir(reversal_data), "dev", 1, output=tmp_path / "h.txt"
    )
    assert result.checkpoint.startswith("epoch-")
    assert int(result.checkpoint.split("-")[1]) == 10
    assert result.scores.sentences == 100


def test_evaluate_reports_progress_sentence_by_sentence(translator, reversal_data, tmp_path):
    from conftest import RecordingReporter

    reporter = RecordingReporter()
    evaluate(translator, DataDir(reversal_data), "dev", 1, output=tmp_path / "h.txt", reporter=reporter)
    (task,) = reporter.tasks
    assert task["total"] == task["done"] == 100 and not task["open"]
    assert "dev" in task["description"]


def test_default_split_is_dev_without_a_test_split(reversal_data):
    assert default_split(DataDir(reversal_data)) == "dev"


# ----------------------------------------------------------------------------------------------
# sacreBLEU: our scores are the command-line tool's
# ----------------------------------------------------------------------------------------------


def test_model_scores_match_the_sacrebleu_cli(translator, reversal_data, tmp_path):
    hypotheses = tmp_path / "hyp.txt"
    result = evaluate(translator, DataDir(reversal_data), "dev", 5, output=hypotheses)
    references = reversal_data / "dev.ja"

    ours = score_files(hypotheses, references, "none")
    cli_bleu, cli_chrf = sacrebleu_cli(references, hypotheses, "none")
    assert round(ours.bleu, 2) == pytest.approx(cli_bleu, abs=0.005)
    assert round(ours.chrf, 2) == pytest.approx(cli_chrf, abs=0.005)
    assert "tok:none" in ours.bleu_signature

    # evaluate() itself scored with the target's tokenizer ("char" for raw ja): the CLI agrees.
    cli_bleu, cli_chrf = sacrebleu_cli(references, hypotheses, "char")
    assert result.scores.bleu == pytest.approx(cli_bleu, abs=0.005)
    assert result.scores.chrf == pytest.approx(cli_chrf, abs=0.005)


# Natural punctuation, so the "none" and "13a" tokenizers give different scores.
HAND_REFERENCES = [
    "The cat sat on the mat.",
    "A dog is running in the park.",
    "She reads a book every evening.",
    "We went to school by bus today.",
    "It is raining, so take an umbrella.",
    "猫がマットの上に座った。",
]
HAND_HYPOTHESES = [
    "The cat sat on a mat.",
    "A dog runs in the park.",
    "She reads a book every evening.",
    "Today we went to the school by bus.",
    "It rains, take the umbrella!",
    "猫はマットに座った。",
]


@pytest.mark.parametrize("tokenize", ["none", "13a", "char"])
def test_hand_made_scores_match_the_sacrebleu_cli(tmp_path, tokenize):
    references, hypotheses = tmp_path / "ref.txt", tmp_path / "hyp.txt"
    references.write_text("".join(line + "\n" for line in HAND_REFERENCES), encoding="utf-8")
    hypotheses.write_text("".join(line + "\n" for line in HAND_HYPOTHESES), encoding="utf-8")

    ours = score_files(hypotheses, references, tokenize)
    cli_bleu, cli_chrf = sacrebleu_cli(references, hypotheses, tokenize)
    assert 5 < ours.bleu < 90, ours  # imperfect, so the comparison means something
    assert 10 < ours.chrf < 95, ours
    assert ours.bleu == pytest.approx(cli_bleu, abs=0.005)
    assert ours.chrf == pytest.approx(cli_chrf, abs=0.005)
    assert ours.sentences == len(HAND_REFERENCES)
    assert f"tok:{tokenize}" in ours.bleu_signature


def test_the_tokenizer_matters_for_bleu():
    bleus = {tok: score(HAND_HYPOTHESES, HAND_REFERENCES, tok).bleu for tok in ("none", "13a", "char")}
    assert len(set(bleus.values())) == 3, bleus


def test_score_of_identical_text_is_100():
    scores = score(HAND_REFERENCES, list(HAND_REFERENCES), "13a")
    assert scores.bleu == 100.0
    assert scores.chrf == 100.0


# ----------------------------------------------------------------------------------------------
# Which BLEU tokenizer
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "style_name, lang, expected",
    [
        ("en-words", "en", "none"),
        ("en-words-lower", "en", "none"),
        ("ja-words", "ja", "none"),
        ("raw", "ja", "char"),
        ("raw", "zh", "char"),
        ("raw", "en", "13a"),
    ],
)
def test_bleu_tokenizer(style_name, lang, expected):
    assert bleu_tokenizer(style_name, lang) == expected


# ----------------------------------------------------------------------------------------------
# Mistakes the user can fix
# ----------------------------------------------------------------------------------------------


def test_misaligned_lengths_are_a_user_error():
    with pytest.raises(UserError, match=r"3 hypotheses but 2 references"):
        score(["a", "b", "c"], ["a", "b"], "none")


def test_misaligned_files_are_a_user_error(tmp_path):
    (tmp_path / "h.txt").write_text("a\nb\n", encoding="utf-8")
    (tmp_path / "r.txt").write_text("a\n", encoding="utf-8")
    with pytest.raises(UserError):
        score_files(tmp_path / "h.txt", tmp_path / "r.txt", "none")


def test_data_with_other_tokenizers_is_refused(translator, tmp_path):
    from conftest import _write_split
    from nmt_cli.config import PrepareOptions
    from nmt_cli.prepare import prepare

    corpus = tmp_path / "corpus"
    _write_split(corpus, "train", reversal_pairs(300, seed=7) + [("k l m", "m l k")])
    _write_split(corpus, "dev", reversal_pairs(10, seed=8))
    other = tmp_path / "prepared"
    prepare(PrepareOptions(data_dir=other, source=str(corpus), vocab_size=300, src_style="en-words-lower"))

    with pytest.raises(UserError, match="tokenizers"):
        evaluate(translator, DataDir(other), "dev", 1, output=tmp_path / "h.txt")
    assert not (tmp_path / "h.txt").exists()


def test_missing_split_is_a_user_error(translator, reversal_data, tmp_path):
    with pytest.raises(UserError, match=r"no test split"):
        evaluate(translator, DataDir(reversal_data), "test", 1, output=tmp_path / "h.txt")
    assert not (tmp_path / "h.txt").exists()


def test_not_a_data_directory_is_a_user_error(translator, tmp_path):
    with pytest.raises(UserError, match="not a prepared data directory"):
        evaluate(translator, DataDir(tmp_path), "dev", 1)
