"""Encoded id sequences -> batches for teacher forcing, as a tf.data pipeline.

Batches hold sentences of similar length (sorted inside large shuffled pools) so little work is
spent on padding, and lengths are padded up to a multiple of 8 so that compiled (XLA) training
steps see few distinct shapes.
"""

from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf

from nmt_cli.tokenizer import BOS_ID, EOS_ID, PAD_ID

PAD_MULTIPLE = 8
POOL_BATCHES = 50


def _padded_length(length: int) -> int:
    return max(PAD_MULTIPLE, -(-length // PAD_MULTIPLE) * PAD_MULTIPLE)


def teacher_forcing_arrays(
    source: list[np.ndarray], target: list[np.ndarray]
) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    """((source ids, decoder input `<bos> y`), decoder target `y <eos>`), padded with 0."""
    source_len = _padded_length(max((len(s) for s in source), default=0))
    target_len = _padded_length(max((len(t) for t in target), default=0) + 1)
    encoder_in = np.full((len(source), source_len), PAD_ID, np.int32)
    decoder_in = np.full((len(target), target_len), PAD_ID, np.int32)
    decoder_out = np.full((len(target), target_len), PAD_ID, np.int32)
    for row, (s, t) in enumerate(zip(source, target)):
        encoder_in[row, : len(s)] = s
        decoder_in[row, 0] = BOS_ID
        decoder_in[row, 1 : len(t) + 1] = t
        decoder_out[row, : len(t)] = t
        decoder_out[row, len(t)] = EOS_ID
    return (encoder_in, decoder_in), decoder_out


class ParallelBatches:
    """A split's sentence pairs, planned into length-bucketed batches epoch by epoch.

    A batch holds `batch_size` pairs, or, with `batch_tokens`, as many pairs as fit in that many
    padded positions (pairs x the longest side, padded as `teacher_forcing_arrays` pads): large
    batches of short sentences and small batches of long ones, the same work in each.
    """

    def __init__(
        self,
        source: list[np.ndarray],
        target: list[np.ndarray],
        batch_size: int,
        seed: int,
        shuffle: bool,
        batch_tokens: int = 0,
    ):
        self.source, self.target = source, target
        self.batch_size, self.seed, self.shuffle, self.batch_tokens = batch_size, seed, shuffle, batch_tokens
        self._lengths = np.array([max(len(s), len(t)) for s, t in zip(source, target)])
        # What a pair costs in a batch: its longer side as `teacher_forcing_arrays` pads it.
        longest = np.array([max(len(s), len(t) + 1) for s, t in zip(source, target)])
        self._padded = np.maximum(PAD_MULTIPLE, -(-longest // PAD_MULTIPLE) * PAD_MULTIPLE)

    @functools.cached_property
    def batches_per_epoch(self) -> int:
        """The number of batches of the first epoch; later ones differ only with `batch_tokens`."""
        return len(self.plan(0))

    def _group(self, order: np.ndarray) -> list[np.ndarray]:
        """Consecutive runs of `order` (sorted by length) as batches."""
        if not self.batch_tokens:
            return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        batches, start, longest = [], 0, 0
        for end, index in enumerate(order):
            longest = max(longest, self._padded[index])
            if end > start and (end - start + 1) * longest > self.batch_tokens:
                batches.append(order[start:end])
                start, longest = end, self._padded[index]
        batches.append(order[start:])
        return batches

    def plan(self, epoch: int) -> list[np.ndarray]:
        """The batches (arrays of pair indices) of one epoch: the same epoch always gives the same plan."""
        if not self.shuffle:
            return self._group(np.argsort(self._lengths, kind="stable"))
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self._lengths))
        per_batch = self.batch_size if not self.batch_tokens else max(1, self.batch_tokens // int(self._padded.mean()))
        pool = per_batch * POOL_BATCHES
        batches = []
        for start in range(0, len(order), pool):
            chunk = order[start : start + pool]
            batches += self._group(chunk[np.argsort(self._lengths[chunk], kind="stable")])
        return [batches[i] for i in rng.permutation(len(batches))]

    def dataset(self, epoch: int = 0, skip: int = 0) -> tf.data.Dataset:
        """One epoch's batches for Keras `fit`, without its first `skip` (a run resumed inside the
        epoch goes on with the batches it had not reached). Every pass gives the same batches.

        Its length is told to tf.data, and so to Keras: an epoch is exactly its plan.
        """

        def generate():
            for batch in self.plan(epoch)[skip:]:
                yield teacher_forcing_arrays([self.source[i] for i in batch], [self.target[i] for i in batch])

        ids = tf.TensorSpec(shape=(None, None), dtype=tf.int32)
        dataset = tf.data.Dataset.from_generator(generate, output_signature=((ids, ids), ids))
        return dataset.apply(tf.data.experimental.assert_cardinality(len(self.plan(epoch)) - skip)).prefetch(4)

    def worker_dataset(self, epoch: int, skip: int, worker: int, workers: int) -> tf.data.Dataset:
        """One epoch for one of several workers: its share of every global batch (every `workers`-th
        pair from `worker` on), and the global batch's real target tokens, which divide every
        worker's summed loss so that the workers' gradients add up to the one-worker mean.

        A share with no pair gets one all-padding row, which counts for nothing.
        """

        def generate():
            for batch in self.plan(epoch)[skip:]:
                tokens = sum(len(self.target[i]) + 1 for i in batch)
                mine = batch[worker::workers]
                source = [self.source[i] for i in mine] or [np.zeros(0, np.int32)]
                target = [self.target[i] for i in mine] or [np.zeros(0, np.int32)]
                (encoder_in, decoder_in), decoder_out = teacher_forcing_arrays(source, target)
                if not len(mine):
                    decoder_in[:] = PAD_ID
                    decoder_out[:] = PAD_ID
                yield (encoder_in, decoder_in), decoder_out, np.float32(tokens)

        ids = tf.TensorSpec(shape=(None, None), dtype=tf.int32)
        signature = ((ids, ids), ids, tf.TensorSpec(shape=(), dtype=tf.float32))
        return tf.data.Dataset.from_generator(generate, output_signature=signature).prefetch(4)
