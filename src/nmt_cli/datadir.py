"""The prepared data directory: its layout, its typed manifest, and loading what it holds.

    DATA_DIR/manifest.json          what was prepared from what (see `Manifest`)
    DATA_DIR/spm.SRC.model, spm.TGT.model   one SentencePiece model per language
    DATA_DIR/train.npz, dev.npz, test.npz   every split, encoded to ids (no <bos>/<eos>)
    DATA_DIR/dev.SRC, dev.TGT, test.*       the raw text of the held-out splits, for scoring

`nmt prepare` writes it through this module; everything that reads prepared data reads it here.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nmt_cli.errors import UserError

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Manifest:
    """What a data directory holds; saved as manifest.json (and copied beside every model)."""

    tool_version: str
    fingerprint: str  # a digest of the inputs and options: equal means up to date
    source: dict[str, Any]  # where the corpus came from
    languages: dict[str, str]  # {"source": lang, "target": lang}
    styles: dict[str, str]  # lang -> text style name (tokenizer.STYLES)
    files: dict[str, dict[str, Any]]  # corpus file name -> {"sha256", "lines"}
    splits: dict[str, dict[str, Any]]  # split -> {"pairs", ...}
    options: dict[str, Any]  # the prepare options that shaped the data
    vocabulary: dict[str, dict[str, Any]]  # lang -> {"requested", "actual", "model"}
    special_ids: dict[str, int]
    token_lengths: dict[str, dict[str, dict[str, float]]]  # split -> lang -> {"mean", "p95", "max"}

    @property
    def source_lang(self) -> str:
        return self.languages["source"]

    @property
    def target_lang(self) -> str:
        return self.languages["target"]

    @property
    def source_style(self) -> str:
        return self.styles[self.source_lang]

    @property
    def target_style(self) -> str:
        return self.styles[self.target_lang]

    def vocab_size(self, lang: str) -> int:
        return int(self.vocabulary[lang]["actual"])

    def tokenizer_sha256(self, lang: str) -> str | None:
        """The SHA-256 of the tokenizer the data was encoded with; data directories prepared by
        nmt 0.1 did not record it (None)."""
        return self.vocabulary[lang].get("sha256")

    def longest_training_source(self) -> int:
        return int(self.token_lengths["train"][self.source_lang]["max"])

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def read(cls, path: Path) -> Manifest:
        """A manifest file (a data directory's, or the copy beside a model), checked for its keys."""
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise UserError(f"cannot read {path}: {error}; {_rebuild_advice(path)}") from None
        names = cls.__dataclass_fields__
        missing = [name for name in names if not isinstance(raw, dict) or name not in raw]
        if missing:
            raise UserError(f"{path} lacks {missing[0]!r}: it was not written by this version; {_rebuild_advice(path)}")
        return cls(**{name: raw[name] for name in names})


def _rebuild_advice(path: Path) -> str:
    if Path(path).name == MANIFEST:
        return "rebuild it with `nmt prepare --force`"
    return "copy the data directory's manifest.json over it, or retrain with `nmt train --restart`"


def tokenizer_file(lang: str) -> str:
    return f"spm.{lang}.model"


class DataDir:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.manifest_path = self.root / MANIFEST

    def tokenizer(self, lang: str) -> Path:
        return self.root / tokenizer_file(lang)

    def encoded(self, split: str) -> Path:
        return self.root / f"{split}.npz"

    def text(self, split: str, lang: str) -> Path:
        return self.root / f"{split}.{lang}"

    def has_split(self, split: str) -> bool:
        return self.encoded(split).exists()

    def exists(self) -> bool:
        return self.manifest_path.exists()

    def check_exists(self) -> None:
        """A clear error, before anything slow, when this is not a prepared data directory."""
        if not self.manifest_path.exists():
            raise UserError(f"{self.root} is not a prepared data directory (no {MANIFEST}); run `nmt prepare` first")

    def manifest(self) -> Manifest:
        self.check_exists()
        return Manifest.read(self.manifest_path)

    def fingerprint(self) -> str | None:
        """The recorded fingerprint, or None when there is no readable manifest."""
        try:
            return json.loads(self.manifest_path.read_text(encoding="utf-8")).get("fingerprint")
        except (OSError, ValueError, AttributeError):
            return None

    def manifest_sha256(self) -> str:
        return hashlib.sha256(self.manifest_path.read_bytes()).hexdigest()

    def load_split(self, split: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The source and target id sequences of a prepared split (without bos/eos)."""
        path = self.encoded(split)
        try:
            with np.load(path) as arrays:
                return tuple(  # type: ignore[return-value]
                    _unflatten(arrays[f"{side}_ids"], arrays[f"{side}_offsets"]) for side in ("source", "target")
                )
        except FileNotFoundError:
            raise UserError(f"{path} is missing; rebuild the data directory with `nmt prepare --force`") from None
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            raise UserError(f"{path} is damaged; rebuild the data directory with `nmt prepare --force`") from None


def save_split(path: Path, source: list[list[int]], target: list[list[int]], dtype: type) -> None:
    """An encoded split as flat id arrays plus offsets (what `DataDir.load_split` reads)."""
    arrays = {}
    for side, seqs in (("source", source), ("target", target)):
        arrays[f"{side}_ids"] = np.fromiter((i for seq in seqs for i in seq), dtype=dtype)
        arrays[f"{side}_offsets"] = np.concatenate([[0], np.cumsum([len(seq) for seq in seqs])]).astype(np.int64)
    with open(path, "wb") as stream:
        np.savez(stream, **arrays)


def _unflatten(ids: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    return [ids[start:end] for start, end in zip(offsets[:-1], offsets[1:])]
