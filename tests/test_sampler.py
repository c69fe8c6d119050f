from collections import Counter

import pytest

from pipeline.sampler import GroupBatchSampler, SamplerError


def _groups():
    # 30 groups of sizes 1..4, so some groups cannot give a positive pair.
    labels = []
    for group in range(30):
        labels += [group] * (1 + group % 4)
    return labels


def _batches(sampler, size):
    indices = list(sampler)
    return [indices[start:start + size] for start in range(0, len(indices), size)]


def test_every_batch_has_p_groups_of_k():
    labels = _groups()
    sampler = GroupBatchSampler(labels, groups_per_batch=5, items_per_group=2, seed=0)
    batches = _batches(sampler, 10)
    assert len(batches) == sampler.num_batches
    for batch in batches:
        counts = Counter(labels[index] for index in batch)
        assert len(counts) == 5
        assert all(count == 2 for count in counts.values())
        assert len(set(batch)) == len(batch)


def test_groups_too_small_are_skipped():
    labels = _groups()
    sampler = GroupBatchSampler(labels, groups_per_batch=4, items_per_group=3, seed=0)
    seen = {labels[index] for index in sampler}
    assert all(labels.count(group) >= 3 for group in seen)


def test_training_reshuffles_and_validation_repeats():
    labels = _groups()
    training = GroupBatchSampler(labels, 5, 2, seed=1, reshuffle=True)
    assert list(training) != list(training)
    validation = GroupBatchSampler(labels, 5, 2, seed=1, reshuffle=False)
    assert list(validation) == list(validation)


def test_same_seed_same_batches():
    labels = _groups()
    first = GroupBatchSampler(labels, 5, 2, seed=9)
    second = GroupBatchSampler(labels, 5, 2, seed=9)
    first.set_epoch(3)
    second.set_epoch(3)
    assert list(first) == list(second)


def test_too_few_groups_is_an_error():
    with pytest.raises(SamplerError, match="groups_per_batch"):
        GroupBatchSampler([0, 0, 1, 1], groups_per_batch=3, items_per_group=2)


def test_k_below_two_is_an_error():
    with pytest.raises(SamplerError, match="at least 2"):
        GroupBatchSampler([0, 0, 1, 1], groups_per_batch=2, items_per_group=1)
