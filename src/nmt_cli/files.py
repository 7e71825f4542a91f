"""The one safe way to write a file: temporary name, flush, fsync, rename, fsync of the folder.

A reader, or a run that dies half-way, sees the old file or the new one, never half of one.
Only regular files (or names not yet taken) are replaced that way: a symbolic link is followed
and its target replaced, and a FIFO, device or other special file is written directly, as a
stream, so that `--output /dev/stdout` or a named pipe works and is never swapped for a file.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

SLOW_WRITES = float(os.environ.get("NMT_TEST_SLOW_WRITES", "0") or 0)  # seconds; only tests set it
PARTIAL = re.compile(r"^\..+\.\d+\.partial(\.\w+)?$")


def partial_name(path: Path) -> Path:
    """A hidden temporary name beside `path`, unique to this process, with the same suffix
    (Keras and graphviz choose the format by it)."""
    return path.with_name(f".{path.name}.{os.getpid()}.partial{path.suffix}")


def is_special(path: Path) -> bool:
    """Not a plain file or folder: a device, a FIFO, or anything under /dev or /proc (where
    /dev/stdout may lead to a plain file that the shell holds open: it must be written, not
    replaced)."""
    if Path(path).absolute().parts[1:2] in (("dev",), ("proc",)):
        return True
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def sync_folder(folder: Path) -> None:
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:  # some file systems do not let a folder be opened: nothing to sync there
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def commit(partial: Path, path: Path) -> None:
    """Make a finished temporary file the real one: fsync it, rename it, fsync the folder."""
    descriptor = os.open(partial, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    os.replace(partial, path)
    sync_folder(path.parent)


@contextmanager
def atomic_writer(path: Path, mode: str = "w") -> Iterator[IO]:
    """A stream whose content becomes `path` whole when the block ends, or not at all on error.

    `mode` is "w" (UTF-8 text) or "wb". Special files are written directly.
    """
    encoding = None if "b" in mode else "utf-8"
    if is_special(path):
        with open(path, mode, encoding=encoding) as stream:
            yield stream
        return
    path = Path(os.path.realpath(path)) if Path(path).is_symlink() else Path(path)
    partial = partial_name(path)
    try:
        with open(partial, mode, encoding=encoding) as stream:
            yield stream
            stream.flush()
        commit(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def write_bytes(path: Path, data: bytes) -> None:
    with atomic_writer(path, "wb") as stream:
        stream.write(data)


def write_text(path: Path, text: str) -> None:
    with atomic_writer(path, "w") as stream:
        stream.write(text)


def write_with(save: Callable[[Path], object], path: Path) -> None:
    """`save(temporary path)` for a writer that takes a file name (Keras, graphviz), then commit."""
    path = Path(path)
    partial = partial_name(path)
    try:
        save(partial)
        if SLOW_WRITES:
            time.sleep(SLOW_WRITES)  # a test hook: lets a test kill a process in the middle of a write
        commit(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def save_model(model, path: Path) -> None:
    write_with(model.save, path)


def sync_tree(folder: Path) -> None:
    """fsync every file below `folder`, and the folders: before renaming a built folder into place."""
    for root, _, names in os.walk(folder):
        for name in names:
            descriptor = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        sync_folder(Path(root))


def remove_partials(folder: Path) -> None:
    """Temporary files a killed process left in `folder`."""
    if folder.is_dir():
        for path in folder.iterdir():
            if PARTIAL.match(path.name):
                path.unlink(missing_ok=True)


def sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, read a block at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def staging_folder(path: Path) -> Path:
    """A new hidden folder beside `path`, to build a replacement of the folder `path` in."""
    return Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))


def swap_folder_into_place(built: Path, path: Path) -> None:
    """Rename a built folder to `path`; the old one, if any, goes only once the new one is there."""
    sync_tree(built)
    if path.exists():
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        os.replace(path, old)
        os.replace(built, path)
        sync_folder(path.parent)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(built, path)
        sync_folder(path.parent)


def remove_folder_leftovers(path: Path, complete: str) -> None:
    """Folders a killed `swap_folder_into_place` or build left beside `path`: an old copy that holds
    the file `complete` is put back where no new one took its place; the rest are removed."""
    for old in path.parent.glob(f".{path.name}.old-*"):
        if not path.exists() and (old / complete).exists():
            os.replace(old, path)
        else:
            shutil.rmtree(old, ignore_errors=True)
    for staging in path.parent.glob(f".{path.name}.tmp-*"):
        shutil.rmtree(staging, ignore_errors=True)
