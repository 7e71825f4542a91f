"""Greedy and beam search over the encoder and decoder inference models.

The source is encoded once; then the decoder model is fed one token and its states at a time,
as in the original tutorial, but the whole loop runs inside one compiled `tf.function`
(a `tf.while_loop`), batched across sentences, never one `predict` call per step.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from nmt_cli.tokenizer import BOS_ID, EOS_ID, PAD_ID

NEG_INF = -1e9


@dataclass
class Hypothesis:
    ids: list[int]  # target ids without <bos>/<eos>
    score: float  # total log-probability divided by length**alpha (length counts <eos>)


EAGER_MAX_SENTENCES = 4  # this few run eagerly: tracing the compiled loop costs more than it saves


class Searcher:
    """Decodes batches of source id arrays (padded with 0) with one model pair.

    The loops are `tf.while_loop`s, which run as compiled graphs inside `tf.function` and as
    plain Python loops eagerly: the same code serves both.
    """

    def __init__(
        self,
        encoder: keras.Model,
        decoder: keras.Model,
        layers: int,
        max_length_ratio: float = 2.0,
        max_length_extra: int = 10,
        length_alpha: float = 1.0,
    ):
        self.encoder, self.decoder = encoder, decoder
        self.state_count = 2 * layers
        self.max_length_ratio, self.max_length_extra = max_length_ratio, max_length_extra
        self.length_alpha = length_alpha
        signature = [tf.TensorSpec((None, None), tf.int32)]
        self._greedy = tf.function(self._greedy_graph, input_signature=signature)
        self._beams: dict[int, tf.types.experimental.GenericFunction] = {}

    def search(self, source: np.ndarray, beam_size: int = 5, n_best: int = 1) -> list[list[Hypothesis]]:
        """The `n_best` best hypotheses of every source row, best first."""
        if beam_size == 1:
            ids, scores = self.greedy_search(source)
            ids, scores = ids[:, None, :], scores[:, None]
        else:
            ids, scores = self.beam_search(source, beam_size)
        return [[Hypothesis(_until_eos(row), float(score)) for row, score in zip(ids[b], scores[b])][:n_best] for b in range(len(ids))]

    def greedy_search(self, source: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ids (batch, steps), normalised scores (batch,)) of the greedy translation of each row."""
        run = self._greedy_graph if len(source) <= EAGER_MAX_SENTENCES else self._greedy
        ids, scores = run(tf.convert_to_tensor(source, tf.int32))
        return ids.numpy(), scores.numpy()

    def beam_search(self, source: np.ndarray, beam_size: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids (batch, beam, steps), normalised scores (batch, beam)), each row's beams best first."""
        source = tf.convert_to_tensor(source, tf.int32)
        if len(source) <= EAGER_MAX_SENTENCES:
            ids, scores = self._beam_graph(source, beam_size)
        else:
            if beam_size not in self._beams:
                self._beams[beam_size] = tf.function(
                    lambda s: self._beam_graph(s, beam_size), input_signature=[tf.TensorSpec((None, None), tf.int32)]
                )
            ids, scores = self._beams[beam_size](source)
        return ids.numpy(), scores.numpy()

    def _split_encoder_outputs(self, source):
        outputs = self.encoder(source, training=False)
        outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        return outputs[: len(outputs) - self.state_count], outputs[len(outputs) - self.state_count :]

    def _max_steps(self, source):
        source_lengths = tf.reduce_sum(tf.cast(tf.not_equal(source, PAD_ID), tf.float32), axis=1)
        limits = tf.cast(source_lengths * self.max_length_ratio, tf.int32) + self.max_length_extra
        return limits, tf.reduce_max(limits)

    def _step(self, tokens, memory, states):
        outputs = self.decoder([tokens[:, None], *memory, *states], training=False)
        return outputs[0][:, 0, :], list(outputs[1:])

    def _greedy_graph(self, source):
        memory, states = self._split_encoder_outputs(source)
        batch = tf.shape(source)[0]
        limits, max_steps = self._max_steps(source)
        tokens = tf.fill([batch], BOS_ID)
        output = tf.TensorArray(tf.int32, size=max_steps)
        finished = tf.zeros([batch], tf.bool)
        total = tf.zeros([batch])
        lengths = tf.zeros([batch])

        def body(t, tokens, states, finished, total, lengths, output):
            log_probs, states = self._step(tokens, memory, states)
            best = tf.cast(tf.argmax(log_probs, axis=-1), tf.int32)
            best = tf.where(finished, PAD_ID, tf.where(t + 1 >= limits, EOS_ID, best))
            gained = tf.gather(log_probs, best, batch_dims=1)
            total += tf.where(finished, 0.0, gained)
            lengths += tf.where(finished, 0.0, 1.0)
            output = output.write(t, best)
            # A finished row is fed <eos>, not padding: an all-padding step is a fully masked
            # sequence, which cuDNN's LSTM refuses on GPU.
            next_tokens = tf.where(finished, EOS_ID, best)
            return t + 1, next_tokens, states, finished | tf.equal(best, EOS_ID), total, lengths, output

        def more(t, tokens, states, finished, *_):
            return tf.logical_and(t < max_steps, tf.logical_not(tf.reduce_all(finished)))

        _, _, _, _, total, lengths, output = tf.while_loop(
            more, body, [tf.constant(0), tokens, states, finished, total, lengths, output]
        )
        return tf.transpose(output.stack()), total / tf.pow(tf.maximum(lengths, 1.0), self.length_alpha)

    def _beam_graph(self, source, beam_size: int):
        """Beam search as in fairseq: hypotheses that end leave the beam for a pool of finished
        ones, and a sentence is done once K have finished; the pool is ranked by score over
        length**alpha. With K = 1 this is exactly greedy search.
        """
        memory, states = self._split_encoder_outputs(source)
        batch = tf.shape(source)[0]
        limits, max_steps = self._max_steps(source)
        memory = [tf.repeat(m, beam_size, axis=0) for m in memory]
        states = [tf.repeat(s, beam_size, axis=0) for s in states]
        limits = tf.reshape(tf.repeat(limits, beam_size), [batch, beam_size, 1])
        vocab = self.decoder.outputs[0].shape[-1]
        eos_only = tf.one_hot(EOS_ID, vocab, on_value=0.0, off_value=NEG_INF)
        in_beam = tf.range(2 * beam_size) < beam_size

        # Only the first beam is live at the start, so the first step does not pick K copies.
        live_scores = tf.tile(tf.constant([[0.0] + [NEG_INF] * (beam_size - 1)]), [batch, 1])
        live_sequences = tf.zeros([batch, beam_size, 0], tf.int32)
        tokens = tf.fill([batch * beam_size], BOS_ID)
        done_scores = tf.fill([batch, beam_size], NEG_INF)  # normalised
        done_sequences = tf.zeros([batch, beam_size, 0], tf.int32)
        done_count = tf.zeros([batch], tf.int32)

        def body(t, tokens, states, live_scores, live_sequences, done_scores, done_sequences, done_count):
            log_probs, states = self._step(tokens, memory, states)
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
            done_scores, keep = tf.math.top_k(tf.concat([done_scores, ended_scores], axis=1), k=beam_size)
            done_sequences = tf.gather(tf.concat([padded_done, extended], axis=1), keep, batch_dims=1)
            done_count += tf.reduce_sum(tf.cast(finishing, tf.int32), axis=1)

            live_scores, keep = tf.math.top_k(tf.where(ends, NEG_INF, top_scores), k=beam_size)
            live_sequences = tf.gather(extended, keep, batch_dims=1)
            live_parent = tf.gather(parent, keep, batch_dims=1)
            flat_parent = tf.reshape(live_parent + tf.range(batch)[:, None] * beam_size, [-1])
            states = [tf.gather(s, flat_parent) for s in states]
            tokens = tf.reshape(tf.gather(token, keep, batch_dims=1), [-1])
            return t + 1, tokens, states, live_scores, live_sequences, done_scores, done_sequences, done_count

        def more(t, tokens, states, live_scores, live_sequences, done_scores, done_sequences, done_count):
            return tf.logical_and(t < max_steps, tf.logical_not(tf.reduce_all(done_count >= beam_size)))

        loop = tf.while_loop(
            more,
            body,
            [tf.constant(0), tokens, states, live_scores, live_sequences, done_scores, done_sequences, done_count],
            shape_invariants=[
                tf.TensorShape([]),
                tf.TensorShape([None]),
                [s.shape for s in states],
                tf.TensorShape([None, beam_size]),
                tf.TensorShape([None, beam_size, None]),
                tf.TensorShape([None, beam_size]),
                tf.TensorShape([None, beam_size, None]),
                tf.TensorShape([None]),
            ],
        )
        done_scores, done_sequences = loop[5], loop[6]
        return done_sequences, done_scores


def _until_eos(ids: np.ndarray) -> list[int]:
    out = []
    for token in ids.tolist():
        if token in (EOS_ID, PAD_ID):
            break
        out.append(token)
    return out
