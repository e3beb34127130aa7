"""The class-balanced batch sampler: composition, DDP sharding, epochs, bad input."""
from collections import Counter

import numpy as np
import pytest

from hardneg.data.samplers import ClassBalancedBatchSampler


def uneven_labels(num_classes=10, seed=0):
    rng = np.random.default_rng(seed)
    return np.repeat(np.arange(num_classes), rng.integers(2, 9, num_classes))


@pytest.mark.parametrize("mode", ["filled", "sampled"])
def test_every_batch_is_p_classes_times_k(mode):
    labels = uneven_labels()
    sampler = ClassBalancedBatchSampler(labels, batch_size=8, samples_per_class=2, mode=mode, repeat=3)
    batches = list(sampler)
    assert len(batches) == len(sampler) > 0
    for batch in batches:
        counts = Counter(labels[batch].tolist())
        assert len(counts) == 4 and set(counts.values()) == {2}
        assert len(set(batch)) == len(batch), "an image repeated inside one batch"


def test_filled_covers_every_image_of_the_largest_class_once_per_epoch():
    labels = np.array([0] * 6 + [1] * 2 + [2] * 4 + [3] * 6)
    sampler = ClassBalancedBatchSampler(labels, batch_size=4, samples_per_class=2, mode="filled")
    seen = Counter(i for batch in sampler for i in batch)
    # Largest class (6 images) sets the length: 3 groups of 2 per class, 4 classes -> 12 groups.
    assert len(sampler) == 12 * 2 // 4
    assert all(seen[i] == 1 for i in range(6))  # a full class is cut, never repeated
    assert sum(seen[i] for i in range(6, 8)) == 6  # a short class is padded with replacement


def test_singleton_classes_never_train():
    labels = np.array([0, 0, 1, 2, 2, 3, 3, 4])
    sampler = ClassBalancedBatchSampler(labels, batch_size=4, samples_per_class=2, mode="sampled", repeat=5)
    used = {int(labels[i]) for batch in sampler for i in batch}
    assert used == {0, 2, 3}


@pytest.mark.parametrize("world", [2, 4])
@pytest.mark.parametrize("mode", ["filled", "sampled"])
def test_ranks_hold_whole_class_groups_and_partition_the_global_batch(world, mode):
    labels = uneven_labels(24, seed=1)
    kw = dict(batch_size=16, samples_per_class=2, mode=mode, repeat=2, seed=3)
    single = ClassBalancedBatchSampler(labels, **kw)
    ranks = [ClassBalancedBatchSampler(labels, num_replicas=world, rank=r, **kw) for r in range(world)]
    for epoch in range(3):  # every rank reshuffles to the same new order, without communicating
        for sampler in [single, *ranks]:
            sampler.set_epoch(epoch)
        shards = [list(s) for s in ranks]
        assert len({len(s) for s in shards}) == 1 and len(shards[0]) == len(single)  # equal step counts
        for step, global_batch in enumerate(single):
            parts = [s[step] for s in shards]
            assert sum(parts, []) == global_batch  # union (in rank order) is exactly the global batch
            assert len(set(global_batch)) == len(global_batch)  # no sample twice across ranks
            for part in parts:
                assert len(part) == 16 // world
                assert set(Counter(labels[part].tolist()).values()) == {2}  # complete groups only


def test_lightning_sets_the_epoch_of_the_batch_sampler():
    # What Lightning's fit loop calls at every epoch start: it looks at batch_sampler.sampler.
    from lightning.fabric.utilities.data import _set_sampler_epoch
    from torch.utils.data import DataLoader

    sampler = ClassBalancedBatchSampler(uneven_labels(), batch_size=8, seed=0)
    loader = DataLoader(range(len(uneven_labels())), batch_sampler=sampler)
    first = list(sampler)
    _set_sampler_epoch(loader, 1)
    assert sampler.epoch == 1 and list(sampler) != first


def test_epochs_reshuffle_and_are_reproducible():
    labels = uneven_labels()
    a = ClassBalancedBatchSampler(labels, batch_size=8, seed=0)
    b = ClassBalancedBatchSampler(labels, batch_size=8, seed=0)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    b.set_epoch(1)
    assert list(a) == list(b)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(batch_size=7), "multiple of data.samples_per_class"),
        (dict(batch_size=8, samples_per_class=1), "samples_per_class must be >= 2"),
        (dict(batch_size=8, mode="bogus"), "choose one of"),
        (dict(batch_size=40), "only 10 usable classes"),
        (dict(batch_size=12, num_replicas=4), "cannot be split evenly over 4 processes"),
    ],
)
def test_bad_settings_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ClassBalancedBatchSampler(uneven_labels(), **kwargs)


def test_sampled_batches_never_span_two_rounds():
    # 5 usable classes, 2 per batch: a batch spanning rounds could repeat a class and an image.
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
    sampler = ClassBalancedBatchSampler(labels, batch_size=4, mode="sampled", repeat=5)
    for epoch in range(20):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler) == 5 * 2
        for batch in batches:
            assert len(set(labels[batch].tolist())) == 2 and len(set(batch)) == 4


@pytest.mark.parametrize("mode", ["filled", "sampled"])
def test_resume_at_continues_an_epoch_at_the_exact_batch(mode):
    labels = uneven_labels(16, seed=2)
    kw = dict(batch_size=8, samples_per_class=2, mode=mode, repeat=2, seed=5)
    whole = ClassBalancedBatchSampler(labels, **kw)
    whole.set_epoch(3)
    epoch3 = list(whole)
    whole.set_epoch(4)
    epoch4 = list(whole)
    resumed = ClassBalancedBatchSampler(labels, **kw)  # a new process: a new sampler
    resumed.resume_at(epoch=3, batches_done=2)
    resumed.set_epoch(3)  # Lightning sets the same epoch again after building the loader
    assert list(resumed) == epoch3[2:]
    resumed.set_epoch(4)
    assert list(resumed) == epoch4  # later epochs start from their first batch


def test_a_resume_position_does_not_leak_into_another_epoch():
    sampler = ClassBalancedBatchSampler(uneven_labels(), batch_size=8, seed=0)
    sampler.resume_at(epoch=1, batches_done=1)
    sampler.set_epoch(2)
    assert len(list(sampler)) == len(sampler)
    with pytest.raises(ValueError, match="cannot resume at batch"):
        sampler.resume_at(epoch=0, batches_done=len(sampler) + 1)


def test_lightning_alone_would_restart_the_epoch():
    """Why resume_at exists: a loader over this sampler, iterated anew, starts at batch 0."""
    from torch.utils.data import DataLoader

    sampler = ClassBalancedBatchSampler(uneven_labels(), batch_size=8, seed=0)
    loader = DataLoader(range(len(uneven_labels())), batch_sampler=sampler)
    first = next(iter(loader)).tolist()
    assert next(iter(loader)).tolist() == first
