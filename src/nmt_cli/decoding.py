"""Greedy and beam search over any encoder and decoder that keep the step contract.

The contract (models/base.py): the encoder turns source ids into a state, a dict of tensors;
the decoder takes the previous token, the step index and the state, and returns log-probs and
the new values of the state's *cache*; the rest of the state is *memory* and never changes.
Search knows nothing else of the architecture: beam search repeats the state for every beam
and reorders the cache by beam parent with one `tf.nest.map_structure`. Asked for attention (a
decoder that gives it), search also carries each hypothesis' attention rows, reordered with it;
that is a separately compiled search, so the default one carries nothing more.

The source is encoded once; then the decoder model is fed one token at a time, as in the
original tutorial, but the whole loop runs inside one compiled `tf.function` (a
`tf.while_loop`), batched across sentences, never one `predict` call per step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from nmt_cli.engines import LENGTH_RULE, LengthRule, NBest, Sampling
from nmt_cli.models.base import ATTENTION, LOG_PROBS, PREVIOUS_TOKEN, STEP
from nmt_cli.tokenizer import BOS_ID, EOS_ID, PAD_ID

NEG_INF = -1e9
BATCH_SENTENCES = 128  # larger batches amortise each step's overhead; beyond this, memory grows for no gain
EAGER_MAX_SENTENCES = 4  # this few run eagerly: tracing the compiled loop costs more than it saves


@dataclass
class Hypothesis:
    ids: list[int]  # target ids without <bos>/<eos>
    score: float  # total log-probability divided by length**alpha (length counts <eos>)
    # Asked for: float32 (len(ids) + 1, source length), the attention of each id's step and <eos>'s
    attention: np.ndarray | None = None


def step_limits(rule: LengthRule, source):
    """`rule`'s number of target steps for every row of a padded source batch."""
    source_lengths = tf.reduce_sum(tf.cast(tf.not_equal(source, PAD_ID), tf.float32), axis=1)
    return tf.cast(source_lengths * rule.ratio, tf.int32) + rule.extra


class Searcher:
    """Decodes batches of source id arrays (padded with 0) with one encoder/decoder pair.

    The loops are `tf.while_loop`s, which run as compiled graphs inside `tf.function` and as
    plain Python loops eagerly: the same code serves both.
    """

    def __init__(
        self,
        encoder: keras.Model,
        decoder: keras.Model,
        length_rule: LengthRule = LENGTH_RULE,
        length_alpha: float = 1.0,
        sampling: Sampling | None = None,
    ):
        self.encoder, self.decoder, self.sampling = encoder, decoder, sampling
        self.attends = ATTENTION in decoder.output  # decoders saved before attention was an output have none
        self.cache_names = tuple(name for name in decoder.output if name not in (LOG_PROBS, ATTENTION))
        self.length_rule, self.length_alpha = length_rule, length_alpha
        self.vocab = decoder.output[LOG_PROBS].shape[-1]
        self._compiled: dict[tuple, tf.types.experimental.GenericFunction] = {}

    def search(
        self, source: np.ndarray, beam_size: int = 5, n_best: int = 1, attention: bool = False
    ) -> list[list[Hypothesis]]:
        """The `n_best` best hypotheses of every source row, best first (sampling: one draw), with
        their attention rows if asked for (a decoder that `attends`)."""
        if beam_size == 1 or self.sampling is not None:
            found = tuple(array[:, None] for array in self.greedy_search(source, attention))  # a beam of one
        else:
            found = self.beam_search(source, beam_size, attention)
        ids, scores = found[:2]
        source_lengths = np.count_nonzero(source != PAD_ID, axis=1)
        results = []
        for b in range(len(ids)):
            hypotheses = [Hypothesis(until_eos(row), float(score)) for row, score in zip(ids[b], scores[b])][:n_best]
            if attention:
                for beam, hypothesis in enumerate(hypotheses):
                    hypothesis.attention = found[2][b, beam, : len(hypothesis.ids) + 1, : source_lengths[b]]
            results.append(hypotheses)
        return results

    def search_all(
        self,
        sources: list[list[int]],
        beam_size: int,
        n_best: int = 1,
        on_progress: Callable[[int], None] | None = None,
        attention: bool = False,
    ) -> list[NBest]:
        """Id sequences in, n-best (ids, score) lists out, in order; empty sequences get none; with
        `attention`, (ids, score, attention rows) (see `Hypothesis`).

        Sentences of similar length go in a batch together; `on_progress(sentences)` is called
        after each batch with the number it translated.
        """
        results: list[NBest] = [[] for _ in sources]
        order = sorted((i for i, ids in enumerate(sources) if len(ids)), key=lambda i: len(sources[i]))
        for start in range(0, len(order), BATCH_SENTENCES):
            rows = order[start : start + BATCH_SENTENCES]
            batch = padded([sources[i] for i in rows], PAD_ID)
            for i, hypotheses in zip(rows, self.search(batch, beam_size, n_best, attention)):
                results[i] = [(h.ids, h.score, h.attention) if attention else (h.ids, h.score) for h in hypotheses]
            if on_progress is not None:
                on_progress(len(rows))
        return results

    def score_all(self, sources: list[list[int]], targets: list[list[int]]) -> list[list[float]]:
        """The log-probability of each target token and of the `<eos>` after them, given its
        source: the decoder fed the target itself (forced decoding), as search feeds its choices."""
        results: list[list[float]] = [[] for _ in sources]
        order = sorted(range(len(sources)), key=lambda i: (len(sources[i]), len(targets[i])))
        for start in range(0, len(order), BATCH_SENTENCES):
            rows = order[start : start + BATCH_SENTENCES]
            source = padded([sources[i] for i in rows], PAD_ID)
            # Each target row ends in <eos>, and <eos> fills the rest: what search feeds a finished row.
            target = padded([targets[i] + [EOS_ID] for i in rows], EOS_ID)
            log_probs = self._run(("forced",), self._forced_graph, source, target)
            for r, i in enumerate(rows):
                results[i] = log_probs[r, : len(targets[i]) + 1].tolist()
        return results

    def greedy_search(self, source: np.ndarray, attention: bool = False) -> tuple[np.ndarray, ...]:
        """(ids (batch, steps), normalised scores (batch,)) of the greedy translation of each row,
        and with `attention` their attention rows (batch, steps, source length)."""
        return self._run(("greedy", attention), lambda s: self._greedy_graph(s, attention), source)

    def beam_search(self, source: np.ndarray, beam_size: int, attention: bool = False) -> tuple[np.ndarray, ...]:
        """(ids (batch, beam, steps), normalised scores (batch, beam)), each row's beams best first,
        and with `attention` their attention rows (batch, beam, steps, source length)."""
        return self._run(("beam", beam_size, attention), lambda s: self._beam_graph(s, beam_size, attention), source)

    def _run(self, kind: tuple, graph: Callable, *batches: np.ndarray):
        """`graph`'s NumPy results over int32 batches: eagerly for a few sentences (tracing the
        compiled loop costs more than it saves), else compiled once per `kind`."""
        tensors = [tf.convert_to_tensor(batch, tf.int32) for batch in batches]
        if len(batches[0]) > EAGER_MAX_SENTENCES:
            if kind not in self._compiled:
                # The loops are explicit tf.while_loops: AutoGraph would only add tracing time.
                signature = [tf.TensorSpec((None, None), tf.int32)] * len(tensors)
                self._compiled[kind] = tf.function(graph, input_signature=signature, autograph=False)
            graph = self._compiled[kind]
        return tf.nest.map_structure(lambda found: found.numpy(), graph(*tensors))

    def _encode(self, source) -> tuple[dict, dict]:
        """(memory, cache) of a source batch."""
        state = dict(self.encoder(source, training=False))
        cache = {name: state.pop(name) for name in self.cache_names}
        return state, cache

    def _step(self, tokens, t, memory: dict, cache: dict) -> tuple[tf.Tensor, tf.Tensor | None, dict]:
        """(log-probs, attention row or None, new cache) of one step."""
        steps = tf.fill(tf.stack([tf.shape(tokens)[0], 1]), t)
        outputs = dict(self.decoder({PREVIOUS_TOKEN: tokens[:, None], STEP: steps, **memory, **cache}, training=False))
        return outputs.pop(LOG_PROBS), outputs.pop(ATTENTION, None), outputs

    @staticmethod
    def _cache_shapes(cache: dict) -> dict:
        """Shape invariants for the loop: only a cache tensor's feature axis stays fixed."""
        return tf.nest.map_structure(lambda c: tf.TensorShape([None] * (c.shape.rank - 1) + [c.shape[-1]]), cache)

    def _greedy_graph(self, source, attention: bool = False):
        memory, cache = self._encode(source)
        batch = tf.shape(source)[0]
        limits = step_limits(self.length_rule, source)
        max_steps = tf.reduce_max(limits)
        tokens = tf.fill([batch], BOS_ID)
        output = tf.TensorArray(tf.int32, size=max_steps)
        finished = tf.zeros([batch], tf.bool)
        total = tf.zeros([batch])
        lengths = tf.zeros([batch])
        rows = (tf.TensorArray(tf.float32, size=max_steps),) if attention else ()

        def body(t, tokens, cache, finished, total, lengths, output, rows):
            log_probs, weights, cache = self._step(tokens, t, memory, cache)
            best = self._pick(log_probs, t)
            best = tf.where(finished, PAD_ID, tf.where(t + 1 >= limits, EOS_ID, best))
            gained = tf.gather(log_probs, best, batch_dims=1)
            total += tf.where(finished, 0.0, gained)
            lengths += tf.where(finished, 0.0, 1.0)
            output = output.write(t, best)
            rows = tuple(written.write(t, weights) for written in rows)
            # A finished row is fed <eos>, not padding: an all-padding step is a fully masked
            # sequence, which cuDNN's LSTM refuses on GPU.
            next_tokens = tf.where(finished, EOS_ID, best)
            return t + 1, next_tokens, cache, finished | tf.equal(best, EOS_ID), total, lengths, output, rows

        def more(t, tokens, cache, finished, *_):
            return tf.logical_and(t < max_steps, tf.logical_not(tf.reduce_all(finished)))

        _, _, _, _, total, lengths, output, rows = tf.while_loop(
            more,
            body,
            [tf.constant(0), tokens, cache, finished, total, lengths, output, rows],
            shape_invariants=[
                tf.TensorShape([]),
                tf.TensorShape([None]),
                self._cache_shapes(cache),
                tf.TensorShape([None]),
                tf.TensorShape([None]),
                tf.TensorShape([None]),
                tf.TensorShape(None),
                tuple(tf.TensorShape(None) for _ in rows),
            ],
        )
        found = (tf.transpose(output.stack()), total / tf.pow(tf.maximum(lengths, 1.0), self.length_alpha))
        return found + tuple(tf.transpose(written.stack(), [1, 0, 2]) for written in rows)

    def _pick(self, log_probs, t):
        """Each row's next token: the most likely, or a draw (`Sampling`), repeatable by its seed."""
        if self.sampling is None:
            return tf.cast(tf.argmax(log_probs, axis=-1), tf.int32)
        sampling = self.sampling
        logits = log_probs / sampling.temperature
        if sampling.topk:
            kth = tf.math.top_k(logits, k=min(sampling.topk, self.vocab)).values[:, -1:]
            logits = tf.where(logits < kth, NEG_INF, logits)
        if sampling.topp < 1.0:
            ranked = tf.sort(logits, axis=-1, direction="DESCENDING")
            before = tf.cumsum(tf.nn.softmax(ranked), axis=-1, exclusive=True)
            # The least likely token still kept: the mass before it is under topp.
            lowest = tf.reduce_min(tf.where(before < sampling.topp, ranked, -NEG_INF), axis=-1, keepdims=True)
            logits = tf.where(logits < lowest, NEG_INF, logits)
        drawn = tf.random.stateless_categorical(logits, 1, seed=tf.stack([sampling.seed, t]), dtype=tf.int32)
        return drawn[:, 0]

    def _forced_graph(self, source, target):
        """Per-token log-probabilities of `target` (each row its tokens, then `<eos>` to the end),
        fed one token at a time after `<bos>`, exactly as search feeds the tokens it picks."""
        memory, cache = self._encode(source)
        batch, steps = tf.shape(target)[0], tf.shape(target)[1]
        previous = tf.concat([tf.fill([batch, 1], BOS_ID), target[:, :-1]], axis=1)
        output = tf.TensorArray(tf.float32, size=steps)

        def body(t, cache, output):
            log_probs, _, cache = self._step(previous[:, t], t, memory, cache)
            return t + 1, cache, output.write(t, tf.gather(log_probs, target[:, t], batch_dims=1))

        _, _, output = tf.while_loop(
            lambda t, *_: t < steps,
            body,
            [tf.constant(0), cache, output],
            shape_invariants=[tf.TensorShape([]), self._cache_shapes(cache), tf.TensorShape(None)],
        )
        return tf.transpose(output.stack())

    def _beam_graph(self, source, beam_size: int, attention: bool = False):
        """Beam search as in fairseq: hypotheses that end leave the beam for a pool of finished
        ones, and a sentence is done once K have finished; the pool is ranked by score over
        length**alpha. With K = 1 this is exactly greedy search. With `attention`, the attention
        rows of the live and finished hypotheses go where their ids go.
        """
        memory, cache = self._encode(source)
        batch = tf.shape(source)[0]
        limits = step_limits(self.length_rule, source)
        max_steps = tf.reduce_max(limits)
        memory, cache = tf.nest.map_structure(lambda s: tf.repeat(s, beam_size, axis=0), (memory, cache))
        limits = tf.reshape(tf.repeat(limits, beam_size), [batch, beam_size, 1])
        vocab = self.vocab
        eos_only = tf.one_hot(EOS_ID, vocab, on_value=0.0, off_value=NEG_INF)
        in_beam = tf.range(2 * beam_size) < beam_size

        # Only the first beam is live at the start, so the first step does not pick K copies.
        live_scores = tf.tile(tf.constant([[0.0] + [NEG_INF] * (beam_size - 1)]), [batch, 1])
        live_sequences = tf.zeros([batch, beam_size, 0], tf.int32)
        tokens = tf.fill([batch * beam_size], BOS_ID)
        done_scores = tf.fill([batch, beam_size], NEG_INF)  # normalised
        done_sequences = tf.zeros([batch, beam_size, 0], tf.int32)
        done_count = tf.zeros([batch], tf.int32)
        no_rows = tf.zeros([batch, beam_size, 0, tf.shape(source)[1]])
        rows = (no_rows, no_rows) if attention else ()  # (live, finished)

        def body(t, tokens, cache, live_scores, live_sequences, done_scores, done_sequences, done_count, rows):
            log_probs, weights, cache = self._step(tokens, t, memory, cache)
            log_probs = tf.reshape(log_probs, [batch, beam_size, vocab])
            log_probs = tf.where(t + 1 >= limits, log_probs + eos_only, log_probs)
            candidates = tf.reshape(live_scores[:, :, None] + log_probs, [batch, beam_size * vocab])
            # 2K candidates hold at least K that do not end (each beam ends at most once).
            top_scores, flat = tf.math.top_k(candidates, k=2 * beam_size)
            parent, token = flat // vocab, flat % vocab
            extended = tf.concat([tf.gather(live_sequences, parent, batch_dims=1), token[:, :, None]], axis=2)
            ends = tf.equal(token, EOS_ID)

            # An ending counts only if it ranks among the K best candidates of an unfinished sentence.
            sentence_done = done_count >= beam_size
            finishing = ends & in_beam[None, :] & tf.logical_not(sentence_done)[:, None]
            length_penalty = tf.pow(tf.cast(t + 1, tf.float32), self.length_alpha)
            ended_scores = tf.where(finishing, top_scores / length_penalty, NEG_INF)
            padded_done = tf.pad(done_sequences, [[0, 0], [0, 0], [0, 1]], constant_values=PAD_ID)
            done_scores, done_keep = tf.math.top_k(tf.concat([done_scores, ended_scores], axis=1), k=beam_size)
            done_sequences = tf.gather(tf.concat([padded_done, extended], axis=1), done_keep, batch_dims=1)
            done_count += tf.reduce_sum(tf.cast(finishing, tf.int32), axis=1)

            live_scores, keep = tf.math.top_k(tf.where(ends, NEG_INF, top_scores), k=beam_size)
            live_sequences = tf.gather(extended, keep, batch_dims=1)
            if rows:
                live_rows, done_rows = rows
                step_rows = tf.reshape(weights, [batch, beam_size, 1, -1])
                extended_rows = tf.concat(
                    [tf.gather(live_rows, parent, batch_dims=1), tf.gather(step_rows, parent, batch_dims=1)], axis=2
                )
                padded_done_rows = tf.pad(done_rows, [[0, 0], [0, 0], [0, 1], [0, 0]])
                rows = (
                    tf.gather(extended_rows, keep, batch_dims=1),
                    tf.gather(tf.concat([padded_done_rows, extended_rows], axis=1), done_keep, batch_dims=1),
                )
            live_parent = tf.gather(parent, keep, batch_dims=1)
            flat_parent = tf.reshape(live_parent + tf.range(batch)[:, None] * beam_size, [-1])
            cache = tf.nest.map_structure(lambda c: tf.gather(c, flat_parent), cache)
            tokens = tf.reshape(tf.gather(token, keep, batch_dims=1), [-1])
            return t + 1, tokens, cache, live_scores, live_sequences, done_scores, done_sequences, done_count, rows

        def more(t, tokens, cache, live_scores, live_sequences, done_scores, done_sequences, done_count, rows):
            return tf.logical_and(t < max_steps, tf.logical_not(tf.reduce_all(done_count >= beam_size)))

        loop = tf.while_loop(
            more,
            body,
            [tf.constant(0), tokens, cache, live_scores, live_sequences, done_scores, done_sequences, done_count, rows],
            shape_invariants=[
                tf.TensorShape([]),
                tf.TensorShape([None]),
                self._cache_shapes(cache),
                tf.TensorShape([None, beam_size]),
                tf.TensorShape([None, beam_size, None]),
                tf.TensorShape([None, beam_size]),
                tf.TensorShape([None, beam_size, None]),
                tf.TensorShape([None]),
                tuple(tf.TensorShape([None, beam_size, None, None]) for _ in rows),
            ],
        )
        *_, done_scores, done_sequences, _, rows = loop
        return (done_sequences, done_scores) + rows[1:]


def padded(sequences: list[list[int]], fill: int) -> np.ndarray:
    """A batch of id sequences as one int32 array, each row filled out with `fill`."""
    batch = np.full((len(sequences), max(len(ids) for ids in sequences)), fill, np.int32)
    for row, ids in zip(batch, sequences):
        row[: len(ids)] = ids
    return batch


def until_eos(ids: np.ndarray) -> list[int]:
    out = []
    for token in ids.tolist():
        if token in (EOS_ID, PAD_ID):
            break
        out.append(token)
    return out
