"""Parallel text: the catalogue of known corpora, fetching, reading and validating files."""

from __future__ import annotations

import hashlib
import tomllib
import urllib.error
import urllib.request
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from nmt_cli import files
from nmt_cli.errors import UserError
from nmt_cli.progress import Reporter

SPLITS = ("train", "dev", "test")
DEFAULT_CORPUS = "small_parallel_enja"


@dataclass(frozen=True)
class KnownCorpus:
    name: str
    base_url: str
    languages: tuple[str, ...]
    styles: dict[str, str]
    sha256: dict[str, str]


def catalogue() -> dict[str, KnownCorpus]:
    text = resources.files("nmt_cli").joinpath("data/corpora.toml").read_text(encoding="utf-8")
    return {
        name: KnownCorpus(
            name=name,
            base_url=entry["base_url"],
            languages=tuple(entry["languages"]),
            styles=dict(entry["styles"]),
            sha256=dict(entry["sha256"]),
        )
        for name, entry in tomllib.loads(text).items()
    }


def split_files(split: str, src_lang: str, tgt_lang: str) -> tuple[str, str]:
    return f"{split}.{src_lang}", f"{split}.{tgt_lang}"


def download(
    base_url: str,
    names: list[str],
    dest: Path,
    reporter: Reporter,
    sha256: dict[str, str] | None = None,
    optional: frozenset[str] = frozenset(),
) -> list[str]:
    """Fetch `base_url + name` for each name into `dest`; return the names fetched.

    A name in `optional` that the server does not have (HTTP 404) is skipped. Every other
    failure, and a file whose SHA-256 is not the expected one, raises `UserError` and leaves no
    file of this call behind.
    """
    fetched: list[str] = []
    try:
        for name in names:
            if _download_one(base_url + name, dest / name, reporter, (sha256 or {}).get(name), name in optional):
                fetched.append(name)
    except BaseException:
        for name in fetched:
            (dest / name).unlink(missing_ok=True)
        raise
    return fetched


def _download_one(url: str, path: Path, reporter: Reporter, expected: str | None, optional: bool) -> bool:
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=60) as response, files.atomic_writer(path, "wb") as out:
            size = response.headers.get("Content-Length")
            with reporter.task(f"download {path.name}", total=float(size) if size else None, unit="bytes") as task:
                for block in iter(lambda: response.read(1 << 16), b""):
                    out.write(block)
                    digest.update(block)
                    task.advance(len(block))
            if expected is not None and digest.hexdigest() != expected:
                raise UserError(
                    f"{url} has SHA-256 {digest.hexdigest()}, expected {expected}: the file is corrupt or changed"
                )
    except urllib.error.HTTPError as error:
        if optional and error.code == 404:
            return False
        raise UserError(f"download of {url} failed: HTTP {error.code} {error.reason}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise UserError(f"download of {url} failed: {reason}; check the address and your network") from None
    return True


def locate_splits(folder: Path, src_lang: str, tgt_lang: str) -> dict[str, tuple[Path, Path]]:
    """The `{split}.{lang}` file pairs in `folder`: train is required, dev and test optional."""
    if not folder.is_dir():
        raise UserError(f"source folder {folder} does not exist")
    found: dict[str, tuple[Path, Path]] = {}
    for split in SPLITS:
        src, tgt = (folder / name for name in split_files(split, src_lang, tgt_lang))
        if src.exists() and tgt.exists():
            found[split] = (src, tgt)
        elif src.exists() or tgt.exists() or split == "train":
            missing = tgt if src.exists() else src
            raise UserError(f"missing file {missing}: every {split} split needs both {src.name} and {tgt.name}")
    return found


def read_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file, without line endings."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise UserError(f"cannot read {path}: {error.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise UserError(f"{path} line {line} is not valid UTF-8; convert the file to UTF-8") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def read_parallel(src_path: Path, tgt_path: Path) -> tuple[list[str], list[str]]:
    src, tgt = read_lines(src_path), read_lines(tgt_path)
    if len(src) != len(tgt):
        raise UserError(
            f"{src_path} has {len(src)} lines but {tgt_path} has {len(tgt)}: parallel files must align line by line"
        )
    return src, tgt
