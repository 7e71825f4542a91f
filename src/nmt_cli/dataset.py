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


def teacher_forcing_arrays(source: list[np.ndarray], target: list[np.ndarray]) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    """((source ids, decoder input `<bos> y`), decoder target `y <eos>`), padded with 0."""
    source_len = _padded_length(max(len(s) for s in source))
    target_len = _padded_length(max(len(t) for t in target) + 1)
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
    """A split's sentence pairs, planned into length-bucketed batches epoch by epoch."""

    def __init__(self, source: list[np.ndarray], target: list[np.ndarray], batch_size: int, seed: int, shuffle: bool):
        self.source, self.target = source, target
        self.batch_size, self.seed, self.shuffle = batch_size, seed, shuffle
        self._lengths = np.array([max(len(s), len(t)) for s, t in zip(source, target)])

    @property
    def target_tokens(self) -> int:
        """Real target tokens per epoch, `<eos>` included (the benchmark's epoch-length estimate)."""
        return int(sum(len(t) + 1 for t in self.target))

    @functools.cached_property
    def batches_per_epoch(self) -> int:
        """The same for every epoch: pools have fixed sizes, only their contents are shuffled."""
        return len(self.plan(0))

    def plan(self, epoch: int) -> list[np.ndarray]:
        """The batches (arrays of pair indices) of one epoch: the same epoch always gives the same plan."""
        if not self.shuffle:
            order = np.argsort(self._lengths, kind="stable")
            return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self._lengths))
        pool = self.batch_size * POOL_BATCHES
        batches = []
        for start in range(0, len(order), pool):
            chunk = order[start : start + pool]
            chunk = chunk[np.argsort(self._lengths[chunk], kind="stable")]
            batches += [chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        return [batches[i] for i in rng.permutation(len(batches))]

    def dataset(self, first_epoch: int = 0) -> tf.data.Dataset:
        """Batches for Keras `fit`; each pass over the dataset is the next epoch's plan."""
        epochs = iter(range(first_epoch, 1 << 30))

        def generate():
            for batch in self.plan(next(epochs)):
                yield teacher_forcing_arrays([self.source[i] for i in batch], [self.target[i] for i in batch])

        ids = tf.TensorSpec(shape=(None, None), dtype=tf.int32)
        dataset = tf.data.Dataset.from_generator(generate, output_signature=((ids, ids), ids))
        # Telling tf.data the epoch length lets Keras know it too.
        return dataset.apply(tf.data.experimental.assert_cardinality(self.batches_per_epoch)).prefetch(4)
