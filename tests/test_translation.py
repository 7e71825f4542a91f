"""Text in, text out: normalisation, order, empty lines, chunking."""

from __future__ import annotations

import pytest

from nmt_cli import translation
from nmt_cli.errors import UserError
from nmt_cli.translation import Translator


@pytest.fixture(scope="module")
def translator(trained_model) -> Translator:
    return Translator(trained_model("attention"))


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
    assert Translator(model_dir, "epoch-10").checkpoint.name == "epoch-010.keras"
    assert Translator(model_dir, "last").checkpoint.name == "epoch-020.keras"
    with pytest.raises(UserError, match="saved: epoch-10, epoch-20"):
        Translator(model_dir, "epoch-3")


PLAIN_KERAS_GREEDY = """
import json, sys
import keras, numpy as np
encoder = keras.models.load_model(sys.argv[1], safe_mode=True)
decoder = keras.models.load_model(sys.argv[2], safe_mode=True)
source = np.array([json.loads(sys.argv[3])], dtype="int32")
outputs = encoder.predict(source, verbose=0)
memory, states = list(outputs[:-2]), list(outputs[-2:])
token, ids = np.array([[2]], dtype="int32"), []  # <bos>
for _ in range(20):
    log_probs, *states = decoder.predict([token, *memory, *states], verbose=0)
    best = int(log_probs[0, -1].argmax())
    if best == 3:  # <eos>
        break
    ids.append(best)
    token = np.array([[best]], dtype="int32")
assert not any(name.startswith("nmt_cli") for name in sys.modules)
print(json.dumps(ids))
"""


def test_saved_inference_models_decode_with_plain_keras(translator):
    import json
    import subprocess
    import sys

    source = [list(ids) for ids in translator.source_tokenizer.encode(["d e f g"])][0]
    completed = subprocess.run(
        [sys.executable, "-c", PLAIN_KERAS_GREEDY, str(translator.workspace.encoder), str(translator.workspace.decoder), json.dumps(source)],
        capture_output=True,
        text=True,
        check=True,
    )
    ids = json.loads(completed.stdout.strip().splitlines()[-1])
    assert ids and ids == translator.translate_ids([source], beam_size=1)[0][0][0]
