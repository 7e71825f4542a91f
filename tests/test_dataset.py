"""nmt_cli.dataset: teacher-forcing arrays, the epoch batch plan and the tf.data pipeline."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from nmt_cli.dataset import PAD_MULTIPLE, POOL_BATCHES, ParallelBatches, teacher_forcing_arrays  # noqa: E402
from nmt_cli.tokenizer import BOS_ID, EOS_ID, PAD_ID  # noqa: E402


def random_pairs(count: int, seed: int = 0, max_len: int = 40):
    rng = np.random.default_rng(seed)
    source = [rng.integers(EOS_ID + 1, 100, rng.integers(1, max_len + 1)).astype(np.int32) for _ in range(count)]
    target = [rng.integers(EOS_ID + 1, 100, rng.integers(1, max_len + 1)).astype(np.int32) for _ in range(count)]
    return source, target


# --------------------------------------------------------------------------------------------
# teacher_forcing_arrays
# --------------------------------------------------------------------------------------------


def test_teacher_forcing_arrays_layout():
    source = [np.array([10, 11, 12], np.int32), np.array([13], np.int32)]
    target = [np.array([20, 21], np.int32), np.array([22, 23, 24, 25], np.int32)]
    (encoder_in, decoder_in), decoder_out = teacher_forcing_arrays(source, target)
    assert encoder_in.dtype == decoder_in.dtype == decoder_out.dtype == np.int32
    assert encoder_in.shape == (2, 8) and decoder_in.shape == (2, 8) and decoder_out.shape == (2, 8)
    np.testing.assert_array_equal(encoder_in, [[10, 11, 12, 0, 0, 0, 0, 0], [13, 0, 0, 0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(decoder_in, [[BOS_ID, 20, 21, 0, 0, 0, 0, 0], [BOS_ID, 22, 23, 24, 25, 0, 0, 0]])
    np.testing.assert_array_equal(decoder_out, [[20, 21, EOS_ID, 0, 0, 0, 0, 0], [22, 23, 24, 25, EOS_ID, 0, 0, 0]])


def test_teacher_forcing_decoder_target_is_input_shifted():
    source, target = random_pairs(30, seed=4)
    (encoder_in, decoder_in), decoder_out = teacher_forcing_arrays(source, target)
    for row, (s, t) in enumerate(zip(source, target)):
        np.testing.assert_array_equal(encoder_in[row, : len(s)], s)
        assert not encoder_in[row, len(s) :].any()
        np.testing.assert_array_equal(decoder_in[row, : len(t) + 1], np.concatenate([[BOS_ID], t]))
        np.testing.assert_array_equal(decoder_out[row, : len(t) + 1], np.concatenate([t, [EOS_ID]]))
        assert not decoder_in[row, len(t) + 1 :].any() and not decoder_out[row, len(t) + 1 :].any()
        # Real positions of the input and the target line up exactly.
        np.testing.assert_array_equal(decoder_in[row] != PAD_ID, decoder_out[row] != PAD_ID)


@pytest.mark.parametrize(
    "source_lengths, target_lengths, source_width, target_width",
    [
        ([1], [1], 8, 8),
        ([8], [7], 8, 8),  # 7 + <eos>/<bos> = 8
        ([9], [8], 16, 16),  # 8 + 1 = 9 -> 16
        ([3, 17, 5], [2, 15, 1], 24, 16),
        ([24], [23], 24, 24),
        ([25], [24], 32, 32),
    ],
)
def test_teacher_forcing_pads_lengths_up_to_a_multiple_of_8(source_lengths, target_lengths, source_width, target_width):
    source = [np.full(n, 5, np.int32) for n in source_lengths]
    target = [np.full(n, 6, np.int32) for n in target_lengths]
    (encoder_in, decoder_in), decoder_out = teacher_forcing_arrays(source, target)
    assert encoder_in.shape == (len(source), source_width)
    assert decoder_in.shape == decoder_out.shape == (len(target), target_width)


# --------------------------------------------------------------------------------------------
# ParallelBatches.plan
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus():
    # More pairs than one pool (batch_size * POOL_BATCHES), and not a multiple of the batch size.
    return random_pairs(4 * 50 * POOL_BATCHES // 10 + 37, seed=1)  # 1037 pairs


BATCH = 16


def flat(plan):
    return np.concatenate(plan)


def test_plan_covers_every_pair_once_per_epoch(corpus):
    source, _ = corpus
    batches = ParallelBatches(*corpus, batch_size=BATCH, seed=7, shuffle=True)
    assert len(source) > BATCH * POOL_BATCHES
    for epoch in range(4):
        plan = batches.plan(epoch)
        assert all(1 <= len(batch) <= BATCH for batch in plan)
        assert sorted(flat(plan).tolist()) == list(range(len(source)))


def test_plan_is_deterministic_per_epoch_and_differs_between_epochs(corpus):
    batches = ParallelBatches(*corpus, batch_size=BATCH, seed=7, shuffle=True)
    same = ParallelBatches(*corpus, batch_size=BATCH, seed=7, shuffle=True)
    plans = [batches.plan(epoch) for epoch in range(3)]
    for epoch, plan in enumerate(plans):
        again = same.plan(epoch)
        assert len(again) == len(plan)
        assert all(np.array_equal(a, b) for a, b in zip(plan, again))
        assert np.array_equal(flat(batches.plan(epoch)), flat(plan))  # asking twice: same answer
    assert not np.array_equal(flat(plans[0]), flat(plans[1]))
    assert not np.array_equal(flat(plans[1]), flat(plans[2]))
    # The batch order differs, not only which pairs go together.
    assert not np.array_equal([b[0] for b in plans[0]], [b[0] for b in plans[1]])
    # Another seed, another plan.
    other = ParallelBatches(*corpus, batch_size=BATCH, seed=8, shuffle=True)
    assert not np.array_equal(flat(other.plan(0)), flat(plans[0]))


def test_number_of_batches_is_the_same_every_epoch(corpus):
    source, _ = corpus
    batches = ParallelBatches(*corpus, batch_size=BATCH, seed=3, shuffle=True)
    counts = {len(batches.plan(epoch)) for epoch in range(6)}
    assert counts == {-(-len(source) // BATCH)}
    # Only one batch in the whole epoch may be short.
    for epoch in range(3):
        assert sum(len(batch) < BATCH for batch in batches.plan(epoch)) <= 1


def test_unshuffled_plan_is_sorted_by_length(corpus):
    source, target = corpus
    batches = ParallelBatches(source, target, batch_size=BATCH, seed=3, shuffle=False)
    plan = batches.plan(0)
    lengths = [max(len(source[i]), len(target[i])) for i in flat(plan)]
    assert lengths == sorted(lengths)
    assert sorted(flat(plan).tolist()) == list(range(len(source)))
    assert all(len(batch) == BATCH for batch in plan[:-1])
    assert all(np.array_equal(a, b) for a, b in zip(plan, batches.plan(5)))  # no epoch dependence


def test_shuffled_batches_hold_similar_lengths(corpus):
    source, target = corpus
    batches = ParallelBatches(source, target, batch_size=BATCH, seed=3, shuffle=True)
    lengths = np.array([max(len(s), len(t)) for s, t in zip(source, target)])
    for batch in batches.plan(0):
        # Inside one pool the batch is a run of sorted lengths: its spread is small.
        assert lengths[batch].max() - lengths[batch].min() <= 6


def padding_ratio(source, target, plan) -> float:
    """Cells of the padded arrays per real token (source + decoder input + target)."""
    padded = real = 0
    for batch in plan:
        (encoder_in, decoder_in), decoder_out = teacher_forcing_arrays(
            [source[i] for i in batch], [target[i] for i in batch]
        )
        padded += encoder_in.size + decoder_in.size + decoder_out.size
        real += int((encoder_in != PAD_ID).sum() + (decoder_in != PAD_ID).sum() + (decoder_out != PAD_ID).sum())
    return padded / real


def test_bucketing_wastes_less_padding_than_random_batches():
    # Correlated source/target lengths, as in real parallel text.
    rng = np.random.default_rng(5)
    lengths = rng.integers(1, 60, 2000)
    source = [np.full(n, 7, np.int32) for n in lengths]
    target = [np.full(max(1, n + rng.integers(-3, 4)), 8, np.int32) for n in lengths]
    batches = ParallelBatches(source, target, batch_size=32, seed=0, shuffle=True)
    bucketed = padding_ratio(source, target, batches.plan(0))
    order = rng.permutation(len(source))
    random_plan = [order[i : i + 32] for i in range(0, len(order), 32)]
    shuffled = padding_ratio(source, target, random_plan)
    assert shuffled > 1.5
    assert bucketed < 1.35
    assert bucketed < shuffled * 0.75


# --------------------------------------------------------------------------------------------
# ParallelBatches.dataset
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small():
    return random_pairs(90, seed=2, max_len=20)


def expected_epoch(batches: ParallelBatches, epoch: int):
    source, target = batches.source, batches.target
    return [
        teacher_forcing_arrays([source[i] for i in batch], [target[i] for i in batch]) for batch in batches.plan(epoch)
    ]


def assert_same_epoch(got, expected):
    assert len(got) == len(expected)
    for ((enc, dec), out), ((enc_e, dec_e), out_e) in zip(got, expected):
        np.testing.assert_array_equal(enc, enc_e)
        np.testing.assert_array_equal(dec, dec_e)
        np.testing.assert_array_equal(out, out_e)


def collect(dataset):
    return [((enc.numpy(), dec.numpy()), out.numpy()) for (enc, dec), out in dataset]


def test_dataset_dtypes_and_spec(small):
    batches = ParallelBatches(*small, batch_size=8, seed=1, shuffle=True)
    dataset = batches.dataset()
    (enc_spec, dec_spec), out_spec = dataset.element_spec
    for spec in (enc_spec, dec_spec, out_spec):
        assert spec.dtype == tf.int32 and spec.shape.rank == 2
    (enc, dec), out = next(iter(dataset))
    assert enc.dtype == dec.dtype == out.dtype == tf.int32
    assert enc.shape[1] % PAD_MULTIPLE == 0 and dec.shape[1] % PAD_MULTIPLE == 0
    assert dec.shape == out.shape and enc.shape[0] == dec.shape[0]


def test_a_dataset_is_one_epoch_and_every_pass_is_the_same(small):
    batches = ParallelBatches(*small, batch_size=8, seed=1, shuffle=True)
    assert not np.array_equal(flat(batches.plan(0)), flat(batches.plan(1)))
    for epoch in (0, 3):
        dataset = batches.dataset(epoch)
        assert_same_epoch(collect(dataset), expected_epoch(batches, epoch))
        assert_same_epoch(collect(dataset), expected_epoch(batches, epoch))


def test_a_resumed_epoch_leaves_out_the_batches_it_had_seen(small):
    batches = ParallelBatches(*small, batch_size=8, seed=1, shuffle=True)
    dataset = batches.dataset(2, skip=5)
    assert int(dataset.cardinality()) == len(batches.plan(2)) - 5
    assert_same_epoch(collect(dataset), expected_epoch(batches, 2)[5:])


@pytest.mark.parametrize("shuffle", [True, False])
def test_dataset_cardinality_is_the_plan_length(small, shuffle):
    batches = ParallelBatches(*small, batch_size=8, seed=1, shuffle=shuffle)
    dataset = batches.dataset()
    assert int(dataset.cardinality()) == batches.batches_per_epoch == len(batches.plan(0)) == -(-len(small[0]) // 8)
    assert len(collect(dataset)) == len(batches.plan(0))


def test_token_batches_fill_their_budget_and_cover_every_pair(small):
    batches = ParallelBatches(*small, batch_size=8, seed=1, shuffle=True, batch_tokens=64)
    plan = batches.plan(0)
    assert sorted(flat(plan)) == list(range(len(small[0])))
    for batch in plan:
        (encoder_in, decoder_in), _ = teacher_forcing_arrays([small[0][i] for i in batch], [small[1][i] for i in batch])
        cost = len(batch) * max(encoder_in.shape[1], decoder_in.shape[1])
        assert cost <= 64 or len(batch) == 1
    assert int(batches.dataset(0).cardinality()) == len(plan)


def test_an_epoch_holds_every_target_token_and_its_eos(small):
    batches = ParallelBatches(*small, batch_size=8, seed=1, shuffle=True)
    total = sum(int((out != PAD_ID).sum()) for _, out in expected_epoch(batches, 0))
    assert total == sum(len(t) + 1 for t in small[1])
