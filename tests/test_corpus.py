"""nmt_cli.corpus: reading and validating parallel files, the catalogue, and downloads."""

from __future__ import annotations

import hashlib
import socket
from contextlib import contextmanager
from pathlib import Path

import pytest

from nmt_cli.corpus import (
    DEFAULT_CORPUS,
    catalogue,
    download,
    locate_splits,
    read_lines,
    read_parallel,
)
from nmt_cli.errors import UserError
from nmt_cli.files import sha256 as file_sha256
from nmt_cli.progress import Reporter


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------------------
# read_lines / read_parallel
# --------------------------------------------------------------------------------------------


def test_read_lines_strips_line_endings(tmp_path):
    path = tmp_path / "a.en"
    path.write_bytes(b"one\r\ntwo\n\nfour")
    assert read_lines(path) == ["one", "two", "", "four"]


def test_read_lines_keeps_final_empty_line_but_not_the_terminator(tmp_path):
    path = tmp_path / "a.en"
    path.write_bytes(b"one\n\n")
    assert read_lines(path) == ["one", ""]
    path.write_bytes(b"")
    assert read_lines(path) == []


def test_read_lines_missing_file(tmp_path):
    missing = tmp_path / "nowhere.en"
    with pytest.raises(UserError) as caught:
        read_lines(missing)
    assert str(missing) in str(caught.value)
    assert "cannot read" in str(caught.value)


def test_read_lines_invalid_utf8_names_file_and_line(tmp_path):
    path = tmp_path / "train.ja"
    path.write_bytes("一行目\n二行目\n".encode() + b"bad \xff\xfe byte\n" + "四行目\n".encode())
    with pytest.raises(UserError) as caught:
        read_lines(path)
    message = str(caught.value)
    assert str(path) in message
    assert "line 3 " in message
    assert "UTF-8" in message


def test_read_lines_invalid_utf8_on_first_line(tmp_path):
    path = tmp_path / "train.en"
    path.write_bytes(b"\xc3(\nok\n")
    with pytest.raises(UserError, match=r"line 1 is not valid UTF-8"):
        read_lines(path)


def test_read_parallel_returns_both_sides(tmp_path):
    (tmp_path / "t.en").write_text("a\nb\n", encoding="utf-8")
    (tmp_path / "t.ja").write_text("あ\nい\n", encoding="utf-8")
    assert read_parallel(tmp_path / "t.en", tmp_path / "t.ja") == (["a", "b"], ["あ", "い"])


def test_read_parallel_line_count_mismatch_names_both_files_and_counts(tmp_path):
    src, tgt = tmp_path / "train.en", tmp_path / "train.ja"
    src.write_text("a\nb\nc\n", encoding="utf-8")
    tgt.write_text("あ\nい\n", encoding="utf-8")
    with pytest.raises(UserError) as caught:
        read_parallel(src, tgt)
    message = str(caught.value)
    assert f"{src} has 3 lines" in message
    assert f"{tgt} has 2" in message


def test_read_parallel_missing_side(tmp_path):
    src = tmp_path / "train.en"
    src.write_text("a\n", encoding="utf-8")
    with pytest.raises(UserError, match="cannot read .*train.ja"):
        read_parallel(src, tmp_path / "train.ja")


# --------------------------------------------------------------------------------------------
# locate_splits
# --------------------------------------------------------------------------------------------


def touch(folder: Path, *names: str) -> None:
    for name in names:
        (folder / name).write_text("x\n", encoding="utf-8")


def test_locate_splits_finds_present_splits(tmp_path):
    touch(tmp_path, "train.en", "train.ja", "dev.en", "dev.ja")
    found = locate_splits(tmp_path, "en", "ja")
    assert found == {
        "train": (tmp_path / "train.en", tmp_path / "train.ja"),
        "dev": (tmp_path / "dev.en", tmp_path / "dev.ja"),
    }


def test_locate_splits_honours_language_order(tmp_path):
    touch(tmp_path, "train.en", "train.ja")
    assert locate_splits(tmp_path, "ja", "en") == {"train": (tmp_path / "train.ja", tmp_path / "train.en")}


def test_locate_splits_missing_folder(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        locate_splits(tmp_path / "absent", "en", "ja")


def test_locate_splits_train_missing(tmp_path):
    touch(tmp_path, "dev.en", "dev.ja")
    with pytest.raises(UserError) as caught:
        locate_splits(tmp_path, "en", "ja")
    assert str(tmp_path / "train.en") in str(caught.value)
    assert "train split" in str(caught.value)


@pytest.mark.parametrize("present, missing", [("dev.en", "dev.ja"), ("dev.ja", "dev.en"), ("test.en", "test.ja")])
def test_locate_splits_one_side_of_a_split_missing(tmp_path, present, missing):
    touch(tmp_path, "train.en", "train.ja", present)
    with pytest.raises(UserError) as caught:
        locate_splits(tmp_path, "en", "ja")
    message = str(caught.value)
    assert f"missing file {tmp_path / missing}" in message


def test_locate_splits_train_one_side_missing(tmp_path):
    touch(tmp_path, "train.en")
    with pytest.raises(UserError, match=r"missing file .*train\.ja"):
        locate_splits(tmp_path, "en", "ja")


# --------------------------------------------------------------------------------------------
# catalogue
# --------------------------------------------------------------------------------------------

EXPECTED_SHA256 = {
    "train.en": "148b05dcd28638fe20ee84f2b1127001c80982be352007dda241fb759adadc76",
    "train.ja": "fc81a1434349ec98a449d7ae9cd2530057f689637684ecfed3501ea6a8a07ecc",
    "dev.en": "04a2673449770657fd5e3b963cb856be3130923212b6db8ac7eaeef18f06c041",
    "dev.ja": "cd534f56b8639dc130f86a365e5ec0aa70042000bdd740a622fbbf8b6be4acca",
    "test.en": "45edb380749ec2b49cca7618fc5a7595fc9f791180672ba466b90c873a4aa8bf",
    "test.ja": "d37dc460a81b064e4106c8913eb11fa300da05cf3f58a7a5bbfec7e20947ddef",
}


def test_catalogue_has_small_parallel_enja_with_six_checksums():
    known = catalogue()
    assert DEFAULT_CORPUS == "small_parallel_enja"
    entry = known["small_parallel_enja"]
    assert entry.name == "small_parallel_enja"
    assert entry.languages == ("en", "ja")
    assert entry.styles == {"en": "en-words-lower", "ja": "ja-words"}
    assert entry.sha256 == EXPECTED_SHA256
    assert entry.base_url.startswith("https://") and entry.base_url.endswith("/")


def test_catalogue_checksums_match_the_real_corpus(corpus_dir):
    entry = catalogue()["small_parallel_enja"]
    for name in ("train.en", "train.ja", "dev.en", "dev.ja"):
        assert file_sha256(corpus_dir / name) == entry.sha256[name], name


def test_file_sha256(tmp_path):
    path = tmp_path / "f"
    data = b"abc" * 500_000  # more than one 1 MiB block
    path.write_bytes(data)
    assert file_sha256(path) == sha(data)


# --------------------------------------------------------------------------------------------
# download
# --------------------------------------------------------------------------------------------


@pytest.fixture
def served(tmp_path, http_server):
    folder = tmp_path / "www"
    folder.mkdir()
    (folder / "train.en").write_bytes(b"hello world .\n" * 100)
    (folder / "train.ja").write_bytes("こんにちは 世界 。\n".encode() * 100)
    return http_server(folder)


@pytest.fixture
def dest(tmp_path):
    folder = tmp_path / "dest"
    folder.mkdir()
    return folder


def test_download_good_file_with_right_sha256_is_kept(served, dest):
    data = (served.folder / "train.en").read_bytes()
    fetched = download(served.url, ["train.en"], dest, Reporter(), sha256={"train.en": sha(data)})
    assert fetched == ["train.en"]
    assert (dest / "train.en").read_bytes() == data
    assert sorted(p.name for p in dest.iterdir()) == ["train.en"]
    assert served.requests == ["/train.en"]


def test_download_without_checksum(served, dest):
    fetched = download(served.url, ["train.en", "train.ja"], dest, Reporter())
    assert fetched == ["train.en", "train.ja"]
    for name in fetched:
        assert (dest / name).read_bytes() == (served.folder / name).read_bytes()


def test_download_wrong_sha256_raises_and_leaves_nothing(served, dest):
    with pytest.raises(UserError) as caught:
        download(served.url, ["train.en"], dest, Reporter(), sha256={"train.en": "0" * 64})
    message = str(caught.value)
    assert "train.en" in message
    assert "0" * 64 in message
    assert list(dest.iterdir()) == []


def test_download_wrong_sha256_on_second_file_removes_the_first(served, dest):
    good = sha((served.folder / "train.en").read_bytes())
    with pytest.raises(UserError):
        download(
            served.url, ["train.en", "train.ja"], dest, Reporter(), sha256={"train.en": good, "train.ja": "f" * 64}
        )
    assert list(dest.iterdir()) == []


def test_download_missing_file_raises(served, dest):
    with pytest.raises(UserError) as caught:
        download(served.url, ["dev.en"], dest, Reporter())
    assert "404" in str(caught.value)
    assert served.url + "dev.en" in str(caught.value)
    assert list(dest.iterdir()) == []


def test_download_missing_required_file_after_good_one_leaves_nothing(served, dest):
    with pytest.raises(UserError, match="404"):
        download(served.url, ["train.en", "dev.en"], dest, Reporter())
    assert list(dest.iterdir()) == []


def test_download_missing_optional_file_is_skipped(served, dest):
    fetched = download(
        served.url,
        ["train.en", "dev.en", "train.ja", "dev.ja"],
        dest,
        Reporter(),
        optional=frozenset({"dev.en", "dev.ja"}),
    )
    assert fetched == ["train.en", "train.ja"]
    assert sorted(p.name for p in dest.iterdir()) == ["train.en", "train.ja"]
    assert served.requests == ["/train.en", "/dev.en", "/train.ja", "/dev.ja"]


def test_download_optional_file_that_exists_is_fetched(served, dest):
    fetched = download(served.url, ["train.en"], dest, Reporter(), optional=frozenset({"train.en"}))
    assert fetched == ["train.en"]


def test_download_unreachable_server_raises_user_error(http_server, dest):
    # http_server is requested only for its proxy settings. A port that was just free on
    # 127.0.0.1 refuses the connection.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(UserError, match="download of .* failed"):
        download(f"http://127.0.0.1:{port}/", ["train.en"], dest, Reporter())
    assert list(dest.iterdir()) == []


class RecordingReporter(Reporter):
    def __init__(self):
        self.tasks: list[tuple[str, float | None, str]] = []
        self.advanced = 0.0

    def task(self, description, total=None, unit=""):
        reporter = self

        class _Task:
            def advance(self, amount=1, **fields):
                reporter.advanced += amount

            def reset(self, total=None, description=None):
                pass

        @contextmanager
        def manager():
            self.tasks.append((description, total, unit))
            yield _Task()

        return manager()


def test_download_reports_progress_in_bytes(served, dest):
    reporter = RecordingReporter()
    size = (served.folder / "train.en").stat().st_size
    download(served.url, ["train.en"], dest, reporter)
    assert reporter.tasks == [("download train.en", float(size), "bytes")]
    assert reporter.advanced == size
