"""nmt_cli.files: whole files or none, and special files written through."""

from __future__ import annotations

import os
import threading

import pytest

from nmt_cli import files


def test_write_text_replaces_whole(tmp_path):
    path = tmp_path / "config.json"
    files.write_text(path, "first\n")
    assert path.read_text(encoding="utf-8") == "first\n"
    files.write_text(path, "second ünïcode\n")
    assert path.read_text(encoding="utf-8") == "second ünïcode\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old\n", encoding="utf-8")
    with pytest.raises(RuntimeError):
        with files.atomic_writer(path) as stream:
            stream.write("half of the new")
            raise RuntimeError("interrupted")
    assert path.read_text(encoding="utf-8") == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_nothing_is_visible_until_the_write_completes(tmp_path):
    path = tmp_path / "out.txt"
    with files.atomic_writer(path) as stream:
        stream.write("a line\n")
        assert not path.exists()
    assert path.read_text(encoding="utf-8") == "a line\n"


def test_a_symlink_is_followed_not_replaced(tmp_path):
    target = tmp_path / "real.txt"
    target.write_text("old\n", encoding="utf-8")
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    files.write_text(link, "new\n")
    assert link.is_symlink()
    assert target.read_text(encoding="utf-8") == "new\n"


def test_a_fifo_is_written_as_a_stream(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text(encoding="utf-8")))
    reader.start()
    files.write_text(fifo, "through the pipe\n")
    reader.join(timeout=10)
    assert received == ["through the pipe\n"]
    assert fifo.exists() and not fifo.is_file()


def test_what_lies_under_dev_or_proc_is_written_never_replaced(tmp_path):
    # /dev/stdout leads to whatever stdout is (here perhaps a plain file the shell holds open).
    from pathlib import Path

    assert files.is_special(Path("/dev/stdout")) and files.is_special(Path("/proc/self/fd/1"))
    assert not files.is_special(tmp_path / "plain.txt") and not files.is_special(tmp_path)


def test_remove_partials_removes_only_ours(tmp_path):
    ours = tmp_path / ".history.csv.123.partial"
    keras_partial = tmp_path / ".best.keras.123.partial.keras"
    theirs = tmp_path / "notes.partial"
    for path in (ours, keras_partial, theirs):
        path.write_text("x")
    files.remove_partials(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.partial"]
