"""`nmt translate` and `nmt evaluate` on the trained reversal model.

Most cases run the typer app in-process (CliRunner), which is fast; exit codes, tracebacks,
stderr warnings and real stdin run `python -m nmt_cli` in a subprocess, as a user would.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from conftest import assert_one_line_error, nmt
from nmt_cli import translation
from nmt_cli.checkpoints import BestStamp
from nmt_cli.cli import app
from nmt_cli.errors import UserError

runner = CliRunner()


@pytest.fixture(scope="module", params=["attention", "transformer"], ids=["keras", "ctranslate2"])
def model(request, trained_model) -> str:
    """Every test runs on both engines: the LSTM model translates with Keras; the Transformer,
    which training exported, with CTranslate2 (`--engine auto`)."""
    return str(trained_model(request.param))


def invoke(*args, input: str | None = None):
    return runner.invoke(app, [str(a) for a in args], input=input)


def ok(*args, input: str | None = None):
    result = invoke(*args, input=input)
    if result.exit_code != 0:
        detail = "".join(traceback.format_exception(result.exception)) if result.exception else ""
        pytest.fail(f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}\n{detail}")
    return result


def lines_of(text: str) -> list[str]:
    return text.split("\n")[:-1] if text.endswith("\n") else text.split("\n")


# ----------------------------------------------------------------------------------------------
# Sentences as arguments
# ----------------------------------------------------------------------------------------------


def test_translates_one_argument(model, reference):
    result = ok("translate", "--model-dir", model, "a b c")
    assert result.stdout == reference(model, ["a b c"])[0] + "\n"


def test_several_arguments_give_one_line_each_in_order(model, reference):
    sentences = ["a b c", "d e f g", "h i j a b", "j i h"]
    result = ok("translate", "--model-dir", model, *sentences)
    assert lines_of(result.stdout) == reference(model, sentences)


def test_raw_input_is_normalised(model, reference):
    result = ok("translate", "--model-dir", model, "A B C", "  D   E F  ")
    assert lines_of(result.stdout) == reference(model, ["a b c", "d e f"])


def test_no_normalize_reaches_the_translator(model, reference):
    raw = ok("translate", "--model-dir", model, "--no-normalize", "A B C")
    assert raw.stdout == reference(model, ["A B C"], normalize_input=False)[0] + "\n"


@pytest.mark.parametrize("beam", [None, "1", "3"])
def test_beam_size_reaches_the_search(model, reference, beam):
    options = [] if beam is None else ["--beam-size", beam]
    result = ok("translate", "--model-dir", model, *options, "b c d e", "j a c")
    assert lines_of(result.stdout) == reference(model, ["b c d e", "j a c"], beam_size=int(beam or 5))


@pytest.mark.parametrize("checkpoint", ["last", "best", "epoch-20", "epoch-020"])
def test_checkpoints_by_name(model, reference, checkpoint):
    result = ok("translate", "--model-dir", model, "--checkpoint", checkpoint, "a b c d")
    assert (
        result.stdout
        == reference(model, ["a b c d"], checkpoint="epoch-20" if checkpoint != "best" else "best")[0] + "\n"
    )


def test_earlier_checkpoint_translates(model):
    # Epoch 10 of 20 has not learnt the task yet (validation accuracy about 0.4): it must
    # still load and translate every line, into the target's letters.
    result = ok("translate", "--model-dir", model, "--checkpoint", "epoch-10", "a b c d", "e f g")
    lines = lines_of(result.stdout)
    assert len(lines) == 2
    for line in lines:
        assert re.fullmatch(r"[a-j]( [a-j])*", line), result.stdout


# ----------------------------------------------------------------------------------------------
# stdin
# ----------------------------------------------------------------------------------------------


def test_stdin_lines_in_order_with_empty_line(model, reference):
    result = ok("translate", "--model-dir", model, input="a b c\n\nd e f g\nh i j\n")
    assert lines_of(result.stdout) == reference(model, ["a b c", "", "d e f g", "h i j"])
    assert lines_of(result.stdout)[1] == ""


def test_dash_reads_stdin_in_a_process(model, reference):
    completed = nmt("translate", "--model-dir", model, "-", input="a b c\n\nj i h g\n")
    assert completed.returncode == 0, completed.stderr
    assert lines_of(completed.stdout) == reference(model, ["a b c", "", "j i h g"])
    assert "Traceback" not in completed.stderr


def test_empty_stdin_prints_nothing_and_exits_0(model):
    completed = nmt("translate", "--model-dir", model, input="")
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == ""
    assert "Traceback" not in completed.stderr


@pytest.mark.parametrize("beam", ["1", "5"])
def test_many_stdin_lines_batched_together(model, reference, beam):
    # More lines than the eager limit: the compiled search runs, and order is kept.
    from conftest import reversal_pairs

    sources = [source for source, _ in reversal_pairs(40, seed=11)]
    result = ok("translate", "--model-dir", model, "--beam-size", beam, input="".join(s + "\n" for s in sources))
    # One at a time, each sentence runs alone (eagerly): the same translations, in input order.
    assert lines_of(result.stdout) == [reference(model, [s], beam_size=int(beam))[0] for s in sources]


def test_last_stdin_line_without_newline(model, reference):
    result = ok("translate", "--model-dir", model, "-", input="a b c\nd e f")
    assert lines_of(result.stdout) == reference(model, ["a b c", "d e f"])


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------


def test_input_and_output_files(model, reference, tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("a b c\nc d e f\n\ng h i\r\ni j a b c d\n", encoding="utf-8")
    target = tmp_path / "out.txt"
    result = ok("translate", "--model-dir", model, "--input", source, "--output", target)
    assert result.stdout == ""
    expected = reference(model, ["a b c", "c d e f", "", "g h i", "i j a b c d"])
    assert target.read_text(encoding="utf-8").split("\n")[:-1] == expected


def test_input_file_to_stdout(model, reference, tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("e f g\n", encoding="utf-8")
    assert ok("translate", "--model-dir", model, "--input", source).stdout == reference(model, ["e f g"])[0] + "\n"


def test_missing_input_file_exits_2(model, tmp_path):
    missing = tmp_path / "nowhere.txt"
    completed = nmt("translate", "--model-dir", model, "--input", missing)
    assert_one_line_error(completed, str(missing))
    assert completed.stdout == ""


def test_arguments_and_input_file_together_are_refused(model, tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("a b c\n", encoding="utf-8")
    result = invoke("translate", "--model-dir", model, "--input", source, "a b c")
    assert isinstance(result.exception, UserError)
    assert "not both" in str(result.exception)


# ----------------------------------------------------------------------------------------------
# n-best and JSON
# ----------------------------------------------------------------------------------------------


def test_n_best_prints_ranked_scored_lines(model, reference):
    result = ok("translate", "--model-dir", model, "--n-best", "3", "a b c", "d e f g")
    rows = [line.split("\t") for line in lines_of(result.stdout)]
    assert len(rows) == 6
    assert all(len(row) == 3 for row in rows), result.stdout
    for group, expected in zip((rows[:3], rows[3:]), reference(model, ["a b c", "d e f g"])):
        assert [rank for rank, _, _ in group] == ["1", "2", "3"]
        scores = [float(score) for _, score, _ in group]
        assert scores == sorted(scores, reverse=True)
        assert all(score <= 0 for score in scores)
        assert group[0][2] == expected
        assert len({text for _, _, text in group}) == 3  # distinct candidates


def test_moses_n_best_rows_are_what_reranking_scripts_read(model):
    asked = ["translate", "--model-dir", model, "--n-best", "3", "a b c", "d e f g"]
    tsv, moses = ok(*asked).stdout, ok(*asked, "--n-best-format", "moses").stdout
    rows = [line.split(" ||| ") for line in lines_of(moses)]
    assert [line for line, _, _ in rows] == ["0"] * 3 + ["1"] * 3
    expected = [(text, score) for _, score, text in (line.split("\t") for line in lines_of(tsv))]
    assert [(text, score) for _, text, score in rows] == expected


def test_json_lines(model, reference):
    result = ok("translate", "--model-dir", model, "--json", "a b c", "D E F")
    objects = [json.loads(line) for line in lines_of(result.stdout)]
    assert [o["source"] for o in objects] == ["a b c", "D E F"]
    assert [o["translation"] for o in objects] == reference(model, ["a b c", "D E F"])
    for o in objects:
        assert set(o) == {"source", "translation", "score"}
        assert isinstance(o["score"], float) and o["score"] <= 0


def test_json_with_n_best_gives_one_object_per_candidate(model, reference):
    result = ok("translate", "--model-dir", model, "--json", "--n-best", "2", "a b c")
    objects = [json.loads(line) for line in lines_of(result.stdout)]
    assert len(objects) == 2
    assert objects[0]["translation"] == reference(model, ["a b c"])[0]
    assert objects[0]["score"] >= objects[1]["score"]


def test_n_best_above_beam_size_exits_2(model):
    completed = nmt("translate", "--model-dir", model, "--n-best", "4", "--beam-size", "3", "a b c")
    assert_one_line_error(completed, "--n-best 4")
    assert completed.stdout == ""


# ----------------------------------------------------------------------------------------------
# Checkpoints and model directories that cannot be used
# ----------------------------------------------------------------------------------------------


def test_unknown_checkpoint_lists_saved_ones(model):
    completed = nmt("translate", "--model-dir", model, "--checkpoint", "epoch-7", "a b c")
    error = assert_one_line_error(completed, "epoch-7")
    assert re.search(r"saved: .*epoch-10\b.*epoch-20\b", error), error
    assert completed.stdout == ""


def test_missing_model_dir_exits_2(tmp_path):
    missing = tmp_path / "no-model"
    completed = nmt("translate", "--model-dir", missing, "a b c")
    assert_one_line_error(completed, str(missing), "does not exist")
    assert completed.stdout == ""


def test_model_dir_without_checkpoint_exits_2(tmp_path):
    empty = tmp_path / "empty-model"
    empty.mkdir()
    completed = nmt("translate", "--model-dir", empty, "a b c")
    assert_one_line_error(completed, str(empty), "no checkpoint")


def test_evaluate_missing_model_dir_exits_2(tmp_path):
    missing = tmp_path / "no-model"
    completed = nmt("evaluate", "--model-dir", missing)
    assert_one_line_error(completed, str(missing))


# ----------------------------------------------------------------------------------------------
# Long input
# ----------------------------------------------------------------------------------------------


def test_long_input_is_translated_with_a_warning(model):
    letters = " ".join("abcdefghij"[(i * 7) % 10] for i in range(40))
    completed = nmt("translate", "--model-dir", model, "--beam-size", "1", letters)
    assert completed.returncode == 0, completed.stderr
    assert len(lines_of(completed.stdout)) == 1
    assert completed.stdout.strip() != ""
    (warning,) = completed.stderr.strip().splitlines()
    assert warning.startswith("warning:") and "more than any training sentence" in warning
    assert warning.endswith("translated whole, but quality may suffer")


def test_input_far_beyond_the_trained_length_is_translated_in_parts(model):
    sentence = " ".join("abcdefghij"[(i * 7) % 10] for i in range(5)) + " ."
    completed = nmt("translate", "--model-dir", model, "--beam-size", "1", " ".join([sentence] * 60))
    assert completed.returncode == 0, completed.stderr
    assert len(lines_of(completed.stdout)) == 1
    (warning,) = completed.stderr.strip().splitlines()
    parts = int(warning.split(" in ")[-1].split()[0])
    assert 1 < parts <= translation.MAX_PARTS and warning.endswith("parts split at sentence ends")


def test_the_work_of_one_line_is_bounded(model, reference):
    """A line of 100,000 characters: its first MAX_PARTS parts are translated, the rest left out,
    and the warning says so."""
    sentence = " ".join("abcdefghij"[(i * 7) % 10] for i in range(5)) + " ."
    line = " ".join([sentence] * 8400)
    assert len(line) > 100_000
    completed = nmt("translate", "--model-dir", model, "--beam-size", "1", line, timeout=120)
    assert completed.returncode == 0, completed.stderr
    (warning,) = completed.stderr.strip().splitlines()
    assert f"the first {translation.MAX_PARTS} of its " in warning and "split such text into lines" in warning
    assert completed.stdout == reference(model, [line], beam_size=1)[0] + "\n"


def test_short_input_gives_no_warning_in_process(model):
    result = ok("translate", "--model-dir", model, "a b c")
    assert "warning" not in result.stderr


# ----------------------------------------------------------------------------------------------
# evaluate
# ----------------------------------------------------------------------------------------------


def test_evaluate_json(model):
    result = ok("evaluate", "--model-dir", model, "--split", "dev", "--json")
    report = json.loads(result.stdout)
    assert report["split"] == "dev"
    assert report["checkpoint"] == "best"
    assert report["beam_size"] == 5
    # The model has learnt the task. Int8 weights cost a model this small (width 32) a few points
    # more than they cost a full-size one (README), and how many depends on the CPU's rounding.
    learnt = 90 if report["engine"] == "keras" else 80
    assert report["engine"] in ("keras", "ctranslate2 int8")
    assert report["scores"]["bleu"] > learnt
    assert report["scores"]["chrf"] > learnt
    assert report["scores"]["bleu_signature"].startswith("nrefs:1|")
    assert report["scores"]["chrf_signature"].startswith("nrefs:1|")
    assert report["sentences_per_second"] > 0
    assert Path(report["hypotheses_file"]).is_file()


def test_scoring_evaluates_own_hypotheses_file_gives_its_score(model, reversal_data):
    """`--hypotheses` takes the tokenisation `nmt evaluate` scores the model's target language
    with (here characters, not sacreBLEU's default 13a): the same file scores the same."""
    report = json.loads(ok("evaluate", "--model-dir", model, "--beam-size", "1", "--json").stdout)
    again = ok(
        "evaluate", "--model-dir", model, "--json",
        "--hypotheses", report["hypotheses_file"], "--references", reversal_data / "dev.ja",
    )  # fmt: skip
    scores = json.loads(again.stdout)
    assert scores["bleu_signature"] == report["scores"]["bleu_signature"] and "tok:13a" not in scores["bleu_signature"]
    assert scores["bleu"] == report["scores"]["bleu"]


def test_evaluate_text(model, tmp_path):
    hypotheses = tmp_path / "hyp.txt"
    result = ok("evaluate", "--model-dir", model, "--beam-size", "1", "--output", hypotheses)
    assert "dev split" in result.stdout  # no test split prepared: dev is the default
    assert "BLEU" in result.stdout and "chrF" in result.stdout
    assert len(hypotheses.read_text(encoding="utf-8").splitlines()) == 100
    assert hypotheses.with_name(hypotheses.stem + ".scores.json").is_file()


def test_evaluate_all_checkpoints_table(model):
    result = ok("evaluate", "--model-dir", model, "--all-checkpoints", "--beam-size", "1")
    rows = [line for line in result.stdout.splitlines() if re.search(r"epoch-\d+", line)]
    assert len(rows) == 2, result.stdout
    assert re.search(r"epoch-10\b", rows[0]) and re.search(r"epoch-20\b", rows[1]), result.stdout
    # Exactly one best mark, on the checkpoint with the highest BLEU.
    reports = json.loads(ok("evaluate", "--model-dir", model, "--all-checkpoints", "--beam-size", "1", "--json").stdout)
    best = max(range(2), key=lambda i: reports[i]["scores"]["bleu"])
    assert ["*" in row for row in rows] == [i == best for i in range(2)], result.stdout
    assert "highest BLEU" in result.stdout
    # ... and, apart from it, the epoch best.keras holds (the fixture trains with --best-by loss).
    from nmt_cli.workspace import Workspace

    held = BestStamp.read(Workspace(Path(model))).epoch
    assert ["= best" in row for row in rows] == [bool(re.search(rf"epoch-{held}\b", row)) for row in rows], (
        result.stdout
    )
    caption = f"holds the weights at the end of epoch {held}, chosen by the lowest validation loss"
    assert caption in " ".join(result.stdout.split())


def test_a_best_saved_inside_an_epoch_is_not_that_epochs_checkpoint():
    """A run stopped inside epoch 8 saves its best there, stamped with the row of epoch 8:
    `epoch-8.keras` (the end of epoch 8) holds other weights, and the table must not say "= best"."""
    from types import SimpleNamespace

    from rich.console import Console

    from nmt_cli import console
    from nmt_cli.checkpoints import Position

    def evaluation(name: str, bleu: float):
        return SimpleNamespace(
            checkpoint=name,
            split="dev",
            beam_size=1,
            sentences_per_second=1.0,
            scores=SimpleNamespace(bleu=bleu, chrf=1.0),
        )

    evaluations = [evaluation("epoch-5", 10.0), evaluation("epoch-8", 20.0)]

    def marked(best: BestStamp) -> list[str]:
        out = Console(width=200, record=True)
        out.print(console.checkpoint_table(evaluations, best, "loss"))
        text = out.export_text()
        rows = {name: next(line for line in text.splitlines() if name in line) for name in ("epoch-5", "epoch-8")}
        return [name for name, row in rows.items() if "= best" in row]

    assert marked(BestStamp(Position(7, 30), 8)) == []
    assert marked(BestStamp(Position(8), 8)) == ["epoch-8"]


def test_evaluate_answers_a_missing_data_directory_before_tensorflow_loads(model, tmp_path):
    completed = nmt("evaluate", "--model-dir", model, "--data-dir", tmp_path / "nowhere", before_tensorflow=True)
    assert completed.returncode == 2, completed.stderr  # 99: the answer came after TensorFlow loaded
    assert completed.stderr.startswith("error: ") and "nmt prepare" in completed.stderr


def test_evaluate_all_checkpoints_json(model):
    result = ok("evaluate", "--model-dir", model, "--all-checkpoints", "--beam-size", "1", "--json")
    reports = json.loads(result.stdout)
    assert [int(r["checkpoint"].split("-")[1]) for r in reports] == [10, 20]
    assert all(r["scores"]["sentences"] == 100 for r in reports)


def test_evaluate_files_without_a_model(tmp_path):
    references, hypotheses = tmp_path / "ref.txt", tmp_path / "hyp.txt"
    references.write_text("the cat sat on the mat .\na b c d e\n", encoding="utf-8")
    hypotheses.write_text("the cat sat on a mat .\na b c d e\n", encoding="utf-8")
    no_model = tmp_path / "no-model"
    result = ok(
        "evaluate",
        "--model-dir",
        no_model,
        "--hypotheses",
        hypotheses,
        "--references",
        references,
        "--tokenize",
        "none",
        "--json",
    )
    scores = json.loads(result.stdout)
    assert 0 < scores["bleu"] < 100
    assert "tok:none" in scores["bleu_signature"]
    assert scores["sentences"] == 2
    text = ok("evaluate", "--hypotheses", hypotheses, "--references", references, "--tokenize", "none")
    assert f"BLEU {scores['bleu']:.2f}" in text.stdout
    assert "2 sentences" in text.stdout
    assert not no_model.exists()


def test_evaluate_hypotheses_without_references_exits_2(tmp_path):
    hypotheses = tmp_path / "hyp.txt"
    hypotheses.write_text("a b c\n", encoding="utf-8")
    completed = nmt("evaluate", "--hypotheses", hypotheses)
    assert_one_line_error(completed, "--references")
    assert completed.stdout == ""


def test_evaluate_output_ending_in_json_keeps_the_hypotheses(model, tmp_path):
    output = tmp_path / "hyps.json"
    ok("evaluate", "--model-dir", model, "--beam-size", "1", "--output", output)
    assert len(lines_of(output.read_text(encoding="utf-8"))) == 100
    assert json.loads((tmp_path / "hyps.scores.json").read_text(encoding="utf-8"))["hypotheses_file"] == str(output)


def test_all_checkpoints_with_one_output_file_is_refused(model, tmp_path):
    completed = nmt("evaluate", "--model-dir", model, "--all-checkpoints", "--output", tmp_path / "h.txt")
    assert_one_line_error(completed, "--all-checkpoints")


def test_n_best_keeps_n_lines_for_an_empty_input_line(model):
    result = ok("translate", "--model-dir", model, "--n-best", "2", "-", input="a b c\n\n")
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert [row[0] for row in rows] == ["1", "2", "1", "2"]
    assert rows[2][2] == rows[3][2] == ""


def test_output_onto_the_input_file_is_refused(model, tmp_path):
    path = tmp_path / "text.txt"
    path.write_text("a b c\n", encoding="utf-8")
    completed = nmt("translate", "--model-dir", model, "--input", path, "--output", path)
    assert_one_line_error(completed, "--output")
    assert path.read_text(encoding="utf-8") == "a b c\n"


def test_output_file_is_complete_or_absent(model, reference, tmp_path):
    output = tmp_path / "out.txt"
    ok("translate", "--model-dir", model, "--output", output, "-", input="a b c\nd e f\n")
    assert lines_of(output.read_text(encoding="utf-8")) == reference(model, ["a b c", "d e f"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_invalid_utf8_on_stdin_loses_no_line(model, reference):
    completed = nmt("translate", "--model-dir", model, input=b"a b c\n\xff\xfe d\ne f\n")
    assert completed.returncode == 0, completed.stderr
    out = completed.stdout.decode("utf-8").split("\n")[:-1]
    assert len(out) == 3
    assert [out[0], out[2]] == reference(model, ["a b c", "e f"])
    (warning,) = completed.stderr.decode().strip().splitlines()
    assert warning == "warning: stdin 2 is not valid UTF-8: its invalid bytes were replaced with U+FFFD"


def test_an_argument_that_is_not_utf8_is_translated_with_a_warning(model):
    completed = subprocess.run(
        [sys.executable, "-m", "nmt_cli", "translate", "--model-dir", str(model), b"a \xff b", "c d"],
        capture_output=True,
    )
    assert completed.returncode == 0, completed.stderr
    assert len(completed.stdout.decode("utf-8").split("\n")[:-1]) == 2
    assert completed.stderr.decode().strip() == (
        "warning: argument 1 is not valid UTF-8: its invalid bytes were replaced with U+FFFD"
    )


def test_json_escapes_the_separators_that_split_lines(model):
    result = ok("translate", "--model-dir", model, "--json", "a\u2028b\u0085c\u2029d")
    (record,) = result.stdout.split("\n")[:-1]
    assert not {"\u2028", "\u2029", "\u0085"} & set(record)
    assert json.loads(record)["source"] == "a\u2028b\u0085c\u2029d"


def test_output_into_a_symlink_writes_its_target(model, reference, tmp_path):
    target = tmp_path / "real.txt"
    target.write_text("old\n", encoding="utf-8")
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    ok("translate", "--model-dir", model, "--output", link, "a b c")
    assert link.is_symlink() and target.read_text(encoding="utf-8") == reference(model, ["a b c"])[0] + "\n"


def test_output_into_a_fifo_is_streamed(model, reference, tmp_path):
    import threading

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text(encoding="utf-8")))
    reader.start()
    ok("translate", "--model-dir", model, "--output", fifo, "a b c")
    reader.join(timeout=30)
    assert received == [reference(model, ["a b c"])[0] + "\n"] and not fifo.is_file()


def test_evaluate_into_a_fifo_streams_and_keeps_its_scores_in_the_model(model, tmp_path):
    import threading

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text(encoding="utf-8")))
    reader.start()
    report = json.loads(ok("evaluate", "--model-dir", model, "--split", "dev", "--output", fifo, "--json").stdout)
    reader.join(timeout=30)
    assert len(received[0].splitlines()) == 100 and not fifo.is_file()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["pipe"]  # nothing written beside the pipe
    assert Path(report["scores_file"]) == Path(model) / "eval" / "dev-best-beam5.scores.json"
    assert json.loads(Path(report["scores_file"]).read_text())["scores"] == report["scores"]


@pytest.mark.parametrize("command", ["translate", "evaluate"])
def test_output_folders_are_made_by_both_commands(model, tmp_path, command):
    output = tmp_path / "a" / "b" / "out.txt"
    ok(
        command,
        "--model-dir",
        model,
        "--output",
        output,
        *(["a b c"] if command == "translate" else ["--beam-size", "1"]),
    )
    assert output.is_file()


def test_a_closed_pipe_ends_quietly(model):
    lines = "".join(f"{'abcdefghij'[i % 10]} {'abcdefghij'[(i * 3) % 10]}\n" for i in range(3000))
    process = subprocess.Popen(
        [sys.executable, "-m", "nmt_cli", "translate", "--model-dir", model, "--beam-size", "1"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    process.stdin.write(lines.encode())
    process.stdin.close()
    process.stdout.readline()
    process.stdout.close()  # as `| head -1` does
    returncode = process.wait(timeout=300)
    stderr = process.stderr.read().decode()
    process.stderr.close()
    assert returncode == 128 + signal.SIGPIPE, stderr
    assert stderr == ""


def test_unknown_sacrebleu_tokenizer_is_refused(tmp_path):
    for name in ("h.txt", "r.txt"):
        (tmp_path / name).write_text("a b\n", encoding="utf-8")
    completed = nmt(
        "evaluate", "--hypotheses", tmp_path / "h.txt", "--references", tmp_path / "r.txt", "--tokenize", "nope"
    )
    assert_one_line_error(completed, "unknown --tokenize 'nope'")


# Any text a user may paste: every Unicode character but lone surrogates (which no UTF-8 carries).
PASTED = st.text(st.characters(blacklist_categories=("Cs",)), max_size=80).map(lambda t: t.replace("\n", " "))


@settings(max_examples=30, deadline=None)
@given(lines=st.lists(PASTED, min_size=1, max_size=4), as_json=st.booleans())
def test_any_text_in_gives_one_line_out_per_line(model, lines, as_json):
    stdin = "".join(line + "\n" for line in lines)
    result = invoke(
        "translate", "--model-dir", model, "--beam-size", "1", *(["--json"] if as_json else []), input=stdin
    )
    assert result.exit_code == 0, result.output
    out = result.stdout.split("\n")
    assert out[-1] == "" and len(out) - 1 == len(lines)
    if as_json:
        assert [json.loads(record)["source"] for record in out[:-1]] == [line.rstrip("\r") for line in lines]


@pytest.mark.parametrize("command", ["translate", "evaluate"])
def test_an_output_that_is_a_folder_is_refused_naming_it(model, tmp_path, command):
    args = ["a b"] if command == "translate" else []
    completed = nmt(command, "--model-dir", model, "--output", tmp_path, *args, before_tensorflow=True)
    assert_one_line_error(completed, f"--output {tmp_path} is a folder")


def test_text_that_starts_with_a_dash_is_told_how_to_pass_it(tmp_path):
    completed = nmt("translate", "--model-dir", tmp_path / "m", "-5 degrees", before_tensorflow=True)
    assert_one_line_error(completed, "No such option: -5", 'nmt translate -- "-5 ...") or give it on stdin')
    completed = nmt("translate", "--bogus", before_tensorflow=True)
    assert_one_line_error(completed, "No such option: --bogus; see `")


def test_a_closed_stdout_is_one_line(model):
    """`nmt translate ... >&-`: nothing can be printed, and the user is told so."""
    script = f"{sys.executable} -m nmt_cli translate --model-dir {model} 'a b' >&-"
    completed = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 2
    lines = [line for line in completed.stderr.splitlines() if line.strip()]
    assert lines == ["error: standard output is closed: redirect it (> FILE), or give --output FILE"]


# ----------------------------------------------------------------------------------------------
# nmt score
# ----------------------------------------------------------------------------------------------

SCORED_SOURCES = ["a b c d", "e f g", "h i j a b", "c"]


def test_score_of_a_hypothesis_search_found_is_the_score_search_gave_it(model):
    """Forced decoding feeds the decoder the target as search fed it its own choices: the mean
    log-probability is the score search reported, up to the float error of another batch."""
    found = [
        json.loads(line)
        for line in ok("translate", "--model-dir", model, "--tokenized", "--json", *SCORED_SOURCES).stdout.splitlines()
    ]
    pairs = "".join(f"{item['source']}\t{item['translation']}\n" for item in found)
    scored = [
        json.loads(line)
        for line in ok("score", "--model-dir", model, "--no-normalize", "--json", input=pairs).stdout.splitlines()
    ]
    assert [item["target"] for item in scored] == [item["translation"] for item in found]
    for searched, forced in zip(found, scored):
        assert forced["per_token"] == pytest.approx(searched["score"], abs=1e-4)
        assert forced["tokens"] == len(searched["translation"].split()) + 1  # one piece per letter, and <eos>
        assert forced["perplexity"] == pytest.approx(math.exp(-forced["per_token"]))


def test_score_prefers_the_translation_the_model_learnt(model):
    pairs = "a b c d\td c b a\na b c d\ta b c d\n"
    right, wrong = (line.split("\t") for line in ok("score", "--model-dir", model, input=pairs).stdout.splitlines())
    assert float(right[0]) > float(wrong[0]) and float(right[2]) < float(wrong[2])


def test_score_reads_two_aligned_files_as_it_reads_tab_separated_stdin(model, tmp_path):
    sources, targets = tmp_path / "src.txt", tmp_path / "tgt.txt"
    sources.write_text("a b c\ne f\n", encoding="utf-8")
    targets.write_text("c b a\nf e\n", encoding="utf-8")
    from_files = ok("score", "--model-dir", model, "--source", sources, "--target", targets).stdout
    assert from_files == ok("score", "--model-dir", model, input="a b c\tc b a\ne f\tf e\n").stdout
    assert len(from_files.splitlines()) == 2


def test_score_mistakes_are_one_line(model, tmp_path):
    sources, targets = tmp_path / "src.txt", tmp_path / "tgt.txt"
    sources.write_text("a b c\ne f\n", encoding="utf-8")
    targets.write_text("c b a\n", encoding="utf-8")
    completed = nmt("score", "--model-dir", model, "--source", sources, "--target", targets)
    assert_one_line_error(completed, f"{targets} ends at line 1")
    completed = nmt("score", "--model-dir", model, input="a b c with no tab\n")
    assert_one_line_error(completed, "stdin line 1 has no TAB")
    completed = nmt("score", "--model-dir", model, "--source", sources, before_tensorflow=True)
    assert_one_line_error(completed, "give --source and --target together")


def test_with_length_penalty_0_search_scores_are_total_log_probabilities(model):
    """ALPHA 0 ranks by log-probability alone: the scores translate reports are the totals
    `nmt score` gives, on either engine; at the default 1 they are the per-token means."""
    found = ok("translate", "--model-dir", model, "--tokenized", "--json", "--length-penalty", "0", *SCORED_SOURCES)
    found = [json.loads(line) for line in found.stdout.splitlines()]
    pairs = "".join(f"{item['source']}\t{item['translation']}\n" for item in found)
    scored = ok("score", "--model-dir", model, "--no-normalize", "--json", input=pairs).stdout.splitlines()
    for searched, forced in zip(found, map(json.loads, scored)):
        assert forced["log_prob"] == pytest.approx(searched["score"], abs=1e-4)


# ----------------------------------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------------------------------

SAMPLED = ["a b c d", "e f g h i", "j a b c", "d e f", "g h i j a b"]


def test_sampling_with_a_seed_repeats_and_differs_from_greedy(model):
    draw = ["translate", "--model-dir", model, "--sampling-topk", "0", "--sampling-temperature", "5", *SAMPLED]
    first, again = ok(*draw, "--seed", "3").stdout, ok(*draw, "--seed", "3").stdout
    greedy = ok("translate", "--model-dir", model, "--beam-size", "1", *SAMPLED).stdout
    assert first == again and len(lines_of(first)) == len(SAMPLED)
    assert first != greedy  # five flattened draws that all fall on the most likely path: vanishingly rare


@pytest.mark.parametrize("narrowed", [["--sampling-topk", "1"], ["--sampling-topk", "0", "--sampling-topp", "0.01"]])
def test_sampling_among_the_most_likely_token_alone_is_greedy_search(model, narrowed):
    greedy = ok("translate", "--model-dir", model, "--beam-size", "1", *SAMPLED).stdout
    assert ok("translate", "--model-dir", model, *narrowed, "--seed", "5", *SAMPLED).stdout == greedy


def test_sampling_gives_one_translation_per_line(tmp_path):
    completed = nmt(
        "translate", "--model-dir", tmp_path, "--sampling-topk", "5", "--n-best", "2", "x", before_tensorflow=True
    )
    assert_one_line_error(completed, "--n-best needs beam search")


# ----------------------------------------------------------------------------------------------
# --attention and --plot-attention
# ----------------------------------------------------------------------------------------------


def test_json_attention_gives_each_line_the_matrix_of_its_best_translation(model, reference):
    sentences = ["a b c d", "", "j i h"]
    result = ok("translate", "--model-dir", model, "--json", "--attention", "--n-best", "2", *sentences)
    records = [json.loads(line) for line in lines_of(result.stdout)]
    best = [record for record in records if "attention" in record]  # the first record of each line
    assert [record["translation"] for record in best] == reference(model, sentences)
    assert best[1]["attention"] is None  # an empty line has no translation
    for record in (best[0], best[2]):
        attention = record["attention"]
        assert set(attention) == {"source", "target", "weights"}
        assert "".join(attention["source"]).replace("▁", " ").strip() == record["source"]
        assert attention["target"][-1] == "</s>" and len(attention["weights"]) == len(attention["target"])
        for row in attention["weights"]:
            assert len(row) == len(attention["source"]) and sum(row) == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_plot_attention_draws_the_heat_map(model, reference, tmp_path, suffix):
    import xml.etree.ElementTree as ElementTree

    from matplotlib import image

    path = tmp_path / "plots" / f"attention{suffix}"
    result = ok("translate", "--model-dir", model, "--plot-attention", path, "A B C D")
    assert result.stdout == reference(model, ["a b c d"])[0] + "\n"
    if suffix == ".png":
        assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
        height, width, _ = image.imread(path).shape
        assert height > 100 and width > 100
    else:
        root = ElementTree.parse(path).getroot()
        assert root.tag.endswith("svg") and len(root) > 0
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # written whole, nothing left beside it


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["--attention", "a b"], None, "--attention adds the attention to --json output"),
        (["--plot-attention", "out.pdf", "a b"], None, "--plot-attention out.pdf must end in .png or .svg"),
        (["--plot-attention", "out.png", "a b", "c d"], None, "draws the attention of one line, and 2 were given"),
        (["--plot-attention", "out.png"], "a b\nc d\n", "draws the attention of one line, and 2 were given"),
        (["--plot-attention", "out.png"], "\n", "nothing to draw: the line to translate is empty"),
    ],
)
def test_attention_mistakes_are_one_line_before_tensorflow(trained_model, tmp_path, args, stdin, message):
    model_dir = trained_model("attention")  # its Keras engine would load TensorFlow
    completed = nmt("translate", "--model-dir", model_dir, *args, input=stdin, cwd=tmp_path, before_tensorflow=True)
    assert_one_line_error(completed, message)
    assert not (tmp_path / "out.png").exists()


def test_plot_attention_without_matplotlib_says_how_to_install_it(monkeypatch, tmp_path):
    import importlib.util

    from nmt_cli.attention_plot import check_plot_attention

    find_spec = importlib.util.find_spec
    absent = lambda name, *args: None if name == "matplotlib" else find_spec(name, *args)  # noqa: E731
    monkeypatch.setattr(importlib.util, "find_spec", absent)
    with pytest.raises(UserError, match=r"--plot-attention needs matplotlib.*pip install 'nmt-cli\[plot\]'"):
        check_plot_attention(tmp_path / "attention.png")
