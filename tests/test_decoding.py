"""Greedy and beam search on a model that has learned to reverse letter sequences."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from nmt_cli import decoding
from nmt_cli.translation import Translator

from conftest import reversal_pairs


@pytest.fixture(scope="module", params=["attention", "seq2seq"])
def translator(request, trained_model) -> Translator:
    return Translator(trained_model(request.param))


def _held_out(count: int = 40) -> list[tuple[str, str]]:
    return reversal_pairs(count, seed=99)


def _encode(translator: Translator, sentences: list[str]) -> list[list[int]]:
    return [list(ids) for ids in translator.source_tokenizer.encode(sentences)]


def _texts(translator: Translator, results) -> list[str]:
    return translator.target_tokenizer.decode([hypotheses[0][0] for hypotheses in results])


@pytest.mark.parametrize("beam_size", [1, 5])
def test_model_learns_the_reversal(translator, beam_size):
    # How well a model trains differs a little between processors: a threshold, not exactness.
    pairs = _held_out()
    results = translator.translate_ids(_encode(translator, [s for s, _ in pairs]), beam_size=beam_size)
    right = sum(text == target for text, (_, target) in zip(_texts(translator, results), pairs))
    assert right >= 0.9 * len(pairs), right


def _greedy_reference(searcher: decoding.Searcher, source: list[int]) -> tuple[list[int], float]:
    """Greedy decoding of one sentence, one eager decoder call per step, in plain Python."""
    outputs = searcher.encoder(np.array([source], np.int32), training=False)
    outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
    memory, states = outputs[: len(outputs) - searcher.state_count], outputs[len(outputs) - searcher.state_count :]
    limit = int(len(source) * searcher.max_length_ratio) + searcher.max_length_extra
    token, ids, total = decoding.BOS_ID, [], 0.0
    for step in range(limit):
        log_probs, states = searcher._step(keras.ops.convert_to_tensor([token], "int32"), memory, states)
        log_probs = np.asarray(log_probs)[0]
        token = decoding.EOS_ID if step + 1 >= limit else int(log_probs.argmax())
        total += float(log_probs[token])
        if token == decoding.EOS_ID:
            break
        ids.append(token)
    return ids, total / (len(ids) + 1) ** searcher.length_alpha


def test_greedy_search_equals_a_step_by_step_reference(translator):
    sources = _encode(translator, [s for s, _ in _held_out(12)])
    for source, hypotheses in zip(sources, translator.translate_ids(sources, beam_size=1)):
        ids, score = _greedy_reference(translator.searcher, source)
        assert hypotheses[0][0] == ids
        assert hypotheses[0][1] == pytest.approx(score, rel=1e-4, abs=1e-5)


def test_beam_of_one_equals_greedy(translator):
    sources = _encode(translator, [s for s, _ in _held_out(24)])
    batch = np.zeros((len(sources), max(map(len, sources))), np.int32)
    for row, ids in enumerate(sources):
        batch[row, : len(ids)] = ids
    greedy_ids, greedy_scores = translator.searcher.greedy_search(batch)
    beam_ids, beam_scores = translator.searcher.beam_search(batch, beam_size=1)
    for row in range(len(sources)):
        assert decoding._until_eos(beam_ids[row, 0]) == decoding._until_eos(greedy_ids[row])
    np.testing.assert_allclose(beam_scores[:, 0], greedy_scores, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("beam_size", [1, 4])
def test_batch_results_equal_one_by_one(translator, beam_size):
    # 30 sentences run as one compiled batch; one at a time they run eagerly: same code, same results.
    sources = _encode(translator, [s for s, _ in _held_out(30)])
    together = translator.translate_ids(sources, beam_size=beam_size)
    alone = [translator.translate_ids([ids], beam_size=beam_size)[0] for ids in sources]
    assert [h[0][0] for h in together] == [h[0][0] for h in alone]
    np.testing.assert_allclose([h[0][1] for h in together], [h[0][1] for h in alone], rtol=1e-4, atol=1e-5)


def test_n_best_is_sorted_and_distinct(translator):
    sources = _encode(translator, ["a b c d", "j i h"])
    for hypotheses in translator.translate_ids(sources, beam_size=5, n_best=5):
        assert len(hypotheses) == 5
        scores = [score for _, score in hypotheses]
        assert scores == sorted(scores, reverse=True)
        assert len({tuple(ids) for ids, _ in hypotheses}) == 5


def test_output_length_is_bounded(translator):
    searcher = decoding.Searcher(
        translator.searcher.encoder, translator.searcher.decoder, layers=1, max_length_ratio=0.0, max_length_extra=2
    )
    sources = _encode(translator, ["a b c d e f"])
    for beam_size in (1, 3):
        hypotheses = searcher.search(np.array(sources, np.int32), beam_size=beam_size)
        # At most two steps, the last one forced to <eos>: one real token.
        assert len(hypotheses[0][0].ids) <= 1


def test_empty_sources_give_no_hypotheses(translator):
    source = _encode(translator, ["a b c"])[0]
    results = translator.translate_ids([[], source, []], beam_size=3)
    assert results[0] == [] and results[2] == []
    assert results[1] == translator.translate_ids([source], beam_size=3)[0]
