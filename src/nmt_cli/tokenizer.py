"""SentencePiece tokenizers, and the text styles a corpus is written in.

A corpus' *style* says how its text was pre-processed (lower-cased? split into words?), so that
raw user input can be brought to the same form before SentencePiece sees it, and model output
can be brought back to natural text.
"""

from __future__ import annotations

import io
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import sentencepiece as spm

from nmt_cli.errors import UserError

SPECIAL_IDS = {"pad": 0, "unk": 1, "bos": 2, "eos": 3}
PAD_ID, UNK_ID, BOS_ID, EOS_ID = (SPECIAL_IDS[k] for k in ("pad", "unk", "bos", "eos"))


@dataclass(frozen=True)
class TextStyle:
    lowercase: bool
    words: str | None  # "en" or "ja": text is split into space-separated words of that language


STYLES = {
    "raw": TextStyle(False, None),
    "en-words": TextStyle(False, "en"),
    "en-words-lower": TextStyle(True, "en"),
    "ja-words": TextStyle(False, "ja"),
}

# English word splitting as in the Tanaka Corpus: punctuation stands alone, a clitic keeps its
# apostrophe ("don't" -> "don 't", "o'clock" -> "o 'clock"), commas inside numbers stay.
_EN_PUNCT = re.compile(r"""([.?!;:"()\[\]]|,(?!\d)|(?<!\d),)""")
_EN_CLITIC = re.compile(r"(?<=\w)'(?=\w)")
_EN_CURLY = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"'})
_SPACES = re.compile(r"\s+")


def style(name: str) -> TextStyle:
    try:
        return STYLES[name]
    except KeyError:
        raise UserError(f"unknown text style {name!r}; choose one of: {', '.join(STYLES)}") from None


def normalize(text: str, style_name: str) -> str:
    """Bring raw user text to the form the corpus (and so the model) was written in."""
    text_style = style(style_name)
    text = unicodedata.normalize("NFKC", text)
    if text_style.lowercase:
        text = text.lower()
    if text_style.words == "en":
        text = text.translate(_EN_CURLY)
        text = _EN_CLITIC.sub(" '", text)
        text = _EN_PUNCT.sub(r" \1 ", text)
    return _SPACES.sub(" ", text).strip()


_CJK_GAP = re.compile(
    r"(?<=[^\x00-\x7f]) (?=[^\x00-\x7f])|(?<=[^\x00-\x7f]) (?=[0-9A-Za-z])|(?<=[0-9A-Za-z]) (?=[^\x00-\x7f])"
)
_EN_JOIN_PUNCT = re.compile(r" (?=[.?!,;:)\]]|'(?:s|t|m|re|ve|ll|d|clock)\b)")


def detokenize(text: str, style_name: str) -> str:
    """Turn word-split model output into natural text for reading."""
    words = style(style_name).words
    if words == "ja":
        return _CJK_GAP.sub("", text)
    if words == "en":
        return _EN_JOIN_PUNCT.sub("", text)
    return text


def output_text(text: str, style_name: str, tokenized: bool = False) -> str:
    """Decoded model output for people: single spaces, none at either end (undertrained models
    emit word-boundary pieces in a row, and output is never padded), and natural text unless
    `tokenized` keeps the corpus' word spacing."""
    text = " ".join(text.split())
    return text if tokenized else detokenize(text, style_name)


class Tokenizer:
    """A trained SentencePiece model with our fixed special ids."""

    def __init__(self, model_proto: bytes):
        self.model_proto = model_proto
        self._sp = spm.SentencePieceProcessor(model_proto=model_proto)

    @classmethod
    def load(cls, path: Path) -> Tokenizer:
        try:
            return cls(Path(path).read_bytes())
        except (OSError, RuntimeError) as error:
            raise UserError(f"cannot load tokenizer {path}: {error}") from None

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    def encode(self, sentences: list[str]) -> list[list[int]]:
        return self._sp.encode(sentences)

    def decode(self, ids: list[list[int]]) -> list[str]:
        return self._sp.decode(ids)

    def piece(self, token_id: int) -> str:
        return self._sp.id_to_piece(token_id)

    def vocabulary(self) -> list[str]:
        """Every piece, in id order."""
        return [self._sp.id_to_piece(i) for i in range(self.vocab_size)]

    def pieces(self, sentence: str) -> list[str]:
        """How a sentence is split, piece by piece: for looking, not for the model."""
        return self._sp.encode(sentence, out_type=str)


def train_tokenizer(sentences: Iterable[str], vocab_size: int, keep_characters: bool = False) -> Tokenizer:
    """Train a unigram SentencePiece model; `vocab_size` is a ceiling the corpus may not fill.

    Byte fallback means no input is ever unknown. Training is single-threaded so that the same
    input and options give a byte-identical model. SentencePiece normalises text with NFKC by
    default, which folds variants of a character together (full-width `１０` becomes `10`): good
    for what a model reads, wrong for what it writes. With `keep_characters` (a target side)
    text is left as written, so decoding gives back the corpus' own characters.
    """
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_writer=model,
            model_type="unigram",
            vocab_size=vocab_size,
            hard_vocab_limit=False,
            byte_fallback=True,
            pad_id=PAD_ID,
            unk_id=UNK_ID,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            num_threads=1,
            minloglevel=2,
            normalization_rule_name="identity" if keep_characters else "nmt_nfkc",
        )
    except RuntimeError as error:
        raise UserError(_explain_training_error(str(error), vocab_size)) from None
    return Tokenizer(model.getvalue())


def _explain_training_error(message: str, vocab_size: int) -> str:
    required = re.search(r"smaller than required_chars\. \d+ vs (\d+)", message)
    if required:
        # SentencePiece's count already includes the special and byte-fallback pieces.
        smallest = int(required.group(1))
        return (
            f"--vocab-size {vocab_size} is too small for this corpus' characters; use --vocab-size {smallest} or more"
        )
    return f"SentencePiece could not train a vocabulary of {vocab_size}: {message.strip()}"
