"""nmt_cli.prepare: corpus in, tokenizers + encoded arrays + manifest out."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

import nmt_cli.corpus
import nmt_cli.prepare
from nmt_cli import __version__
from nmt_cli.config import PrepareOptions
from nmt_cli.corpus import KnownCorpus, catalogue
from nmt_cli.datadir import MANIFEST, DataDir
from nmt_cli.errors import UserError
from nmt_cli.files import sha256 as file_sha256
from nmt_cli.prepare import prepare
from nmt_cli.progress import Reporter
from nmt_cli.tokenizer import Tokenizer

VOCAB = 8000  # a ceiling the synthetic corpora never fill


class NoteReporter(Reporter):
    def __init__(self):
        self.notes: list[str] = []

    def note(self, message):
        self.notes.append(message)


def decode(data_dir: Path, split: str) -> tuple[list[str], list[str]]:
    src_ids, tgt_ids = DataDir(data_dir).load_split(split)
    en = Tokenizer.load(data_dir / "spm.en.model")
    ja = Tokenizer.load(data_dir / "spm.ja.model")
    return en.decode([a.tolist() for a in src_ids]), ja.decode([a.tolist() for a in tgt_ids])


def snapshot(folder: Path) -> dict[str, tuple[int, int, bytes]]:
    """name -> (mtime_ns, inode, content) of every file in `folder`."""
    result = {}
    for path in sorted(folder.iterdir()):
        stat = path.stat()
        result[path.name] = (stat.st_mtime_ns, stat.st_ino, path.read_bytes())
    return result


def leftovers(parent: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name not in keep)


# --------------------------------------------------------------------------------------------
# A corpus with pairs that must be dropped
# --------------------------------------------------------------------------------------------

MAX_LENGTH = 40


@pytest.fixture
def dirty(tmp_path, make_pairs, write_corpus):
    """train: 200 clean pairs + 3 empty + 2 over-long; dev: 20 clean + 1 empty + 1 over-long; test: 10."""
    clean = make_pairs(200, seed=3)
    long_en = " ".join(["big red house"] * 40) + " ."  # 120 words: far over MAX_LENGTH pieces
    long_ja = " ".join(["大きい 赤い 家"] * 40) + " 。"
    train = list(clean)
    train.insert(10, ("", "空 です 。"))
    train.insert(50, ("the cat .", ""))
    train.insert(90, ("   ", " \t "))
    train.insert(120, (long_en, "猫 。"))
    train.insert(150, ("a dog .", long_ja))
    dev = make_pairs(20, seed=4) + [("", ""), (long_en, long_ja)]
    test = make_pairs(10, seed=5)
    folder = write_corpus(tmp_path / "corpus", train, dev, test)
    return {"folder": folder, "clean": clean, "train": train, "dev": dev, "test": test}


@pytest.fixture
def dirty_prepared(tmp_path, dirty):
    reporter = NoteReporter()
    data_dir = tmp_path / "work" / "data"
    result = prepare(
        PrepareOptions(data_dir=data_dir, source=str(dirty["folder"]), vocab_size=VOCAB, max_length=MAX_LENGTH),
        reporter,
    )
    return {**dirty, "data_dir": data_dir, "result": result, "reporter": reporter}


def test_prepare_writes_the_expected_files(dirty_prepared):
    data_dir = dirty_prepared["data_dir"]
    assert dirty_prepared["result"].rebuilt is True
    assert sorted(p.name for p in data_dir.iterdir()) == sorted(
        [
            MANIFEST,
            "spm.en.model",
            "spm.ja.model",
            "train.npz",
            "dev.npz",
            "test.npz",
            "dev.en",
            "dev.ja",
            "test.en",
            "test.ja",
        ]
    )
    # Nothing but the data directory is left in its parent: no staging or old folders.
    assert leftovers(data_dir.parent, {"data"}) == []


def test_manifest_fields(dirty_prepared):
    data_dir, folder = dirty_prepared["data_dir"], dirty_prepared["folder"]
    manifest = dirty_prepared["result"].manifest
    assert json.loads((data_dir / MANIFEST).read_text(encoding="utf-8")) == asdict(manifest)
    assert DataDir(data_dir).manifest() == manifest

    assert manifest.tool_version == __version__
    assert re.fullmatch(r"[0-9a-f]{64}", manifest.fingerprint)
    assert manifest.source == {"kind": "folder", "path": str(folder.resolve())}
    assert manifest.languages == {"source": "en", "target": "ja"}
    assert manifest.styles == {"en": "raw", "ja": "raw"}
    assert manifest.special_ids == {"pad": 0, "unk": 1, "bos": 2, "eos": 3}
    assert manifest.options == {"vocab_size": VOCAB, "max_length": MAX_LENGTH, "max_pairs": None}

    expected_lines = {"train": 205, "dev": 22, "test": 10}
    assert set(manifest.files) == {f"{s}.{lang}" for s in expected_lines for lang in ("en", "ja")}
    for name, info in manifest.files.items():
        assert info == {"sha256": file_sha256(folder / name), "lines": expected_lines[name.split(".")[0]]}, name

    assert manifest.splits == {
        "train": {"pairs": 200, "dropped": {"empty": 3, "too_long": 2}},
        "dev": {"pairs": 22, "held_out_from_train": False},
        "test": {"pairs": 10},
    }


def test_manifest_vocabulary(dirty_prepared):
    data_dir = dirty_prepared["data_dir"]
    vocabulary = dirty_prepared["result"].manifest.vocabulary
    assert set(vocabulary) == {"en", "ja"}
    for lang, info in vocabulary.items():
        actual = Tokenizer.load(data_dir / f"spm.{lang}.model").vocab_size
        digest = file_sha256(data_dir / f"spm.{lang}.model")
        assert info == {"requested": VOCAB, "actual": actual, "model": f"spm.{lang}.model", "sha256": digest}
        assert 260 < actual < VOCAB
    # Asking for more than the text supports is reported, not an error.
    notes = dirty_prepared["reporter"].notes
    assert any(f"fewer than the {VOCAB} asked for" in note and note.startswith("en ") for note in notes)
    assert any(f"fewer than the {VOCAB} asked for" in note and note.startswith("ja ") for note in notes)


def test_manifest_token_lengths_match_the_encoded_arrays(dirty_prepared):
    data_dir = dirty_prepared["data_dir"]
    lengths = dirty_prepared["result"].manifest.token_lengths
    assert set(lengths) == {"train", "dev", "test"}
    for split in ("train", "dev", "test"):
        src_ids, tgt_ids = DataDir(data_dir).load_split(split)
        assert set(lengths[split]) == {"en", "ja"}
        for lang, seqs in (("en", src_ids), ("ja", tgt_ids)):
            sizes = np.array([len(s) for s in seqs])
            stats = lengths[split][lang]
            assert set(stats) == {"mean", "p95", "max"}
            assert stats["mean"] == pytest.approx(sizes.mean(), abs=0.006)
            assert stats["p95"] == pytest.approx(float(np.percentile(sizes, 95)))
            assert stats["max"] == int(sizes.max())
    # Training pairs are capped at max_length; dev keeps its over-long pair.
    assert lengths["train"]["en"]["max"] <= MAX_LENGTH and lengths["train"]["ja"]["max"] <= MAX_LENGTH
    assert lengths["dev"]["en"]["max"] > MAX_LENGTH and lengths["dev"]["ja"]["max"] > MAX_LENGTH


def test_empty_and_over_long_pairs_are_dropped_from_train(dirty_prepared):
    en, ja = decode(dirty_prepared["data_dir"], "train")
    assert list(zip(en, ja)) == dirty_prepared["clean"]


def test_dev_and_test_are_never_changed(dirty_prepared):
    data_dir, folder = dirty_prepared["data_dir"], dirty_prepared["folder"]
    for split in ("dev", "test"):
        pairs = dirty_prepared[split]
        src_ids, tgt_ids = DataDir(data_dir).load_split(split)
        assert len(src_ids) == len(tgt_ids) == len(pairs)
        for lang in ("en", "ja"):
            assert (data_dir / f"{split}.{lang}").read_bytes() == (folder / f"{split}.{lang}").read_bytes()
        en, ja = decode(data_dir, split)
        assert list(zip(en, ja)) == pairs
    # The empty dev pair is kept as two empty sequences.
    src_ids, tgt_ids = DataDir(data_dir).load_split("dev")
    assert len(src_ids[20]) == 0 and len(tgt_ids[20]) == 0


def test_encoded_arrays_layout(dirty_prepared):
    data_dir = dirty_prepared["data_dir"]
    with np.load(data_dir / "train.npz") as arrays:
        assert sorted(arrays.files) == ["source_ids", "source_offsets", "target_ids", "target_offsets"]
        assert arrays["source_ids"].dtype == np.uint16
        assert arrays["source_offsets"].dtype == np.int64
        assert arrays["source_offsets"][0] == 0
        assert arrays["source_offsets"][-1] == len(arrays["source_ids"])
        assert len(arrays["source_offsets"]) == len(arrays["target_offsets"]) == 201
        # No bos/eos/pad/unk inside the stored sequences.
        assert arrays["source_ids"].min() >= 4 and arrays["target_ids"].min() >= 4


def test_load_encoded_missing_split_is_a_user_error(dirty_prepared):
    with pytest.raises(UserError, match="nope.npz is missing"):
        DataDir(dirty_prepared["data_dir"]).load_split("nope")


def test_load_manifest_errors(tmp_path):
    with pytest.raises(UserError, match="is not a prepared data directory"):
        DataDir(tmp_path).manifest()
    (tmp_path / MANIFEST).write_text("{not json", encoding="utf-8")
    with pytest.raises(UserError, match="--force"):
        DataDir(tmp_path).manifest()


# --------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------


def test_missing_dev_holds_out_a_slice_of_train(tmp_path, make_pairs, write_corpus):
    train = make_pairs(200, seed=6)
    folder = write_corpus(tmp_path / "corpus", train)
    data_dir = tmp_path / "data"
    reporter = NoteReporter()
    manifest = prepare(PrepareOptions(data_dir=data_dir, source=str(folder), vocab_size=VOCAB), reporter).manifest
    held = 200 // 50
    assert manifest.splits["dev"] == {"pairs": held, "held_out_from_train": True}
    assert manifest.splits["train"]["pairs"] == 200 - held
    assert set(manifest.files) == {"train.en", "train.ja"}
    assert list(zip(*decode(data_dir, "dev"))) == train[-held:]
    assert list(zip(*decode(data_dir, "train"))) == train[:-held]
    assert (data_dir / "dev.en").read_text(encoding="utf-8") == "".join(en + "\n" for en, _ in train[-held:])
    assert any(f"holding out the last {held} training pairs" in note for note in reporter.notes)


def test_held_out_dev_needs_two_pairs(tmp_path, write_corpus):
    folder = write_corpus(tmp_path / "corpus", [("a cat .", "猫 。")])
    with pytest.raises(UserError, match="at least 2 pairs"):
        prepare(PrepareOptions(data_dir=tmp_path / "data", source=str(folder)))
    assert not (tmp_path / "data").exists()


def test_max_pairs_keeps_the_first_training_pairs(tmp_path, synthetic_corpus):
    data_dir = tmp_path / "data"
    manifest = prepare(
        PrepareOptions(data_dir=data_dir, source=str(synthetic_corpus.folder), vocab_size=VOCAB, max_pairs=50)
    ).manifest
    assert manifest.options["max_pairs"] == 50
    assert manifest.splits["train"]["pairs"] == 50
    assert manifest.splits["dev"]["pairs"] == 20
    assert manifest.files["train.en"]["lines"] == 200  # the files are described as they are
    assert list(zip(*decode(data_dir, "train"))) == synthetic_corpus.train[:50]


def test_max_pairs_then_held_out_dev(tmp_path, make_pairs, write_corpus):
    train = make_pairs(200, seed=7)
    folder = write_corpus(tmp_path / "corpus", train)
    data_dir = tmp_path / "data"
    manifest = prepare(PrepareOptions(data_dir=data_dir, source=str(folder), vocab_size=VOCAB, max_pairs=100)).manifest
    assert manifest.splits["dev"]["pairs"] == 2
    assert manifest.splits["train"]["pairs"] == 98
    assert list(zip(*decode(data_dir, "dev"))) == train[98:100]


def test_explicit_styles_are_recorded(tmp_path, synthetic_corpus):
    manifest = prepare(
        PrepareOptions(
            data_dir=tmp_path / "data",
            source=str(synthetic_corpus.folder),
            vocab_size=VOCAB,
            src_style="en-words-lower",
            tgt_style="ja-words",
        )
    ).manifest
    assert manifest.styles == {"en": "en-words-lower", "ja": "ja-words"}


@pytest.mark.parametrize(
    "options, message",
    [
        ({"src_lang": "en", "tgt_lang": "en"}, "must differ"),
        ({"max_pairs": 0}, "--max-pairs must be at least 1"),
        ({"src_style": "fancy"}, "unknown text style 'fancy'"),
        ({"max_length": 1}, "longer than --max-length 1"),
        ({"vocab_size": 50}, "--vocab-size 50 is too small"),
    ],
)
def test_bad_options_are_user_errors(tmp_path, synthetic_corpus, options, message):
    parent = tmp_path / "work"
    with pytest.raises(UserError, match=re.escape(message)):
        prepare(PrepareOptions(data_dir=parent / "data", source=str(synthetic_corpus.folder), **options))
    assert not (parent / "data").exists()
    assert not parent.exists() or leftovers(parent, set()) == []


def test_training_split_without_text_is_refused(tmp_path, write_corpus):
    folder = write_corpus(tmp_path / "corpus", [("", "猫")] * 3 + [("cat", " ")] * 3, dev=[("a", "b")])
    with pytest.raises(UserError, match="no pair with text on both sides"):
        prepare(PrepareOptions(data_dir=tmp_path / "data", source=str(folder)))


def test_other_language_pair_and_direction(tmp_path, synthetic_corpus):
    data_dir = tmp_path / "data"
    manifest = prepare(
        PrepareOptions(
            data_dir=data_dir, source=str(synthetic_corpus.folder), src_lang="ja", tgt_lang="en", vocab_size=VOCAB
        )
    ).manifest
    assert manifest.languages == {"source": "ja", "target": "en"}
    src_ids, _ = DataDir(data_dir).load_split("dev")
    ja = Tokenizer.load(data_dir / "spm.ja.model")
    assert ja.decode([a.tolist() for a in src_ids]) == [ja_text for _, ja_text in synthetic_corpus.dev]


# --------------------------------------------------------------------------------------------
# Idempotence, interruption, foreign directories
# --------------------------------------------------------------------------------------------


def test_second_run_is_a_no_op_and_force_rebuilds(tmp_path, synthetic_corpus):
    data_dir = tmp_path / "work" / "data"
    options = PrepareOptions(data_dir=data_dir, source=str(synthetic_corpus.folder), vocab_size=VOCAB)
    first = prepare(options)
    assert first.rebuilt is True
    before, dir_inode = snapshot(data_dir), data_dir.stat().st_ino

    second = prepare(options)
    assert second.rebuilt is False
    assert second.manifest == first.manifest
    assert snapshot(data_dir) == before
    assert data_dir.stat().st_ino == dir_inode
    assert leftovers(data_dir.parent, {"data"}) == []

    forced = prepare(
        PrepareOptions(data_dir=data_dir, source=str(synthetic_corpus.folder), vocab_size=VOCAB, force=True)
    )
    assert forced.rebuilt is True
    assert data_dir.stat().st_ino != dir_inode  # a new directory was swapped in
    after = snapshot(data_dir)
    assert after.keys() == before.keys()
    # Same input, same options: byte-identical output.
    assert {name: value[2] for name, value in after.items()} == {name: value[2] for name, value in before.items()}
    assert leftovers(data_dir.parent, {"data"}) == []


def test_changed_options_or_files_rebuild(tmp_path, synthetic_corpus):
    data_dir = tmp_path / "data"
    folder = synthetic_corpus.folder
    first = prepare(PrepareOptions(data_dir=data_dir, source=str(folder), vocab_size=VOCAB))
    changed = prepare(PrepareOptions(data_dir=data_dir, source=str(folder), vocab_size=VOCAB, max_length=60))
    assert changed.rebuilt is True
    assert changed.manifest.fingerprint != first.manifest.fingerprint
    with (
        open(folder / "train.en", "a", encoding="utf-8") as out_en,
        open(folder / "train.ja", "a", encoding="utf-8") as out_ja,
    ):
        out_en.write("one more line .\n")
        out_ja.write("もう 一 行 。\n")
    grown = prepare(PrepareOptions(data_dir=data_dir, source=str(folder), vocab_size=VOCAB, max_length=60))
    assert grown.rebuilt is True
    assert grown.manifest.splits["train"]["pairs"] == 201


@pytest.mark.parametrize("target", ["train_tokenizer", "save_split"])
def test_interrupted_build_keeps_the_previous_directory(tmp_path, synthetic_corpus, monkeypatch, target):
    data_dir = tmp_path / "work" / "data"
    options = PrepareOptions(data_dir=data_dir, source=str(synthetic_corpus.folder), vocab_size=VOCAB)
    prepare(options)
    before = snapshot(data_dir)

    real = getattr(nmt_cli.prepare, target)
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # let the build get part of the way
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(nmt_cli.prepare, target, interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare(PrepareOptions(data_dir=data_dir, source=str(synthetic_corpus.folder), vocab_size=VOCAB, force=True))
    assert len(calls) == 2
    assert snapshot(data_dir) == before
    assert leftovers(data_dir.parent, {"data"}) == []
    monkeypatch.undo()
    assert prepare(options).rebuilt is False  # still recognised as complete and current


def test_interrupted_first_build_leaves_nothing(tmp_path, synthetic_corpus, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(nmt_cli.prepare, "save_split", interrupted)
    parent = tmp_path / "work"
    with pytest.raises(KeyboardInterrupt):
        prepare(PrepareOptions(data_dir=parent / "data", source=str(synthetic_corpus.folder), vocab_size=VOCAB))
    assert not parent.exists()  # made by this run, so removed with the rest


def test_foreign_directory_is_refused(tmp_path, synthetic_corpus):
    parent = tmp_path / "work"
    data_dir = parent / "mine"
    data_dir.mkdir(parents=True)
    (data_dir / "notes.txt").write_text("precious\n", encoding="utf-8")
    with pytest.raises(UserError) as caught:
        prepare(PrepareOptions(data_dir=data_dir, source=str(synthetic_corpus.folder), vocab_size=VOCAB))
    assert str(data_dir) in str(caught.value)
    assert "not a prepared data directory" in str(caught.value)
    assert [p.name for p in data_dir.iterdir()] == ["notes.txt"]
    assert (data_dir / "notes.txt").read_text(encoding="utf-8") == "precious\n"
    assert leftovers(parent, {"mine"}) == []


def test_existing_empty_directory_is_used(tmp_path, synthetic_corpus):
    data_dir = tmp_path / "empty"
    data_dir.mkdir()
    assert prepare(PrepareOptions(data_dir=data_dir, source=str(synthetic_corpus.folder), vocab_size=VOCAB)).rebuilt
    assert (data_dir / MANIFEST).is_file()


def test_prepared_directory_with_broken_manifest_is_rebuilt(tmp_path, synthetic_corpus):
    data_dir = tmp_path / "data"
    options = PrepareOptions(data_dir=data_dir, source=str(synthetic_corpus.folder), vocab_size=VOCAB)
    prepare(options)
    (data_dir / MANIFEST).write_text("{broken", encoding="utf-8")
    result = prepare(options)
    assert result.rebuilt is True
    assert DataDir(data_dir).manifest() == result.manifest


# --------------------------------------------------------------------------------------------
# Sources over HTTP
# --------------------------------------------------------------------------------------------


def test_prepare_from_url(tmp_path, synthetic_corpus, http_server):
    served = http_server(synthetic_corpus.folder)  # train + dev; test.* answer 404
    data_dir = tmp_path / "data"
    url = served.url.rstrip("/")  # a base URL without the final slash works too
    manifest = prepare(PrepareOptions(data_dir=data_dir, source=url, vocab_size=VOCAB)).manifest
    assert manifest.source == {"kind": "url", "url": served.url}
    assert set(manifest.splits) == {"train", "dev"}
    assert manifest.splits["dev"] == {"pairs": 20, "held_out_from_train": False}
    assert set(manifest.files) == {"train.en", "train.ja", "dev.en", "dev.ja"}
    for name, info in manifest.files.items():
        assert info["sha256"] == file_sha256(synthetic_corpus.folder / name)
    assert sorted(served.requests) == sorted(f"/{s}.{lang}" for s in ("train", "dev", "test") for lang in ("en", "ja"))
    assert list(zip(*decode(data_dir, "train"))) == synthetic_corpus.train
    assert leftovers(tmp_path, {"corpus", "data"}) == []


def test_prepare_from_url_without_train_fails(tmp_path, http_server):
    folder = tmp_path / "www"
    folder.mkdir()
    served = http_server(folder)
    with pytest.raises(UserError, match=r"train\.en failed: HTTP 404"):
        prepare(PrepareOptions(data_dir=tmp_path / "data", source=served.url))
    assert leftovers(tmp_path, {"www"}) == []


def test_prepare_from_url_with_half_a_dev_split_fails(tmp_path, synthetic_corpus, http_server):
    (synthetic_corpus.folder / "dev.ja").unlink()
    served = http_server(synthetic_corpus.folder)
    with pytest.raises(UserError, match=r"dev\.ja"):
        prepare(PrepareOptions(data_dir=tmp_path / "data", source=served.url))
    assert leftovers(tmp_path, {"corpus"}) == []


@pytest.fixture
def fake_default_corpus(tmp_path, corpus_dir, http_server, monkeypatch, make_pairs):
    """The catalogue's small_parallel_enja, served from 127.0.0.1.

    The real train/dev files come from NMT_TEST_CORPUS; test.* there are absent, so small
    stand-ins are served and the fake catalogue lists their checksums.
    """
    www = tmp_path / "www"
    www.mkdir()
    for name in ("train.en", "train.ja", "dev.en", "dev.ja"):
        os.symlink(corpus_dir / name, www / name)
    test_pairs = make_pairs(5, seed=9)
    (www / "test.en").write_text("".join(en + "\n" for en, _ in test_pairs), encoding="utf-8")
    (www / "test.ja").write_text("".join(ja + "\n" for _, ja in test_pairs), encoding="utf-8")
    served = http_server(www)
    real = catalogue()["small_parallel_enja"]
    fake = KnownCorpus(
        name=real.name,
        base_url=served.url,
        languages=real.languages,
        styles=real.styles,
        sha256={name: file_sha256(www / name) for name in real.sha256},
    )
    # The real train/dev files are the catalogue's.
    for name in ("train.en", "train.ja", "dev.en", "dev.ja"):
        assert fake.sha256[name] == real.sha256[name]
    fake_catalogue = lambda: {fake.name: fake}  # noqa: E731
    monkeypatch.setattr(nmt_cli.prepare, "catalogue", fake_catalogue)
    monkeypatch.setattr(nmt_cli.corpus, "catalogue", fake_catalogue)
    return {"served": served, "entry": fake, "test_pairs": test_pairs}


def test_prepare_default_corpus_downloads_checks_and_is_idempotent(tmp_path, fake_default_corpus):
    served = fake_default_corpus["served"]
    data_dir = tmp_path / "data"
    options = PrepareOptions(data_dir=data_dir, max_pairs=2000)  # source=None: the default corpus
    result = prepare(options)
    manifest = result.manifest
    assert result.rebuilt is True
    assert manifest.source == {"kind": "catalogue", "name": "small_parallel_enja", "url": served.url}
    assert manifest.styles == {"en": "en-words-lower", "ja": "ja-words"}
    assert {name: info["lines"] for name, info in manifest.files.items()} == {
        "train.en": 50000,
        "train.ja": 50000,
        "dev.en": 500,
        "dev.ja": 500,
        "test.en": 5,
        "test.ja": 5,
    }
    assert {name: info["sha256"] for name, info in manifest.files.items()} == fake_default_corpus["entry"].sha256
    train = manifest.splits["train"]
    assert train["pairs"] + sum(train["dropped"].values()) == 2000
    assert manifest.splits["dev"] == {"pairs": 500, "held_out_from_train": False}
    assert manifest.splits["test"] == {"pairs": 5}
    assert sorted(served.requests) == sorted(f"/{s}.{lang}" for s in ("train", "dev", "test") for lang in ("en", "ja"))
    assert leftovers(tmp_path, {"www", "data"}) == []

    # Up to date: nothing is downloaded again and nothing is touched.
    before = snapshot(data_dir)
    served.requests.clear()
    again = prepare(options)
    assert again.rebuilt is False
    assert again.manifest == manifest
    assert served.requests == []
    assert snapshot(data_dir) == before


def test_prepare_default_corpus_with_corrupt_download_fails_cleanly(tmp_path, fake_default_corpus, monkeypatch):
    entry = fake_default_corpus["entry"]
    entry.sha256["dev.ja"] = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(UserError, match=r"dev\.ja has SHA-256 .* the file is corrupt or changed"):
        prepare(PrepareOptions(data_dir=tmp_path / "data"))
    assert leftovers(tmp_path, {"www"}) == []


def test_default_corpus_has_no_such_language(tmp_path, fake_default_corpus):
    with pytest.raises(UserError, match="small_parallel_enja has no 'de' side"):
        prepare(PrepareOptions(data_dir=tmp_path / "data", tgt_lang="de"))
    assert fake_default_corpus["served"].requests == []


# --------------------------------------------------------------------------------------------
# End to end on the real corpus
# --------------------------------------------------------------------------------------------


def test_cli_prepare_real_corpus_end_to_end(tmp_path, corpus_dir):
    data_dir = tmp_path / "data"
    env = {**os.environ, "COLUMNS": "200"}
    completed = subprocess.run(
        [sys.executable, "-m", "nmt_cli", "prepare", "--source", str(corpus_dir), "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    assert "Traceback" not in completed.stderr
    stdout = completed.stdout
    assert "prepared" in stdout
    assert re.search(r"^\W*train\W.*50000", stdout, re.MULTILINE), stdout
    assert re.search(r"^\W*dev\W.*500", stdout, re.MULTILINE), stdout
    assert "recognised small_parallel_enja" in completed.stderr

    manifest = DataDir(data_dir).manifest()
    assert manifest.splits["train"]["pairs"] == 50000
    assert manifest.splits["train"]["dropped"] == {"empty": 0, "too_long": 0}
    assert manifest.splits["dev"] == {"pairs": 500, "held_out_from_train": False}
    assert manifest.styles == {"en": "en-words-lower", "ja": "ja-words"}
    assert manifest.source == {"kind": "folder", "path": str(corpus_dir.resolve()), "corpus": "small_parallel_enja"}
    assert {name: info["lines"] for name, info in manifest.files.items()} == {
        "train.en": 50000,
        "train.ja": 50000,
        "dev.en": 500,
        "dev.ja": 500,
    }
    for lang in ("en", "ja"):
        assert 260 < manifest.vocabulary[lang]["actual"] <= 8000
    assert (data_dir / "dev.en").read_bytes() == (corpus_dir / "dev.en").read_bytes()
    # The model writes the corpus' own characters: every dev reference survives encode -> decode.
    target = Tokenizer.load(DataDir(data_dir).tokenizer("ja"))
    references = (corpus_dir / "dev.ja").read_text(encoding="utf-8").splitlines()
    assert target.decode(target.encode(references)) == references


def test_the_target_side_keeps_its_characters_and_the_source_side_folds_them(tmp_path, make_pairs, write_corpus):
    pairs = [("ｔｈｅ １０ cats .", "猫 は １０ 匹 です 。")] * 30 + make_pairs(100, seed=4)
    folder = write_corpus(tmp_path / "corpus", pairs, pairs[:5])
    data_dir = tmp_path / "data"
    prepare(PrepareOptions(data_dir=data_dir, source=str(folder), vocab_size=VOCAB))
    data = DataDir(data_dir)
    source, target = (Tokenizer.load(data.tokenizer(lang)) for lang in ("en", "ja"))
    assert target.decode(target.encode(["猫 は １０ 匹 です 。"])) == ["猫 は １０ 匹 です 。"]
    assert source.decode(source.encode(["ｔｈｅ １０ cats ."])) == ["the 10 cats ."]  # NFKC: what input varies in


def test_empty_dev_split_is_refused(tmp_path):
    from conftest import _write_split, reversal_pairs

    source = tmp_path / "corpus"
    source.mkdir()
    _write_split(source, "train", reversal_pairs(50, seed=3))
    (source / "dev.en").write_text("")
    (source / "dev.ja").write_text("")
    with pytest.raises(UserError, match="dev split is empty"):
        prepare(PrepareOptions(data_dir=tmp_path / "out", source=str(source)))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"vocab_size": 0}, "--vocab-size"),
        ({"max_length": 0}, "--max-length"),
        ({"src_style": "shouty"}, "unknown text style"),
    ],
)
def test_bad_options_are_refused_before_any_work(tmp_path, options, message):
    with pytest.raises(UserError, match=message):
        prepare(PrepareOptions(data_dir=tmp_path / "out", source=str(tmp_path / "nowhere"), **options))


def test_a_killed_swap_is_repaired(tmp_path):
    from conftest import _write_split, reversal_pairs

    source = tmp_path / "corpus"
    source.mkdir()
    _write_split(source, "train", reversal_pairs(60, seed=4))
    data_dir = tmp_path / "prepared"
    prepare(PrepareOptions(data_dir=data_dir, source=str(source)))
    # As if killed between the two renames of a rebuild: only the old copy is left, aside.
    data_dir.rename(tmp_path / ".prepared.old-999")
    (tmp_path / ".prepared.tmp-abc").mkdir()
    result = prepare(PrepareOptions(data_dir=data_dir, source=str(source)))
    assert result.rebuilt is False and (data_dir / "manifest.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "prepared"]


def test_a_failed_first_run_leaves_no_folder(tmp_path):
    with pytest.raises(UserError):
        prepare(PrepareOptions(data_dir=tmp_path / "data" / "prepared", source=str(tmp_path / "nowhere")))
    assert list(tmp_path.iterdir()) == []


def test_offline_default_corpus_says_how_to_use_a_local_copy(tmp_path, monkeypatch):
    import socket

    with socket.socket() as closed:  # a port nothing listens on: the download fails at once
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    real = catalogue()["small_parallel_enja"]
    offline = KnownCorpus(real.name, f"http://127.0.0.1:{port}/", real.languages, real.styles, real.sha256)
    monkeypatch.setattr(nmt_cli.prepare, "catalogue", lambda: {real.name: offline})
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(UserError) as caught:
        prepare(PrepareOptions(data_dir=tmp_path / "data"))
    message = str(caught.value)
    assert "download of" in message and "nmt prepare --source DIR" in message
    assert "train.en, train.ja, dev.en, dev.ja" in message
    assert leftovers(tmp_path, set()) == []
