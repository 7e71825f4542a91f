"""Greedy and beam search on a model that has learned to reverse letter sequences."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from conftest import reversal_pairs
from nmt_cli import decoding
from nmt_cli.engines import LengthRule
from nmt_cli.translation import Translator


@pytest.fixture(scope="module", params=["attention", "seq2seq", "transformer"])
def translator(request, trained_model) -> Translator:
    return Translator.open(trained_model(request.param), engine="keras")


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
    state = dict(searcher.encoder(keras.ops.convert_to_tensor([source], "int32"), training=False))
    limit = int(len(source) * searcher.length_rule.ratio) + searcher.length_rule.extra
    token, ids, total = decoding.BOS_ID, [], 0.0
    for step in range(limit):
        inputs = {"previous_token": [[token]], "step": [[step]]}
        outputs = dict(
            searcher.decoder({**{k: keras.ops.convert_to_tensor(v, "int32") for k, v in inputs.items()}, **state})
        )
        log_probs = np.asarray(outputs.pop("log_probs"))[0]
        outputs.pop("attention", None)
        state.update(outputs)
        token = decoding.EOS_ID if step + 1 >= limit else int(log_probs.argmax())
        total += float(log_probs[token])
        if token == decoding.EOS_ID:
            break
        ids.append(token)
    return ids, total / (len(ids) + 1) ** searcher.length_alpha


def test_greedy_search_equals_a_step_by_step_reference(translator):
    sources = _encode(translator, [s for s, _ in _held_out(12)])
    for source, hypotheses in zip(sources, translator.translate_ids(sources, beam_size=1)):
        ids, score = _greedy_reference(translator.engine.searcher, source)
        assert hypotheses[0][0] == ids
        assert hypotheses[0][1] == pytest.approx(score, rel=1e-4, abs=1e-5)


def _beam_reference(searcher: decoding.Searcher, source: list[int], beam_size: int) -> list[tuple[list[int], float]]:
    """Beam search as fairseq does it, for one sentence, in plain Python over the step contract.

    Each step ranks every extension of the live hypotheses; among the 2K best, the endings within
    the K best join the finished pool (until K have ended) and the K best that do not end stay
    live. The pool keeps its K best by score over length**alpha. At the last allowed step only
    <eos> may follow.
    """
    encoded = dict(searcher.encoder(keras.ops.convert_to_tensor([source], "int32"), training=False))
    limit = int(len(source) * searcher.length_rule.ratio) + searcher.length_rule.extra
    live = [(0.0, [], encoded)]  # (total log-prob, ids, state)
    finished: list[tuple[float, list[int]]] = []
    ended = 0
    for step in range(limit):
        candidates = []
        for parent, (score, ids, state) in enumerate(live):
            token = ids[-1] if ids else decoding.BOS_ID
            inputs = {"previous_token": [[token]], "step": [[step]]}
            outputs = dict(
                searcher.decoder({**{k: keras.ops.convert_to_tensor(v, "int32") for k, v in inputs.items()}, **state})
            )
            log_probs = np.asarray(outputs.pop("log_probs"))[0].astype(np.float32)
            outputs.pop("attention", None)
            if step + 1 >= limit:
                log_probs = np.where(
                    np.arange(len(log_probs)) == decoding.EOS_ID, log_probs, log_probs + decoding.NEG_INF
                )
            new_state = {**state, **outputs}
            candidates += [(np.float32(score) + log_probs[t], parent, t, new_state) for t in range(len(log_probs))]
        candidates.sort(key=lambda c: -c[0])  # stable: ties keep the lower parent and token first
        next_live, sentence_done = [], ended >= beam_size
        for rank, (score, parent, token, state) in enumerate(candidates[: 2 * beam_size]):
            ids = live[parent][1] + [int(token)]
            if token == decoding.EOS_ID:
                if rank < beam_size and not sentence_done:
                    finished.append((float(score) / (step + 1) ** searcher.length_alpha, ids[:-1]))
                    ended += 1
            elif len(next_live) < beam_size:
                next_live.append((float(score), ids, state))
        finished = sorted(finished, key=lambda f: -f[0])[:beam_size]
        live = next_live
        if ended >= beam_size:
            break
    return [(ids, score) for score, ids in finished]


@pytest.mark.parametrize("beam_size", [2, 5])
def test_beam_search_equals_a_plain_python_reference(translator, beam_size):
    sources = _encode(translator, [s for s, _ in _held_out(6)])
    for source, hypotheses in zip(sources, translator.translate_ids(sources, beam_size=beam_size, n_best=beam_size)):
        expected = _beam_reference(translator.engine.searcher, source, beam_size)
        assert [ids for ids, _ in hypotheses] == [ids for ids, _ in expected]
        np.testing.assert_allclose([s for _, s in hypotheses], [s for _, s in expected], rtol=1e-4, atol=1e-5)


def test_beam_of_one_equals_greedy(translator):
    sources = _encode(translator, [s for s, _ in _held_out(24)])
    batch = np.zeros((len(sources), max(map(len, sources))), np.int32)
    for row, ids in enumerate(sources):
        batch[row, : len(ids)] = ids
    greedy_ids, greedy_scores = translator.engine.searcher.greedy_search(batch)
    beam_ids, beam_scores = translator.engine.searcher.beam_search(batch, beam_size=1)
    for row in range(len(sources)):
        assert decoding.until_eos(beam_ids[row, 0]) == decoding.until_eos(greedy_ids[row])
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
        translator.engine.searcher.encoder, translator.engine.searcher.decoder, LengthRule(ratio=0.0, extra=2)
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
