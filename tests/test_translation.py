"""Text in, text out: normalisation, order, empty lines, chunking."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nmt_cli import translation
from nmt_cli.decoding import until_eos
from nmt_cli.errors import UserError
from nmt_cli.translation import Translator


@pytest.fixture(scope="module")
def translator(trained_model) -> Translator:
    return Translator.open(trained_model("attention"))


def _ids_reaching_the_search(translator, monkeypatch, lines, **options) -> list[list[int]]:
    seen = []
    search = translator.translate_ids

    def spy(sources, *args, **kwargs):
        seen.extend(sources)
        return search(sources, *args, **kwargs)

    monkeypatch.setattr(translator, "translate_ids", spy)
    list(translator.translate(lines, **options))
    return seen


def test_raw_input_is_normalised_to_the_corpus_style(translator, monkeypatch):
    normalised = _ids_reaching_the_search(translator, monkeypatch, ["A B C", "  d   e f  "])
    assert normalised == [list(ids) for ids in translator.source_tokenizer.encode(["a b c", "d e f"])]


def test_no_normalisation_passes_input_through(translator, monkeypatch):
    raw = _ids_reaching_the_search(translator, monkeypatch, ["A B C"], normalize_input=False)
    assert raw == [list(translator.source_tokenizer.encode(["A B C"])[0])]
    assert raw != [list(translator.source_tokenizer.encode(["a b c"])[0])]


def test_order_and_empty_lines(translator):
    lines = ["a b c", "", "j j i", "", "c d e f g"]
    results = list(translator.translate(lines, beam_size=3))
    assert [r.source for r in results] == lines
    alone = [next(iter(translator.translate([line], beam_size=3))).text for line in lines]
    assert [r.text for r in results] == alone
    assert results[1].candidates == [] and results[3].candidates == []
    assert all(results[i].text for i in (0, 2, 4))


def test_chunked_reading_keeps_order(translator, monkeypatch):
    monkeypatch.setattr(translation, "CHUNK_LINES", 3)
    lines = ["a b c", "b c d", "c d e", "d e f", "e f g", "f g h", "g h i"]
    consumed = []

    def source():
        for line in lines:
            consumed.append(line)
            yield line

    whole = [r.text for r in translator.translate(lines, beam_size=1, chunk_lines=len(lines))]
    results = translator.translate(source(), beam_size=1)
    first = next(results)
    assert len(consumed) == 3  # read a chunk at a time, not the whole input
    assert [first.text] + [r.text for r in results] == whole


def test_long_input_is_reported_and_translated(translator):
    seen = []
    long_line = " ".join("abcdefghij" * 3)
    result = next(iter(translator.translate([long_line], on_long_input=lambda *args: seen.append(args))))
    assert result.text
    assert seen and seen[0][1] > seen[0][2]


def test_checkpoint_choice(trained_model):
    model_dir = trained_model("attention")
    assert Translator.open(model_dir, "epoch-10").checkpoint.name == "epoch-010.keras"
    assert Translator.open(model_dir, "last").checkpoint.name == "epoch-020.keras"
    with pytest.raises(UserError, match="saved: epoch-10, epoch-20"):
        Translator.open(model_dir, "epoch-3")


def readme_plain_keras_snippet() -> str:
    """The Python block of the README's "from plain Keras" section."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("#### The inference models from plain Keras") :]
    return section[section.index("```python\n") + len("```python\n") : section.index("\n```\n")]


@pytest.mark.parametrize("arch", ["attention", "transformer"])
def test_the_readme_decodes_with_plain_keras_like_nmt_translate(trained_model, tmp_path, arch):
    translator = Translator.open(trained_model(arch), engine="keras")
    sentence = "d e f g"
    snippet = readme_plain_keras_snippet()
    assert '"models/default"' in snippet and "i can 't tell who will arrive first ." in snippet
    snippet = snippet.replace('"models/default"', repr(str(translator.workspace.root)))
    snippet = snippet.replace("i can 't tell who will arrive first .", sentence)
    check = "\nimport sys\nassert not any(name.startswith('nmt_cli') for name in sys.modules)\n"
    completed = subprocess.run(
        [sys.executable, "-c", snippet + check], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert completed.returncode == 0, completed.stderr
    expected = next(iter(translator.translate([sentence], beam_size=1, normalize_input=False, tokenized_output=True)))
    assert expected.text and " ".join(completed.stdout.split()) == expected.text


def test_the_readme_loop_runs_a_two_layer_lstm_to_the_length_limit(trained_model, tmp_path):
    """The README's loop on another architecture and depth, untrained, so that it runs on to the
    length limit: it must still print what nmt's greedy search finds with the same weights."""
    import dataclasses
    import shutil

    import keras
    import numpy as np

    from nmt_cli.decoding import Searcher
    from nmt_cli.engines import LengthRule
    from nmt_cli.models import build_models
    from nmt_cli.tokenizer import EOS_ID, PAD_ID

    snippet = readme_plain_keras_snippet()
    rule = LengthRule()
    assert f"max_steps = {rule.ratio:g} * len(source_ids) + {rule.extra}" in snippet
    translator = Translator.open(trained_model("attention"))
    config = dataclasses.replace(
        translator.model.config.model, arch="seq2seq", attention="luong", layers=2, units=16, embedding_dim=8
    )
    keras.utils.set_random_seed(3)
    models = build_models(config)
    # An untrained model's scores are nearly tied: spread them, so that float rounding cannot
    # change which token is the most likely; never choose padding (no trained model does) or
    # <eos>, so that only the length limit ends the sentence.
    projection = models.decoder.get_layer("output_projection")
    kernel, bias = (weight * 1000 for weight in projection.get_weights())
    bias[[PAD_ID, EOS_ID]] = -1e9
    projection.set_weights([kernel, bias])
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    models.encoder.save(model_dir / "encoder.keras")
    models.decoder.save(model_dir / "decoder.keras")
    for lang in (translator.source_lang, translator.target_lang):
        shutil.copy(translator.workspace.tokenizer(lang), model_dir)
    sentence = "d e f g"
    snippet = snippet.replace('"models/default"', repr(str(model_dir)))
    snippet = snippet.replace("i can 't tell who will arrive first .", sentence)
    completed = subprocess.run(
        [sys.executable, "-c", snippet], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert completed.returncode == 0, completed.stderr
    (source_ids,) = translator.source_tokenizer.encode([sentence])
    ids, _ = Searcher(models.encoder, models.decoder).greedy_search(np.array([source_ids], np.int32))
    assert len(until_eos(ids[0])) == rule.ratio * len(source_ids) + rule.extra - 1
    (expected,) = translator.output_texts([until_eos(ids[0])], tokenized=True)
    assert " ".join(completed.stdout.split()) == expected


def _piece_ids(translator, pieces: list[str]) -> list[int]:
    ids = [translator.target_tokenizer._sp.piece_to_id(piece) for piece in pieces]
    assert all(i > 3 for i in ids), pieces  # all known, none special
    return ids


@pytest.mark.parametrize("tokenized", [False, True])
def test_output_is_never_padded_with_spaces(translator, tokenized):
    space = "<0x20>"  # byte fallback: a piece that is a bare space
    ids = _piece_ids(translator, [space, space, "a", space, space, space, "b", space])
    assert translator.output_texts([ids], tokenized=tokenized) == ["a b"]


def test_n_best_merges_hypotheses_that_read_the_same(translator, monkeypatch):
    space, a, b = _piece_ids(translator, ["<0x20>", "a", "b"])
    found = [[([a], -1.0), ([space, a], -2.0), ([b], -3.0), ([a, space], -4.0), ([b, a], -5.0)]]
    monkeypatch.setattr(translator, "translate_ids", lambda *args, **kwargs: found)
    result = next(iter(translator.translate(["x y"], beam_size=5, n_best=3)))
    (b_then_a,) = translator.output_texts([[b, a]])
    assert [(c.text, c.score) for c in result.candidates] == [("a", -1.0), ("b", -3.0), (b_then_a, -5.0)]
