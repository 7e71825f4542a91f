"""The `nmt` command line, run in subprocesses as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import nmt
from nmt_cli import __version__

COMMANDS = ["prepare", "train", "evaluate", "summary", "translate", "export", "score"]

# Runs the typer app in-process on the given arguments, then reports what it printed and
# whether TensorFlow got imported along the way.
HELP_PROBE = textwrap.dedent(
    """
    import contextlib, io, json, sys
    from nmt_cli.cli import app
    out = io.StringIO()
    code = None
    with contextlib.redirect_stdout(out):
        try:
            code = app(sys.argv[1:], standalone_mode=False)
        except SystemExit as exit:
            code = exit.code
    print(json.dumps({"code": code, "help": out.getvalue(), "tensorflow": "tensorflow" in sys.modules}))
    """
)


def env():
    return {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}


def probe(*args: str) -> dict:
    completed = subprocess.run(
        [sys.executable, "-c", HELP_PROBE, *args], capture_output=True, text=True, env=env(), timeout=120
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_root_help_lists_commands_without_importing_tensorflow():
    result = probe("--help")
    assert result["code"] in (0, None)
    assert result["tensorflow"] is False
    for command in COMMANDS:
        assert command in result["help"]
    assert "Usage" in result["help"]


@pytest.mark.parametrize("command", COMMANDS)
def test_command_help_does_not_import_tensorflow(command):
    result = probe(command, "--help")
    assert result["code"] in (0, None)
    assert result["tensorflow"] is False
    assert "Usage" in result["help"]
    assert command in result["help"]


def test_prepare_help_lists_its_options():
    completed = nmt("prepare", "--help")
    assert completed.returncode == 0, completed.stderr
    for option in (
        "--source",
        "--data-dir",
        "--src-lang",
        "--tgt-lang",
        "--vocab-size",
        "--max-length",
        "--max-pairs",
        "--src-style",
        "--tgt-style",
        "--force",
    ):
        assert option in completed.stdout, option


def test_help_exits_zero_as_a_program():
    completed = nmt("--help")
    assert completed.returncode == 0
    assert "prepare" in completed.stdout


def test_version():
    completed = nmt("--version")
    assert completed.returncode == 0
    assert completed.stdout.strip() == f"nmt {__version__}"


def test_user_error_is_one_line_on_stderr(tmp_path):
    completed = nmt("prepare", "--source", "/nonexistent", "--data-dir", str(tmp_path / "data"))
    assert completed.returncode == 2
    assert "Traceback" not in completed.stderr
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr
    assert lines[0].startswith("error: ")
    assert "/nonexistent" in lines[0]
    assert completed.stdout == ""
    assert not (tmp_path / "data").exists()
    assert list(tmp_path.iterdir()) == []  # no staging folder left behind


def test_line_count_mismatch_exits_2(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "train.en").write_text("a cat .\na dog .\na bird .\n", encoding="utf-8")
    (corpus / "train.ja").write_text("猫 。\n犬 。\n", encoding="utf-8")
    completed = nmt("prepare", "--source", str(corpus), "--data-dir", str(tmp_path / "data"))
    assert completed.returncode == 2
    assert "Traceback" not in completed.stderr
    errors = [line for line in completed.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, completed.stderr
    assert f"{corpus / 'train.en'} has 3 lines" in errors[0]
    assert f"{corpus / 'train.ja'} has 2" in errors[0]
    assert not (tmp_path / "data").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus"]


def test_unknown_option_is_a_usage_error(tmp_path):
    completed = nmt("prepare", "--no-such-option")
    assert completed.returncode == 2
    assert "Traceback" not in completed.stderr
    assert "--no-such-option" in completed.stderr


@pytest.mark.parametrize(
    "command",
    [
        ["train", "--data-dir", "{missing}"],
        ["train", "--model-dir", "{tmp}/model", "--data-dir", "{missing}", "--arch", "nope"],
        ["evaluate", "--model-dir", "{missing}"],
        ["translate", "--model-dir", "{missing}", "a b c"],
        ["summary", "--model-dir", "{missing}"],
        ["summary", "--data-dir", "{missing}", "--units", "8"],
    ],
    ids=["train-data", "train-arch", "evaluate", "translate", "summary-model", "summary-data"],
)
def test_a_missing_directory_is_answered_before_tensorflow_loads(tmp_path, command):
    args = [part.format(missing=tmp_path / "nowhere", tmp=tmp_path) for part in command]
    completed = nmt(*args, before_tensorflow=True, cwd=tmp_path)
    assert completed.returncode == 2, completed.stderr  # 99: the answer came after TensorFlow loaded
    assert completed.stderr.startswith("error: ")


@pytest.mark.parametrize("command", COMMANDS)
def test_flags_read_as_flags_in_help(command):
    help_text = probe(command, "--help")["help"]
    assert "<bool>" not in help_text
    assert "(default: None)" not in help_text
