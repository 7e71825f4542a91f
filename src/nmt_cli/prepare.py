"""`nmt prepare`: parallel text in, tokenizers + encoded arrays + manifest out.

The data directory is built in a temporary folder beside it and renamed into place, so an
interrupted run leaves either the previous complete directory or none.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from nmt_cli import __version__, files
from nmt_cli.config import PrepareOptions, check
from nmt_cli.corpus import (
    DEFAULT_CORPUS,
    SPLITS,
    KnownCorpus,
    catalogue,
    download,
    locate_splits,
    read_parallel,
    split_files,
)
from nmt_cli.datadir import MANIFEST, DataDir, Manifest, save_split, tokenizer_file
from nmt_cli.errors import UserError
from nmt_cli.progress import Reporter
from nmt_cli.tokenizer import SPECIAL_IDS, Tokenizer, style, train_tokenizer
from nmt_cli.workspace import Workspace

HELD_OUT_DEV_MAX = 1000


@dataclass
class PrepareResult:
    manifest: Manifest
    rebuilt: bool


def check_options(options: PrepareOptions) -> None:
    """Every check that needs no file: before anything is read or written."""
    check(options)
    if options.src_lang == options.tgt_lang:
        raise UserError("--src-lang and --tgt-lang must differ")
    if options.vocab_size < len(SPECIAL_IDS) + 1:
        raise UserError(f"--vocab-size must be more than the {len(SPECIAL_IDS)} special pieces")
    for name in (options.src_style, options.tgt_style):
        if name is not None:
            style(name)


def prepare(options: PrepareOptions, reporter: Reporter | None = None) -> PrepareResult:
    reporter = reporter or Reporter()
    check_options(options)
    if options.tokenizers_from is not None:
        options = _with_parent_styles(options)
    data_dir = Path(options.data_dir)
    _refuse_foreign_directory(data_dir)
    made_parent = not data_dir.parent.exists()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    files.remove_folder_leftovers(data_dir, MANIFEST)
    staging = files.staging_folder(data_dir)
    try:
        source = _gather_source(options, staging / "raw", reporter, data_dir)
        if source is None:
            return PrepareResult(DataDir(data_dir).manifest(), rebuilt=False)
        fingerprint = _fingerprint(source.checksums, source.styles, options)
        if not options.force and DataDir(data_dir).fingerprint() == fingerprint:
            return PrepareResult(DataDir(data_dir).manifest(), rebuilt=False)
        out = staging / "out"
        out.mkdir()
        manifest = _build(source, options, fingerprint, out, reporter)
        files.swap_folder_into_place(out, data_dir)
        return PrepareResult(manifest, rebuilt=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if made_parent and not data_dir.exists() and not any(data_dir.parent.iterdir()):
            data_dir.parent.rmdir()  # a failed first run leaves no empty folder either


@dataclass
class _Source:
    description: dict
    splits: dict[str, tuple[Path, Path]]
    checksums: dict[str, str]
    styles: dict[str, str]


def _gather_source(options: PrepareOptions, raw: Path, reporter: Reporter, data_dir: Path) -> _Source | None:
    """Locate (downloading if needed) the corpus files; None when the known corpus is already prepared."""
    langs = (options.src_lang, options.tgt_lang)
    if options.source is None:
        known = catalogue()[DEFAULT_CORPUS]
        missing = [lang for lang in langs if lang not in known.languages]
        if missing:
            raise UserError(f"{known.name} has no {missing[0]!r} side; its languages are {', '.join(known.languages)}")
        names = [name for split in SPLITS for name in split_files(split, *langs)]
        checksums = {name: known.sha256[name] for name in names}
        styles = {lang: known.styles[lang] for lang in langs}
        if not options.force and DataDir(data_dir).fingerprint() == _fingerprint(checksums, styles, options):
            return None
        raw.mkdir()
        try:
            download(known.base_url, names, raw, reporter, sha256=known.sha256)
        except UserError as error:
            wanted = ", ".join(name for split in ("train", "dev") for name in split_files(split, *langs))
            raise UserError(
                f"{error}; with a copy of {known.name} at hand, run `nmt prepare --source DIR` on the folder "
                f"holding {wanted} (and test.* if you have them)"
            ) from None
        return _Source(
            {"kind": "catalogue", "name": known.name, "url": known.base_url},
            locate_splits(raw, *langs),
            checksums,
            styles,
        )
    if options.source.startswith(("http://", "https://")):
        raw.mkdir()
        base = options.source if options.source.endswith("/") else options.source + "/"
        names = [name for split in SPLITS for name in split_files(split, *langs)]
        optional = frozenset(name for name in names if not name.startswith("train."))
        fetched = set(download(base, names, raw, reporter, optional=optional))
        for split in SPLITS:
            pair = split_files(split, *langs)
            if len(fetched & set(pair)) == 1:
                missing = next(name for name in pair if name not in fetched)
                raise UserError(f"{base}{missing} is missing: every {split} split needs both {pair[0]} and {pair[1]}")
        splits = locate_splits(raw, *langs)
        description = {"kind": "url", "url": base}
    else:
        folder = Path(options.source)
        splits = locate_splits(folder, *langs)
        description = {"kind": "folder", "path": str(folder.resolve())}
    checksums = {path.name: files.sha256(path) for pair in splits.values() for path in pair}
    styles = {lang: "raw" for lang in langs}
    known = _recognise(checksums)
    if known is not None:
        # A copy of a known corpus keeps that corpus' text styles, so translation normalises input.
        description["corpus"] = known.name
        styles = {lang: known.styles[lang] for lang in langs}
        reporter.note(f"recognised {known.name} by its checksums")
    return _Source(description, splits, checksums, styles)


def _recognise(checksums: dict[str, str]) -> KnownCorpus | None:
    for known in catalogue().values():
        if all(known.sha256.get(name) == digest for name, digest in checksums.items()):
            return known
    return None


def _parent(options: PrepareOptions) -> tuple[Workspace, Manifest]:
    """The model directory `--tokenizers-from` names, and its data manifest."""
    workspace = Workspace(options.tokenizers_from)
    if not workspace.data_manifest.is_file():
        raise UserError(f"--tokenizers-from {workspace.root} is not a trained model directory (no data-manifest.json)")
    manifest = Manifest.read(workspace.data_manifest)
    for lang in (options.src_lang, options.tgt_lang):
        if not workspace.tokenizer(lang).is_file():
            raise UserError(f"--tokenizers-from {workspace.root} has no {workspace.tokenizer(lang).name}")
    return workspace, manifest


def _with_parent_styles(options: PrepareOptions) -> PrepareOptions:
    """The options with the parent model's languages checked and its text styles taken: its
    tokenizers were trained on text written so, and the fine-tuned model will be fed so."""
    workspace, manifest = _parent(options)
    if (manifest.source_lang, manifest.target_lang) != (options.src_lang, options.tgt_lang):
        raise UserError(
            f"{workspace.root} translates {manifest.source_lang}->{manifest.target_lang}, not "
            f"{options.src_lang}->{options.tgt_lang}: give --src-lang and --tgt-lang as it has them"
        )
    for flag, given, lang in (
        ("--src-style", options.src_style, options.src_lang),
        ("--tgt-style", options.tgt_style, options.tgt_lang),
    ):
        if given is not None and given != manifest.styles[lang]:
            raise UserError(
                f"{flag} {given} is not how {workspace.root}'s {lang} tokenizer reads text ({manifest.styles[lang]})"
            )
    return replace(options, src_style=manifest.source_style, tgt_style=manifest.target_style)


def _fingerprint(checksums: dict[str, str], styles: dict[str, str], options: PrepareOptions) -> str:
    settings = asdict(options)
    for key in ("data_dir", "source", "force"):
        settings.pop(key)
    if options.tokenizers_from is not None:  # what counts is which tokenizers, not where they lie
        workspace = Workspace(options.tokenizers_from)
        langs = (options.src_lang, options.tgt_lang)
        settings["tokenizers_from"] = {lang: files.sha256(workspace.tokenizer(lang)) for lang in langs}
    payload = json.dumps(
        {"files": checksums, "styles": styles, "options": settings, "version": __version__}, sort_keys=True
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def _refuse_foreign_directory(data_dir: Path) -> None:
    if data_dir.exists() and not data_dir.is_dir():
        raise UserError(f"--data-dir {data_dir} is a file, not a folder; choose another --data-dir")
    if data_dir.exists() and any(data_dir.iterdir()) and not (data_dir / MANIFEST).exists():
        raise UserError(f"{data_dir} exists and is not a prepared data directory; choose another --data-dir")


def _build(source: _Source, options: PrepareOptions, fingerprint: str, out: Path, reporter: Reporter) -> Manifest:
    langs = (options.src_lang, options.tgt_lang)
    styles = {
        options.src_lang: options.src_style or source.styles[options.src_lang],
        options.tgt_lang: options.tgt_style or source.styles[options.tgt_lang],
    }
    for name in styles.values():
        style(name)

    with reporter.task("read corpus", total=len(source.splits)) as task:
        text = {}
        for split, (src_path, tgt_path) in source.splits.items():
            text[split] = read_parallel(src_path, tgt_path)
            task.advance()
    file_lines = {path.name: len(text[split][0]) for split, pair in source.splits.items() for path in pair}
    train_src, train_tgt = text["train"]
    if options.max_pairs is not None:
        train_src, train_tgt = train_src[: options.max_pairs], train_tgt[: options.max_pairs]
    if "dev" in text and not text["dev"][0]:
        raise UserError("the dev split is empty: give it pairs, or remove its files to hold out a slice of train")
    held_out = "dev" not in text
    if held_out:
        size = max(1, min(HELD_OUT_DEV_MAX, len(train_src) // 50))
        if len(train_src) < 2:
            raise UserError("the training split needs at least 2 pairs when there is no dev split to hold out from it")
        text["dev"] = (train_src[-size:], train_tgt[-size:])
        train_src, train_tgt = train_src[:-size], train_tgt[:-size]
        reporter.note(f"no dev split: holding out the last {size} training pairs for validation")

    kept = [i for i, (s, t) in enumerate(zip(train_src, train_tgt)) if s.strip() and t.strip()]
    dropped = {"empty": len(train_src) - len(kept)}
    train_src, train_tgt = [train_src[i] for i in kept], [train_tgt[i] for i in kept]
    if not train_src:
        raise UserError("the training split has no pair with text on both sides")

    tokenizers: dict[str, Tokenizer] = {}
    vocabulary = {}
    if options.tokenizers_from is not None:
        workspace, parent = _parent(options)
        for lang in langs:
            tokenizers[lang] = Tokenizer.load(workspace.tokenizer(lang))
            vocabulary[lang] = {
                **parent.vocabulary[lang],
                "sha256": hashlib.sha256(tokenizers[lang].model_proto).hexdigest(),
                "from": str(workspace.root.resolve()),
            }
        reporter.note(f"encoding with the tokenizers of {workspace.root}")
    with reporter.task("train tokenizers", total=2 - len(tokenizers)) as task:
        for lang, sentences in zip(langs, (train_src, train_tgt)):
            if lang in tokenizers:
                continue
            tokenizers[lang] = train_tokenizer(sentences, options.vocab_size, keep_characters=lang == langs[1])
            actual = tokenizers[lang].vocab_size
            vocabulary[lang] = {
                "requested": options.vocab_size,
                "actual": actual,
                "model": tokenizer_file(lang),
                "sha256": hashlib.sha256(tokenizers[lang].model_proto).hexdigest(),
            }
            if actual < options.vocab_size:
                reporter.note(
                    f"{lang} vocabulary: {actual} pieces, fewer than the {options.vocab_size} asked for: "
                    "this is all the training text supports"
                )
            task.advance()

    encoded: dict[str, tuple[list[list[int]], list[list[int]]]] = {}
    with reporter.task("encode", total=len(text)) as task:
        for split in text:
            src, tgt = (train_src, train_tgt) if split == "train" else text[split]
            encoded[split] = (tokenizers[langs[0]].encode(src), tokenizers[langs[1]].encode(tgt))
            task.advance()
    src_ids, tgt_ids = encoded["train"]
    fits = [
        i
        for i, (s, t) in enumerate(zip(src_ids, tgt_ids))
        if len(s) <= options.max_length and len(t) <= options.max_length
    ]
    dropped["too_long"] = len(src_ids) - len(fits)
    encoded["train"] = ([src_ids[i] for i in fits], [tgt_ids[i] for i in fits])
    if not fits:
        raise UserError(f"every training pair is longer than --max-length {options.max_length} pieces; raise it")

    built = DataDir(out)
    for lang, tokenizer in tokenizers.items():
        built.tokenizer(lang).write_bytes(tokenizer.model_proto)
    dtype = np.uint16 if max(options.vocab_size, *(t.vocab_size for t in tokenizers.values())) <= 65535 else np.int32
    splits_info = {}
    lengths = {}
    for split, (src, tgt) in encoded.items():
        save_split(built.encoded(split), src, tgt, dtype)
        if split != "train":
            for lang, lines in zip(langs, text[split]):
                built.text(split, lang).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        splits_info[split] = {"pairs": len(src)}
        lengths[split] = {lang: _length_stats(ids) for lang, ids in zip(langs, (src, tgt))}
    splits_info["train"]["dropped"] = dropped
    splits_info["dev"]["held_out_from_train"] = held_out

    manifest = Manifest(
        tool_version=__version__,
        fingerprint=fingerprint,
        source=source.description,
        languages={"source": langs[0], "target": langs[1]},
        styles=styles,
        files={name: {"sha256": digest, "lines": file_lines[name]} for name, digest in source.checksums.items()},
        splits=splits_info,
        options={"vocab_size": options.vocab_size, "max_length": options.max_length, "max_pairs": options.max_pairs},
        vocabulary=vocabulary,
        special_ids=dict(SPECIAL_IDS),
        token_lengths=lengths,
    )
    built.manifest_path.write_text(manifest.to_json(), encoding="utf-8")
    return manifest


def _length_stats(seqs: list[list[int]]) -> dict[str, float]:
    lengths = np.array([len(seq) for seq in seqs] or [0])
    return {
        "mean": round(float(lengths.mean()), 2),
        "p95": float(np.percentile(lengths, 95)),
        "max": int(lengths.max()),
    }
