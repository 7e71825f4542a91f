"""nmt_cli.tokenizer: SentencePiece training, special ids, byte fallback and text styles."""

from __future__ import annotations

import re

import pytest
import sentencepiece as spm

from nmt_cli.errors import UserError
from nmt_cli.tokenizer import (
    SPECIAL_IDS,
    STYLES,
    Tokenizer,
    detokenize,
    normalize,
    style,
    train_tokenizer,
)


@pytest.fixture(scope="module")
def english(make_pairs):
    return [en for en, _ in make_pairs(300, seed=11)]


@pytest.fixture(scope="module")
def japanese(make_pairs):
    return [ja for _, ja in make_pairs(300, seed=11)]


@pytest.fixture(scope="module")
def en_tokenizer(english):
    return train_tokenizer(english, 8000)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def test_training_is_deterministic(english, japanese):
    for sentences in (english, japanese):
        first = train_tokenizer(sentences, 400)
        second = train_tokenizer(list(sentences), 400)
        assert first.model_proto == second.model_proto
        assert isinstance(first.model_proto, bytes) and len(first.model_proto) > 1000


def test_training_accepts_a_generator(english):
    assert train_tokenizer((s for s in english), 300).model_proto == train_tokenizer(english, 300).model_proto


def test_different_input_gives_a_different_model(english):
    assert train_tokenizer(english, 300).model_proto != train_tokenizer(english[:150], 300).model_proto


def test_vocab_size_is_a_ceiling_on_a_small_corpus(en_tokenizer):
    # 8000 pieces is more than 300 short lines support: training still succeeds, with fewer.
    assert 4 + 256 < en_tokenizer.vocab_size < 8000


def test_vocab_size_is_reached_when_the_corpus_supports_it(english):
    assert train_tokenizer(english, 290).vocab_size == 290


def test_too_small_vocab_names_a_size_that_works(english):
    with pytest.raises(UserError) as caught:
        train_tokenizer(english, 20)
    message = str(caught.value)
    assert "--vocab-size 20" in message
    sizes = re.findall(r"use --vocab-size (\d+) or more", message)
    assert sizes, message
    suggested = int(sizes[0])
    assert suggested > 20
    tokenizer = train_tokenizer(english, suggested)
    assert tokenizer.vocab_size <= suggested


def test_too_small_vocab_for_japanese(japanese):
    with pytest.raises(UserError, match=r"use --vocab-size \d+ or more"):
        train_tokenizer(japanese, 100)


def test_untrainable_input_is_a_user_error():
    with pytest.raises(UserError, match="SentencePiece could not train a vocabulary of 300"):
        train_tokenizer([], 300)


# --------------------------------------------------------------------------------------------
# Special ids and byte fallback
# --------------------------------------------------------------------------------------------


def test_special_ids_in_the_trained_model(en_tokenizer):
    assert SPECIAL_IDS == {"pad": 0, "unk": 1, "bos": 2, "eos": 3}
    sp = spm.SentencePieceProcessor(model_proto=en_tokenizer.model_proto)
    assert (sp.pad_id(), sp.unk_id(), sp.bos_id(), sp.eos_id()) == (0, 1, 2, 3)
    assert [sp.id_to_piece(i) for i in range(4)] == ["<pad>", "<unk>", "<s>", "</s>"]
    assert sp.piece_to_id("<pad>") == 0
    assert sp.piece_to_id("<unk>") == 1
    assert sp.piece_to_id("<s>") == 2
    assert sp.piece_to_id("</s>") == 3


def test_encode_never_emits_special_ids(en_tokenizer, english):
    for ids in en_tokenizer.encode(english + ["zebra quartz ☃ 猫 café"]):
        assert ids
        assert min(ids) >= 4


def test_byte_fallback_encodes_unseen_characters_without_unk(en_tokenizer):
    text = "the 猫 sees ☃ €"
    [ids] = en_tokenizer.encode([text])
    assert SPECIAL_IDS["unk"] not in ids
    pieces = en_tokenizer.pieces(text)
    # 猫 is three UTF-8 bytes: E7 8C AB.
    assert ["<0xE7>", "<0x8C>", "<0xAB>"] == [p for p in pieces if p in ("<0xE7>", "<0x8C>", "<0xAB>")]
    assert en_tokenizer.decode([ids]) == [text]


def test_tokenizer_round_trip_and_load(en_tokenizer, english, tmp_path):
    path = tmp_path / "spm.en.model"
    path.write_bytes(en_tokenizer.model_proto)
    loaded = Tokenizer.load(path)
    assert loaded.vocab_size == en_tokenizer.vocab_size
    assert loaded.decode(loaded.encode(english[:20])) == english[:20]


def test_tokenizer_load_errors_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="cannot load tokenizer"):
        Tokenizer.load(tmp_path / "absent.model")
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"not a model")
    with pytest.raises(UserError, match="cannot load tokenizer"):
        Tokenizer.load(bad)


# --------------------------------------------------------------------------------------------
# Styles
# --------------------------------------------------------------------------------------------


def test_normalize_en_words_lower_matches_the_tanaka_corpus():
    assert normalize("I can't tell who will arrive first.", "en-words-lower") == "i can 't tell who will arrive first ."


@pytest.mark.parametrize(
    "text, style_name, expected",
    [
        ("Don't   stop!", "en-words", "Don 't stop !"),
        ("It costs 1,000 yen, OK?", "en-words-lower", "it costs 1,000 yen , ok ?"),
        ("He said \u201chi\u201d at 5 o\u2019clock.", "en-words-lower", 'he said " hi " at 5 o \'clock .'),
        ("  Keep   Case. ", "raw", "Keep Case."),
        ("ＡＢＣ１２３", "raw", "ABC123"),  # NFKC
        ("私は 学生です。", "ja-words", "私は 学生です。"),
    ],
)
def test_normalize_styles(text, style_name, expected):
    assert normalize(text, style_name) == expected


def test_detokenize_ja_words_removes_spaces_between_japanese_words():
    assert detokenize("私 は テニス 部員 で す 。", "ja-words") == "私はテニス部員です。"
    assert detokenize("私 は CD を 2 枚 買 っ た 。", "ja-words") == "私はCDを2枚買った。"


def test_detokenize_en_words_joins_punctuation_and_clitics():
    assert (
        detokenize("i can 't tell who will arrive first .", "en-words-lower") == "i can't tell who will arrive first."
    )
    assert detokenize("keep  these", "raw") == "keep  these"


def test_unknown_style_is_a_user_error():
    with pytest.raises(UserError) as caught:
        style("klingon")
    for name in STYLES:
        assert name in str(caught.value)
    with pytest.raises(UserError):
        normalize("x", "klingon")
