"""Attention: what the Keras search carries with each hypothesis, what a translation shows, and
who refuses to show it. (The CTranslate2 engine's agreement is in test_export.py, beside its export.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest

from conftest import assert_one_line_error, nmt, reversal_pairs
from nmt_cli import decoding, files
from nmt_cli.translation import Translator

ARCHS_THAT_ATTEND = ["attention", "transformer"]


@pytest.fixture(scope="module", params=ARCHS_THAT_ATTEND)
def translator(request, trained_model) -> Translator:
    return Translator.open(trained_model(request.param), engine="keras")


def _sources(translator: Translator, count: int) -> list[list[int]]:
    sentences = [source for source, _ in reversal_pairs(count, seed=31)]
    return [list(ids) for ids in translator.source_tokenizer.encode(sentences)]


def _forced_attention(searcher: decoding.Searcher, source: list[int], ids: list[int]) -> np.ndarray:
    """The decoder's attention rows when fed `<bos> ids` one step at a time, in plain Python:
    what search must have carried for the hypothesis `ids` (its <eos> step last)."""
    state = dict(searcher.encoder(keras.ops.convert_to_tensor([source], "int32"), training=False))
    rows = []
    for step, token in enumerate([decoding.BOS_ID, *ids]):
        inputs = {"previous_token": [[token]], "step": [[step]]}
        tensors = {name: keras.ops.convert_to_tensor(value, "int32") for name, value in inputs.items()}
        outputs = dict(searcher.decoder({**tensors, **state}))
        rows.append(np.asarray(outputs.pop("attention"))[0])
        outputs.pop("log_probs")
        state.update(outputs)
    return np.stack(rows)


@pytest.mark.parametrize("beam_size", [1, 5])
def test_search_with_attention_finds_what_search_without_it_finds(translator, beam_size):
    """Same weights, same hypotheses and scores; each hypothesis has a row per target id and one
    for <eos>, a distribution over its own source. Twelve sentences run compiled, three eagerly."""
    searcher = translator.engine.searcher
    sources = _sources(translator, 12)
    for batch in (sources, sources[:3]):
        plain = searcher.search_all(batch, beam_size, n_best=beam_size)
        attended = searcher.search_all(batch, beam_size, n_best=beam_size, attention=True)
        assert [[ids for ids, _ in found] for found in plain] == [[ids for ids, *_ in found] for found in attended]
        np.testing.assert_allclose(
            [[score for _, score in found] for found in plain],
            [[score for _, score, _ in found] for found in attended],
            rtol=1e-5,
            atol=1e-6,
        )
        for source, found in zip(batch, attended):
            for ids, _, weights in found:
                assert weights.shape == (len(ids) + 1, len(source))
                np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-5)


def test_each_hypothesis_carries_its_own_rows(translator):
    """Beam search reorders the rows with the beams: every n-best hypothesis holds the rows the
    decoder gives when fed that very hypothesis."""
    searcher = translator.engine.searcher
    sources = _sources(translator, 6)  # more than run eagerly: the compiled search
    for source, found in zip(sources, searcher.search_all(sources, 4, n_best=4, attention=True)):
        for ids, _, weights in found:
            np.testing.assert_allclose(weights, _forced_attention(searcher, source, ids), atol=1e-5)


def test_a_translation_shows_the_attention_of_its_best_candidate(translator):
    lines = ["a b c d", "", "j i h"]
    results = list(translator.translate(lines, beam_size=3, n_best=2, attention=True))
    best = translator.translate_ids(_sources_of(translator, ["a b c d", "j i h"]), 3, attention=True)
    assert results[1].attention is None  # an empty line has no translation to show
    for result, line, found in zip((results[0], results[2]), ("a b c d", "j i h"), best):
        ids, _, weights = found[0]
        attention = result.attention
        assert attention.source == translator.source_tokenizer.pieces(line)
        assert attention.target == [translator.target_tokenizer.piece(t) for t in ids] + ["</s>"]
        np.testing.assert_allclose(attention.weights, weights, atol=1e-6)
    assert [r.candidates for r in results] == [r.candidates for r in translator.translate(lines, 3, n_best=2)]


def _sources_of(translator: Translator, lines: list[str]) -> list[list[int]]:
    return [list(ids) for ids in translator.source_tokenizer.encode(lines)]


def test_a_line_in_parts_has_its_parts_along_the_diagonal(translator, monkeypatch):
    monkeypatch.setattr(Translator, "longest_segment", property(lambda self: 4))
    line = "a b c d e f g h i j"
    (result,) = translator.translate([line], beam_size=2, attention=True)
    segments = translator.segments(line)
    assert len(segments) == 3
    parts = translator.translate_ids(segments, 2, attention=True)
    attention = result.attention
    weights = np.asarray(attention.weights)
    assert attention.source == translator.source_tokenizer.pieces(line)
    assert attention.target.count("</s>") == 3 and attention.target[-1] == "</s>"
    row = column = 0
    for segment, found in zip(segments, parts):
        _, _, part = found[0]
        block = np.s_[row : row + len(part), column : column + len(segment)]
        np.testing.assert_allclose(weights[block], part, atol=1e-6)
        weights[block] = 0.0
        row, column = row + len(part), column + len(segment)
    assert (row, column) == weights.shape and not weights.any()  # nothing outside the blocks


def test_a_decoder_saved_before_attention_translates_and_gives_it_from_the_checkpoint(
    trained_model, tmp_path, reference
):
    """An older decoder.keras (the step contract without `attention`): translations as before; asked
    for attention, the engine searches with the inference models of best.keras itself."""
    model_dir = Path(shutil.copytree(trained_model("attention"), tmp_path / "model"))
    decoder_path = model_dir / "decoder.keras"
    decoder = keras.models.load_model(decoder_path, safe_mode=True)
    older = keras.Model(decoder.input, {k: v for k, v in decoder.output.items() if k != "attention"})
    files.save_model(older, decoder_path)
    stamp = json.loads((model_dir / "checkpoints" / "best.json").read_text())
    stamp["sha256"]["decoder.keras"] = files.sha256(decoder_path)
    (model_dir / "checkpoints" / "best.json").write_text(json.dumps(stamp))

    translator = Translator.open(model_dir, engine="keras")
    assert not translator.engine.searcher.attends  # the saved decoder, not one rebuilt from best.keras
    assert [r.text for r in translator.translate(["a b c"])] == reference(trained_model("attention"), ["a b c"])
    (with_attention,) = translator.translate(["a b c"], attention=True)
    (expected,) = Translator.open(trained_model("attention"), engine="keras").translate(["a b c"], attention=True)
    assert with_attention.text == expected.text and with_attention.attention.target == expected.attention.target
    np.testing.assert_allclose(with_attention.attention.weights, expected.attention.weights, atol=1e-6)


def test_seq2seq_has_no_attention_to_show(trained_model):
    completed = nmt(
        "translate", "--model-dir", trained_model("seq2seq"), "--json", "--attention", "a b", before_tensorflow=True
    )
    assert_one_line_error(completed, "--arch seq2seq has no attention to show")
